//! Window lifecycle through the test driver: a quiet partition, once idle, stops holding back
//! repartitioned windows (when it has records again, they follow the lateness rule); windows kept
//! for `retention` are not emitted again after a reload.

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
            AggregationBuilder::new("by_kind", "events", "out")
                .group_by("kind")
                .grace(0)
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap()
}

fn pipe(d: &mut TopologyTestDriver, partition: i32, ts: i64, kind: &str) {
    d.pipe(
        "events",
        partition,
        None,
        &format!(r#"{{"ts":{ts},"kind":"{kind}"}}"#),
        None,
    )
    .unwrap();
}

fn finals(d: &mut TopologyTestDriver) -> Vec<(i64, String, u64)> {
    let mut finals: Vec<(i64, String, u64)> = d
        .read_aggregates("out")
        .into_iter()
        .filter(|r| r.is_final)
        .map(|r| {
            (
                r.window.start,
                r.group["kind"].as_str().unwrap().to_string(),
                r.values["n"].as_u64().unwrap(),
            )
        })
        .collect();
    finals.sort();
    finals
}

#[test]
fn an_idle_partition_stops_holding_back_windows_and_its_late_records_are_dropped() {
    let mut d = TopologyTestDriver::new(topology(), 3);
    // Partitions 0 and 1 move through minutes 0..3; partition 2 never gets a record.
    for minute in 0..3 {
        pipe(&mut d, 0, minute * 60_000 + 1_000, "a");
        pipe(&mut d, 1, minute * 60_000 + 2_000, "b");
    }
    d.commit().unwrap();
    assert!(
        finals(&mut d).is_empty(),
        "the empty partition holds every window open"
    );

    d.set_idle("events", 2, true);
    d.commit().unwrap();
    let closed = finals(&mut d);
    assert_eq!(
        closed,
        [
            (0, "a".into(), 1),
            (0, "b".into(), 1),
            (60_000, "a".into(), 1),
            (60_000, "b".into(), 1)
        ],
        "windows the active partitions passed close once the quiet one is idle"
    );

    // The idle partition comes back with a record for a closed window and one for an open one.
    d.set_idle("events", 2, false);
    pipe(&mut d, 2, 30_000, "c");
    pipe(&mut d, 2, 150_000, "c");
    d.commit().unwrap();
    for minute in 3..5 {
        for partition in 0..3 {
            pipe(&mut d, partition, minute * 60_000, "z");
        }
    }
    d.commit().unwrap();
    let closed = finals(&mut d);
    assert!(
        closed.contains(&(120_000, "c".into(), 1)),
        "its record for the open window counts: {closed:?}"
    );
    assert!(
        !closed
            .iter()
            .any(|(start, kind, _)| *start == 0 && kind == "c"),
        "its record for a window closed while it was idle is late: {closed:?}"
    );
}

/// A partition back from idleness with only old records lowers the slowest active stream time
/// below what already closed: closed windows stay closed, and its records for them are late
/// instead of opening those windows again (which would emit a second, wrong final).
#[test]
fn windows_closed_while_a_partition_was_idle_stay_closed_when_it_comes_back_behind() {
    let mut d = TopologyTestDriver::new(topology(), 3);
    for minute in 0..3 {
        pipe(&mut d, 0, minute * 60_000 + 1_000, "a");
        pipe(&mut d, 1, minute * 60_000 + 2_000, "b");
    }
    d.set_idle("events", 2, true);
    d.commit().unwrap();
    let mut closed = finals(&mut d);
    assert_eq!(closed.len(), 4, "minutes 0 and 1 closed");

    d.set_idle("events", 2, false);
    pipe(&mut d, 2, 30_000, "a");
    d.commit().unwrap();
    // Its stream time (30 s) is now the slowest active one, far behind what closed.
    pipe(&mut d, 2, 40_000, "a");
    d.commit().unwrap();
    for minute in 3..5 {
        for partition in 0..3 {
            pipe(&mut d, partition, minute * 60_000, "z");
        }
    }
    d.commit().unwrap();
    closed.extend(finals(&mut d));
    let minute_zero_a: Vec<_> = closed
        .iter()
        .filter(|(start, kind, _)| *start == 0 && kind == "a")
        .collect();
    assert_eq!(
        minute_zero_a,
        [&(0, "a".to_string(), 1)],
        "minute 0 of `a` was emitted once, without the late record: {closed:?}"
    );
}

#[test]
fn while_every_partition_is_idle_the_furthest_stream_time_closes_windows() {
    let mut d = TopologyTestDriver::new(topology(), 2);
    pipe(&mut d, 0, 10_000, "a");
    pipe(&mut d, 1, 130_000, "b");
    d.commit().unwrap();
    assert!(finals(&mut d).is_empty());
    d.set_idle("events", 0, true);
    d.set_idle("events", 1, true);
    d.commit().unwrap();
    assert_eq!(finals(&mut d), [(0, "a".into(), 1)]);
}

/// Windows kept for `retention` after they closed are not emitted again when tasks reload their
/// state (a restart or a rollback).
#[test]
fn retained_windows_are_not_re_emitted_after_a_reload() {
    for repartitioned in [false, true] {
        let source = SourceBuilder::new("events", "events", Schema::Json)
            .time_field("ts", TimeFormat::EpochMillis);
        let source = if repartitioned {
            source.build()
        } else {
            source.key_field("kind").build()
        };
        let topology = Topology::builder()
            .source(source)
            .aggregation(
                AggregationBuilder::new("by_kind", "events", "out")
                    .group_by("kind")
                    .grace(0)
                    .retention(600_000)
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap();
        let mut d = TopologyTestDriver::new(topology, 1);
        pipe(&mut d, 0, 1_000, "a");
        pipe(&mut d, 0, 70_000, "a");
        d.commit().unwrap();
        d.commit().unwrap();
        assert_eq!(
            finals(&mut d),
            [(0, "a".into(), 1)],
            "repartitioned: {repartitioned}"
        );
        d.reload().unwrap();
        pipe(&mut d, 0, 80_000, "a");
        d.commit().unwrap();
        d.commit().unwrap();
        assert_eq!(
            finals(&mut d),
            [],
            "the retained window is not final again (repartitioned: {repartitioned})"
        );
    }
}

/// Opt-in wall-clock closing: once no record has moved stream time for the quiet period, stream
/// time goes on with the wall clock and the last windows close after their grace.
#[test]
fn a_stream_that_stopped_closes_its_last_windows_with_the_wall_clock() {
    let source = SourceBuilder::new("events", "events", Schema::Json)
        .time_field("ts", TimeFormat::EpochMillis)
        .key_field("kind")
        .build();
    let topology = Topology::builder()
        .source(source)
        .aggregation(
            AggregationBuilder::new("by_kind", "events", "out")
                .group_by("kind")
                .grace(30_000)
                .aggregate("n", AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap();
    let mut d = TopologyTestDriver::new(topology, 1);
    pipe(&mut d, 0, 10_000, "a");
    pipe(&mut d, 0, 20_000, "a");
    d.commit().unwrap();
    let wall = 1_000_000;
    d.advance_wall_clock(wall, 5_000);
    d.advance_wall_clock(wall + 4_000, 5_000);
    d.commit().unwrap();
    assert!(finals(&mut d).is_empty(), "not quiet long enough yet");
    // 75 s after the last record: stream time 20 s + 75 s = 95 s, past the window's end + grace (90 s).
    d.advance_wall_clock(wall + 75_000, 5_000);
    d.commit().unwrap();
    assert_eq!(finals(&mut d), [(0, "a".into(), 2)]);
    // A new record restarts the record-driven clock.
    pipe(&mut d, 0, 125_000, "a");
    d.advance_wall_clock(wall + 76_000, 5_000);
    d.commit().unwrap();
    assert!(finals(&mut d).is_empty());
}

/// After a quiet period in which every partition went idle, the first partition to resume does
/// not close windows alone: the others count again until they confirm they are still idle, so
/// the records they resume with are not late.
#[test]
fn after_every_partition_was_idle_the_first_to_resume_does_not_close_windows_alone() {
    let mut d = TopologyTestDriver::new(topology(), 2);
    pipe(&mut d, 0, 1_000, "a");
    pipe(&mut d, 1, 2_000, "a");
    d.set_idle("events", 0, true);
    d.set_idle("events", 1, true);
    d.commit().unwrap();
    assert_eq!(finals(&mut d), Vec::<(i64, String, u64)>::new());

    // Partition 0 resumes first, far ahead; partition 1's records of the same minutes arrive a
    // commit later.
    d.set_idle("events", 0, false);
    pipe(&mut d, 0, 600_000, "b");
    pipe(&mut d, 0, 900_000, "z");
    d.commit().unwrap();
    d.set_idle("events", 1, false);
    pipe(&mut d, 1, 600_500, "b");
    pipe(&mut d, 1, 900_000, "z");
    d.commit().unwrap();
    let closed = finals(&mut d);
    assert!(
        closed.contains(&(600_000, "b".into(), 2)),
        "both partitions' records of minute 10 count: {closed:?}"
    );
}
