//! The instance's main loop: poll a batch, process it on the worker threads, send what it
//! produced, commit every `commit_interval_ms`; rebalance callbacks commit and close tasks.

use super::commit::{CommitCoordinator, CommitError};
use super::task_slot::TaskSlot;
use super::worker_pool::{process_batch, TaskWork};
use crate::config::{Config, ProcessingGuarantee};
use crate::kafka::{
    ChangelogReader, ClientSettings, CommitFailure, GroupConsumer, GroupHandle, InternalTopic,
    RebalanceListener, TopicAdmin,
};
use crate::state::{Checkpoint, StoreWrite, TaskDb};
use crate::task::{CompiledTopology, InputRecord, StateLocation, TaskError, TaskId, TaskOutput};
use crate::telemetry::metrics as m;
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
const MAX_BATCH: usize = 5_000;

struct Shared {
    compiled: Arc<CompiledTopology>,
    partitions: HashMap<String, i32>,
    state: StateLocation,
    tasks: BTreeMap<TaskId, TaskSlot>,
    /// Assigned partitions whose tasks are not restored yet (paused until they are).
    pending: BTreeSet<(String, i32)>,
    committer: CommitCoordinator,
    health: Health,
    /// A failure inside a callback that must stop the instance.
    fatal: Option<String>,
    /// Stopping after a failure: tasks hold uncommitted work that must not be committed on the
    /// way out (revocations during close commit nothing, and no checkpoint is written).
    stopping_dirty: bool,
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
        metrics::counter!(m::REBALANCES, "kind" => if lost { "lost" } else { "revoke" })
            .increment(1);
        tracing::info!(?partitions, lost, "partitions revoked");
        let shared = &mut *shared;
        for partition in partitions {
            shared.pending.remove(partition);
        }
        if shared.stopping_dirty {
            return;
        }
        if lost {
            // Another member may own these already: commit nothing, drop them dirty (no checkpoint).
            shared.committer.abort();
            let revoked: Vec<TaskId> = partitions
                .iter()
                .map(|(t, p)| TaskId {
                    topic: t.clone(),
                    partition: *p,
                })
                .collect();
            for id in &revoked {
                shared.tasks.remove(id);
            }
            let failure = CommitFailure::Abortable("partitions lost".into());
            if let Err(error) = shared
                .committer
                .roll_back(&mut shared.tasks, group, &failure)
            {
                shared.fatal = Some(error.to_string());
            }
        } else {
            match shared.committer.commit(&mut shared.tasks, group) {
                Ok(()) => {
                    for (topic, partition) in partitions {
                        let id = TaskId {
                            topic: topic.clone(),
                            partition: *partition,
                        };
                        if let Some(slot) = shared.tasks.remove(&id) {
                            let ends = changelog_ends(&shared.compiled, &slot, group);
                            slot.close_clean(ends);
                        }
                    }
                }
                Err(CommitError::State(error)) => {
                    shared.fatal = Some(error.to_string());
                }
                Err(CommitError::Kafka(failure)) => {
                    tracing::warn!(%failure, "commit on revocation failed; revoked tasks are dropped without a checkpoint");
                    for (topic, partition) in partitions {
                        shared.tasks.remove(&TaskId {
                            topic: topic.clone(),
                            partition: *partition,
                        });
                    }
                    if let Err(error) =
                        shared
                            .committer
                            .roll_back(&mut shared.tasks, group, &failure)
                    {
                        shared.fatal = Some(error.to_string());
                    }
                }
            }
        }
        metrics::gauge!(m::ACTIVE_TASKS).set(shared.tasks.len() as f64);
    }

    fn on_assign(&self, partitions: &[(String, i32)], group: &GroupHandle<'_>) {
        let mut shared = lock(&self.shared);
        metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
        tracing::info!(?partitions, "partitions assigned");
        shared.health.set_joined(true);
        if let Err(error) = group.pause(partitions) {
            tracing::warn!(%error, "could not pause newly assigned partitions");
        }
        shared.pending.extend(partitions.iter().cloned());
        shared.health.set_restoring(shared.pending.len());
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

/// Opens, restores and positions the task of one newly assigned partition.
fn initialize_task(
    shared: &mut Shared,
    topic: &str,
    partition: i32,
    group: &GroupHandle<'_>,
    reader: &ChangelogReader,
) -> Result<(), crate::Error> {
    let id = TaskId {
        topic: topic.into(),
        partition,
    };
    let committed = group
        .committed(&[(topic.into(), partition)], Duration::from_secs(30))?
        .into_iter()
        .next();
    let dir = shared.compiled.task_dir(&shared.state, &id);
    let checkpoint = dir
        .as_deref()
        .and_then(Checkpoint::read)
        .filter(|checkpoint| {
            // A checkpoint outside its changelog's offsets (the topic was recreated or truncated)
            // describes files that no longer match it: wipe and restore instead.
            shared.compiled.store_names_of(&id).iter().all(|store| {
                let changelog = changelog_topic(&shared.compiled.application_id, store);
                match group.watermarks(&changelog, partition) {
                    Ok((low, high)) => checkpoint.fits(store, low, high),
                    Err(_) => false,
                }
            })
        });
    if let (Some(dir), None) = (&dir, &checkpoint) {
        TaskDb::destroy(dir)?;
    }
    let (mut task, db) = shared
        .compiled
        .create_task(&id, &shared.partitions, &shared.state)?;
    if let Some(dir) = &dir {
        Checkpoint::remove(dir);
    }
    for store in task.store_names() {
        let started = Instant::now();
        let changelog = changelog_topic(&shared.compiled.application_id, &store);
        let from = checkpoint
            .as_ref()
            .and_then(|c| c.changelog_offsets.get(&store).copied());
        let mut batch: Vec<StoreWrite> = Vec::new();
        let mut restored = 0u64;
        let window_store = task
            .operators_mut()
            .iter_mut()
            .filter_map(|o| o.store_mut())
            .find(|s| s.name() == store)
            .expect("store of this task");
        let mut failure = None;
        reader.read_to_end(
            &changelog,
            &[partition],
            from,
            Duration::from_secs(300),
            |record| {
                if let Some(key) = record.key {
                    batch.push(StoreWrite {
                        key,
                        value: record.value,
                    });
                    restored += 1;
                }
                if batch.len() >= 10_000 {
                    if let Err(e) = window_store.restore_batch(&batch) {
                        failure = Some(e);
                    }
                    batch.clear();
                }
            },
        )?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        window_store.restore_batch(&batch)?;
        metrics::counter!(m::RESTORE_RECORDS, "store" => store.clone()).increment(restored);
        metrics::histogram!(m::RESTORE_SECONDS, "store" => store.clone())
            .record(started.elapsed().as_secs_f64());
        tracing::info!(task = %id, store, restored, from_checkpoint = from.is_some(), seconds = started.elapsed().as_secs_f64(), "store restored");
    }
    task.reload()?;
    let committed_offset = committed.as_ref().and_then(|c| c.offset);
    if let Some(c) = &committed {
        task.restore_metadata(&c.metadata);
    }
    task.set_next_offset(committed_offset);
    if let Err(error) = group.seek(topic, partition, committed_offset) {
        // A partition that was never fetched cannot be seeked yet; it starts from the committed offset anyway.
        tracing::debug!(task = %topic, partition, %error, "seek to the committed offset deferred");
    }
    shared.tasks.insert(
        id,
        TaskSlot {
            task,
            db,
            dir,
            committed_offset,
            pending_state: Vec::new(),
            last_record_at: Instant::now(),
        },
    );
    group.resume(&[(topic.into(), partition)])?;
    Ok(())
}

fn task_failure(error: TaskError) -> crate::Error {
    match error {
        TaskError::State(e) => e.into(),
        TaskError::DecodeFailed {
            task,
            offset,
            reason,
        } => crate::Error::DecodeFailed {
            source_name: task.topic.clone(),
            topic: task.topic,
            partition: task.partition,
            offset,
            reason,
        },
    }
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
    let compiled = Arc::new(CompiledTopology::new(&config.application_id, topology));
    let admin = TopicAdmin::new(&settings)?;
    let partitions = prepare_topics(&admin, &compiled, &config)?;
    std::fs::create_dir_all(&config.state_dir).map_err(|source| crate::Error::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let instance = instance_id(&config)?;
    let committer = CommitCoordinator::new(&settings, &instance)?;
    let shared = Arc::new(Mutex::new(Shared {
        compiled: compiled.clone(),
        partitions,
        state: StateLocation::Disk(config.state_dir.clone()),
        tasks: BTreeMap::new(),
        pending: BTreeSet::new(),
        committer,
        health: health.clone(),
        fatal: None,
        stopping_dirty: false,
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
    let reader = ChangelogReader::new(
        &settings,
        config.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
    )?;
    tracing::info!(instance, application_id = %config.application_id, ?topics, guarantee = ?config.processing_guarantee, "eddy started");

    let commit_interval = Duration::from_millis(config.commit_interval_ms());
    let idle_timeout =
        (config.idle_timeout_ms > 0).then(|| Duration::from_millis(config.idle_timeout_ms));
    let wall_clock_close_ms = config.wall_clock_close_ms;
    let threads = config.num_threads;
    let mut next_commit = Instant::now() + commit_interval;
    let mut next_state_gauges = Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        {
            let mut guard = lock(&shared);
            if let Some(fatal) = guard.fatal.take() {
                break Err(crate::Error::Kafka(
                    crate::kafka::KafkaClientError::Operation {
                        operation: "rebalance".into(),
                        reason: fatal,
                    },
                ));
            }
            let pending: Vec<(String, i32)> = guard.pending.iter().cloned().collect();
            let mut failed = None;
            for (topic, partition) in pending {
                guard.pending.remove(&(topic.clone(), partition));
                if let Err(error) =
                    initialize_task(&mut guard, &topic, partition, &consumer.handle(), &reader)
                {
                    failed = Some(error);
                    break;
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            let restoring = guard.pending.len();
            guard.health.set_restoring(restoring);
            metrics::gauge!(m::ACTIVE_TASKS).set(guard.tasks.len() as f64);
        }

        let wait = next_commit
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        let mut batch = Vec::new();
        let mut poll_error = None;
        if let Some(first) = consumer.poll(wait) {
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
        match &poll_error {
            Some(error @ crate::kafka::KafkaClientError::Unreachable { .. }) => {
                health.set_degraded(true);
                tracing::warn!(%error, "consumer: broker unreachable");
            }
            Some(crate::kafka::KafkaClientError::Fatal { .. }) => {
                break Err(crate::Error::Kafka(poll_error.expect("matched")));
            }
            Some(error) => tracing::warn!(%error, "consumer error"),
            None => health.set_degraded(!consumer.brokers_reachable()),
        }

        let mut guard = lock(&shared);
        let shared_ref = &mut *guard;
        if !batch.is_empty() {
            let started = Instant::now();
            let mut records_by_task: HashMap<(&str, i32), Vec<InputRecord<'_>>> = HashMap::new();
            let mut consumed: HashMap<(&str, i32), u64> = HashMap::new();
            for record in &batch {
                let key = (record.topic(), record.partition());
                *consumed.entry(key).or_default() += 1;
                shared_ref.committer.note_consumed(record.timestamp_ms());
                records_by_task.entry(key).or_default().push(InputRecord {
                    payload: record.payload(),
                    key: record.key(),
                    timestamp_ms: record.timestamp_ms(),
                    offset: record.offset(),
                });
            }
            for ((topic, partition), count) in &consumed {
                metrics::counter!(m::RECORDS_CONSUMED, "topic" => topic.to_string(), "partition" => partition.to_string()).increment(*count);
            }
            let mut by_partition: Vec<((&str, i32), Vec<InputRecord<'_>>)> =
                records_by_task.into_iter().collect();
            let mut work: Vec<TaskWork<'_, '_>> = Vec::new();
            for slot in shared_ref.tasks.values_mut() {
                let found = by_partition.iter().position(|((topic, partition), _)| {
                    *topic == slot.task.id.topic && *partition == slot.task.id.partition
                });
                if let Some(index) = found {
                    let (_, records) = by_partition.swap_remove(index);
                    slot.last_record_at = started;
                    // Skip what the task already processed (a fetch that raced a seek after rollback).
                    let from = slot.task.next_offset().unwrap_or(i64::MIN);
                    let records: Vec<InputRecord<'_>> =
                        records.into_iter().filter(|r| r.offset >= from).collect();
                    work.push(TaskWork {
                        slot,
                        records,
                        output: TaskOutput::default(),
                        result: Ok(()),
                    });
                }
            }
            let assignment = if by_partition.is_empty() {
                Vec::new()
            } else {
                consumer.handle().assignment()
            };
            for ((topic, partition), _) in by_partition {
                // A partition without a task: assigned but not restored yet (fetched again after its
                // seek), or one the consumer still fetches after a rollback dropped its task. One
                // revoked while this batch was polled is no longer ours: its records are dropped,
                // and no ghost task is created for it.
                let key = (topic.to_string(), partition);
                if !assignment.contains(&key) {
                    continue;
                }
                if !shared_ref.pending.contains(&key) {
                    tracing::debug!(
                        topic,
                        partition,
                        "records for a partition without a task; initialising it"
                    );
                    let _ = consumer.handle().pause(std::slice::from_ref(&key));
                    shared_ref.pending.insert(key);
                }
            }
            process_batch(&mut work, threads);
            let mut failure = None;
            let mut send_failure = None;
            for item in &mut work {
                if let Err(error) = std::mem::replace(&mut item.result, Ok(())) {
                    failure = Some(error);
                }
                item.slot.pending_state.append(&mut item.output.state);
                if send_failure.is_none() {
                    if let Err(error) = shared_ref.committer.send(&mut item.output) {
                        send_failure = Some(error);
                    }
                }
            }
            drop(work);
            let per_record = started.elapsed().as_secs_f64() / batch.len() as f64;
            metrics::histogram!(m::PROCESSING_LATENCY).record(per_record);
            if let Some(error) = failure {
                shared_ref.committer.abort();
                break Err(task_failure(error));
            }
            if let Some(failure) = send_failure {
                if let Err(error) = shared_ref.committer.roll_back(
                    &mut shared_ref.tasks,
                    &consumer.handle(),
                    &failure,
                ) {
                    break Err(error.into());
                }
            }
        }
        drop(batch);

        if Instant::now() >= next_commit {
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
            match shared_ref
                .committer
                .commit(&mut shared_ref.tasks, &consumer.handle())
            {
                Ok(()) => {}
                Err(CommitError::State(error)) => break Err(error.into()),
                Err(CommitError::Kafka(failure)) => {
                    if let Err(error) = shared_ref.committer.roll_back(
                        &mut shared_ref.tasks,
                        &consumer.handle(),
                        &failure,
                    ) {
                        break Err(error.into());
                    }
                }
            }
            export_task_stats(shared_ref);
        }
        if Instant::now() >= next_state_gauges {
            next_state_gauges = Instant::now() + Duration::from_secs(10);
            for slot in shared_ref.tasks.values() {
                for operator in slot.task.operators() {
                    if let Some(store) = operator.store() {
                        let (keys, bytes) = store.size_estimate();
                        let labels = [
                            ("store", store.name().to_string()),
                            ("task", slot.task.id.to_string()),
                        ];
                        metrics::gauge!(m::STATE_KEYS, &labels).set(keys as f64);
                        metrics::gauge!(m::STATE_BYTES, &labels).set(bytes as f64);
                    }
                }
            }
        }
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
        if clean {
            if let Err(failure) = shared_ref
                .committer
                .commit(&mut shared_ref.tasks, &consumer.handle())
            {
                tracing::warn!(%failure, "final commit failed; uncommitted work is aborted and will be reprocessed");
                clean = false;
            }
        }
        if !clean {
            // After a processing error or a failed final commit the tasks hold work past the last
            // commit: abort it and drop them, so closing the consumer commits nothing.
            shared_ref.committer.abort();
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

/// Moves the counters tasks kept since the last commit into the metrics registry.
fn export_task_stats(shared: &mut Shared) {
    for slot in shared.tasks.values_mut() {
        let (stats, aggregators) = slot.task.take_stats();
        let (topic, partition) = (
            slot.task.id.topic.clone(),
            slot.task.id.partition.to_string(),
        );
        if stats.processed > 0 {
            metrics::counter!(m::RECORDS_PROCESSED, "topic" => topic.clone(), "partition" => partition).increment(stats.processed);
        }
        if stats.dead_lettered > 0 {
            metrics::counter!(m::RECORDS_DEAD_LETTERED, "topic" => topic.clone())
                .increment(stats.dead_lettered);
        }
        if stats.skipped > 0 {
            metrics::counter!(m::RECORDS_SKIPPED, "topic" => topic).increment(stats.skipped);
        }
        for (aggregation, s) in aggregators {
            if s.late_records > 0 {
                metrics::counter!(m::LATE_RECORDS_DROPPED, "aggregation" => aggregation.clone())
                    .increment(s.late_records);
            }
            if s.emitted_final > 0 {
                metrics::counter!(m::WINDOWS_EMITTED, "aggregation" => aggregation.clone(), "result" => "final").increment(s.emitted_final);
            }
            if s.emitted_update > 0 {
                metrics::counter!(m::WINDOWS_EMITTED, "aggregation" => aggregation, "result" => "update").increment(s.emitted_update);
            }
        }
    }
}
