//! Window semantics through the in-memory topology driver: no broker, time is event time.

use eddy::task::AggregateRecord;
use eddy::testing::TopologyTestDriver;
use eddy::topology::*;
use serde_json::json;

const MIN: i64 = 60_000;

fn source() -> Source {
    SourceBuilder::new("events", "events", Schema::Json)
        .time_field("ts", TimeFormat::EpochMillis)
        .key_field("user")
        .build()
}

fn driver(aggregation: Aggregation, partitions: i32) -> TopologyTestDriver {
    TopologyTestDriver::new(
        Topology::builder()
            .source(source())
            .aggregation(aggregation)
            .build()
            .unwrap(),
        partitions,
    )
}

fn pipe(driver: &mut TopologyTestDriver, partition: i32, ts: i64, user: &str, kind: &str) {
    let value = json!({"ts": ts, "user": user, "kind": kind, "amount": 1.25}).to_string();
    driver
        .pipe("events", partition, Some(user), &value, None)
        .unwrap();
}

fn counts(records: &[AggregateRecord]) -> Vec<(i64, i64, serde_json::Value, u64, bool)> {
    let mut rows: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.window.start,
                r.window.end,
                serde_json::Value::Object(r.group.clone()),
                r.values["n"].as_u64().unwrap(),
                r.is_final,
            )
        })
        .collect();
    rows.sort_by_key(|row| (row.0, row.2.to_string()));
    rows
}

fn tumbling(grace: i64, emit: EmitMode) -> Aggregation {
    AggregationBuilder::new("t", "events", "out")
        .tumbling(MIN)
        .grace(grace)
        .emit(emit)
        .group_by("kind")
        .aggregate("n", AggregateKind::Count)
        .build()
}

#[test]
fn start_is_inclusive_end_is_exclusive() {
    let mut d = driver(tumbling(0, EmitMode::Final), 1);
    pipe(&mut d, 0, 0, "a", "x");
    pipe(&mut d, 0, MIN - 1, "a", "x");
    pipe(&mut d, 0, MIN, "a", "x");
    d.commit().unwrap();
    assert_eq!(
        counts(&d.read_aggregates("out")),
        [(0, MIN, json!({"kind": "x"}), 2, true)]
    );
    pipe(&mut d, 0, 2 * MIN, "a", "x");
    d.commit().unwrap();
    assert_eq!(
        counts(&d.read_aggregates("out")),
        [(MIN, 2 * MIN, json!({"kind": "x"}), 1, true)]
    );
}

#[test]
fn out_of_order_within_grace_counts_and_beyond_grace_is_late() {
    let mut d = driver(
        AggregationBuilder::new("t", "events", "out")
            .tumbling(MIN)
            .grace(10_000)
            .group_by("kind")
            .aggregate("n", AggregateKind::Count)
            .late_records_topic("late")
            .build(),
        1,
    );
    pipe(&mut d, 0, 30_000, "a", "x");
    pipe(&mut d, 0, MIN + 5_000, "a", "x"); // stream time 65s: [0,60) still open (closes at 70s)
    pipe(&mut d, 0, 59_000, "a", "x"); // out of order, within grace
    pipe(&mut d, 0, MIN + 10_000, "a", "x"); // stream time 70s: [0,60) closes
    d.commit().unwrap();
    pipe(&mut d, 0, 1_000, "a", "x"); // late
    d.commit().unwrap();
    let out = counts(&d.read_aggregates("out"));
    assert_eq!(out, [(0, MIN, json!({"kind": "x"}), 2, true)]);
    let late = d.read_records("late");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].header("eddy.aggregation").as_deref(), Some("t"));
}

#[test]
fn hopping_windows_overlap_and_late_records_still_update_open_windows() {
    let agg = AggregationBuilder::new("h", "events", "out")
        .hopping(3 * MIN, MIN)
        .aggregate("n", AggregateKind::Count)
        .build();
    let mut d = driver(agg, 1);
    pipe(&mut d, 0, 2 * MIN + 1, "a", "x"); // windows starting 0, 1m, 2m
    pipe(&mut d, 0, 3 * MIN + 1, "a", "x"); // stream time 3m: [0,3m) closes
    pipe(&mut d, 0, 2 * MIN + 2, "a", "x"); // [0,3m) closed; [1m,4m) and [2m,5m) open
    pipe(&mut d, 0, 10 * MIN, "a", "x");
    d.commit().unwrap();
    let got: Vec<(i64, u64)> = counts(&d.read_aggregates("out"))
        .into_iter()
        .map(|r| (r.0 / MIN, r.3))
        .collect();
    // [0,3m): only the first record (the third arrived after it closed); [3m,6m): only the second.
    // Windows starting 8m..10m are still open at stream time 10m.
    assert_eq!(got, [(0, 1), (1, 3), (2, 3), (3, 1)]);
}

#[test]
fn update_mode_emits_changed_windows_at_each_commit_then_a_final() {
    let mut d = driver(tumbling(0, EmitMode::Update), 1);
    pipe(&mut d, 0, 1_000, "a", "x");
    pipe(&mut d, 0, 2_000, "a", "y");
    d.commit().unwrap();
    let first = counts(&d.read_aggregates("out"));
    assert_eq!(
        first,
        [
            (0, MIN, json!({"kind": "x"}), 1, false),
            (0, MIN, json!({"kind": "y"}), 1, false)
        ]
    );
    d.commit().unwrap();
    assert!(
        d.read_aggregates("out").is_empty(),
        "nothing changed, nothing emitted"
    );
    pipe(&mut d, 0, 3_000, "a", "x");
    d.commit().unwrap();
    assert_eq!(
        counts(&d.read_aggregates("out")),
        [(0, MIN, json!({"kind": "x"}), 2, false)]
    );
    pipe(&mut d, 0, MIN, "a", "z");
    d.commit().unwrap();
    let closing = counts(&d.read_aggregates("out"));
    assert!(
        closing.contains(&(0, MIN, json!({"kind": "x"}), 2, true)),
        "{closing:?}"
    );
    assert!(
        closing.contains(&(0, MIN, json!({"kind": "y"}), 1, true)),
        "{closing:?}"
    );
    assert!(
        closing.contains(&(MIN, 2 * MIN, json!({"kind": "z"}), 1, false)),
        "{closing:?}"
    );
}

#[test]
fn empty_windows_emit_nothing_and_single_records_emit_once() {
    let mut d = driver(tumbling(0, EmitMode::Final), 1);
    pipe(&mut d, 0, 5 * MIN + 7, "a", "x");
    pipe(&mut d, 0, 9 * MIN, "a", "x");
    d.commit().unwrap();
    assert_eq!(
        counts(&d.read_aggregates("out")),
        [(5 * MIN, 6 * MIN, json!({"kind": "x"}), 1, true)]
    );
    d.commit().unwrap();
    assert!(d.read_aggregates("out").is_empty());
    assert_eq!(
        d.store("t").len(),
        1,
        "only the open window [9m,10m) is kept"
    );
}

fn sessions(gap: i64) -> Aggregation {
    AggregationBuilder::new("s", "events", "out")
        .session(gap)
        .grace(60_000)
        .group_by("user")
        .aggregate("n", AggregateKind::Count)
        .build()
}

#[test]
fn sessions_merge_when_a_record_bridges_them_and_split_by_the_gap() {
    let mut d = driver(sessions(10_000), 1);
    pipe(&mut d, 0, 0, "u1", "x");
    pipe(&mut d, 0, 25_000, "u1", "x"); // 25s after: a second session
    pipe(&mut d, 0, 3_000, "u2", "x");
    d.commit().unwrap();
    assert_eq!(d.store("s").len(), 3);
    pipe(&mut d, 0, 12_000, "u1", "x"); // within 10s of 0? no (12s). within 10s of 25s? no (13s): third session
    d.commit().unwrap();
    assert_eq!(d.store("s").len(), 4);
    pipe(&mut d, 0, 6_000, "u1", "x"); // bridges [0] and [12s]; [25s] is 13s away from 12s: stays apart
    d.commit().unwrap();
    let store = d.store("s");
    let u1: Vec<_> = store
        .iter()
        .filter(|(g, ..)| g["user"] == "u1")
        .map(|(_, w, v)| (w.start, w.end, v["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(u1, [(0, 12_001, 3), (25_000, 25_001, 1)]);
    pipe(&mut d, 0, 18_000, "u1", "x"); // bridges [0,12s] and [25s]
    pipe(&mut d, 0, 100_000, "u3", "x"); // stream time 100s closes everything else (gap 10s, grace 0)
    d.commit().unwrap();
    let out = counts(&d.read_aggregates("out"));
    assert_eq!(
        out,
        [
            (0, 25_000, json!({"user": "u1"}), 5, true),
            (3_000, 3_000, json!({"user": "u2"}), 1, true)
        ]
    );
}

#[test]
fn many_groups_across_partitions_give_one_aggregate_per_group_and_window() {
    let agg = AggregationBuilder::new("g", "events", "out")
        .tumbling(MIN)
        .group_by("kind")
        .aggregate("n", AggregateKind::Count)
        .aggregate("amount", AggregateKind::Sum("amount".into()))
        .build();
    let mut d = driver(agg, 4);
    for i in 0..4_000i64 {
        let partition = (i % 4) as i32;
        pipe(
            &mut d,
            partition,
            (i * 37) % MIN,
            &format!("u{i}"),
            &format!("k{}", i % 50),
        );
        if i % 500 == 0 {
            d.commit().unwrap();
        }
    }
    for p in 0..4 {
        pipe(&mut d, p, 5 * MIN, "end", "end");
    }
    d.commit().unwrap();
    let out = d.read_aggregates("out");
    let in_first: Vec<_> = out.iter().filter(|r| r.window.start == 0).collect();
    assert_eq!(
        in_first.len(),
        50,
        "one final aggregate per group, whatever the partitioning"
    );
    assert!(in_first
        .iter()
        .all(|r| r.values["n"] == 80 && r.values["amount"] == 100.0 && r.is_final));
}

#[test]
fn decode_errors_go_to_the_dead_letter_topic_with_headers() {
    let mut d = driver(tumbling(0, EmitMode::Final), 1);
    d.pipe("events", 0, Some("k"), "{\"ts\": \"soon\"}", None)
        .unwrap();
    d.pipe("events", 0, Some("k"), "not json", None).unwrap();
    pipe(&mut d, 0, 10, "a", "x");
    let dead = d.read_records("eddy-test-dlq");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[1].header("eddy.source.offset").as_deref(), Some("1"));
    assert_eq!(
        dead[1].header("eddy.source.topic").as_deref(),
        Some("events")
    );
    assert_eq!(
        dead[0].header("eddy.error").as_deref(),
        Some("field `ts` is \"soon\", expected a number")
    );
    assert_eq!(dead[1].value.as_deref(), Some(b"not json".as_slice()));
}

#[test]
fn decode_error_policy_fail_stops_and_skip_counts() {
    let fail = SourceBuilder::new("events", "events", Schema::Json)
        .time_field("ts", TimeFormat::EpochMillis)
        .on_decode_error(DecodeErrorPolicy::Fail)
        .build();
    let topology = Topology::builder()
        .source(fail)
        .aggregation(tumbling(0, EmitMode::Final))
        .build()
        .unwrap();
    let mut d = TopologyTestDriver::new(topology, 1);
    let err = d
        .pipe("events", 0, None, "[]", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("events-0@0"), "{err}");
}

#[test]
fn grouping_by_the_source_key_keeps_state_in_the_input_task() {
    let mut d = driver(sessions(1_000), 2);
    pipe(&mut d, 1, 0, "u1", "x");
    d.commit().unwrap();
    assert!(
        d.read_records("eddy-test-s-repartition").is_empty(),
        "no repartition topic for key-grouped aggregations"
    );
    let mut d = driver(tumbling(0, EmitMode::Final), 2);
    pipe(&mut d, 1, 0, "u1", "x");
    d.commit().unwrap();
    assert!(!d.read_records("eddy-test-t-repartition").is_empty());
}

/// A retained session that grew after it was first indexed, then closed in the pass that found
/// its old entry due, is emitted once and deleted once its retention from its real close time
/// has passed.
#[test]
fn a_retained_session_that_grew_is_emitted_once_and_deleted_after_its_retention() {
    let aggregation = AggregationBuilder::new("s", "events", "out")
        .session(10_000)
        .grace(0)
        .retention(30_000)
        .group_by("user")
        .aggregate("n", AggregateKind::Count)
        .build();
    let mut d = driver(aggregation, 1);
    pipe(&mut d, 0, 1_000, "u1", "x");
    d.commit().unwrap(); // indexed to close at 1_001 + 10_000
    pipe(&mut d, 0, 8_000, "u1", "x");
    d.commit().unwrap(); // grown to end 8_001: the entry stays at 11_001
                         // Past 11_001 and the session's real close time, 18_001, at once: the entry found due at
                         // 11_001 leads to the grown session, which closes in the same pass.
    pipe(&mut d, 0, 30_000, "other", "x");
    d.commit().unwrap();
    let finals: Vec<_> = d
        .read_aggregates("out")
        .into_iter()
        .filter(|r| r.is_final && r.group["user"] == "u1")
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        (finals[0].window.start, finals[0].window.end),
        (1_000, 8_000),
        "first to last event"
    );
    assert_eq!(finals[0].values["n"], 2);
    assert_eq!(
        d.store("s").iter().filter(|r| r.0["user"] == "u1").count(),
        1,
        "kept for retention"
    );
    pipe(&mut d, 0, 48_002, "other", "x"); // past 18_001 + 30_000: deleted
    d.commit().unwrap();
    assert_eq!(
        d.store("s").iter().filter(|r| r.0["user"] == "u1").count(),
        0,
        "deleted after retention"
    );
    assert!(
        d.read_aggregates("out")
            .iter()
            .all(|r| r.group["user"] != "u1"),
        "emitted once"
    );
}

#[test]
fn a_jump_of_stream_time_closes_the_windows_due_over_several_commits_each_once() {
    // Counted by kind, so through a repartition topic: the merge side closes them.
    let mut d = driver(tumbling(0, EmitMode::Final), 1).with_close_limit(4);
    for minute in 0..30 {
        pipe(&mut d, 0, minute * MIN, &format!("u{minute}"), "x");
    }
    // Stream time jumps an hour past them: the 30 windows come due at once.
    pipe(&mut d, 0, 90 * MIN, "u1", "x");
    let mut per_commit = Vec::new();
    let mut closed = Vec::new();
    for _ in 0..12 {
        d.commit().unwrap();
        let out = d.read_aggregates("out");
        per_commit.push(out.len());
        closed.extend(out);
    }
    assert!(
        per_commit.iter().all(|n| *n <= 4),
        "at most 4 windows a commit: {per_commit:?}"
    );
    let windows: Vec<i64> = closed.iter().map(|r| r.window.start / MIN).collect();
    assert_eq!(
        windows,
        (0..30).collect::<Vec<_>>(),
        "each window closed once, in order"
    );
    assert!(closed.iter().all(|r| r.is_final && r.values["n"] == 1));
}
