//! What can go wrong with NATS, in words that say what to fix.

/// A NATS failure. The reading ones are retried by the split readers; the others stop eddy.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    #[error("could not connect to NATS at {servers}: {reason}. Check `nats.servers`, the [nats] credentials and TLS settings, and that nats-server runs with JetStream (-js)")]
    Connect { servers: String, reason: String },
    #[error("could not read the NATS credentials file {path} named by `nats.{key}`: {reason}")]
    Credentials {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("NATS stream `{stream}` could not be looked up (eddy waits 60 s for it at start): {reason}. Create it (e.g. `nats stream add {stream} --subjects '...'`) or fix `stream` in the topology")]
    Stream { stream: String, reason: String },
    #[error("NATS stream `{stream}` uses `{policy}` retention, which deletes messages once delivered or acknowledged: eddy could not replay them after a crash, so it cannot read this stream exactly once. Use `limits` retention (the default) and let eddy's committed positions decide what has been read")]
    Retention { stream: String, policy: String },
    #[error("NATS stream `{stream}`: split `{filter}` must resume at sequence {next}, but the stream now starts at {first}, so messages {next}..{first} were removed (retention limits, a purge, or a recreated stream) before eddy read them (or they were on other subjects: eddy cannot tell). Set `on_missing = \"skip\"` on the source to go on from {first}, counted in eddy_nats_skipped_messages_total")]
    Missing {
        stream: String,
        filter: String,
        next: u64,
        first: u64,
    },
    #[error("NATS stream `{stream}` ends at sequence {last}, before split `{filter}`'s committed position {next}: the stream was recreated or purged after eddy read it. Reset the application (new application_id) to read it from its start, or restore the stream")]
    Behind {
        stream: String,
        filter: String,
        next: u64,
        last: u64,
    },
    #[error("reading NATS stream `{stream}` ({filter}) failed: {reason}; retrying")]
    Read {
        stream: String,
        filter: String,
        reason: String,
    },
}

impl NatsError {
    /// Whether eddy goes on (the readers retry) rather than stopping.
    pub fn is_transient(&self) -> bool {
        matches!(self, NatsError::Read { .. })
    }
}
