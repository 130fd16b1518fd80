//! Runs a topology's tasks in memory: pipe records in, commit, read what was emitted. No broker,
//! no wall clock; time is the event time of the piped records.

use crate::state::StateKey;
use crate::task::{
    AggregateRecord, CompiledTopology, InputRecord, OutgoingKind, OutgoingRecord, StateLocation,
    StreamTask, TaskError, TaskId, TaskOutput,
};
use crate::topology::Topology;
use crate::window::Window;
use std::collections::{BTreeMap, HashMap};

/// A record the driver captured on an output, dead-letter, late or internal topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl From<OutgoingRecord> for TestRecord {
    fn from(record: OutgoingRecord) -> TestRecord {
        TestRecord {
            topic: record.topic,
            partition: record.partition,
            key: record.key,
            value: record.value,
            headers: record.headers,
        }
    }
}

impl TestRecord {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// # Examples
/// ```
/// use eddy::topology::*;
/// use eddy::testing::TopologyTestDriver;
/// let topology = Topology::builder()
///     .source(SourceBuilder::new("clicks", "clicks", Schema::Json).time_field("ts", TimeFormat::EpochMillis).build())
///     .aggregation(AggregationBuilder::new("clicks.per_second", "clicks", "out").tumbling(1000)
///         .aggregate("n", AggregateKind::Count).build())
///     .build().unwrap();
/// let mut driver = TopologyTestDriver::new(topology, 1);
/// driver.pipe("clicks", 0, None, r#"{"ts": 100}"#, None).unwrap();
/// driver.pipe("clicks", 0, None, r#"{"ts": 2500}"#, None).unwrap();
/// driver.commit().unwrap();
/// let out = driver.read_aggregates("out");
/// assert_eq!(out.len(), 1); // [0, 1000) closed when stream time reached 2500
/// assert_eq!(out[0].values["n"], 1);
/// ```
pub struct TopologyTestDriver {
    compiled: CompiledTopology,
    partitions: HashMap<String, i32>,
    tasks: BTreeMap<TaskId, StreamTask>,
    next_offsets: HashMap<TaskId, i64>,
    captured: Vec<TestRecord>,
}

impl TopologyTestDriver {
    /// A driver where every input topic has `partitions` partitions (repartition topics mirror them).
    pub fn new(topology: Topology, partitions: i32) -> TopologyTestDriver {
        let compiled = CompiledTopology::new("eddy-test", topology);
        let partitions = compiled
            .input_topics()
            .into_iter()
            .map(|t| (t, partitions))
            .collect();
        TopologyTestDriver {
            compiled,
            partitions,
            tasks: BTreeMap::new(),
            next_offsets: HashMap::new(),
            captured: Vec::new(),
        }
    }

    /// Bounds the state cache to `bytes` (`cache_max_bytes`); with 0, every commit evicts every
    /// clean entry, so state is read back from the stores.
    pub fn with_cache_max_bytes(mut self, bytes: usize) -> TopologyTestDriver {
        self.compiled = self.compiled.with_cache_max_bytes(bytes);
        self
    }

    /// Bounds the windows an aggregation closes per commit (see
    /// [`CompiledTopology::with_close_limit`]).
    pub fn with_close_limit(mut self, windows: usize) -> TopologyTestDriver {
        self.compiled = self.compiled.with_close_limit(windows);
        self
    }

    fn task(&mut self, id: &TaskId) -> &mut StreamTask {
        if !self.tasks.contains_key(id) {
            let (task, _) = self
                .compiled
                .create_task(id, &self.partitions, &StateLocation::Memory)
                .expect("memory state cannot fail to open");
            self.tasks.insert(id.clone(), task);
        }
        self.tasks.get_mut(id).expect("inserted")
    }

    fn deliver(
        &mut self,
        id: TaskId,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        out: &mut TaskOutput,
    ) -> Result<(), TaskError> {
        let offset = self.next_offsets.entry(id.clone()).or_insert(0);
        let record = InputRecord {
            payload: value,
            key,
            timestamp_ms,
            offset: *offset,
            subject: None,
        };
        *offset += 1;
        self.task(&id).process(record, out)
    }

    /// Pipes one record into an input topic partition. `timestamp_ms` is the Kafka record timestamp.
    pub fn pipe(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&str>,
        value: &str,
        timestamp_ms: Option<i64>,
    ) -> Result<(), TaskError> {
        let mut out = TaskOutput::default();
        let id = TaskId {
            topic: topic.into(),
            partition,
        };
        self.deliver(
            id,
            key.map(str::as_bytes),
            Some(value.as_bytes()),
            timestamp_ms,
            &mut out,
        )?;
        self.capture(out);
        Ok(())
    }

    /// Rebuilds every task's in-memory index from its committed state, as a restart or a
    /// rollback does (state itself is kept: the stores are the committed ones).
    pub fn reload(&mut self) -> Result<(), TaskError> {
        for task in self.tasks.values_mut() {
            task.reload()?;
        }
        Ok(())
    }

    /// Lets wall-clock time pass for every input task, as the runtime does at each commit with
    /// `wall_clock_close_ms = quiet_ms` (call it once to start the clock, then with later times).
    pub fn advance_wall_clock(&mut self, now_ms: i64, quiet_ms: i64) {
        for task in self.tasks.values_mut() {
            task.advance_with_wall_clock(now_ms, quiet_ms);
        }
    }

    /// Marks an input partition idle or active again, as the runtime does when a partition read to
    /// its end has had no record for `idle_timeout`. Takes effect at the next commit.
    pub fn set_idle(&mut self, topic: &str, partition: i32, idle: bool) {
        let id = TaskId {
            topic: topic.into(),
            partition,
        };
        self.task(&id).set_idle(idle);
    }

    /// Commits: flushes every input task, delivers repartition records to their tasks, flushes
    /// those, and applies all state writes, as one successful transaction would.
    pub fn commit(&mut self) -> Result<(), TaskError> {
        for stage_is_input in [true, false] {
            let ids: Vec<TaskId> = self
                .tasks
                .keys()
                .filter(|id| self.partitions.contains_key(&id.topic) == stage_is_input)
                .cloned()
                .collect();
            for id in ids {
                let mut out = TaskOutput::default();
                let task = self.tasks.get_mut(&id).expect("listed");
                task.flush(&mut out)?;
                task.apply_committed(
                    std::mem::take(&mut out.state),
                    &crate::state::ChangelogEnds::new(),
                )?;
                for record in std::mem::take(&mut out.records) {
                    if record.kind == OutgoingKind::Repartition {
                        let id = TaskId {
                            topic: record.topic.clone(),
                            partition: record.partition.unwrap_or(0),
                        };
                        let mut inner = TaskOutput::default();
                        self.deliver(
                            id,
                            record.key.as_deref(),
                            record.value.as_deref(),
                            None,
                            &mut inner,
                        )?;
                        self.capture(inner);
                    }
                    self.captured.push(record.into());
                }
            }
        }
        Ok(())
    }

    fn capture(&mut self, out: TaskOutput) {
        self.captured
            .extend(out.records.into_iter().map(TestRecord::from));
    }

    /// Takes every captured record of `topic`.
    pub fn read_records(&mut self, topic: &str) -> Vec<TestRecord> {
        let (taken, kept) = std::mem::take(&mut self.captured)
            .into_iter()
            .partition(|r| r.topic == topic);
        self.captured = kept;
        taken
    }

    /// Takes every aggregate emitted to `topic`, parsed.
    pub fn read_aggregates(&mut self, topic: &str) -> Vec<AggregateRecord> {
        self.read_records(topic)
            .into_iter()
            .filter_map(|r| r.value)
            .map(|v| serde_json::from_slice(&v).expect("eddy writes valid aggregate records"))
            .collect()
    }

    /// The committed contents of an aggregation's stores across its tasks: (group, window, values).
    pub fn store(
        &mut self,
        aggregation: &str,
    ) -> Vec<(
        serde_json::Value,
        Window,
        serde_json::Map<String, serde_json::Value>,
    )> {
        let mut rows = Vec::new();
        for task in self.tasks.values_mut() {
            for operator in task.operators_mut() {
                if operator.spec().name != aggregation {
                    continue;
                }
                let group_names = operator.spec().group_names.clone();
                let aggregates = operator.spec().aggregates.clone();
                let Some(store) = operator.store_mut() else {
                    continue;
                };
                let keys: Vec<StateKey> = store.committed_keys().expect("memory");
                for key in keys {
                    if let Ok(Some(value)) = store.get(&key) {
                        rows.push((
                            serde_json::Value::Object(key.group.to_json(&group_names)),
                            key.window,
                            value.values_json(&aggregates),
                        ));
                    }
                }
            }
        }
        rows.sort_by_key(|row| (row.1, row.0.to_string()));
        rows
    }

    /// The stream time of an input partition's task.
    pub fn stream_time(&self, topic: &str, partition: i32) -> Option<i64> {
        self.tasks
            .get(&TaskId {
                topic: topic.into(),
                partition,
            })
            .map(StreamTask::stream_time)
    }
}
