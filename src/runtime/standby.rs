//! Standby replicas (`num_standby_replicas`, Kafka Streams' `num.standby.replicas`): warm copies
//! of tasks other instances run, kept in local RocksDB by following their changelogs, so that an
//! instance that takes one over restores only what its copy lacks.
//!
//! **Placement.** librdkafka has no pluggable assignor (confluentinc/librdkafka#2284), so eddy
//! cannot place standbys through the assignment as Kafka Streams does. Every few seconds each
//! instance reads the group's members and their assignments from the coordinator
//! ([`super::ports::Group::describe`]) and places each task's copies where the group's assignor
//! would most likely send the task if its owner left ([`placement`]), then on the members after
//! the owner on a ring of instance ids. Every instance computes the same placement from the same
//! description, with no coordination.
//!
//! **Reading.** A standby is a [`Restoration`] that never finishes: round after round it reads
//! each store's changelog, read_committed, from the position its files record to the end it sees,
//! and writes the records with that position in the same RocksDB batch (the rule active tasks
//! follow). It never produces. Its own changelog reader (an assign()-only consumer) keeps it off
//! the active restore's. Its work runs on the loop thread between polls, at most a quarter of
//! the loop's time, so it never holds back the active tasks' commits.
//!
//! **Promotion.** When the group assigns this instance a task it keeps a copy of, the copy is
//! closed, and the task's restore opens the same files and reads only the changelog past the
//! positions its batches recorded (a copy writes no checkpoint file: a file rewritten at every
//! close would look fresh however old the positions in it are). A copy whose changelog no longer holds its positions (truncated
//! or recreated) is deleted and restored from scratch, never served stale.

use super::core::is_changelog_truncated;
use super::ports::{Changelog, Clock, Group, GroupMember};
use super::restore::{Restoration, Slice};
use crate::task::{CompiledTopology, StateLocation, TaskId};
use crate::telemetry::events::{StandbyEnded, StandbyLag, StandbyTasks};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the group is described and the placement recomputed; sooner after this instance's
/// assignment changed (the others' likely did too).
const PLACEMENT_EVERY: Duration = Duration::from_secs(3);
/// How soon the group is described again while it rebalances.
const PLACEMENT_RETRY: Duration = Duration::from_millis(200);
/// How soon after a failed description (the coordinator away).
const PLACEMENT_AFTER_FAILURE: Duration = Duration::from_secs(15);
/// How long a standby that caught up waits before its next round.
const ROUND_EVERY: Duration = Duration::from_millis(500);
/// The most one standby step reads for.
const STEP_BUDGET: Duration = Duration::from_millis(50);
/// Standby work may take a quarter of the loop: after a step of `d`, none for `3 d`.
const IDLE_FACTOR: u32 = 3;

/// The tasks `me` keeps warm copies of (none when `me` is not a member). Each task of every other
/// member is copied to `replicas` members (fewer when the group is smaller): first to the member
/// the group's assignor would most likely hand it to if its owner left ([`likely_heirs`]), then to
/// the members after its owner on the ring of instance ids.
pub(crate) fn placement(members: &[GroupMember], me: &str, replicas: usize) -> BTreeSet<TaskId> {
    let mut ring: Vec<&GroupMember> = members.iter().collect();
    ring.sort_by(|a, b| a.instance.cmp(&b.instance));
    ring.dedup_by(|a, b| a.instance == b.instance);
    let mut mine = BTreeSet::new();
    let copies = replicas.min(ring.len().saturating_sub(1));
    if copies == 0 || !ring.iter().any(|m| m.instance == me) {
        return mine;
    }
    for (position, owner) in ring.iter().enumerate() {
        if owner.instance == me {
            continue;
        }
        let heirs = likely_heirs(&ring, position);
        for (topic, partition) in &owner.partitions {
            let mut holders: Vec<&str> = heirs
                .get(&(topic.as_str(), *partition))
                .into_iter()
                .copied()
                .collect();
            for next in (1..ring.len()).map(|j| ring[(position + j) % ring.len()]) {
                if holders.len() >= copies {
                    break;
                }
                if !holders.contains(&next.instance.as_str()) {
                    holders.push(&next.instance);
                }
            }
            if holders.contains(&me) {
                mine.insert(TaskId {
                    topic: topic.clone(),
                    partition: *partition,
                });
            }
        }
    }
    mine
}

/// Where the group's assignor would most likely move the partitions of `ring[leaving]` if it left:
/// partition by partition, in descending (topic, partition) order, each to the member left with
/// the fewest partitions, ties going to the lowest member id. That is how librdkafka's
/// cooperative-sticky assignor hands out orphaned partitions (rdkafka_sticky_assignor.c:
/// `sortPartitions` lists the partitions no member owns in its map's order, newest insertion
/// first; `maybeAssignPartition` takes the first of the members sorted by partition count, then
/// member id). The assignor cannot be told where copies are (confluentinc/librdkafka#2284), so
/// the copies go where it will send the tasks; if it does otherwise, the task is restored from
/// its changelog, as without a copy.
fn likely_heirs<'m>(ring: &[&'m GroupMember], leaving: usize) -> HashMap<(&'m str, i32), &'m str> {
    let mut survivors: Vec<(usize, &'m GroupMember)> = ring
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaving)
        .map(|(_, m)| (m.partitions.len(), *m))
        .collect();
    let mut orphans: Vec<(&'m str, i32)> = ring[leaving]
        .partitions
        .iter()
        .map(|(topic, partition)| (topic.as_str(), *partition))
        .collect();
    orphans.sort_unstable_by(|a, b| b.cmp(a));
    let mut heirs = HashMap::new();
    for orphan in orphans {
        let Some(heir) = survivors
            .iter_mut()
            .min_by(|(a, am), (b, bm)| a.cmp(b).then_with(|| am.member_id.cmp(&bm.member_id)))
        else {
            break;
        };
        heir.0 += 1;
        heirs.insert(orphan, heir.1.instance.as_str());
    }
    heirs
}

/// One warm copy, and when its next round is due.
struct Copy {
    restoration: Restoration,
    next_round: Instant,
}

/// The standby tasks of one instance.
pub(crate) struct Standbys {
    replicas: usize,
    instance: String,
    reader: Arc<dyn Changelog>,
    copies: BTreeMap<TaskId, Copy>,
    next_placement: Instant,
    next_step: Instant,
    /// The copy stepped last (round robin).
    cursor: Option<TaskId>,
    /// What this instance owned at the last placement.
    owned: BTreeSet<TaskId>,
}

/// What the standbys need of the instance's state, borrowed from [`super::core::Core`].
pub(crate) struct Context<'a> {
    pub compiled: &'a CompiledTopology,
    pub state: &'a StateLocation,
    pub partitions: &'a HashMap<String, i32>,
    pub clock: &'a dyn Clock,
    pub checkpoint_max_age: Duration,
}

impl Standbys {
    pub fn new(
        replicas: usize,
        instance: String,
        reader: Arc<dyn Changelog>,
        now: Instant,
    ) -> Standbys {
        Standbys {
            replicas,
            instance,
            reader,
            copies: BTreeMap::new(),
            next_placement: now,
            next_step: now,
            cursor: None,
            owned: BTreeSet::new(),
        }
    }

    pub fn task_ids(&self) -> impl Iterator<Item = &TaskId> {
        self.copies.keys()
    }

    /// Recomputes the placement when due (`owned`: what this instance runs or is assigned, never
    /// kept as a standby), then reads for one copy when standby work is due. Never fails: a copy
    /// that cannot be kept is dropped and begun again at the next placement.
    pub fn work(&mut self, context: &Context<'_>, group: &dyn Group, owned: &BTreeSet<TaskId>) {
        let now = context.clock.now();
        if *owned != self.owned {
            self.owned = owned.clone();
            self.next_placement = now;
        }
        if now >= self.next_placement {
            self.next_placement = now + PLACEMENT_EVERY;
            match group.describe() {
                Ok(Some(described)) if described.stable => {
                    let wanted: BTreeSet<TaskId> =
                        placement(&described.members, &self.instance, self.replicas)
                            .into_iter()
                            .filter(|id| {
                                !owned.contains(id)
                                    && !context.compiled.store_names_of(id).is_empty()
                            })
                            .collect();
                    self.place(context, group, &wanted);
                }
                // Assignments not final (a rebalance), or no description at hand yet.
                Ok(_) => self.next_placement = now + PLACEMENT_RETRY,
                Err(error) => {
                    tracing::debug!(%error, "could not describe the group for standby placement");
                    self.next_placement = now + PLACEMENT_AFTER_FAILURE;
                }
            }
        }
        if now >= self.next_step {
            let started = context.clock.now();
            self.step(context, group);
            let took = context.clock.now().saturating_duration_since(started);
            self.next_step = context.clock.now() + took * IDLE_FACTOR;
        }
    }

    /// Begins the copies now wanted and closes those no longer wanted (their files stay, with the
    /// positions their batches recorded, until `state_cleanup_delay_ms`).
    fn place(&mut self, context: &Context<'_>, group: &dyn Group, wanted: &BTreeSet<TaskId>) {
        let unwanted: Vec<TaskId> = self
            .copies
            .keys()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        for id in unwanted {
            tracing::info!(task = %id, "standby task no longer placed here");
            self.release(&id);
        }
        // One copy opened per call (an open may wipe or scan files), the rest at the next calls.
        let to_open: Vec<TaskId> = wanted
            .iter()
            .filter(|id| !self.copies.contains_key(*id))
            .take(2)
            .cloned()
            .collect();
        if let Some(id) = to_open.first() {
            if to_open.len() > 1 {
                self.next_placement = context.clock.now();
            }
            match Restoration::begin_standby(
                context.compiled,
                context.state,
                context.partitions,
                id.clone(),
                group,
                context.clock,
                context.checkpoint_max_age,
            ) {
                Ok(restoration) => {
                    tracing::info!(task = %id, "standby task placed here");
                    self.copies.insert(
                        id.clone(),
                        Copy {
                            restoration,
                            next_round: context.clock.now(),
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(task = %id, %error, "could not open a standby task; trying again later")
                }
            }
        }
        StandbyTasks(self.copies.len()).emit();
    }

    /// Reads for one copy: the one whose round is under way (the reader holds its partition, so
    /// no other copy may read before its round ends), or else the next one due after the cursor.
    fn step(&mut self, context: &Context<'_>, group: &dyn Group) {
        let now = context.clock.now();
        let after = self.cursor.clone();
        let under_way = after
            .as_ref()
            .filter(|id| {
                self.copies
                    .get(*id)
                    .is_some_and(|c| c.restoration.in_round())
            })
            .cloned();
        let next = under_way.or_else(|| {
            self.copies
                .iter()
                .filter(|(id, _)| after.as_ref().is_none_or(|after| *id > after))
                .chain(self.copies.iter())
                .find(|(_, copy)| copy.restoration.in_round() || copy.next_round <= now)
                .map(|(id, _)| id.clone())
        });
        let Some(id) = next else {
            return;
        };
        self.cursor = Some(id.clone());
        let application_id = &context.compiled.application_id;
        let copy = self.copies.get_mut(&id).expect("found above");
        if !copy.restoration.in_round() {
            copy.restoration.next_round();
        }
        let outcome = copy.restoration.step(
            group,
            self.reader.as_ref(),
            application_id,
            STEP_BUDGET,
            context.clock,
        );
        match outcome {
            Ok(Slice::Done) => {
                copy.next_round = now + ROUND_EVERY;
                StandbyLag {
                    task: &id,
                    records: copy.restoration.lag(),
                }
                .emit();
            }
            Ok(Slice::Progressed) => {}
            Ok(Slice::Stalled(waiting_for)) => {
                // The round ends here, so that one copy waiting does not hold back the others.
                tracing::debug!(task = %id, waiting_for, "standby read nothing this step");
                copy.next_round = now + ROUND_EVERY;
                if let Err(error) = copy.restoration.end_round(self.reader.as_ref()) {
                    tracing::warn!(task = %id, %error, "a standby task failed; closing it and placing it again later");
                    self.release(&id);
                }
            }
            Err(error) if is_changelog_truncated(&error) => {
                tracing::info!(task = %id, %error, "a standby task's changelog no longer holds its position (truncated or recreated); its copy is deleted and restored from scratch");
                self.discard(&id);
                StandbyEnded::Discarded.emit();
                // Begun again, from nothing, at once.
                self.next_placement = now;
            }
            // Anything else (a broker away, a local error): the files stay, with the positions
            // their batches carry, and the copy is opened again at a later placement.
            Err(error) => {
                tracing::warn!(task = %id, %error, "a standby task failed; closing it and placing it again later");
                self.release(&id);
            }
        }
    }

    /// Closes the copy of `id`, keeping its files and the positions they record: the task is
    /// about to run here (its restore reads only what the copy lacks), or is no longer placed here.
    pub fn release(&mut self, id: &TaskId) {
        if let Some(copy) = self.copies.remove(id) {
            copy.restoration.suspend(self.reader.as_ref());
            StandbyLag {
                task: id,
                records: 0,
            }
            .emit();
            StandbyTasks(self.copies.len()).emit();
        }
    }

    /// The task of `id` is about to run here: its copy, if one is kept, closes, so that the task's
    /// restore opens its files and reads only what the copy lacks.
    pub fn promote(&mut self, id: &TaskId) {
        if let Some(copy) = self.copies.get(id) {
            tracing::info!(task = %id, lag = copy.restoration.lag(), "standby task promoted to active");
            self.release(id);
            StandbyEnded::Promoted.emit();
        }
    }

    /// Deletes the copy of `id` and its files.
    fn discard(&mut self, id: &TaskId) {
        if let Some(copy) = self.copies.remove(id) {
            if let Err(error) = copy.restoration.discard(self.reader.as_ref()) {
                tracing::warn!(task = %id, %error, "could not delete a standby task's files");
            }
            StandbyLag {
                task: id,
                records: 0,
            }
            .emit();
            StandbyTasks(self.copies.len()).emit();
        }
    }

    /// Closes every copy (the instance stops), keeping their files and positions.
    pub fn release_all(&mut self) {
        let ids: Vec<TaskId> = self.copies.keys().cloned().collect();
        for id in ids {
            self.release(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(instance: &str, partitions: &[i32]) -> GroupMember {
        GroupMember {
            instance: instance.into(),
            member_id: format!("{instance}-5f1c"),
            partitions: partitions.iter().map(|p| ("t".to_string(), *p)).collect(),
        }
    }

    fn ids(partitions: &[i32]) -> BTreeSet<TaskId> {
        partitions
            .iter()
            .map(|p| TaskId {
                topic: "t".into(),
                partition: *p,
            })
            .collect()
    }

    #[test]
    fn each_task_is_copied_to_the_member_the_assignor_would_give_it_to() {
        // Listed out of order: every member sorts them the same way, so all agree.
        let members = [
            member("c", &[4, 5]),
            member("a", &[0, 1]),
            member("b", &[2, 3]),
        ];
        // If b leaves, its partitions go in descending order to the member with the fewest
        // partitions, ties to the lowest member id: 3 to a, then 2 to c. (Observed in 20 of 20
        // takeovers on the real broker, bench failover.)
        assert_eq!(placement(&members, "a", 1), ids(&[3, 5]));
        assert_eq!(placement(&members, "c", 1), ids(&[0, 2]));
        assert_eq!(placement(&members, "b", 1), ids(&[1, 4]));
        // With two copies among three instances, every task is on both other members.
        assert_eq!(placement(&members, "a", 2), ids(&[2, 3, 4, 5]));
    }

    #[test]
    fn the_likely_heir_is_the_member_with_the_fewest_partitions_then_the_lowest_member_id() {
        let members = [
            member("a", &[0, 1, 2]),
            member("b", &[3, 4]),
            member("c", &[5]),
            member("d", &[6, 7]),
        ];
        let mut ring: Vec<&GroupMember> = members.iter().collect();
        ring.sort_by(|x, y| x.instance.cmp(&y.instance));
        // a leaves: 2 to c (1 partition), then 1 to b (2, before d by member id), then 0 to c.
        let heirs = likely_heirs(&ring, 0);
        assert_eq!(heirs[&("t", 2)], "c");
        assert_eq!(heirs[&("t", 1)], "b");
        assert_eq!(heirs[&("t", 0)], "c");
        // The second copy, if asked for, goes to the owner's next member on the ring.
        assert!(placement(&members, "b", 2).contains(&TaskId {
            topic: "t".into(),
            partition: 0
        }));
    }

    #[test]
    fn a_member_never_keeps_its_own_tasks_however_many_replicas_are_asked_for() {
        let members = [member("a", &[0, 1]), member("b", &[2, 3])];
        assert_eq!(placement(&members, "a", 5), ids(&[2, 3]));
        assert_eq!(placement(&[member("a", &[0])], "a", 1), ids(&[]));
    }

    #[test]
    fn an_instance_not_in_the_group_keeps_nothing() {
        let members = [member("a", &[0, 1]), member("b", &[2, 3])];
        assert_eq!(placement(&members, "z", 1), ids(&[]));
        assert_eq!(placement(&members, "a", 0), ids(&[]));
    }
}
