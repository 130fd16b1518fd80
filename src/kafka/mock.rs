//! An embedded broker for `eddy demo`: librdkafka's in-process mock cluster.
//!
//! It is not used to prove exactly-once (it shows aborted records to read_committed readers);
//! the broker tests run against real Apache Kafka.

use super::KafkaClientError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct EmbeddedCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedCluster {
    pub fn start() -> Result<EmbeddedCluster, KafkaClientError> {
        let cluster = MockCluster::new(1).map_err(|e| KafkaClientError::Create {
            client: "embedded mock cluster",
            reason: e.to_string(),
        })?;
        Ok(EmbeddedCluster { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaClientError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| super::client_error(format!("create topic {topic}"), e))
    }
}
