//! Keeps an [`AggregateIndex`] up to date from the output topics, read `read_committed` from the
//! beginning: output of aborted transactions never reaches the index, and every instance indexes
//! every partition, so any instance answers for the whole application.
//!
//! Nothing read is dropped silently: a failed read marks the index degraded (answers say so)
//! until a read succeeds, and a record that cannot be indexed is counted; both are
//! `eddy_api_index_errors_total` and a log line.

use super::index::AggregateIndex;
use crate::kafka::{ClientSettings, KafkaClientError, ReadRecord, TopicTail};
use crate::task::AggregateRecord;
use crate::telemetry::events::{ApiIndexReadFailed, ApiIndexRecordSkipped};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the reader looks for partitions added to the output topics. Partitions are rarely
/// added, and a metadata request per topic every 30 s costs the brokers next to nothing.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);

const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// What the materializer reads: the output topics ([`TopicTail`]), or a fake in tests.
trait OutputSource {
    /// The next record, `Ok(None)` when none came within `timeout`.
    fn poll(&mut self, timeout: Duration) -> Result<Option<ReadRecord>, KafkaClientError>;

    /// Starts reading, from their beginning, partitions added since the last call; returns every
    /// topic's partition count.
    fn follow_new_partitions(&mut self) -> Result<Vec<(String, i32)>, KafkaClientError>;
}

impl OutputSource for TopicTail {
    fn poll(&mut self, timeout: Duration) -> Result<Option<ReadRecord>, KafkaClientError> {
        self.try_poll(timeout)
    }

    fn follow_new_partitions(&mut self) -> Result<Vec<(String, i32)>, KafkaClientError> {
        TopicTail::follow_new_partitions(self)
    }
}

/// Follows `topics` on a thread of its own until `stop` is set.
pub fn spawn_materializer(
    settings: ClientSettings,
    topics: Vec<String>,
    index: Arc<Mutex<AggregateIndex>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("eddy-api-index".into())
        .spawn(move || {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            // The output topics may not exist until the runtime creates them.
            let mut tail = loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match TopicTail::new_when_present(&settings, &refs) {
                    Ok(Some(tail)) => break tail,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "query API: cannot read the output topics yet")
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            follow(&mut tail, &index, &stop, PARTITION_REFRESH);
        })
}

/// Indexes what `source` reads until `stop` is set, looking for new partitions every
/// `refresh_every`.
fn follow(
    source: &mut impl OutputSource,
    index: &Mutex<AggregateIndex>,
    stop: &AtomicBool,
    refresh_every: Duration,
) {
    let mut partitions: Vec<(String, i32)> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if refreshed.is_none_or(|at| at.elapsed() >= refresh_every) {
            refreshed = Some(Instant::now());
            match source.follow_new_partitions() {
                Ok(counts) => {
                    if !partitions.is_empty() && counts != partitions {
                        tracing::info!(before = ?partitions, now = ?counts, "query API: output partitions added; reading them from the beginning");
                    }
                    index.lock().expect("index lock").health.degraded = None;
                    partitions = counts;
                }
                Err(error) => read_failed(index, &error),
            }
        }
        match source.poll(POLL_TIMEOUT) {
            Ok(None) => {}
            Ok(Some(record)) => index_record(&mut index.lock().expect("index lock"), &record),
            Err(error) => read_failed(index, &error),
        }
    }
}

fn read_failed(index: &Mutex<AggregateIndex>, error: &KafkaClientError) {
    let mut index = index.lock().expect("index lock");
    let reason = error.to_string();
    index.health.read_errors += 1;
    ApiIndexReadFailed {
        reason: &reason,
        total: index.health.read_errors,
    }
    .emit();
    index.health.degraded = Some(reason);
}

/// Indexes one record, or counts and reports why it cannot.
fn index_record(index: &mut AggregateIndex, record: &ReadRecord) {
    index.health.degraded = None;
    let parsed = match &record.value {
        None => Err("no value (a tombstone)".to_string()),
        Some(value) => serde_json::from_slice::<AggregateRecord>(value)
            .map_err(|e| format!("not an eddy aggregate: {e}")),
    };
    let (kind, reason) = match parsed {
        Ok(aggregate) => match index.insert_from_partition(record.partition, &aggregate) {
            Ok(()) => return,
            Err(reason) => ("rejected", reason),
        },
        Err(reason) => {
            index.health.undecodable += 1;
            ("undecodable", reason)
        }
    };
    ApiIndexRecordSkipped {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
        kind,
        reason: &reason,
        total: index.health.undecodable + index.rejected,
    }
    .emit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::WindowBounds;
    use crate::topology::{AggregateKind, AggregationBuilder, Schema, SourceBuilder, Topology};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::VecDeque;

    enum Step {
        Record(ReadRecord),
        Error(&'static str),
        /// The topic gets one more partition.
        AddPartition,
    }

    /// A topic `out` that plays `script`, and like Kafka delivers records only from the
    /// partitions it was told to read; stops the reader once it has nothing left to deliver.
    struct ScriptedOutput {
        script: VecDeque<Step>,
        waiting: Vec<ReadRecord>,
        partitions: i32,
        read: i32,
        idle: u32,
        stop: Arc<AtomicBool>,
    }

    impl ScriptedOutput {
        fn new(script: Vec<Step>, stop: Arc<AtomicBool>) -> ScriptedOutput {
            ScriptedOutput {
                script: script.into(),
                waiting: Vec::new(),
                partitions: 1,
                read: 0,
                idle: 0,
                stop,
            }
        }
    }

    impl OutputSource for ScriptedOutput {
        fn poll(&mut self, _: Duration) -> Result<Option<ReadRecord>, KafkaClientError> {
            if let Some(at) = self.waiting.iter().position(|r| r.partition < self.read) {
                return Ok(Some(self.waiting.remove(at)));
            }
            match self.script.pop_front() {
                Some(Step::Record(record)) => {
                    self.waiting.push(record);
                    self.poll(Duration::ZERO)
                }
                Some(Step::Error(reason)) => Err(KafkaClientError::Unreachable {
                    operation: "poll".into(),
                    reason: reason.into(),
                    code: None,
                }),
                Some(Step::AddPartition) => {
                    self.partitions += 1;
                    Ok(None)
                }
                None => {
                    self.idle += 1;
                    if self.idle > 20 {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                    Ok(None)
                }
            }
        }

        fn follow_new_partitions(&mut self) -> Result<Vec<(String, i32)>, KafkaClientError> {
            self.read = self.partitions;
            Ok(vec![("out".into(), self.partitions)])
        }
    }

    fn index() -> Mutex<AggregateIndex> {
        let topology = Topology::builder()
            .source(SourceBuilder::new("a", "a", Schema::Json).build())
            .aggregation(
                AggregationBuilder::new("per_minute", "a", "out")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap();
        Mutex::new(AggregateIndex::new(&topology))
    }

    fn read(partition: i32, offset: i64, value: Option<Vec<u8>>) -> Step {
        Step::Record(ReadRecord {
            topic: "out".into(),
            partition,
            offset,
            key: None,
            value,
            headers: Vec::new(),
        })
    }

    fn final_minute(partition: i32, minute: i64) -> Step {
        let record = AggregateRecord {
            aggregation: "per_minute".into(),
            window: WindowBounds {
                start: minute * 60_000,
                end: (minute + 1) * 60_000,
            },
            group: serde_json::Map::new(),
            values: serde_json::json!({ "n": 1 }).as_object().unwrap().clone(),
            sketches: serde_json::Map::new(),
            theta_sketches: serde_json::Map::new(),
            is_final: true,
        };
        read(
            partition,
            minute,
            Some(serde_json::to_vec(&record).unwrap()),
        )
    }

    fn run(index: &Mutex<AggregateIndex>, script: Vec<Step>, refresh_every: Duration) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut output = ScriptedOutput::new(script, stop.clone());
        follow(&mut output, index, &stop, refresh_every);
    }

    #[test]
    fn partitions_added_later_are_read_from_the_beginning() {
        let index = index();
        let script = vec![final_minute(0, 5), Step::AddPartition, final_minute(1, 3)];
        run(&index, script, Duration::ZERO);
        let index = index.lock().unwrap();
        assert_eq!(index.records, 2);
        let series = index.aggregation("per_minute").unwrap();
        assert_eq!(series.closed_until(), Some(4 * 60_000));
    }

    #[test]
    fn read_errors_and_unreadable_records_are_counted_and_reported() {
        let index = index();
        let script = vec![
            read(0, 0, Some(b"{not json".to_vec())),
            read(0, 1, None),
            final_minute(0, 1),
            Step::Error("all brokers down"),
        ];
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || run(&index, script, Duration::MAX));
        let mut counted: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) if key.key().name() == "eddy_api_index_errors_total" => {
                    let kind = key.key().labels().next().unwrap().value().to_string();
                    Some((kind, n))
                }
                _ => None,
            })
            .collect();
        counted.sort();
        assert_eq!(
            counted,
            [("read".to_string(), 1), ("undecodable".to_string(), 2)]
        );
        {
            let index = index.lock().unwrap();
            assert_eq!(index.records, 1);
            assert_eq!(index.health.undecodable, 2);
            assert_eq!(index.health.read_errors, 1);
            let degraded = index.health.degraded.as_deref().unwrap_or_default();
            assert!(degraded.contains("all brokers down"), "{degraded}");
        }
        // A read that succeeds clears it.
        run(&index, vec![final_minute(0, 2)], Duration::MAX);
        let index = index.lock().unwrap();
        assert_eq!(index.health.degraded, None);
        assert_eq!(index.records, 2);
    }
}
