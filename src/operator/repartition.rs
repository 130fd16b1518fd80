//! Messages on repartition topics: pre-aggregated partials and upstream watermarks.
//!
//! A stage-1 task sends, at each commit, one `Partial` per (group, window) it touched, keyed by
//! group so every partial of a group meets in one stage-2 task, and one `Watermark` to every
//! partition. Stage 2 closes a window only when every upstream partition's watermark passed it,
//! so results do not depend on how fast each partition happens to be processed.

use crate::window::Window;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RepartitionMessage {
    Partial {
        upstream_partition: u32,
        window: Window,
        /// Encoded accumulators (`encode_accumulators`).
        accumulators: Vec<u8>,
    },
    Watermark {
        upstream_partition: u32,
        stream_time: i64,
    },
    /// The upstream partition has been read to its end and quiet for `idle_timeout`: stage 2 leaves
    /// it out of the minimum until its next `Watermark`. (Appended last: older bytes still decode.)
    Idle {
        upstream_partition: u32,
        stream_time: i64,
    },
}

/// The first byte of every repartition message. A `Partial`'s accumulators carry their own
/// version (`state::FORMAT_VERSION`) inside.
pub const REPARTITION_FORMAT_VERSION: u8 = 1;

impl RepartitionMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REPARTITION_FORMAT_VERSION];
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("Vec write");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RepartitionMessage, String> {
        match bytes.split_first() {
            Some((&REPARTITION_FORMAT_VERSION, body)) => {
                bincode::serde::decode_from_slice(body, bincode::config::standard())
                    .map(|(m, _)| m)
                    .map_err(|e| format!("bad repartition message: {e}"))
            }
            Some((v, _)) => Err(format!(
                "repartition message format version {v} is not one this eddy reads"
            )),
            None => Err("empty repartition message".into()),
        }
    }
}

/// Stable partition of a group key (FNV-1a), identical in every instance and version.
pub fn partition_for(group: &[u8], partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &byte in group {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_partitions_stably() {
        let m = RepartitionMessage::Partial {
            upstream_partition: 3,
            window: Window { start: 1, end: 2 },
            accumulators: vec![1, 2],
        };
        assert_eq!(RepartitionMessage::decode(&m.encode()).unwrap(), m);
        assert_eq!(
            partition_for(b"page_view", 6),
            partition_for(b"page_view", 6)
        );
        assert!((0..6).contains(&partition_for(b"x", 6)));
    }
}
