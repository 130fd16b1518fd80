//! Deletes repartition records the merge tasks have committed past: nobody reads them again
//! (restores read changelogs, rollbacks seek to committed offsets), so without this the topics
//! grow until their retention. Kafka Streams does the same every `repartition.purge.interval.ms`.

use super::ports::Admin;
use super::task_slot::TaskSlot;
use crate::task::TaskId;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

pub(crate) struct RepartitionPurge {
    admin: Box<dyn Admin>,
    topics: HashSet<String>,
    interval: Duration,
    next: Instant,
    /// The offset each partition was last purged up to: only advances are sent.
    purged: BTreeMap<(String, i32), i64>,
}

impl RepartitionPurge {
    /// `None` when purging is off or the topology has no repartition topic.
    pub fn new(
        admin: Box<dyn Admin>,
        topics: Vec<String>,
        interval_ms: u64,
        now: Instant,
    ) -> Option<RepartitionPurge> {
        if interval_ms == 0 || topics.is_empty() {
            return None;
        }
        let interval = Duration::from_millis(interval_ms);
        Some(RepartitionPurge {
            admin,
            topics: topics.into_iter().collect(),
            interval,
            next: now + interval,
            purged: BTreeMap::new(),
        })
    }

    /// When due, deletes what the running merge tasks committed past. A failure is only logged:
    /// the records are deleted at the next attempt, or by retention.
    pub fn run_if_due(&mut self, tasks: &BTreeMap<TaskId, TaskSlot>, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let due: Vec<(String, i32, i64)> = tasks
            .values()
            .filter(|slot| self.topics.contains(&slot.task.id.topic))
            .filter_map(|slot| {
                let id = &slot.task.id;
                let offset = slot.committed_offset?;
                let purged = self.purged.get(&(id.topic.clone(), id.partition));
                (purged.is_none_or(|p| *p < offset))
                    .then(|| (id.topic.clone(), id.partition, offset))
            })
            .collect();
        match self
            .admin
            .delete_records_before(&due, Duration::from_secs(5))
        {
            Ok(purged) => {
                tracing::debug!(partitions = due.len(), purged, "repartition records purged");
                for (topic, partition, offset) in due {
                    self.purged.insert((topic, partition), offset);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not purge repartition records; retried later")
            }
        }
    }
}
