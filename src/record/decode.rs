//! JSON decoding driven by a per-source plan: only planned fields are kept, everything else is
//! skipped without allocating, and the seed schemas' required fields are type-checked.

use super::event_time::parse_rfc3339_ms;
use super::{DecodedRecord, FieldValue};
use crate::topology::{EventTime, Schema, Source, TimeFormat, Topology};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Schema versions this eddy reads; a record with another `version` is a decode error.
pub const SUPPORTED_VERSIONS: &[i64] = &[1];

/// Why a record could not be decoded. Sent as the `eddy.error` header of dead-lettered records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Where a field lives in a [`DecodedRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldRef {
    Top(usize),
    Item(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Any scalar; a missing value is null.
    Scalar,
    String,
    Number,
    Integer,
    Object,
}

#[derive(Clone, Debug)]
struct PlannedField {
    name: String,
    expect: Expect,
    required: bool,
}

/// Which fields of a source's records to keep and check, built once per source.
#[derive(Clone, Debug)]
pub struct DecodePlan {
    source: String,
    top: Vec<PlannedField>,
    /// The array to explode and the fields kept from each element.
    items: Option<(String, Vec<PlannedField>, bool)>,
    time: Option<(usize, TimeFormat)>,
}

fn seed_fields(schema: Schema) -> (Vec<PlannedField>, Option<(String, Vec<PlannedField>)>) {
    let f = |name: &str, expect| PlannedField {
        name: name.into(),
        expect,
        required: true,
    };
    match schema {
        Schema::OrderCreated => (
            vec![
                f("order_id", Expect::String),
                f("user_id", Expect::String),
                f("total_amount", Expect::Number),
                f("timestamp", Expect::String),
            ],
            Some((
                "items".into(),
                vec![
                    f("product_id", Expect::String),
                    f("quantity", Expect::Integer),
                    f("unit_price", Expect::Number),
                ],
            )),
        ),
        Schema::AnalyticsEvent => (
            vec![
                f("id", Expect::String),
                f("timestamp", Expect::Number),
                f("eventType", Expect::String),
                f("userId", Expect::String),
                f("properties", Expect::Object),
            ],
            None,
        ),
        Schema::Json => (Vec::new(), None),
    }
}

impl DecodePlan {
    /// Plans the decoding of `source` for every aggregation of `topology` that reads it.
    pub fn for_source(topology: &Topology, source: &Source) -> DecodePlan {
        let (top, seed_items) = seed_fields(source.schema);
        let mut plan = DecodePlan {
            source: source.name.clone(),
            top,
            items: None,
            time: None,
        };
        if let Some((array, fields)) = seed_items {
            plan.items = Some((array, fields, true));
        }
        if let EventTime::Field { field, format } = &source.time {
            let expect = match format {
                TimeFormat::Rfc3339 => Expect::String,
                _ => Expect::Number,
            };
            let slot = plan.add_top(field, expect, true);
            plan.time = Some((slot, *format));
        }
        for aggregation in topology
            .aggregations
            .iter()
            .filter(|a| a.source == source.name)
        {
            if let Some(explode) = &aggregation.explode {
                if plan
                    .items
                    .as_ref()
                    .is_none_or(|(array, ..)| array != explode)
                {
                    plan.items = Some((explode.clone(), Vec::new(), false));
                }
            }
            let fields = aggregation
                .group_by
                .iter()
                .map(String::as_str)
                .chain(aggregation.filter.as_ref().map(|f| f.field.as_str()))
                .chain(aggregation.aggregates.iter().flat_map(|(_, k)| k.fields()));
            for field in fields {
                plan.resolve_or_add(field);
            }
        }
        plan
    }

    fn add_top(&mut self, name: &str, expect: Expect, required: bool) -> usize {
        if let Some(slot) = self.top.iter().position(|f| f.name == name) {
            return slot;
        }
        self.top.push(PlannedField {
            name: name.into(),
            expect,
            required,
        });
        self.top.len() - 1
    }

    fn resolve_or_add(&mut self, name: &str) -> FieldRef {
        if let Some((array, fields, _)) = &mut self.items {
            if let Some(item) = name
                .strip_prefix(array.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                if let Some(slot) = fields.iter().position(|f| f.name == item) {
                    return FieldRef::Item(slot);
                }
                fields.push(PlannedField {
                    name: item.into(),
                    expect: Expect::Scalar,
                    required: false,
                });
                return FieldRef::Item(fields.len() - 1);
            }
        }
        FieldRef::Top(self.add_top(name, Expect::Scalar, false))
    }

    /// Where a topology field name (`userId`, `items.quantity`) is kept.
    pub fn resolve(&self, name: &str) -> FieldRef {
        if let Some((array, fields, _)) = &self.items {
            if let Some(item) = name
                .strip_prefix(array.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                if let Some(slot) = fields.iter().position(|f| f.name == item) {
                    return FieldRef::Item(slot);
                }
            }
        }
        FieldRef::Top(
            self.top
                .iter()
                .position(|f| f.name == name)
                .expect("field planned by for_source"),
        )
    }

    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// Decodes one record. `kafka_timestamp_ms` is used when the source takes event time from Kafka.
    pub fn decode<'a>(
        &self,
        bytes: &'a [u8],
        kafka_timestamp_ms: Option<i64>,
    ) -> Result<DecodedRecord<'a>, DecodeError> {
        let mut record = DecodedRecord {
            event_time_ms: 0,
            fields: vec![None; self.top.len()],
            items: Vec::new(),
        };
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        de::Deserializer::deserialize_map(
            &mut deserializer,
            RecordVisitor {
                plan: self,
                record: &mut record,
            },
        )
        .map_err(|e| DecodeError(format!("invalid JSON for source `{}`: {e}", self.source)))?;
        deserializer
            .end()
            .map_err(|e| DecodeError(format!("trailing bytes after the JSON object: {e}")))?;
        self.check(&record.fields, &self.top, "")?;
        if let Some((array, fields, _)) = &self.items {
            for (i, item) in record.items.iter().enumerate() {
                self.check(item, fields, &format!("{array}[{i}]."))?;
            }
        }
        record.event_time_ms = match self.time {
            None => kafka_timestamp_ms.ok_or_else(|| {
                DecodeError(
                    "record has no Kafka timestamp and the source takes event time from it".into(),
                )
            })?,
            Some((slot, format)) => {
                let name = &self.top[slot].name;
                match (format, record.fields[slot].as_ref()) {
                    (TimeFormat::Rfc3339, Some(FieldValue::Str(s))) => parse_rfc3339_ms(s)
                        .ok_or_else(|| {
                            DecodeError(format!(
                                "field `{name}` = {s:?} is not an RFC 3339 timestamp"
                            ))
                        })?,
                    (TimeFormat::EpochMillis, Some(FieldValue::Int(i))) => *i,
                    (TimeFormat::EpochMillis, Some(FieldValue::Float(f))) => *f as i64,
                    (
                        TimeFormat::EpochSeconds,
                        Some(v @ (FieldValue::Int(_) | FieldValue::Float(_))),
                    ) => (v.as_f64().unwrap_or(0.0) * 1000.0) as i64,
                    (_, other) => {
                        return Err(DecodeError(format!(
                            "field `{name}` = {} is not a {} timestamp",
                            other.map_or("(missing)".to_string(), |v| v.to_string()),
                            format.name()
                        )))
                    }
                }
            }
        };
        Ok(record)
    }

    fn check(
        &self,
        values: &[Option<FieldValue<'_>>],
        fields: &[PlannedField],
        prefix: &str,
    ) -> Result<(), DecodeError> {
        for (value, field) in values.iter().zip(fields) {
            let ok = match (field.expect, value) {
                (_, None) => !field.required,
                (Expect::Scalar, Some(_)) => true,
                (Expect::String, Some(FieldValue::Str(_))) => true,
                (Expect::Number, Some(FieldValue::Int(_) | FieldValue::Float(_))) => true,
                (Expect::Integer, Some(FieldValue::Int(_))) => true,
                (Expect::Object, Some(FieldValue::Null)) => true,
                _ => false,
            };
            if !ok {
                let want = match field.expect {
                    Expect::Scalar => "a string, number or boolean",
                    Expect::String => "a string",
                    Expect::Number => "a number",
                    Expect::Integer => "an integer",
                    Expect::Object => "an object",
                };
                return Err(match value {
                    None => DecodeError(format!(
                        "missing required field `{prefix}{}` ({want})",
                        field.name
                    )),
                    Some(v) => DecodeError(format!(
                        "field `{prefix}{}` is {v}, expected {want}",
                        field.name
                    )),
                });
            }
        }
        Ok(())
    }
}

/// A map key, borrowed when the JSON has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A planned value: scalars are kept, an object is accepted (as `Null`) where an object is expected.
struct ValueSeed {
    object_ok: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = FieldValue<'de>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = FieldValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.object_ok {
            "an object"
        } else {
            "a string, number, boolean or null"
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(FieldValue::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(FieldValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(FieldValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(FieldValue::Float(v as f64), FieldValue::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(FieldValue::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(FieldValue::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(FieldValue::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if !self.object_ok {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(FieldValue::Null)
    }
}

struct RecordVisitor<'p, 'r, 'de> {
    plan: &'p DecodePlan,
    record: &'r mut DecodedRecord<'de>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut saw_items = false;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if let Some(slot) = self.plan.top.iter().position(|f| f.name == key) {
                let object_ok = self.plan.top[slot].expect == Expect::Object;
                let value = map
                    .next_value_seed(ValueSeed { object_ok })
                    .map_err(|e| de::Error::custom(format!("field `{key}`: {e}")))?;
                self.record.fields[slot] = Some(value);
            } else if let Some((array, fields, _)) =
                self.plan.items.as_ref().filter(|(a, ..)| *a == key)
            {
                saw_items = true;
                self.record.items = map
                    .next_value_seed(ItemsSeed { fields })
                    .map_err(|e| de::Error::custom(format!("field `{array}`: {e}")))?;
            } else if key == "version" {
                let version: serde_json::Value = map.next_value()?;
                match version.as_i64() {
                    Some(v) if SUPPORTED_VERSIONS.contains(&v) => {}
                    _ => return Err(de::Error::custom(format!("unknown schema version {version} (this eddy reads versions {SUPPORTED_VERSIONS:?})"))),
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if let Some((array, _, true)) = &self.plan.items {
            if !saw_items {
                return Err(de::Error::custom(format!(
                    "missing required field `{array}` (an array)"
                )));
            }
        }
        Ok(())
    }
}

struct ItemsSeed<'p> {
    fields: &'p [PlannedField],
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<Vec<Option<FieldValue<'de>>>>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<Vec<Option<FieldValue<'de>>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(item) = seq.next_element_seed(ItemSeed {
            fields: self.fields,
        })? {
            items.push(item);
        }
        Ok(items)
    }
}

struct ItemSeed<'p> {
    fields: &'p [PlannedField],
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Vec<Option<FieldValue<'de>>>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = Vec<Option<FieldValue<'de>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![None; self.fields.len()];
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.fields.iter().position(|f| f.name == key) {
                Some(slot) => {
                    values[slot] = Some(map.next_value_seed(ValueSeed { object_ok: false })?)
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::*;

    fn topology() -> Topology {
        Topology::builder()
            .source(
                SourceBuilder::new("orders", "orders", Schema::OrderCreated)
                    .time_field("timestamp", TimeFormat::Rfc3339)
                    .build(),
            )
            .source(
                SourceBuilder::new("analytics", "analytics", Schema::AnalyticsEvent)
                    .time_field("timestamp", TimeFormat::EpochMillis)
                    .build(),
            )
            .aggregation(
                AggregationBuilder::new("p", "orders", "out")
                    .explode("items")
                    .group_by("items.product_id")
                    .aggregate("q", AggregateKind::Sum("items.quantity".into()))
                    .aggregate("r", AggregateKind::Sum("total_amount".into()))
                    .build(),
            )
            .aggregation(
                AggregationBuilder::new("e", "analytics", "out")
                    .group_by("eventType")
                    .aggregate(
                        "u",
                        AggregateKind::Distinct {
                            field: "userId".into(),
                            lg_k: 12,
                        },
                    )
                    .build(),
            )
            .build()
            .unwrap()
    }

    fn plan(source: &str) -> DecodePlan {
        let t = topology();
        DecodePlan::for_source(&t, t.source(source).unwrap())
    }

    const ORDER: &str = r#"{"order_id":"o1","user_id":"u1","items":[{"product_id":"p1","quantity":2,"unit_price":9.5},{"product_id":"p2","quantity":1,"unit_price":1}],"total_amount":20.0,"timestamp":"2026-11-22T10:00:00Z","extra":{"a":[1,2]}}"#;

    #[test]
    fn decodes_orders_with_items_and_rfc3339_time() {
        let plan = plan("orders");
        let record = plan.decode(ORDER.as_bytes(), None).unwrap();
        assert_eq!(
            record.event_time_ms,
            parse_rfc3339_ms("2026-11-22T10:00:00Z").unwrap()
        );
        assert_eq!(record.items.len(), 2);
        let product = plan.resolve("items.product_id");
        assert_eq!(
            record.get(product, Some(1)),
            Some(&FieldValue::Str("p2".into()))
        );
        assert_eq!(
            record.get(plan.resolve("total_amount"), None),
            Some(&FieldValue::Float(20.0))
        );
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        let plan = plan("orders");
        let cases = [
            (
                ORDER.replace("\"quantity\":2", "\"quantity\":\"two\""),
                "items[0].quantity",
            ),
            (
                ORDER.replace("\"user_id\":\"u1\",", ""),
                "missing required field `user_id`",
            ),
            (
                ORDER.replace("2026-11-22T10:00:00Z", "yesterday"),
                "not an RFC 3339",
            ),
            (
                ORDER.replace("{\"order_id\"", "{\"version\":7,\"order_id\""),
                "unknown schema version 7",
            ),
            ("{not json".to_string(), "invalid JSON"),
            (
                ORDER.replace("\"items\":[", "\"itemz\":["),
                "missing required field `items`",
            ),
        ];
        for (input, expected) in cases {
            let err = plan.decode(input.as_bytes(), None).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
        assert!(plan
            .decode(
                ORDER
                    .replace("{\"order_id\"", "{\"version\":1,\"order_id\"")
                    .as_bytes(),
                None
            )
            .is_ok());
    }

    #[test]
    fn analytics_properties_must_be_an_object_and_time_a_number() {
        let plan = plan("analytics");
        let good = r#"{"id":"e1","timestamp":1795340400123,"eventType":"page_view","userId":"u9","properties":{"page":"/"}}"#;
        let record = plan.decode(good.as_bytes(), None).unwrap();
        assert_eq!(record.event_time_ms, 1_795_340_400_123);
        assert!(plan
            .decode(good.replace("{\"page\":\"/\"}", "[1]").as_bytes(), None)
            .is_err());
        assert!(plan
            .decode(good.replace("1795340400123", "\"soon\"").as_bytes(), None)
            .is_err());
    }
}
