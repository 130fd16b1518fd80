//! The instance's main loop: poll a batch, process it on the worker threads, send what it
//! produced, commit every `commit_interval_ms`; rebalance callbacks commit and close tasks.

use super::commit::{CommitCoordinator, CommitMode};
use super::copied_records::CopiedRecords;
use super::failure::{decide, Decision, Failure};
use super::loop_clock::{LoopClock, Phase};
use super::purge::RepartitionPurge;
use super::restore::Restoration;
use super::task_slot::TaskSlot;
use super::worker_pool::{InFlight, TaskWork, WorkerPool};
use crate::config::{Config, ProcessingGuarantee};
use crate::kafka::{
    ChangelogReader, ClientSettings, GroupConsumer, GroupHandle, InternalTopic, RebalanceListener,
    TopicAdmin,
};
use crate::task::{CompiledTopology, InputRecord, StateLocation, TaskId};
use crate::telemetry::events::{
    ActiveTasks, AggregationProgress, BatchProcessed, LoopTime, RebalanceKind, Rebalanced,
    RecordsConsumed, StoreSize, TaskProgress, WatermarkAdvanced,
};
use crate::telemetry::Health;
use crate::topology::{changelog_topic, internal_topics, Topology};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What `eddy run` hands the runtime.
pub struct RunOptions {
    pub config: Config,
    pub topology: Topology,
    /// Set to stop: the loop commits, leaves the group and returns.
    pub stop: Arc<AtomicBool>,
    pub health: Health,
}

/// Most records taken from the consumer before processing them as one batch.
const MAX_BATCH: usize = 20_000;

struct Shared {
    compiled: Arc<CompiledTopology>,
    partitions: HashMap<String, i32>,
    state: StateLocation,
    tasks: BTreeMap<TaskId, TaskSlot>,
    /// Assigned partitions whose restore has not started yet (paused until their task runs).
    pending: BTreeSet<(String, i32)>,
    /// The task being restored, a slice per loop turn (its partition paused too).
    restoring: Option<Restoration>,
    reader: Arc<ChangelogReader>,
    committer: CommitCoordinator,
    health: Health,
    /// A failure inside a rebalance callback that stops the instance.
    fatal: Option<crate::Error>,
    /// Stopping after a failure: tasks hold uncommitted work that must not be committed on the
    /// way out (revocations during close commit nothing, and no checkpoint is written).
    stopping_dirty: bool,
    /// Whether the open transaction is aborted on the way out after a failure (not when a
    /// commit's outcome is unknown).
    abort_on_stop: bool,
    /// The batch the workers are processing while the loop polls the next one. Its tasks are out
    /// of `tasks` until [`Shared::finish_batch`]; everything that needs every task finishes it
    /// first.
    in_flight: Option<BatchInFlight>,
}

/// A batch handed to the workers.
struct BatchInFlight {
    work: InFlight,
    records: usize,
    started: Instant,
}

/// A batch the workers finished, its output not yet handed on.
struct FinishedBatch {
    work: Vec<TaskWork>,
    records: usize,
    started: Instant,
}

impl Shared {
    /// Waits for the batch on the workers, if one is there.
    fn wait_batch(&mut self) -> Option<FinishedBatch> {
        let in_flight = self.in_flight.take()?;
        Some(FinishedBatch {
            work: in_flight.work.wait(),
            records: in_flight.records,
            started: in_flight.started,
        })
    }

    /// Puts a finished batch's tasks back, gives each its store writes and the producer its
    /// output. What failed (a task, or handing output to the producer) is returned for
    /// [`Shared::recover`]; after a failure no more output is sent.
    fn hand_off(&mut self, finished: FinishedBatch) -> Option<Failure> {
        let mut failure = None;
        for mut item in finished.work {
            if let Err(error) = std::mem::replace(&mut item.result, Ok(())) {
                failure.get_or_insert(Failure::Processing(error));
            }
            item.slot.pending_state.append(&mut item.output.state);
            if failure.is_none() {
                if let Err(error) = self.committer.send(&mut item.output) {
                    failure = Some(Failure::Commit(error));
                }
            }
            self.tasks.insert(item.slot.task.id.clone(), item.slot);
        }
        BatchProcessed {
            records: finished.records,
            seconds: finished.started.elapsed().as_secs_f64(),
        }
        .emit();
        failure
    }

    /// Waits for the batch on the workers and hands its output on.
    fn finish_batch(&mut self) -> Option<Failure> {
        let finished = self.wait_batch()?;
        self.hand_off(finished)
    }

    /// Tasks running, those in a batch on the workers included.
    fn task_count(&self) -> usize {
        self.tasks.len() + self.in_flight.as_ref().map_or(0, |b| b.work.tasks())
    }

    /// Carries out what [`decide`] chose for `failure`. `Err` means: stop with this error. A batch
    /// on the workers is finished first (recovering from its own failure too), since a rollback
    /// or a stop concerns every task.
    fn recover(&mut self, group: &GroupHandle<'_>, failure: Failure) -> Result<(), crate::Error> {
        if let Some(unfinished) = self.finish_batch() {
            self.recover_now(group, unfinished)?;
        }
        self.recover_now(group, failure)
    }

    fn recover_now(
        &mut self,
        group: &GroupHandle<'_>,
        failure: Failure,
    ) -> Result<(), crate::Error> {
        match decide(&failure) {
            Decision::Ignore | Decision::Wait => {
                tracing::warn!(?failure, "going on after a failure");
                Ok(())
            }
            Decision::RollBack { new_producer } => {
                tracing::warn!(?failure, "rolling back to the last commit");
                // A commit still in flight ends first. If it failed too, the rollback returns to
                // the commit before it, and its failure may call for more (a new producer, a stop).
                let new_producer = match self.committer.settle(&mut self.tasks, true) {
                    Ok(()) => new_producer,
                    Err(earlier) => {
                        let earlier = Failure::from(earlier);
                        match decide(&earlier) {
                            Decision::Stop { abort } => {
                                self.abort_on_stop = abort;
                                return Err(earlier.into_error());
                            }
                            Decision::RollBack {
                                new_producer: needed,
                            } => new_producer || needed,
                            Decision::Ignore | Decision::Wait => new_producer,
                        }
                    }
                };
                self.committer
                    .roll_back(&mut self.tasks, group, new_producer)
            }
            Decision::Stop { abort } => {
                self.abort_on_stop = abort;
                Err(failure.into_error())
            }
        }
    }

    /// Stops restoring the partitions in `partitions`, keeping their progress.
    fn forget_pending(&mut self, partitions: &[(String, i32)]) {
        for partition in partitions {
            self.pending.remove(partition);
        }
        let revoked = self.restoring.as_ref().is_some_and(|r| {
            partitions
                .iter()
                .any(|(t, p)| *t == r.id.topic && *p == r.id.partition)
        });
        if revoked {
            if let Some(restoration) = self.restoring.take() {
                restoration.suspend(&self.reader);
            }
        }
        self.export_restoring();
    }

    /// Readiness counts the tasks not running yet: waiting for their restore or in it.
    fn export_restoring(&self) {
        self.health
            .set_restoring(self.pending.len() + usize::from(self.restoring.is_some()));
    }
}

struct Listener {
    shared: Arc<Mutex<Shared>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RebalanceListener for Listener {
    fn on_revoke(&self, partitions: &[(String, i32)], lost: bool, group: &GroupHandle<'_>) {
        let mut shared = lock(&self.shared);
        Rebalanced {
            kind: if lost {
                RebalanceKind::Lost
            } else {
                RebalanceKind::Revoke
            },
            partitions,
        }
        .emit();
        let shared = &mut *shared;
        shared.forget_pending(partitions);
        // Every task takes part in the commit below: the batch on the workers ends first.
        let unfinished = shared.finish_batch();
        if shared.stopping_dirty {
            return;
        }
        let revoked: Vec<TaskId> = partitions
            .iter()
            .map(|(topic, partition)| TaskId {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect();
        // Lost partitions may have another owner already: commit nothing, drop them dirty (no
        // checkpoint). Revoked ones commit first and close clean; if that commit fails they are
        // dropped dirty too.
        let committed = if let Some(failure) = unfinished {
            Err(failure)
        } else if lost {
            Err(Failure::Commit(crate::kafka::CommitFailure::abortable(
                "partitions lost",
            )))
        } else {
            shared
                .committer
                .commit(&mut shared.tasks, group, CommitMode::Wait)
                .map_err(Failure::from)
        };
        let outcome = match committed {
            Ok(()) => {
                for id in &revoked {
                    if let Some(slot) = shared.tasks.remove(id) {
                        let ends = changelog_ends(&shared.compiled, &slot, group);
                        slot.close_clean(ends);
                    }
                }
                Ok(())
            }
            Err(failure) => {
                for id in &revoked {
                    shared.tasks.remove(id);
                }
                shared.recover(group, failure)
            }
        };
        if let Err(error) = outcome {
            shared.fatal = Some(error);
        }
        ActiveTasks(shared.tasks.len()).emit();
    }

    fn on_assign(&self, partitions: &[(String, i32)], group: &GroupHandle<'_>) {
        let mut shared = lock(&self.shared);
        Rebalanced {
            kind: RebalanceKind::Assign,
            partitions,
        }
        .emit();
        shared.health.set_joined(true);
        if let Err(error) = group.pause(partitions) {
            tracing::warn!(%error, "could not pause newly assigned partitions");
        }
        shared.pending.extend(partitions.iter().cloned());
        shared.export_restoring();
    }
}

/// Changelog end offsets of a task's stores, for its checkpoint.
fn changelog_ends(
    compiled: &CompiledTopology,
    slot: &TaskSlot,
    group: &GroupHandle<'_>,
) -> BTreeMap<String, i64> {
    slot.task
        .store_names()
        .into_iter()
        .filter_map(|store| {
            let topic = changelog_topic(&compiled.application_id, &store);
            group
                .watermarks(&topic, slot.task.id.partition)
                .ok()
                .map(|(_, high)| (store, high))
        })
        .collect()
}

/// This instance's stable id: `group_instance_id`, else an id persisted in the state directory
/// (like Kafka Streams' process id). A restarted instance reuses it, so its transactional id is the
/// same and `init_transactions` aborts whatever its previous incarnation left open right away.
fn instance_id(config: &Config) -> Result<String, crate::Error> {
    if let Some(id) = &config.group_instance_id {
        return Ok(id.clone());
    }
    let dir = config.state_dir.join(&config.application_id);
    let path = dir.join("eddy.process.id");
    let state_dir_error = |source| crate::Error::StateDir {
        path: dir.clone(),
        source,
    };
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    std::fs::create_dir_all(&dir).map_err(state_dir_error)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff);
    std::fs::write(&path, &id).map_err(state_dir_error)?;
    Ok(id)
}

/// Creates internal topics and returns the partition count of every consumed topic.
fn prepare_topics(
    admin: &TopicAdmin,
    compiled: &CompiledTopology,
    config: &Config,
) -> Result<HashMap<String, i32>, crate::Error> {
    let inputs = compiled.input_topics();
    let partitions = admin.require_topics(&inputs, Duration::from_secs(60))?;
    let mut wanted = Vec::new();
    for (name, compacted) in internal_topics(&compiled.application_id, &compiled.topology) {
        let count = if let Some(source) = compiled.repartition_source_topic(&name) {
            partitions[source]
        } else if let Some((_, follows)) = compiled
            .stores()
            .into_iter()
            .find(|(store, _)| changelog_topic(&compiled.application_id, store) == name)
        {
            let source = compiled
                .repartition_source_topic(&follows)
                .unwrap_or(&follows)
                .to_string();
            partitions[&source]
        } else {
            1
        };
        wanted.push(InternalTopic {
            name,
            partitions: count,
            compacted,
        });
    }
    // Output and late-record topics are created when missing, as wide as the widest input.
    let widest = partitions.values().copied().max().unwrap_or(1);
    for aggregation in &compiled.topology.aggregations {
        for topic in std::iter::once(&aggregation.output_topic)
            .chain(aggregation.late_records_topic.as_ref())
        {
            if !wanted.iter().any(|t| &t.name == topic) {
                wanted.push(InternalTopic {
                    name: topic.clone(),
                    partitions: widest,
                    compacted: false,
                });
            }
        }
    }
    admin.create_topics(&wanted, config.replication_factor)?;
    Ok(partitions)
}

/// Runs an instance until `options.stop` is set or a fatal error occurs.
pub fn run(options: RunOptions) -> Result<(), crate::Error> {
    let RunOptions {
        config,
        topology,
        stop,
        health,
    } = options;
    let settings = ClientSettings::from_config(&config);
    let compiled = Arc::new(
        CompiledTopology::new(&config.application_id, topology)
            .with_cache_max_bytes(config.cache_max_bytes as usize),
    );
    crate::kafka::check_connection(
        &settings,
        settings.retry_deadline.min(Duration::from_secs(60)),
    )?;
    let admin = TopicAdmin::new(&settings)?;
    let partitions = prepare_topics(&admin, &compiled, &config)?;
    let mut purge = RepartitionPurge::new(
        admin,
        compiled.repartition_topics(),
        config.repartition_purge_interval_ms,
    );
    std::fs::create_dir_all(&config.state_dir).map_err(|source| crate::Error::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let instance = instance_id(&config)?;
    let committer = CommitCoordinator::new(&settings, &instance)?;
    let reader = Arc::new(ChangelogReader::new(
        &settings,
        config.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
    )?);
    let shared = Arc::new(Mutex::new(Shared {
        compiled: compiled.clone(),
        partitions,
        state: StateLocation::Disk(config.state_dir.clone()),
        tasks: BTreeMap::new(),
        pending: BTreeSet::new(),
        restoring: None,
        reader: reader.clone(),
        committer,
        health: health.clone(),
        fatal: None,
        stopping_dirty: false,
        abort_on_stop: true,
        in_flight: None,
    }));
    let consumer = GroupConsumer::new(
        &settings,
        Arc::new(Listener {
            shared: shared.clone(),
        }),
    )?;
    let mut topics = compiled.input_topics();
    topics.extend(compiled.repartition_topics());
    consumer.subscribe(&topics)?;
    tracing::info!(instance, application_id = %config.application_id, ?topics, guarantee = ?config.processing_guarantee, "eddy started");

    let commit_interval = Duration::from_millis(config.commit_interval_ms());
    let idle_timeout =
        (config.idle_timeout_ms > 0).then(|| Duration::from_millis(config.idle_timeout_ms));
    let task_timeout = settings.retry_deadline;
    let wall_clock_close_ms = config.wall_clock_close_ms;
    let workers = WorkerPool::new(config.num_threads)?;
    let mut next_commit = Instant::now() + commit_interval;
    let mut next_state_gauges = Instant::now();
    // Since when the brokers have been unreachable from the consumer.
    let mut unreachable_since: Option<Instant> = None;
    let mut clock = LoopClock::new();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        clock.enter(Phase::Restore);
        let restoring = {
            let mut guard = lock(&shared);
            if let Some(fatal) = guard.fatal.take() {
                break Err(fatal);
            }
            if let Err(error) = restore_some(&mut guard, &consumer.handle(), task_timeout) {
                let failure = Failure::Other(error);
                if let Err(error) = guard.recover(&consumer.handle(), failure) {
                    break Err(error);
                }
            }
            clock.enter(Phase::Other);
            for slot in guard.tasks.values_mut() {
                slot.reposition(&consumer.handle());
            }
            ActiveTasks(guard.task_count()).emit();
            guard.restoring.is_some() || !guard.pending.is_empty()
        };

        // While a restore is under way, poll without waiting so it goes on at full speed; while a
        // commit or a batch is in flight, come back soon to send what it held back or produced.
        let committing = {
            let guard = lock(&shared);
            guard.committer.in_flight() || guard.in_flight.is_some()
        };
        let wait = if restoring {
            Duration::ZERO
        } else if committing {
            Duration::from_millis(2)
        } else {
            next_commit
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        let mut batch = Vec::new();
        let mut poll_error = None;
        clock.enter(Phase::Wait);
        if let Some(first) = consumer.poll(wait) {
            clock.enter(Phase::Poll);
            match first {
                Ok(record) => batch.push(record),
                Err(error) => poll_error = Some(error),
            }
            while batch.len() < MAX_BATCH {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(record)) => batch.push(record),
                    Some(Err(error)) => {
                        poll_error = Some(error);
                        break;
                    }
                    None => break,
                }
            }
        }

        let mut guard = lock(&shared);
        let shared_ref = &mut *guard;
        // The workers processed the previous batch while this one was polled.
        if let Err(error) = finish_batch_in_loop(shared_ref, &consumer.handle(), &mut clock) {
            break Err(error);
        }
        let reachable = match poll_error.map(Failure::Consumer) {
            Some(failure) if decide(&failure) == Decision::Wait => {
                tracing::warn!(?failure, "consumer: broker unreachable");
                false
            }
            Some(failure) => {
                if let Err(error) = shared_ref.recover(&consumer.handle(), failure) {
                    break Err(error);
                }
                consumer.brokers_reachable()
            }
            None => consumer.brokers_reachable(),
        };
        health.set_degraded(!reachable);
        clock.enter(Phase::Commit);
        if let Err(error) = shared_ref.committer.settle(&mut shared_ref.tasks, false) {
            if let Err(error) = shared_ref.recover(&consumer.handle(), error.into()) {
                break Err(error);
            }
        }
        if reachable {
            unreachable_since = None;
        } else if unreachable_since.get_or_insert_with(Instant::now).elapsed() > task_timeout {
            break Err(crate::Error::Kafka(
                crate::kafka::KafkaClientError::GaveUp {
                    operation: "consume".into(),
                    seconds: task_timeout.as_secs(),
                },
            ));
        }

        if !batch.is_empty() {
            clock.enter(Phase::Poll);
            let started = Instant::now();
            // Consecutive records mostly share a partition (the consumer queues each fetched
            // partition's records together), so the last partition is tried first.
            let mut by_partition: Vec<((&str, i32), Vec<InputRecord<'_>>)> = Vec::new();
            let mut last = 0;
            for record in &batch {
                let key = (record.topic(), record.partition());
                shared_ref.committer.note_consumed(record.timestamp_ms());
                if by_partition.get(last).is_none_or(|(k, _)| *k != key) {
                    last = match by_partition.iter().position(|(k, _)| *k == key) {
                        Some(index) => index,
                        None => {
                            by_partition.push((key, Vec::new()));
                            by_partition.len() - 1
                        }
                    };
                }
                by_partition[last].1.push(InputRecord {
                    payload: record.payload(),
                    key: record.key(),
                    timestamp_ms: record.timestamp_ms(),
                    offset: record.offset(),
                });
            }
            let mut work = Vec::new();
            let mut taskless = Vec::new();
            for ((topic, partition), records) in by_partition {
                RecordsConsumed {
                    topic,
                    partition,
                    count: records.len() as u64,
                }
                .emit();
                let id = TaskId {
                    topic: topic.to_string(),
                    partition,
                };
                let Some(slot) = shared_ref.tasks.get_mut(&id) else {
                    taskless.push((topic, partition));
                    continue;
                };
                if slot.needs_seek {
                    // Fetched from the position before the rollback: dropped until the seek back
                    // to the committed offset succeeds.
                    continue;
                }
                slot.last_record_at = started;
                // Skip what the task already processed (a fetch that raced a seek after rollback).
                let from = slot.task.next_offset().unwrap_or(i64::MIN);
                let unprocessed = || records.iter().filter(|r| r.offset >= from);
                let bytes = unprocessed()
                    .map(|r| r.payload.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len))
                    .sum();
                let mut copied = CopiedRecords::with_capacity(records.len(), bytes);
                unprocessed().for_each(|record| copied.push(record));
                if !copied.is_empty() {
                    let slot = shared_ref.tasks.remove(&id).expect("looked up above");
                    work.push(TaskWork::new(slot, copied));
                }
            }
            let assignment = if taskless.is_empty() {
                Vec::new()
            } else {
                consumer.handle().assignment()
            };
            let restoring_id = shared_ref
                .restoring
                .as_ref()
                .map(|r| (r.id.topic.clone(), r.id.partition));
            for (topic, partition) in taskless {
                let key = (topic.to_string(), partition);
                match route_taskless(
                    &key,
                    &assignment,
                    &shared_ref.pending,
                    restoring_id.as_ref(),
                ) {
                    Taskless::Drop => {}
                    Taskless::Initialize => {
                        tracing::debug!(
                            topic,
                            partition,
                            "records for a partition without a task; initialising it"
                        );
                        let _ = consumer.handle().pause(std::slice::from_ref(&key));
                        shared_ref.pending.insert(key);
                    }
                }
            }
            if !work.is_empty() {
                shared_ref.in_flight = Some(BatchInFlight {
                    work: workers.start(work),
                    records: batch.len(),
                    started,
                });
            }
        }
        drop(batch);

        // A tick that finds the previous transaction still completing does not wait for it: the
        // loop goes on processing, and the commit starts once that one has settled.
        if Instant::now() >= next_commit && !shared_ref.committer.in_flight() {
            // A commit covers every task's work up to now.
            if let Err(error) = finish_batch_in_loop(shared_ref, &consumer.handle(), &mut clock) {
                break Err(error);
            }
            clock.enter(Phase::Commit);
            next_commit = Instant::now() + commit_interval;
            if wall_clock_close_ms > 0 {
                let now = crate::runtime::now_ms();
                for slot in shared_ref.tasks.values_mut() {
                    slot.task
                        .advance_with_wall_clock(now, wall_clock_close_ms as i64);
                }
            }
            if let Some(idle_timeout) = idle_timeout {
                for slot in shared_ref.tasks.values_mut() {
                    let idle = slot.last_record_at.elapsed() >= idle_timeout
                        && consumer.caught_up(&slot.task.id.topic, slot.task.id.partition);
                    slot.task.set_idle(idle);
                }
            }
            if let Err(error) = shared_ref.committer.commit(
                &mut shared_ref.tasks,
                &consumer.handle(),
                CommitMode::Background,
            ) {
                if let Err(error) = shared_ref.recover(&consumer.handle(), error.into()) {
                    break Err(error);
                }
            }
            clock.enter(Phase::Other);
            export_task_stats(shared_ref);
            if let Some(shares) = clock.take() {
                LoopTime {
                    shares: &shares.map(|(phase, share)| (phase.label(), share)),
                }
                .emit();
            }
            if let Some(purge) = &mut purge {
                purge.run_if_due(&shared_ref.tasks);
            }
            if Instant::now() >= next_state_gauges {
                next_state_gauges = Instant::now() + Duration::from_secs(10);
                for slot in shared_ref.tasks.values() {
                    for operator in slot.task.operators() {
                        if let Some(store) = operator.store() {
                            let (keys, bytes) = store.size_estimate();
                            StoreSize {
                                store: store.name(),
                                task: slot.task.id.to_string(),
                                keys,
                                bytes,
                            }
                            .emit();
                        }
                    }
                }
            }
        }
        clock.enter(Phase::Other);
    };

    // Arm the shutdown deadline on every way out of the loop, errors included: closing the
    // consumer can block inside librdkafka, and the caller's watchdog bounds how long.
    stop.store(true, Ordering::Relaxed);
    health.set_stopping();
    let shutdown_started = Instant::now();
    let mut clean = result.is_ok();
    {
        let mut guard = lock(&shared);
        let shared_ref = &mut *guard;
        if let Some(restoration) = shared_ref.restoring.take() {
            restoration.suspend(&reader);
        }
        if let Some(failure) = shared_ref.finish_batch() {
            tracing::warn!(
                ?failure,
                "the last batch failed; uncommitted work is aborted and will be reprocessed"
            );
            clean = false;
        }
        if clean {
            if let Err(failure) = shared_ref.committer.commit(
                &mut shared_ref.tasks,
                &consumer.handle(),
                CommitMode::Wait,
            ) {
                tracing::warn!(%failure, "final commit failed; uncommitted work is aborted and will be reprocessed");
                clean = false;
                shared_ref.abort_on_stop =
                    decide(&Failure::from(failure)) != Decision::Stop { abort: false };
            }
        }
        if !clean {
            // After a failure the tasks hold work past the last commit: abort it (unless the
            // last commit's outcome is unknown) and drop them, so closing the consumer commits
            // nothing and writes no checkpoint.
            if shared_ref.abort_on_stop {
                shared_ref.committer.abort();
            }
            shared_ref.tasks.clear();
            shared_ref.stopping_dirty = true;
        }
    }
    consumer.close();
    {
        let mut guard = lock(&shared);
        let tasks = std::mem::take(&mut guard.tasks);
        if clean {
            for (_, slot) in tasks {
                let ends = changelog_ends(&compiled, &slot, &consumer.handle());
                slot.close_clean(ends);
            }
        }
    }
    tracing::info!(
        seconds = shutdown_started.elapsed().as_secs_f64(),
        ok = result.is_ok(),
        "eddy stopped"
    );
    result
}

/// Waits for the batch on the workers and hands its output on, recovering from what failed.
fn finish_batch_in_loop(
    shared: &mut Shared,
    group: &GroupHandle<'_>,
    clock: &mut LoopClock,
) -> Result<(), crate::Error> {
    clock.enter(Phase::Process);
    let finished = shared.wait_batch();
    clock.enter(Phase::Send);
    match finished.and_then(|finished| shared.hand_off(finished)) {
        Some(failure) => shared.recover(group, failure),
        None => Ok(()),
    }
}

/// Starts the next pending restore, and restores for a slice of time; a finished task starts.
fn restore_some(
    shared: &mut Shared,
    group: &GroupHandle<'_>,
    patience: Duration,
) -> Result<(), crate::Error> {
    if shared.restoring.is_none() {
        if let Some((topic, partition)) = shared.pending.pop_first() {
            let id = TaskId { topic, partition };
            shared.restoring = Some(Restoration::begin(
                &shared.compiled,
                &shared.state,
                &shared.partitions,
                id,
                group,
            )?);
        }
    }
    let Some(restoration) = shared.restoring.as_mut() else {
        return Ok(());
    };
    let done = restoration.step(
        &shared.reader,
        &shared.compiled.application_id,
        RESTORE_SLICE,
        patience,
    )?;
    if done {
        let restoration = shared.restoring.take().expect("checked above");
        let slot = restoration.finish(group)?;
        shared.tasks.insert(slot.task.id.clone(), slot);
    }
    shared.export_restoring();
    Ok(())
}

/// Time given to a restore per loop turn, between polls.
const RESTORE_SLICE: Duration = Duration::from_millis(200);

/// What to do with polled records of a partition that has no task.
#[derive(Debug, PartialEq, Eq)]
enum Taskless {
    /// Revoked while the batch was polled (no longer ours: no ghost task is created for it), or
    /// waiting for or in its restore (fetched again after its resume).
    Drop,
    /// Ours, with no task and no restore planned: restore it.
    Initialize,
}

fn route_taskless(
    partition: &(String, i32),
    assignment: &[(String, i32)],
    pending: &BTreeSet<(String, i32)>,
    restoring: Option<&(String, i32)>,
) -> Taskless {
    if !assignment.contains(partition)
        || pending.contains(partition)
        || restoring == Some(partition)
    {
        Taskless::Drop
    } else {
        Taskless::Initialize
    }
}

/// Moves the counters tasks kept since the last commit into the metrics registry, and sets each
/// aggregation's watermark gauge to the slowest of this instance's tasks.
fn export_task_stats(shared: &mut Shared) {
    let mut watermarks: BTreeMap<String, i64> = BTreeMap::new();
    for slot in shared.tasks.values() {
        for operator in slot.task.operators() {
            if let Some(closed) = operator.closed_through().filter(|t| *t > i64::MIN) {
                let slowest = watermarks
                    .entry(operator.spec().name.clone())
                    .or_insert(closed);
                *slowest = (*slowest).min(closed);
            }
        }
    }
    for (aggregation, watermark) in watermarks {
        WatermarkAdvanced {
            aggregation: &aggregation,
            watermark_ms: watermark,
        }
        .emit();
    }
    for slot in shared.tasks.values_mut() {
        let (stats, aggregators) = slot.task.take_stats();
        TaskProgress {
            topic: &slot.task.id.topic,
            partition: slot.task.id.partition,
            processed: stats.processed,
            dead_lettered: stats.dead_lettered,
            skipped: stats.skipped,
        }
        .emit();
        for (aggregation, s) in aggregators {
            AggregationProgress {
                aggregation: &aggregation,
                late_records: s.late_records,
                emitted_final: s.emitted_final,
                emitted_update: s.emitted_update,
            }
            .emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_a_partition_revoked_mid_batch_create_no_ghost_task() {
        let p0 = ("in".to_string(), 0);
        let p1 = ("in".to_string(), 1);
        let none = BTreeSet::new();
        // The batch was polled, then partition 1 was revoked in a rebalance callback.
        let assignment = vec![p0.clone()];
        assert_eq!(
            route_taskless(&p1, &assignment, &none, None),
            Taskless::Drop
        );
        assert_eq!(
            route_taskless(&p0, &assignment, &none, None),
            Taskless::Initialize
        );
        let pending: BTreeSet<_> = [p0.clone()].into();
        assert_eq!(
            route_taskless(&p0, &assignment, &pending, None),
            Taskless::Drop
        );
        assert_eq!(
            route_taskless(&p0, &assignment, &none, Some(&p0)),
            Taskless::Drop
        );
    }
}
