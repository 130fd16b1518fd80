//! How a commit failed: what kind of failure it is (which decides what the runtime does next, see
//! `runtime::failure`) and the librdkafka error code behind it, kept for logs and for the user.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// librdkafka's error code, by name (e.g. `MessageSizeTooLarge`), without exposing rdkafka's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KafkaErrorCode(pub(crate) RDKafkaErrorCode);

impl KafkaErrorCode {
    pub(crate) fn of(error: &KafkaError) -> Option<KafkaErrorCode> {
        error.rdkafka_error_code().map(KafkaErrorCode)
    }
}

impl std::fmt::Display for KafkaErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// librdkafka's transactional error contract, as eddy acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFailureKind {
    /// The transaction was aborted (or must be): roll tasks back to the last commit and go on.
    Abortable,
    /// Another producer or a newer group generation took over: this instance lost its tasks, and
    /// the producer must be recreated.
    Fenced,
    /// The producer cannot continue; it must be recreated.
    Fatal,
    /// The commit may or may not have happened: `commit_transaction` failed with an error that is
    /// neither retriable nor abortable nor a fencing, or stayed retriable past `task_timeout_ms`.
    /// EndTxn may be on its way; rolling back blindly could duplicate output, going on blindly
    /// could lose it. The runtime fences the transaction and reads the committed offsets.
    Unknown,
    /// A record the broker will never accept (too large, not authorized, topic gone): replaying
    /// would fail the same way forever.
    Permanent,
}

/// A failed send or commit.
#[derive(Clone, Debug)]
pub struct CommitFailure {
    pub kind: CommitFailureKind,
    /// librdkafka's code, when the failure came from librdkafka.
    pub code: Option<KafkaErrorCode>,
    pub reason: String,
}

impl CommitFailure {
    pub fn new(kind: CommitFailureKind, reason: impl Into<String>) -> CommitFailure {
        CommitFailure {
            kind,
            code: None,
            reason: reason.into(),
        }
    }

    pub fn abortable(reason: impl Into<String>) -> CommitFailure {
        CommitFailure::new(CommitFailureKind::Abortable, reason)
    }

    pub(crate) fn with_code(mut self, code: Option<KafkaErrorCode>) -> CommitFailure {
        self.code = code;
        self
    }

    /// Classifies a librdkafka error from a transactional call, following its contract
    /// (`rdkafka.h`): only `txn_requires_abort()` means abort; a fencing needs a new producer and
    /// means the transaction was aborted; every other error librdkafka says to treat as fatal.
    /// For `commit_transaction` (`committing`) such an error leaves the outcome unknown, since
    /// EndTxn may already be on its way; for the calls before it the transaction cannot have
    /// committed, so a new producer and a rollback are enough. A stale group generation
    /// (KIP-447 fencing of the consumer) is abortable: the producer stays usable and the
    /// consumer rejoins on its own. Retriable errors are retried by the caller, not classified.
    pub(crate) fn from_kafka(error: KafkaError, committing: bool) -> CommitFailure {
        let kind = classify(transaction_flags(&error), committing);
        CommitFailure::new(kind, error.to_string()).with_code(KafkaErrorCode::of(&error))
    }
}

/// What librdkafka says of a transactional error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransactionFlags {
    pub fenced: bool,
    pub fatal: bool,
    pub requires_abort: bool,
}

fn transaction_flags(error: &KafkaError) -> TransactionFlags {
    match error {
        KafkaError::Transaction(e) => TransactionFlags {
            fenced: matches!(
                e.code(),
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ),
            fatal: e.is_fatal(),
            requires_abort: e.txn_requires_abort(),
        },
        // Not from a transactional call's error object: no flags, which librdkafka says to
        // treat as fatal.
        _ => TransactionFlags::default(),
    }
}

pub(crate) fn classify(flags: TransactionFlags, committing: bool) -> CommitFailureKind {
    if flags.fenced {
        CommitFailureKind::Fenced
    } else if flags.requires_abort && !flags.fatal {
        CommitFailureKind::Abortable
    } else if committing {
        CommitFailureKind::Unknown
    } else {
        CommitFailureKind::Fatal
    }
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            CommitFailureKind::Abortable => "transaction aborted: ",
            CommitFailureKind::Fenced => "producer fenced: ",
            CommitFailureKind::Fatal => "fatal producer error: ",
            CommitFailureKind::Unknown => "commit outcome unknown: ",
            CommitFailureKind::Permanent => "",
        };
        write!(f, "{what}{}", self.reason)?;
        if let Some(code) = self.code {
            write!(f, " [librdkafka {code}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommitFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(fenced: bool, fatal: bool, requires_abort: bool) -> TransactionFlags {
        TransactionFlags {
            fenced,
            fatal,
            requires_abort,
        }
    }

    #[test]
    fn only_txn_requires_abort_means_abort() {
        assert_eq!(
            classify(flags(false, false, true), true),
            CommitFailureKind::Abortable
        );
        assert_eq!(
            classify(flags(false, false, true), false),
            CommitFailureKind::Abortable
        );
    }

    #[test]
    fn a_commit_error_without_flags_leaves_the_outcome_unknown() {
        // e.g. `__STATE`: librdkafka says treat it as fatal; EndTxn may have been sent.
        assert_eq!(
            classify(flags(false, false, false), true),
            CommitFailureKind::Unknown
        );
        assert_eq!(
            classify(flags(false, true, false), true),
            CommitFailureKind::Unknown
        );
        // Before the commit the transaction cannot have committed: a new producer suffices.
        assert_eq!(
            classify(flags(false, false, false), false),
            CommitFailureKind::Fatal
        );
    }

    #[test]
    fn a_fenced_producer_is_fenced_whatever_the_call() {
        assert_eq!(
            classify(flags(true, true, false), true),
            CommitFailureKind::Fenced
        );
        assert_eq!(
            classify(flags(true, true, false), false),
            CommitFailureKind::Fenced
        );
    }
}
