//! The producer: transactional under exactly-once, idempotent under at-least-once.

use super::commit_failure::{CommitFailure, CommitFailureKind, KafkaErrorCode};
use super::consumer::{offset_list, GroupMetadata, PartitionOffset};
use super::{operation_error, ClientSettings, KafkaClientError};
use crate::task::OutgoingRecord;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Produce errors no retry or replay can fix.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
    )
}

/// The failure of a record the broker will never accept, with what to fix.
fn permanent(topic: &str, bytes: usize, code: RDKafkaErrorCode) -> CommitFailure {
    let fix = match code {
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize => {
            "raise the topic's max.message.bytes (and the producer's message.max.bytes), or lower the sketch precision of large distinct aggregates"
        }
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed
        | RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
            "grant eddy's principal WRITE on the topic and WRITE/DESCRIBE on its transactional id"
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            "create the topic again (eddy creates missing internal and output topics at start)"
        }
        _ => "fix the record or the topic's settings",
    };
    CommitFailure::new(
        CommitFailureKind::Permanent,
        format!("the broker will not accept a {bytes}-byte record for topic `{topic}`: {code:?}. To fix: {fix}"),
    )
    .with_code(Some(KafkaErrorCode(code)))
}

#[derive(Default)]
pub(crate) struct DeliveryCounter {
    failed: AtomicU64,
    /// Records librdkafka purged from its queues (an abort does).
    purged: AtomicU64,
    /// The first delivery failure no retry can fix, with what to do about it.
    permanent: std::sync::Mutex<Option<CommitFailure>>,
    /// The topic the broker refused to add to a transaction for lack of authorization, which
    /// librdkafka names only in its log.
    denied_topic: std::sync::Mutex<Option<String>>,
    /// Per changelog partition, the offset after the last record delivered there (see
    /// [`RecordProducer::take_changelog_ends`]).
    changelog_ends: std::sync::Mutex<crate::state::ChangelogEnds>,
}

impl DeliveryCounter {
    fn take_permanent(&self) -> Option<CommitFailure> {
        self.permanent.lock().ok().and_then(|mut p| p.take())
    }

    fn denied_topic(&self) -> Option<String> {
        self.denied_topic.lock().ok().and_then(|t| t.clone())
    }
}

impl ClientContext for DeliveryCounter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        // `Failed to add partition "TOPIC" [0] to transaction: Broker: Topic authorization failed`
        if fac == "ADDPARTS" && log_message.contains("authorization failed") {
            if let (Some(topic), Ok(mut denied)) =
                (log_message.split('"').nth(1), self.denied_topic.lock())
            {
                denied.get_or_insert_with(|| topic.to_string());
            }
        }
        rdkafka::client::DefaultClientContext.log(level, fac, log_message);
    }
}

/// Authorization failures of transactional calls: no retry or replay can fix them.
fn authorization_fix(
    code: RDKafkaErrorCode,
    denied_topic: Option<&str>,
    transactional_id: Option<&str>,
    group: &str,
) -> Option<String> {
    Some(match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => format!(
            "the broker denies eddy's principal WRITE on topic `{}` (TopicAuthorizationFailed). To fix: grant it WRITE on that topic",
            denied_topic.unwrap_or("(see the librdkafka ADDPARTS log line)")
        ),
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => format!(
            "the broker denies eddy's principal WRITE/DESCRIBE on transactional id `{}` (TransactionalIdAuthorizationFailed). To fix: grant WRITE and DESCRIBE on it (or on the prefix `{group}-`)",
            transactional_id.unwrap_or("?")
        ),
        RDKafkaErrorCode::GroupAuthorizationFailed => format!(
            "the broker denies eddy's principal READ on consumer group `{group}` (GroupAuthorizationFailed). To fix: grant READ on the group"
        ),
        RDKafkaErrorCode::ClusterAuthorizationFailed => "the broker denies eddy's principal IDEMPOTENT_WRITE on the cluster (ClusterAuthorizationFailed). To fix: grant it, or upgrade the brokers (Kafka 2.8+ does not need it)".to_string(),
        _ => return None,
    })
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            use rdkafka::message::Message;
            // Only changelog records: a lock per record of every kind would cost the hot path.
            if message.topic().ends_with(crate::topology::CHANGELOG_SUFFIX) {
                if let Ok(mut ends) = self.changelog_ends.lock() {
                    let end = ends
                        .entry((message.topic().to_string(), message.partition()))
                        .or_insert(0);
                    *end = (*end).max(message.offset() + 1);
                }
            }
        }
        if let Err((error, _)) = result {
            // Records purged by an abort were meant to vanish with their transaction.
            if matches!(
                error,
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                )
            ) {
                self.purged.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(code) = error.rdkafka_error_code().filter(|c| is_permanent(*c)) {
                if let (Ok(mut slot), Some((_, message))) =
                    (self.permanent.lock(), result.as_ref().err())
                {
                    use rdkafka::message::Message;
                    let bytes = message.payload().map_or(0, <[u8]>::len);
                    slot.get_or_insert_with(|| permanent(message.topic(), bytes, code));
                }
            }
            tracing::warn!(%error, "record delivery failed");
        }
    }
}

/// Sends eddy's outgoing records and commits them (with offsets) as one unit.
pub struct RecordProducer {
    producer: BaseProducer<DeliveryCounter>,
    /// Kept to fence this producer on purpose (`EDDY_FAILPOINT=fenced_mid_commit`).
    settings: ClientSettings,
    transactional_id: Option<String>,
    transactional: bool,
    in_transaction: bool,
    timeout: Duration,
}

impl RecordProducer {
    /// Creates the producer; with a transactional id it also initialises transactions, which fences
    /// any earlier producer that used the same id.
    pub fn new(
        settings: &ClientSettings,
        transactional_id: Option<&str>,
    ) -> Result<RecordProducer, KafkaClientError> {
        let producer: BaseProducer<DeliveryCounter> = settings
            .producer(transactional_id)
            .create_with_context(DeliveryCounter::default())
            .map_err(|e| KafkaClientError::Create {
                client: "producer",
                reason: e.to_string(),
            })?;
        let timeout = Duration::from_secs(30);
        if transactional_id.is_some() {
            producer
                .init_transactions(timeout)
                .map_err(|e| operation_error("init transactions", e))?;
        }
        Ok(RecordProducer {
            producer,
            settings: settings.clone(),
            transactional_id: transactional_id.map(str::to_string),
            transactional: transactional_id.is_some(),
            in_transaction: false,
            timeout,
        })
    }

    /// Classifies a librdkafka error (see [`CommitFailure::from_kafka`]); an authorization
    /// failure is permanent and says what to grant to whom.
    fn failure(&self, error: KafkaError, committing: bool) -> CommitFailure {
        let failure = CommitFailure::from_kafka(error, committing);
        let fix = failure.code.and_then(|code| {
            authorization_fix(
                code.0,
                self.producer.context().denied_topic().as_deref(),
                self.transactional_id.as_deref(),
                &self.settings.application_id,
            )
        });
        match fix {
            Some(reason) => CommitFailure {
                kind: CommitFailureKind::Permanent,
                code: failure.code,
                reason,
            },
            None => failure,
        }
    }

    /// A record the producer would not queue. A delivery that already failed for good (the
    /// record too large, say) is what to report: it put the transaction in the error state this
    /// refusal (`__STATE`) comes from, and a rollback would replay it forever. Otherwise the
    /// transaction is aborted and replayed with the same producer, which keeps the delivery
    /// reports that may still name a permanent failure. (`produce` errors carry no transactional
    /// flags; they are not the fatal unflagged errors of the transactional calls.)
    fn send_failure(&self, error: KafkaError) -> CommitFailure {
        if let Some(permanent) = self.producer.context().take_permanent() {
            return permanent;
        }
        match error {
            KafkaError::Transaction(_) => self.failure(error, false),
            other => {
                let code = KafkaErrorCode::of(&other);
                CommitFailure::abortable(other.to_string()).with_code(code)
            }
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    fn ensure_transaction(&mut self) -> Result<(), CommitFailure> {
        if self.transactional && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(|e| self.failure(e, false))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Queues one record (inside the open transaction, which starts on the first send).
    pub fn send(&mut self, record: &OutgoingRecord) -> Result<(), CommitFailure> {
        self.ensure_transaction()?;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    self.producer.poll(Duration::from_millis(10));
                    base = returned;
                }
                Err((KafkaError::MessageProduction(code), _)) if is_permanent(code) => {
                    let bytes = record.value.as_ref().map_or(0, Vec::len);
                    return Err(permanent(&record.topic, bytes, code));
                }
                Err((error, _)) => return Err(self.send_failure(error)),
            }
        }
    }

    /// Queues a plain record (generators and tools), retrying while the local queue is full.
    pub fn send_to(
        &mut self,
        topic: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), KafkaClientError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    self.producer.poll(Duration::from_millis(10));
                    record = returned;
                }
                Err((error, _)) => {
                    return Err(operation_error(format!("produce to {topic}"), error))
                }
            }
        }
    }

    /// Waits until every queued record is acknowledged.
    pub fn flush(&mut self) -> Result<(), KafkaClientError> {
        self.producer
            .flush(self.timeout)
            .map_err(|e| operation_error("flush", e))?;
        match self.producer.context().failed.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(operation_error(
                "produce",
                format!("{n} records were not delivered"),
            )),
        }
    }

    /// Waits until every queued record is acknowledged, serving delivery reports as they come.
    /// Returns false if some are still outstanding after `timeout`. (`BaseProducer::flush` polls
    /// in 100 ms slices that always run to their end: up to 100 ms lost per call, once per
    /// commit.)
    fn drain_deliveries(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            self.producer.poll(Duration::from_millis(1));
        }
        true
    }

    /// Serves delivery callbacks.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Commits everything sent since the last commit, with `offsets`. Under exactly-once the offsets
    /// join the transaction with the consumer's group metadata; otherwise the producer is flushed
    /// and the caller commits offsets through the consumer.
    pub fn commit(
        &mut self,
        offsets: &[PartitionOffset],
        group: Option<&GroupMetadata>,
    ) -> Result<(), CommitFailure> {
        if !self.transactional {
            if !self.drain_deliveries(self.timeout) {
                return Err(CommitFailure::abortable(format!(
                    "records not acknowledged within {}s",
                    self.timeout.as_secs()
                )));
            }
            let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
            if let Some(failure) = self.producer.context().take_permanent() {
                return Err(failure);
            }
            if failed > 0 {
                return Err(CommitFailure::abortable(format!(
                    "{failed} records were not delivered"
                )));
            }
            return Ok(());
        }
        self.ensure_transaction()?;
        let started = std::time::Instant::now();
        if !offsets.is_empty() {
            let list = offset_list(offsets).map_err(|e| CommitFailure::abortable(e.to_string()))?;
            let group = group.ok_or_else(|| {
                CommitFailure::new(
                    CommitFailureKind::Fenced,
                    "the consumer has no group metadata (not a group member)",
                )
            })?;
            self.retrying("send offsets to the transaction", false, || {
                self.producer
                    .send_offsets_to_transaction(&list, &group.0, self.timeout)
            })?;
        }
        let offsets_sent = started.elapsed();
        // Serve the delivery reports here: commit_transaction's own flush would wait for them in
        // 100 ms slices.
        self.drain_deliveries(self.timeout);
        // librdkafka's contract: a retriable error means call commit_transaction again (it
        // resumes); only success ends the transaction. Every call gets the full timeout, so it
        // never expires in the begin phase, which librdkafka cannot resume. An error that is
        // neither retriable, abortable nor a fencing leaves the outcome unknown: the call is made
        // once more, and if that does not settle it the runtime learns the outcome by fencing.
        let committed = match self.inject_commit_faults()? {
            Some(outcome) => outcome,
            None => match self.retrying("commit the transaction", true, || {
                self.producer.commit_transaction(self.timeout)
            }) {
                Err(failure) if failure.kind == CommitFailureKind::Unknown => {
                    tracing::warn!(%failure, "commit outcome unknown; calling commit again");
                    self.retrying("commit the transaction", true, || {
                        self.producer.commit_transaction(self.timeout)
                    })
                }
                other => other,
            },
        };
        // A record the broker refused for good fails the transaction; say which and why.
        if let Some(failure) = self.producer.context().take_permanent() {
            return Err(failure);
        }
        committed?;
        tracing::trace!(
            offsets_ms = offsets_sent.as_secs_f64() * 1e3,
            commit_ms = (started.elapsed() - offsets_sent).as_secs_f64() * 1e3,
            "transaction committed"
        );
        self.in_transaction = false;
        Ok(())
    }

    /// Test hooks between the offsets and the commit (see [`crate::failpoint`]). `Some` is the
    /// commit's result when a hook stood in for it.
    fn inject_commit_faults(&mut self) -> Result<Option<Result<(), CommitFailure>>, CommitFailure> {
        use crate::failpoint::{fire, Failpoint};
        if fire(Failpoint::AbortAfterOffsets) {
            return Err(CommitFailure::abortable(
                "EDDY_FAILPOINT=abort_after_offsets",
            ));
        }
        if fire(Failpoint::CommitOutcomeUnknown) {
            // The reply to EndTxn is lost, or EndTxn never left: alternately, so the runtime
            // learns both outcomes from the broker. The producer is left as a lost connection
            // would leave it; the runtime must fence it.
            static FIRED: AtomicU64 = AtomicU64::new(0);
            let committed = FIRED.fetch_add(1, Ordering::Relaxed) % 2 == 1;
            if committed {
                self.retrying("commit the transaction", true, || {
                    self.producer.commit_transaction(self.timeout)
                })?;
            }
            tracing::warn!(
                committed,
                "EDDY_FAILPOINT=commit_outcome_unknown: reporting the commit's outcome as unknown"
            );
            return Ok(Some(Err(CommitFailure::new(
                CommitFailureKind::Unknown,
                "EDDY_FAILPOINT=commit_outcome_unknown",
            ))));
        }
        if fire(Failpoint::CoordinatorUnreachable) {
            // The commit hangs as it would with the transaction coordinator unreachable, the
            // transaction open with its records and offsets, past `transaction.timeout.ms`: the
            // broker then aborts it and the commit fails, while the loop goes on meanwhile.
            let stall = crate::failpoint::stall();
            tracing::warn!(
                seconds = stall.as_secs_f64(),
                "EDDY_FAILPOINT=coordinator_unreachable: the commit stalls"
            );
            std::thread::sleep(stall);
        }
        if fire(Failpoint::FencedMidCommit) {
            // Another producer with this transactional id fences this one before it commits.
            let fencer = RecordProducer::new(&self.settings, self.transactional_id.as_deref());
            tracing::warn!(fenced = fencer.is_ok(), "EDDY_FAILPOINT=fenced_mid_commit");
        }
        Ok(None)
    }

    /// Calls a transactional operation again while it fails with retriable errors, up to
    /// `task_timeout_ms`; other errors are classified for the runtime (`committing`: the call is
    /// `commit_transaction`, whose unclassified errors leave the outcome unknown).
    fn retrying<T>(
        &self,
        what: &str,
        committing: bool,
        call: impl FnMut() -> Result<T, KafkaError>,
    ) -> Result<T, CommitFailure> {
        self.retrying_every(what, committing, Duration::from_millis(100), call)
    }

    /// [`Self::retrying`], polling `first_delay` after the first try, twice that after the next,
    /// and so on up to 2 s.
    fn retrying_every<T>(
        &self,
        what: &str,
        committing: bool,
        first_delay: Duration,
        mut call: impl FnMut() -> Result<T, KafkaError>,
    ) -> Result<T, CommitFailure> {
        let patience = self.settings.retry_deadline;
        let deadline = std::time::Instant::now() + patience;
        let mut delay = first_delay;
        loop {
            match call() {
                Ok(value) => return Ok(value),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && !e.is_fatal() && !e.txn_requires_abort() =>
                {
                    if std::time::Instant::now() >= deadline {
                        // A commit may still complete; an earlier step cannot have committed.
                        let kind = if committing {
                            CommitFailureKind::Unknown
                        } else {
                            CommitFailureKind::Fatal
                        };
                        return Err(CommitFailure::new(
                            kind,
                            format!(
                                "could not {what} within {}s (task_timeout_ms): {e}",
                                patience.as_secs()
                            ),
                        ));
                    }
                    if delay >= Duration::from_millis(100) {
                        tracing::warn!(error = %e, what, "retriable transaction error; retrying");
                    } else {
                        tracing::debug!(error = %e, what, "retriable transaction error; retrying");
                    }
                    // Serve delivery reports meanwhile: some operations wait for them.
                    self.producer.poll(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(self.failure(error, committing)),
            }
        }
    }

    /// Per changelog partition, the offset after the last record delivered there since the last
    /// call. Taken right after a commit, it says how far into each changelog the committed
    /// transaction reached. An abort clears it.
    pub fn take_changelog_ends(&mut self) -> crate::state::ChangelogEnds {
        self.producer
            .context()
            .changelog_ends
            .lock()
            .map(|mut ends| std::mem::take(&mut *ends))
            .unwrap_or_default()
    }

    /// Aborts the open transaction, if any; its records never become visible to read_committed readers.
    pub fn abort(&mut self) -> Result<(), CommitFailure> {
        self.take_changelog_ends();
        if self.transactional && self.in_transaction {
            let purged_before = self.producer.context().purged.load(Ordering::Relaxed);
            // abort_transaction purges the records still queued, then waits until the delivery
            // reports of what is left are served, which on a BaseProducer happens only by
            // polling: short calls, polling between them (a 500 ms call waited out its whole
            // timeout every time).
            self.retrying_every(
                "abort the transaction",
                false,
                Duration::from_millis(5),
                || self.producer.abort_transaction(Duration::from_millis(20)),
            )?;
            // Reports served while the abort polled are the aborted records'.
            self.take_changelog_ends();
            self.in_transaction = false;
            let purged = self.producer.context().purged.load(Ordering::Relaxed) - purged_before;
            if purged > 0 {
                let started = std::time::Instant::now();
                // Records purged after librdkafka gave them sequence numbers (a transaction in
                // error sends nothing more, so what it had queued is purged) leave a gap that the
                // next transaction runs into: OUT_OF_ORDER_SEQUENCE_NUMBER, an epoch bump, and a
                // second rollback of everything consumed since. A fresh producer under the same
                // transactional id starts with a new epoch and no gap. What the old producer's
                // reports said stays known: a permanent failure served while the abort polled is
                // what the next send must report, not replay.
                let permanent = self.producer.context().take_permanent();
                let denied = self.producer.context().denied_topic();
                *self = RecordProducer::new(&self.settings, self.transactional_id.as_deref())
                    .map_err(|e| {
                        CommitFailure::abortable(format!(
                            "could not recreate the producer after an abort that purged records: {e}"
                        ))
                    })?;
                let context = self.producer.context();
                if let (Some(permanent), Ok(mut slot)) = (permanent, context.permanent.lock()) {
                    *slot = Some(permanent);
                }
                if let (Some(topic), Ok(mut slot)) = (denied, context.denied_topic.lock()) {
                    *slot = Some(topic);
                }
                tracing::info!(
                    purged,
                    seconds = started.elapsed().as_secs_f64(),
                    "the abort purged queued records; the producer was recreated with a fresh epoch"
                );
            }
        }
        Ok(())
    }

    /// Waits for every queued record to be acknowledged, without committing anything.
    pub fn wait_delivered(&self) -> Result<(), KafkaClientError> {
        self.producer
            .flush(self.timeout)
            .map_err(|e| operation_error("flush", e))
    }

    /// Records queued but not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}
