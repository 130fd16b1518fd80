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
    /// A commit kept failing with retriable errors (the broker unreachable) past the deadline: it
    /// may still complete on the broker, so rolling back and replaying could duplicate output.
    Unresolved,
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

    /// Classifies a librdkafka error from a transactional call: fatal errors (fenced or not)
    /// need a new producer; everything else aborts the transaction. A stale group generation
    /// (KIP-447 fencing of the consumer) is abortable: the producer stays usable and the
    /// consumer rejoins on its own.
    pub(crate) fn from_kafka(error: KafkaError) -> CommitFailure {
        let kind = match &error {
            KafkaError::Transaction(e) if e.is_fatal() => match e.code() {
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch => {
                    CommitFailureKind::Fenced
                }
                _ => CommitFailureKind::Fatal,
            },
            _ => CommitFailureKind::Abortable,
        };
        CommitFailure::new(kind, error.to_string()).with_code(KafkaErrorCode::of(&error))
    }
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            CommitFailureKind::Abortable => "transaction aborted: ",
            CommitFailureKind::Fenced => "producer fenced: ",
            CommitFailureKind::Fatal => "fatal producer error: ",
            CommitFailureKind::Unresolved => "commit outcome unknown: ",
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
