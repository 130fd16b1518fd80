//! Windows kept in a store and closed by event time: a whole aggregation grouped by the source key
//! (input tasks), or stage 2 of a repartitioned one, merging partials and closing at the slowest
//! upstream partition's watermark (repartition tasks).

use super::compiled::CompiledAggregation;
use super::open_sessions::OpenSessions;
use super::output::{
    AggregateRecord, OutgoingKind, OutgoingRecord, PendingStateWrites, TaskOutput,
};
use super::rows::{Delta, RowAssigner};
use super::{FlushContext, Operator, OperatorInput, OperatorStats};
use crate::aggregate::Accumulators;
use crate::fixed_hash::HashSet;
use crate::state::{decode_accumulators, StateError, StateKey, WindowStore};
use crate::topology::{EmitMode, WindowSpec};
use crate::window::{close_time, sessions, ClosedThrough, UpstreamWatermarks, Window};
use std::sync::Arc;

pub struct WindowAggregate {
    spec: Arc<CompiledAggregation>,
    store: WindowStore,
    /// Session aggregations: the sessions of the groups being worked on.
    sessions: OpenSessions,
    /// The merge side's upstream partitions; `None` for an aggregation local to its input task.
    upstream: Option<UpstreamWatermarks>,
    closed_through: ClosedThrough,
    rows: RowAssigner,
    stats: OperatorStats,
    /// Windows closed per flush at most (see [`crate::task::DEFAULT_CLOSE_LIMIT`]).
    close_limit: usize,
}

impl WindowAggregate {
    /// The whole aggregation in its input task (grouped by the source key).
    pub fn local(
        spec: Arc<CompiledAggregation>,
        store: WindowStore,
        close_limit: usize,
    ) -> WindowAggregate {
        WindowAggregate::new(spec, store, None, close_limit)
    }

    /// Stage 2: merges partials from `upstream_partitions` input partitions.
    pub fn merging(
        spec: Arc<CompiledAggregation>,
        store: WindowStore,
        upstream_partitions: usize,
        close_limit: usize,
    ) -> WindowAggregate {
        WindowAggregate::new(
            spec,
            store,
            Some(UpstreamWatermarks::new(upstream_partitions)),
            close_limit,
        )
    }

    fn new(
        spec: Arc<CompiledAggregation>,
        store: WindowStore,
        upstream: Option<UpstreamWatermarks>,
        close_limit: usize,
    ) -> WindowAggregate {
        WindowAggregate {
            sessions: OpenSessions::default(),
            spec,
            store,
            upstream,
            closed_through: ClosedThrough::default(),
            rows: RowAssigner::default(),
            stats: OperatorStats::default(),
            close_limit,
        }
    }

    /// The time windows close at: the task's stream time, or for the merge side the slowest
    /// active upstream; never behind where windows were already closed.
    fn watermark(&self, stream_time: i64) -> i64 {
        let time = self
            .upstream
            .as_ref()
            .map_or(stream_time, UpstreamWatermarks::watermark);
        time.max(self.closed_through.get())
    }

    fn add(
        spec: &CompiledAggregation,
        store: &mut WindowStore,
        sessions: &mut OpenSessions,
        group: &[u8],
        window: Window,
        delta: &Delta<'_, '_>,
    ) -> Result<(), StateError> {
        match spec.window {
            WindowSpec::Session { gap_ms } => {
                Self::add_session(spec, store, sessions, group, window, gap_ms, delta)
            }
            _ => store.update(
                group,
                window,
                true,
                || Accumulators::new(&spec.aggregates),
                |acc| delta.apply(spec, acc),
            ),
        }
    }

    /// Adds `new` to the sessions of `group` ([`sessions::add`]). A session whose bounds change
    /// moves to its new key (and so to its new close time).
    fn add_session(
        spec: &CompiledAggregation,
        store: &mut WindowStore,
        sessions: &mut OpenSessions,
        group: &[u8],
        new: Window,
        gap_ms: i64,
        delta: &Delta<'_, '_>,
    ) -> Result<(), StateError> {
        let open = sessions.of(group, store)?;
        sessions::add(
            &mut StoredSessions {
                spec,
                store,
                open,
                group,
                delta,
            },
            new,
            gap_ms,
        )
    }

    /// Closes the windows whose close time is in `(after, target]`, emitting finals into `out`,
    /// and deletes the closed ones whose retention ended in that range; returns the close time
    /// reached. At most about `close_limit` windows close per call, whole close times at a time:
    /// a jump of stream time over many close times (a backlog, a partition back from idle) is
    /// spread over several commits, each a transaction well inside `transaction.timeout.ms`.
    fn close_windows(
        &mut self,
        after: i64,
        target: i64,
        out: &mut TaskOutput,
    ) -> Result<i64, StateError> {
        let (spec, store, stats) = (&*self.spec, &mut self.store, &mut self.stats);
        let retained = spec.retention_ms > 0;
        let is_session = matches!(spec.window, WindowSpec::Session { .. });
        let (due, through) = store.due_to_close_within(after, target, self.close_limit)?;
        // Retained sessions closed in this pass: a session found through a stale entry may also
        // be due through its own entry (created since the last flush), and a retained one is
        // still there the second time.
        let mut closed_now: HashSet<StateKey> = HashSet::default();
        for (close_at, indexed) in due {
            let mut key = indexed;
            let mut closed = if retained {
                store.get(&key)?
            } else {
                store.take(&key.group.0, key.window)?
            };
            if closed.is_none() && is_session {
                // Merged away, or extended at its end since it was indexed (the entry stayed at
                // the old end's close time): the session with this start, if any, is the one.
                let start = key.window.start;
                let current = self
                    .sessions
                    .of(&key.group.0, store)?
                    .iter()
                    .copied()
                    .find(|w| w.start == start && *w != key.window);
                match current {
                    Some(window) if close_time(&spec.window, window, spec.grace_ms) > through => {
                        store.reschedule(close_at, &key, Some(window));
                        continue;
                    }
                    Some(window) => {
                        // Due now. A retained session keeps an entry at its real close time,
                        // which is where its retention is counted from.
                        store.reschedule(close_at, &key, retained.then_some(window));
                        key.window = window;
                        if closed_now.contains(&key) {
                            continue;
                        }
                        closed = if retained {
                            store.get(&key)?
                        } else {
                            store.take(&key.group.0, key.window)?
                        };
                    }
                    None => store.reschedule(close_at, &key, None),
                }
            }
            let Some(accumulators) = closed else {
                continue;
            };
            if is_session && retained && !closed_now.insert(key.clone()) {
                continue;
            }
            out.records
                .push(aggregate_record(spec, &key, &accumulators, true));
            stats.emitted_final += 1;
            if is_session && !retained {
                self.sessions.remove(&key.group.0, key.window, store)?;
            }
        }
        if retained {
            let retention = spec.retention_ms;
            let expired = store.closed_between(
                after.saturating_sub(retention),
                through.saturating_sub(retention),
            )?;
            for key in expired {
                store.delete(&key.group.0, key.window)?;
                if is_session {
                    self.sessions.remove(&key.group.0, key.window, store)?;
                }
            }
        }
        Ok(through)
    }

    /// Where closing stands when nothing recorded it (a task committed before closing was
    /// recorded with its time): everything due at the watermark of `stream_time` was closed.
    fn assume_closed_through(&mut self, stream_time: i64) {
        if !self.closed_through.is_known() {
            self.closed_through.advance(self.watermark(stream_time));
        }
    }

    /// Moves this interval's store changes into `out`: changelog records, updates (`emit =
    /// "update"`) for windows still open, and the writes to apply after the commit.
    fn emit_changes(
        &mut self,
        watermark: i64,
        task_partition: i32,
        out: &mut TaskOutput,
    ) -> Result<(), StateError> {
        if !self.store.has_changes() {
            return Ok(());
        }
        let spec = &*self.spec;
        let writes = self.store.flush();
        for write in &writes {
            if spec.emit == EmitMode::Update {
                if let (Some(value), Some(key)) = (&write.value, StateKey::from_bytes(&write.key)) {
                    if close_time(&spec.window, key.window, spec.grace_ms) > watermark {
                        let accumulators =
                            decode_accumulators(value).map_err(|reason| StateError::Corrupt {
                                store: spec.name.clone(),
                                reason,
                            })?;
                        out.records
                            .push(aggregate_record(spec, &key, &accumulators, false));
                        self.stats.emitted_update += 1;
                    }
                }
            }
            out.records.push(OutgoingRecord {
                kind: OutgoingKind::Changelog,
                topic: spec.changelog_topic.clone(),
                partition: Some(task_partition),
                key: Some(write.key.clone()),
                value: write.value.clone(),
                headers: Vec::new(),
                window_end_ms: None,
            });
        }
        out.state.push(PendingStateWrites {
            store: spec.name.clone(),
            writes,
        });
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn spec(&self) -> &CompiledAggregation {
        &self.spec
    }

    fn process(
        &mut self,
        input: OperatorInput<'_, '_>,
        stream_time: i64,
    ) -> Result<bool, StateError> {
        let (spec, store, sessions) = (&*self.spec, &mut self.store, &mut self.sessions);
        let late = match input {
            OperatorInput::Record(record) => {
                self.rows
                    .assign(spec, record, stream_time, |group, windows, delta| {
                        windows.iter().try_for_each(|&window| {
                            Self::add(spec, store, sessions, group, window, delta)
                        })
                    })?
            }
            OperatorInput::Partial {
                group,
                window,
                accumulators,
            } => {
                // Should not happen: upstream drops late records and watermarks only move after
                // their partials.
                let watermark = self
                    .upstream
                    .as_ref()
                    .map_or(i64::MIN, UpstreamWatermarks::watermark)
                    .max(self.closed_through.get());
                if close_time(&spec.window, window, spec.grace_ms) <= watermark {
                    true
                } else {
                    Self::add(
                        spec,
                        store,
                        sessions,
                        group,
                        window,
                        &Delta::Partial(accumulators),
                    )?;
                    false
                }
            }
            OperatorInput::UpstreamTime {
                upstream_partition,
                stream_time,
                idle,
            } => {
                if let Some(upstream) = &mut self.upstream {
                    upstream.observe(upstream_partition, stream_time, idle);
                }
                false
            }
        };
        if late {
            self.stats.late_records += 1;
        }
        Ok(late)
    }

    fn on_flush(&mut self, context: FlushContext, out: &mut TaskOutput) -> Result<(), StateError> {
        let before = self.closed_through.get();
        let watermark = self.watermark(context.stream_time);
        if watermark != before {
            if let Some(upstream) = &self.upstream {
                tracing::debug!(aggregation = %self.spec.name, task_partition = context.task_partition, watermark, upstream = ?upstream.marks(), idle = ?upstream.idle_flags(), "merge watermark advanced");
            }
        }
        let reached = self.close_windows(before, watermark, out)?;
        self.closed_through.advance(reached);
        // Windows due but not closed yet (past the limit) are not open: no updates for them.
        self.emit_changes(watermark, context.task_partition, out)?;
        self.sessions.flushed();
        if let Some(upstream) = &mut self.upstream {
            upstream.mark_flushed();
        }
        self.closed_through.mark_flushed();
        Ok(())
    }

    fn on_commit(&mut self) {
        if let Some(upstream) = &mut self.upstream {
            upstream.mark_committed();
        }
        self.closed_through.mark_committed();
        // The session lists take at most a quarter of what the store's cache may.
        self.sessions.committed(self.store.cache_share_bytes() / 4);
    }

    /// Returns to committed state. The windows to close next are those the store's close-time
    /// index has after the committed closing watermark: any at or before it were emitted already
    /// and, with `retention`, are only waiting for deletion. Windows due past it (closing had not
    /// caught up with stream time) close at the next flushes.
    fn on_rollback(&mut self, stream_time: i64) -> Result<(), StateError> {
        if let Some(upstream) = &mut self.upstream {
            upstream.roll_back();
        }
        self.closed_through.roll_back();
        self.store.discard_uncommitted();
        self.sessions.clear();
        self.assume_closed_through(stream_time);
        Ok(())
    }

    /// The store was opened or restored: it counts its windows; closing resumes after the
    /// committed watermark (see [`Operator::on_rollback`]).
    fn on_restore(&mut self, stream_time: i64) -> Result<(), StateError> {
        self.store.reopen()?;
        self.sessions.clear();
        self.assume_closed_through(stream_time);
        Ok(())
    }

    fn restore_closed_through(&mut self, closed_through: i64) {
        self.closed_through.restore(closed_through);
    }

    fn store(&self) -> Option<&WindowStore> {
        Some(&self.store)
    }

    fn store_mut(&mut self) -> Option<&mut WindowStore> {
        Some(&mut self.store)
    }

    fn upstream_watermarks(&self) -> Option<&[i64]> {
        self.upstream.as_ref().map(UpstreamWatermarks::marks)
    }

    fn closed_through(&self) -> Option<i64> {
        Some(self.closed_through.get())
    }

    fn restore_upstream_watermarks(&mut self, watermarks: &[i64], closed_through: Option<i64>) {
        if let Some(upstream) = &mut self.upstream {
            upstream.restore(watermarks);
            if let Some(closed) = closed_through {
                self.closed_through.advance(closed);
            }
            upstream.mark_flushed();
        }
        self.closed_through.mark_flushed();
        self.on_commit();
    }

    fn take_stats(&mut self) -> OperatorStats {
        std::mem::take(&mut self.stats)
    }

    fn open_windows(&self) -> usize {
        self.store.live_windows() as usize
    }
}

fn aggregate_record(
    spec: &CompiledAggregation,
    key: &StateKey,
    accumulators: &Accumulators,
    is_final: bool,
) -> OutgoingRecord {
    let record = AggregateRecord::new(spec, key, accumulators, is_final);
    OutgoingRecord {
        kind: OutgoingKind::Aggregate { is_final },
        topic: spec.output_topic.clone(),
        partition: None,
        key: Some(record.key().into_bytes()),
        value: Some(serde_json::to_vec(&record).expect("serializable")),
        headers: Vec::new(),
        window_end_ms: is_final.then_some(key.window.end),
    }
}

/// A group's sessions in the window store, with the bounds of its open ones.
struct StoredSessions<'a, 'r, 'd> {
    spec: &'a CompiledAggregation,
    store: &'a mut WindowStore,
    open: &'a mut Vec<Window>,
    group: &'a [u8],
    delta: &'a Delta<'r, 'd>,
}

impl sessions::GroupSessions for StoredSessions<'_, '_, '_> {
    type Error = StateError;

    fn bounds(&mut self) -> Result<Vec<Window>, StateError> {
        Ok(self.open.clone())
    }

    fn add_inside(&mut self, index: usize) -> Result<(), StateError> {
        let (spec, delta) = (self.spec, self.delta);
        self.store.update(
            self.group,
            self.open[index],
            true,
            || Accumulators::new(&spec.aggregates),
            |acc| delta.apply(spec, acc),
        )
    }

    fn join(&mut self, indices: &[usize], merged: Window) -> Result<(), StateError> {
        if let [only] = indices {
            // The common case: a record extends one session. Its accumulators move to the wider
            // key, with the record applied rather than merged in.
            let existing = self.open[*only];
            self.open[*only] = merged;
            let mut accumulators = self
                .store
                .take(self.group, existing)?
                .unwrap_or_else(|| Accumulators::new(&self.spec.aggregates));
            self.delta.apply(self.spec, &mut accumulators);
            return self
                .store
                .update(self.group, merged, false, || accumulators, |_| {});
        }
        let mut accumulators = self.delta.to_accumulators(self.spec);
        let old: Vec<Window> = indices.iter().map(|&i| self.open[i]).collect();
        self.open.retain(|w| !old.contains(w));
        self.open.push(merged);
        for &window in &old {
            if let Some(previous) = self.store.take(self.group, window)? {
                accumulators.merge(&previous);
            }
        }
        self.store
            .update(self.group, merged, false, || accumulators, |_| {})
    }
}
