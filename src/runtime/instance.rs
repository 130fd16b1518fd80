//! An instance of the application: it joins the group and runs its loop until stopped.
//!
//! ```text
//! run(options)
//!   setup: topics, producer, consumer, subscribe
//!   loop: restore_slice -> poll -> take_stop -> settle -> dispatch -> commit_tick
//!   shutdown: last commit (or abort), leave the group, close tasks
//! ```
//!
//! Every failure a step meets goes to [`Core::carry_out`] (`failure.rs`), which decides and acts;
//! a step returns `Err` only when that decision was to stop.

use super::commit::CommitMode;
use super::commit::CommitSettings;
use super::copied_records::CopiedRecords;
use super::core::{lock, BatchInFlight, Core, StopDecided};
use super::departures::Departures;
use super::failure::{abort_when_stopping, Failure, Waiting};
use super::kafka_ports::{KafkaListener, KafkaTransactions};
use super::loop_clock::{LoopClock, Phase};
use super::nats_ports::NatsSplits;
use super::ports::SplitSource;
use super::ports::{
    Admin, Changelog, Clock, Group, Input, InputError, PolledRecord, RebalanceListener,
    SystemClock, Transactions,
};
use super::purge::RepartitionPurge;
use super::rebalance::{changelog_ends, Listener};
use super::seek_clock::{is_stale, SeekClock};
use super::setup::{instance_id, prepare_topics};
use super::sources::{NoSplits, SourcesInput, SourcesListener};
use super::standby::Standbys;
use super::state_cleaner::StateCleaner;
use super::worker_pool::{BatchDeadline, TaskWork, WorkerPool};
use super::CommitCoordinator;
use crate::config::{Config, ProcessingGuarantee};
use crate::kafka::{ChangelogReader, ClientSettings, GroupConsumer, KafkaClientError, TopicAdmin};
use crate::task::{CompiledTopology, InputRecord, StateLocation, TaskId};
use crate::telemetry::events::{
    ActiveTasks, AggregationProgress, CommitBackpressure, LoopTime, RecordsConsumed,
    StaleRecordsDropped, StoreSize, TaskProgress, WatermarkAdvanced,
};
use crate::telemetry::Health;
use crate::topology::Topology;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `eddy run` hands the runtime.
pub struct RunOptions {
    pub config: Config,
    pub topology: Topology,
    /// Set to stop: the loop commits, leaves the group and returns.
    pub stop: Arc<AtomicBool>,
    pub health: Health,
}

/// Output held back behind a commit in flight past which fetching pauses.
const BACKPRESSURE_BYTES: usize = 64 << 20;

/// Most records taken from the consumer before processing them as one batch.
const MAX_BATCH: usize = 20_000;
/// The least time a batch gets before its tasks carry records over (`batch_time`).
const MIN_BATCH_TIME: Duration = Duration::from_millis(20);

/// Runs an instance on Kafka until `options.stop` is set or a failure decides to stop.
pub fn run(options: RunOptions) -> Result<(), crate::Error> {
    let RunOptions {
        config,
        topology,
        stop,
        health,
    } = options;
    let mut settings = ClientSettings::from_config(&config);
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
    std::fs::create_dir_all(&config.state_dir).map_err(|source| crate::Error::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let instance_id = instance_id(&config)?;
    settings.instance_id = Some(instance_id.clone());
    let exactly_once = config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    let transactions = Arc::new(KafkaTransactions {
        settings: settings.clone(),
        transactional_id: exactly_once
            .then(|| super::transactional_id(&settings.application_id, &instance_id)),
    });
    let changelog = Arc::new(ChangelogReader::new(&settings, exactly_once)?);
    let mut topics = compiled.input_topics();
    topics.extend(compiled.repartition_topics());
    let parts = InstanceParts {
        instance: instance_id.clone(),
        compiled,
        partitions,
        state: StateLocation::Disk(config.state_dir.clone()),
        transactions,
        changelog,
        admin: Some(Box::new(admin)),
        commit: CommitSettings {
            guarantee: config.processing_guarantee,
            retry_deadline: settings.retry_deadline,
            background: true,
            inline_reported_after: 0,
        },
        options: LoopOptions::from_config(&config),
        clock: Arc::new(SystemClock),
        health,
        standbys: match config.num_standby_replicas {
            0 => None,
            replicas => Some(StandbySettings {
                replicas: replicas as usize,
                instance: instance_id.clone(),
                reader: Arc::new(ChangelogReader::new(&settings, exactly_once)?),
            }),
        },
    };
    let splits: Arc<dyn SplitSource> = if parts.compiled.topology.nats_sources().next().is_some() {
        let settings = crate::nats::NatsSettings::from_config(&config.nats);
        let name = format!("{}-{instance_id}", config.application_id);
        Arc::new(NatsSplits::connect(
            &settings,
            &parts.compiled.topology,
            &name,
        )?)
    } else {
        Arc::new(NoSplits)
    };
    let mut instance = Instance::start(parts, |listener| {
        let listener = Arc::new(SourcesListener {
            inner: listener,
            splits: splits.clone(),
        });
        let consumer = GroupConsumer::new(&settings, Arc::new(KafkaListener(listener)))?;
        consumer.subscribe(&topics)?;
        Ok(SourcesInput::new(consumer, splits))
    })?;
    tracing::info!(instance = instance_id, application_id = %config.application_id, ?topics, guarantee = ?config.processing_guarantee, "eddy started");
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Err(error) = instance.turn() {
            break Err(error);
        }
    };
    // Arm the shutdown deadline on every way out of the loop, errors included: closing the
    // consumer can block inside librdkafka, and the caller's watchdog bounds how long.
    stop.store(true, Ordering::Relaxed);
    instance.shutdown(result)
}

/// How the loop paces itself.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    pub commit_interval: Duration,
    /// `idle_timeout_ms`: a partition quiet this long and read to its end is idle.
    pub idle_timeout: Option<Duration>,
    pub wall_clock_close_ms: u64,
    pub num_threads: usize,
    pub repartition_purge_interval_ms: u64,
    /// `state_cleanup_delay_ms`.
    pub state_cleanup_delay: Duration,
    /// `checkpoint_max_age_ms`.
    pub checkpoint_max_age: Duration,
    /// `task_timeout_ms`: how long retriable failures may last before the instance stops.
    pub task_timeout: Duration,
    /// How long the workers spend on one batch before each task leaves the rest of its records
    /// for the next ([`BatchDeadline`]): the commit interval (at least 20 ms), so that a backlog
    /// never holds the commits back. Zero makes every task process one record per batch and
    /// carry the rest over (the simulator's way to exercise that).
    pub batch_time: Duration,
}

impl LoopOptions {
    pub fn from_config(config: &Config) -> LoopOptions {
        LoopOptions {
            commit_interval: Duration::from_millis(config.commit_interval_ms()),
            idle_timeout: (config.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(config.idle_timeout_ms)),
            wall_clock_close_ms: config.wall_clock_close_ms,
            num_threads: config.num_threads,
            repartition_purge_interval_ms: config.repartition_purge_interval_ms,
            state_cleanup_delay: Duration::from_millis(config.state_cleanup_delay_ms),
            checkpoint_max_age: Duration::from_millis(config.checkpoint_max_age_ms),
            task_timeout: Duration::from_millis(config.task_timeout_ms),
            batch_time: Duration::from_millis(config.commit_interval_ms()).max(MIN_BATCH_TIME),
        }
    }
}

/// Everything an instance is made of besides its input.
pub struct InstanceParts {
    /// This instance's id (`group_instance_id`, or the one kept in its state directory).
    pub instance: String,
    pub compiled: Arc<CompiledTopology>,
    /// Partition count of every consumed topic.
    pub partitions: HashMap<String, i32>,
    pub state: StateLocation,
    pub transactions: Arc<dyn Transactions>,
    pub changelog: Arc<dyn Changelog>,
    /// Purges repartition topics; `None` leaves them to retention.
    pub admin: Option<Box<dyn Admin>>,
    pub commit: CommitSettings,
    pub options: LoopOptions,
    pub clock: Arc<dyn Clock>,
    pub health: Health,
    /// `num_standby_replicas` above 0: keep warm copies of other instances' tasks.
    pub standbys: Option<StandbySettings>,
}

/// What standby replicas need: how many copies of each task, this instance's id (its place on
/// the placement ring) and a changelog reader of their own.
pub struct StandbySettings {
    pub replicas: usize,
    pub instance: String,
    pub reader: Arc<dyn Changelog>,
}

/// A running instance: its input, and the loop's steps over it. [`run`] drives one on Kafka; the
/// simulator drives several on its own input, a turn at a time.
pub struct Instance<I: Input> {
    steps: Steps,
    input: I,
}

impl<I: Input> Instance<I> {
    /// Opens the producer (fencing the instance's previous incarnation) and the input, which is
    /// built around the rebalance listener it must call from inside its poll.
    pub fn start(
        parts: InstanceParts,
        input: impl FnOnce(Arc<dyn RebalanceListener>) -> Result<I, crate::Error>,
    ) -> Result<Instance<I>, crate::Error> {
        let InstanceParts {
            instance,
            compiled,
            partitions,
            state,
            transactions,
            changelog,
            admin,
            commit,
            options,
            clock,
            health,
            standbys,
        } = parts;
        let departures = transactions
            .transactional()
            .then(|| Departures::new(instance, clock.now()));
        let committer = CommitCoordinator::new(transactions.clone(), commit)?;
        let seeks = SeekClock::default();
        let core = Arc::new(Mutex::new(Core {
            compiled: compiled.clone(),
            partitions,
            state: state.clone(),
            tasks: BTreeMap::new(),
            pending: BTreeSet::new(),
            restoring: None,
            reader: changelog,
            committer,
            health: health.clone(),
            seeks: seeks.clone(),
            stop: None,
            in_flight: None,
            waiting_since: Default::default(),
            stalled_slices: 0,
            task_timeout: options.task_timeout,
            checkpoint_max_age: options.checkpoint_max_age,
            clock: clock.clone(),
            standbys: standbys
                .filter(|s| s.replicas > 0 && matches!(state, StateLocation::Disk(_)))
                .map(|s| Standbys::new(s.replicas, s.instance, s.reader, clock.now())),
        }));
        let input = input(Arc::new(Listener { core: core.clone() }))?;
        let purge = admin.and_then(|admin| {
            RepartitionPurge::new(
                admin,
                compiled.repartition_topics(),
                options.repartition_purge_interval_ms,
                clock.now(),
            )
        });
        let now = clock.now();
        let cleaner = match &state {
            StateLocation::Disk(dir) => Some(StateCleaner::new(
                dir.join(&compiled.application_id),
                options.state_cleanup_delay,
                now,
            )),
            StateLocation::Memory => None,
        };
        let steps = Steps {
            core,
            compiled,
            workers: WorkerPool::new(options.num_threads)?,
            clock: LoopClock::new(),
            now: clock,
            seeks,
            health,
            commit_interval: options.commit_interval,
            batch_time: options.batch_time,
            next_commit: now + options.commit_interval,
            next_state_gauges: now,
            idle_timeout: options.idle_timeout,
            wall_clock_close_ms: options.wall_clock_close_ms,
            purge,
            cleaner,
            paused_for_commit: false,
            transactions,
            departures,
        };
        Ok(Instance { steps, input })
    }

    /// One turn of the loop. `Err`: a failure decided to stop; call [`Instance::shutdown`].
    pub fn turn(&mut self) -> Result<(), crate::Error> {
        self.steps.turn(&self.input)
    }

    /// Commits (after `Ok`) or aborts (after `Err`), leaves the group and closes the tasks.
    pub fn shutdown(self, result: Result<(), crate::Error>) -> Result<(), crate::Error> {
        self.steps.shutdown(&self.input, result)
    }

    pub fn input(&self) -> &I {
        &self.input
    }
}

/// The loop's own state, and its steps.
struct Steps {
    core: Arc<Mutex<Core>>,
    compiled: Arc<CompiledTopology>,
    workers: WorkerPool,
    clock: LoopClock,
    /// What time it is (the simulator's own clock under simulation).
    now: Arc<dyn Clock>,
    seeks: SeekClock,
    health: Health,
    commit_interval: Duration,
    /// How long the workers spend on one batch before the tasks leave the rest for the next
    /// ([`BatchDeadline`]): the commit interval, so that a backlog never holds commits back.
    batch_time: Duration,
    next_commit: Instant,
    next_state_gauges: Instant,
    idle_timeout: Option<Duration>,
    wall_clock_close_ms: u64,
    purge: Option<RepartitionPurge>,
    /// Deletes the state of tasks no longer run here, after `state_cleanup_delay_ms`.
    cleaner: Option<StateCleaner>,
    /// Fetching is paused until the commit in flight settles.
    paused_for_commit: bool,
    transactions: Arc<dyn Transactions>,
    /// Under exactly-once: fences the producers of instances that left the group.
    departures: Option<Departures>,
}

/// The records one turn polled. Each carries the [`SeekClock`] time it was polled at, kept as
/// runs (`stamps[i] = (first record index, time)`), since the clock rarely moves within a batch.
struct PolledBatch<R> {
    records: Vec<R>,
    stamps: Vec<(usize, u64)>,
    error: Option<InputError>,
}

impl<R: PolledRecord> PolledBatch<R> {
    fn push(&mut self, record: R, polled_at: u64) {
        if self.stamps.last().map(|(_, at)| *at) != Some(polled_at) {
            self.stamps.push((self.records.len(), polled_at));
        }
        self.records.push(record);
    }

    /// Each record with the time it was polled at.
    fn stamped(&self) -> impl Iterator<Item = (&R, u64)> {
        let mut run = 0;
        self.records.iter().enumerate().map(move |(index, record)| {
            while run + 1 < self.stamps.len() && self.stamps[run + 1].0 <= index {
                run += 1;
            }
            (record, self.stamps[run].1)
        })
    }
}

/// A polled record and the [`SeekClock`] time it was polled at.
type Stamped<'a> = (InputRecord<'a>, u64);

/// A stop decided inside a rebalance callback (which ran inside the poll) takes effect here,
/// before anything else of the turn: nothing may be committed past it.
fn take_stop(core: &mut Core) -> Result<(), crate::Error> {
    match core.stop.as_mut().and_then(|stop| stop.error.take()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

impl Steps {
    fn turn<I: Input>(&mut self, input: &I) -> Result<(), crate::Error> {
        self.watch_departures(input);
        let restoring = self.restore_slice(input)?;
        self.standby_slice(input, restoring);
        let mut batch = self.poll(input, restoring);
        let core = self.core.clone();
        let mut core = lock(&core);
        take_stop(&mut core)?;
        self.settle(&mut core, input, batch.error.take())?;
        self.dispatch(&mut core, input.group(), &batch);
        drop(batch);
        self.commit_tick(&mut core, input)
    }

    /// Fences the producers of instances that left the group (see [`Departures`]): the tasks
    /// taken over from them then need not wait for their open transactions to time out.
    fn watch_departures<I: Input>(&mut self, input: &I) {
        let Some(departures) = self.departures.as_mut() else {
            return;
        };
        if input.brokers_reachable() {
            departures.watch(input.group(), self.transactions.as_ref(), self.now.now());
        }
    }

    /// Restores the next pending task for a slice of time, and seeks partitions a rollback could
    /// not seek yet. Returns whether restores are waiting or under way.
    fn restore_slice<I: Input>(&mut self, input: &I) -> Result<bool, crate::Error> {
        self.clock.enter(Phase::Restore);
        let core = self.core.clone();
        let mut guard = lock(&core);
        let core = &mut *guard;
        let group = input.group();
        take_stop(core)?;
        if let Err(error) = core.restore_some(group) {
            // Already the stop when one was decided in the slice.
            if core.stopping() {
                return Err(error);
            }
            core.carry_out(group, Failure::Other(error))?;
        }
        self.clock.enter(Phase::Other);
        for slot in core.tasks.values_mut() {
            slot.reposition(group, &core.seeks);
        }
        ActiveTasks(core.task_count()).emit();
        Ok(core.restoring.is_some() || !core.pending.is_empty())
    }

    /// Keeps the standby tasks warm, when no restore of an active task is waiting or under way
    /// (those come first: their partitions stand still meanwhile) and the brokers are reachable
    /// (a standby's reads and listings would only wait).
    fn standby_slice<I: Input>(&mut self, input: &I, restoring: bool) {
        if restoring || !input.brokers_reachable() {
            return;
        }
        self.clock.enter(Phase::Restore);
        lock(&self.core).keep_standbys(input.group());
        self.clock.enter(Phase::Other);
    }

    /// Polls up to [`MAX_BATCH`] records, waiting for the first. While a restore is under way it
    /// does not wait, so the restore goes on at full speed; while a commit or a batch is in flight
    /// it comes back soon, to send what those held back or produced.
    fn poll<'c, I: Input>(&mut self, input: &'c I, restoring: bool) -> PolledBatch<I::Record<'c>> {
        let (busy, carrying, held) = {
            let core = lock(&self.core);
            let carried: usize = core
                .tasks
                .values()
                .filter_map(|slot| slot.carried.as_ref())
                .map(CopiedRecords::len)
                .sum();
            let in_flight = core.in_flight.as_ref().map_or(0, |batch| batch.held);
            (
                core.committer.in_flight() || core.in_flight.is_some(),
                carried > 0,
                carried + in_flight,
            )
        };
        // Records carried over from batches whose time ran out count against the next polls, so
        // that what the loop holds stays within two batches however far behind a task is.
        let room = (2 * MAX_BATCH).saturating_sub(held).min(MAX_BATCH);
        let mut wait = if restoring || carrying {
            Duration::ZERO
        } else if busy {
            Duration::from_millis(2)
        } else {
            self.next_commit
                .saturating_duration_since(self.now.now())
                .min(Duration::from_millis(100))
        };
        let mut batch = PolledBatch {
            records: Vec::new(),
            stamps: Vec::new(),
            error: None,
        };
        self.clock.enter(Phase::Wait);
        while batch.records.len() < room {
            let Some(polled) = input.poll(wait) else {
                break;
            };
            if !wait.is_zero() || batch.records.is_empty() {
                self.clock.enter(Phase::Poll);
                wait = Duration::ZERO;
            }
            match polled {
                // Read after the poll returned: a rollback its rebalance callback ran came first.
                Ok(record) => batch.push(record, self.seeks.now()),
                Err(error) => {
                    batch.error = Some(error);
                    break;
                }
            }
        }
        batch
    }

    /// Hands on the batch the workers processed while this one was polled, carries out a poll
    /// failure, and learns the outcome of a commit that ended.
    fn settle<I: Input>(
        &mut self,
        core: &mut Core,
        input: &I,
        poll_error: Option<InputError>,
    ) -> Result<(), crate::Error> {
        let group = input.group();
        self.finish_batch(core, group)?;
        let mut unreachable = false;
        match poll_error {
            None => {}
            Some(InputError::Consumer(error)) => {
                unreachable = matches!(error, KafkaClientError::Unreachable { .. });
                core.carry_out(group, Failure::Consumer(error))?;
            }
            Some(InputError::Fatal(error)) => core.carry_out(group, Failure::Other(error))?,
        }
        if !unreachable && !input.brokers_reachable() {
            unreachable = true;
            let error = KafkaClientError::Unreachable {
                operation: "consume".into(),
                reason: "no connection to a broker is up".into(),
                code: None,
            };
            core.carry_out(group, Failure::Consumer(error))?;
        }
        if !unreachable {
            core.recovered(Waiting::Consume);
        }
        self.health.set_degraded(unreachable);
        self.clock.enter(Phase::Commit);
        if let Err(error) = core.committer.settle(&mut core.tasks, false) {
            core.carry_out(group, error.into())?;
        }
        self.apply_backpressure(core, group);
        Ok(())
    }

    /// Waits for the batch on the workers and hands its output on, carrying out its failure.
    fn finish_batch(&mut self, core: &mut Core, group: &dyn Group) -> Result<(), crate::Error> {
        self.clock.enter(Phase::Process);
        let finished = core.wait_batch();
        self.clock.enter(Phase::Send);
        match finished.and_then(|finished| core.hand_off(finished)) {
            Some(failure) => core.carry_out(group, failure),
            None => Ok(()),
        }
    }

    /// Pauses fetching while the commit in flight holds back too much output or takes too long,
    /// and resumes once it settled: what the loop keeps past the last commit (held-back records,
    /// dirty cache entries, sessions, partials) stays bounded however long a commit retries.
    fn apply_backpressure(&mut self, core: &mut Core, group: &dyn Group) {
        let wanted = core.committer.needs_backpressure(
            BACKPRESSURE_BYTES,
            (self.commit_interval * 10).max(Duration::from_secs(1)),
        );
        if wanted == self.paused_for_commit {
            return;
        }
        // The batch on the workers was finished above: every task is in `tasks`.
        let partitions: Vec<(String, i32)> = core
            .tasks
            .values()
            .filter(|slot| !slot.needs_seek)
            .map(|slot| (slot.task.id.topic.clone(), slot.task.id.partition))
            .collect();
        let result = if wanted {
            CommitBackpressure.emit();
            group.pause(&partitions)
        } else {
            group.resume(&partitions)
        };
        if let Err(error) = result {
            tracing::warn!(%error, wanted, "could not pause or resume for a commit in flight");
        }
        self.paused_for_commit = wanted;
    }

    /// Splits the batch by partition and hands each task its records on the workers. Records
    /// polled before their partition's last seek (see [`SeekClock`]) are dropped, and so are
    /// records the task already processed.
    fn dispatch<R: PolledRecord>(
        &mut self,
        core: &mut Core,
        group: &dyn Group,
        batch: &PolledBatch<R>,
    ) {
        let carrying = core.tasks.values().any(|slot| slot.carried.is_some());
        if batch.records.is_empty() && !carrying {
            return;
        }
        self.clock.enter(Phase::Poll);
        let started = self.now.now();
        // Consecutive records mostly share a partition (the consumer queues each fetched
        // partition's records together), so the last partition is tried first.
        let mut by_partition: Vec<((&str, i32), Vec<Stamped<'_>>)> = Vec::new();
        let mut last = 0;
        for (record, polled_at) in batch.stamped() {
            let key = (record.topic(), record.partition());
            core.committer.note_consumed(record.timestamp_ms());
            if by_partition.get(last).is_none_or(|(k, _)| *k != key) {
                last = match by_partition.iter().position(|(k, _)| *k == key) {
                    Some(index) => index,
                    None => {
                        by_partition.push((key, Vec::new()));
                        by_partition.len() - 1
                    }
                };
            }
            let input = InputRecord {
                payload: record.payload(),
                key: record.key(),
                timestamp_ms: record.timestamp_ms(),
                offset: record.offset(),
                subject: record.subject(),
            };
            by_partition[last].1.push((input, polled_at));
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
            let Some(slot) = core.tasks.get_mut(&id) else {
                taskless.push((topic, partition));
                continue;
            };
            if slot.needs_seek {
                // Fetched from the position before a rollback whose seek has not succeeded yet.
                continue;
            }
            slot.last_record_at = started;
            // Past what the task processed and what it carries over: the consumer never
            // delivers those again unless sought (which drops the carried records), but an
            // offset reset in mid-stream would, and they must not run twice.
            let carried_end = slot
                .carried
                .as_ref()
                .and_then(CopiedRecords::last_offset)
                .map(|offset| offset + 1);
            let from = slot
                .task
                .next_offset()
                .unwrap_or(i64::MIN)
                .max(carried_end.unwrap_or(i64::MIN));
            let sought_at = slot.sought_at;
            let unprocessed = || {
                records
                    .iter()
                    .filter(move |(r, at)| !is_stale(*at, sought_at) && r.offset >= from)
                    .map(|(r, _)| r)
            };
            // Stamps only grow along a batch: when the first record is not stale, none is.
            let stale = if records
                .first()
                .is_some_and(|(_, at)| is_stale(*at, sought_at))
            {
                records
                    .iter()
                    .filter(|(_, at)| is_stale(*at, sought_at))
                    .count()
            } else {
                0
            };
            if stale > 0 {
                StaleRecordsDropped {
                    task: id.to_string(),
                    records: stale as u64,
                }
                .emit();
            }
            let bytes = unprocessed()
                .map(|r| r.payload.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len))
                .sum();
            // What the last batch left over comes first: it is what follows the task's offset.
            let mut copied = match slot.carried.take() {
                Some(carried) => carried,
                None => CopiedRecords::with_capacity(records.len(), bytes),
            };
            unprocessed().for_each(|record| copied.push(record));
            if !copied.is_empty() {
                let slot = core.tasks.remove(&id).expect("looked up above");
                work.push(TaskWork::new(slot, copied));
            }
        }
        // Tasks with records left over and nothing new this time.
        let carried: Vec<TaskId> = core
            .tasks
            .iter()
            .filter(|(_, slot)| slot.carried.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in carried {
            let mut slot = core.tasks.remove(&id).expect("listed above");
            slot.last_record_at = started;
            let records = slot.carried.take().expect("listed above");
            work.push(TaskWork::new(slot, records));
        }
        self.route_taskless(core, group, taskless);
        if !work.is_empty() {
            let held = work.iter().map(|w| w.records.len()).sum();
            let deadline = BatchDeadline {
                at: started + self.batch_time,
                clock: self.now.clone(),
            };
            core.in_flight = Some(BatchInFlight {
                work: self.workers.start(work, deadline),
                records: batch.records.len(),
                held,
                started,
            });
        }
    }

    /// Records for partitions without a task: revoked meanwhile, waiting for their restore, or
    /// ours with no restore planned, which is then planned.
    fn route_taskless(&mut self, core: &mut Core, group: &dyn Group, taskless: Vec<(&str, i32)>) {
        if taskless.is_empty() {
            return;
        }
        let assignment = group.assignment();
        let restoring_id = core
            .restoring
            .as_ref()
            .map(|r| (r.id.topic.clone(), r.id.partition));
        for (topic, partition) in taskless {
            let key = (topic.to_string(), partition);
            match route_taskless(&key, &assignment, &core.pending, restoring_id.as_ref()) {
                Taskless::Drop => {}
                Taskless::Initialize => {
                    tracing::debug!(
                        topic,
                        partition,
                        "records for a partition without a task; initialising it"
                    );
                    let _ = group.pause(std::slice::from_ref(&key));
                    core.pending.insert(key);
                }
            }
        }
        core.export_restoring();
    }

    /// Every `commit_interval_ms`: flushes every task and starts the transaction of what they
    /// produced, which completes on the commit thread while the loop goes on. A tick that finds
    /// the previous transaction still completing does not wait for it: the commit starts once
    /// that one has settled.
    fn commit_tick<I: Input>(&mut self, core: &mut Core, input: &I) -> Result<(), crate::Error> {
        let now = self.now.now();
        if now < self.next_commit || core.committer.in_flight() || core.stopping() {
            self.clock.enter(Phase::Other);
            return Ok(());
        }
        let group = input.group();
        // A commit covers every task's work up to now.
        self.finish_batch(core, group)?;
        self.clock.enter(Phase::Commit);
        self.next_commit = now + self.commit_interval;
        if self.wall_clock_close_ms > 0 {
            let now = crate::runtime::now_ms();
            for slot in core.tasks.values_mut() {
                slot.task
                    .advance_with_wall_clock(now, self.wall_clock_close_ms as i64);
            }
        }
        if let Some(idle_timeout) = self.idle_timeout {
            for slot in core.tasks.values_mut() {
                // Records carried over are input not processed yet (the consumer's position is
                // past them): such a task is not idle however long no new record came.
                let idle = slot.carried.is_none()
                    && now.saturating_duration_since(slot.last_record_at) >= idle_timeout
                    && input.caught_up(&slot.task.id.topic, slot.task.id.partition);
                slot.task.set_idle(idle);
            }
        }
        if let Err(error) = core
            .committer
            .commit(&mut core.tasks, group, CommitMode::Background)
        {
            core.carry_out(group, error.into())?;
        }
        self.clock.enter(Phase::Other);
        export_task_stats(core);
        if let Some(shares) = self.clock.take() {
            LoopTime {
                shares: &shares.map(|(phase, share)| (phase.label(), share)),
            }
            .emit();
        }
        if let Some(purge) = &mut self.purge {
            purge.run_if_due(&core.tasks, now);
        }
        if let Some(cleaner) = &mut self.cleaner {
            cleaner.run_if_due(&core.task_dirs_in_use(), now);
        }
        if now >= self.next_state_gauges {
            self.next_state_gauges = now + Duration::from_secs(10);
            export_store_sizes(core);
        }
        self.clock.enter(Phase::Other);
        Ok(())
    }

    /// Commits what the tasks hold (after a clean stop) or aborts it (after a failure), leaves the
    /// group and closes the tasks; a clean close writes checkpoints.
    fn shutdown<I: Input>(
        self,
        input: &I,
        result: Result<(), crate::Error>,
    ) -> Result<(), crate::Error> {
        self.health.set_stopping();
        let started = Instant::now();
        let mut clean = result.is_ok();
        {
            let mut guard = lock(&self.core);
            let core = &mut *guard;
            let group = input.group();
            if let Some(restoration) = core.restoring.take() {
                restoration.suspend(core.reader.as_ref());
            }
            if let Some(standbys) = core.standbys.as_mut() {
                standbys.release_all();
            }
            let mut abort = core.stop.as_ref().is_none_or(|stop| stop.abort);
            if let Some(failure) = core.finish_batch() {
                tracing::warn!(
                    ?failure,
                    "the last batch failed; uncommitted work is aborted and will be reprocessed"
                );
                clean = false;
                abort &= abort_when_stopping(&failure);
            }
            if clean {
                if let Err(error) = core
                    .committer
                    .commit(&mut core.tasks, group, CommitMode::Wait)
                {
                    let failure = Failure::from(error);
                    tracing::warn!(
                        ?failure,
                        "final commit failed; uncommitted work is aborted and will be reprocessed"
                    );
                    clean = false;
                    abort = abort_when_stopping(&failure);
                }
            }
            if !clean {
                // The tasks hold work past the last commit: abort it (unless the last commit's
                // outcome is unknown) and drop them, so closing the consumer commits nothing and
                // writes no checkpoint.
                if abort {
                    core.committer.abort();
                }
                core.tasks.clear();
                core.stop.get_or_insert(StopDecided { error: None, abort });
            }
        }
        input.close();
        {
            let mut core = lock(&self.core);
            let tasks = std::mem::take(&mut core.tasks);
            if clean {
                for (_, slot) in tasks {
                    let ends = changelog_ends(&self.compiled, &slot, input.group());
                    slot.close_clean(ends);
                }
            }
        }
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            ok = result.is_ok(),
            "eddy stopped"
        );
        result
    }
}

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

/// Each store's size estimate, as gauges.
fn export_store_sizes(core: &Core) {
    for slot in core.tasks.values() {
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

/// Moves the counters tasks kept since the last commit into the metrics registry, and sets each
/// aggregation's watermark gauge to the slowest of this instance's tasks.
fn export_task_stats(core: &mut Core) {
    let mut watermarks: BTreeMap<String, i64> = BTreeMap::new();
    for slot in core.tasks.values() {
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
    for slot in core.tasks.values_mut() {
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
