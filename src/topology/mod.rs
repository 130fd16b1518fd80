//! What eddy computes: sources, windowed aggregations and where their results go.
//!
//! A [`Topology`] is built either with [`TopologyBuilder`] or from a `topology/*.toml` file
//! ([`Topology::from_file`]); the file layer is a thin parser over the same builder, so both
//! are validated by the same rules.

mod builder;
mod describe;
mod duration;
mod file;
mod internal_topics;

pub use crate::schema::{Schema, TimeFormat};
pub use builder::{AggregationBuilder, SourceBuilder, TopologyBuilder};
pub use describe::describe;
pub use duration::{format_duration_ms, parse_duration_ms, DurationMs};
pub use internal_topics::{
    changelog_topic, dead_letter_topic, internal_topics, nats_assignment_topic,
    nats_assignment_topics, repartition_topic, CHANGELOG_SUFFIX,
};

use std::path::PathBuf;

/// A problem in a topology, naming where it is and what is allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("could not read topology file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{location}: `{key}` = {value} is not valid: {allowed}")]
    Invalid {
        location: String,
        key: String,
        value: String,
        allowed: String,
    },
}

impl TopologyError {
    pub(crate) fn invalid(
        location: impl Into<String>,
        key: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        TopologyError::Invalid {
            location: location.into(),
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}

/// How a record's event time is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// A field of the JSON value.
    Field { field: String, format: TimeFormat },
    /// The Kafka record timestamp (CreateTime or LogAppendTime, whichever the topic uses).
    KafkaTimestamp,
}

/// What to do with a record that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorPolicy {
    /// Send it to the dead-letter topic with headers naming the error (default).
    DeadLetter,
    /// Drop it and count it.
    Skip,
    /// Stop processing with an error.
    Fail,
}

/// One or more input topics read as one stream, and how to read their records.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub name: String,
    /// Several topics (e.g. `order.created.v1` and `order.created.v2`) are read as one stream.
    pub topics: Vec<String>,
    pub schema: Schema,
    /// The field the producers key records by. Grouping by exactly this field needs no repartition.
    pub key_field: Option<String>,
    pub time: EventTime,
    pub on_decode_error: DecodeErrorPolicy,
    /// Overrides the default dead-letter topic `<application.id>-dlq`.
    pub dead_letter_topic: Option<String>,
    /// Schema versions besides version 1 and how their fields map onto the ones aggregations use.
    pub versions: Vec<SourceVersion>,
    /// A record whose event time is further than this ahead of the wall clock is a decode error:
    /// one bad clock must not move stream time. (Not the record's Kafka timestamp: a producer
    /// may stamp it with the event time.)
    pub max_future_skew_ms: i64,
    /// Present for a NATS JetStream source (`type = "nats"`). Its `topics` are then empty in the
    /// file and, once bound to an application ([`Topology::bind`]), the one assignment topic
    /// whose partitions stand for its splits.
    pub nats: Option<NatsSource>,
}

/// Where a NATS source reads: a JetStream stream, in one split per subject filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSource {
    pub stream: String,
    /// One split each; split `i` is partition `i` of the assignment topic.
    pub subjects: Vec<String>,
    /// `on_missing = "skip"`: a committed position the stream no longer holds (retention, a
    /// purge) moves on to the stream's first message, counted; by default eddy stops.
    pub skip_missing: bool,
}

/// The default `max_future_skew`: one hour.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: i64 = 3_600_000;

/// The longest duration a topology may name (window sizes, grace, retention, skew): 100 years, so
/// window arithmetic over event times up to year 9999 cannot overflow.
pub const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;

/// One schema version of a source's events.
///
/// A record's version is its `version` field; without one, the version declared for the topic it
/// came from; without that, 1. Version 1 reads fields by their own names unless declared here.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceVersion {
    pub version: i64,
    /// Records on this topic (for a NATS source: subject) without a `version` field are this
    /// version.
    pub topic: Option<String>,
    /// `(field aggregations use, field this version writes)`: renamed fields.
    pub fields: Vec<(String, String)>,
    /// Values for fields this version does not write.
    pub defaults: Vec<(String, serde_json::Value)>,
}

impl Source {
    /// The versions this source reads, ascending.
    pub fn known_versions(&self) -> Vec<i64> {
        let mut known: Vec<i64> = self.versions.iter().map(|v| v.version).collect();
        if !known.contains(&1) {
            known.push(1);
        }
        known.sort_unstable();
        known
    }

    /// The version of records on `topic` that carry no `version` field.
    pub fn topic_version(&self, topic: &str) -> i64 {
        self.versions
            .iter()
            .find(|v| v.topic.as_deref() == Some(topic))
            .map_or(1, |v| v.version)
    }
}

/// Window shapes, all in milliseconds of event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64, advance_ms: i64 },
    Session { gap_ms: i64 },
}

/// When results leave eddy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitMode {
    /// Once per window, when stream time passes window end + grace (Kafka Streams' `suppress(untilWindowCloses)`).
    Final,
    /// The latest value at every commit in which the window changed (Kafka Streams' default with caching).
    Update,
}

/// One named aggregate function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggregateKind {
    Count,
    Sum(String),
    /// `sum(a * b)`: the sum of a product of two fields of the same row (e.g. quantity * unit_price).
    SumProduct(String, String),
    Min(String),
    Max(String),
    /// Unique values as an Apache DataSketches HLL sketch with `2^lg_k` registers and, when
    /// `theta_lg_k` is set, also as a Theta sketch of nominal `2^theta_lg_k` entries (the state
    /// ClickHouse's `uniqTheta` merges).
    Distinct {
        field: String,
        lg_k: u8,
        theta_lg_k: Option<u8>,
    },
}

impl AggregateKind {
    pub const DEFAULT_LG_K: u8 = 12;

    /// The fields this aggregate reads.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            AggregateKind::Count => vec![],
            AggregateKind::Sum(f) | AggregateKind::Min(f) | AggregateKind::Max(f) => vec![f],
            AggregateKind::SumProduct(a, b) => vec![a, b],
            AggregateKind::Distinct { field, .. } => vec![field],
        }
    }

    /// Parses `count`, `sum(total_amount)`, `min(f)`, `max(f)`, `distinct(userId)`,
    /// `distinct(userId, 14)`, or either distinct with a Theta sketch beside the HLL one:
    /// `distinct(userId, theta)`, `distinct(userId, 14, theta)`, `distinct(userId, theta(14))`.
    ///
    /// # Examples
    /// ```
    /// use eddy::topology::AggregateKind;
    /// assert_eq!(AggregateKind::parse("sum(total_amount)"), Ok(AggregateKind::Sum("total_amount".into())));
    /// assert_eq!(AggregateKind::parse("sum(items.quantity * items.unit_price)"),
    ///            Ok(AggregateKind::SumProduct("items.quantity".into(), "items.unit_price".into())));
    /// assert_eq!(AggregateKind::parse("distinct(userId, 14)"),
    ///            Ok(AggregateKind::Distinct { field: "userId".into(), lg_k: 14, theta_lg_k: None }));
    /// assert_eq!(AggregateKind::parse("distinct(userId, theta)"),
    ///            Ok(AggregateKind::Distinct { field: "userId".into(), lg_k: 12, theta_lg_k: Some(12) }));
    /// ```
    pub fn parse(text: &str) -> Result<AggregateKind, String> {
        let allowed = "`count`, `sum(FIELD)`, `min(FIELD)`, `max(FIELD)` or `distinct(FIELD[, PRECISION 4..=21][, theta[(PRECISION 5..=26)]])`";
        let text = text.trim();
        if text == "count" || text == "count()" {
            return Ok(AggregateKind::Count);
        }
        let (function, rest) = text
            .split_once('(')
            .ok_or_else(|| format!("`{text}` is not an aggregate: expected {allowed}"))?;
        let args = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("`{text}` is missing its closing `)`: expected {allowed}"))?;
        let mut args = args.split(',').map(str::trim);
        let field = args
            .next()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| format!("`{text}` names no field: expected {allowed}"))?;
        let field = field.to_string();
        let extra: Vec<&str> = args.collect();
        let distinct = function.trim() == "distinct";
        if extra.len() > if distinct { 2 } else { 0 } {
            return Err(format!(
                "`{text}` has too many arguments: expected {allowed}"
            ));
        }
        match function.trim() {
            "sum" => match field.split_once('*') {
                Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => Ok(AggregateKind::SumProduct(a.trim().into(), b.trim().into())),
                Some(_) => Err(format!("`{text}`: a product needs two fields, e.g. `sum(items.quantity * items.unit_price)`")),
                None => Ok(AggregateKind::Sum(field)),
            },
            "min" => Ok(AggregateKind::Min(field)),
            "max" => Ok(AggregateKind::Max(field)),
            "distinct" => {
                let (mut lg_k, mut theta_lg_k) = (None, None);
                for arg in extra {
                    if let Some(theta) = arg.strip_prefix("theta") {
                        let precision = theta.trim();
                        let k = if precision.is_empty() {
                            Self::DEFAULT_LG_K
                        } else {
                            precision
                                .strip_prefix('(')
                                .and_then(|p| p.strip_suffix(')'))
                                .and_then(|p| p.trim().parse::<u8>().ok())
                                .filter(|k| (5..=26).contains(k))
                                .ok_or_else(|| format!("`{text}`: `{arg}` must be `theta` or `theta(N)` with N from 5 to 26"))?
                        };
                        if theta_lg_k.replace(k).is_some() {
                            return Err(format!("`{text}` names `theta` twice"));
                        }
                    } else if lg_k.is_none() && theta_lg_k.is_none() {
                        lg_k = Some(
                            arg.parse::<u8>()
                                .ok()
                                .filter(|k| (4..=21).contains(k))
                                .ok_or_else(|| format!("`{text}`: precision `{arg}` must be a whole number from 4 to 21"))?,
                        );
                    } else {
                        return Err(format!("`{text}`: `{arg}` is not `theta`: expected {allowed}"));
                    }
                }
                Ok(AggregateKind::Distinct {
                    field,
                    lg_k: lg_k.unwrap_or(Self::DEFAULT_LG_K),
                    theta_lg_k,
                })
            }
            other => Err(format!("`{text}` uses unknown function `{other}`: expected {allowed}")),
        }
    }
}

impl std::fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateKind::Count => write!(f, "count"),
            AggregateKind::Sum(x) => write!(f, "sum({x})"),
            AggregateKind::SumProduct(a, b) => write!(f, "sum({a} * {b})"),
            AggregateKind::Min(x) => write!(f, "min({x})"),
            AggregateKind::Max(x) => write!(f, "max({x})"),
            AggregateKind::Distinct {
                field,
                lg_k,
                theta_lg_k,
            } => match theta_lg_k {
                None => write!(f, "distinct({field}, {lg_k})"),
                Some(Self::DEFAULT_LG_K) => write!(f, "distinct({field}, {lg_k}, theta)"),
                Some(theta) => write!(f, "distinct({field}, {lg_k}, theta({theta}))"),
            },
        }
    }
}

/// Keeps records whose field equals one of the values.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub field: String,
    pub values: Vec<serde_json::Value>,
}

/// One windowed aggregation: the unit eddy names its stores, topics and output records after.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregation {
    pub name: String,
    pub source: String,
    pub filter: Option<Filter>,
    /// An array field whose elements become one row each; their fields are named `<explode>.<field>`.
    pub explode: Option<String>,
    pub group_by: Vec<String>,
    pub window: WindowSpec,
    pub grace_ms: i64,
    /// How long a window is kept after it closes (update mode keeps serving late queries and merges).
    pub retention_ms: i64,
    pub emit: EmitMode,
    pub aggregates: Vec<(String, AggregateKind)>,
    pub output_topic: String,
    /// Where late records go; when absent they are dropped and counted.
    pub late_records_topic: Option<String>,
}

/// A validated set of sources and aggregations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    pub sources: Vec<Source>,
    pub aggregations: Vec<Aggregation>,
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Reads and validates one topology file.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Topology, TopologyError> {
        file::load(&path.into())
    }

    /// Parses and validates the text of one topology file; `origin` names it in errors.
    pub fn from_text(origin: impl Into<PathBuf>, text: &str) -> Result<Topology, TopologyError> {
        file::parse(&origin.into(), text)
    }

    /// Reads several files into one topology; names must stay unique across files.
    pub fn from_files(paths: &[PathBuf]) -> Result<Topology, TopologyError> {
        let mut builder = TopologyBuilder::default();
        for path in paths {
            let one = file::load(path)?;
            for source in one.sources {
                builder = builder.source(source);
            }
            for aggregation in one.aggregations {
                builder = builder.aggregation(aggregation);
            }
        }
        builder.build()
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Output topics, deduplicated and sorted.
    pub fn output_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .aggregations
            .iter()
            .map(|a| a.output_topic.clone())
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The source reading `topic`.
    pub fn source_of_topic(&self, topic: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.topics.iter().any(|t| t == topic))
    }

    pub fn aggregation(&self, name: &str) -> Option<&Aggregation> {
        self.aggregations.iter().find(|a| a.name == name)
    }

    /// Whether an aggregation must move its partials through a repartition topic: it does unless it
    /// groups by exactly the field its source is keyed by, and that source reads one topic (records
    /// with one key on two topics meet only after a repartition).
    pub fn needs_repartition(&self, aggregation: &Aggregation) -> bool {
        let source = self.source(&aggregation.source).expect("validated");
        if source.topics.len() > 1 {
            return true;
        }
        match &source.key_field {
            Some(key) => aggregation.group_by.as_slice() != std::slice::from_ref(key),
            None => true,
        }
    }

    /// Input topics, deduplicated, in declaration order.
    /// Gives each NATS source its assignment topic (`<application.id>-nats-<source>`) as its one
    /// topic, so the runtime treats its splits as partitions. Idempotent.
    pub fn bind(mut self, application_id: &str) -> Topology {
        for source in &mut self.sources {
            if source.nats.is_some() {
                source.topics = vec![nats_assignment_topic(application_id, &source.name)];
            }
        }
        self
    }

    /// The NATS sources with their assignment topics (after [`Topology::bind`]).
    pub fn nats_sources(&self) -> impl Iterator<Item = (&Source, &NatsSource)> {
        self.sources
            .iter()
            .filter_map(|s| s.nats.as_ref().map(|n| (s, n)))
    }

    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for topic in self.sources.iter().flat_map(|s| &s.topics) {
            if !topics.contains(topic) {
                topics.push(topic.clone());
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::AggregateKind;

    #[test]
    fn distinct_takes_a_precision_and_theta_in_either_form_and_prints_back() {
        let distinct = |lg_k, theta_lg_k| AggregateKind::Distinct {
            field: "userId".into(),
            lg_k,
            theta_lg_k,
        };
        for (text, kind) in [
            ("distinct(userId)", distinct(12, None)),
            ("distinct(userId, 14)", distinct(14, None)),
            ("distinct(userId, theta)", distinct(12, Some(12))),
            ("distinct(userId, 10, theta)", distinct(10, Some(12))),
            ("distinct(userId, theta(16))", distinct(12, Some(16))),
            (
                "distinct( userId , 11 , theta( 9 ) )",
                distinct(11, Some(9)),
            ),
        ] {
            assert_eq!(AggregateKind::parse(text), Ok(kind.clone()), "{text}");
            assert_eq!(
                AggregateKind::parse(&kind.to_string()),
                Ok(kind.clone()),
                "{kind} round-trips"
            );
        }
    }

    #[test]
    fn distinct_rejects_misplaced_or_out_of_range_arguments_with_the_reason() {
        for (text, reason) in [
            ("distinct(userId, theta, 12)", "is not `theta`"),
            ("distinct(userId, theta(4))", "from 5 to 26"),
            ("distinct(userId, theta(27))", "from 5 to 26"),
            ("distinct(userId, thetas)", "`theta` or `theta(N)`"),
            ("distinct(userId, theta, theta)", "twice"),
            ("distinct(userId, 22)", "from 4 to 21"),
            ("distinct(userId, 12, theta, 3)", "too many arguments"),
            ("sum(amount, theta)", "too many arguments"),
        ] {
            let error = AggregateKind::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
