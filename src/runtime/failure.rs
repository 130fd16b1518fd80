//! The one place that decides what happens after a failure **and** carries it out: wait and
//! retry, roll back to the last commit and go on, learn the outcome of a commit that may or may
//! not have happened, or stop the instance. Every failure the runtime meets (a send, a commit,
//! processing, the consumer, a restore, local state) becomes a [`Failure`] and goes through
//! [`Core::carry_out`]; the loop, the rebalance callbacks and shutdown call nothing else.
//!
//! | failure | decision |
//! |---|---|
//! | commit or send: the transaction must be aborted (`txn_requires_abort`, stale group generation) | roll back |
//! | commit or send: producer fenced, or a fatal producer error | roll back with a new producer |
//! | commit: outcome unknown (not retriable, not abortable, or retriable past `task_timeout_ms`) | fence with a new producer, read the committed offsets, apply or roll back |
//! | commit or send: a record the broker never accepts (size, ACL, topic gone) | abort, stop |
//! | consumer: brokers unreachable | wait (readiness false), stop past `task_timeout_ms` |
//! | restore: a slice read nothing (a changelog's broker away, an offset not stable yet) | wait, stop past `task_timeout_ms` of it |
//! | consumer: fatal (fenced static member) | abort, stop |
//! | consumer: anything else | log and go on (librdkafka recovers) |
//! | processing: a record that fails under `on_decode_error = "fail"` | abort, stop at once |
//! | local state (RocksDB, state directory) or a restore that cannot go on | abort, stop |

use super::core::{Core, StopDecided};
use super::ports::Group;
use crate::kafka::{CommitFailure, CommitFailureKind, KafkaClientError};
use crate::state::StateError;
use crate::task::TaskError;

/// Every failure the runtime handles.
#[derive(Debug)]
pub(crate) enum Failure {
    Commit(CommitFailure),
    Consumer(KafkaClientError),
    Processing(TaskError),
    State(StateError),
    /// A restore slice read nothing; what it waits for.
    RestoreStalled(String),
    /// Anything that stops the instance outright (a restore that cannot go on).
    Other(crate::Error),
}

/// Transient trouble waited out, each with its own clock: the consumer finding no broker, a
/// restore reading nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Waiting {
    Consume,
    Restore,
}

/// What to do about a [`Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Transient: keep going; librdkafka reconnects. Past `task_timeout_ms` of it, stop.
    Wait,
    /// Log it and go on.
    Ignore,
    /// Abort the open transaction, return every task to its last commit and replay from there.
    /// `new_producer`: the producer cannot go on and is recreated first.
    RollBack { new_producer: bool },
    /// The last commit may or may not have happened. A new producer on the same transactional id
    /// fences the old one (the coordinator completes or aborts its transaction), and the
    /// committed offsets, read once stable, tell which: apply the flush, or roll back.
    LearnOutcome,
    /// Stop the instance, committing nothing more. `abort`: abort the open transaction first.
    Stop { abort: bool },
}

pub(crate) fn decide(failure: &Failure) -> Decision {
    match failure {
        Failure::Commit(commit) => match commit.kind {
            CommitFailureKind::Abortable => Decision::RollBack {
                new_producer: false,
            },
            CommitFailureKind::Fenced | CommitFailureKind::Fatal => {
                Decision::RollBack { new_producer: true }
            }
            CommitFailureKind::Permanent => Decision::Stop { abort: true },
            CommitFailureKind::Unknown => Decision::LearnOutcome,
        },
        Failure::Consumer(KafkaClientError::Unreachable { .. }) | Failure::RestoreStalled(_) => {
            Decision::Wait
        }
        Failure::Consumer(KafkaClientError::Fatal { .. }) => Decision::Stop { abort: true },
        Failure::Consumer(_) => Decision::Ignore,
        Failure::Processing(_) | Failure::State(_) | Failure::Other(_) => {
            Decision::Stop { abort: true }
        }
    }
}

/// On the way out (the instance stops), a failed last commit is never retried: whether its open
/// transaction is aborted. Not when its outcome is unknown: it may still complete, and the next
/// owner's stable offset fetch sees which.
pub(crate) fn abort_when_stopping(failure: &Failure) -> bool {
    !matches!(
        decide(failure),
        Decision::Stop { abort: false } | Decision::LearnOutcome
    )
}

impl Core {
    /// Carries out what [`decide`] chose for `failure`. `Err` means: stop with this error (the
    /// decision is also kept in [`Core::stop`], so a stop decided inside a rebalance callback
    /// takes effect before anything else is committed). Unless the decision is to wait or go on,
    /// a batch on the workers is finished first (its own failure carried out too), since a
    /// rollback or a stop concerns every task.
    pub fn carry_out(&mut self, group: &dyn Group, failure: Failure) -> Result<(), crate::Error> {
        // Waiting and going on concern no task: the batch stays on the workers.
        if !matches!(decide(&failure), Decision::Wait | Decision::Ignore) {
            if let Some(unfinished) = self.finish_batch() {
                self.carry_out_now(group, unfinished)?;
            }
        }
        self.carry_out_now(group, failure)
    }

    fn carry_out_now(&mut self, group: &dyn Group, failure: Failure) -> Result<(), crate::Error> {
        if self.stopping() {
            tracing::warn!(?failure, "failure while stopping");
            return Ok(());
        }
        match decide(&failure) {
            Decision::Ignore => {
                tracing::warn!(?failure, "going on after a failure");
                Ok(())
            }
            Decision::Wait => match failure {
                Failure::RestoreStalled(waiting_for) => {
                    // Said at the 16th stalled slice in a row (about 3 s), then at powers of two:
                    // a restore that reads nothing holds its partition and every restore behind it.
                    let stalls = self.stalled_slices.saturating_add(1);
                    self.stalled_slices = stalls;
                    if stalls >= 16 && stalls.is_power_of_two() {
                        let since = self.waiting_since.get(&Waiting::Restore).copied();
                        tracing::warn!(
                            waiting_for,
                            slices = stalls,
                            seconds = since.map_or(0.0, |s| self.clock.now().saturating_duration_since(s).as_secs_f64()),
                            "a restore has read nothing for a while; waiting, up to task_timeout_ms (logged at powers of two)"
                        );
                    } else {
                        tracing::debug!(waiting_for, "restore read nothing this slice; waiting");
                    }
                    self.wait_out(Waiting::Restore, waiting_for)
                }
                failure => {
                    tracing::warn!(?failure, "broker unreachable; waiting");
                    self.wait_out(Waiting::Consume, "consume".into())
                }
            },
            Decision::RollBack { new_producer } => {
                tracing::warn!(?failure, "rolling back to the last commit");
                // A commit still in flight ends first. If it failed too, its failure is carried
                // out (a rollback covers both, a stop or an unknown outcome takes precedence).
                match self.committer.settle(&mut self.tasks, true) {
                    Ok(()) => self.roll_back(group, new_producer),
                    Err(earlier) => {
                        let earlier = Failure::from(earlier);
                        match decide(&earlier) {
                            Decision::RollBack {
                                new_producer: needed,
                            } => self.roll_back(group, new_producer || needed),
                            _ => self.carry_out_now(group, earlier),
                        }
                    }
                }
            }
            Decision::LearnOutcome => {
                tracing::warn!(
                    ?failure,
                    "the commit's outcome is unknown; fencing it and reading the committed offsets"
                );
                match self.committer.learn_outcome(&mut self.tasks, group) {
                    Ok(true) => {
                        tracing::info!("the commit with an unknown outcome did commit");
                        Ok(())
                    }
                    Ok(false) => {
                        tracing::info!("the commit with an unknown outcome was aborted");
                        self.roll_back(group, false)
                    }
                    Err(error) => self.stop_with(error.into(), false),
                }
            }
            Decision::Stop { abort } => self.stop_with(failure.into_error(), abort),
        }
    }

    /// Drops every task's work since the last commit, without a failure to carry out (partitions
    /// were lost). A commit in flight ends first; if it failed, that failure is carried out.
    pub fn drop_uncommitted(&mut self, group: &dyn Group) -> Result<(), crate::Error> {
        if let Err(earlier) = self.committer.settle(&mut self.tasks, true) {
            self.carry_out_now(group, Failure::from(earlier))?;
        }
        if self.stopping() {
            return Ok(());
        }
        self.roll_back(group, false)
    }

    /// Returns every task to its last commit; the open transaction is aborted first.
    fn roll_back(&mut self, group: &dyn Group, new_producer: bool) -> Result<(), crate::Error> {
        match self
            .committer
            .roll_back(&mut self.tasks, group, new_producer, &self.seeks)
        {
            Ok(()) => Ok(()),
            Err(error) => self.stop_with(error, true),
        }
    }

    /// Decides to stop: from here on nothing is committed, and the loop stops with `error`.
    fn stop_with(&mut self, error: crate::Error, abort: bool) -> Result<(), crate::Error> {
        tracing::error!(%error, abort, "stopping after a failure");
        self.stop = Some(StopDecided { error: None, abort });
        Err(error)
    }

    /// The trouble `what` is over (the consumer reached a broker, a restore read again).
    pub fn recovered(&mut self, what: Waiting) {
        self.waiting_since.remove(&what);
        if what == Waiting::Restore {
            self.stalled_slices = 0;
        }
    }

    /// Transient trouble: fine for up to `task_timeout_ms` in a row, then stop, naming what
    /// was being done.
    fn wait_out(&mut self, what: Waiting, operation: String) -> Result<(), crate::Error> {
        let now = self.clock.now();
        let since = *self.waiting_since.entry(what).or_insert(now);
        if now.saturating_duration_since(since) > self.task_timeout {
            let error = crate::Error::Kafka(KafkaClientError::GaveUp {
                operation,
                seconds: self.task_timeout.as_secs(),
            });
            return self.stop_with(error, true);
        }
        Ok(())
    }
}

impl Failure {
    /// The error the instance stops with.
    pub fn into_error(self) -> crate::Error {
        match self {
            Failure::Commit(failure) => crate::Error::Commit(failure),
            Failure::Consumer(error) => crate::Error::Kafka(error),
            Failure::Processing(TaskError::State(error)) | Failure::State(error) => error.into(),
            Failure::Processing(TaskError::DecodeFailed {
                task,
                offset,
                reason,
            }) => crate::Error::DecodeFailed {
                source_name: task.topic.clone(),
                topic: task.topic,
                partition: task.partition,
                offset,
                reason,
            },
            Failure::RestoreStalled(waiting_for) => crate::Error::Kafka(KafkaClientError::GaveUp {
                operation: waiting_for,
                seconds: 0,
            }),
            Failure::Other(error) => error,
        }
    }
}

impl From<super::commit::CommitError> for Failure {
    fn from(error: super::commit::CommitError) -> Failure {
        match error {
            super::commit::CommitError::Kafka(failure) => Failure::Commit(failure),
            super::commit::CommitError::State(error) => Failure::State(error),
        }
    }
}

impl From<super::commit::CommitError> for crate::Error {
    fn from(error: super::commit::CommitError) -> crate::Error {
        Failure::from(error).into_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(kind: CommitFailureKind) -> Decision {
        decide(&Failure::Commit(CommitFailure::new(kind, "x")))
    }

    #[test]
    fn commit_failures_follow_librdkafkas_transactional_contract() {
        assert_eq!(
            commit(CommitFailureKind::Abortable),
            Decision::RollBack {
                new_producer: false
            }
        );
        assert_eq!(
            commit(CommitFailureKind::Fenced),
            Decision::RollBack { new_producer: true }
        );
        assert_eq!(
            commit(CommitFailureKind::Fatal),
            Decision::RollBack { new_producer: true }
        );
        assert_eq!(
            commit(CommitFailureKind::Permanent),
            Decision::Stop { abort: true }
        );
        assert_eq!(
            commit(CommitFailureKind::Unknown),
            Decision::LearnOutcome,
            "a commit that may have happened is neither aborted nor replayed blindly"
        );
    }

    #[test]
    fn a_last_commit_with_an_unknown_outcome_is_not_aborted_on_the_way_out() {
        let failure = |kind| Failure::Commit(CommitFailure::new(kind, "x"));
        assert!(!abort_when_stopping(&failure(CommitFailureKind::Unknown)));
        assert!(abort_when_stopping(&failure(CommitFailureKind::Abortable)));
        assert!(abort_when_stopping(&failure(CommitFailureKind::Permanent)));
    }

    #[test]
    fn consumer_failures_wait_stop_or_go_on() {
        let (operation, reason, code) = (String::from("poll"), String::from("x"), None);
        let unreachable = KafkaClientError::Unreachable {
            operation: operation.clone(),
            reason: reason.clone(),
            code,
        };
        let fatal = KafkaClientError::Fatal {
            operation: operation.clone(),
            reason: reason.clone(),
            code,
        };
        let other = KafkaClientError::Operation {
            operation,
            reason,
            code,
        };
        let decision = |error| decide(&Failure::Consumer(error));
        assert_eq!(decision(unreachable), Decision::Wait);
        assert_eq!(decision(fatal), Decision::Stop { abort: true });
        assert_eq!(decision(other), Decision::Ignore);
    }

    #[test]
    fn a_record_that_fails_processing_stops_after_aborting() {
        let failure = Failure::Processing(TaskError::DecodeFailed {
            task: crate::task::TaskId {
                topic: "t".into(),
                partition: 0,
            },
            offset: 7,
            reason: "bad".into(),
        });
        assert_eq!(decide(&failure), Decision::Stop { abort: true });
        assert!(failure.into_error().to_string().contains("t[0]@7"));
    }
}
