//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). `tests/fuzz_corpus.rs`
//! runs the same functions over the kept corpus, and over mutations of it, in the test command.
//! Whatever the bytes, they must not panic, and what they accept must keep the promises the rest
//! of eddy relies on: event times inside 1970..9999, window arithmetic that cannot overflow.

use crate::record::DecodePlan;
use crate::schema::MAX_EVENT_TIME_MS;
use crate::topology::Topology;
use std::sync::OnceLock;

/// A versioned source (seed 001's `domain.event` style): two topics, renames and defaults.
const VERSIONED: &str = r#"
[[source]]
name = "orders"
topics = ["order.created.v1", "order.created.v2"]
schema = "order_created"
time = { field = "timestamp", format = "epoch_s" }

[[source.version]]
version = 2
topic = "order.created.v2"
fields = { user_id = "customer_id" }
defaults = { total_amount = 0 }

[[aggregation]]
name = "orders.by_user"
source = "orders"
group_by = ["user_id"]
explode = "items"
window = { type = "hopping", size = "5m", advance = "1m" }
output = "out"
[aggregation.aggregates]
n = "count"
quantity = "sum(items.quantity)"
users = "distinct(user_id)"
"#;

/// A free-form JSON source with nanosecond epochs and a session window.
const GENERIC: &str = r#"
[[source]]
name = "events"
topic = "events"
time = { field = "ts", format = "epoch_ns" }
max_future_skew = "1d"

[[aggregation]]
name = "events.sessions"
source = "events"
group_by = ["user"]
window = { type = "session", gap = "30m" }
output = "out"
[aggregation.aggregates]
n = "count"
biggest = "max(amount)"
"#;

fn plans() -> &'static [DecodePlan] {
    static PLANS: OnceLock<Vec<DecodePlan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        [
            (
                "topology/orders.toml",
                include_str!("../topology/orders.toml"),
            ),
            (
                "topology/analytics.toml",
                include_str!("../topology/analytics.toml"),
            ),
            ("versioned.toml", VERSIONED),
            ("generic.toml", GENERIC),
        ]
        .iter()
        .flat_map(|(origin, text)| {
            let topology = Topology::from_text(*origin, text)
                .unwrap_or_else(|e| panic!("the fuzz topologies are valid: {e}"));
            topology
                .sources
                .iter()
                .map(|source| DecodePlan::for_source(&topology, source))
                .collect::<Vec<_>>()
        })
        .collect()
    })
}

/// Fuzz target `decode_record`. The first byte picks a source, whether the record has a Kafka
/// timestamp and the version of its topic; the next 8 bytes are that timestamp (little endian);
/// the rest is the record's value.
pub fn decode_record(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let plans = plans();
    let plan = &plans[usize::from(selector) % plans.len()];
    let (timestamp, value) = match rest.split_first_chunk::<8>() {
        Some((bytes, value)) => (i64::from_le_bytes(*bytes), value),
        None => (1_795_340_400_000, rest),
    };
    let kafka_timestamp = (selector & 0x80 == 0).then_some(timestamp);
    let topic_version = 1 + i64::from((selector >> 6) & 1);
    if let Ok(record) = plan.decode_from(value, kafka_timestamp, topic_version) {
        assert!(
            (0..=MAX_EVENT_TIME_MS).contains(&record.event_time_ms),
            "accepted an event time outside 1970..9999: {}",
            record.event_time_ms
        );
    }
}

/// Fuzz target `topology_file`: any text as a topology file. What validation accepts must plan
/// its decoding and assign windows at the extremes of event time without overflowing.
pub fn topology_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(topology) = Topology::from_text("fuzz.toml", text) else {
        return;
    };
    for source in &topology.sources {
        let _ = DecodePlan::for_source(&topology, source);
    }
    for aggregation in &topology.aggregations {
        for t in [0, 1, MAX_EVENT_TIME_MS / 2, MAX_EVENT_TIME_MS] {
            let _ = crate::window::max_window_end(&aggregation.window, t);
            crate::window::assign_windows(&aggregation.window, t, |window| {
                let _ =
                    crate::window::close_time(&aggregation.window, window, aggregation.grace_ms);
                let _ = window.end.checked_add(aggregation.retention_ms);
            });
        }
    }
    let _ = crate::topology::describe(&topology, "fuzz");
}
