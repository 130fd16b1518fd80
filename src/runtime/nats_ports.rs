//! The split source port ([`SplitSource`]) implemented with eddy's NATS JetStream readers.

use super::ports::{Split, SplitRecord, SplitSource};
use crate::nats::{NatsError, NatsSettings, SplitReaders, SplitSpec};
use crate::topology::Topology;
use std::collections::HashMap;
use std::time::Duration;

/// Every NATS source of a topology, by assignment topic, read through one connection.
pub struct NatsSplits {
    readers: SplitReaders,
    /// Assignment topic -> the spec of each of its partitions' split.
    specs: HashMap<String, Vec<SplitSpec>>,
}

impl NatsSplits {
    /// Connects and checks every NATS source's stream (it exists, and its retention keeps what
    /// was delivered). `topology` must be bound to the application.
    pub fn connect(
        settings: &NatsSettings,
        topology: &Topology,
        client_name: &str,
    ) -> Result<NatsSplits, NatsError> {
        let readers = SplitReaders::connect(settings, client_name)?;
        let mut specs = HashMap::new();
        for (source, nats) in topology.nats_sources() {
            let state = wait_for_stream(&readers, &nats.stream)?;
            tracing::info!(source = %source.name, stream = %nats.stream, first = state.first_sequence, last = state.last_sequence, messages = state.messages, splits = nats.subjects.len(), "NATS source ready");
            let splits = nats
                .subjects
                .iter()
                .map(|filter| SplitSpec {
                    source: source.name.clone(),
                    stream: nats.stream.clone(),
                    filter: filter.clone(),
                    skip_missing: nats.skip_missing,
                })
                .collect();
            specs.insert(source.topics[0].clone(), splits);
        }
        Ok(NatsSplits { readers, specs })
    }
}

/// How long eddy waits at start for a stream that does not exist yet (the publishers that
/// create it may start after eddy, as in the compose stack), like it waits for input topics.
const STREAM_WAIT: Duration = Duration::from_secs(60);

fn wait_for_stream(
    readers: &SplitReaders,
    stream: &str,
) -> Result<crate::nats::StreamCheck, NatsError> {
    let deadline = std::time::Instant::now() + STREAM_WAIT;
    let mut warned = false;
    loop {
        match readers.check_stream(stream) {
            Err(NatsError::Stream { reason, .. }) if std::time::Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(stream, %reason, wait_s = STREAM_WAIT.as_secs(), "NATS stream not found yet; waiting for it");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

impl SplitSource for NatsSplits {
    fn owns(&self, topic: &str) -> bool {
        self.specs.contains_key(topic)
    }
    fn start(&self, split: &Split, from: Option<i64>, paused: bool) {
        let Some(spec) = self
            .specs
            .get(&split.0)
            .and_then(|specs| specs.get(split.1 as usize))
        else {
            tracing::error!(topic = %split.0, partition = split.1, "an assignment partition with no subject filter: the topic has more partitions than the source has subjects");
            return;
        };
        let from = from.map(|offset| offset.max(1) as u64);
        self.readers
            .start(split.clone(), spec.clone(), from, paused);
    }
    fn stop(&self, split: &Split) {
        self.readers.stop(split);
    }
    fn set_paused(&self, split: &Split, paused: bool) {
        self.readers.set_paused(split, paused);
    }
    fn is_paused(&self, split: &Split) -> bool {
        self.readers.is_paused(split)
    }
    fn caught_up(&self, split: &Split) -> bool {
        self.readers.connected() && self.readers.caught_up(split)
    }
    fn any_running(&self) -> bool {
        self.readers.any_running()
    }
    fn recv(&self, timeout: Duration) -> Option<Result<SplitRecord, crate::Error>> {
        self.readers.recv(timeout).map(|polled| {
            polled
                .map(|message| SplitRecord {
                    offset: message.sequence as i64,
                    split: message.split,
                    subject: message.subject,
                    payload: message.payload,
                    timestamp_ms: message.published_ms,
                })
                .map_err(crate::Error::Nats)
        })
    }
}
