//! Simulated restore reads, record deletion and time.

use super::broker::{Entry, SimBroker};
use super::faults::{Call, Faults};
use crate::kafka::{KafkaClientError, ReadPosition, ReadRecord};
use crate::runtime::ports::{Admin, Changelog, Clock};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reads changelog partitions read_committed. For a restore, a transaction still open on the
/// partition (a zombie's) is timed out by the coordinator, as `transaction.timeout.ms` would. A
/// standby's reader ([`SimChangelog::for_standbys`]) follows partitions whose owner is alive: it
/// stops at an open transaction (the last stable offset) and waits out its budget there.
pub struct SimChangelog {
    broker: SimBroker,
    faults: Faults,
    /// The partition `open_partition` started (a reader reads one at a time).
    current: Mutex<i32>,
    /// A slow read takes this clock's time, so a restore spans several loop turns.
    clock: Arc<SimClock>,
    /// Open transactions are waited for, not timed out.
    waits_for_open: bool,
}

impl SimChangelog {
    pub fn new(broker: SimBroker, faults: Faults, clock: Arc<SimClock>) -> SimChangelog {
        SimChangelog {
            broker,
            faults,
            current: Mutex::new(0),
            clock,
            waits_for_open: false,
        }
    }

    /// The reader of an instance's standby tasks.
    pub fn for_standbys(broker: SimBroker, faults: Faults, clock: Arc<SimClock>) -> SimChangelog {
        SimChangelog {
            waits_for_open: true,
            ..SimChangelog::new(broker, faults, clock)
        }
    }
}

impl Changelog for SimChangelog {
    fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        _patience: Duration,
    ) -> Result<ReadPosition, KafkaClientError> {
        if self.faults.fails(Call::ChangelogUnreachable) {
            return Err(KafkaClientError::Unreachable {
                operation: format!("list offsets of {topic}-{partition}"),
                reason: "simulated: the broker is away".into(),
                code: None,
            });
        }
        let (low, high) = self.broker.watermarks(topic, partition).ok_or_else(|| {
            KafkaClientError::Operation {
                operation: "list offsets".into(),
                reason: format!("simulated: no partition {topic}-{partition}"),
                code: None,
            }
        })?;
        if from.is_some_and(|f| f < low || f > high) {
            return Err(KafkaClientError::ChangelogTruncated {
                topic: topic.to_string(),
                partition,
            });
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = partition;
        Ok(ReadPosition::new(from.unwrap_or(low), high))
    }

    fn read_some(
        &self,
        topic: &str,
        position: &mut ReadPosition,
        budget: Duration,
        max_records: usize,
        visit: &mut dyn FnMut(ReadRecord),
    ) -> Result<usize, KafkaClientError> {
        let partition = self.partition_of(topic);
        if self.faults.fails(Call::ChangelogUnreachable) {
            return Ok(0);
        }
        let max_records = if self.faults.fails(Call::SlowRestore) {
            self.clock.advance(Duration::from_millis(120));
            max_records.min(3)
        } else {
            max_records
        };
        let mut cluster = self.broker.lock();
        if !self.waits_for_open {
            cluster.time_out_blocking(topic, partition, false);
        }
        let Some(log) = cluster
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize))
        else {
            return Ok(0);
        };
        let mut read = 0;
        while !position.done && read < max_records {
            let offset = position.next.max(log.start);
            if offset >= log.entries.len() as i64 {
                position.next = offset;
                position.done = position.next >= position.end;
                break;
            }
            if let Entry::Data {
                key, value, txn, ..
            } = &log.entries[offset as usize]
            {
                if txn.is_some_and(|t| cluster.open.contains_key(&t)) {
                    // The last stable offset: a real read waits here until its budget is spent.
                    drop(cluster);
                    if read == 0 {
                        self.clock.advance(budget);
                    }
                    return Ok(read);
                }
                if cluster.visible(*txn) {
                    visit(ReadRecord {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        key: key.clone(),
                        value: value.clone(),
                        headers: Vec::new(),
                    });
                    read += 1;
                }
            }
            position.next = offset + 1;
            position.done = position.next >= position.end;
        }
        Ok(read)
    }

    fn close_partition(&self) {}
}

impl SimChangelog {
    /// The partition being read: restores read one partition at a time and name the topic only.
    fn partition_of(&self, _topic: &str) -> i32 {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Deletes records (the repartition purge).
pub struct SimAdmin(pub SimBroker);

impl Admin for SimAdmin {
    fn delete_records_before(
        &self,
        offsets: &[(String, i32, i64)],
        _timeout: Duration,
    ) -> Result<usize, KafkaClientError> {
        let mut cluster = self.0.lock();
        for (topic, partition, offset) in offsets {
            if let Some(log) = cluster
                .topics
                .get_mut(topic)
                .and_then(|t| t.get_mut(*partition as usize))
            {
                log.start = log.start.max(*offset);
            }
        }
        Ok(offsets.len())
    }
}

/// Time that moves only when the scheduler moves it.
pub struct SimClock {
    base: Instant,
    elapsed: Mutex<Duration>,
}

impl Default for SimClock {
    fn default() -> SimClock {
        SimClock {
            base: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }
}

impl SimClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.base + *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
