//! The query API: range answers over the committed output topics.
//!
//! Each instance materializes every partition of the output topics, read `read_committed`, into
//! an in-memory [`AggregateIndex`] ([`spawn_materializer`]), so any instance answers for the
//! whole application and never shows an aborted transaction's output. Queries merge the stored
//! windows inside the range, using hourly and daily rollups of tumbling windows:
//! - `GET /api/v1/metrics?from=&to=[&eventType=]`: seed 002's `GetMetrics` answer;
//! - `GET /api/v1/aggregations/{name}?from=&to=[&<group field>=<value>]`: any aggregation;
//! - `GET /api/v1/openapi.json`: the OpenAPI document of both.
//!
//! Answers say how far to trust them: `complete` when every window of the covered range is final
//! on every output partition and still held (the index is bounded, see [`IndexCapacity`];
//! `retained_from` says from when it holds windows), and `index` when the reader of the output
//! topics is failing (`degraded`) or skipped records it could not read.

mod index;
mod materializer;
mod openapi;
mod query;

pub use index::{
    AggregateIndex, AggregationSeries, Covered, GroupAnswer, IndexCapacity, ReadHealth,
};
pub use materializer::spawn_materializer;
pub use openapi::openapi_document;
pub use query::{aggregation, metrics, ApiError, MetricsPlan, Range};

use crate::topology::Topology;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the HTTP routes of the API share.
#[derive(Clone)]
pub struct ApiState {
    pub index: Arc<Mutex<AggregateIndex>>,
    pub plan: Option<MetricsPlan>,
}

impl ApiState {
    pub fn new(topology: &Topology) -> ApiState {
        ApiState::with_capacity(topology, IndexCapacity::default())
    }

    /// An API whose index holds at most `capacity` (see [`IndexCapacity`]).
    pub fn with_capacity(topology: &Topology, capacity: IndexCapacity) -> ApiState {
        ApiState {
            index: Arc::new(Mutex::new(AggregateIndex::with_capacity(
                topology, capacity,
            ))),
            plan: MetricsPlan::discover(topology),
        }
    }

    /// Answers `/api/v1/metrics`.
    pub fn metrics(&self, params: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
        metrics(
            &mut self.index.lock().expect("index lock"),
            self.plan.as_ref(),
            params,
        )
    }

    /// Answers `/api/v1/aggregations/{name}`.
    pub fn aggregation(
        &self,
        name: &str,
        params: &HashMap<String, String>,
    ) -> Result<serde_json::Value, ApiError> {
        aggregation(&mut self.index.lock().expect("index lock"), name, params)
    }
}
