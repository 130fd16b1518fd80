//! The first broker test: this broker can prove exactly-once. An aborted transaction is invisible
//! to a read_committed consumer, a committed one is visible, and offsets sent with the
//! transaction are committed with it.

mod common;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::time::Duration;

#[test]
fn aborted_transactions_are_invisible_and_offsets_commit_with_the_transaction() {
    let bootstrap = common::bootstrap();
    let output = common::unique("txn-out");
    let input = common::unique("txn-in");
    let group = common::unique("txn-group");
    common::create_topics(&[(&output, 1), (&input, 1)]);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", common::unique("txn-id"))
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.group_metadata().unwrap();

    producer.begin_transaction().unwrap();
    producer
        .send(
            BaseRecord::<str, str>::to(&output)
                .key("k")
                .payload("aborted"),
        )
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, Offset::Offset(5))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &metadata, timeout)
        .unwrap();
    producer.flush(timeout).unwrap();
    producer.abort_transaction(timeout).unwrap();

    producer.begin_transaction().unwrap();
    producer
        .send(
            BaseRecord::<str, str>::to(&output)
                .key("k")
                .payload("committed"),
        )
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&input, 0, Offset::Offset(7))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &metadata, timeout)
        .unwrap();
    producer.commit_transaction(timeout).unwrap();

    let committed: Vec<String> = common::read_committed(&output)
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect();
    let uncommitted: Vec<String> = eddy::kafka::ChangelogReader::new(&common::settings(), false)
        .unwrap()
        .read_topic(&output, Duration::from_secs(30))
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(&input, 0);
    let group_offsets = consumer.committed_offsets(partitions, timeout).unwrap();
    let offset = group_offsets.find_partition(&input, 0).unwrap().offset();

    println!("read_uncommitted sees: {uncommitted:?}");
    println!("read_committed sees:   {committed:?}");
    println!(
        "group offset of {input}-0: {offset:?} (aborted transaction sent 5, committed one sent 7)"
    );
    assert_eq!(
        uncommitted,
        ["aborted", "committed"],
        "the aborted record really was written"
    );
    assert_eq!(
        committed,
        ["committed"],
        "read_committed must not see aborted records"
    );
    assert_eq!(
        offset,
        Offset::Offset(7),
        "offsets commit with their transaction only"
    );
}
