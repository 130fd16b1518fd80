//! An aggregation resolved against its source's decode plan, shared read-only by all its tasks.

use crate::aggregate::CompiledAggregate;
use crate::record::{DecodePlan, DecodedRecord, FieldRef, GroupKey};
use crate::topology::{
    changelog_topic, repartition_topic, Aggregation, EmitMode, Topology, WindowSpec,
};

pub struct CompiledAggregation {
    pub name: String,
    pub window: WindowSpec,
    pub grace_ms: i64,
    pub retention_ms: i64,
    pub emit: EmitMode,
    pub aggregates: Vec<CompiledAggregate>,
    pub group_names: Vec<String>,
    group_refs: Vec<FieldRef>,
    filter: Option<(FieldRef, Vec<serde_json::Value>)>,
    pub explode: bool,
    pub output_topic: String,
    pub late_records_topic: Option<String>,
    pub changelog_topic: String,
    /// Present when partials go through a repartition topic.
    pub repartition_topic: Option<String>,
}

impl CompiledAggregation {
    pub fn compile(
        application_id: &str,
        topology: &Topology,
        aggregation: &Aggregation,
        plan: &DecodePlan,
    ) -> CompiledAggregation {
        CompiledAggregation {
            name: aggregation.name.clone(),
            window: aggregation.window,
            grace_ms: aggregation.grace_ms,
            retention_ms: aggregation.retention_ms,
            emit: aggregation.emit,
            aggregates: CompiledAggregate::compile(&aggregation.aggregates, plan),
            group_names: aggregation.group_by.clone(),
            group_refs: aggregation
                .group_by
                .iter()
                .map(|f| plan.resolve(f))
                .collect(),
            filter: aggregation
                .filter
                .as_ref()
                .map(|f| (plan.resolve(&f.field), f.values.clone())),
            explode: aggregation.explode.is_some(),
            output_topic: aggregation.output_topic.clone(),
            late_records_topic: aggregation.late_records_topic.clone(),
            changelog_topic: changelog_topic(application_id, &aggregation.name),
            repartition_topic: topology
                .needs_repartition(aggregation)
                .then(|| repartition_topic(application_id, &aggregation.name)),
        }
    }

    /// Whether a row passes the filter.
    #[inline]
    pub fn accepts(&self, record: &DecodedRecord<'_>, item: Option<usize>) -> bool {
        match &self.filter {
            None => true,
            Some((field, values)) => record
                .get(*field, item)
                .is_some_and(|v| values.iter().any(|json| v.matches_json(json))),
        }
    }

    /// Writes the row's group key into `buf` (cleared first).
    #[inline]
    pub fn group_key_into(
        &self,
        record: &DecodedRecord<'_>,
        item: Option<usize>,
        buf: &mut Vec<u8>,
    ) {
        buf.clear();
        for field in &self.group_refs {
            GroupKey::encode_value(buf, record.get(*field, item));
        }
    }
}
