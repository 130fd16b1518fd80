//! Every metric eddy exports, named by Prometheus conventions. Labels are bounded: topic,
//! partition, aggregation, task, store, result, kind: never a group value or a user id.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const RECORDS_CONSUMED: &str = "eddy_records_consumed_total";
pub const RECORDS_PROCESSED: &str = "eddy_records_processed_total";
pub const RECORDS_EMITTED: &str = "eddy_records_emitted_total";
pub const RECORDS_DEAD_LETTERED: &str = "eddy_records_dead_lettered_total";
pub const RECORDS_SKIPPED: &str = "eddy_records_skipped_total";
pub const LATE_RECORDS_DROPPED: &str = "eddy_late_records_dropped_total";
pub const WINDOWS_EMITTED: &str = "eddy_windows_emitted_total";
pub const PROCESSING_LATENCY: &str = "eddy_processing_latency_seconds";
pub const EVENT_TO_EMIT_LATENCY: &str = "eddy_event_to_emit_latency_seconds";
pub const APPEND_TO_COMMIT_LATENCY: &str = "eddy_append_to_commit_latency_seconds";
pub const COMMIT_LATENCY: &str = "eddy_commit_latency_seconds";
pub const COMMITS: &str = "eddy_commits_total";
pub const TRANSACTIONS: &str = "eddy_transactions_total";
pub const CONSUMER_LAG: &str = "eddy_consumer_lag_records";
pub const ACTIVE_TASKS: &str = "eddy_active_tasks";
pub const REBALANCES: &str = "eddy_rebalances_total";
pub const RESTORE_RECORDS: &str = "eddy_restore_records_total";
pub const RESTORE_SECONDS: &str = "eddy_restore_duration_seconds";
pub const STATE_KEYS: &str = "eddy_state_store_keys";
pub const STATE_BYTES: &str = "eddy_state_store_bytes";

/// Every metric: (name, type, labels, meaning). The README's metrics table is checked against it.
pub const CATALOG: &[(&str, &str, &str, &str)] = &[
    (
        RECORDS_CONSUMED,
        "counter",
        "topic, partition",
        "Records polled from input and repartition topics.",
    ),
    (
        RECORDS_PROCESSED,
        "counter",
        "topic, partition",
        "Records processed by tasks (decoded or dead-lettered).",
    ),
    (
        RECORDS_EMITTED,
        "counter",
        "topic, kind",
        "Records produced: kind = aggregate, repartition, changelog, dead_letter, late.",
    ),
    (
        RECORDS_DEAD_LETTERED,
        "counter",
        "topic",
        "Input records that could not be decoded and went to the dead-letter topic.",
    ),
    (
        RECORDS_SKIPPED,
        "counter",
        "topic",
        "Input records that could not be decoded and were skipped (on_decode_error = skip).",
    ),
    (
        LATE_RECORDS_DROPPED,
        "counter",
        "aggregation",
        "Records that arrived after their windows closed (stream time past end + grace).",
    ),
    (
        WINDOWS_EMITTED,
        "counter",
        "aggregation, result",
        "Aggregates emitted: result = final or update.",
    ),
    (
        PROCESSING_LATENCY,
        "histogram",
        "",
        "Time to process one polled batch, per record.",
    ),
    (
        EVENT_TO_EMIT_LATENCY,
        "histogram",
        "",
        "Wall-clock time from a window's end to its final emission (event time to output).",
    ),
    (
        APPEND_TO_COMMIT_LATENCY,
        "histogram",
        "",
        "Wall-clock time from broker append (record timestamp) to the commit that covered it.",
    ),
    (
        COMMIT_LATENCY,
        "histogram",
        "",
        "Duration of a commit: flush, produce, offsets, commit.",
    ),
    (
        COMMITS,
        "counter",
        "result",
        "Commits: result = committed or failed.",
    ),
    (
        TRANSACTIONS,
        "counter",
        "result",
        "Kafka transactions: result = committed or aborted.",
    ),
    (
        CONSUMER_LAG,
        "gauge",
        "topic, partition",
        "Records between the consumer position and the end of each assigned partition.",
    ),
    (ACTIVE_TASKS, "gauge", "", "Tasks running in this instance."),
    (
        REBALANCES,
        "counter",
        "kind",
        "Rebalance callbacks: kind = assign, revoke or lost.",
    ),
    (
        RESTORE_RECORDS,
        "counter",
        "store",
        "Changelog records replayed into local state.",
    ),
    (
        RESTORE_SECONDS,
        "histogram",
        "store",
        "Time to restore one task's store.",
    ),
    (
        STATE_KEYS,
        "gauge",
        "store, task",
        "Keys in a RocksDB store (RocksDB's estimate).",
    ),
    (
        STATE_BYTES,
        "gauge",
        "store, task",
        "Bytes of a RocksDB store on disk plus memtables.",
    ),
];

/// Registers descriptions, so /metrics carries HELP and TYPE lines.
pub fn describe() {
    for &(name, kind, _, help) in CATALOG {
        match kind {
            "counter" => describe_counter!(name, help),
            "gauge" => describe_gauge!(name, help),
            _ => describe_histogram!(name, Unit::Seconds, help),
        }
    }
}

/// Histogram buckets (seconds), so Prometheus gets `_bucket` series for `histogram_quantile`.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    15.0, 60.0,
];

/// Installs the process-wide Prometheus recorder and describes every metric.
pub fn install_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("could not install the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}
