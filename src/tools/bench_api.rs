//! `eddy bench api`: query latency of the API over a long range, through the real HTTP listener.

use super::bench_process::{http_status, percentile};
use crate::aggregate::{Accumulator, Accumulators, HllSketch};
use crate::api::ApiState;
use crate::task::{AggregateRecord, WindowBounds};
use crate::topology::{AggregateKind, Topology};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

const EVENT_TYPES: [&str; 6] = [
    "page_view",
    "click",
    "search",
    "add_to_cart",
    "signup",
    "purchase",
];

/// One synthetic minute window of `aggregation` with `users` distinct users.
fn window(
    topology: &Topology,
    aggregation: &str,
    group: serde_json::Map<String, serde_json::Value>,
    start: i64,
    users: std::ops::Range<u32>,
) -> AggregateRecord {
    let spec = topology
        .aggregation(aggregation)
        .expect("shipped aggregation");
    let accumulators = Accumulators(
        spec.aggregates
            .iter()
            .map(|(_, kind)| match kind {
                AggregateKind::Count => Accumulator::Count(users.len() as u64 * 3),
                AggregateKind::Distinct { lg_k, .. } => {
                    let mut sketch = HllSketch::new(*lg_k);
                    for u in users.clone() {
                        sketch.update_str(&format!("user-{u}"));
                    }
                    Accumulator::Distinct(sketch, None)
                }
                _ => Accumulator::Count(0),
            })
            .collect(),
    );
    let names = spec.aggregates.iter().map(|(n, _)| n.as_str());
    AggregateRecord {
        aggregation: aggregation.into(),
        window: WindowBounds {
            start,
            end: start + 60_000,
        },
        group,
        values: accumulators.values_json_named(names.clone()),
        sketches: accumulators.sketches_json_named(names),
        theta_sketches: serde_json::Map::new(),
        is_final: true,
    }
}

/// Fills an index with `days` of minute windows (the shipped analytics topology's
/// `analytics.overall` and six `analytics.by_event_type` groups), then times `queries` requests
/// of `/api/v1/metrics` over the whole span, each with other non-aligned bounds.
pub fn api(
    days: i64,
    queries: usize,
    users_per_minute: u32,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let topology = Topology::from_files(files)?;
    let api = ApiState::new(&topology);
    let start = 1_795_000_000_000 / 86_400_000 * 86_400_000;
    let minutes = days * 1440;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let loading = Instant::now();
    {
        let mut index = api.index.lock().expect("index lock");
        for m in 0..minutes {
            let at = start + m * 60_000;
            let first = rng.random_range(0..50_000u32);
            let overall = window(
                &topology,
                "analytics.overall",
                Default::default(),
                at,
                first..first + users_per_minute,
            );
            index.insert(&overall).map_err(anyhow::Error::msg)?;
            for (i, t) in EVENT_TYPES.iter().enumerate() {
                let group = serde_json::json!({ "eventType": t })
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let from = first + i as u32 * users_per_minute / 6;
                let record = window(
                    &topology,
                    "analytics.by_event_type",
                    group,
                    at,
                    from..from + users_per_minute / 6,
                );
                index.insert(&record).map_err(anyhow::Error::msg)?;
            }
        }
    }
    let load_secs = loading.elapsed().as_secs_f64();
    let addr = crate::telemetry::serve_http(
        "127.0.0.1:0",
        None,
        crate::telemetry::Health::default(),
        Some(api),
    )?
    .to_string();
    let fmt = crate::record::format_rfc3339_ms;
    let mut latencies = Vec::with_capacity(queries);
    let mut first_ms = 0.0;
    for q in 0..=queries {
        // Bounds off the minute and the hour, so every query merges edge windows and hours too.
        let offset = rng.random_range(0..3_600_000i64);
        let (from, to) = (
            start + offset,
            start + minutes * 60_000 - rng.random_range(0..3_600_000i64),
        );
        let path = format!("/api/v1/metrics?from={}&to={}", fmt(from), fmt(to));
        let began = Instant::now();
        let status = http_status(&addr, &path)?;
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status == 200, "GET {path} answered {status}");
        if q == 0 {
            first_ms = ms;
        } else {
            latencies.push(ms);
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!("index: {} windows ({days} days of minute windows, analytics.overall + 6 event types, {users_per_minute} users/minute) loaded in {load_secs:.1} s", minutes * 7);
    println!("GET /api/v1/metrics over {days} days (~{} minute windows per aggregation), {queries} queries through HTTP:", minutes);
    println!("  first (cold rollups): {first_ms:.1} ms");
    println!(
        "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!(
        "  peak RSS {:.0} MiB",
        super::peak_rss_bytes().unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}
