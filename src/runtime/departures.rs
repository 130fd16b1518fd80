//! Instances that left the group, and the transactions they left open.
//!
//! An instance killed mid-transaction leaves it open on the broker: its records on the output,
//! changelog and repartition topics hold back the last stable offset, and pending offsets hold
//! back the stable offset fetch, until the coordinator aborts it at `transaction.timeout.ms`
//! (plus up to `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s by default).
//! The instances that take its tasks over would wait that long to restore and resume.
//!
//! Every transactional id is derived from an instance id ([`super::transactional_id`]), and the
//! group's description names each member's instance (its `client.id`). So an instance watches
//! the group's members: when one it saw before is gone, it fences that instance's transactional
//! id, and the coordinator aborts the open transaction at once. The coordinator removes a member
//! the moment its session expires, before the rebalance that hands its partitions on, so a look
//! every 500 ms (descriptions in any state count) usually fences it before the survivors are
//! assigned its partitions, and they find its offsets stable and its changelogs complete. It also looks
//! at once when its own assignment changes (a member leaving is what moves partitions to it).
//!
//! A description that does not list this instance is not trusted (this instance's own session
//! may have expired, and the group then looks empty): nothing is fenced from it.
//!
//! Fencing an instance that is in fact alive is safe: it is no longer in the group, so KIP-447's
//! generation check already keeps it from committing; its next transaction fails as fenced, and
//! it rejoins with a fresh producer.

use super::ports::{Group, Transactions};
use crate::telemetry::events::DepartedInstanceFenced;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How often the group's latest description is looked at when nothing changes here: a departure
/// is seen within about this of the coordinator removing the member, usually before the
/// survivors (heartbeating every 500 ms) have rejoined.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// How soon to look again when no description was at hand (one is then being fetched).
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// How often this instance's own assignment is compared (not at every turn of the loop).
const CHECK_ASSIGNMENT_EVERY: Duration = Duration::from_millis(100);

pub(crate) struct Departures {
    /// This instance's id: never fenced from here.
    me: String,
    /// The members seen at the last look.
    known: BTreeSet<String>,
    /// This instance's assignment at the last look.
    assignment: BTreeSet<(String, i32)>,
    next_look: Instant,
    next_assignment_check: Instant,
}

impl Departures {
    pub fn new(me: String, now: Instant) -> Departures {
        Departures {
            me,
            known: BTreeSet::new(),
            assignment: BTreeSet::new(),
            next_look: now,
            next_assignment_check: now,
        }
    }

    /// Looks at the group when due, fencing the instances gone since the last look. Never
    /// fails: a description that cannot be had is tried again later.
    pub fn watch(&mut self, group: &dyn Group, transactions: &dyn Transactions, now: Instant) {
        if now >= self.next_assignment_check {
            self.next_assignment_check = now + CHECK_ASSIGNMENT_EVERY;
            let assignment: BTreeSet<(String, i32)> = group.assignment().into_iter().collect();
            if assignment != self.assignment {
                self.assignment = assignment;
                self.next_look = now;
            }
        }
        if now < self.next_look {
            return;
        }
        match group.describe() {
            Ok(Some(described)) => {
                self.next_look = now + LOOK_EVERY;
                let current: BTreeSet<String> =
                    described.members.into_iter().map(|m| m.instance).collect();
                if !current.contains(&self.me) {
                    return;
                }
                for departed in self.departed(&current) {
                    DepartedInstanceFenced {
                        instance: &departed,
                    }
                    .emit();
                    transactions.fence(&departed);
                }
                self.known = current;
            }
            Ok(None) => self.next_look = now + LOOK_AGAIN,
            Err(error) => {
                tracing::debug!(%error, "could not describe the group to watch for departed instances");
                self.next_look = now + LOOK_EVERY;
            }
        }
    }

    /// The instances seen before and not in `current`, this one aside.
    fn departed(&self, current: &BTreeSet<String>) -> Vec<String> {
        self.known
            .difference(current)
            .filter(|instance| **instance != self.me)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{KafkaClientError, PartitionOffset};
    use crate::runtime::ports::{GroupDescription, GroupMember, Membership, Transaction};
    use std::sync::Mutex;

    /// A group whose description and own assignment the test sets.
    #[derive(Default)]
    struct Described {
        /// `None`: no description at hand yet; otherwise (stable, members).
        members: Mutex<Option<(bool, Vec<String>)>>,
        assignment: Mutex<Vec<(String, i32)>>,
        described: Mutex<usize>,
    }

    impl Group for Described {
        fn committed(
            &self,
            _partitions: &[(String, i32)],
            _timeout: Duration,
        ) -> Result<Vec<PartitionOffset>, KafkaClientError> {
            unreachable!()
        }
        fn seek(
            &self,
            _topic: &str,
            _partition: i32,
            _offset: Option<i64>,
        ) -> Result<(), KafkaClientError> {
            unreachable!()
        }
        fn pause(&self, _partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
            unreachable!()
        }
        fn resume(&self, _partitions: &[(String, i32)]) -> Result<(), KafkaClientError> {
            unreachable!()
        }
        fn watermarks(
            &self,
            _topic: &str,
            _partition: i32,
        ) -> Result<(i64, i64), KafkaClientError> {
            unreachable!()
        }
        fn assignment(&self) -> Vec<(String, i32)> {
            self.assignment.lock().unwrap().clone()
        }
        fn membership(&self) -> Option<Membership> {
            None
        }
        fn commit_offsets(&self, _offsets: &[PartitionOffset]) -> Result<(), KafkaClientError> {
            unreachable!()
        }
        fn describe(&self) -> Result<Option<GroupDescription>, KafkaClientError> {
            *self.described.lock().unwrap() += 1;
            Ok(self
                .members
                .lock()
                .unwrap()
                .as_ref()
                .map(|(stable, names)| GroupDescription {
                    stable: *stable,
                    members: names
                        .iter()
                        .map(|name| GroupMember {
                            instance: name.clone(),
                            member_id: name.clone(),
                            partitions: Vec::new(),
                        })
                        .collect(),
                }))
        }
    }

    #[derive(Default)]
    struct Fences(Mutex<Vec<String>>);

    impl Transactions for Fences {
        fn open(&self) -> Result<Box<dyn Transaction>, KafkaClientError> {
            unreachable!()
        }
        fn transactional(&self) -> bool {
            true
        }
        fn fence(&self, instance: &str) {
            self.0.lock().unwrap().push(instance.to_string());
        }
    }

    fn set(group: &Described, stable: bool, members: &[&str]) {
        *group.members.lock().unwrap() =
            Some((stable, members.iter().map(|s| s.to_string()).collect()));
    }

    fn fenced(fences: &Fences) -> Vec<String> {
        fences.0.lock().unwrap().clone()
    }

    #[test]
    fn an_instance_gone_from_the_group_is_fenced_once_and_never_this_one() {
        let group = Described::default();
        let fences = Fences::default();
        let start = Instant::now();
        let mut departures = Departures::new("a".into(), start);
        set(&group, true, &["a", "b", "c"]);
        departures.watch(&group, &fences, start);
        assert!(fenced(&fences).is_empty(), "nothing seen before");
        // c leaves; the next look is not due yet.
        set(&group, true, &["a", "b"]);
        departures.watch(&group, &fences, start + LOOK_EVERY / 2);
        assert!(fenced(&fences).is_empty());
        departures.watch(&group, &fences, start + LOOK_EVERY);
        assert_eq!(fenced(&fences), ["c"]);
        // Seen gone once, fenced once.
        set(&group, true, &["a", "b"]);
        departures.watch(&group, &fences, start + LOOK_EVERY * 2);
        assert_eq!(fenced(&fences), ["c"]);
        // A description without this instance (its own session expired: the group looks empty
        // or strange) fences nobody, and is not remembered.
        set(&group, true, &[]);
        departures.watch(&group, &fences, start + LOOK_EVERY * 3);
        set(&group, true, &["b"]);
        departures.watch(&group, &fences, start + LOOK_EVERY * 4);
        assert_eq!(fenced(&fences), ["c"]);
        // Back in the group, the one still gone since the last trusted look is fenced.
        set(&group, true, &["a", "c"]);
        departures.watch(&group, &fences, start + LOOK_EVERY * 5);
        assert_eq!(fenced(&fences), ["c", "b"]);
    }

    #[test]
    fn a_member_removed_by_the_coordinator_is_fenced_while_the_group_still_rebalances() {
        let group = Described::default();
        let fences = Fences::default();
        let start = Instant::now();
        let mut departures = Departures::new("a".into(), start);
        set(&group, true, &["a", "b", "c"]);
        departures.watch(&group, &fences, start);
        // b's session expires: the coordinator removes it and starts a rebalance, which lasts
        // until the survivors rejoin. b is fenced at the next look, before a is assigned b's
        // partitions.
        set(&group, false, &["a", "c"]);
        departures.watch(&group, &fences, start + LOOK_EVERY);
        assert_eq!(fenced(&fences), ["b"]);
        assert!(group.assignment.lock().unwrap().is_empty());
    }

    #[test]
    fn a_change_of_the_own_assignment_looks_at_once() {
        let group = Described::default();
        let fences = Fences::default();
        let start = Instant::now();
        let mut departures = Departures::new("a".into(), start);
        set(&group, true, &["a", "b"]);
        departures.watch(&group, &fences, start);
        // b leaves and a is assigned its partitions; no description is at hand at first.
        *group.members.lock().unwrap() = None;
        *group.assignment.lock().unwrap() = vec![("in".into(), 1)];
        departures.watch(&group, &fences, start + CHECK_ASSIGNMENT_EVERY);
        assert_eq!(*group.described.lock().unwrap(), 2, "looked at once");
        assert!(fenced(&fences).is_empty());
        set(&group, true, &["a"]);
        let changed = start + CHECK_ASSIGNMENT_EVERY;
        departures.watch(&group, &fences, changed + LOOK_AGAIN / 2);
        assert!(
            fenced(&fences).is_empty(),
            "asked again only after a moment"
        );
        departures.watch(&group, &fences, changed + LOOK_AGAIN);
        assert_eq!(fenced(&fences), ["b"]);
        assert_eq!(*group.described.lock().unwrap(), 3);
        assert!(
            changed + LOOK_AGAIN < start + LOOK_EVERY,
            "sooner than the periodic look"
        );
    }
}
