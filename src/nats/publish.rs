//! Publishing to JetStream, for `eddy generate --nats-url` and `eddy bench nats`: the stream is
//! created if missing (limits retention), and publishes are pipelined, each acknowledged.

use super::{NatsError, NatsSettings};
use async_nats::jetstream::{self, stream};
use std::collections::{HashMap, VecDeque};

/// Acknowledgements awaited at most at once.
const IN_FLIGHT: usize = 1_024;

pub struct NatsPublisher {
    runtime: tokio::runtime::Runtime,
    jetstream: jetstream::Context,
    pending: VecDeque<(String, jetstream::context::PublishAckFuture)>,
    /// Per subject, the stream sequence after its last acknowledged message.
    pub ends: HashMap<String, u64>,
}

impl NatsPublisher {
    pub fn connect(settings: &NatsSettings) -> Result<NatsPublisher, NatsError> {
        let failed = |reason: String| NatsError::Connect {
            servers: settings.servers_text(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let jetstream = runtime.block_on(async {
            let client = settings
                .options("eddy-publisher")
                .await?
                .connect(settings.servers.clone())
                .await
                .map_err(|e| failed(e.to_string()))?;
            Ok::<_, NatsError>(jetstream::new(client))
        })?;
        Ok(NatsPublisher {
            runtime,
            jetstream,
            pending: VecDeque::new(),
            ends: HashMap::new(),
        })
    }

    /// Creates `name` reading `subjects` with limits retention, unless it exists.
    pub fn ensure_stream(&self, name: &str, subjects: &[String]) -> Result<(), NatsError> {
        self.runtime
            .block_on(self.jetstream.get_or_create_stream(stream::Config {
                name: name.to_string(),
                subjects: subjects.to_vec(),
                retention: stream::RetentionPolicy::Limits,
                ..Default::default()
            }))
            .map(|_| ())
            .map_err(|e| NatsError::Stream {
                stream: name.to_string(),
                reason: e.to_string(),
            })
    }

    /// Publishes one message; its acknowledgement is awaited later (at most [`IN_FLIGHT`] open).
    pub fn publish(&mut self, subject: &str, payload: Vec<u8>) -> Result<(), NatsError> {
        if self.pending.len() >= IN_FLIGHT {
            self.await_one()?;
        }
        let ack = self
            .runtime
            .block_on(self.jetstream.publish(subject.to_string(), payload.into()))
            .map_err(|e| failed_publish(subject, e.to_string()))?;
        self.pending.push_back((subject.to_string(), ack));
        Ok(())
    }

    fn await_one(&mut self) -> Result<(), NatsError> {
        if let Some((subject, ack)) = self.pending.pop_front() {
            let ack = self
                .runtime
                .block_on(std::future::IntoFuture::into_future(ack))
                .map_err(|e| failed_publish(&subject, e.to_string()))?;
            let end = self.ends.entry(subject).or_default();
            *end = (*end).max(ack.sequence + 1);
        }
        Ok(())
    }

    /// Waits for every acknowledgement.
    pub fn flush(&mut self) -> Result<(), NatsError> {
        while !self.pending.is_empty() {
            self.await_one()?;
        }
        Ok(())
    }
}

fn failed_publish(subject: &str, reason: String) -> NatsError {
    NatsError::Read {
        stream: String::new(),
        filter: subject.to_string(),
        reason: format!("publishing: {reason}"),
    }
}
