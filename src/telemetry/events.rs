//! eddy's internal events, Vector's pattern: one struct per thing that happens, whose `emit`
//! both logs it (where it deserves a line) and counts it, with bounded labels (topic, partition,
//! aggregation, store, task, kind, result; never a group value or a user id). Every metric in
//! [`super::metrics::CATALOG`] is recorded here and nowhere else.

use super::metrics as m;

/// Partitions assigned, revoked, or lost to another member.
pub struct Rebalanced<'a> {
    pub kind: RebalanceKind,
    pub partitions: &'a [(String, i32)],
}

#[derive(Clone, Copy, Debug)]
pub enum RebalanceKind {
    Assign,
    Revoke,
    Lost,
}

impl Rebalanced<'_> {
    pub fn emit(self) {
        let kind = match self.kind {
            RebalanceKind::Assign => "assign",
            RebalanceKind::Revoke => "revoke",
            RebalanceKind::Lost => "lost",
        };
        match self.kind {
            RebalanceKind::Assign => {
                tracing::info!(partitions = ?self.partitions, "partitions assigned")
            }
            RebalanceKind::Revoke | RebalanceKind::Lost => {
                tracing::info!(partitions = ?self.partitions, lost = matches!(self.kind, RebalanceKind::Lost), "partitions revoked")
            }
        }
        metrics::counter!(m::REBALANCES, "kind" => kind).increment(1);
    }
}

/// How many tasks this instance runs now.
pub struct ActiveTasks(pub usize);

impl ActiveTasks {
    pub fn emit(self) {
        metrics::gauge!(m::ACTIVE_TASKS).set(self.0 as f64);
    }
}

/// Records polled from one partition in one batch.
pub struct RecordsConsumed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub count: u64,
}

impl RecordsConsumed<'_> {
    pub fn emit(self) {
        metrics::counter!(m::RECORDS_CONSUMED, "topic" => self.topic.to_string(), "partition" => self.partition.to_string())
            .increment(self.count);
    }
}

/// A polled batch was processed.
pub struct BatchProcessed {
    pub records: usize,
    pub seconds: f64,
}

impl BatchProcessed {
    pub fn emit(self) {
        if self.records > 0 {
            metrics::histogram!(m::BATCH_TIME_PER_RECORD)
                .record(self.seconds / self.records as f64);
        }
    }
}

/// What one task did since the last commit.
pub struct TaskProgress<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub processed: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
}

impl TaskProgress<'_> {
    pub fn emit(self) {
        let topic = self.topic.to_string();
        if self.processed > 0 {
            metrics::counter!(m::RECORDS_PROCESSED, "topic" => topic.clone(), "partition" => self.partition.to_string())
                .increment(self.processed);
        }
        if self.dead_lettered > 0 {
            metrics::counter!(m::RECORDS_DEAD_LETTERED, "topic" => topic.clone())
                .increment(self.dead_lettered);
        }
        if self.skipped > 0 {
            metrics::counter!(m::RECORDS_SKIPPED, "topic" => topic).increment(self.skipped);
        }
    }
}

/// What one aggregation did since the last commit.
pub struct AggregationProgress<'a> {
    pub aggregation: &'a str,
    pub late_records: u64,
    pub emitted_final: u64,
    pub emitted_update: u64,
}

impl AggregationProgress<'_> {
    pub fn emit(self) {
        let aggregation = self.aggregation.to_string();
        if self.late_records > 0 {
            metrics::counter!(m::LATE_RECORDS_DROPPED, "aggregation" => aggregation.clone())
                .increment(self.late_records);
        }
        if self.emitted_final > 0 {
            metrics::counter!(m::WINDOWS_EMITTED, "aggregation" => aggregation.clone(), "result" => "final")
                .increment(self.emitted_final);
        }
        if self.emitted_update > 0 {
            metrics::counter!(m::WINDOWS_EMITTED, "aggregation" => aggregation, "result" => "update")
                .increment(self.emitted_update);
        }
    }
}

/// The event time up to which this instance closed an aggregation's windows.
pub struct WatermarkAdvanced<'a> {
    pub aggregation: &'a str,
    pub watermark_ms: i64,
}

impl WatermarkAdvanced<'_> {
    pub fn emit(self) {
        metrics::gauge!(m::WATERMARK, "aggregation" => self.aggregation.to_string())
            .set(self.watermark_ms as f64 / 1000.0);
    }
}

/// How the main loop's wall time divided between its phases over the last commit interval.
pub struct LoopTime<'a> {
    /// (phase, share); the shares sum to 1.
    pub shares: &'a [(&'static str, f64)],
}

impl LoopTime<'_> {
    pub fn emit(self) {
        for &(phase, share) in self.shares {
            metrics::gauge!(m::LOOP_TIME_RATIO, "phase" => phase).set(share);
        }
        tracing::debug!(target: "eddy::runtime::loop_time", shares = ?self.shares, "main loop time by phase");
    }
}

/// A store's size, sampled.
pub struct StoreSize<'a> {
    pub store: &'a str,
    pub task: String,
    pub keys: u64,
    pub bytes: u64,
}

impl StoreSize<'_> {
    pub fn emit(self) {
        let labels = [("store", self.store.to_string()), ("task", self.task)];
        metrics::gauge!(m::STATE_KEYS, &labels).set(self.keys as f64);
        metrics::gauge!(m::STATE_BYTES, &labels).set(self.bytes as f64);
    }
}

/// One store of a task was restored from its changelog.
pub struct StoreRestored<'a> {
    pub task: &'a dyn std::fmt::Display,
    pub store: &'a str,
    pub records: u64,
    pub seconds: f64,
    pub from_checkpoint: bool,
}

impl StoreRestored<'_> {
    pub fn emit(self) {
        tracing::info!(task = %self.task, store = self.store, restored = self.records, from_checkpoint = self.from_checkpoint, seconds = self.seconds, "store restored");
        metrics::counter!(m::RESTORE_RECORDS, "store" => self.store.to_string())
            .increment(self.records);
        metrics::histogram!(m::RESTORE_SECONDS, "store" => self.store.to_string())
            .record(self.seconds);
    }
}

/// A standby task read one store's changelog to the end it saw.
pub struct StandbyRead<'a> {
    pub store: &'a str,
    pub records: u64,
}

impl StandbyRead<'_> {
    pub fn emit(self) {
        metrics::counter!(m::STANDBY_RECORDS, "store" => self.store.to_string())
            .increment(self.records);
    }
}

/// How many standby tasks this instance keeps.
pub struct StandbyTasks(pub usize);

impl StandbyTasks {
    pub fn emit(self) {
        metrics::gauge!(m::STANDBY_TASKS).set(self.0 as f64);
    }
}

/// A standby copy was promoted (its task starts here), or discarded (its changelog no longer
/// holds its position).
pub enum StandbyEnded {
    Promoted,
    Discarded,
}

impl StandbyEnded {
    pub fn emit(self) {
        let name = match self {
            StandbyEnded::Promoted => m::STANDBY_PROMOTED,
            StandbyEnded::Discarded => m::STANDBY_DISCARDED,
        };
        metrics::counter!(name).increment(1);
    }
}

/// How far a standby task was behind its changelogs when it last looked (0 once dropped).
pub struct StandbyLag<'a> {
    pub task: &'a dyn std::fmt::Display,
    pub records: i64,
}

impl StandbyLag<'_> {
    pub fn emit(self) {
        metrics::gauge!(m::STANDBY_LAG, "task" => self.task.to_string()).set(self.records as f64);
    }
}

/// A commit ended. `transactional`: under exactly-once. `oldest_append_ms`: the broker
/// timestamp of the oldest record it covered.
pub struct CommitEnded {
    pub committed: bool,
    pub transactional: bool,
    pub seconds: f64,
    pub oldest_append_ms: Option<i64>,
}

impl CommitEnded {
    pub fn emit(self) {
        let result = if self.committed {
            "committed"
        } else {
            "failed"
        };
        metrics::counter!(m::COMMITS, "result" => result).increment(1);
        tracing::trace!(result, seconds = self.seconds, "commit ended");
        if !self.committed {
            // Aborted transactions are counted once, by `TransactionAborted`.
            return;
        }
        if self.transactional {
            metrics::counter!(m::TRANSACTIONS, "result" => "committed").increment(1);
        }
        metrics::histogram!(m::COMMIT_LATENCY).record(self.seconds);
        if let Some(oldest) = self.oldest_append_ms {
            metrics::histogram!(m::APPEND_TO_COMMIT_LATENCY)
                .record((crate::runtime::now_ms() - oldest).max(0) as f64 / 1000.0);
        }
    }
}

/// The open transaction was aborted and the tasks rolled back.
pub struct TransactionAborted;

impl TransactionAborted {
    pub fn emit(self) {
        metrics::counter!(m::TRANSACTIONS, "result" => "aborted").increment(1);
    }
}

/// Every task returned to its last commit; `rewound_offsets` input offsets are processed again.
pub struct RolledBack {
    pub rewound_offsets: u64,
}

impl RolledBack {
    pub fn emit(self) {
        tracing::info!(
            rewound_offsets = self.rewound_offsets,
            "tasks rolled back to the last commit"
        );
        metrics::counter!(m::ROLLBACK_REWOUND_OFFSETS).increment(self.rewound_offsets);
    }
}

/// Fetching paused until the commit in flight settles.
pub struct CommitBackpressure;

impl CommitBackpressure {
    pub fn emit(self) {
        tracing::info!("a commit in flight holds back too much or takes too long; fetching paused until it settles");
        metrics::counter!(m::COMMIT_BACKPRESSURE).increment(1);
    }
}

/// Records polled before their partition was sought back, dropped unprocessed.
pub struct StaleRecordsDropped {
    pub task: String,
    pub records: u64,
}

impl StaleRecordsDropped {
    pub fn emit(self) {
        tracing::debug!(
            task = self.task,
            records = self.records,
            "dropped records polled before the partition was sought back"
        );
        metrics::counter!(m::STALE_RECORDS_DROPPED).increment(self.records);
    }
}

/// One record sent to a topic. `final_window_end_ms`: the end of the window a final aggregate
/// closes.
pub struct RecordSent<'a> {
    pub topic: &'a str,
    pub kind: &'static str,
    pub final_window_end_ms: Option<i64>,
}

impl RecordSent<'_> {
    pub fn emit(self) {
        if let Some(end) = self.final_window_end_ms {
            metrics::histogram!(m::EVENT_TO_EMIT_LATENCY)
                .record((crate::runtime::now_ms() - end).max(0) as f64 / 1000.0);
        }
        metrics::counter!(m::RECORDS_EMITTED, "topic" => self.topic.to_string(), "kind" => self.kind)
            .increment(1);
    }
}

/// An instance seen leaving the group had its producer fenced from here.
pub struct DepartedInstanceFenced<'a> {
    pub instance: &'a str,
}

impl DepartedInstanceFenced<'_> {
    pub fn emit(self) {
        tracing::info!(instance = %self.instance, "an instance left the group: fencing its producer, so that the transaction it left open is aborted now");
        metrics::counter!(m::DEPARTED_FENCED).increment(1);
    }
}

/// Records between the consumer position and the end of an assigned partition.
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl ConsumerLag<'_> {
    pub fn emit(self) {
        metrics::gauge!(m::CONSUMER_LAG, "topic" => self.topic.to_string(), "partition" => self.partition.to_string())
            .set(self.lag as f64);
    }
}

/// The query API's index could not poll the output topics or fetch their partitions.
pub struct ApiIndexReadFailed<'a> {
    pub reason: &'a str,
    /// Read errors so far, this one included: logged at the 1st, 2nd, 4th, 8th... so a broker
    /// that stays down cannot flood the log.
    pub total: u64,
}

impl ApiIndexReadFailed<'_> {
    pub fn emit(self) {
        if self.total.is_power_of_two() {
            tracing::warn!(reason = self.reason, errors = self.total, "query API: cannot read the output topics; answers may be stale (logged at powers of two)");
        }
        metrics::counter!(m::API_INDEX_ERRORS, "kind" => "read").increment(1);
    }
}

/// The query API's index skipped an output record: it is missing from answers.
pub struct ApiIndexRecordSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// `undecodable` (not an eddy aggregate) or `rejected` (its values do not fit its
    /// aggregation).
    pub kind: &'static str,
    pub reason: &'a str,
    /// Records skipped so far, this one included: logged at powers of two, as read errors are.
    pub total: u64,
}

impl ApiIndexRecordSkipped<'_> {
    pub fn emit(self) {
        if self.total.is_power_of_two() {
            tracing::warn!(
                topic = self.topic,
                partition = self.partition,
                offset = self.offset,
                kind = self.kind,
                reason = self.reason,
                skipped = self.total,
                "query API: skipping an output record it cannot index (logged at powers of two)"
            );
        }
        metrics::counter!(m::API_INDEX_ERRORS, "kind" => self.kind).increment(1);
    }
}

/// Whether the instance is ready (see [`super::Health`]).
pub struct Readiness(pub bool);

impl Readiness {
    pub fn emit(self) {
        metrics::gauge!(m::READY).set(if self.0 { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// A counter as recorded: name, labels, value.
    type Counted = (String, Vec<(String, String)>, u64);

    /// Every counter recorded while `body` runs.
    fn counters(body: impl FnOnce()) -> Vec<Counted> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, body);
        let mut counters: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => {
                    let key = key.key();
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_string(), l.value().to_string()))
                        .collect();
                    Some((key.name().to_string(), labels, n))
                }
                _ => None,
            })
            .collect();
        counters.sort();
        counters
    }

    fn label(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn a_failed_commit_counts_one_failed_commit_and_one_aborted_transaction() {
        let counted = counters(|| {
            CommitEnded {
                committed: false,
                transactional: true,
                seconds: 0.1,
                oldest_append_ms: None,
            }
            .emit();
            TransactionAborted.emit();
        });
        assert_eq!(
            counted,
            [
                (m::COMMITS.to_string(), vec![label("result", "failed")], 1),
                (
                    m::TRANSACTIONS.to_string(),
                    vec![label("result", "aborted")],
                    1
                ),
            ]
        );
    }

    #[test]
    fn labels_stay_bounded() {
        let counted = counters(|| {
            RecordSent {
                topic: "out",
                kind: "aggregate",
                final_window_end_ms: Some(0),
            }
            .emit();
            AggregationProgress {
                aggregation: "a",
                late_records: 2,
                emitted_final: 1,
                emitted_update: 0,
            }
            .emit();
        });
        for (name, labels, _) in &counted {
            let (_, _, allowed, _) = m::CATALOG
                .iter()
                .find(|(n, ..)| n == name)
                .unwrap_or_else(|| panic!("{name} is in the catalog"));
            for (key, _) in labels {
                assert!(allowed.contains(key.as_str()), "{name} has label {key}");
            }
        }
        assert_eq!(counted.len(), 3, "{counted:?}");
    }
}
