//! Reading partitions to their end outside the group: changelog restore, and reading outputs
//! (the demo, tests, the benchmark command).

use super::{client_error, operation_error, ClientSettings, KafkaClientError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One record read back.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// Copies a consumed message, with its headers when `with_headers`.
    fn of(message: &rdkafka::message::BorrowedMessage<'_>, with_headers: bool) -> ReadRecord {
        let headers = match message.headers() {
            Some(headers) if with_headers => headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect(),
            _ => Vec::new(),
        };
        ReadRecord {
            topic: message.topic().into(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// How far one partition has been read: the next offset, the end it is read to, and whether
/// it got there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPosition {
    pub next: i64,
    pub end: i64,
    pub done: bool,
    /// The last stable offset was seen at `end`: the end of partition reported by a fetch made
    /// since then is the end of the read (see [`at_partition_eof`]).
    pub stable_to_end: bool,
}

impl ReadPosition {
    pub fn new(next: i64, end: i64) -> ReadPosition {
        ReadPosition {
            next,
            end,
            done: next >= end,
            stable_to_end: false,
        }
    }
}

/// What to do at an end of partition librdkafka reported.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AtEof {
    Done,
    /// Seek to this offset, so the next end of partition comes from a fetch made from now on.
    FetchAgainFrom(i64),
    /// A transaction is still open below the end: librdkafka reports a new end of partition once
    /// the last stable offset moves.
    Wait,
}

/// Where a read stands when librdkafka reports the end of a partition. `reached` is the
/// consumer's position (past the last record delivered, not past transaction markers);
/// `list_stable` lists the last stable offset now, when it is needed (`None`: the listing failed).
///
/// Under read_committed, librdkafka reports the end of a partition where a fetch found the last
/// stable offset. Short of the end the read was opened to (the log end), a transaction there was
/// still open: typically the previous owner's last one, committed (its offsets are stable) with
/// its markers not yet written to this changelog. Its records are part of the state those
/// offsets describe, so the read waits for it. The stable offset listed after the report may
/// have moved since the fetch that reported it, so reaching the end is only believed from an end
/// of partition reported by a fetch made after the stable offset was seen at the end: the read
/// seeks back to where it is, and the fetch from there reports the end again (past trailing
/// markers, which are never delivered).
pub(crate) fn at_partition_eof(
    position: &mut ReadPosition,
    reached: i64,
    list_stable: impl FnOnce() -> Option<i64>,
) -> AtEof {
    position.next = position.next.max(reached);
    if reached >= position.end || position.stable_to_end {
        position.next = position.next.max(position.end);
        position.done = true;
        return AtEof::Done;
    }
    match list_stable() {
        Some(stable) if stable >= position.end => {
            position.stable_to_end = true;
            AtEof::FetchAgainFrom(reached)
        }
        Some(_) => AtEof::Wait,
        // The end of partition is reported once per offset: fetch again to have it reported
        // again, and list the stable offset then.
        None => AtEof::FetchAgainFrom(reached),
    }
}

/// Whether a consumer error says the offset read is no longer in the partition (with
/// `auto.offset.reset = error`, librdkafka reports it as a failed automatic reset).
fn is_out_of_range(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(Code::AutoOffsetReset | Code::OffsetOutOfRange)
    )
}

/// Reads assigned partitions until the end: a changelog partition to its log end, with every
/// transaction in it complete; other topics to their last stable offset under read_committed.
pub struct ChangelogReader {
    consumer: BaseConsumer<EndsAreNoErrors>,
    /// A read_uncommitted client for the log end: librdkafka lists offsets with the client's
    /// isolation level, so the read_committed consumer's "high watermark" is the last stable
    /// offset, short of a transaction whose markers are not written yet.
    log_end: Option<BaseConsumer<EndsAreNoErrors>>,
}

/// The reader's client context: the end of a partition, which the reader asks librdkafka to
/// report (`enable.partition.eof`) and handles where it polls, is not logged as an error when
/// librdkafka also hands it to the client's error callback (it did, about twice a second per
/// standby copy, at ERROR level). Other errors are logged as by default.
pub(crate) struct EndsAreNoErrors;

impl rdkafka::ClientContext for EndsAreNoErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!(reason, "end of a changelog partition");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndsAreNoErrors {}

impl ChangelogReader {
    pub fn new(
        settings: &ClientSettings,
        read_committed: bool,
    ) -> Result<ChangelogReader, KafkaClientError> {
        let create = |read_committed: bool| {
            let mut config = settings.assign_consumer(read_committed);
            // An offset the changelog no longer holds is an error, not a silent jump to its
            // start, which would leave out every record in between.
            config.set("auto.offset.reset", "error");
            config
                .create_with_context(EndsAreNoErrors)
                .map_err(|e| KafkaClientError::Create {
                    client: "restore consumer",
                    reason: e.to_string(),
                })
        };
        Ok(ChangelogReader {
            consumer: create(read_committed)?,
            log_end: if read_committed {
                Some(create(false)?)
            } else {
                None
            },
        })
    }

    /// Reads `partitions` of `topic` from `from` (or the beginning) to their end, calling `visit` for
    /// each record, and returns the offset after the end of each partition.
    pub fn read_to_end(
        &self,
        topic: &str,
        partitions: &[i32],
        from: Option<i64>,
        timeout: Duration,
        mut visit: impl FnMut(ReadRecord),
    ) -> Result<Vec<(i32, i64)>, KafkaClientError> {
        let mut list = TopicPartitionList::new();
        let mut ends = Vec::new();
        let mut pending: HashSet<i32> = HashSet::new();
        for &partition in partitions {
            let (low, high) = super::with_retries("list offsets", Duration::from_secs(30), || {
                self.consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
            })
            .map_err(|e| operation_error(format!("list offsets of {topic}-{partition}"), e))?;
            let start = from.map_or(low, |f| f.max(low));
            if high > start {
                list.add_partition_offset(topic, partition, Offset::Offset(start))
                    .map_err(|e| operation_error("assign", e))?;
                pending.insert(partition);
            }
            ends.push((partition, high));
        }
        if pending.is_empty() {
            return Ok(ends);
        }
        self.consumer
            .assign(&list)
            .map_err(|e| operation_error("assign", e))?;
        let deadline = Instant::now() + timeout;
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(operation_error(
                    format!("reading {topic} to its end"),
                    format!("not finished after {timeout:?}; partitions left: {pending:?}"),
                ));
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    pending.remove(&partition);
                }
                // A broker restart mid-restore: librdkafka reconnects; wait within the deadline.
                Some(Err(error)) if super::is_transient(&error) => {
                    tracing::warn!(%error, topic, "broker unreachable while reading; waiting");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Some(Err(error)) => return Err(operation_error(format!("reading {topic}"), error)),
                Some(Ok(message)) => {
                    visit(ReadRecord::of(&message, true));
                    // The last record before the end seen at the start: done without waiting for EOF.
                    let end = ends
                        .iter()
                        .find(|(p, _)| *p == message.partition())
                        .map(|(_, h)| *h);
                    if end.is_some_and(|high| message.offset() + 1 >= high) {
                        pending.remove(&message.partition());
                    }
                }
            }
        }
        let positions = self
            .consumer
            .position()
            .map_err(|e| operation_error("position", e))?;
        let ends =
            ends.into_iter()
                .map(|(partition, high)| {
                    let position = positions
                        .find_partition(topic, partition)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    (partition, position.unwrap_or(high).max(high))
                })
                .collect();
        self.consumer
            .unassign()
            .map_err(|e| operation_error("unassign", e))?;
        Ok(ends)
    }

    /// Starts reading one partition of `topic` from `from` (or its beginning), up to the end it
    /// has now. Nothing is assigned when there is nothing to read. Retriable errors are retried
    /// for up to `patience`.
    pub fn open_partition(
        &self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        patience: Duration,
    ) -> Result<ReadPosition, KafkaClientError> {
        // The read goes to the log end, not to the last stable offset: a restore that follows a
        // stable offset fetch must include the previous owner's last transaction even where its
        // markers have not reached this changelog yet (see `at_partition_eof`).
        let ends = self.log_end.as_ref().unwrap_or(&self.consumer);
        // Bounded by the caller's patience: restores and standbys run on the loop thread.
        let timeout = patience.clamp(Duration::from_millis(500), Duration::from_secs(5));
        let (low, high) = super::with_retries("list offsets", patience, || {
            ends.fetch_watermarks(topic, partition, timeout)
        })
        .map_err(|e| super::client_error(format!("list offsets of {topic}-{partition}"), e))?;
        // A position the changelog no longer holds (records deleted below it, or the topic
        // recreated shorter) describes files that miss records: never read on from its start.
        if from.is_some_and(|f| f < low || f > high) {
            return Err(KafkaClientError::ChangelogTruncated {
                topic: topic.to_string(),
                partition,
            });
        }
        let mut position = ReadPosition::new(from.unwrap_or(low), high);
        if !position.done && self.log_end.is_some() {
            // Under read_committed the consumer lists the last stable offset. When it is already
            // at the log end, no transaction is open below it, so the first end of partition
            // reported from now on is the end of the read: a fetch again after it (a round trip
            // per store, most of a restore that has little to read) is not needed.
            if let Ok((_, stable)) = self.consumer.fetch_watermarks(topic, partition, timeout) {
                position.stable_to_end = stable >= high;
            }
        }
        if !position.done {
            self.assign_at(topic, partition, position.next)?;
        }
        Ok(position)
    }

    /// Reads the partition [`ChangelogReader::open_partition`] started for up to `budget` or
    /// `max_records` records, whichever comes first, advancing `position`. Returns how many
    /// records were read; a broker that is briefly unreachable reads nothing (the caller decides
    /// how long that may last).
    pub fn read_some(
        &self,
        topic: &str,
        position: &mut ReadPosition,
        budget: Duration,
        max_records: usize,
        mut visit: impl FnMut(ReadRecord),
    ) -> Result<usize, KafkaClientError> {
        let deadline = Instant::now() + budget;
        let mut read = 0;
        while !position.done && read < max_records {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.consumer.poll(left.min(Duration::from_millis(100))) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    let assigned = self
                        .consumer
                        .position()
                        .map_err(|e| operation_error("position", e))?;
                    // Only the partition assigned now: an end reported for an earlier one is
                    // not the end of this read.
                    let Some(element) = assigned
                        .elements()
                        .into_iter()
                        .find(|e| e.topic() == topic && e.partition() == partition)
                    else {
                        continue;
                    };
                    let reached = match element.offset() {
                        Offset::Offset(o) => o,
                        _ => position.next,
                    };
                    // Under read_committed the consumer's offsets list the last stable offset.
                    let list_stable = || {
                        let timeout =
                            left.clamp(Duration::from_millis(500), Duration::from_secs(10));
                        match self.consumer.fetch_watermarks(topic, partition, timeout) {
                            Ok((_, stable)) => Some(stable),
                            Err(error) => {
                                tracing::warn!(topic, partition, %error, "could not list the last stable offset at the end of a changelog; fetching again");
                                None
                            }
                        }
                    };
                    match at_partition_eof(position, reached, list_stable) {
                        AtEof::Done => {}
                        AtEof::Wait => {
                            tracing::info!(
                                topic,
                                partition,
                                end = position.end,
                                "an open transaction holds the changelog's end; waiting for it"
                            );
                        }
                        // Assigned anew (a seek would do, but an assignment cannot fail for a
                        // fetcher in an erroneous state): a new fetch from `offset`.
                        AtEof::FetchAgainFrom(offset) => {
                            self.assign_at(topic, partition, offset)?
                        }
                    }
                }
                Some(Err(error)) if super::is_transient(&error) => {
                    tracing::warn!(%error, topic, "broker unreachable while restoring; waiting");
                    break;
                }
                Some(Err(error)) if is_out_of_range(&error) => {
                    let partition = self
                        .consumer
                        .assignment()
                        .ok()
                        .and_then(|list| list.elements().first().map(|e| e.partition()))
                        .unwrap_or(-1);
                    tracing::warn!(%error, topic, partition, next = position.next, "the changelog no longer holds the offset the read reached");
                    self.close_partition();
                    return Err(KafkaClientError::ChangelogTruncated {
                        topic: topic.to_string(),
                        partition,
                    });
                }
                Some(Err(error)) => {
                    return Err(super::client_error(format!("reading {topic}"), error))
                }
                // Only the partition opened last is assigned; anything else is a fetch from an
                // earlier assignment still queued.
                Some(Ok(message)) if message.topic() != topic => {}
                Some(Ok(message)) => {
                    read += 1;
                    position.next = message.offset() + 1;
                    visit(ReadRecord::of(&message, false));
                    if position.next >= position.end {
                        position.done = true;
                    }
                }
            }
        }
        if position.done {
            self.consumer
                .unassign()
                .map_err(|e| operation_error("unassign", e))?;
        }
        Ok(read)
    }

    /// Reads `partition` of `topic` alone, fetching from `offset`.
    fn assign_at(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaClientError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| operation_error("assign", e))?;
        self.consumer
            .assign(&list)
            .map_err(|e| operation_error("assign", e))
    }

    /// Stops reading what [`ChangelogReader::open_partition`] started (the task was revoked).
    pub fn close_partition(&self) {
        let _ = self.consumer.unassign();
    }

    /// Reads a whole topic (every partition) to its end.
    pub fn read_topic(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<ReadRecord>, KafkaClientError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| operation_error("metadata", e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut records = Vec::new();
        self.read_to_end(topic, &partitions, None, timeout, |r| records.push(r))?;
        Ok(records)
    }
}

/// Follows topics from the beginning, read_committed, for live views of output topics.
pub struct TopicTail {
    consumer: BaseConsumer,
    topics: Vec<String>,
}

impl TopicTail {
    /// Like [`TopicTail::new`], but `None` while any of `topics` does not exist yet.
    pub fn new_when_present(
        settings: &ClientSettings,
        topics: &[&str],
    ) -> Result<Option<TopicTail>, KafkaClientError> {
        let tail = TopicTail::new(settings, topics)?;
        let assigned = tail
            .consumer
            .assignment()
            .map_err(|e| operation_error("assignment", e))?;
        let all_present = topics
            .iter()
            .all(|topic| assigned.elements().iter().any(|e| e.topic() == *topic));
        Ok(all_present.then_some(tail))
    }

    pub fn new(settings: &ClientSettings, topics: &[&str]) -> Result<TopicTail, KafkaClientError> {
        let mut config = settings.assign_consumer(true);
        config.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create().map_err(|e| KafkaClientError::Create {
            client: "output reader",
            reason: e.to_string(),
        })?;
        let tail = TopicTail {
            consumer,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        };
        tail.follow_new_partitions()?;
        Ok(tail)
    }

    /// Reads, from their beginning, the partitions of the followed topics that it does not read
    /// yet (all of them at first, then those added to a topic since), and returns each topic's
    /// partition count; 0 for a topic that does not exist yet.
    pub fn follow_new_partitions(&self) -> Result<Vec<(String, i32)>, KafkaClientError> {
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| operation_error("assignment", e))?;
        let mut counts = Vec::with_capacity(self.topics.len());
        let mut added = TopicPartitionList::new();
        for topic in &self.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| operation_error("metadata", e))?;
            let mut count = 0;
            for partition in metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            {
                count = count.max(partition + 1);
                if assigned.find_partition(topic, partition).is_none() {
                    added
                        .add_partition_offset(topic, partition, Offset::Beginning)
                        .map_err(|e| operation_error("assign", e))?;
                }
            }
            counts.push((topic.clone(), count));
        }
        // Incremental: the partitions already read keep their positions.
        if added.count() > 0 {
            self.consumer
                .incremental_assign(&added)
                .map_err(|e| operation_error("assign", e))?;
        }
        Ok(counts)
    }

    /// The next record, `Ok(None)` when none came within `timeout`; an error is the consumer's
    /// (e.g. the brokers are unreachable), and librdkafka keeps retrying after it.
    pub fn try_poll(&self, timeout: Duration) -> Result<Option<ReadRecord>, KafkaClientError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(ReadRecord::of(&message, false))),
            Some(Err(e)) => Err(client_error("poll the output topics", e)),
        }
    }

    /// Like [`TopicTail::try_poll`], errors dropped: for tools that only wait for records.
    pub fn poll(&self, timeout: Duration) -> Option<ReadRecord> {
        self.try_poll(timeout).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_partition_below_an_open_transaction_is_not_the_end_of_the_read() {
        // Records 0..10 committed, 10..20 the previous owner's last transaction: its offsets are
        // stable, its marker not written here yet, so the last stable offset is 10.
        let mut position = ReadPosition::new(0, 21);
        assert_eq!(
            at_partition_eof(&mut position, 10, || Some(10)),
            AtEof::Wait
        );
        assert!(
            !position.done,
            "the transaction's records are still to come"
        );
        assert_eq!(position.next, 10);
        // The marker lands; its records come, then the end at 21, past the marker.
        assert_eq!(
            at_partition_eof(&mut position, 20, || Some(21)),
            AtEof::FetchAgainFrom(20)
        );
        assert!(!position.done);
        assert_eq!(at_partition_eof(&mut position, 20, || None), AtEof::Done);
        assert_eq!(position.next, 21, "a later restore resumes past the marker");
    }

    #[test]
    fn a_stable_offset_listed_after_the_end_was_reported_does_not_end_the_read() {
        // The end was reported at 10 (the transaction open); before the listing, its marker
        // landed: the listing says 21, yet records 10..20 were never delivered.
        let mut position = ReadPosition::new(0, 21);
        assert_eq!(
            at_partition_eof(&mut position, 10, || Some(21)),
            AtEof::FetchAgainFrom(10)
        );
        assert!(!position.done, "10..20 are fetched again first");
        assert_eq!(position.next, 10);
    }

    #[test]
    fn a_read_ends_past_a_trailing_marker_the_consumer_never_delivers() {
        let mut position = ReadPosition::new(0, 11);
        assert_eq!(
            at_partition_eof(&mut position, 10, || Some(11)),
            AtEof::FetchAgainFrom(10)
        );
        assert_eq!(at_partition_eof(&mut position, 10, || None), AtEof::Done);
        assert_eq!(position.next, 11);
    }

    #[test]
    fn a_failed_listing_fetches_again_so_the_end_is_reported_again() {
        let mut position = ReadPosition::new(0, 21);
        assert_eq!(
            at_partition_eof(&mut position, 10, || None),
            AtEof::FetchAgainFrom(10)
        );
        assert!(!position.done && !position.stable_to_end);
    }

    #[test]
    fn a_read_that_delivered_its_last_record_is_done() {
        let mut position = ReadPosition::new(0, 10);
        let no_listing = || -> Option<i64> { panic!("nothing to list at the end") };
        assert_eq!(at_partition_eof(&mut position, 10, no_listing), AtEof::Done);
    }
}
