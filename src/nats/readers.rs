//! The split readers: one tokio task per split this instance owns, each an ephemeral pull
//! consumer (no acknowledgements, no server-side state worth keeping) that starts at the split's
//! committed position, and a bounded channel into the synchronous loop.
//!
//! Seeking a split (its assignment, a rollback to the last commit) replaces its task and bumps
//! its epoch: messages the old task had already put in the channel carry the old epoch and are
//! dropped when they come out, as librdkafka drops what it fetched before a seek.

use super::{NatsError, NatsSettings};
use crate::telemetry::metrics::{NATS_PENDING, NATS_SKIPPED};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::RetentionPolicy;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What a split reads: a subject filter of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitSpec {
    /// The topology source, for metrics and logs.
    pub source: String,
    pub stream: String,
    pub filter: String,
    /// `on_missing = "skip"`: a position the stream no longer holds moves on to its first
    /// message, counted, instead of stopping.
    pub skip_missing: bool,
}

/// The split's partition of the assignment topic: how the runtime names it.
pub type SplitKey = (String, i32);

/// One message read from a split.
#[derive(Clone, Debug)]
pub struct NatsMessage {
    pub split: SplitKey,
    pub sequence: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
    /// When the server stored it.
    pub published_ms: i64,
}

/// What a stream looks like when eddy starts.
#[derive(Clone, Debug)]
pub struct StreamCheck {
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub messages: u64,
}

enum Delivery {
    /// Messages of one split, in order; `pending` as the server reported with the last.
    Messages {
        split: SplitKey,
        epoch: u64,
        messages: Vec<NatsMessage>,
        pending: u64,
    },
    CaughtUp {
        split: SplitKey,
        epoch: u64,
    },
    Failed {
        split: SplitKey,
        epoch: u64,
        error: NatsError,
    },
}

struct Running {
    epoch: u64,
    task: tokio::task::JoinHandle<()>,
    paused: watch::Sender<bool>,
    caught_up: bool,
    spec: SplitSpec,
}

/// Reads the splits this instance owns.
pub struct SplitReaders {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    sender: mpsc::Sender<Delivery>,
    receiver: Mutex<mpsc::Receiver<Delivery>>,
    /// Messages taken from the channel and not yet handed out, with their epoch.
    buffer: Mutex<std::collections::VecDeque<(u64, NatsMessage)>>,
    running: Mutex<HashMap<SplitKey, Running>>,
    /// The last epoch handed out; each (re)start of a split takes the next.
    epochs: AtomicU64,
}

/// Messages per pull request (the client keeps pulling ahead as they are consumed).
const BATCH: usize = 1_000;
/// Most messages handed to the loop in one delivery.
const DELIVERY: usize = 500;
/// How long a reader waits for a message before it says it is caught up.
const QUIET: Duration = Duration::from_millis(500);
/// Deliveries buffered between the readers and the loop (of up to [`DELIVERY`] messages each).
const CHANNEL: usize = 8;
/// An ephemeral consumer left alone this long is deleted by the server (a crashed instance's).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SplitReaders {
    /// Connects (failing within `connect_timeout_ms` when no server answers).
    pub fn connect(settings: &NatsSettings, name: &str) -> Result<SplitReaders, NatsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eddy-nats")
            .enable_all()
            .build()
            .map_err(|e| NatsError::Connect {
                servers: settings.servers_text(),
                reason: format!("could not start its runtime: {e}"),
            })?;
        let client = runtime.block_on(async {
            let options = settings.options(name).await?;
            options
                .connect(settings.servers.clone())
                .await
                .map_err(|e| NatsError::Connect {
                    servers: settings.servers_text(),
                    reason: e.to_string(),
                })
        })?;
        // The context spawns a task of its own: create it inside the runtime.
        let jetstream = {
            let _inside = runtime.enter();
            async_nats::jetstream::new(client.clone())
        };
        let (sender, receiver) = mpsc::channel(CHANNEL);
        Ok(SplitReaders {
            runtime,
            client,
            jetstream,
            sender,
            receiver: Mutex::new(receiver),
            buffer: Mutex::new(std::collections::VecDeque::new()),
            running: Mutex::new(HashMap::new()),
            epochs: AtomicU64::new(0),
        })
    }

    /// Looks the stream up and refuses retention policies that delete what was delivered.
    pub fn check_stream(&self, stream: &str) -> Result<StreamCheck, NatsError> {
        self.runtime.block_on(stream_state(&self.jetstream, stream))
    }

    /// (Re)starts reading a split at `from` (a stream sequence; `None`: the stream's start).
    pub fn start(&self, split: SplitKey, spec: SplitSpec, from: Option<u64>, paused: bool) {
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let (paused, paused_rx) = watch::channel(paused);
        let task = self.runtime.spawn(read_split(
            self.jetstream.clone(),
            split.clone(),
            epoch,
            spec.clone(),
            from,
            paused_rx,
            self.sender.clone(),
        ));
        tracing::info!(source = %spec.source, stream = %spec.stream, filter = %spec.filter, ?from, "NATS split reading");
        let old = lock(&self.running).insert(
            split,
            Running {
                epoch,
                task,
                paused,
                caught_up: false,
                spec,
            },
        );
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Stops reading a split; what it already read is dropped.
    pub fn stop(&self, split: &SplitKey) {
        let old = lock(&self.running).remove(split);
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Paused, or not reading at all.
    pub fn is_paused(&self, split: &SplitKey) -> bool {
        lock(&self.running)
            .get(split)
            .is_none_or(|r| *r.paused.borrow())
    }

    pub fn set_paused(&self, split: &SplitKey, paused: bool) {
        if let Some(running) = lock(&self.running).get_mut(split) {
            running.paused.send_replace(paused);
            // A paused split is not known to be read to its end: it must not turn idle.
            if paused {
                running.caught_up = false;
            }
        }
    }

    /// Whether the split's last pull found nothing more to read.
    pub fn caught_up(&self, split: &SplitKey) -> bool {
        lock(&self.running).get(split).is_some_and(|r| r.caught_up)
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn any_running(&self) -> bool {
        !lock(&self.running).is_empty()
    }

    /// The next message of a running split, waiting up to `timeout`. A failure that stops eddy
    /// is returned; a transient one is logged (the reader retries).
    pub fn recv(&self, timeout: Duration) -> Option<Result<NatsMessage, NatsError>> {
        // Read the clock only when there is something to wait for.
        let mut deadline = None;
        loop {
            if let Some(message) = self.pop_current() {
                return Some(Ok(message));
            }
            let mut receiver = lock(&self.receiver);
            let delivery = match receiver.try_recv() {
                Ok(delivery) => delivery,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if timeout.is_zero() {
                        return None;
                    }
                    let deadline =
                        *deadline.get_or_insert_with(|| std::time::Instant::now() + timeout);
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    match self
                        .runtime
                        .block_on(async { tokio::time::timeout(left, receiver.recv()).await })
                    {
                        Ok(Some(delivery)) => delivery,
                        Ok(None) | Err(_) => return None,
                    }
                }
            };
            drop(receiver);
            if let Some(error) = self.take(delivery) {
                return Some(Err(error));
            }
        }
    }

    /// The first buffered message whose split still reads in the epoch it came from.
    fn pop_current(&self) -> Option<NatsMessage> {
        let mut buffer = lock(&self.buffer);
        let running = lock(&self.running);
        while let Some((epoch, message)) = buffer.pop_front() {
            if running
                .get(&message.split)
                .is_some_and(|r| r.epoch == epoch)
            {
                return Some(message);
            }
        }
        None
    }

    /// Takes in a delivery of a split's current epoch, updating what is known about the split;
    /// returns a failure that stops eddy.
    fn take(&self, delivery: Delivery) -> Option<NatsError> {
        let mut running = lock(&self.running);
        match delivery {
            Delivery::Messages {
                split,
                epoch,
                messages,
                pending,
            } => {
                let split = running.get_mut(&split).filter(|r| r.epoch == epoch)?;
                split.caught_up = pending == 0;
                metrics::gauge!(NATS_PENDING, "source" => split.spec.source.clone(), "filter" => split.spec.filter.clone()).set(pending as f64);
                // One lock at a time: `pop_current` takes `buffer` before `running`.
                drop(running);
                lock(&self.buffer).extend(messages.into_iter().map(|m| (epoch, m)));
                None
            }
            Delivery::CaughtUp { split, epoch } => {
                let split = running.get_mut(&split).filter(|r| r.epoch == epoch)?;
                split.caught_up = true;
                metrics::gauge!(NATS_PENDING, "source" => split.spec.source.clone(), "filter" => split.spec.filter.clone()).set(0.0);
                None
            }
            Delivery::Failed {
                split,
                epoch,
                error,
            } => {
                let split = running.get_mut(&split).filter(|r| r.epoch == epoch)?;
                // Reading failed: not known to be read to its end until it reads again.
                split.caught_up = false;
                if error.is_transient() {
                    tracing::warn!(%error, "NATS read failed; retrying");
                    None
                } else {
                    Some(error)
                }
            }
        }
    }
}

impl Drop for SplitReaders {
    fn drop(&mut self) {
        for (_, running) in lock(&self.running).drain() {
            running.task.abort();
        }
    }
}

async fn stream_state(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<StreamCheck, NatsError> {
    let failed = |reason: String| NatsError::Stream {
        stream: stream.to_string(),
        reason,
    };
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let info = handle.info().await.map_err(|e| failed(e.to_string()))?;
    let policy = match info.config.retention {
        RetentionPolicy::Limits => None,
        RetentionPolicy::Interest => Some("interest"),
        RetentionPolicy::WorkQueue => Some("workqueue"),
    };
    if let Some(policy) = policy {
        return Err(NatsError::Retention {
            stream: stream.to_string(),
            policy: policy.into(),
        });
    }
    Ok(StreamCheck {
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        messages: info.state.messages,
    })
}

/// Where to start a split at `next` (`None`: the stream's start), checked against what the
/// stream holds: the server clamps a start before its first message up to it without a word, so
/// eddy checks first.
async fn start_at(
    jetstream: &async_nats::jetstream::Context,
    spec: &SplitSpec,
    next: Option<u64>,
) -> Result<Option<u64>, NatsError> {
    let Some(next) = next else {
        return Ok(None);
    };
    // The stream was there at start: failing to look it up now (NATS restarting, a leader
    // election, a lost connection) is retried, not fatal.
    let state = stream_state(jetstream, &spec.stream)
        .await
        .map_err(|error| match error {
            NatsError::Stream { stream, reason } => NatsError::Read {
                stream,
                filter: spec.filter.clone(),
                reason: format!("looking the stream up: {reason}"),
            },
            other => other,
        })?;
    if next > state.last_sequence.saturating_add(1) {
        return Err(NatsError::Behind {
            stream: spec.stream.clone(),
            filter: spec.filter.clone(),
            next,
            last: state.last_sequence,
        });
    }
    if state.first_sequence > next {
        if !spec.skip_missing {
            return Err(NatsError::Missing {
                stream: spec.stream.clone(),
                filter: spec.filter.clone(),
                next,
                first: state.first_sequence,
            });
        }
        let skipped = state.first_sequence - next;
        tracing::warn!(source = %spec.source, stream = %spec.stream, filter = %spec.filter, next, first = state.first_sequence, "NATS messages removed before eddy read them; skipping them (on_missing = \"skip\")");
        metrics::counter!(NATS_SKIPPED, "source" => spec.source.clone(), "filter" => spec.filter.clone()).increment(skipped);
        return Ok(Some(state.first_sequence));
    }
    Ok(Some(next))
}

/// Reads one split until aborted, recreating its consumer after any failure.
async fn read_split(
    jetstream: async_nats::jetstream::Context,
    split: SplitKey,
    epoch: u64,
    spec: SplitSpec,
    from: Option<u64>,
    mut paused: watch::Receiver<bool>,
    sender: mpsc::Sender<Delivery>,
) {
    let mut next = from;
    let mut backoff = Duration::from_millis(100);
    let failed = |reason: String| NatsError::Read {
        stream: spec.stream.clone(),
        filter: spec.filter.clone(),
        reason,
    };
    loop {
        let outcome: Result<(), NatsError> = async {
            next = start_at(&jetstream, &spec, next).await?;
            let policy = match next {
                None => DeliverPolicy::All,
                Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            };
            let stream = jetstream
                .get_stream_no_info(&spec.stream)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let consumer = stream
                .create_consumer(pull::Config {
                    deliver_policy: policy,
                    ack_policy: AckPolicy::None,
                    filter_subject: spec.filter.clone(),
                    inactive_threshold: INACTIVE_THRESHOLD,
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed(format!("creating a consumer: {e}")))?;
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(BATCH)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| failed(format!("pulling: {e}")))?;
            loop {
                while *paused.borrow_and_update() {
                    if paused.changed().await.is_err() {
                        return Ok(());
                    }
                }
                // Wait for one message, then take what is already there, up to a delivery.
                let first = match tokio::time::timeout(QUIET, messages.next()).await {
                    Err(_) => {
                        let caught_up = Delivery::CaughtUp {
                            split: split.clone(),
                            epoch,
                        };
                        if sender.send(caught_up).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    Ok(None) => return Err(failed("the consumer's message stream ended".into())),
                    Ok(Some(first)) => first,
                };
                let mut batch = Vec::with_capacity(DELIVERY);
                let mut pending = 0;
                let mut next_message = Some(first);
                // A failure after some messages of the batch: they are delivered first, since
                // `next` already moved past them and the rebuilt consumer starts after them.
                let mut failure = None;
                while let Some(message) = next_message.take() {
                    let read = message
                        .map_err(|e| failed(format!("pulling: {e}")))
                        .and_then(|m| {
                            let info = m.info().map_err(|e| failed(e.to_string()))?;
                            Ok((info.stream_sequence, info.pending, info.published, m))
                        });
                    let (sequence, published, message);
                    (sequence, pending, published, message) = match read {
                        Ok(read) => read,
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    };
                    if sequence >= next.unwrap_or(0) {
                        next = Some(sequence + 1);
                        batch.push(NatsMessage {
                            split: split.clone(),
                            sequence,
                            subject: message.subject.to_string(),
                            payload: message.payload.clone(),
                            published_ms: (published.unix_timestamp_nanos() / 1_000_000) as i64,
                        });
                    }
                    if batch.len() < DELIVERY && pending > 0 {
                        next_message =
                            futures_util::FutureExt::now_or_never(messages.next()).flatten();
                    }
                }
                if !batch.is_empty() {
                    let delivery = Delivery::Messages {
                        split: split.clone(),
                        epoch,
                        messages: batch,
                        // Not caught up when the batch ended on a failure.
                        pending: if failure.is_some() {
                            pending.max(1)
                        } else {
                            pending
                        },
                    };
                    if sender.send(delivery).await.is_err() {
                        return Ok(());
                    }
                }
                if let Some(error) = failure {
                    return Err(error);
                }
                backoff = Duration::from_millis(100);
            }
        }
        .await;
        match outcome {
            Ok(()) => return,
            Err(error) => {
                let transient = error.is_transient();
                let report = Delivery::Failed {
                    split: split.clone(),
                    epoch,
                    error,
                };
                if sender.send(report).await.is_err() || !transient {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
