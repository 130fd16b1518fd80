//! The one place that decides what happens after a failure: wait and retry, roll back to the
//! last commit and go on, or stop the instance. Every failure the runtime meets (a send, a
//! commit, processing, the consumer, a restore, local state) is turned into a [`Failure`] and
//! passed through [`decide`]; the engine and the commit coordinator only carry decisions out.
//!
//! | failure | decision |
//! |---|---|
//! | commit or send: abortable (aborted transaction, stale group generation) | roll back |
//! | commit or send: producer fenced, or a fatal producer error | roll back with a new producer |
//! | commit or send: a record the broker never accepts (size, ACL, topic gone) | abort, stop |
//! | commit: retriable errors past `task_timeout_ms` (outcome unknown) | stop without aborting |
//! | consumer: brokers unreachable | wait (readiness false), stop past `task_timeout_ms` |
//! | consumer: fatal (fenced static member) | abort, stop |
//! | consumer: anything else | log and go on (librdkafka recovers) |
//! | processing: a record that fails under `on_decode_error = "fail"` | abort, stop |
//! | local state (RocksDB, state directory) or a restore that cannot go on | abort, stop |

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
    /// Anything that stops the instance outright (a restore that cannot go on, a rebalance
    /// callback that could not close its tasks).
    Other(crate::Error),
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
    /// Stop the instance, committing nothing more. `abort`: abort the open transaction first
    /// (not when its outcome is unknown: it may still commit, and the next owner sees which).
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
            CommitFailureKind::Unresolved => Decision::Stop { abort: false },
        },
        Failure::Consumer(KafkaClientError::Unreachable { .. }) => Decision::Wait,
        Failure::Consumer(KafkaClientError::Fatal { .. }) => Decision::Stop { abort: true },
        Failure::Consumer(_) => Decision::Ignore,
        Failure::Processing(_) | Failure::State(_) | Failure::Other(_) => {
            Decision::Stop { abort: true }
        }
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
            commit(CommitFailureKind::Unresolved),
            Decision::Stop { abort: false },
            "a commit that may still complete is never aborted"
        );
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
