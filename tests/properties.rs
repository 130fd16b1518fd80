//! For random event streams, partitionings and commit points, eddy's final aggregates equal a
//! naive reference computed from the same events: exact counts and sums, equal HLL sketches,
//! Theta sketches holding exactly the window's users.

use eddy::aggregate::{ExactSum, HllSketch};
use eddy::testing::TopologyTestDriver;
use eddy::topology::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
struct Event {
    partition: i32,
    ts: i64,
    user: u8,
    kind: u8,
    amount_cents: i64,
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (0..3i32, 0..120i64, 0..40u8, 0..4u8, -500..5_000i64),
        1..300,
    )
    // A 5 s grid makes records land exactly on window ends and closing times, where off-by-one bugs live.
    .prop_map(|v| {
        v.into_iter()
            .map(|(partition, step, user, kind, amount_cents)| Event {
                partition,
                ts: step * 5_000,
                user,
                kind,
                amount_cents,
            })
            .collect()
    })
}

#[derive(Default)]
struct Reference {
    count: u64,
    sum: ExactSum,
    max: Option<f64>,
    users: Option<HllSketch>,
    user_ids: BTreeSet<u8>,
}

fn window_starts(spec: &WindowSpec, ts: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    eddy::window::assign_windows(spec, ts, |w| out.push((w.start, w.end)));
    out
}

/// The semantics, naively: per partition, stream time is the max event time seen so far; a record
/// updates each of its windows whose end + grace is still after that stream time.
fn reference(events: &[Event], spec: &WindowSpec, grace: i64) -> BTreeMap<(i64, u8), Reference> {
    let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out: BTreeMap<(i64, u8), Reference> = BTreeMap::new();
    for e in events {
        let st = stream_time.entry(e.partition).or_insert(i64::MIN);
        *st = (*st).max(e.ts);
        for (start, end) in window_starts(spec, e.ts) {
            if end + grace <= *st {
                continue;
            }
            let r = out.entry((start, e.kind)).or_default();
            r.count += 1;
            r.sum.add_float(e.amount_cents as f64 / 100.0);
            let amount = e.amount_cents as f64 / 100.0;
            r.max = Some(r.max.map_or(amount, |m| m.max(amount)));
            r.users
                .get_or_insert_with(|| HllSketch::new(12))
                .update_str(&format!("user-{}", e.user));
            r.user_ids.insert(e.user);
        }
    }
    out
}

fn run_with_cache(
    events: &[Event],
    spec: WindowSpec,
    grace: i64,
    commit_every: usize,
    cache_max_bytes: usize,
) -> Vec<eddy::task::AggregateRecord> {
    let source = SourceBuilder::new("events", "events", Schema::Json)
        .time_field("ts", TimeFormat::EpochMillis)
        .build();
    let mut builder = AggregationBuilder::new("agg", "events", "out")
        .grace(grace)
        .group_by("kind");
    builder = match spec {
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
        } => builder.hopping(size_ms, advance_ms),
        WindowSpec::Tumbling { size_ms } => builder.tumbling(size_ms),
        WindowSpec::Session { gap_ms } => builder.session(gap_ms),
    };
    let aggregation = builder
        .aggregate("n", AggregateKind::Count)
        .aggregate("amount", AggregateKind::Sum("amount".into()))
        .aggregate("max_amount", AggregateKind::Max("amount".into()))
        .aggregate(
            "users",
            AggregateKind::Distinct {
                field: "user".into(),
                lg_k: 12,
                // Theta bytes, like everything else, must not depend on commits or the cache.
                theta_lg_k: Some(12),
            },
        )
        .build();
    let topology = Topology::builder()
        .source(source)
        .aggregation(aggregation)
        .build()
        .unwrap();
    let mut driver = TopologyTestDriver::new(topology, 3).with_cache_max_bytes(cache_max_bytes);
    for (i, e) in events.iter().enumerate() {
        let value = serde_json::json!({"ts": e.ts, "user": format!("user-{}", e.user), "kind": e.kind, "amount": e.amount_cents as f64 / 100.0});
        driver
            .pipe("events", e.partition, None, &value.to_string(), None)
            .unwrap();
        if i % commit_every == commit_every - 1 {
            driver.commit().unwrap();
        }
    }
    // Far-future records on every partition close every window.
    for partition in 0..3 {
        driver
            .pipe(
                "events",
                partition,
                None,
                r#"{"ts": 100000000, "user": "x", "kind": 99, "amount": 0}"#,
                None,
            )
            .unwrap();
    }
    driver.commit().unwrap();
    driver
        .read_aggregates("out")
        .into_iter()
        .filter(|r| r.group["kind"] != 99)
        .collect()
}

fn check(
    events: Vec<Event>,
    spec: WindowSpec,
    grace: i64,
    commit_every: usize,
    cache_max_bytes: usize,
) -> Result<(), TestCaseError> {
    let expected = reference(&events, &spec, grace);
    let got = run_with_cache(&events, spec, grace, commit_every, cache_max_bytes);
    prop_assert_eq!(
        got.len(),
        expected.len(),
        "one final record per (window, group)"
    );
    for record in &got {
        prop_assert!(record.is_final);
        let kind = record.group["kind"].as_u64().unwrap() as u8;
        let r = expected
            .get(&(record.window.start, kind))
            .expect("emitted window exists in the reference");
        prop_assert_eq!(record.values["n"].as_u64().unwrap(), r.count);
        prop_assert_eq!(&record.values["amount"], &r.sum.to_json());
        prop_assert_eq!(record.values["max_amount"].as_f64(), r.max);
        let sketch_b64 = record.sketches["users"].as_str().unwrap();
        use base64::Engine;
        let sketch = HllSketch::from_bytes(
            &base64::engine::general_purpose::STANDARD
                .decode(sketch_b64)
                .unwrap(),
        )
        .unwrap();
        let reference_sketch = r.users.as_ref().unwrap();
        prop_assert!(
            sketch == *reference_sketch,
            "sketch differs from the reference sketch of the same users"
        );
        prop_assert_eq!(
            record.values["users"].as_u64().unwrap(),
            reference_sketch.canonical().estimate().round() as u64
        );
        // At most 40 users: the Theta sketch is in exact mode and counts them exactly.
        let theta = eddy::aggregate::ThetaSketch::from_bytes(
            &base64::engine::general_purpose::STANDARD
                .decode(record.theta_sketches["users"].as_str().unwrap())
                .unwrap(),
            12,
        )
        .unwrap();
        prop_assert_eq!(theta.estimate(), r.user_ids.len() as f64);
    }
    Ok(())
}

/// Records that are not late for sessions: per partition, a record is late when its own end (its
/// time + 1 ms) plus grace is not after the partition's stream time (see
/// `eddy::window::max_window_end`).
fn on_time(events: &[Event], grace: i64) -> u64 {
    let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
    events
        .iter()
        .filter(|e| {
            let st = stream_time.entry(e.partition).or_insert(i64::MIN);
            *st = (*st).max(e.ts);
            e.ts + 1 + grace > *st
        })
        .count() as u64
}

/// What a run emitted, comparable across runs: every record without its sketches, and the
/// sketches decoded (equal sketches may list their coupons in another order), sorted.
fn emitted(records: Vec<eddy::task::AggregateRecord>) -> Vec<(String, Vec<HllSketch>)> {
    use base64::Engine;
    let mut out: Vec<(String, Vec<HllSketch>)> = records
        .into_iter()
        .map(|mut r| {
            let sketches = std::mem::take(&mut r.sketches)
                .into_iter()
                .map(|(_, b64)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_str().unwrap())
                        .unwrap();
                    HllSketch::from_bytes(&bytes).unwrap()
                })
                .collect();
            (serde_json::to_string(&r).unwrap(), sketches)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Sessions read back from the store (a cache of 0 bytes evicts every clean entry and every
    /// group's session list at each commit) close exactly as when everything stays cached.
    #[test]
    fn sessions_read_back_from_the_store_equal_cached_sessions(events in events(), grace in prop::sample::select(vec![0i64, 5_000]), commit_every in 1usize..50) {
        let spec = WindowSpec::Session { gap_ms: 20_000 };
        let cached = emitted(run_with_cache(&events, spec, grace, commit_every, 16 << 20));
        let evicted = emitted(run_with_cache(&events, spec, grace, commit_every, 0));
        prop_assert!(!cached.is_empty());
        // Every record that was not late is in exactly one closed session.
        let counted: u64 = cached
            .iter()
            .map(|(record, _)| {
                let record: serde_json::Value = serde_json::from_str(record).unwrap();
                record["values"]["n"].as_u64().unwrap()
            })
            .sum();
        prop_assert_eq!(counted, on_time(&events, grace));
        prop_assert_eq!(cached.len(), evicted.len());
        for (a, b) in cached.iter().zip(&evicted) {
            prop_assert_eq!(&a.0, &b.0);
            prop_assert!(a.1 == b.1, "sketches of {} differ", a.0);
        }
    }

    /// Windows read back from the store (nothing stays cached between commits) match the
    /// reference too.
    #[test]
    fn tumbling_read_back_from_the_store_matches_reference(events in events(), commit_every in 1usize..50) {
        check(events, WindowSpec::Tumbling { size_ms: 60_000 }, 5_000, commit_every, 0)?;
    }

    #[test]
    fn tumbling_matches_reference(events in events(), grace in prop::sample::select(vec![0i64, 5_000, 60_000]), commit_every in 1usize..50) {
        check(events, WindowSpec::Tumbling { size_ms: 60_000 }, grace, commit_every, 16 << 20)?;
    }

    #[test]
    fn hopping_matches_reference(events in events(), grace in prop::sample::select(vec![0i64, 30_000]), commit_every in 1usize..50) {
        check(events, WindowSpec::Hopping { size_ms: 120_000, advance_ms: 30_000 }, grace, commit_every, 16 << 20)?;
    }
}
