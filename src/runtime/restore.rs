//! Restoring a newly assigned task's stores from their changelogs, a slice at a time between
//! polls, so that a long restore neither stops the group consumer (`max.poll.interval.ms`) nor
//! holds back the commits of the tasks already running (`transaction.timeout.ms`).
//!
//! Restores resume where they stopped. The local files are wiped only when there is no usable
//! checkpoint; while a store is read, its progress is checkpointed every few seconds (after a
//! RocksDB flush, since eddy writes without a WAL), so a restore interrupted by a crash, a
//! revocation or a shutdown goes on from its last checkpoint. Replaying a changelog suffix over
//! files that may already hold part of it is safe: a changelog record is the whole value of its
//! key (or its deletion), so the last record of each key wins either way. The checkpoint is
//! removed once the task starts processing, because from then on its files move past it.

use super::ports::{Changelog, Clock, Group};
use super::seek_clock::SeekClock;
use super::task_slot::TaskSlot;
use crate::kafka::{KafkaClientError, PartitionOffset, ReadPosition};
use crate::state::{Checkpoint, StoreWrite, TaskDb};
use crate::task::{CompiledTopology, StateLocation, StreamTask, TaskId};
use crate::telemetry::events::{StandbyRead, StoreRestored};
use crate::topology::changelog_topic;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often an ongoing restore checkpoints its progress.
const PROGRESS_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// Records written to RocksDB per batch.
const WRITE_BATCH: usize = 10_000;

/// What a restore slice did. A slice that read nothing is [`Slice::Stalled`]: the failure
/// executor ([`super::failure`]) waits that out, up to `task_timeout_ms`, like unreachable brokers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Slice {
    /// Every store is restored.
    Done,
    /// Records were read (or a store finished), more to come.
    Progressed,
    /// Nothing came: what the restore is waiting for.
    Stalled(String),
}

/// One store being read from its changelog.
struct StoreRestore {
    store: String,
    changelog: String,
    position: ReadPosition,
    resumed_from: Option<i64>,
    records: u64,
    started: Instant,
}

/// A task whose stores are being restored; it becomes a running [`TaskSlot`] when done.
pub(crate) struct Restoration {
    pub id: TaskId,
    task: StreamTask,
    db: Option<TaskDb>,
    dir: Option<PathBuf>,
    /// Stores not started yet.
    queue: VecDeque<String>,
    current: Option<StoreRestore>,
    /// Where each store's local files stand in its changelog: the progress checkpoint.
    positions: BTreeMap<String, i64>,
    batch: Vec<StoreWrite>,
    last_checkpoint: Instant,
    /// The partition's committed offset and metadata, fetched stable before any changelog is
    /// opened (`None` until then).
    committed: Option<Option<PartitionOffset>>,
    /// A warm copy of a task another instance runs ([`super::standby`]): it follows the
    /// changelogs round after round, never fetches the committed offset and never finishes.
    standby: bool,
    /// Records between each store's position and its changelog's end when it was last opened.
    lag: BTreeMap<String, i64>,
}

/// Whether every recorded changelog position lies inside its changelog's offsets. One outside
/// (the topic was recreated or truncated) describes files that no longer match the changelog.
fn positions_fit(
    application_id: &str,
    partition: i32,
    positions: &BTreeMap<String, i64>,
    group: &dyn Group,
) -> bool {
    positions.iter().all(|(store, offset)| {
        let changelog = changelog_topic(application_id, store);
        match group.watermarks(&changelog, partition) {
            Ok((low, high)) => (low..=high).contains(offset),
            Err(_) => false,
        }
    })
}

/// Where each store's files stand in its changelog, as recorded with their last write: all of
/// them, or `None` when one has none (files an older eddy wrote, or a store never written),
/// or when one is older than `max_age` (compaction may since have removed tombstones its files
/// missed).
fn store_positions(
    task: &mut StreamTask,
    stores: &[String],
    max_age: Duration,
) -> Result<Option<BTreeMap<String, i64>>, crate::Error> {
    let mut positions = BTreeMap::new();
    for store in stores {
        let Some(window_store) = task.store_mut(store) else {
            return Ok(None);
        };
        match window_store.position()? {
            Some(position) if position.age() <= max_age => {
                positions.insert(store.clone(), position.next_offset);
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(positions))
}

/// `EDDY_FAILPOINT=slow_restore`: restores read 20 records per slice and pause 100 ms after
/// each, so the broker tests can make a restore outlast a transaction timeout and interrupt it.
fn slow_restore() -> bool {
    crate::failpoint::armed() == Some(crate::failpoint::Failpoint::SlowRestore)
}

impl Restoration {
    /// Opens the task's stores, keeping the local files when something vouches for them, and
    /// wiping them otherwise. What vouches, first found: the checkpoint file of a clean close, or
    /// else the position every store recorded with its last write (which survives a crash). Either
    /// must fit the changelogs' current offsets and be younger than `checkpoint_max_age_ms`.
    pub fn begin(
        compiled: &CompiledTopology,
        state: &StateLocation,
        partitions: &HashMap<String, i32>,
        id: TaskId,
        group: &dyn Group,
        clock: &dyn Clock,
        checkpoint_max_age: Duration,
    ) -> Result<Restoration, crate::Error> {
        let dir = compiled.task_dir(state, &id);
        let stores = compiled.store_names_of(&id);
        let fits = |offsets: &BTreeMap<String, i64>| {
            positions_fit(&compiled.application_id, id.partition, offsets, group)
        };
        let checkpoint = dir
            .as_deref()
            .and_then(|dir| Checkpoint::read_fresh(dir, checkpoint_max_age))
            .map(|checkpoint| checkpoint.changelog_offsets)
            .filter(&fits);
        let has_files = dir.as_deref().is_some_and(Path::exists);
        let (mut task, mut db) = match (compiled.create_task(&id, partitions, state), &dir) {
            (Ok(opened), _) => opened,
            // Files this topology cannot open (a store it no longer has, a database left half
            // written): nothing vouches for them, so they go, as files without a checkpoint did.
            (Err(error), Some(dir)) if has_files => {
                tracing::warn!(task = %id, %error, "the local files cannot be opened; wiping them and restoring from the changelog");
                TaskDb::destroy(dir)?;
                compiled.create_task(&id, partitions, state)?
            }
            (Err(error), _) => return Err(error.into()),
        };
        let (positions, vouched_by) = match checkpoint {
            Some(offsets) => (Some(offsets), "checkpoint"),
            None if has_files => (
                store_positions(&mut task, &stores, checkpoint_max_age)?.filter(&fits),
                "store positions",
            ),
            None => (None, "none"),
        };
        let positions = match (positions, &dir) {
            (Some(positions), _) => positions,
            (None, Some(dir)) if has_files => {
                drop((task, db));
                TaskDb::destroy(dir)?;
                (task, db) = compiled.create_task(&id, partitions, state)?;
                BTreeMap::new()
            }
            (None, _) => BTreeMap::new(),
        };
        let vouched_by = if positions.is_empty() {
            "none"
        } else {
            vouched_by
        };
        tracing::info!(task = %id, from = ?positions, vouched_by, "restoring task");
        Ok(Restoration {
            queue: task.store_names().into(),
            id,
            task,
            db,
            dir,
            current: None,
            positions,
            batch: Vec::new(),
            last_checkpoint: clock.now(),
            committed: None,
            standby: false,
            lag: BTreeMap::new(),
        })
    }

    /// Like [`Restoration::begin`], for a warm copy of a task another instance runs.
    pub fn begin_standby(
        compiled: &CompiledTopology,
        state: &StateLocation,
        partitions: &HashMap<String, i32>,
        id: TaskId,
        group: &dyn Group,
        clock: &dyn Clock,
        checkpoint_max_age: Duration,
    ) -> Result<Restoration, crate::Error> {
        let mut restoration = Restoration::begin(
            compiled,
            state,
            partitions,
            id,
            group,
            clock,
            checkpoint_max_age,
        )?;
        restoration.standby = true;
        if let Some(dir) = &restoration.dir {
            // From here on the copy's own positions (in its batches) vouch for its files.
            Checkpoint::remove(dir);
        }
        Ok(restoration)
    }

    /// Starts a standby's next round, reading each changelog on from where the last round left
    /// it. A position its changelog no longer holds (truncated or recreated) fails the round's
    /// open with `ChangelogTruncated`: the copy is then discarded and rebuilt, never served stale.
    pub fn next_round(&mut self) {
        if self.queue.is_empty() && self.current.is_none() {
            self.queue = self.task.store_names().into();
        }
    }

    /// Ends a round that cannot go on now (a changelog could not be opened), keeping what it
    /// read, so that other copies are read meanwhile; the next round starts over.
    pub fn end_round(&mut self, reader: &dyn Changelog) -> Result<(), crate::Error> {
        if self.current.is_some() {
            reader.close_partition();
            self.write_batch()?;
            if let Some(current) = self.current.take() {
                self.positions.insert(current.store, current.position.next);
            }
        }
        self.queue.clear();
        Ok(())
    }

    /// Whether a round is under way (a store open or waiting to be).
    pub fn in_round(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    /// Records between the copy and its changelogs' ends, as last seen.
    pub fn lag(&self) -> i64 {
        self.lag.values().sum()
    }

    /// Drops the copy and deletes its files (its changelog no longer matches them).
    pub fn discard(self, reader: &dyn Changelog) -> Result<(), crate::Error> {
        if self.current.is_some() {
            reader.close_partition();
        }
        let Restoration { task, db, dir, .. } = self;
        drop((task, db));
        if let Some(dir) = dir {
            TaskDb::destroy(&dir)?;
        }
        Ok(())
    }

    /// Restores for up to `budget`. Fails when a changelog cannot be read for a reason waiting
    /// does not cure; a broker briefly away makes the slice [`Slice::Stalled`].
    pub fn step(
        &mut self,
        group: &dyn Group,
        reader: &dyn Changelog,
        application_id: &str,
        budget: Duration,
        clock: &dyn Clock,
    ) -> Result<Slice, crate::Error> {
        let deadline = clock.now() + budget;
        if !self.standby && self.committed.is_none() && !self.fetch_stable_offset(group, budget) {
            return Ok(Slice::Stalled(format!(
                "the stable committed offset of {}",
                self.id
            )));
        }
        let mut progressed = false;
        loop {
            if self.current.is_none() {
                let Some(store) = self.queue.pop_front() else {
                    return Ok(Slice::Done);
                };
                let changelog = changelog_topic(application_id, &store);
                let resumed_from = self.positions.get(&store).copied();
                let position = match reader.open_partition(
                    &changelog,
                    self.id.partition,
                    resumed_from,
                    budget,
                ) {
                    Ok(position) => position,
                    Err(error @ KafkaClientError::ChangelogTruncated { .. }) => {
                        self.queue.push_front(store);
                        return Err(error.into());
                    }
                    Err(error) => {
                        // Leader elections right after a topic is created, a broker away: tried
                        // again at the next slice, waited out for up to `task_timeout_ms`.
                        tracing::warn!(task = %self.id, %error, "could not open a changelog; trying again");
                        self.queue.push_front(store);
                        return Ok(Slice::Stalled(format!(
                            "listing the offsets of {changelog} ({error})"
                        )));
                    }
                };
                self.lag.insert(store.clone(), position.end - position.next);
                if let Some(offset) = resumed_from.filter(|o| *o > 0 && !self.standby) {
                    tracing::info!(task = %self.id, store, offset, end = position.end, "store restore resumes from its checkpoint");
                }
                self.current = Some(StoreRestore {
                    store,
                    changelog,
                    position,
                    resumed_from,
                    records: 0,
                    started: Instant::now(),
                });
            }
            let current = self.current.as_mut().expect("set above");
            let left = deadline.saturating_duration_since(clock.now());
            let max_records = if slow_restore() { 20 } else { usize::MAX };
            let batch = &mut self.batch;
            let read = reader.read_some(
                &current.changelog,
                &mut current.position,
                left,
                max_records,
                &mut |record| {
                    if let Some(key) = record.key {
                        batch.push(StoreWrite {
                            key,
                            value: record.value,
                        });
                    }
                },
            )?;
            current.records += read as u64;
            progressed |= read > 0 || current.position.done;
            if self.batch.len() >= WRITE_BATCH || current.position.done {
                self.write_batch()?;
            }
            if self.current.as_ref().is_some_and(|c| c.position.done) {
                self.finish_store();
            } else if clock.now().saturating_duration_since(self.last_checkpoint)
                >= PROGRESS_CHECKPOINT_EVERY
            {
                self.last_checkpoint = clock.now();
                self.checkpoint_progress()?;
            }
            let slice_over = slow_restore() || clock.now() >= deadline;
            if slow_restore() {
                std::thread::sleep(Duration::from_millis(100));
            }
            if slice_over {
                return Ok(match (&self.current, progressed) {
                    (Some(current), false) => Slice::Stalled(format!(
                        "restoring {} from {}",
                        current.store, current.changelog
                    )),
                    _ => Slice::Progressed,
                });
            }
        }
    }

    /// Stable offsets first: the fetch waits until the previous owner's last transaction is
    /// complete, so every record it wrote is in the changelogs before their ends are read (and
    /// the read then waits for its markers, see `kafka::restore::at_partition_eof`). A fetch that
    /// waits (an open transaction holds the offsets) is asked again at the next slice, so the
    /// loop goes on polling and committing the running tasks meanwhile. Returns whether the
    /// offset is known.
    fn fetch_stable_offset(&mut self, group: &dyn Group, budget: Duration) -> bool {
        match group.committed(&[(self.id.topic.clone(), self.id.partition)], budget) {
            Ok(committed) => {
                self.committed = Some(committed.into_iter().next());
                true
            }
            Err(error) => {
                tracing::info!(task = %self.id, %error, "the committed offset is not stable yet; asking again");
                false
            }
        }
    }

    fn store_mut(&mut self, store: &str) -> &mut crate::state::WindowStore {
        self.task.store_mut(store).expect("store of this task")
    }

    fn write_batch(&mut self) -> Result<(), crate::Error> {
        let Some(store) = self.current.as_ref().map(|c| c.store.clone()) else {
            return Ok(());
        };
        let batch = std::mem::take(&mut self.batch);
        let next_offset = self
            .current
            .as_ref()
            .map_or(0, |current| current.position.next);
        self.store_mut(&store).restore_batch(&batch, next_offset)?;
        self.batch = batch;
        self.batch.clear();
        Ok(())
    }

    fn finish_store(&mut self) {
        let Some(done) = self.current.take() else {
            return;
        };
        let seconds = done.started.elapsed().as_secs_f64();
        if self.standby {
            StandbyRead {
                store: &done.store,
                records: done.records,
            }
            .emit();
            self.positions.insert(done.store, done.position.next);
            return;
        }
        StoreRestored {
            task: &self.id,
            store: &done.store,
            records: done.records,
            seconds,
            from_checkpoint: done.resumed_from.is_some(),
        }
        .emit();
        self.positions.insert(done.store, done.position.next);
    }

    /// Flushes RocksDB and records how far every store got, so an interrupted restore resumes here.
    /// A standby writes no checkpoint file: each of its batches carries its position, and a file
    /// rewritten at every close would look fresh however old the positions in it are.
    fn checkpoint_progress(&mut self) -> Result<(), crate::Error> {
        self.write_batch()?;
        if self.standby {
            return Ok(());
        }
        let mut positions = self.positions.clone();
        if let Some(current) = &self.current {
            positions.insert(current.store.clone(), current.position.next);
        }
        if let (Some(db), Some(dir)) = (&self.db, &self.dir) {
            db.flush()?;
            Checkpoint::write(dir, positions.clone()).map_err(|source| crate::Error::StateDir {
                path: dir.clone(),
                source,
            })?;
            if self.standby {
                tracing::debug!(task = %self.id, ?positions, "standby progress checkpointed");
            } else {
                tracing::info!(task = %self.id, ?positions, "restore progress checkpointed");
            }
        }
        Ok(())
    }

    /// Stops restoring (the partition was revoked, or the instance stops), keeping the progress.
    pub fn suspend(mut self, reader: &dyn Changelog) {
        if self.current.is_some() {
            reader.close_partition();
        }
        if let Err(error) = self.checkpoint_progress() {
            tracing::warn!(task = %self.id, %error, "could not checkpoint restore progress");
        }
    }

    /// Turns the restored task into a running one: rebuilds its window index, takes the stream
    /// time and position committed with its input offset, and resumes its partition.
    pub fn finish(
        mut self,
        group: &dyn Group,
        seeks: &SeekClock,
        clock: &dyn Clock,
    ) -> Result<TaskSlot, crate::Error> {
        let (topic, partition) = (self.id.topic.clone(), self.id.partition);
        self.task.reload()?;
        let committed = self.committed.take().flatten();
        let committed_offset = committed.as_ref().and_then(|c| c.offset);
        if let Some(c) = &committed {
            self.task.restore_metadata(&c.metadata);
        }
        self.task.set_next_offset(committed_offset);
        if let Some(dir) = &self.dir {
            // From here on the files move past any checkpoint.
            Checkpoint::remove(dir);
        }
        let slot = TaskSlot {
            task: self.task,
            db: self.db,
            dir: self.dir,
            committed_offset,
            pending_state: Vec::new(),
            flushed: false,
            flushed_offset: committed_offset,
            last_record_at: clock.now(),
            needs_seek: false,
            // Whatever the consumer fetched for this partition before it was sought is dropped.
            sought_at: seeks.tick(),
            carried: None,
        };
        if let Err(error) = group.seek(&topic, partition, committed_offset) {
            // A partition paused since its assignment was never fetched and cannot be sought
            // yet; the consumer starts it at the committed offset by itself.
            tracing::info!(task = %slot.task.id, %error, offset = ?slot.committed_offset, "seek to the committed offset deferred: the consumer starts the partition there by itself");
        }
        group.resume(&[(topic, partition)])?;
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{KafkaClientError, PartitionOffset};
    use crate::runtime::ports::{GroupDescription, Membership};
    use crate::state::{ChangelogEnds, StoreWrite};

    /// A group that only answers the changelogs' offsets, which is all `begin` asks.
    struct Offsets(i64, i64);

    impl Group for Offsets {
        fn committed(
            &self,
            _: &[(String, i32)],
            _: Duration,
        ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
            Ok(Vec::new())
        }
        fn seek(&self, _: &str, _: i32, _: Option<i64>) -> Result<(), KafkaClientError> {
            Ok(())
        }
        fn pause(&self, _: &[(String, i32)]) -> Result<(), KafkaClientError> {
            Ok(())
        }
        fn resume(&self, _: &[(String, i32)]) -> Result<(), KafkaClientError> {
            Ok(())
        }
        fn watermarks(&self, _: &str, _: i32) -> Result<(i64, i64), KafkaClientError> {
            Ok((self.0, self.1))
        }
        fn assignment(&self) -> Vec<(String, i32)> {
            Vec::new()
        }
        fn membership(&self) -> Option<Membership> {
            None
        }
        fn commit_offsets(&self, _: &[PartitionOffset]) -> Result<(), KafkaClientError> {
            Ok(())
        }
        fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
            Ok(None)
        }
    }

    /// The position a store records with its writes vouches for its files after a crash (no
    /// checkpoint file), as long as it fits the changelog; otherwise the files are wiped.
    #[test]
    fn files_are_kept_when_their_recorded_position_fits_the_changelog_and_wiped_otherwise() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let topology =
            crate::topology::Topology::from_files(&[root.join("topology/analytics.toml")]).unwrap();
        let compiled = CompiledTopology::new("app", topology);
        let dir = tempfile::tempdir().unwrap();
        let state = StateLocation::Disk(dir.path().to_path_buf());
        let id = TaskId {
            topic: compiled.repartition_topics()[0].clone(),
            partition: 0,
        };
        let store = compiled.store_names_of(&id)[0].clone();
        let changelog = changelog_topic("app", &store);
        let partitions = HashMap::from([(id.topic.clone(), 1)]);
        let begin = |group: &Offsets| {
            Restoration::begin(
                &compiled,
                &state,
                &partitions,
                id.clone(),
                group,
                &crate::runtime::ports::SystemClock,
                Duration::from_secs(3600),
            )
            .unwrap()
        };
        let fresh = begin(&Offsets(0, 100));
        assert!(fresh.positions.is_empty(), "nothing on disk yet");
        let mut restoration = fresh;
        let key = b"k".to_vec();
        let ends = ChangelogEnds::from([((changelog.clone(), 0), 42)]);
        restoration
            .store_mut(&store)
            .apply(
                &[StoreWrite {
                    key: key.clone(),
                    value: Some(b"v".to_vec()),
                }],
                &ends,
            )
            .unwrap();
        drop(restoration); // a crash: no checkpoint file

        let mut kept = begin(&Offsets(0, 100));
        assert_eq!(kept.positions, BTreeMap::from([(store.clone(), 42)]));
        assert!(
            kept.task
                .store_mut(&store)
                .unwrap()
                .position()
                .unwrap()
                .is_some(),
            "files kept"
        );
        drop(kept);

        let wiped = begin(&Offsets(50, 100));
        assert!(
            wiped.positions.is_empty(),
            "42 is below the changelog's start: the changelog was truncated or recreated"
        );
        let mut wiped = wiped;
        assert_eq!(
            wiped.task.store_mut(&store).unwrap().position().unwrap(),
            None,
            "files wiped"
        );
    }
}
