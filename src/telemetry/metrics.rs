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
pub const BATCH_TIME_PER_RECORD: &str = "eddy_batch_processing_seconds_per_record";
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
pub const READY: &str = "eddy_ready";
pub const WATERMARK: &str = "eddy_watermark_seconds";
pub const LOOP_TIME_RATIO: &str = "eddy_loop_time_ratio";
pub const ROLLBACK_REWOUND_OFFSETS: &str = "eddy_rollback_rewound_offsets_total";
pub const STALE_RECORDS_DROPPED: &str = "eddy_stale_records_dropped_total";
pub const COMMIT_BACKPRESSURE: &str = "eddy_commit_backpressure_total";
pub const API_INDEX_ERRORS: &str = "eddy_api_index_errors_total";
pub const NATS_PENDING: &str = "eddy_nats_pending_messages";
pub const NATS_SKIPPED: &str = "eddy_nats_skipped_messages_total";
pub const STANDBY_TASKS: &str = "eddy_standby_tasks";
pub const STANDBY_LAG: &str = "eddy_standby_lag_records";
pub const STANDBY_RECORDS: &str = "eddy_standby_records_total";
pub const STANDBY_PROMOTED: &str = "eddy_standby_promoted_total";
pub const STANDBY_DISCARDED: &str = "eddy_standby_discarded_total";
pub const DEPARTED_FENCED: &str = "eddy_departed_instances_fenced_total";

/// Every metric: (name, type, labels, meaning). The metrics table in docs/monitoring.md is checked
/// against it.
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
        BATCH_TIME_PER_RECORD,
        "histogram",
        "",
        "One observation per polled batch: the batch's processing time divided by its records (a throughput figure, not a per-record latency distribution).",
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
        ROLLBACK_REWOUND_OFFSETS,
        "counter",
        "",
        "Input offsets rollbacks rewound: work since the last commit that is processed again.",
    ),
    (
        COMMIT_BACKPRESSURE,
        "counter",
        "",
        "Times fetching paused until the commit in flight settled: it held back over 64 MiB of output or took longer than ten commit intervals (at least 1 s).",
    ),
    (
        STALE_RECORDS_DROPPED,
        "counter",
        "",
        "Records polled before a rollback sought their partition back, dropped unprocessed (fetched again from the committed offset).",
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
    (
        WATERMARK,
        "gauge",
        "aggregation",
        "The event time (Unix seconds) up to which this instance closed the aggregation's windows: the slowest of its tasks. Stalls while an input partition holds windows back.",
    ),
    (
        LOOP_TIME_RATIO,
        "gauge",
        "phase",
        "Share of the main loop's wall time over the last commit interval: phase = wait (for a fetch), poll (taking, copying and handing a batch to the workers), process (waiting for the workers, who run while the loop polls), send, commit, restore, other. A high wait with lag left means the consumer's fetches are the bottleneck, a high process the workers, a high poll the loop's own thread.",
    ),
    (
        READY,
        "gauge",
        "",
        "1 while the instance is ready (joined, every task restored, brokers reachable), else 0.",
    ),
    (
        API_INDEX_ERRORS,
        "counter",
        "kind",
        "What the query API's index could not read from the output topics: kind = read (polling or partition metadata failed; answers say `index.degraded` until a read succeeds), undecodable (a record that is not an eddy aggregate), rejected (an aggregate whose values do not fit its aggregation). Skipped records are missing from answers.",
    ),
    (
        NATS_PENDING,
        "gauge",
        "source, filter",
        "A NATS split's lag: messages of its subject filter in the stream past the last one read, as the server reported with that message (0 once a pull finds nothing more).",
    ),
    (
        NATS_SKIPPED,
        "counter",
        "source, filter",
        "Stream sequences a NATS split skipped because the stream no longer held its committed position (the whole gap, whichever subjects it held) (only with `on_missing = \"skip\"`; otherwise eddy stops).",
    ),    (
        STANDBY_TASKS,
        "gauge",
        "",
        "Warm copies of other instances' tasks this instance keeps (`num_standby_replicas`).",
    ),
    (
        STANDBY_LAG,
        "gauge",
        "task",
        "Changelog records a standby task was behind its changelogs' ends when it last looked.",
    ),
    (
        STANDBY_RECORDS,
        "counter",
        "store",
        "Changelog records applied to standby tasks.",
    ),
    (
        STANDBY_PROMOTED,
        "counter",
        "",
        "Tasks that started here with a standby copy kept here (their restore read only what it lacked).",
    ),
    (
        STANDBY_DISCARDED,
        "counter",
        "",
        "Standby copies deleted and restored from scratch because their changelog no longer held their position (truncated or recreated).",
    ),
    (
        DEPARTED_FENCED,
        "counter",
        "",
        "Instances seen leaving the group whose producer this instance fenced, so that the transaction each left open was aborted at once (exactly-once).",
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

/// Histogram buckets (seconds) per histogram, each fitting its range, so Prometheus gets
/// `_bucket` series that `histogram_quantile` can resolve.
fn buckets(name: &str) -> &'static [f64] {
    match name {
        BATCH_TIME_PER_RECORD => &[
            0.000_001,
            0.000_002_5,
            0.000_005,
            0.000_01,
            0.000_025,
            0.000_05,
            0.000_1,
            0.000_25,
            0.000_5,
            0.001,
            0.01,
        ],
        // From a window's end to its final: grace for fixed windows (seconds to minutes),
        // gap plus grace for sessions (up to hours).
        EVENT_TO_EMIT_LATENCY => &[
            0.1, 1.0, 5.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1_200.0, 1_800.0,
            2_400.0, 3_600.0, 7_200.0, 21_600.0, 86_400.0,
        ],
        APPEND_TO_COMMIT_LATENCY => &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ],
        COMMIT_LATENCY => &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
        RESTORE_SECONDS => &[
            0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1_800.0, 3_600.0,
        ],
        _ => &[0.001, 0.01, 0.1, 1.0, 10.0, 60.0],
    }
}

/// How long a gauge that is no longer set stays exported: per-partition and per-task gauges of
/// revoked tasks disappear after this, so sums across instances count only current owners.
/// Live gauges are set at least every 10 s.
pub const STALE_GAUGE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Installs the process-wide Prometheus recorder, describes every metric, and starts the
/// exporter's upkeep (draining histograms, dropping stale gauges) every 5 s.
pub fn install_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use metrics_util::MetricKindMask;
    let mut builder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE_AFTER))
        .set_buckets(buckets(""))
        .map_err(|e| e.to_string())?;
    for &(name, kind, _, _) in CATALOG {
        if kind == "histogram" {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets(name))
                .map_err(|e| e.to_string())?;
        }
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| format!("could not install the metrics recorder: {e}"))?;
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("could not start the metrics upkeep thread: {e}"))?;
    Ok(handle)
}
