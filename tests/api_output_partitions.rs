//! The query API's reader of the output topics, on librdkafka's in-process mock cluster (no
//! broker needed): partitions that appear after it started are read from their beginning, and
//! those it reads already keep their positions.

use eddy::kafka::{ClientSettings, EmbeddedCluster, TopicTail};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

fn produce(bootstrap: &str, topic: &str, partitions: std::ops::Range<i32>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for partition in partitions {
        let value = format!("p{partition}");
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Values read within `wait`, sorted.
fn read_for(tail: &TopicTail, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut values = Vec::new();
    while Instant::now() < until {
        if let Some(record) = tail.try_poll(Duration::from_millis(100)).unwrap() {
            values.push(String::from_utf8(record.value.unwrap()).unwrap());
        }
    }
    values.sort();
    values
}

#[test]
fn partitions_that_appear_later_are_read_from_their_beginning() {
    let cluster = EmbeddedCluster::start().unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let settings = ClientSettings::plain(&bootstrap);
    cluster.create_topic("first", 1).unwrap();
    produce(&bootstrap, "first", 0..1);
    let tail = TopicTail::new(&settings, &["first", "later"]).unwrap();
    assert_eq!(read_for(&tail, Duration::from_secs(2)), ["p0"]);
    // `later` is created, with records, after the reader started.
    cluster.create_topic("later", 2).unwrap();
    produce(&bootstrap, "later", 0..2);
    assert_eq!(
        read_for(&tail, Duration::from_millis(500)),
        Vec::<String>::new()
    );
    assert_eq!(
        tail.follow_new_partitions().unwrap(),
        [("first".to_string(), 1), ("later".to_string(), 2)]
    );
    assert_eq!(read_for(&tail, Duration::from_secs(2)), ["p0", "p1"]);
    // Partitions read already are not read again.
    tail.follow_new_partitions().unwrap();
    assert_eq!(
        read_for(&tail, Duration::from_millis(500)),
        Vec::<String>::new()
    );
}
