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
//! id, and the coordinator aborts the open transaction at once. It looks every few seconds, and
//! at once when its own assignment changes (a member leaving is what moves partitions to it).
//!
//! Fencing an instance that is in fact alive is safe: it is no longer in the group, so KIP-447's
//! generation check already keeps it from committing; its next transaction fails as fenced, and
//! it rejoins with a fresh producer.

use super::ports::{Group, Transactions};
use crate::telemetry::events::DepartedInstanceFenced;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How often the group is described when nothing changes here.
const LOOK_EVERY: Duration = Duration::from_secs(3);
/// How soon to look again while the group rebalances (its assignments are not final).
const LOOK_WHILE_REBALANCING: Duration = Duration::from_millis(200);
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
        match group.members() {
            Ok(Some(members)) => {
                self.next_look = now + LOOK_EVERY;
                let current: BTreeSet<String> = members.into_iter().map(|m| m.instance).collect();
                for departed in self.departed(&current) {
                    DepartedInstanceFenced {
                        instance: &departed,
                    }
                    .emit();
                    transactions.fence(&departed);
                }
                self.known = current;
            }
            Ok(None) => self.next_look = now + LOOK_WHILE_REBALANCING,
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
    use crate::runtime::ports::{GroupMember, Membership, Transaction};
    use std::sync::Mutex;

    /// A group whose members and own assignment the test sets.
    #[derive(Default)]
    struct Described {
        members: Mutex<Option<Vec<String>>>,
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
        fn members(&self) -> Result<Option<Vec<GroupMember>>, KafkaClientError> {
            *self.described.lock().unwrap() += 1;
            Ok(self.members.lock().unwrap().as_ref().map(|names| {
                names
                    .iter()
                    .map(|name| GroupMember {
                        instance: name.clone(),
                        partitions: Vec::new(),
                    })
                    .collect()
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

    fn set(group: &Described, members: Option<&[&str]>) {
        *group.members.lock().unwrap() = members.map(|m| m.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn an_instance_gone_from_the_group_is_fenced_once_and_never_this_one() {
        let group = Described::default();
        let fences = Fences::default();
        let start = Instant::now();
        let mut departures = Departures::new("a".into(), start);
        set(&group, Some(&["a", "b", "c"]));
        departures.watch(&group, &fences, start);
        assert!(fences.0.lock().unwrap().is_empty(), "nothing seen before");
        // c leaves; the next look is not due yet.
        set(&group, Some(&["a", "b"]));
        departures.watch(&group, &fences, start + Duration::from_secs(1));
        assert!(fences.0.lock().unwrap().is_empty());
        departures.watch(&group, &fences, start + LOOK_EVERY);
        assert_eq!(*fences.0.lock().unwrap(), ["c"]);
        // Seen gone once, fenced once; this instance dropped from the group is never fenced.
        set(&group, Some(&["b"]));
        departures.watch(&group, &fences, start + LOOK_EVERY * 2);
        assert_eq!(*fences.0.lock().unwrap(), ["c"]);
    }

    #[test]
    fn a_change_of_the_own_assignment_looks_at_once_and_a_rebalance_soon_after() {
        let group = Described::default();
        let fences = Fences::default();
        let start = Instant::now();
        let mut departures = Departures::new("a".into(), start);
        set(&group, Some(&["a", "b"]));
        departures.watch(&group, &fences, start);
        // b is killed: while the group rebalances nothing can be said; once a is assigned b's
        // partitions, it looks at once, long before the periodic look.
        set(&group, None);
        *group.assignment.lock().unwrap() = vec![("in".into(), 1)];
        departures.watch(&group, &fences, start + CHECK_ASSIGNMENT_EVERY);
        assert!(fences.0.lock().unwrap().is_empty());
        assert_eq!(*group.described.lock().unwrap(), 2, "looked at once");
        set(&group, Some(&["a"]));
        let rebalancing = start + CHECK_ASSIGNMENT_EVERY;
        departures.watch(&group, &fences, rebalancing + LOOK_WHILE_REBALANCING / 2);
        assert!(
            fences.0.lock().unwrap().is_empty(),
            "200 ms after a rebalance"
        );
        departures.watch(&group, &fences, rebalancing + LOOK_WHILE_REBALANCING);
        assert_eq!(*fences.0.lock().unwrap(), ["b"]);
        assert_eq!(*group.described.lock().unwrap(), 3);
    }
}
