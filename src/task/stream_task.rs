//! A task: the unit of parallelism, one per consumed partition (input or repartition topic).

use crate::operator::{
    FlushContext, Operator, OperatorInput, OperatorStats, OutgoingKind, OutgoingRecord,
    PendingStateWrites, RepartitionMessage, TaskOutput,
};
use crate::record::DecodePlan;
use crate::state::{decode_accumulators, ChangelogEnds, StateError, WindowStore};
use crate::topology::{DecodeErrorPolicy, Source};
use std::fmt;
use std::sync::Arc;

/// A task is named by the partition it consumes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One consumed record, borrowed from the client's buffer.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    pub payload: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub offset: i64,
    /// The NATS subject it was published on (its version may follow from it); `None` on Kafka.
    pub subject: Option<&'a str>,
}

/// Why a task stopped processing.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{task}@{offset}: {reason}")]
    DecodeFailed {
        task: TaskId,
        offset: i64,
        reason: String,
    },
}

/// Per-task counters, read and reset by the runtime after each commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    pub processed: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
}

pub(crate) enum TaskKind {
    Input {
        source: Arc<Source>,
        /// The version of this topic's records that carry no `version` field.
        topic_version: i64,
        plan: Arc<DecodePlan>,
        dead_letter_topic: String,
    },
    Repartition,
}

pub struct StreamTask {
    pub id: TaskId,
    kind: TaskKind,
    operators: Vec<Box<dyn Operator>>,
    stream_time: i64,
    /// Stream time as of the last flush: what the transaction being committed carries.
    flushed_stream_time: i64,
    committed_stream_time: i64,
    next_offset: Option<i64>,
    stats: TaskStats,
    /// Set by the runtime: the input partition is quiet and read to its end.
    idle: bool,
    /// The largest event time of the records themselves (stream time may be ahead of it only
    /// through wall-clock closing).
    record_stream_time: i64,
    /// For wall-clock closing: `record_stream_time` as last seen, and the wall time it moved.
    record_time: (i64, i64),
}

/// Prefix of the offset-commit metadata eddy writes; bump with its layout.
const METADATA_PREFIX: &str = "eddy1";

impl StreamTask {
    pub(crate) fn new(id: TaskId, kind: TaskKind, operators: Vec<Box<dyn Operator>>) -> StreamTask {
        StreamTask {
            id,
            kind,
            operators,
            stream_time: i64::MIN,
            flushed_stream_time: i64::MIN,
            committed_stream_time: i64::MIN,
            next_offset: None,
            stats: TaskStats::default(),
            idle: false,
            record_stream_time: i64::MIN,
            record_time: (i64::MIN, i64::MIN),
        }
    }

    pub fn operators(&self) -> impl Iterator<Item = &dyn Operator> {
        self.operators.iter().map(|o| &**o)
    }

    pub fn operators_mut(&mut self) -> impl Iterator<Item = &mut (dyn Operator + 'static)> {
        self.operators.iter_mut().map(|o| &mut **o)
    }

    /// Opt-in wall-clock closing (`wall_clock_close_ms`): once no record has moved this input
    /// task's stream time for `quiet_ms` of wall-clock time, stream time goes on at wall-clock
    /// speed from the last record's, so the last windows of a stream that stopped still close
    /// after their grace. Returns whether stream time moved.
    pub fn advance_with_wall_clock(&mut self, now_ms: i64, quiet_ms: i64) -> bool {
        if !matches!(self.kind, TaskKind::Input { .. }) || self.record_stream_time == i64::MIN {
            return false;
        }
        if self.record_time.0 != self.record_stream_time {
            self.record_time = (self.record_stream_time, now_ms);
            return false;
        }
        let quiet_for = now_ms - self.record_time.1;
        if quiet_for < quiet_ms {
            return false;
        }
        let advanced = self.record_time.0.saturating_add(quiet_for);
        if advanced > self.stream_time {
            self.stream_time = advanced;
            return true;
        }
        false
    }

    /// Marks the input partition idle (quiet for `idle_timeout` and read to its end) or active.
    /// Partial operators announce it downstream at the next flush, so an idle partition no
    /// longer holds back repartitioned windows.
    pub fn set_idle(&mut self, idle: bool) {
        self.idle = idle;
    }

    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    /// The offset to commit: one past the last processed record.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    pub fn set_next_offset(&mut self, offset: Option<i64>) {
        self.next_offset = offset;
    }

    pub fn take_stats(&mut self) -> (TaskStats, Vec<(String, OperatorStats)>) {
        let stats = std::mem::take(&mut self.stats);
        (
            stats,
            self.operators
                .iter_mut()
                .map(|o| (o.spec().name.clone(), o.take_stats()))
                .collect(),
        )
    }

    /// Processes one record. Decode errors follow the source's policy; only `fail` returns an error.
    pub fn process(
        &mut self,
        record: InputRecord<'_>,
        out: &mut TaskOutput,
    ) -> Result<(), TaskError> {
        self.next_offset = Some(record.offset + 1);
        self.stats.processed += 1;
        let payload = record.payload.unwrap_or_default();
        match &self.kind {
            TaskKind::Input {
                source,
                topic_version,
                plan,
                dead_letter_topic,
            } => {
                let version = record
                    .subject
                    .map_or(*topic_version, |subject| plan.topic_version(subject));
                let decoded = match plan.decode_from(payload, record.timestamp_ms, version) {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        return match source.on_decode_error {
                            DecodeErrorPolicy::Fail => Err(TaskError::DecodeFailed {
                                task: self.id.clone(),
                                offset: record.offset,
                                reason: error.0,
                            }),
                            DecodeErrorPolicy::Skip => {
                                self.stats.skipped += 1;
                                Ok(())
                            }
                            DecodeErrorPolicy::DeadLetter => {
                                self.stats.dead_lettered += 1;
                                out.records.push(OutgoingRecord {
                                    kind: OutgoingKind::DeadLetter,
                                    topic: dead_letter_topic.clone(),
                                    partition: None,
                                    key: record.key.map(<[u8]>::to_vec),
                                    value: Some(payload.to_vec()),
                                    headers: vec![
                                        ("eddy.error".into(), error.0.into_bytes()),
                                        (
                                            "eddy.source.topic".into(),
                                            self.id.topic.clone().into_bytes(),
                                        ),
                                        (
                                            "eddy.source.partition".into(),
                                            self.id.partition.to_string().into_bytes(),
                                        ),
                                        (
                                            "eddy.source.offset".into(),
                                            record.offset.to_string().into_bytes(),
                                        ),
                                    ],
                                    window_end_ms: None,
                                });
                                Ok(())
                            }
                        };
                    }
                };
                self.stream_time = self.stream_time.max(decoded.event_time_ms);
                self.record_stream_time = self.record_stream_time.max(decoded.event_time_ms);
                for operator in &mut self.operators {
                    let late =
                        operator.process(OperatorInput::Record(&decoded), self.stream_time)?;
                    if late {
                        if let Some(topic) = &operator.spec().late_records_topic {
                            out.records.push(OutgoingRecord {
                                kind: OutgoingKind::Late,
                                topic: topic.clone(),
                                partition: None,
                                key: record.key.map(<[u8]>::to_vec),
                                value: Some(payload.to_vec()),
                                headers: vec![(
                                    "eddy.aggregation".into(),
                                    operator.spec().name.clone().into_bytes(),
                                )],
                                window_end_ms: None,
                            });
                        }
                    }
                }
                Ok(())
            }
            TaskKind::Repartition => {
                let operator = &mut self.operators[0];
                let corrupt = |reason: String| StateError::Corrupt {
                    store: operator.spec().name.clone(),
                    reason,
                };
                let message = RepartitionMessage::decode(payload).map_err(corrupt)?;
                let accumulators;
                let input = match message {
                    RepartitionMessage::Partial {
                        window,
                        accumulators: bytes,
                        ..
                    } => {
                        accumulators = decode_accumulators(&bytes).map_err(corrupt)?;
                        OperatorInput::Partial {
                            group: record.key.unwrap_or_default(),
                            window,
                            accumulators: &accumulators,
                        }
                    }
                    RepartitionMessage::Watermark {
                        upstream_partition,
                        stream_time,
                    } => OperatorInput::UpstreamTime {
                        upstream_partition,
                        stream_time,
                        idle: false,
                    },
                    RepartitionMessage::Idle {
                        upstream_partition,
                        stream_time,
                    } => OperatorInput::UpstreamTime {
                        upstream_partition,
                        stream_time,
                        idle: true,
                    },
                };
                operator.process(input, i64::MIN)?;
                Ok(())
            }
        }
    }

    /// Emits and moves this commit interval's changes into `out`.
    pub fn flush(&mut self, out: &mut TaskOutput) -> Result<(), StateError> {
        let context = FlushContext {
            stream_time: self.stream_time,
            task_partition: self.id.partition,
            idle: self.idle,
        };
        for operator in &mut self.operators {
            operator.on_flush(context, out)?;
        }
        self.flushed_stream_time = self.stream_time;
        Ok(())
    }

    /// The task's store named `name` (restore writes into it).
    pub fn store_mut(&mut self, name: &str) -> Option<&mut WindowStore> {
        self.operators
            .iter_mut()
            .filter_map(|o| o.store_mut())
            .find(|s| s.name() == name)
    }

    /// Applies the last flush to local state once its transaction committed, each store's
    /// writes with its changelog position from `ends` (what the transaction wrote to each
    /// changelog partition). Records processed since that flush stay uncommitted.
    pub fn apply_committed(
        &mut self,
        state: Vec<PendingStateWrites>,
        ends: &ChangelogEnds,
    ) -> Result<(), StateError> {
        for pending in state {
            if let Some(store) = self.store_mut(&pending.store) {
                store.apply(&pending.writes, ends)?;
            }
        }
        self.committed_stream_time = self.flushed_stream_time;
        for operator in &mut self.operators {
            operator.on_commit();
        }
        Ok(())
    }

    /// Returns to the last committed state; the caller seeks the consumer back to `next_offset`.
    pub fn rollback(&mut self, committed_offset: Option<i64>) -> Result<(), StateError> {
        self.stream_time = self.committed_stream_time;
        self.record_stream_time = self.committed_stream_time;
        self.next_offset = committed_offset;
        for operator in &mut self.operators {
            operator.on_rollback(self.committed_stream_time)?;
        }
        Ok(())
    }

    /// Offset-commit metadata: the task's stream time (input tasks), or the upstream watermarks
    /// and the watermark windows were closed at (repartition tasks), so a restarted task resumes
    /// with the same notion of time. An input task whose aggregations have not closed every window
    /// due at its stream time (closing is bounded per commit) adds where each one's closing
    /// stands (`closed=`, one per aggregation in order). `key=value` parts after the prefix;
    /// readers skip unknown keys.
    pub fn commit_metadata(&self) -> String {
        let watermarks = self.operators.iter().find_map(|o| o.upstream_watermarks());
        match watermarks {
            Some(marks) => {
                let closed = self
                    .operators
                    .iter()
                    .filter_map(|o| o.closed_through())
                    .max()
                    .unwrap_or(i64::MIN);
                format!(
                    "{METADATA_PREFIX};wm={};closed={closed}",
                    marks
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            None => {
                let closed: Vec<i64> = self
                    .operators
                    .iter()
                    .filter_map(|o| o.closed_through())
                    .collect();
                if closed.iter().all(|c| *c >= self.stream_time) {
                    format!("{METADATA_PREFIX};st={}", self.stream_time)
                } else {
                    format!(
                        "{METADATA_PREFIX};st={};closed={}",
                        self.stream_time,
                        closed
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            }
        }
    }

    /// Restores time from committed metadata (see [`StreamTask::commit_metadata`]).
    pub fn restore_metadata(&mut self, metadata: &str) {
        let mut parts = metadata.split(';');
        if parts.next() != Some(METADATA_PREFIX) {
            return;
        }
        let (mut marks, mut closed) = (None, None);
        for part in parts {
            if let Some(st) = part.strip_prefix("st=").and_then(|v| v.parse().ok()) {
                self.stream_time = st;
                self.record_stream_time = st;
                self.committed_stream_time = st;
                self.flushed_stream_time = st;
                for operator in &mut self.operators {
                    let _ = operator.on_rollback(st);
                }
            } else if let Some(list) = part.strip_prefix("wm=") {
                marks = Some(
                    list.split(',')
                        .filter_map(|m| m.parse().ok())
                        .collect::<Vec<i64>>(),
                );
            } else if let Some(value) = part.strip_prefix("closed=") {
                closed = value
                    .split(',')
                    .map(|v| v.parse().ok())
                    .collect::<Option<Vec<i64>>>();
            }
        }
        if let Some(marks) = marks {
            let closed = closed.and_then(|c| c.into_iter().max());
            for operator in &mut self.operators {
                operator.restore_upstream_watermarks(&marks, closed);
                // Windows the restored watermarks already closed are retained ones, not due.
                let _ = operator.on_restore(self.stream_time);
            }
        } else if let Some(closed) = closed {
            // An input task's local aggregations, each where its closing stood.
            let closing = self
                .operators
                .iter_mut()
                .filter(|o| o.closed_through().is_some());
            for (operator, at) in closing.zip(closed) {
                operator.restore_closed_through(at);
            }
        }
    }

    /// Rebuilds every operator's window index from its committed store.
    pub fn reload(&mut self) -> Result<(), StateError> {
        for operator in &mut self.operators {
            operator.on_restore(self.stream_time)?;
        }
        Ok(())
    }

    /// Store names of this task, for restore and checkpoints.
    pub fn store_names(&self) -> Vec<String> {
        self.operators
            .iter()
            .filter_map(|o| o.store().map(|s| s.name().to_string()))
            .collect()
    }
}
