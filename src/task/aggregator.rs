//! One aggregation inside one task: assigns rows to windows, updates accumulators, closes
//! windows and produces what the commit sends.

use super::compiled::CompiledAggregation;
use super::output::{
    AggregateRecord, OutgoingKind, OutgoingRecord, PendingStateWrites, TaskOutput,
};
use super::repartition::{partition_for, RepartitionMessage};
use super::sessions;
use crate::aggregate::{Accumulators, Coupon};
use crate::record::{DecodedRecord, GroupKey};
use crate::state::{decode_accumulators, encode_accumulators, StateError, StateKey, WindowStore};
use crate::topology::{EmitMode, WindowSpec};
use crate::window::{assign_windows, close_time, max_window_end, Window};
use hashbrown::HashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What an aggregation does in a task.
pub enum Role {
    /// Grouped by the source key: the full state lives in this input task.
    Local { store: WindowStore },
    /// Stage 1 of a repartitioned aggregation: partials flushed to the repartition topic each commit.
    Partial {
        upstream_partition: u32,
        downstream_partitions: i32,
    },
    /// Stage 2: merges partials from `upstream_partitions` input partitions.
    Merge {
        store: WindowStore,
        upstream_partitions: usize,
    },
}

/// Counters a task reads after each commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    pub late_records: u64,
    pub emitted_final: u64,
    pub emitted_update: u64,
}

enum Delta<'r, 'a> {
    Row(&'r DecodedRecord<'a>, Option<usize>, &'r [Option<Coupon>]),
    Partial(&'r Accumulators),
}

impl Delta<'_, '_> {
    #[inline]
    fn apply(&self, spec: &CompiledAggregation, accumulators: &mut Accumulators) {
        match self {
            Delta::Row(record, item, coupons) => {
                accumulators.update(&spec.aggregates, record, *item, coupons)
            }
            Delta::Partial(partial) => accumulators.merge(partial),
        }
    }
}

struct StoredWindows {
    store: WindowStore,
    /// Every (group, window) in the store: existence checks without reads, and session lookups.
    open: HashMap<Vec<u8>, Vec<Window>>,
    /// close time -> windows to close then (entries for merged-away sessions are skipped).
    closing: BTreeMap<i64, Vec<(Vec<u8>, Window)>>,
    /// Closed windows kept for `retention`, by deletion time.
    expiring: BTreeMap<i64, Vec<(Vec<u8>, Window)>>,
    /// Merge role: the latest watermark of each upstream partition.
    upstream: Option<Vec<i64>>,
    /// Merge role: upstream partitions that announced they are idle.
    upstream_idle: Vec<bool>,
    /// Merge role: the upstream marks and idle flags as of the last commit, restored on rollback
    /// so that replayed partials are not mistaken for late ones.
    committed_upstream: (Vec<i64>, Vec<bool>),
    /// The furthest watermark windows were closed at. It never goes back, even when an idle
    /// upstream partition comes back with an older stream time: windows closed stay closed, and
    /// partials for them are late.
    closed_through: i64,
    /// `closed_through` as of the last commit, restored on rollback.
    committed_closed_through: i64,
}

/// How often an idle upstream repeats its `Idle` announcement.
const IDLE_REANNOUNCE: std::time::Duration = std::time::Duration::from_secs(5);

struct PartialWindows {
    partials: HashMap<Vec<u8>, Vec<(Window, Accumulators)>>,
    upstream_partition: u32,
    downstream_partitions: i32,
    last_watermark_sent: i64,
    /// Whether the last announcement downstream was `Idle`, and when it was sent.
    idle_announced: bool,
    idle_announced_at: Option<std::time::Instant>,
    /// After a rollback the last announcement is unknown: send the next one whatever it is.
    resend: bool,
}

// One State per operator: the variants' size difference costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
enum State {
    Stored(StoredWindows),
    Partial(PartialWindows),
}

pub struct WindowAggregator {
    spec: Arc<CompiledAggregation>,
    state: State,
    group_buf: Vec<u8>,
    coupon_buf: Vec<Option<Coupon>>,
    stats: AggregatorStats,
}

impl WindowAggregator {
    pub fn new(spec: Arc<CompiledAggregation>, role: Role) -> WindowAggregator {
        let stored = |store, upstream: Option<Vec<i64>>| {
            State::Stored(StoredWindows {
                store,
                open: HashMap::new(),
                closing: BTreeMap::new(),
                expiring: BTreeMap::new(),
                upstream_idle: vec![false; upstream.as_ref().map_or(0, Vec::len)],
                committed_upstream: (
                    upstream.clone().unwrap_or_default(),
                    vec![false; upstream.as_ref().map_or(0, Vec::len)],
                ),
                closed_through: i64::MIN,
                committed_closed_through: i64::MIN,
                upstream,
            })
        };
        let state = match role {
            Role::Local { store } => stored(store, None),
            Role::Merge {
                store,
                upstream_partitions,
            } => stored(store, Some(vec![i64::MIN; upstream_partitions])),
            Role::Partial {
                upstream_partition,
                downstream_partitions,
            } => State::Partial(PartialWindows {
                partials: HashMap::new(),
                upstream_partition,
                downstream_partitions,
                last_watermark_sent: i64::MIN,
                idle_announced: false,
                idle_announced_at: None,
                resend: false,
            }),
        };
        WindowAggregator {
            spec,
            state,
            group_buf: Vec::with_capacity(64),
            coupon_buf: Vec::new(),
            stats: AggregatorStats::default(),
        }
    }

    pub fn spec(&self) -> &CompiledAggregation {
        &self.spec
    }

    /// Counters since the last call.
    pub fn take_stats(&mut self) -> AggregatorStats {
        std::mem::take(&mut self.stats)
    }

    pub fn store(&self) -> Option<&WindowStore> {
        match &self.state {
            State::Stored(s) => Some(&s.store),
            State::Partial(_) => None,
        }
    }

    pub fn store_mut(&mut self) -> Option<&mut WindowStore> {
        match &mut self.state {
            State::Stored(s) => Some(&mut s.store),
            State::Partial(_) => None,
        }
    }

    /// Rebuilds the window index from committed state (after a restore or a rollback).
    /// `stream_time` is the task's committed time: a stored window that closed by then is one
    /// kept for `retention`, already emitted, and is only scheduled for deletion.
    pub fn reload_index(&mut self, stream_time: i64) -> Result<(), StateError> {
        let spec = self.spec.clone();
        match &mut self.state {
            State::Partial(p) => p.partials.clear(),
            State::Stored(s) => {
                s.store.discard_uncommitted();
                s.open.clear();
                s.closing.clear();
                s.expiring.clear();
                let watermark = watermark_of(s, stream_time).max(s.closed_through);
                s.closed_through = watermark;
                for key in s.store.committed_keys()? {
                    let group: Vec<u8> = key.group.0.into_vec();
                    let close_at = close_time(&spec.window, key.window, spec.grace_ms);
                    let schedule = if close_at <= watermark && spec.retention_ms > 0 {
                        s.expiring
                            .entry(close_at.saturating_add(spec.retention_ms))
                            .or_default()
                    } else {
                        s.closing.entry(close_at).or_default()
                    };
                    schedule.push((group.clone(), key.window));
                    s.open.entry(group).or_default().push(key.window);
                }
            }
        }
        Ok(())
    }

    /// Merge role: the upstream watermarks, as saved with committed offsets.
    pub fn upstream_watermarks(&self) -> Option<&[i64]> {
        match &self.state {
            State::Stored(s) => s.upstream.as_deref(),
            State::Partial(_) => None,
        }
    }

    /// The watermark windows were closed at (see `StoredWindows::closed_through`); `None` for
    /// the partial role, which closes nothing.
    pub fn closed_through(&self) -> Option<i64> {
        match &self.state {
            State::Stored(s) => Some(s.closed_through),
            State::Partial(_) => None,
        }
    }

    /// Merge role: restores the upstream watermarks and the closing watermark saved with the
    /// committed offsets.
    pub fn set_upstream_watermarks(&mut self, watermarks: &[i64], closed_through: Option<i64>) {
        if let State::Stored(s) = &mut self.state {
            if let Some(upstream) = &mut s.upstream {
                for (mine, saved) in upstream.iter_mut().zip(watermarks) {
                    *mine = *saved;
                }
                if let Some(closed) = closed_through {
                    s.closed_through = s.closed_through.max(closed);
                }
            }
        }
        self.mark_committed();
    }

    /// The transaction holding everything applied so far committed: remember the merge side's
    /// upstream time as the point a rollback returns to.
    pub fn mark_committed(&mut self) {
        if let State::Stored(s) = &mut self.state {
            if let Some(upstream) = &s.upstream {
                s.committed_upstream = (upstream.clone(), s.upstream_idle.clone());
            }
            s.committed_closed_through = s.closed_through;
        }
    }

    /// Adds one input record (Local and Partial roles). Returns whether it was late.
    pub fn process(
        &mut self,
        record: &DecodedRecord<'_>,
        stream_time: i64,
    ) -> Result<bool, StateError> {
        let spec = self.spec.clone();
        let t = record.event_time_ms;
        if max_window_end(&spec.window, t) + spec.grace_ms <= stream_time {
            let any_row = if spec.explode {
                (0..record.items.len()).any(|i| spec.accepts(record, Some(i)))
            } else {
                spec.accepts(record, None)
            };
            if any_row {
                self.stats.late_records += 1;
            }
            return Ok(any_row);
        }
        let rows = if spec.explode { record.items.len() } else { 1 };
        for row in 0..rows {
            let item = spec.explode.then_some(row);
            if !spec.accepts(record, item) {
                continue;
            }
            let mut group = std::mem::take(&mut self.group_buf);
            spec.group_key_into(record, item, &mut group);
            let mut coupons = std::mem::take(&mut self.coupon_buf);
            Accumulators::coupons(&spec.aggregates, record, item, &mut coupons);
            let delta = Delta::Row(record, item, &coupons);
            let result = match &spec.window {
                WindowSpec::Session { gap_ms } => self.add_session(
                    &group,
                    Window {
                        start: t,
                        end: t + 1,
                    },
                    *gap_ms,
                    &delta,
                ),
                window_spec => {
                    let mut result = Ok(());
                    assign_windows(window_spec, t, |window| {
                        // Kafka Streams' rule: a hopping record still updates its windows that are open.
                        if result.is_ok() && window.end + spec.grace_ms > stream_time {
                            result = self.add_to_window(&group, window, &delta);
                        }
                    });
                    result
                }
            };
            self.group_buf = group;
            self.coupon_buf = coupons;
            result?;
        }
        Ok(false)
    }

    /// Merge role: adds a partial from upstream. Returns whether it was late (should not happen:
    /// upstream drops late records and watermarks only move after their partials).
    pub fn apply_partial(
        &mut self,
        group: &[u8],
        window: Window,
        accumulators: &Accumulators,
    ) -> Result<bool, StateError> {
        let spec = self.spec.clone();
        if let State::Stored(s) = &self.state {
            let watermark = watermark_of(s, i64::MIN).max(s.closed_through);
            if close_time(&spec.window, window, spec.grace_ms) <= watermark {
                self.stats.late_records += 1;
                return Ok(true);
            }
        }
        let delta = Delta::Partial(accumulators);
        match spec.window {
            WindowSpec::Session { gap_ms } => self.add_session(group, window, gap_ms, &delta)?,
            _ => self.add_to_window(group, window, &delta)?,
        }
        Ok(false)
    }

    /// Merge role: an upstream partition's stream time moved (and it is active).
    pub fn apply_watermark(&mut self, upstream_partition: u32, stream_time: i64) {
        self.apply_upstream(upstream_partition, stream_time, false);
    }

    /// Merge role: an upstream partition is idle; it no longer holds back the minimum.
    pub fn apply_idle(&mut self, upstream_partition: u32, stream_time: i64) {
        self.apply_upstream(upstream_partition, stream_time, true);
    }

    fn apply_upstream(&mut self, upstream_partition: u32, stream_time: i64, idle: bool) {
        if let State::Stored(StoredWindows {
            upstream: Some(upstream),
            upstream_idle,
            ..
        }) = &mut self.state
        {
            let i = upstream_partition as usize;
            let mut resumed = false;
            if let (Some(mark), Some(flag)) = (upstream.get_mut(i), upstream_idle.get_mut(i)) {
                *mark = (*mark).max(stream_time);
                resumed = *flag && !idle;
                *flag = idle;
            }
            if resumed {
                // An idle upstream came back. The others idle with it may be coming back too,
                // with records not here yet: until each confirms it is still idle (it repeats
                // that every IDLE_REANNOUNCE) or sends a watermark, it holds the minimum at its
                // mark again. Otherwise the first partition to resume after a quiet period
                // would close windows the others still have records for.
                upstream_idle.iter_mut().for_each(|flag| *flag = false);
            }
        }
    }

    fn add_to_window(
        &mut self,
        group: &[u8],
        window: Window,
        delta: &Delta<'_, '_>,
    ) -> Result<(), StateError> {
        let spec = &*self.spec;
        match &mut self.state {
            State::Stored(s) => {
                let windows = s.open.entry_ref(group).or_default();
                let exists = windows.contains(&window);
                if !exists {
                    windows.push(window);
                    s.closing
                        .entry(close_time(&spec.window, window, spec.grace_ms))
                        .or_default()
                        .push((group.into(), window));
                }
                s.store.update(
                    group,
                    window,
                    exists,
                    || Accumulators::new(&spec.aggregates),
                    |acc| delta.apply(spec, acc),
                )
            }
            State::Partial(p) => {
                let windows = p.partials.entry_ref(group).or_default();
                match windows.iter_mut().find(|(w, _)| *w == window) {
                    Some((_, acc)) => delta.apply(spec, acc),
                    None => {
                        let mut acc = Accumulators::new(&spec.aggregates);
                        delta.apply(spec, &mut acc);
                        windows.push((window, acc));
                    }
                }
                Ok(())
            }
        }
    }

    fn add_session(
        &mut self,
        group: &[u8],
        new: Window,
        gap_ms: i64,
        delta: &Delta<'_, '_>,
    ) -> Result<(), StateError> {
        let spec = &*self.spec;
        match &mut self.state {
            State::Stored(s) => {
                let sessions = s.open.entry_ref(group).or_default();
                let joined = sessions::overlapping(sessions, new, gap_ms);
                if let [only] = joined[..] {
                    let existing = sessions[only];
                    if existing.start <= new.start && new.end <= existing.end {
                        return s.store.update(
                            group,
                            existing,
                            true,
                            || Accumulators::new(&spec.aggregates),
                            |acc| delta.apply(spec, acc),
                        );
                    }
                    // The common case: a record extends one session. Its accumulators move to the
                    // wider key; its closing entry (matched by start) is rescheduled when it comes due.
                    let merged = sessions::span(sessions, &joined, new);
                    sessions[only] = merged;
                    let mut accumulators = s
                        .store
                        .take(group, existing)?
                        .unwrap_or_else(|| Accumulators::new(&spec.aggregates));
                    delta.apply(spec, &mut accumulators);
                    if merged.start != existing.start {
                        s.closing
                            .entry(close_time(&spec.window, merged, spec.grace_ms))
                            .or_default()
                            .push((group.into(), merged));
                    }
                    return s
                        .store
                        .update(group, merged, false, || accumulators, |_| {});
                }
                let merged = sessions::span(sessions, &joined, new);
                let mut accumulators = Accumulators::new(&spec.aggregates);
                delta.apply(spec, &mut accumulators);
                let old: Vec<Window> = joined.iter().map(|&i| sessions[i]).collect();
                sessions.retain(|w| !old.contains(w));
                sessions.push(merged);
                for &window in &old {
                    if let Some(previous) = s.store.take(group, window)? {
                        accumulators.merge(&previous);
                    }
                }
                // One closing entry per session start: an old session keeping its start keeps its entry.
                if !old.iter().any(|w| w.start == merged.start) {
                    s.closing
                        .entry(close_time(&spec.window, merged, spec.grace_ms))
                        .or_default()
                        .push((group.into(), merged));
                }
                s.store
                    .update(group, merged, false, || accumulators, |_| {})
            }
            State::Partial(p) => {
                let sessions = p.partials.entry_ref(group).or_default();
                let windows: Vec<Window> = sessions.iter().map(|(w, _)| *w).collect();
                let joined = sessions::overlapping(&windows, new, gap_ms);
                if let [only] = joined[..] {
                    let (existing, acc) = &mut sessions[only];
                    if existing.start <= new.start && new.end <= existing.end {
                        delta.apply(spec, acc);
                        return Ok(());
                    }
                }
                let merged = sessions::span(&windows, &joined, new);
                let mut accumulators = Accumulators::new(&spec.aggregates);
                delta.apply(spec, &mut accumulators);
                for &i in joined.iter().rev() {
                    let (_, previous) = sessions.swap_remove(i);
                    accumulators.merge(&previous);
                }
                sessions.push((merged, accumulators));
                Ok(())
            }
        }
    }

    /// Closes what stream time allows, emits, and moves changes into `out`. `stream_time` is the
    /// task's; the Merge role uses the minimum of its upstream watermarks instead.
    /// Emits and moves this commit's changes into `out`. `idle`: the task's input partition is
    /// quiet and read to its end (the Partial role then announces it downstream).
    pub fn flush(
        &mut self,
        stream_time: i64,
        task_partition: i32,
        idle: bool,
        out: &mut TaskOutput,
    ) -> Result<(), StateError> {
        let spec = self.spec.clone();
        match &mut self.state {
            State::Stored(s) => {
                let watermark = watermark_of(s, stream_time).max(s.closed_through);
                if watermark != s.closed_through {
                    if let Some(upstream) = &s.upstream {
                        tracing::debug!(aggregation = %spec.name, task_partition, watermark, ?upstream, idle = ?s.upstream_idle, "merge watermark advanced");
                    }
                }
                s.closed_through = watermark;
                while let Some(entry) = s.closing.first_entry() {
                    if *entry.key() > watermark {
                        break;
                    }
                    let (close_at, due) = entry.remove_entry();
                    for (group, scheduled) in due {
                        let Some(windows) = s.open.get_mut(&group) else {
                            continue;
                        };
                        // Sessions grow after they are scheduled: match by start, close what is there now.
                        let Some(position) =
                            windows.iter().position(|w| w.start == scheduled.start)
                        else {
                            continue;
                        };
                        let window = windows[position];
                        let due_at = close_time(&spec.window, window, spec.grace_ms);
                        if due_at > watermark {
                            s.closing.entry(due_at).or_default().push((group, window));
                            continue;
                        }
                        let key = StateKey {
                            group: GroupKey(group.clone().into()),
                            window,
                        };
                        let closed = if spec.retention_ms > 0 {
                            s.store.get(&key)?
                        } else {
                            windows.swap_remove(position);
                            if windows.is_empty() {
                                s.open.remove(&group);
                            }
                            s.store.take(&group, window)?
                        };
                        if let Some(accumulators) = closed {
                            out.records
                                .push(aggregate_record(&spec, &key, &accumulators, true));
                            self.stats.emitted_final += 1;
                        }
                        if spec.retention_ms > 0 {
                            s.expiring
                                .entry(close_at + spec.retention_ms)
                                .or_default()
                                .push((group, window));
                        }
                    }
                }
                while let Some(entry) = s.expiring.first_entry() {
                    if *entry.key() > watermark {
                        break;
                    }
                    for (group, window) in entry.remove() {
                        if let Some(windows) = s.open.get_mut(&group) {
                            windows.retain(|w| *w != window);
                            if windows.is_empty() {
                                s.open.remove(&group);
                            }
                        }
                        s.store.delete(&group, window)?;
                    }
                }
                if !s.store.has_changes() {
                    return Ok(());
                }
                let writes = s.store.flush();
                for write in &writes {
                    if spec.emit == EmitMode::Update {
                        if let (Some(value), Some(key)) =
                            (&write.value, StateKey::from_bytes(&write.key))
                        {
                            if close_time(&spec.window, key.window, spec.grace_ms) > watermark {
                                let accumulators =
                                    decode_accumulators(value).map_err(|reason| {
                                        StateError::Corrupt {
                                            store: spec.name.clone(),
                                            reason,
                                        }
                                    })?;
                                out.records.push(aggregate_record(
                                    &spec,
                                    &key,
                                    &accumulators,
                                    false,
                                ));
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
            }
            State::Partial(p) => {
                let topic = spec
                    .repartition_topic
                    .clone()
                    .expect("partial role has a repartition topic");
                for (group, windows) in p.partials.drain() {
                    let partition = partition_for(&group, p.downstream_partitions);
                    for (window, accumulators) in windows {
                        let mut bytes = Vec::new();
                        encode_accumulators(&accumulators, &mut bytes);
                        let message = RepartitionMessage::Partial {
                            upstream_partition: p.upstream_partition,
                            window,
                            accumulators: bytes,
                        };
                        out.records.push(OutgoingRecord {
                            kind: OutgoingKind::Repartition,
                            topic: topic.clone(),
                            partition: Some(partition),
                            key: Some(group.clone()),
                            value: Some(message.encode()),
                            headers: Vec::new(),
                            window_end_ms: None,
                        });
                    }
                }
                let announce = if idle {
                    // Repeated while idle: a merge side that saw another upstream come back
                    // waits for this confirmation before it leaves this one out again.
                    let due = p
                        .idle_announced_at
                        .is_none_or(|at| at.elapsed() >= IDLE_REANNOUNCE);
                    (!p.idle_announced || p.resend || due).then_some(RepartitionMessage::Idle {
                        upstream_partition: p.upstream_partition,
                        stream_time,
                    })
                } else {
                    (stream_time > p.last_watermark_sent || p.idle_announced || p.resend).then_some(
                        RepartitionMessage::Watermark {
                            upstream_partition: p.upstream_partition,
                            stream_time,
                        },
                    )
                };
                if let Some(message) = announce {
                    tracing::debug!(aggregation = %spec.name, ?message, "upstream announces");
                    let message = message.encode();
                    for partition in 0..p.downstream_partitions {
                        out.records.push(OutgoingRecord {
                            kind: OutgoingKind::Repartition,
                            topic: topic.clone(),
                            partition: Some(partition),
                            key: None,
                            value: Some(message.clone()),
                            headers: Vec::new(),
                            window_end_ms: None,
                        });
                    }
                    p.last_watermark_sent = p.last_watermark_sent.max(stream_time);
                    p.idle_announced = idle;
                    p.idle_announced_at = idle.then(std::time::Instant::now);
                    p.resend = false;
                }
            }
        }
        Ok(())
    }

    /// Forgets uncommitted work (the transaction was aborted). Partials are dropped; the task
    /// replays their records from the committed offsets.
    pub fn rollback(&mut self, last_watermark_sent: i64) -> Result<(), StateError> {
        match &mut self.state {
            State::Partial(p) => {
                p.last_watermark_sent = last_watermark_sent;
                p.resend = true;
            }
            State::Stored(s) => {
                if let Some(upstream) = &mut s.upstream {
                    upstream.clone_from(&s.committed_upstream.0);
                    s.upstream_idle.clone_from(&s.committed_upstream.1);
                }
                s.closed_through = s.committed_closed_through;
            }
        }
        self.reload_index(last_watermark_sent)
    }

    /// Number of open (group, window) entries.
    pub fn open_windows(&self) -> usize {
        match &self.state {
            State::Stored(s) => s.open.values().map(Vec::len).sum(),
            State::Partial(p) => p.partials.values().map(Vec::len).sum(),
        }
    }
}

fn watermark_of(s: &StoredWindows, stream_time: i64) -> i64 {
    match &s.upstream {
        // The slowest active upstream partition; idle ones wait outside the minimum. When every
        // upstream is idle, all input is read: the furthest stream time holds.
        Some(upstream) => upstream
            .iter()
            .zip(&s.upstream_idle)
            .filter(|(_, idle)| !**idle)
            .map(|(mark, _)| *mark)
            .min()
            .unwrap_or_else(|| upstream.iter().copied().max().unwrap_or(i64::MIN)),
        None => stream_time,
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
