//! Every rdkafka call lives under this module; the rest of eddy sees only the types defined here.

mod admin;
mod client_config;
mod consumer;
mod mock;
mod producer;
mod restore;

pub use admin::{InternalTopic, TopicAdmin};
pub use client_config::ClientSettings;
pub use consumer::{
    ConsumedRecord, GroupConsumer, GroupHandle, PartitionOffset, RebalanceListener,
};
pub use mock::EmbeddedCluster;
pub use producer::{CommitFailure, RecordProducer};
pub use restore::{ChangelogReader, ReadRecord, TopicTail};

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
    Operation { operation: String, reason: String },
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

pub(crate) fn operation_error(
    operation: impl Into<String>,
    error: impl std::fmt::Display,
) -> KafkaClientError {
    KafkaClientError::Operation {
        operation: operation.into(),
        reason: error.to_string(),
    }
}
