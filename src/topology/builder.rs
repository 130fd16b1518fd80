//! The Rust API for building topologies; the file parser calls the same validation.

use super::*;

/// Builds a [`Topology`] and validates it as a whole.
///
/// # Examples
/// ```
/// use eddy::topology::*;
/// let topology = Topology::builder()
///     .source(SourceBuilder::new("orders", "orders", Schema::OrderCreated)
///         .time_field("timestamp", TimeFormat::EpochSeconds)
///         .key_field("order_id")
///         .build())
///     .aggregation(AggregationBuilder::new("orders.per_minute", "orders", "order-aggregates")
///         .tumbling(60_000)
///         .aggregate("orders", AggregateKind::Count)
///         .aggregate("revenue", AggregateKind::Sum("total_amount".into()))
///         .build())
///     .build()
///     .unwrap();
/// assert!(topology.needs_repartition(&topology.aggregations[0]));
/// ```
#[derive(Default)]
pub struct TopologyBuilder {
    sources: Vec<Source>,
    aggregations: Vec<Aggregation>,
}

impl TopologyBuilder {
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregations.push(aggregation);
        self
    }

    pub fn build(self) -> Result<Topology, TopologyError> {
        let topology = Topology {
            sources: self.sources,
            aggregations: self.aggregations,
        };
        validate(&topology)?;
        Ok(topology)
    }
}

/// Builds a [`Source`] with the defaults: JSON schema, Kafka timestamp, dead-letter on decode errors.
pub struct SourceBuilder(Source);

impl SourceBuilder {
    pub fn new(name: &str, topic: &str, schema: Schema) -> Self {
        SourceBuilder(Source {
            name: name.into(),
            topics: vec![topic.into()],
            schema,
            key_field: None,
            time: EventTime::KafkaTimestamp,
            on_decode_error: DecodeErrorPolicy::DeadLetter,
            dead_letter_topic: None,
            versions: Vec::new(),
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
            nats: None,
        })
    }
    /// A NATS JetStream source reading `stream`, one split per subject filter.
    pub fn nats(name: &str, stream: &str, subjects: &[&str], schema: Schema) -> Self {
        let mut builder = SourceBuilder::new(name, "", schema);
        builder.0.topics.clear();
        builder.0.nats = Some(super::NatsSource {
            stream: stream.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            skip_missing: false,
        });
        builder
    }
    /// Reads one more topic as part of the same stream.
    pub fn also_topic(mut self, topic: &str) -> Self {
        self.0.topics.push(topic.into());
        self
    }
    /// How far ahead of the wall clock a record's event time may be.
    pub fn max_future_skew(mut self, skew_ms: i64) -> Self {
        self.0.max_future_skew_ms = skew_ms;
        self
    }
    /// Declares a schema version and how its fields map.
    pub fn version(mut self, version: SourceVersion) -> Self {
        self.0.versions.push(version);
        self
    }
    pub fn time_field(mut self, field: &str, format: TimeFormat) -> Self {
        self.0.time = EventTime::Field {
            field: field.into(),
            format,
        };
        self
    }
    pub fn key_field(mut self, field: &str) -> Self {
        self.0.key_field = Some(field.into());
        self
    }
    pub fn on_decode_error(mut self, policy: DecodeErrorPolicy) -> Self {
        self.0.on_decode_error = policy;
        self
    }
    pub fn dead_letter_topic(mut self, topic: &str) -> Self {
        self.0.dead_letter_topic = Some(topic.into());
        self
    }
    pub fn build(self) -> Source {
        self.0
    }
}

/// Builds an [`Aggregation`]: a one-minute tumbling window, no grace, emit-final, until changed.
pub struct AggregationBuilder(Aggregation);

impl AggregationBuilder {
    pub fn new(name: &str, source: &str, output_topic: &str) -> Self {
        AggregationBuilder(Aggregation {
            name: name.into(),
            source: source.into(),
            filter: None,
            explode: None,
            group_by: Vec::new(),
            window: WindowSpec::Tumbling { size_ms: 60_000 },
            grace_ms: 0,
            retention_ms: 0,
            emit: EmitMode::Final,
            aggregates: Vec::new(),
            output_topic: output_topic.into(),
            late_records_topic: None,
        })
    }
    pub fn tumbling(mut self, size_ms: i64) -> Self {
        self.0.window = WindowSpec::Tumbling { size_ms };
        self
    }
    pub fn hopping(mut self, size_ms: i64, advance_ms: i64) -> Self {
        self.0.window = WindowSpec::Hopping {
            size_ms,
            advance_ms,
        };
        self
    }
    pub fn session(mut self, gap_ms: i64) -> Self {
        self.0.window = WindowSpec::Session { gap_ms };
        self
    }
    pub fn grace(mut self, grace_ms: i64) -> Self {
        self.0.grace_ms = grace_ms;
        self
    }
    pub fn retention(mut self, retention_ms: i64) -> Self {
        self.0.retention_ms = retention_ms;
        self
    }
    pub fn emit(mut self, emit: EmitMode) -> Self {
        self.0.emit = emit;
        self
    }
    pub fn group_by(mut self, field: &str) -> Self {
        self.0.group_by.push(field.into());
        self
    }
    pub fn explode(mut self, field: &str) -> Self {
        self.0.explode = Some(field.into());
        self
    }
    pub fn filter_in(mut self, field: &str, values: Vec<serde_json::Value>) -> Self {
        self.0.filter = Some(Filter {
            field: field.into(),
            values,
        });
        self
    }
    pub fn aggregate(mut self, name: &str, kind: AggregateKind) -> Self {
        self.0.aggregates.push((name.into(), kind));
        self
    }
    pub fn late_records_topic(mut self, topic: &str) -> Self {
        self.0.late_records_topic = Some(topic.into());
        self
    }
    pub fn build(self) -> Aggregation {
        self.0
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

const NAME_RULE: &str =
    "1 to 200 characters from a-z, A-Z, 0-9, `.`, `_`, `-` (it becomes part of Kafka topic names)";

/// Top-level fields of the seed schemas (and `version`); `None` for free-form JSON.
fn schema_fields(schema: Schema) -> Option<Vec<&'static str>> {
    schema.def().map(|def| {
        def.fields
            .iter()
            .map(|f| f.name)
            .chain([crate::schema::VERSION_FIELD])
            .collect()
    })
}

fn schema_item_fields(schema: Schema, array: &str) -> Option<Vec<&'static str>> {
    let def = schema.def()?;
    Some(match def.field(array).map(|f| f.ty) {
        Some(crate::schema::FieldType::Array(items)) => items.iter().map(|i| i.name).collect(),
        _ => Vec::new(),
    })
}

/// Whether `field` is a key inside a seed schema's JSON-text field (`data.user_id`).
fn is_embedded(schema: Schema, field: &str) -> bool {
    schema
        .def()
        .is_some_and(|def| def.embedded(field).is_some())
}

/// `, or `data.<key>` for a key of the JSON object inside `data`` where the schema has one.
fn embedded_hint(schema: Schema) -> String {
    schema
        .def()
        .into_iter()
        .flat_map(|def| def.fields)
        .filter(|f| f.ty == crate::schema::FieldType::JsonObjectString)
        .map(|f| {
            format!(
                ", or `{0}.<key>` for a key of the JSON object inside `{0}`",
                f.name
            )
        })
        .collect()
}

/// The array of a seed schema whose elements have `field`.
fn schema_item_array(schema: Schema, field: &str) -> Option<&'static str> {
    schema.def()?.array_with_item(field).map(|f| f.name)
}

/// A name must be usable in topic names and unique among its kind across all files.
fn check_unique_name<'t>(
    at: &str,
    name: &'t str,
    kind: &str,
    seen: &mut std::collections::HashSet<&'t str>,
) -> Result<(), TopologyError> {
    if !is_valid_name(name) {
        return Err(TopologyError::invalid(
            at,
            "name",
            format!("{name:?}"),
            NAME_RULE,
        ));
    }
    if !seen.insert(name) {
        return Err(TopologyError::invalid(
            at,
            "name",
            name,
            format!("{kind} names must be unique across all topology files"),
        ));
    }
    Ok(())
}

/// A NATS source names a stream and subject filters that never overlap (a message read by two
/// splits would count twice); its versions name subjects those filters read.
fn validate_nats(at: &str, source: &Source, nats: &super::NatsSource) -> Result<(), TopologyError> {
    use crate::nats::{subject_matches, valid_filter};
    let stream_ok = !nats.stream.is_empty()
        && nats
            .stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !stream_ok {
        return Err(TopologyError::invalid(
            at,
            "stream",
            format!("{:?}", nats.stream),
            "a JetStream stream name (letters, digits, `_`, `-`)",
        ));
    }
    if nats.subjects.is_empty() || nats.subjects.len() > 1024 {
        return Err(TopologyError::invalid(
            at,
            "subjects",
            format!("{:?}", nats.subjects),
            "1 to 1024 subject filters, one split each (e.g. [\"user.>\", \"order.>\"])",
        ));
    }
    for (i, filter) in nats.subjects.iter().enumerate() {
        if !valid_filter(filter) {
            return Err(TopologyError::invalid(
                at,
                "subjects",
                filter,
                "a NATS subject filter: tokens separated by `.`, `*` for one token, `>` last for the rest",
            ));
        }
        if let Some(other) = nats.subjects[..i]
            .iter()
            .find(|o| filters_overlap(o, filter))
        {
            return Err(TopologyError::invalid(
                at,
                "subjects",
                filter,
                format!("filters that no subject matches twice: `{other}` reads some of the same subjects, and its messages would be counted by two splits"),
            ));
        }
    }
    for version in &source.versions {
        if let Some(subject) = &version.topic {
            let concrete = valid_filter(subject) && !subject.contains(['*', '>']);
            if !concrete || !nats.subjects.iter().any(|f| subject_matches(f, subject)) {
                return Err(TopologyError::invalid(
                    at,
                    format!("version.{}.subject", version.version),
                    subject,
                    format!(
                        "a subject (no wildcards) that the source's filters read ({})",
                        nats.subjects.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether some subject matches both filters.
fn filters_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) if x == y || *x == "*" || *y == "*" => {}
            _ => return false,
        }
    }
    true
}

/// Versions are unique, at least 1, tied to the source's own topics, and map schema fields.
fn validate_versions(at: &str, source: &Source) -> Result<(), TopologyError> {
    let mut seen = std::collections::HashSet::new();
    let fields = schema_fields(source.schema);
    for version in &source.versions {
        let key = format!("version.{}", version.version);
        if version.version < 1 || !seen.insert(version.version) {
            return Err(TopologyError::invalid(
                at,
                "version",
                version.version,
                "a version number of 1 or more, declared once per source",
            ));
        }
        if let Some(topic) = version.topic.as_ref().filter(|_| source.nats.is_none()) {
            if !source.topics.contains(topic) {
                return Err(TopologyError::invalid(
                    at,
                    format!("{key}.topic"),
                    topic,
                    format!("one of the source's topics ({})", source.topics.join(", ")),
                ));
            }
        }
        let mapped = version
            .fields
            .iter()
            .map(|(used, _)| used)
            .chain(version.defaults.iter().map(|(used, _)| used));
        for used in mapped {
            if let Some(fields) = &fields {
                let known = fields.contains(&used.as_str()) || is_embedded(source.schema, used);
                if !known || used == crate::schema::VERSION_FIELD {
                    return Err(TopologyError::invalid(
                        at,
                        format!("{key}.fields"),
                        used,
                        format!(
                            "a top-level field of {} ({}): the name aggregations use",
                            source.schema.name(),
                            fields[..fields.len() - 1].join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some((used, value)) = version
            .defaults
            .iter()
            .find(|(_, v)| v.is_array() || v.is_object() || v.is_null())
        {
            return Err(TopologyError::invalid(
                at,
                format!("{key}.defaults.{used}"),
                value,
                "a string, number or boolean",
            ));
        }
    }
    Ok(())
}

fn validate(topology: &Topology) -> Result<(), TopologyError> {
    let mut seen_sources = std::collections::HashSet::new();
    for source in &topology.sources {
        let at = format!("source `{}`", source.name);
        check_unique_name(&at, &source.name, "source", &mut seen_sources)?;
        if let Some(nats) = &source.nats {
            validate_nats(&at, source, nats)?;
        } else if source.topics.is_empty() {
            return Err(TopologyError::invalid(
                &at,
                "topic",
                "(none)",
                "`topic = \"NAME\"` or `topics = [\"NAME.v1\", \"NAME.v2\"]`",
            ));
        }
        for topic in &source.topics {
            if !is_valid_name(topic) {
                return Err(TopologyError::invalid(
                    &at,
                    "topic",
                    format!("{topic:?}"),
                    NAME_RULE,
                ));
            }
            let readers = topology
                .sources
                .iter()
                .flat_map(|s| &s.topics)
                .filter(|t| *t == topic)
                .count();
            if readers > 1 {
                return Err(TopologyError::invalid(&at, "topic", topic, "a topic read by no other source, listed once (declare one source per topic and share it between aggregations)"));
            }
        }
        validate_versions(&at, source)?;
        if !(0..=MAX_DURATION_MS).contains(&source.max_future_skew_ms) {
            return Err(TopologyError::invalid(
                &at,
                "max_future_skew",
                format_duration_ms(source.max_future_skew_ms),
                "a duration from 0 to 100 years",
            ));
        }
        if let (Some(fields), Some(key)) = (schema_fields(source.schema), &source.key_field) {
            if !fields.contains(&key.as_str()) {
                return Err(TopologyError::invalid(
                    &at,
                    "key_field",
                    key,
                    format!(
                        "one of the {} fields: {}",
                        source.schema.name(),
                        fields.join(", ")
                    ),
                ));
            }
        }
        if let (Some(def), EventTime::Field { field, format }) = (source.schema.def(), &source.time)
        {
            let (time_field, time_format) = def.time;
            match def.field(field) {
                None => {
                    return Err(TopologyError::invalid(
                        &at,
                        "time.field",
                        field,
                        format!(
                            "one of the {} fields: {} (its event time is `{time_field}`)",
                            def.name,
                            def.field_names()
                        ),
                    ))
                }
                Some(f) if !f.ty.fits(*format) => {
                    return Err(TopologyError::invalid(
                        &at,
                        "time.format",
                        format.name(),
                        format!(
                            "a format for a JSON {} (`{}` in Go): {} writes `{field}` as {}; use `time = {{ field = \"{time_field}\", format = \"{}\" }}`",
                            f.ty.describe(),
                            f.go,
                            def.producer,
                            f.ty.describe(),
                            time_format.name()
                        ),
                    ))
                }
                Some(_) if field == time_field && *format != time_format => {
                    return Err(TopologyError::invalid(
                        &at,
                        "time.format",
                        format.name(),
                        format!(
                            "`{}`: {} writes `{field}` as `{}`; use `time = {{ field = \"{time_field}\", format = \"{}\" }}`",
                            time_format.name(),
                            def.producer,
                            def.field(field).map_or("", |f| f.go),
                            time_format.name()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let mut seen_aggregations = std::collections::HashSet::new();
    for aggregation in &topology.aggregations {
        let at = format!("aggregation `{}`", aggregation.name);
        check_unique_name(
            &at,
            &aggregation.name,
            "aggregation",
            &mut seen_aggregations,
        )?;
        let Some(source) = topology.source(&aggregation.source) else {
            let known: Vec<_> = topology.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(TopologyError::invalid(
                &at,
                "source",
                &aggregation.source,
                format!("the name of a declared source ({})", known.join(", ")),
            ));
        };
        if !is_valid_name(&aggregation.output_topic) {
            return Err(TopologyError::invalid(
                &at,
                "output",
                format!("{:?}", aggregation.output_topic),
                NAME_RULE,
            ));
        }
        match aggregation.window {
            WindowSpec::Tumbling { size_ms } if size_ms <= 0 => {
                return Err(TopologyError::invalid(
                    &at,
                    "window.size",
                    size_ms,
                    "a positive duration",
                ));
            }
            WindowSpec::Hopping {
                size_ms,
                advance_ms,
            } if advance_ms <= 0 || advance_ms > size_ms || size_ms % advance_ms != 0 => {
                return Err(TopologyError::invalid(
                    &at,
                    "window.advance",
                    format_duration_ms(advance_ms),
                    format!(
                        "a positive duration that divides the window size ({})",
                        format_duration_ms(size_ms)
                    ),
                ));
            }
            WindowSpec::Session { gap_ms } if gap_ms <= 0 => {
                return Err(TopologyError::invalid(
                    &at,
                    "window.gap",
                    gap_ms,
                    "a positive duration",
                ));
            }
            _ => {}
        }
        let sizes = match aggregation.window {
            WindowSpec::Tumbling { size_ms } => [size_ms, 0],
            WindowSpec::Hopping {
                size_ms,
                advance_ms,
            } => [size_ms, advance_ms],
            WindowSpec::Session { gap_ms } => [gap_ms, 0],
        };
        if let Some(too_long) = sizes
            .into_iter()
            .chain([aggregation.grace_ms, aggregation.retention_ms])
            .find(|d| *d > MAX_DURATION_MS)
        {
            return Err(TopologyError::invalid(
                &at,
                "window",
                format_duration_ms(too_long),
                "durations of at most 100 years",
            ));
        }
        if aggregation.grace_ms < 0 || aggregation.retention_ms < 0 {
            return Err(TopologyError::invalid(
                &at,
                "grace",
                aggregation.grace_ms,
                "a duration of zero or more",
            ));
        }
        if aggregation.aggregates.is_empty() {
            return Err(TopologyError::invalid(
                &at,
                "aggregates",
                "{}",
                "at least one named aggregate, e.g. `events = \"count\"`",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (name, _) in &aggregation.aggregates {
            if name.is_empty() || !names.insert(name.as_str()) {
                return Err(TopologyError::invalid(
                    &at,
                    "aggregates",
                    name,
                    "aggregate names must be non-empty and unique within an aggregation",
                ));
            }
        }
        if let Some(explode) = &aggregation.explode {
            let top = schema_fields(source.schema);
            if top.is_some_and(|f| {
                !f.contains(&explode.as_str())
                    || schema_item_fields(source.schema, explode).is_some_and(|i| i.is_empty())
            }) {
                return Err(TopologyError::invalid(
                    &at,
                    "explode",
                    explode,
                    format!("an array field of {} (e.g. `items`)", source.schema.name()),
                ));
            }
        }
        let check_field = |key: &str, field: &str| -> Result<(), TopologyError> {
            let (array, item) = match (&aggregation.explode, field.split_once('.')) {
                (Some(explode), Some((array, item))) if array == explode => (Some(array), item),
                _ => (None, field),
            };
            let known = match array {
                Some(array) => schema_item_fields(source.schema, array),
                None => schema_fields(source.schema),
            };
            let known = known.as_deref();
            let embedded = array.is_none() && is_embedded(source.schema, field);
            if field.is_empty() || (known.is_some_and(|k| !k.contains(&item)) && !embedded) {
                let hint = match (&aggregation.explode, known) {
                    (Some(e), Some(k)) => {
                        let items = schema_item_fields(source.schema, e).map(|f| format!(" ({})", f.join(", "))).unwrap_or_default();
                        format!("a field of {} ({}), or `{e}.<field>` for exploded items{items}", source.schema.name(), k.join(", "))
                    }
                    (None, Some(k)) => match schema_item_array(source.schema, item) {
                        Some(array) => format!("a field of {} ({}); `{item}` is a field of each element of `{array}`: add `explode = \"{array}\"` and write `{array}.{item}`", source.schema.name(), k.join(", ")),
                        None => format!("a field of {} ({}){}", source.schema.name(), k.join(", "), embedded_hint(source.schema)),
                    },
                    (_, None) => "a non-empty field name".to_string(),
                };
                return Err(TopologyError::invalid(&at, key, field, hint));
            }
            Ok(())
        };
        for field in &aggregation.group_by {
            check_field("group_by", field)?;
        }
        if let Some(filter) = &aggregation.filter {
            check_field("filter.field", &filter.field)?;
            if filter.values.is_empty()
                || filter.values.iter().any(|v| v.is_array() || v.is_object())
            {
                return Err(TopologyError::invalid(
                    &at,
                    "filter",
                    format!("{:?}", filter.values),
                    "`equals = VALUE` or `in = [VALUES]` with strings, numbers or booleans",
                ));
            }
        }
        for (name, kind) in &aggregation.aggregates {
            for field in kind.fields() {
                check_field(&format!("aggregates.{name}"), field)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Source {
        SourceBuilder::new("orders", "orders", Schema::OrderCreated)
            .time_field("timestamp", TimeFormat::EpochSeconds)
            .build()
    }

    #[test]
    fn rejects_unknown_source_and_fields() {
        let err = Topology::builder()
            .source(orders())
            .aggregation(
                AggregationBuilder::new("a", "nope", "out")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`source` = nope") && err.contains("orders"),
            "{err}"
        );

        let err = Topology::builder()
            .source(orders())
            .aggregation(
                AggregationBuilder::new("a", "orders", "out")
                    .group_by("product_id")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("group_by")
                && err.contains("explode = \"items\"")
                && err.contains("items.product_id"),
            "{err}"
        );
    }

    #[test]
    fn exploded_item_fields_are_addressed_with_the_array_prefix() {
        let topology = Topology::builder()
            .source(orders())
            .aggregation(
                AggregationBuilder::new("by_product", "orders", "out")
                    .explode("items")
                    .group_by("items.product_id")
                    .aggregate("quantity", AggregateKind::Sum("items.quantity".into()))
                    .build(),
            )
            .build();
        assert!(topology.is_ok(), "{topology:?}");
    }

    #[test]
    fn domain_event_fields_include_the_keys_inside_data() {
        let build = |field: &str| {
            Topology::builder()
                .source(
                    SourceBuilder::new("bus", "events", Schema::DomainEvent)
                        .time_field("timestamp", TimeFormat::Rfc3339)
                        .build(),
                )
                .aggregation(
                    AggregationBuilder::new("a", "bus", "out")
                        .group_by(field)
                        .aggregate("n", AggregateKind::Count)
                        .build(),
                )
                .build()
        };
        assert!(build("type").is_ok());
        assert!(build("data.user_id").is_ok());
        for wrong in ["user_id", "data.", "id.user_id"] {
            let err = build(wrong).unwrap_err().to_string();
            assert!(
                err.contains("id, type, data, timestamp")
                    && err.contains("`data.<key>` for a key of the JSON object inside `data`"),
                "{wrong}: {err}"
            );
        }
    }

    #[test]
    fn hopping_advance_must_divide_size() {
        let err = Topology::builder()
            .source(orders())
            .aggregation(
                AggregationBuilder::new("h", "orders", "out")
                    .hopping(300_000, 70_000)
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("window.advance") && err.contains("5m"),
            "{err}"
        );
    }

    #[test]
    fn grouping_by_the_source_key_needs_no_repartition() {
        let source = SourceBuilder::new("a", "analytics", Schema::AnalyticsEvent)
            .key_field("userId")
            .build();
        let topology = Topology::builder()
            .source(source)
            .aggregation(
                AggregationBuilder::new("s", "a", "out")
                    .session(1000)
                    .group_by("userId")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .aggregation(
                AggregationBuilder::new("t", "a", "out")
                    .group_by("eventType")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap();
        assert!(!topology.needs_repartition(&topology.aggregations[0]));
        assert!(topology.needs_repartition(&topology.aggregations[1]));
    }
}
