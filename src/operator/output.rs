//! What a task hands to the commit path: records to produce and store writes to apply afterwards.

use super::compiled::CompiledAggregation;
use crate::aggregate::Accumulators;
use crate::state::StateKey;
use crate::state::StoreWrite;
use crate::topology::WindowSpec;

/// Why a record is produced; the commit path and metrics treat each kind differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutgoingKind {
    Aggregate { is_final: bool },
    Repartition,
    Changelog,
    DeadLetter,
    Late,
}

/// One record to produce inside the commit's transaction.
#[derive(Clone, Debug)]
pub struct OutgoingRecord {
    pub kind: OutgoingKind,
    pub topic: String,
    /// `None`: the producer's partitioner picks one from the key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// For final aggregates: the window's end in event time (for the event-to-emit latency metric).
    pub window_end_ms: Option<i64>,
}

/// Store writes to apply to local state once the commit that carries them has succeeded.
pub struct PendingStateWrites {
    pub store: String,
    pub writes: Vec<StoreWrite>,
}

/// Everything a task produced since the last commit.
#[derive(Default)]
pub struct TaskOutput {
    pub records: Vec<OutgoingRecord>,
    pub state: Vec<PendingStateWrites>,
}

/// An emitted aggregate, as users read it from the output topic.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggregateRecord {
    pub aggregation: String,
    pub window: WindowBounds,
    pub group: serde_json::Map<String, serde_json::Value>,
    pub values: serde_json::Map<String, serde_json::Value>,
    pub sketches: serde_json::Map<String, serde_json::Value>,
    /// Compact Theta sketches of the distinct aggregates that keep one (`distinct(f, theta)`),
    /// base64; absent when none does.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub theta_sketches: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowBounds {
    pub start: i64,
    pub end: i64,
}

impl AggregateRecord {
    /// Builds the output record of one (group, window). Session windows report their first and
    /// last event times; fixed windows report `[start, end)`.
    pub fn new(
        spec: &CompiledAggregation,
        key: &StateKey,
        accumulators: &Accumulators,
        is_final: bool,
    ) -> AggregateRecord {
        let (group, window) = (&key.group, key.window);
        let end = match spec.window {
            WindowSpec::Session { .. } => window.end - 1,
            _ => window.end,
        };
        AggregateRecord {
            aggregation: spec.name.clone(),
            window: WindowBounds {
                start: window.start,
                end,
            },
            group: group.to_json(&spec.group_names),
            values: accumulators.values_json(&spec.aggregates),
            sketches: accumulators.sketches_json(&spec.aggregates),
            theta_sketches: accumulators
                .theta_sketches_json_named(spec.aggregates.iter().map(|a| a.name.as_str())),
            is_final,
        }
    }

    /// The Kafka key: unique and stable per (aggregation, group, window), so a compacted output
    /// topic keeps the latest value of each.
    pub fn key(&self) -> String {
        serde_json::to_string(&(
            &self.aggregation,
            &self.group,
            self.window.start,
            self.window.end,
        ))
        .expect("serializable")
    }
}
