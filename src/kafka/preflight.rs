//! The first thing an instance does: reach the cluster and authenticate, so that a wrong
//! password, a missing CA or a TLS mismatch stops eddy at once with what to fix, instead of
//! surfacing later as timeouts while librdkafka retries the connection.

use super::{ClientSettings, KafkaClientError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keeps the first authentication or TLS failure librdkafka reports.
#[derive(Default)]
struct SecurityWatch {
    failure: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for SecurityWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if let Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) = code {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert((code, reason.to_string()));
            }
        } else {
            tracing::debug!(%error, reason, "client error while connecting");
        }
    }
}

impl ConsumerContext for SecurityWatch {}

/// Connects to the cluster (a metadata request) within `patience`. An authentication or TLS
/// failure ends it at once with an error naming the mechanism and user (never the password).
pub fn check_connection(
    settings: &ClientSettings,
    patience: Duration,
) -> Result<(), KafkaClientError> {
    let consumer: BaseConsumer<SecurityWatch> = settings
        .base()
        .create_with_context(SecurityWatch::default())
        .map_err(|e| KafkaClientError::Create {
            client: "connection check",
            reason: e.to_string(),
        })?;
    let deadline = Instant::now() + patience;
    loop {
        let result = consumer.fetch_metadata(None, Duration::from_secs(2));
        // Serves librdkafka's error events, which is where authentication failures arrive.
        let _ = consumer.poll(Duration::from_millis(100));
        let failure = consumer
            .context()
            .failure
            .lock()
            .ok()
            .and_then(|mut f| f.take());
        match (failure, result) {
            (Some((RDKafkaErrorCode::Authentication, reason)), _) => {
                let setting = |key: &str| settings.common_value(key).unwrap_or("(not set)");
                return Err(KafkaClientError::Authentication {
                    mechanism: settings
                        .common_value("sasl.mechanism")
                        .or_else(|| settings.common_value("sasl.mechanisms"))
                        .unwrap_or("GSSAPI")
                        .to_string(),
                    user: setting("sasl.username").to_string(),
                    reason,
                });
            }
            (Some((_, reason)), _) => return Err(KafkaClientError::Tls { reason }),
            (None, Ok(_)) => return Ok(()),
            (None, Err(error)) if Instant::now() >= deadline => {
                return Err(super::client_error("connect to the brokers", error))
            }
            (None, Err(_)) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
