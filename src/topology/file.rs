//! `topology/*.toml`: a thin parser over [`TopologyBuilder`] that adds file and line to every error.

use super::*;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    #[serde(default)]
    source: Vec<Spanned<SourceEntry>>,
    #[serde(default)]
    aggregation: Vec<Spanned<AggregationEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry {
    name: String,
    topic: Option<String>,
    topics: Option<Vec<String>>,
    #[serde(default = "default_schema")]
    schema: Spanned<String>,
    key_field: Option<String>,
    time: Option<Spanned<TimeEntry>>,
    #[serde(default)]
    on_decode_error: Option<Spanned<String>>,
    dead_letter_topic: Option<String>,
    #[serde(default)]
    version: Vec<Spanned<VersionEntry>>,
    max_future_skew: Option<DurationMs>,
    /// `kafka` (default) or `nats`.
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    /// NATS: the JetStream stream and one subject filter per split.
    stream: Option<String>,
    subjects: Option<Vec<String>>,
    on_missing: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionEntry {
    version: i64,
    topic: Option<String>,
    /// NATS: records on this subject without a `version` field are this version.
    subject: Option<String>,
    #[serde(default)]
    fields: toml::Table,
    #[serde(default)]
    defaults: toml::Table,
}

fn default_schema() -> Spanned<String> {
    Spanned::new(0..0, "json".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeEntry {
    field: Option<String>,
    format: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregationEntry {
    name: Spanned<String>,
    source: Spanned<String>,
    filter: Option<Spanned<FilterEntry>>,
    explode: Option<Spanned<String>>,
    group_by: Option<Spanned<Vec<String>>>,
    window: Spanned<WindowEntry>,
    grace: Option<Spanned<DurationMs>>,
    retention: Option<Spanned<DurationMs>>,
    emit: Option<Spanned<String>>,
    aggregates: Spanned<OrderedAggregates>,
    output: Spanned<String>,
    late_records_topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterEntry {
    field: String,
    equals: Option<serde_json::Value>,
    #[serde(rename = "in")]
    one_of: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowEntry {
    #[serde(rename = "type")]
    kind: String,
    size: Option<DurationMs>,
    advance: Option<DurationMs>,
    gap: Option<DurationMs>,
}

/// The `[aggregation.aggregates]` table in file order, values with their spans.
struct OrderedAggregates(Vec<(String, Spanned<String>)>);

impl<'de> Deserialize<'de> for OrderedAggregates {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedAggregates;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of `name = \"count\" | \"sum(FIELD)\" | \"min(FIELD)\" | \"max(FIELD)\" | \"distinct(FIELD[, PRECISION])\"`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, text)) = map.next_entry::<String, Spanned<String>>()? {
                    out.push((name, text));
                }
                Ok(OrderedAggregates(out))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Where each key of each item was written, to put a line number on validation errors.
#[derive(Default)]
struct Lines(HashMap<(String, String), usize>);

impl Lines {
    fn record(&mut self, item: &str, key: &str, text: &str, span: std::ops::Range<usize>) {
        self.0.insert(
            (item.to_string(), key.to_string()),
            line_of(text, span.start),
        );
    }

    /// The line of `key`, else of its closest recorded parent (`version.2.topic` -> `version.2`).
    fn find(&self, item: &str, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.0.get(&(item.to_string(), key.to_string())) {
                return Some(*line);
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => break,
            }
        }
        self.0.get(&(item.to_string(), String::new())).copied()
    }
}

pub(super) fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Topology, TopologyError> {
    let file: TopologyFile = toml::from_str(text).map_err(|e| TopologyError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let at =
        |span: std::ops::Range<usize>| format!("{}:{}", path.display(), line_of(text, span.start));
    let mut lines = Lines::default();
    let mut builder = TopologyBuilder::default();

    for entry in file.source {
        let span = entry.span();
        let entry = entry.into_inner();
        let item = format!("source `{}`", entry.name);
        lines.record(&item, "", text, span.clone());
        let schema = Schema::parse(entry.schema.get_ref()).ok_or_else(|| {
            TopologyError::invalid(
                at(entry.schema.span()),
                "schema",
                entry.schema.get_ref(),
                format!("one of {}", Schema::NAMES),
            )
        })?;
        let time = match entry.time {
            None => EventTime::KafkaTimestamp,
            Some(time) => {
                let span = time.span();
                lines.record(&item, "time", text, span.clone());
                let time = time.into_inner();
                let format = match time.format.as_str() {
                    "kafka" => None,
                    other if TimeFormat::parse(other).is_some() => TimeFormat::parse(other),
                    other => {
                        return Err(TopologyError::invalid(
                            at(span),
                            "time.format",
                            other,
                            format!("one of {}", TimeFormat::NAMES),
                        ))
                    }
                };
                match (format, time.field) {
                    (None, None) => EventTime::KafkaTimestamp,
                    (Some(format), Some(field)) => EventTime::Field { field, format },
                    (Some(_), None) => {
                        return Err(TopologyError::invalid(
                            at(span),
                            "time.field",
                            "(missing)",
                            "the field holding the event time, e.g. `field = \"timestamp\"`",
                        ))
                    }
                    (None, Some(field)) => return Err(TopologyError::invalid(
                        at(span),
                        "time.field",
                        field,
                        "no field with `format = \"kafka\"` (the Kafka record timestamp is used)",
                    )),
                }
            }
        };
        let on_decode_error = match entry.on_decode_error {
            None => DecodeErrorPolicy::DeadLetter,
            Some(policy) => match policy.get_ref().as_str() {
                "dlq" => DecodeErrorPolicy::DeadLetter,
                "skip" => DecodeErrorPolicy::Skip,
                "fail" => DecodeErrorPolicy::Fail,
                other => {
                    return Err(TopologyError::invalid(
                        at(policy.span()),
                        "on_decode_error",
                        other,
                        "one of `dlq` (default), `skip` or `fail`",
                    ))
                }
            },
        };
        let is_nats = match &entry.kind {
            None => false,
            Some(kind) => match kind.get_ref().as_str() {
                "kafka" => false,
                "nats" => true,
                other => {
                    return Err(TopologyError::invalid(
                        at(kind.span()),
                        "type",
                        other,
                        "`kafka` (default) or `nats`",
                    ))
                }
            },
        };
        let (topics, nats) = if is_nats {
            let (Some(stream), Some(subjects), None, None) =
                (entry.stream, entry.subjects, &entry.topic, &entry.topics)
            else {
                return Err(TopologyError::invalid(
                    at(span.clone()),
                    "stream",
                    "(missing, or with topic)",
                    "a NATS source names `stream = \"NAME\"` and `subjects = [\"FILTER\", ...]` (one split each), and no topic",
                ));
            };
            let skip_missing = match &entry.on_missing {
                None => false,
                Some(policy) => match policy.get_ref().as_str() {
                    "fail" => false,
                    "skip" => true,
                    other => {
                        return Err(TopologyError::invalid(
                            at(policy.span()),
                            "on_missing",
                            other,
                            "`fail` (default: stop when the stream no longer holds the committed position) or `skip` (go on from its first message, counted)",
                        ))
                    }
                },
            };
            (
                Vec::new(),
                Some(crate::topology::NatsSource {
                    stream,
                    subjects,
                    skip_missing,
                }),
            )
        } else {
            if entry.stream.is_some() || entry.subjects.is_some() || entry.on_missing.is_some() {
                return Err(TopologyError::invalid(
                    at(span.clone()),
                    "stream",
                    "(set)",
                    "`stream`, `subjects` and `on_missing` belong to `type = \"nats\"` sources",
                ));
            }
            let topics = match (entry.topic, entry.topics) {
                (Some(topic), None) => vec![topic],
                (None, Some(topics)) => topics,
                _ => return Err(TopologyError::invalid(
                    at(span.clone()),
                    "topic",
                    "(both or neither)",
                    "exactly one of `topic = \"NAME\"` or `topics = [\"NAME.v1\", \"NAME.v2\"]`",
                )),
            };
            (topics, None)
        };
        let mut versions = Vec::new();
        for version in entry.version {
            let span = version.span();
            let version = version.into_inner();
            lines.record(
                &item,
                &format!("version.{}", version.version),
                text,
                span.clone(),
            );
            let mut fields = Vec::new();
            for (used, written) in version.fields {
                let toml::Value::String(written) = written else {
                    return Err(TopologyError::invalid(
                        at(span),
                        format!("version.{}.fields.{used}", version.version),
                        written,
                        "the name this version writes the field under, as a string",
                    ));
                };
                fields.push((used, written));
            }
            let mut defaults = Vec::new();
            for (used, value) in version.defaults {
                let json = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
                defaults.push((used, json));
            }
            if version.topic.is_some() && version.subject.is_some() {
                return Err(TopologyError::invalid(
                    at(span),
                    format!("version.{}.subject", version.version),
                    "(with topic)",
                    "`topic` for a Kafka source, `subject` for a NATS source",
                ));
            }
            versions.push(SourceVersion {
                version: version.version,
                topic: version.topic.or(version.subject),
                fields,
                defaults,
            });
        }
        builder = builder.source(Source {
            name: entry.name,
            topics,
            schema,
            key_field: entry.key_field,
            time,
            on_decode_error,
            dead_letter_topic: entry.dead_letter_topic,
            versions,
            max_future_skew_ms: entry
                .max_future_skew
                .map_or(DEFAULT_MAX_FUTURE_SKEW_MS, |d| d.0),
            nats,
        });
    }

    for entry in file.aggregation {
        let span = entry.span();
        let entry = entry.into_inner();
        let name = entry.name.get_ref().clone();
        let item = format!("aggregation `{name}`");
        lines.record(&item, "", text, span);
        lines.record(&item, "name", text, entry.name.span());
        lines.record(&item, "source", text, entry.source.span());
        lines.record(&item, "window", text, entry.window.span());
        lines.record(&item, "aggregates", text, entry.aggregates.span());
        lines.record(&item, "output", text, entry.output.span());
        for (key, spanned) in [
            ("group_by", entry.group_by.as_ref().map(|s| s.span())),
            ("explode", entry.explode.as_ref().map(|s| s.span())),
            ("grace", entry.grace.as_ref().map(|s| s.span())),
            ("filter", entry.filter.as_ref().map(|s| s.span())),
        ] {
            if let Some(span) = spanned {
                lines.record(&item, key, text, span);
            }
        }
        let window_span = entry.window.span();
        let window = entry.window.into_inner();
        let window = match (
            window.kind.as_str(),
            window.size,
            window.advance,
            window.gap,
        ) {
            ("tumbling", Some(size), None, None) => WindowSpec::Tumbling { size_ms: size.0 },
            ("hopping", Some(size), Some(advance), None) => WindowSpec::Hopping {
                size_ms: size.0,
                advance_ms: advance.0,
            },
            ("session", None, None, Some(gap)) => WindowSpec::Session { gap_ms: gap.0 },
            (kind @ ("tumbling" | "hopping" | "session"), ..) => {
                let needs = match kind {
                    "tumbling" => "`size` only, e.g. `{ type = \"tumbling\", size = \"1m\" }`",
                    "hopping" => "`size` and `advance`, e.g. `{ type = \"hopping\", size = \"5m\", advance = \"1m\" }`",
                    _ => "`gap` only, e.g. `{ type = \"session\", gap = \"30m\" }`",
                };
                return Err(TopologyError::invalid(
                    at(window_span),
                    "window",
                    kind,
                    format!("a {kind} window takes {needs}"),
                ));
            }
            (other, ..) => {
                return Err(TopologyError::invalid(
                    at(window_span),
                    "window.type",
                    other,
                    "one of `tumbling`, `hopping` or `session`",
                ))
            }
        };
        let emit = match entry.emit {
            None => EmitMode::Final,
            Some(emit) => match emit.get_ref().as_str() {
                "final" => EmitMode::Final,
                "update" => EmitMode::Update,
                other => return Err(TopologyError::invalid(at(emit.span()), "emit", other, "`final` (once, when the window closes) or `update` (at every commit the window changed)")),
            },
        };
        let filter = match entry.filter {
            None => None,
            Some(filter) => {
                let span = filter.span();
                let filter = filter.into_inner();
                let values = match (filter.equals, filter.one_of) {
                    (Some(value), None) => vec![value],
                    (None, Some(values)) => values,
                    _ => {
                        return Err(TopologyError::invalid(
                            at(span),
                            "filter",
                            "{..}",
                            "exactly one of `equals = VALUE` or `in = [VALUES]`",
                        ))
                    }
                };
                Some(Filter {
                    field: filter.field,
                    values,
                })
            }
        };
        let mut aggregates = Vec::new();
        for (aggregate, expression) in entry.aggregates.into_inner().0 {
            let kind = AggregateKind::parse(expression.get_ref()).map_err(|allowed| {
                TopologyError::invalid(
                    format!("{}: {item}", at(expression.span())),
                    format!("aggregates.{aggregate}"),
                    expression.get_ref(),
                    allowed,
                )
            })?;
            lines.record(
                &item,
                &format!("aggregates.{aggregate}"),
                text,
                expression.span(),
            );
            aggregates.push((aggregate, kind));
        }
        builder = builder.aggregation(Aggregation {
            name,
            source: entry.source.into_inner(),
            filter,
            explode: entry.explode.map(Spanned::into_inner),
            group_by: entry.group_by.map(Spanned::into_inner).unwrap_or_default(),
            window,
            grace_ms: entry.grace.map_or(0, |g| g.into_inner().0),
            retention_ms: entry.retention.map_or(0, |r| r.into_inner().0),
            emit,
            aggregates,
            output_topic: entry.output.into_inner(),
            late_records_topic: entry.late_records_topic,
        });
    }

    builder.build().map_err(|error| match error {
        TopologyError::Invalid {
            location,
            key,
            value,
            allowed,
        } => {
            let line = lines.find(&location, &key);
            let location = match line {
                Some(line) => format!("{}:{line}: {location}", path.display()),
                None => format!("{}: {location}", path.display()),
            };
            TopologyError::Invalid {
                location,
                key,
                value,
                allowed,
            }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[source]]
name = "orders"
topic = "orders"
schema = "order_created"
key_field = "order_id"
time = { field = "timestamp", format = "epoch_s" }

[[aggregation]]
name = "orders.by_product"
source = "orders"
explode = "items"
group_by = ["items.product_id"]
window = { type = "tumbling", size = "1m" }
grace = "10s"
output = "order-aggregates"
[aggregation.aggregates]
quantity = "sum(items.quantity)"
buyers = "distinct(user_id, 11)"
"#;

    fn parse_str(text: &str) -> Result<Topology, TopologyError> {
        parse(Path::new("topology/test.toml"), text)
    }

    #[test]
    fn parses_a_complete_file_keeping_aggregate_order() {
        let topology = parse_str(GOOD).unwrap();
        let aggregation = &topology.aggregations[0];
        assert_eq!(aggregation.grace_ms, 10_000);
        assert_eq!(aggregation.emit, EmitMode::Final);
        let names: Vec<_> = aggregation
            .aggregates
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["quantity", "buyers"]);
        assert_eq!(
            aggregation.aggregates[1].1,
            AggregateKind::Distinct {
                field: "user_id".into(),
                lg_k: 11,
                theta_lg_k: None
            }
        );
    }

    #[test]
    fn errors_name_file_line_key_value_and_what_is_allowed() {
        let bad = GOOD.replace("size = \"1m\"", "size = \"1 minute\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("topology/test.toml")
                && err.contains("line 14")
                && err.contains("1 minute"),
            "{err}"
        );

        let bad = GOOD.replace("group_by = [\"items.product_id\"]", "group_by = [\"sku\"]");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("topology/test.toml:13: aggregation `orders.by_product`"),
            "{err}"
        );
        assert!(
            err.contains("`group_by` = sku") && err.contains("product_id"),
            "{err}"
        );

        let bad = GOOD.replace("\"sum(items.quantity)\"", "\"avg(items.quantity)\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("unknown function `avg`") && err.starts_with("topology/test.toml:18"),
            "{err}"
        );

        let bad = GOOD.replace("grace = \"10s\"", "grace = \"10s\"\nemit = \"sometimes\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("test.toml:16")
                && err.contains("`emit` = sometimes")
                && err.contains("`update`"),
            "{err}"
        );
    }

    #[test]
    fn a_time_format_the_schema_cannot_have_is_rejected_with_the_fix() {
        let bad = GOOD.replace("format = \"epoch_s\"", "format = \"rfc3339\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("topology/test.toml:7: source `orders`")
                && err.contains("`time.format` = rfc3339")
                && err.contains("format = \"epoch_s\""),
            "{err}"
        );
        let bad = GOOD.replace("format = \"epoch_s\"", "format = \"epoch_ms\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("Unix seconds") && err.contains("epoch_s"),
            "{err}"
        );
    }

    #[test]
    fn sources_read_several_topics_with_versions() {
        let text = r#"
[[source]]
name = "orders"
topics = ["order.created.v1", "order.created.v2"]
schema = "order_created"
time = { field = "timestamp", format = "epoch_s" }

[[source.version]]
version = 2
topic = "order.created.v2"
fields = { user_id = "customer_id" }

[[aggregation]]
name = "orders.per_user"
source = "orders"
group_by = ["user_id"]
window = { type = "tumbling", size = "1m" }
output = "order-aggregates"
[aggregation.aggregates]
orders = "count"
"#;
        let topology = parse_str(text).unwrap();
        let source = &topology.sources[0];
        assert_eq!(source.topics, ["order.created.v1", "order.created.v2"]);
        assert_eq!(source.known_versions(), [1, 2]);
        assert_eq!(source.topic_version("order.created.v2"), 2);
        assert!(topology.needs_repartition(&topology.aggregations[0]));
        let bad = text.replace(
            "topic = \"order.created.v2\"\nfields",
            "topic = \"orders.v9\"\nfields",
        );
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(
            err.contains("test.toml:8") && err.contains("orders.v9"),
            "{err}"
        );
        let bad = text.replace("user_id = \"customer_id\"", "buyer = \"customer_id\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("buyer") && err.contains("user_id"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let bad = GOOD.replace("grace = \"10s\"", "grace_period = \"10s\"");
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("grace_period"), "{err}");
    }

    #[test]
    fn window_kinds_name_the_keys_they_take() {
        let bad = GOOD.replace(
            "{ type = \"tumbling\", size = \"1m\" }",
            "{ type = \"hopping\", size = \"5m\" }",
        );
        let err = parse_str(&bad).unwrap_err().to_string();
        assert!(err.contains("`advance`"), "{err}");
    }
}
