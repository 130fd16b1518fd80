//! `eddy topology describe`: the operator graph as text.

use super::internal_topics::{changelog_topic, dead_letter_topic, repartition_topic};
use super::*;
use std::fmt::Write;

fn window_text(window: &WindowSpec) -> String {
    match *window {
        WindowSpec::Tumbling { size_ms } => format!("tumbling {}", format_duration_ms(size_ms)),
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
        } => format!(
            "hopping {} every {}",
            format_duration_ms(size_ms),
            format_duration_ms(advance_ms)
        ),
        WindowSpec::Session { gap_ms } => format!("session, gap {}", format_duration_ms(gap_ms)),
    }
}

fn describe_versions(source: &Source) -> String {
    let mut parts = Vec::new();
    for known in source.known_versions() {
        let mut text = format!("v{known}");
        if let Some(v) = source.versions.iter().find(|v| v.version == known) {
            let mut notes = Vec::new();
            if let Some(topic) = &v.topic {
                let kind = if source.nats.is_some() {
                    "subject"
                } else {
                    "topic"
                };
                notes.push(format!("{kind} {topic}"));
            }
            notes.extend(
                v.fields
                    .iter()
                    .map(|(used, written)| format!("{used} <- {written}")),
            );
            notes.extend(
                v.defaults
                    .iter()
                    .map(|(used, value)| format!("{used} default {value}")),
            );
            if !notes.is_empty() {
                text.push_str(&format!(" ({})", notes.join(", ")));
            }
        }
        parts.push(text);
    }
    parts.join(", ")
}

/// Renders sources, per-partition tasks, stores, internal topics and sinks.
///
/// # Examples
/// ```
/// use eddy::topology::*;
/// let topology = Topology::builder()
///     .source(SourceBuilder::new("clicks", "clicks", Schema::Json).build())
///     .aggregation(AggregationBuilder::new("clicks.per_minute", "clicks", "click-counts")
///         .aggregate("clicks", AggregateKind::Count).build())
///     .build().unwrap();
/// let text = describe(&topology, "eddy");
/// assert!(text.contains("eddy-clicks.per_minute-repartition"));
/// assert!(text.contains("eddy-clicks.per_minute-changelog"));
/// ```
pub fn describe(topology: &Topology, application_id: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "application.id: {application_id}");
    let topology = topology.clone().bind(application_id);
    for source in &topology.sources {
        let _ = writeln!(
            out,
            "\nSource `{}`: {} ({} JSON{}), event time {}",
            source.name,
            match (&source.nats, source.topics.as_slice()) {
                (Some(nats), topics) => format!(
                    "NATS JetStream stream `{}`, {} split(s): `{}` (split i is partition i of assignment topic `{}`, whose committed offset is the split's next stream sequence)",
                    nats.stream,
                    nats.subjects.len(),
                    nats.subjects.join("`, `"),
                    topics.join("")
                ),
                (None, [one]) => format!("topic `{one}`"),
                (None, many) => format!("topics `{}` (one stream)", many.join("`, `")),
            },
            source.schema.name(),
            source
                .key_field
                .as_ref()
                .map(|k| format!(", keyed by `{k}`"))
                .unwrap_or_default(),
            match &source.time {
                EventTime::Field { field, format } => format!("`{field}` ({})", format.name()),
                EventTime::KafkaTimestamp => "the Kafka record timestamp".into(),
            }
        );
        let _ = writeln!(
            out,
            "  decode errors (and event times over {} ahead of the wall clock): {} -> {}",
            format_duration_ms(source.max_future_skew_ms),
            match source.on_decode_error {
                DecodeErrorPolicy::DeadLetter => "dead-letter",
                DecodeErrorPolicy::Skip => "skip",
                DecodeErrorPolicy::Fail => "fail",
            },
            dead_letter_topic(application_id, source)
        );
        if let Some(def) = source.schema.def() {
            let fields: Vec<String> = def
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{}{}: {}",
                        f.name,
                        if f.required { "" } else { "?" },
                        f.ty.describe()
                    )
                })
                .collect();
            let _ = writeln!(out, "  fields: {}", fields.join(", "));
        }
        let _ = writeln!(out, "  versions: {}", describe_versions(source));
        for topic in &source.topics {
            let _ = writeln!(
                out,
                "  task {topic}-<partition> (one per input partition): decode"
            );
        }
        for aggregation in topology
            .aggregations
            .iter()
            .filter(|a| a.source == source.name)
        {
            let aggregates: Vec<String> = aggregation
                .aggregates
                .iter()
                .map(|(n, k)| format!("{n} = {k}"))
                .collect();
            let mut steps = Vec::new();
            if let Some(filter) = &aggregation.filter {
                steps.push(format!(
                    "filter {} in {:?}",
                    filter.field,
                    filter
                        .values
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                ));
            }
            if let Some(explode) = &aggregation.explode {
                steps.push(format!("explode {explode}"));
            }
            steps.push(format!("group by [{}]", aggregation.group_by.join(", ")));
            steps.push(window_text(&aggregation.window));
            let _ = writeln!(
                out,
                "  -> Aggregation `{}`: {}; grace {}, emit {}",
                aggregation.name,
                steps.join(" -> "),
                format_duration_ms(aggregation.grace_ms),
                if aggregation.emit == EmitMode::Final {
                    "final"
                } else {
                    "update"
                }
            );
            let _ = writeln!(out, "       aggregates: {}", aggregates.join(", "));
            let store = format!(
                "store `{}` (RocksDB, one per task) with changelog `{}`",
                aggregation.name,
                changelog_topic(application_id, &aggregation.name)
            );
            if topology.needs_repartition(aggregation) {
                let _ = writeln!(out, "       pre-aggregate per partition, flush partials at each commit -> repartition topic `{}` (keyed by group)",
                    repartition_topic(application_id, &aggregation.name));
                let _ = writeln!(out, "       task {}-<partition> (one per repartition partition): merge partials into {store}",
                    repartition_topic(application_id, &aggregation.name));
            } else {
                let _ = writeln!(
                    out,
                    "       grouped by the source key: no repartition; {store} in the input task"
                );
            }
            if let Some(late) = &aggregation.late_records_topic {
                let _ = writeln!(out, "       late records -> `{late}`");
            }
            let _ = writeln!(out, "       sink -> topic `{}`", aggregation.output_topic);
        }
    }
    out
}
