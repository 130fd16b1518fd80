//! Names of the topics eddy creates for itself, following Kafka Streams' conventions.

use super::{Source, Topology};

/// `<application.id>-<aggregation>-repartition`: pre-aggregated partials keyed by group.
pub fn repartition_topic(application_id: &str, aggregation: &str) -> String {
    format!("{application_id}-{aggregation}-repartition")
}

/// `<application.id>-<store>-changelog`: compacted, one partition per task.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}{CHANGELOG_SUFFIX}")
}

/// How every changelog topic's name ends.
pub const CHANGELOG_SUFFIX: &str = "-changelog";

/// `<application.id>-nats-<source>`: one empty partition per split of a NATS source. Owning a
/// partition (in the consumer group) is owning the split, and its committed offset is the next
/// stream sequence to read, committed in the same transaction as the outputs.
pub fn nats_assignment_topic(application_id: &str, source: &str) -> String {
    format!("{application_id}-nats-{source}")
}

/// Every NATS source's assignment topic with its partition count (one per subject filter).
pub fn nats_assignment_topics(application_id: &str, topology: &Topology) -> Vec<(String, i32)> {
    topology
        .nats_sources()
        .map(|(source, nats)| {
            (
                nats_assignment_topic(application_id, &source.name),
                nats.subjects.len() as i32,
            )
        })
        .collect()
}

/// The dead-letter topic of a source: its own setting, else `<application.id>-dlq`.
pub fn dead_letter_topic(application_id: &str, source: &Source) -> String {
    source
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{application_id}-dlq"))
}

/// Every internal topic of a topology, with whether it is compacted.
pub fn internal_topics(application_id: &str, topology: &Topology) -> Vec<(String, bool)> {
    let mut topics = Vec::new();
    for aggregation in &topology.aggregations {
        if topology.needs_repartition(aggregation) {
            topics.push((repartition_topic(application_id, &aggregation.name), false));
        }
        topics.push((changelog_topic(application_id, &aggregation.name), true));
    }
    for source in &topology.sources {
        let dlq = dead_letter_topic(application_id, source);
        if !topics.iter().any(|(t, _)| *t == dlq) {
            topics.push((dlq, false));
        }
    }
    topics
}
