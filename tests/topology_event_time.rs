//! Poison timestamps through the test driver: a far-future, negative, overflowing or mistyped
//! event time is dead-lettered with a reason, never moves stream time, and loses nothing else.

use eddy::testing::TopologyTestDriver;
use eddy::topology::*;

fn topology() -> Topology {
    Topology::builder()
        .source(
            SourceBuilder::new("events", "events", Schema::Json)
                .time_field("ts", TimeFormat::EpochMillis)
                .build(),
        )
        .aggregation(
            AggregationBuilder::new("per_minute", "events", "out")
                .grace(0)
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap()
}

const NOW: i64 = 1_795_000_000_000;

#[test]
fn poison_timestamps_are_dead_lettered_and_never_move_stream_time() {
    let mut d = TopologyTestDriver::new(topology(), 1);
    let ok = |d: &mut TopologyTestDriver, ts: i64| {
        d.pipe("events", 0, None, &format!(r#"{{"ts":{ts}}}"#), Some(NOW))
            .unwrap()
    };
    for i in 0..30 {
        ok(&mut d, NOW - 600_000 + i * 10_000);
    }
    let poison = [
        (
            r#"{"ts":253402300799999}"#.to_string(),
            "ahead of the wall clock",
        ),
        (
            r#"{"ts":-5}"#.into(),
            "outside the event times eddy accepts",
        ),
        (
            format!(r#"{{"ts":{}}}"#, i64::MAX),
            "outside the event times eddy accepts",
        ),
        (
            r#"{"ts":"2026-11-18T11:06:40Z"}"#.into(),
            "expected a number",
        ),
        (
            r#"{"ts":1e300}"#.into(),
            "out of the representable time range",
        ),
    ];
    for (value, _) in &poison {
        d.pipe("events", 0, None, value, Some(NOW)).unwrap();
    }
    assert!(
        d.stream_time("events", 0).unwrap() < NOW,
        "a poison record moved stream time"
    );
    // Everything after the poison still counts: 30 more events in the next minutes.
    for i in 30..60 {
        ok(&mut d, NOW - 600_000 + i * 10_000);
    }
    ok(&mut d, NOW + 600_000);
    d.commit().unwrap();
    let counted: u64 = d
        .read_aggregates("out")
        .iter()
        .filter(|r| r.window.start < NOW)
        .map(|r| r.values["n"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 60, "no record after the poison was lost as late");
    let dead = d.read_records("eddy-test-dlq");
    assert_eq!(dead.len(), poison.len());
    for (record, (_, reason)) in dead.iter().zip(&poison) {
        let error = record.header("eddy.error").unwrap();
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
    }
}

#[test]
fn without_a_kafka_timestamp_the_wall_clock_bounds_event_time() {
    let mut d = TopologyTestDriver::new(topology(), 1);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    d.pipe(
        "events",
        0,
        None,
        &format!(r#"{{"ts":{}}}"#, wall + 7_200_000),
        None,
    )
    .unwrap();
    d.pipe(
        "events",
        0,
        None,
        &format!(r#"{{"ts":{}}}"#, wall + 60_000),
        None,
    )
    .unwrap();
    let dead = d.read_records("eddy-test-dlq");
    assert_eq!(dead.len(), 1);
    assert!(dead[0]
        .header("eddy.error")
        .unwrap()
        .contains("ahead of the wall clock"));
}

#[test]
fn max_future_skew_is_configurable_and_bounded() {
    let source = SourceBuilder::new("events", "events", Schema::Json)
        .time_field("ts", TimeFormat::EpochMillis)
        .max_future_skew(86_400_000 * 365 * 200)
        .build();
    let err = Topology::builder()
        .source(source)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_future_skew"), "{err}");
}

/// A producer that stamps CreateTime with the event time must not let a far-future event through:
/// the bound is the wall clock, not the record's timestamp.
#[test]
fn a_producer_stamped_timestamp_does_not_vouch_for_a_far_future_event() {
    let mut d = TopologyTestDriver::new(topology(), 1);
    let year_9999 = 253_402_300_799_000_i64;
    d.pipe(
        "events",
        0,
        None,
        &format!(r#"{{"ts":{year_9999}}}"#),
        Some(year_9999),
    )
    .unwrap();
    let dead = d.read_records("eddy-test-dlq");
    assert_eq!(dead.len(), 1, "dead-lettered");
    assert!(
        d.stream_time("events", 0).unwrap_or(i64::MIN) < year_9999,
        "stream time did not jump to year 9999"
    );
}
