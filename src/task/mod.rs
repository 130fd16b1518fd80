//! Tasks: the topology compiled into per-partition units of work.

mod stream_task;

pub use crate::operator::{
    partition_for, AggregateRecord, CompiledAggregation, OutgoingKind, OutgoingRecord,
    PendingStateWrites, RepartitionMessage, TaskOutput, WindowBounds,
};
pub use stream_task::{InputRecord, StreamTask, TaskError, TaskId, TaskStats};

use crate::operator::{Operator, PartialAggregate, WindowAggregate};

use crate::record::DecodePlan;
use crate::state::{CacheBudget, MemoryBackend, StateBackend, StateError, TaskDb, WindowStore};
use crate::topology::{dead_letter_topic, Source, Topology};
use crate::window::CloseRule;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use stream_task::TaskKind;

/// Where tasks keep their state.
#[derive(Clone, Debug)]
pub enum StateLocation {
    /// In memory (the test driver and in-process benchmarks).
    Memory,
    /// RocksDB under `<dir>/<application.id>/<topic>-<partition>/`.
    Disk(PathBuf),
}

/// The default byte budget of the write-back caches of all of an instance's stores
/// (`cache_max_bytes`).
pub const DEFAULT_CACHE_MAX_BYTES: usize = 16 << 20;

/// Windows an aggregation closes per commit at most. A jump of stream time over many close times
/// (a backlog of sessions closing at once, a partition back from idle) is spread over commits of
/// this size, each a transaction well inside `transaction.timeout.ms`; one close time's windows
/// are never split.
pub const DEFAULT_CLOSE_LIMIT: usize = 10_000;

struct CompiledSource {
    source: Arc<Source>,
    /// Each topic's first upstream index on the source's repartition topics: topic `i`'s partition
    /// `p` is upstream `upstream_base[i] + p`, so partials of several topics never collide.
    topics: Vec<String>,
    plan: Arc<DecodePlan>,
    aggregations: Vec<Arc<CompiledAggregation>>,
}

/// A topology ready to create tasks: decode plans and aggregations resolved once.
pub struct CompiledTopology {
    pub application_id: String,
    pub topology: Topology,
    by_input_topic: HashMap<String, Arc<CompiledSource>>,
    /// Repartition topic -> its aggregation and the source's topics.
    by_repartition_topic: HashMap<String, (Arc<CompiledAggregation>, Vec<String>)>,
    /// Shared by the caches of every store its tasks open.
    cache: CacheBudget,
    /// Windows an aggregation closes per commit at most (whole close times at a time).
    close_limit: usize,
}

impl CompiledTopology {
    pub fn new(application_id: &str, topology: Topology) -> CompiledTopology {
        let topology = topology.bind(application_id);
        let mut by_input_topic = HashMap::new();
        let mut by_repartition_topic = HashMap::new();
        for source in &topology.sources {
            let plan = Arc::new(DecodePlan::for_source(&topology, source));
            let aggregations: Vec<Arc<CompiledAggregation>> = topology
                .aggregations
                .iter()
                .filter(|a| a.source == source.name)
                .map(|a| {
                    Arc::new(CompiledAggregation::compile(
                        application_id,
                        &topology,
                        a,
                        &plan,
                    ))
                })
                .collect();
            for aggregation in &aggregations {
                if let Some(topic) = &aggregation.repartition_topic {
                    by_repartition_topic
                        .insert(topic.clone(), (aggregation.clone(), source.topics.clone()));
                }
            }
            let compiled = Arc::new(CompiledSource {
                source: Arc::new(source.clone()),
                topics: source.topics.clone(),
                plan,
                aggregations,
            });
            for topic in &source.topics {
                by_input_topic.insert(topic.clone(), compiled.clone());
            }
        }
        CompiledTopology {
            application_id: application_id.into(),
            topology,
            by_input_topic,
            by_repartition_topic,
            cache: CacheBudget::new(DEFAULT_CACHE_MAX_BYTES),
            close_limit: DEFAULT_CLOSE_LIMIT,
        }
    }

    /// Sets the byte budget shared by the write-back caches of every store of its tasks.
    pub fn with_cache_max_bytes(mut self, bytes: usize) -> CompiledTopology {
        self.cache = CacheBudget::new(bytes);
        self
    }

    /// Sets how many windows an aggregation closes per commit at most (tests make it small, to
    /// spread closing over several commits).
    pub fn with_close_limit(mut self, windows: usize) -> CompiledTopology {
        self.close_limit = windows.max(1);
        self
    }

    pub fn cache_budget(&self) -> &CacheBudget {
        &self.cache
    }

    pub fn input_topics(&self) -> Vec<String> {
        self.topology.input_topics()
    }

    pub fn repartition_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.by_repartition_topic.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// The input topic whose partition count a repartition topic mirrors: the source's first.
    pub fn repartition_source_topic(&self, repartition_topic: &str) -> Option<&str> {
        self.by_repartition_topic
            .get(repartition_topic)
            .and_then(|(_, t)| t.first())
            .map(String::as_str)
    }

    /// Every store with the topic whose partitions its tasks (and changelog partitions) follow.
    pub fn stores(&self) -> Vec<(String, String)> {
        let mut stores = Vec::new();
        for compiled in self.by_input_topic.values() {
            for aggregation in &compiled.aggregations {
                let topic = aggregation
                    .repartition_topic
                    .clone()
                    .unwrap_or_else(|| compiled.topics[0].clone());
                stores.push((aggregation.name.clone(), topic));
            }
        }
        stores.sort();
        stores.dedup();
        stores
    }

    pub fn task_dir(&self, state: &StateLocation, id: &TaskId) -> Option<PathBuf> {
        match state {
            StateLocation::Memory => None,
            StateLocation::Disk(dir) => Some(dir.join(&self.application_id).join(id.to_string())),
        }
    }

    /// The stores the task of `id` keeps (and whose changelogs it restores from).
    pub fn store_names_of(&self, id: &TaskId) -> Vec<String> {
        if let Some(compiled) = self.by_input_topic.get(&id.topic) {
            compiled
                .aggregations
                .iter()
                .filter(|a| a.repartition_topic.is_none())
                .map(|a| a.name.clone())
                .collect()
        } else if let Some((aggregation, _)) = self.by_repartition_topic.get(&id.topic) {
            vec![aggregation.name.clone()]
        } else {
            Vec::new()
        }
    }

    /// Creates the task for one partition. `partitions` gives each input topic's partition count.
    /// For tasks with RocksDB state the opened database is returned with it.
    pub fn create_task(
        &self,
        id: &TaskId,
        partitions: &HashMap<String, i32>,
        state: &StateLocation,
    ) -> Result<(StreamTask, Option<TaskDb>), StateError> {
        let store_names = self.store_names_of(id);
        let db = match (self.task_dir(state, id), store_names.is_empty()) {
            (Some(dir), false) => Some(TaskDb::open(&dir, &store_names)?),
            _ => None,
        };
        let open_store = |aggregation: &CompiledAggregation| -> WindowStore {
            let name = &aggregation.name;
            let backend: Box<dyn StateBackend> = match &db {
                Some(db) => Box::new(db.backend(name)),
                None => Box::new(MemoryBackend::default()),
            };
            let close = CloseRule {
                spec: aggregation.window,
                grace_ms: aggregation.grace_ms,
            };
            WindowStore::new(name, backend, close, self.cache.join()).with_changelog(
                &crate::topology::changelog_topic(&self.application_id, name),
                id.partition,
            )
        };
        let task = if let Some(compiled) = self.by_input_topic.get(&id.topic) {
            let operators = compiled
                .aggregations
                .iter()
                .map(|aggregation| -> Box<dyn Operator> {
                    match &aggregation.repartition_topic {
                        None => Box::new(WindowAggregate::local(
                            aggregation.clone(),
                            open_store(aggregation),
                            self.close_limit,
                        )),
                        Some(_) => {
                            let base: i32 = compiled
                                .topics
                                .iter()
                                .take_while(|t| **t != id.topic)
                                .map(|t| partitions.get(t).copied().unwrap_or(1))
                                .sum();
                            Box::new(PartialAggregate::new(
                                aggregation.clone(),
                                (base + id.partition) as u32,
                                partitions.get(&compiled.topics[0]).copied().unwrap_or(1),
                            ))
                        }
                    }
                })
                .collect();
            let kind = TaskKind::Input {
                source: compiled.source.clone(),
                topic_version: compiled.plan.topic_version(&id.topic),
                plan: compiled.plan.clone(),
                dead_letter_topic: dead_letter_topic(&self.application_id, &compiled.source),
            };
            StreamTask::new(id.clone(), kind, operators)
        } else if let Some((aggregation, source_topics)) = self.by_repartition_topic.get(&id.topic)
        {
            let merge = WindowAggregate::merging(
                aggregation.clone(),
                open_store(aggregation),
                source_topics
                    .iter()
                    .map(|t| partitions.get(t).copied().unwrap_or(1) as usize)
                    .sum(),
                self.close_limit,
            );
            StreamTask::new(id.clone(), TaskKind::Repartition, vec![Box::new(merge)])
        } else {
            StreamTask::new(id.clone(), TaskKind::Repartition, Vec::new())
        };
        Ok((task, db))
    }
}
