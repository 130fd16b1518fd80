//! JSON decoding driven by a per-source plan: only planned fields are kept, everything else is
//! skipped without allocating. Seed schemas are checked against their [`crate::schema`] table,
//! event time is read by the source's declared format alone, and versioned sources map each
//! version's fields onto the names the aggregations use.

use super::{DecodedRecord, FieldValue};
use crate::schema::{FieldType, TimeFormat, VERSION_FIELD};
use crate::topology::{EventTime, Schema, Source, Topology};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

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
    /// A string holding a JSON object, whose keys are read by the `inner` fields.
    JsonText,
}

impl Expect {
    fn of(ty: FieldType) -> Expect {
        match ty {
            FieldType::String => Expect::String,
            FieldType::Number => Expect::Number,
            FieldType::Integer => Expect::Integer,
            FieldType::StringMap | FieldType::Array(_) => Expect::Object,
            FieldType::JsonObjectString => Expect::JsonText,
        }
    }
}

#[derive(Clone, Debug)]
struct PlannedField {
    name: String,
    expect: Expect,
    required: bool,
    /// `data.user_id`: read from the JSON object inside the string field `data`, not from the
    /// record's own keys.
    inner: bool,
}

/// Where one version finds a planned field: a captured key, and the value to use when absent.
#[derive(Clone, Debug)]
struct VersionedSlot {
    wire: usize,
    default: Option<FieldValue<'static>>,
}

/// How a versioned source's records are read: every key any version writes is captured once
/// ("wire" slots), then each version maps wire slots onto the planned fields.
#[derive(Clone, Debug)]
struct Versions {
    wire: Vec<PlannedField>,
    by_version: Vec<(i64, Vec<VersionedSlot>)>,
}

/// Which fields of a source's records to keep and check, built once per source.
#[derive(Clone, Debug)]
pub struct DecodePlan {
    source: String,
    top: Vec<PlannedField>,
    /// The array to explode and the fields kept from each element.
    items: Option<(String, Vec<PlannedField>, bool)>,
    time: Option<(usize, TimeFormat)>,
    /// Present when the source declares versions.
    versions: Option<Versions>,
    known_versions: Vec<i64>,
    topic_versions: HashMap<String, i64>,
    max_future_skew_ms: i64,
    /// The schema's fields that hold a JSON object in a string (`data`).
    json_text_fields: Vec<&'static str>,
}

fn planned(fields: &[crate::schema::FieldDef]) -> Vec<PlannedField> {
    fields
        .iter()
        .filter(|f| !matches!(f.ty, FieldType::Array(_)))
        .map(|f| PlannedField {
            name: f.name.into(),
            expect: Expect::of(f.ty),
            required: f.required,
            inner: false,
        })
        .collect()
}

fn seed_fields(schema: Schema) -> (Vec<PlannedField>, Option<(String, Vec<PlannedField>)>) {
    let Some(def) = schema.def() else {
        return (Vec::new(), None);
    };
    let items = def.fields.iter().find_map(|f| match f.ty {
        FieldType::Array(items) => Some((f.name.to_string(), planned(items))),
        _ => None,
    });
    (planned(def.fields), items)
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn default_value(json: &serde_json::Value) -> FieldValue<'static> {
    match json {
        serde_json::Value::Bool(b) => FieldValue::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map_or(
            FieldValue::Float(n.as_f64().unwrap_or(0.0)),
            FieldValue::Int,
        ),
        serde_json::Value::String(s) => FieldValue::Str(Cow::Owned(s.clone())),
        _ => FieldValue::Null,
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
            versions: None,
            known_versions: source.known_versions(),
            max_future_skew_ms: source.max_future_skew_ms,
            json_text_fields: source.schema.def().map_or_else(Vec::new, |def| {
                def.fields
                    .iter()
                    .filter(|f| f.ty == FieldType::JsonObjectString)
                    .map(|f| f.name)
                    .collect()
            }),
            // Kafka topics, and the subjects a NATS source's versions name.
            topic_versions: source
                .topics
                .iter()
                .chain(source.versions.iter().filter_map(|v| v.topic.as_ref()))
                .map(|t| (t.clone(), source.topic_version(t)))
                .collect(),
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
            plan.top[slot].required = true;
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
        if !source.versions.is_empty() {
            plan.versions = Some(plan.plan_versions(source));
        }
        plan
    }

    fn plan_versions(&self, source: &Source) -> Versions {
        let mut wire: Vec<PlannedField> = Vec::new();
        let mut by_version = Vec::new();
        for version in source.known_versions() {
            let declared = source.versions.iter().find(|v| v.version == version);
            let slots = self
                .top
                .iter()
                .map(|field| {
                    let written = declared
                        .and_then(|v| v.fields.iter().find(|(used, _)| *used == field.name))
                        .map_or(field.name.as_str(), |(_, written)| written.as_str());
                    let default = declared
                        .and_then(|v| v.defaults.iter().find(|(used, _)| *used == field.name))
                        .map(|(_, value)| default_value(value));
                    let slot = wire
                        .iter()
                        .position(|w| w.name == written)
                        .unwrap_or_else(|| {
                            wire.push(PlannedField {
                                name: written.into(),
                                expect: field.expect,
                                required: false,
                                inner: self.is_inner(written),
                            });
                            wire.len() - 1
                        });
                    VersionedSlot {
                        wire: slot,
                        default,
                    }
                })
                .collect();
            by_version.push((version, slots));
        }
        Versions { wire, by_version }
    }

    /// Whether `name` is a key inside a JSON-text field (`data.user_id`).
    fn is_inner(&self, name: &str) -> bool {
        name.split_once('.')
            .is_some_and(|(outer, key)| !key.is_empty() && self.json_text_fields.contains(&outer))
    }

    fn add_top(&mut self, name: &str, expect: Expect, required: bool) -> usize {
        if let Some(slot) = self.top.iter().position(|f| f.name == name) {
            return slot;
        }
        self.top.push(PlannedField {
            name: name.into(),
            expect,
            required,
            inner: self.is_inner(name),
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
                    inner: false,
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

    /// The version of records on `topic` that carry no `version` field.
    pub fn topic_version(&self, topic: &str) -> i64 {
        self.topic_versions.get(topic).copied().unwrap_or(1)
    }

    /// Decodes one record of version 1 unless it says otherwise.
    pub fn decode<'a>(
        &self,
        bytes: &'a [u8],
        kafka_timestamp_ms: Option<i64>,
    ) -> Result<DecodedRecord<'a>, DecodeError> {
        self.decode_from(bytes, kafka_timestamp_ms, 1)
    }

    /// Decodes one record. `kafka_timestamp_ms` is used when the source takes event time from
    /// Kafka; `topic_version` is the version of records without a `version` field (see
    /// [`DecodePlan::topic_version`]).
    pub fn decode_from<'a>(
        &self,
        bytes: &'a [u8],
        kafka_timestamp_ms: Option<i64>,
        topic_version: i64,
    ) -> Result<DecodedRecord<'a>, DecodeError> {
        let mut record = DecodedRecord {
            event_time_ms: 0,
            fields: Vec::new(),
            items: Vec::new(),
        };
        let keys = self.versions.as_ref().map_or(&self.top, |v| &v.wire);
        let mut captured = vec![None; keys.len()];
        let mut version = None;
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let saw_items = de::Deserializer::deserialize_map(
            &mut deserializer,
            RecordVisitor {
                keys,
                items: self.items.as_ref(),
                fields: &mut captured,
                record_items: &mut record.items,
                version: &mut version,
            },
        )
        .map_err(|e| DecodeError(format!("invalid JSON for source `{}`: {e}", self.source)))?;
        deserializer
            .end()
            .map_err(|e| DecodeError(format!("trailing bytes after the JSON object: {e}")))?;
        for (slot, field) in keys.iter().enumerate() {
            if field.expect == Expect::JsonText {
                read_json_text(keys, slot, &mut captured)?;
            }
        }
        let version = match version {
            None => topic_version,
            Some(FieldValue::Int(v)) => v,
            Some(other) => {
                return Err(DecodeError(format!(
                    "field `{VERSION_FIELD}` is {other}, expected an integer"
                )))
            }
        };
        if !self.known_versions.contains(&version) {
            return Err(DecodeError(format!(
                "unknown schema version {version}: source `{}` reads versions {:?} (declare it with [[source.version]])",
                self.source, self.known_versions
            )));
        }
        if let Some((array, _, true)) = &self.items {
            if !saw_items {
                return Err(DecodeError(format!(
                    "missing required field `{array}` (an array)"
                )));
            }
        }
        record.fields = match &self.versions {
            None => captured,
            Some(versions) => {
                let (_, slots) = versions
                    .by_version
                    .iter()
                    .find(|(v, _)| *v == version)
                    .expect("known version is planned");
                slots
                    .iter()
                    .map(|slot| captured[slot.wire].clone().or_else(|| slot.default.clone()))
                    .collect()
            }
        };
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
                let value = record.fields[slot].as_ref();
                let parsed = match value {
                    Some(FieldValue::Str(s)) => format.from_str(s),
                    Some(FieldValue::Int(i)) => format.from_int(*i),
                    Some(FieldValue::Float(f)) => format.from_float(*f),
                    _ => Err(crate::schema::TimeParseError::NotANumber(format.name())),
                };
                let parsed = parsed.and_then(|ms| {
                    if (0..=crate::schema::MAX_EVENT_TIME_MS).contains(&ms) {
                        Ok(ms)
                    } else {
                        Err(crate::schema::TimeParseError::Unsupported)
                    }
                });
                parsed.map_err(|reason| {
                    DecodeError(format!(
                        "field `{}` = {} {reason}: the source reads it as `{}` ({})",
                        self.top[slot].name,
                        value.map_or("(missing)".to_string(), |v| v.to_string()),
                        format.name(),
                        format.json_type()
                    ))
                })?
            }
        };
        // Bounded by this machine's clock, never by the record's Kafka timestamp: a producer that
        // stamps CreateTime with the event time would let any event through. (A LogAppendTime
        // topic's timestamps are the broker's clock and never later than now.)
        let reference = wall_clock_ms();
        if record.event_time_ms > reference.saturating_add(self.max_future_skew_ms) {
            return Err(DecodeError(format!(
                "event time {} is {} ahead of the wall clock {}, more than max_future_skew ({}): a producer clock or timestamp is wrong",
                crate::record::format_rfc3339_ms(record.event_time_ms),
                crate::topology::format_duration_ms(record.event_time_ms - reference),
                crate::record::format_rfc3339_ms(reference),
                crate::topology::format_duration_ms(self.max_future_skew_ms),
            )));
        }
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
                (Expect::JsonText, Some(FieldValue::Str(_))) => true,
                _ => false,
            };
            if !ok {
                let want = match field.expect {
                    Expect::Scalar => "a string, number or boolean",
                    Expect::String => "a string",
                    Expect::Number => "a number",
                    Expect::Integer => "an integer",
                    Expect::Object => "an object",
                    Expect::JsonText => "a string holding a JSON object",
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

/// Reads the object inside the string at `keys[slot]` (e.g. `data`) into the inner fields
/// (`data.user_id`). A value that is not a string is left for the type check to report.
fn read_json_text<'de>(
    keys: &[PlannedField],
    slot: usize,
    captured: &mut [Option<FieldValue<'de>>],
) -> Result<(), DecodeError> {
    let outer = keys[slot].name.as_str();
    let text = match captured[slot].take() {
        Some(FieldValue::Str(text)) => text,
        other => {
            captured[slot] = other;
            return Ok(());
        }
    };
    let inner: Vec<(usize, &str)> = keys
        .iter()
        .enumerate()
        .filter(|(_, f)| f.inner)
        .filter_map(|(i, f)| {
            let key = f.name.strip_prefix(outer)?.strip_prefix('.')?;
            Some((i, key))
        })
        .collect();
    let mut values = vec![None; inner.len()];
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    de::Deserializer::deserialize_any(
        &mut deserializer,
        JsonTextVisitor {
            keys: &inner,
            values: &mut values,
        },
    )
    .and_then(|()| deserializer.end())
    .map_err(|e| {
        DecodeError(format!(
            "field `{outer}` must hold a JSON object as a string: {e}"
        ))
    })?;
    for ((i, _), value) in inner.iter().zip(values) {
        captured[*i] = value;
    }
    captured[slot] = Some(FieldValue::Str(text));
    Ok(())
}

/// Visits the object inside a JSON-text field, keeping the planned keys as owned values.
struct JsonTextVisitor<'p, 'v> {
    keys: &'p [(usize, &'p str)],
    values: &'v mut [Option<FieldValue<'static>>],
}

impl<'de> Visitor<'de> for JsonTextVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.keys.iter().position(|(_, k)| *k == key) {
                Some(at) => {
                    let value = map
                        .next_value_seed(ValueSeed { object_ok: false })
                        .map_err(|e| de::Error::custom(format!("key `{key}`: {e}")))?;
                    self.values[at] = Some(into_owned(value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

fn into_owned(value: FieldValue<'_>) -> FieldValue<'static> {
    match value {
        FieldValue::Null => FieldValue::Null,
        FieldValue::Bool(b) => FieldValue::Bool(b),
        FieldValue::Int(i) => FieldValue::Int(i),
        FieldValue::Float(f) => FieldValue::Float(f),
        FieldValue::Str(s) => FieldValue::Str(Cow::Owned(s.into_owned())),
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
    keys: &'p [PlannedField],
    items: Option<&'p (String, Vec<PlannedField>, bool)>,
    fields: &'r mut Vec<Option<FieldValue<'de>>>,
    record_items: &'r mut Vec<Vec<Option<FieldValue<'de>>>>,
    version: &'r mut Option<FieldValue<'de>>,
}

/// Visits the top-level object; returns whether the exploded array was present.
impl<'de> Visitor<'de> for RecordVisitor<'_, '_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut saw_items = false;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if let Some(slot) = self.keys.iter().position(|f| !f.inner && f.name == key) {
                let object_ok = self.keys[slot].expect == Expect::Object;
                let value = map
                    .next_value_seed(ValueSeed { object_ok })
                    .map_err(|e| de::Error::custom(format!("field `{key}`: {e}")))?;
                self.fields[slot] = Some(value);
            } else if let Some((array, fields, _)) = self.items.filter(|(a, ..)| *a == key) {
                saw_items = true;
                *self.record_items = map
                    .next_value_seed(ItemsSeed { fields })
                    .map_err(|e| de::Error::custom(format!("field `{array}`: {e}")))?;
            } else if key == VERSION_FIELD {
                *self.version = Some(
                    map.next_value_seed(ValueSeed { object_ok: false })
                        .map_err(|e| de::Error::custom(format!("field `{key}`: {e}")))?,
                );
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(saw_items)
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
                    .time_field("timestamp", TimeFormat::EpochSeconds)
                    .build(),
            )
            .source(
                SourceBuilder::new("analytics", "analytics", Schema::AnalyticsEvent)
                    .time_field("timestamp", TimeFormat::Rfc3339)
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
                            theta_lg_k: None,
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

    /// Exactly what Go's encoding/json writes for seed 000's OrderCreatedEvent.
    const ORDER: &str = r#"{"order_id":"o1","user_id":"u1","items":[{"product_id":"p1","quantity":2,"unit_price":9.5},{"product_id":"p2","quantity":1,"unit_price":1}],"total_amount":20,"timestamp":1795000000,"extra":{"a":[1,2]}}"#;

    #[test]
    fn decodes_go_orders_with_items_and_unix_seconds() {
        let plan = plan("orders");
        let record = plan.decode(ORDER.as_bytes(), None).unwrap();
        assert_eq!(record.event_time_ms, 1_795_000_000_000);
        assert_eq!(record.items.len(), 2);
        let product = plan.resolve("items.product_id");
        assert_eq!(
            record.get(product, Some(1)),
            Some(&FieldValue::Str("p2".into()))
        );
        assert_eq!(
            record.get(plan.resolve("total_amount"), None),
            Some(&FieldValue::Int(20))
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
                ORDER.replace("1795000000", "\"2026-11-18T11:06:40Z\""),
                "field `timestamp` is \"2026-11-18T11:06:40Z\", expected an integer",
            ),
            (
                ORDER.replace("1795000000", "9223372036854775807"),
                "out of the representable time range",
            ),
            (
                ORDER.replace("{\"order_id\"", "{\"version\":7,\"order_id\""),
                "unknown schema version 7: source `orders` reads versions [1]",
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
    fn analytics_events_as_go_writes_them() {
        let plan = plan("analytics");
        let full = r#"{"id":"e1","timestamp":"2026-11-22T10:00:00.123456789+03:00","eventType":"page_view","userId":"u9","properties":{"page":"/"}}"#;
        let record = plan.decode(full.as_bytes(), None).unwrap();
        assert_eq!(
            record.event_time_ms,
            TimeFormat::Rfc3339
                .from_str("2026-11-22T07:00:00.123Z")
                .unwrap()
        );
        // `id` and `properties` are omitempty: Go leaves them out.
        let bare = r#"{"timestamp":"2026-11-22T10:00:00Z","eventType":"click","userId":"u1"}"#;
        assert!(plan.decode(bare.as_bytes(), None).is_ok());
        assert!(plan
            .decode(full.replace("{\"page\":\"/\"}", "[1]").as_bytes(), None)
            .is_err());
        let err = plan
            .decode(
                full.replace("\"2026-11-22T10:00:00.123456789+03:00\"", "1795000000")
                    .as_bytes(),
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `timestamp` is 1795000000, expected a string"),
            "{err}"
        );
    }

    fn versioned() -> (Topology, DecodePlan) {
        let topology = Topology::builder()
            .source(
                SourceBuilder::new("orders", "order.created.v1", Schema::OrderCreated)
                    .also_topic("order.created.v2")
                    .time_field("timestamp", TimeFormat::EpochSeconds)
                    .version(SourceVersion {
                        version: 2,
                        topic: Some("order.created.v2".into()),
                        fields: vec![
                            ("user_id".into(), "customer_id".into()),
                            ("total_amount".into(), "total".into()),
                        ],
                        defaults: vec![],
                    })
                    .build(),
            )
            .aggregation(
                AggregationBuilder::new("by_user", "orders", "out")
                    .group_by("user_id")
                    .aggregate("revenue", AggregateKind::Sum("total_amount".into()))
                    .build(),
            )
            .build()
            .unwrap();
        let plan = DecodePlan::for_source(&topology, &topology.sources[0]);
        (topology, plan)
    }

    #[test]
    fn versions_map_renamed_fields_by_topic_or_version_field() {
        let (_, plan) = versioned();
        let v2 =
            r#"{"order_id":"o2","customer_id":"u7","items":[],"total":5.5,"timestamp":1795000000}"#;
        let user = plan.resolve("user_id");
        let total = plan.resolve("total_amount");
        // On the v2 topic without a version field.
        let record = plan
            .decode_from(v2.as_bytes(), None, plan.topic_version("order.created.v2"))
            .unwrap();
        assert_eq!(record.get(user, None), Some(&FieldValue::Str("u7".into())));
        assert_eq!(record.get(total, None), Some(&FieldValue::Float(5.5)));
        // A version field wins over the topic.
        let tagged = v2.replace("{\"order_id\"", "{\"version\":2,\"order_id\"");
        assert!(plan.decode_from(tagged.as_bytes(), None, 1).is_ok());
        // Version 1 still reads its own names, and is not satisfied by version 2's.
        let record = plan.decode(ORDER.as_bytes(), None).unwrap();
        assert_eq!(record.get(user, None), Some(&FieldValue::Str("u1".into())));
        let err = plan.decode(v2.as_bytes(), None).unwrap_err().to_string();
        assert!(err.contains("missing required field `user_id`"), "{err}");
        let v3 = v2.replace("{\"order_id\"", "{\"version\":3,\"order_id\"");
        let err = plan.decode(v3.as_bytes(), None).unwrap_err().to_string();
        assert!(
            err.contains("unknown schema version 3") && err.contains("[1, 2]"),
            "{err}"
        );
    }

    #[test]
    fn versions_fill_defaults_for_fields_they_do_not_write() {
        let topology = Topology::builder()
            .source(
                SourceBuilder::new("clicks", "clicks", Schema::Json)
                    .version(SourceVersion {
                        version: 2,
                        topic: None,
                        fields: vec![],
                        defaults: vec![("region".into(), serde_json::json!("eu"))],
                    })
                    .build(),
            )
            .aggregation(
                AggregationBuilder::new("by_region", "clicks", "out")
                    .group_by("region")
                    .aggregate("n", AggregateKind::Count)
                    .build(),
            )
            .build()
            .unwrap();
        let plan = DecodePlan::for_source(&topology, &topology.sources[0]);
        let region = plan.resolve("region");
        let record = plan.decode(br#"{"version":2,"x":1}"#, Some(5)).unwrap();
        assert_eq!(
            record.get(region, None),
            Some(&FieldValue::Str("eu".into()))
        );
        let record = plan.decode(br#"{"region":"us"}"#, Some(5)).unwrap();
        assert_eq!(
            record.get(region, None),
            Some(&FieldValue::Str("us".into()))
        );
    }

    /// What Go's encoding/json writes for seed 001's `Event` (generated with Go 1.26): `data` is
    /// the payload's JSON inside a string, with Go's HTML escapes.
    const EVENTS: [&str; 3] = [
        r#"{"id":"123","type":"user.created","data":"{\"user_id\": \"user123\", \"username\": \"testuser\"}","timestamp":"2026-12-07T10:15:30.123456789+03:00"}"#,
        r#"{"id":"124","type":"order.placed","data":"{\"order_id\":\"o-1\",\"user_id\":\"user123\",\"amount\":12.5,\"note\":\"\u003cb\u003e\u0026\u003c/b\u003e \\\"q\\\" é\"}","timestamp":"2026-12-07T07:15:30.123456789Z"}"#,
        r#"{"id":"125","type":"user.created","data":"not json","timestamp":"2026-12-07T10:15:30.123456789+03:00"}"#,
    ];

    fn domain_plan(versions: Vec<SourceVersion>) -> DecodePlan {
        let mut source = SourceBuilder::new("bus", "events", Schema::DomainEvent)
            .time_field("timestamp", TimeFormat::Rfc3339);
        for version in versions {
            source = source.version(version);
        }
        let topology = Topology::builder()
            .source(source.build())
            .aggregation(
                AggregationBuilder::new("by_type", "bus", "out")
                    .group_by("type")
                    .group_by("data.user_id")
                    .aggregate("amount", AggregateKind::Sum("data.amount".into()))
                    .build(),
            )
            .build()
            .unwrap();
        DecodePlan::for_source(&topology, &topology.sources[0])
    }

    #[test]
    fn decodes_go_domain_events_with_fields_inside_the_data_string() {
        let plan = domain_plan(vec![]);
        let (user, amount, kind) = (
            plan.resolve("data.user_id"),
            plan.resolve("data.amount"),
            plan.resolve("type"),
        );
        let first = plan.decode(EVENTS[0].as_bytes(), None).unwrap();
        assert_eq!(first.event_time_ms, 1_796_627_730_123);
        assert_eq!(
            first.get(user, None),
            Some(&FieldValue::Str("user123".into()))
        );
        assert_eq!(first.get(amount, None), None);
        assert_eq!(
            first.get(kind, None),
            Some(&FieldValue::Str("user.created".into()))
        );
        let second = plan.decode(EVENTS[1].as_bytes(), None).unwrap();
        assert_eq!(second.event_time_ms, first.event_time_ms);
        assert_eq!(second.get(amount, None), Some(&FieldValue::Float(12.5)));
        assert_eq!(
            second.get(user, None),
            Some(&FieldValue::Str("user123".into()))
        );
    }

    #[test]
    fn a_data_string_that_is_not_a_json_object_is_a_decode_error_with_its_reason() {
        let plan = domain_plan(vec![]);
        let error = plan.decode(EVENTS[2].as_bytes(), None).unwrap_err();
        assert!(
            error
                .0
                .starts_with("field `data` must hold a JSON object as a string: expected"),
            "{error}"
        );
        for (data, reason) in [
            (
                r#""[1,2]""#,
                "invalid type: sequence, expected a JSON object",
            ),
            (r#""{\"user_id\":\"u\"} x""#, "trailing characters"),
            (
                r#""{\"user_id\":{\"a\":1}}""#,
                "key `user_id`: invalid type: map",
            ),
            (
                "17",
                "field `data` is 17, expected a string holding a JSON object",
            ),
        ] {
            let record = format!(
                r#"{{"id":"1","type":"t","data":{data},"timestamp":"2026-12-07T07:15:30Z"}}"#
            );
            let error = plan.decode(record.as_bytes(), None).unwrap_err();
            assert!(error.0.contains(reason), "{data}: {error}");
        }
        let missing = r#"{"id":"1","type":"t","timestamp":"2026-12-07T07:15:30Z"}"#;
        assert_eq!(
            plan.decode(missing.as_bytes(), None).unwrap_err().0,
            "missing required field `data` (a string holding a JSON object)"
        );
    }

    #[test]
    fn a_top_level_key_named_like_an_inner_field_is_not_read_as_one() {
        let plan = domain_plan(vec![]);
        let record = r#"{"id":"1","type":"t","data.user_id":"top","data":"{}","timestamp":"2026-12-07T07:15:30Z"}"#;
        let record = plan.decode(record.as_bytes(), None).unwrap();
        assert_eq!(record.get(plan.resolve("data.user_id"), None), None);
    }

    #[test]
    fn versions_can_rename_keys_inside_the_data_string() {
        let plan = domain_plan(vec![SourceVersion {
            version: 2,
            topic: None,
            fields: vec![("data.user_id".into(), "data.uid".into())],
            defaults: vec![],
        }]);
        let v2 = r#"{"id":"1","type":"t","data":"{\"uid\":\"u2\",\"user_id\":\"no\"}","timestamp":"2026-12-07T07:15:30Z"}"#;
        let record = plan.decode_from(v2.as_bytes(), None, 2).unwrap();
        assert_eq!(
            record.get(plan.resolve("data.user_id"), None),
            Some(&FieldValue::Str("u2".into()))
        );
        let record = plan.decode_from(v2.as_bytes(), None, 1).unwrap();
        assert_eq!(
            record.get(plan.resolve("data.user_id"), None),
            Some(&FieldValue::Str("no".into()))
        );
    }
}
