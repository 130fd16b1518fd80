//! What an instance needs before its loop starts: its stable id and the topics it uses.

use crate::config::Config;
use crate::kafka::{InternalTopic, TopicAdmin};
use crate::task::CompiledTopology;
use crate::topology::{changelog_topic, internal_topics, nats_assignment_topics};
use std::collections::HashMap;
use std::time::Duration;

/// The transactional id of `instance` of `application_id`: stable across restarts, and known to
/// the other instances (which fence it when the instance leaves the group).
pub fn transactional_id(application_id: &str, instance: &str) -> String {
    format!("{application_id}-{instance}")
}

/// This instance's stable id: `group_instance_id`, else an id persisted in the state directory
/// (like Kafka Streams' process id). A restarted instance reuses it, so its transactional id is the
/// same and `init_transactions` aborts whatever its previous incarnation left open right away.
pub(crate) fn instance_id(config: &Config) -> Result<String, crate::Error> {
    if let Some(id) = &config.group_instance_id {
        return Ok(id.clone());
    }
    let dir = config.state_dir.join(&config.application_id);
    let path = dir.join("eddy.process.id");
    let state_dir_error = |source| crate::Error::StateDir {
        path: dir.clone(),
        source,
    };
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    std::fs::create_dir_all(&dir).map_err(state_dir_error)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff);
    std::fs::write(&path, &id).map_err(state_dir_error)?;
    Ok(id)
}

/// Creates internal topics and returns the partition count of every consumed topic.
pub(crate) fn prepare_topics(
    admin: &TopicAdmin,
    compiled: &CompiledTopology,
    config: &Config,
) -> Result<HashMap<String, i32>, crate::Error> {
    // A NATS source's assignment topic is an input eddy creates: one partition per split.
    let assignment: Vec<InternalTopic> =
        nats_assignment_topics(&compiled.application_id, &compiled.topology)
            .into_iter()
            .map(|(name, partitions)| InternalTopic {
                name,
                partitions,
                compacted: false,
                purged_by_eddy: false,
            })
            .collect();
    admin.create_topics(&assignment, config.replication_factor)?;
    let inputs = compiled.input_topics();
    let partitions = admin.require_topics(&inputs, Duration::from_secs(60))?;
    for topic in &assignment {
        if partitions.get(&topic.name) != Some(&topic.partitions) {
            return Err(crate::topology::TopologyError::invalid(
                format!("assignment topic {}", topic.name),
                "subjects",
                format!("{} filters", topic.partitions),
                format!(
                    "the {} partitions the topic was created with: splits are fixed once an application has run. To change the subjects, start a new application_id",
                    partitions.get(&topic.name).copied().unwrap_or(0)
                ),
            )
            .into());
        }
    }
    admin.create_topics(
        &planned_topics(compiled, &partitions),
        config.replication_factor,
    )?;
    Ok(partitions)
}

/// The topics an application creates besides its inputs: repartition topics and changelogs as
/// wide as the input they follow, output and late-record topics as wide as the widest input.
pub fn planned_topics(
    compiled: &CompiledTopology,
    partitions: &HashMap<String, i32>,
) -> Vec<InternalTopic> {
    let mut wanted = Vec::new();
    for (name, compacted) in internal_topics(&compiled.application_id, &compiled.topology) {
        let purged_by_eddy = compiled.repartition_source_topic(&name).is_some();
        let count = if let Some(source) = compiled.repartition_source_topic(&name) {
            partitions[source]
        } else if let Some((_, follows)) = compiled
            .stores()
            .into_iter()
            .find(|(store, _)| changelog_topic(&compiled.application_id, store) == name)
        {
            let source = compiled
                .repartition_source_topic(&follows)
                .unwrap_or(&follows)
                .to_string();
            partitions[&source]
        } else {
            1
        };
        wanted.push(InternalTopic {
            name,
            partitions: count,
            compacted,
            purged_by_eddy,
        });
    }
    let widest = partitions.values().copied().max().unwrap_or(1);
    for aggregation in &compiled.topology.aggregations {
        for topic in std::iter::once(&aggregation.output_topic)
            .chain(aggregation.late_records_topic.as_ref())
        {
            if !wanted.iter().any(|t| &t.name == topic) {
                wanted.push(InternalTopic {
                    name: topic.clone(),
                    partitions: widest,
                    compacted: false,
                    purged_by_eddy: false,
                });
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repartition_topics_are_kept_until_eddy_purges_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topology/orders.toml");
        let topology = crate::topology::Topology::from_file(path).unwrap();
        let compiled = CompiledTopology::new("app", topology);
        let partitions: HashMap<String, i32> = [("orders".to_string(), 3)].into();
        let planned = planned_topics(&compiled, &partitions);
        let repartition: Vec<&InternalTopic> = planned
            .iter()
            .filter(|t| compiled.repartition_source_topic(&t.name).is_some())
            .collect();
        assert!(!repartition.is_empty());
        for topic in &repartition {
            assert!(
                topic.purged_by_eddy,
                "{} gets retention.ms = -1",
                topic.name
            );
            assert_eq!(topic.partitions, 3);
        }
        assert!(
            planned
                .iter()
                .filter(|t| !repartition.iter().any(|r| r.name == t.name))
                .all(|t| !t.purged_by_eddy),
            "changelogs and outputs keep the broker's retention"
        );
    }
}
