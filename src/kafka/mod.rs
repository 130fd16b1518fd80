//! Every rdkafka call lives under this module; the rest of eddy sees only the types defined here.

mod admin;
mod client_config;
mod commit_failure;
mod consumer;
mod group_members;
mod mock;
mod preflight;
mod producer;
mod restore;

pub use admin::{CommittedOffsets, InternalTopic, TopicAdmin};
pub use client_config::ClientSettings;
pub use commit_failure::{CommitFailure, CommitFailureKind, KafkaErrorCode};
pub use consumer::{
    ConsumedRecord, GroupConsumer, GroupHandle, GroupMetadata, PartitionOffset, RebalanceListener,
};
pub use group_members::{DescribedGroup, DescribedMember};
pub use mock::EmbeddedCluster;
pub use preflight::check_connection;
pub use producer::RecordProducer;
pub use restore::{ChangelogReader, ReadPosition, ReadRecord, TopicTail};

/// The librdkafka release linked in, e.g. `2.12.1`.
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// Errors from Kafka clients, named by the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaClientError {
    #[error("could not create the Kafka {client}: {reason}. Check `bootstrap_servers` and the [kafka] settings")]
    Create {
        client: &'static str,
        reason: String,
    },
    #[error("Kafka {operation} failed: {reason}")]
    Operation {
        operation: String,
        reason: String,
        /// librdkafka's error code, when librdkafka reported one.
        code: Option<KafkaErrorCode>,
    },
    /// The client cannot go on (e.g. another instance took this static member's
    /// `group.instance.id`): the instance must stop.
    #[error("Kafka {operation} failed fatally: {reason}. If another instance uses the same group_instance_id, give each instance its own")]
    Fatal {
        operation: String,
        reason: String,
        code: Option<KafkaErrorCode>,
    },
    /// The broker is briefly unreachable; librdkafka reconnects by itself.
    #[error("Kafka {operation}: broker unreachable ({reason}); retrying")]
    Unreachable {
        operation: String,
        reason: String,
        code: Option<KafkaErrorCode>,
    },
    /// The brokers refused the credentials.
    #[error("the brokers refused eddy's credentials: SASL mechanism {mechanism}, user `{user}` ({reason}). Check `sasl.username` and `sasl.password` (or `sasl.password.file`) under [kafka], and that the user exists for this mechanism")]
    Authentication {
        mechanism: String,
        user: String,
        reason: String,
    },
    /// The TLS handshake with the brokers failed.
    #[error("TLS with the brokers failed ({reason}). Check `ssl.ca.location` (the CA that signed the brokers' certificates) and `security.protocol` under [kafka]")]
    Tls { reason: String },
    /// Retriable failures lasted past `task_timeout_ms`.
    #[error("Kafka {operation}: no progress for {seconds}s because the brokers were unreachable or kept failing; stopping. Check that the brokers are up and reachable from this instance (bootstrap_servers, [kafka] security settings), or raise task_timeout_ms")]
    GaveUp { operation: String, seconds: u64 },
    /// A changelog no longer holds the offset a read of it had reached: records below the
    /// changelog's new start were deleted (the topic was truncated or recreated). The local copy
    /// being built from it is incomplete and must be restored from scratch.
    #[error("changelog `{topic}` partition {partition} no longer holds the records a restore had reached: they were deleted (the topic was truncated or recreated); its local state is restored from scratch")]
    ChangelogTruncated { topic: String, partition: i32 },
    #[error("input topic `{topic}` does not exist on {bootstrap}: create it (eddy creates only its internal topics) or fix the topology's `topic`")]
    MissingTopic { topic: String, bootstrap: String },
    #[error("the broker refused to create internal topic `{topic}`: {reason}. Create it by hand with {partitions} partitions{compaction}, or grant eddy's principal CREATE on the cluster")]
    CreateTopic {
        topic: String,
        partitions: i32,
        compaction: &'static str,
        reason: String,
    },
}

/// Whether a client error is the broker being briefly unreachable (restart, leader move, network
/// blip): librdkafka reconnects by itself, so the caller waits instead of failing.
pub(crate) fn is_transient(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::NetworkException
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::CoordinatorLoadInProgress
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::BrokerNotAvailable
                | Code::Resolve
        )
    )
}

/// A client error named by its operation, `Unreachable` when it is transient.
pub(crate) fn client_error(
    operation: impl Into<String>,
    error: rdkafka::error::KafkaError,
) -> KafkaClientError {
    use rdkafka::types::RDKafkaErrorCode as Code;
    if is_transient(&error) {
        KafkaClientError::Unreachable {
            operation: operation.into(),
            reason: error.to_string(),
            code: KafkaErrorCode::of(&error),
        }
    } else if matches!(
        error.rdkafka_error_code(),
        Some(Code::Fatal | Code::FencedInstanceId)
    ) {
        KafkaClientError::Fatal {
            operation: operation.into(),
            reason: error.to_string(),
            code: KafkaErrorCode::of(&error),
        }
    } else {
        KafkaClientError::Operation {
            operation: operation.into(),
            reason: error.to_string(),
            code: KafkaErrorCode::of(&error),
        }
    }
}

pub(crate) fn operation_error(
    operation: impl Into<String>,
    error: impl std::fmt::Display,
) -> KafkaClientError {
    KafkaClientError::Operation {
        operation: operation.into(),
        reason: error.to_string(),
        code: None,
    }
}

/// Retries a broker call that can fail transiently (leader elections right after topic creation,
/// coordinator moves) for up to `patience`, then returns the last error.
pub(crate) fn with_retries<T, E: std::fmt::Display>(
    what: &str,
    patience: std::time::Duration,
    mut call: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + patience;
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(%error, what, "retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            Err(error) => return Err(error),
        }
    }
}
