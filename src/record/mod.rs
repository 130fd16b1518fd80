//! Decoded input records: only the fields the topology uses, borrowed from the input bytes.

mod decode;
mod event_time;
mod group_key;

pub use decode::{DecodeError, DecodePlan, FieldRef};
pub use event_time::{format_rfc3339_ms, parse_rfc3339_ms};
pub use group_key::GroupKey;

use std::borrow::Cow;

/// A scalar JSON value as eddy groups, filters and aggregates it.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
}

impl std::fmt::Display for FieldValue<'_> {
    /// As JSON, so decode errors show values the way the input had them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => f.write_str("null"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Str(s) => write!(f, "{}", serde_json::Value::String(s.to_string())),
        }
    }
}

impl FieldValue<'_> {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Int(i) => Some(i as f64),
            FieldValue::Float(f) => Some(f),
            _ => None,
        }
    }

    /// Whether this value equals a JSON scalar from a topology filter (numbers compare by value).
    pub fn matches_json(&self, json: &serde_json::Value) -> bool {
        match (self, json) {
            (FieldValue::Null, serde_json::Value::Null) => true,
            (FieldValue::Bool(a), serde_json::Value::Bool(b)) => a == b,
            (FieldValue::Str(a), serde_json::Value::String(b)) => a == b,
            (FieldValue::Int(_) | FieldValue::Float(_), serde_json::Value::Number(n)) => {
                self.as_f64() == n.as_f64()
            }
            _ => false,
        }
    }
}

/// One decoded record: its event time and the planned fields, in plan order.
#[derive(Debug, Default)]
pub struct DecodedRecord<'a> {
    pub event_time_ms: i64,
    pub fields: Vec<Option<FieldValue<'a>>>,
    /// The exploded array's elements, each with the plan's item fields.
    pub items: Vec<Vec<Option<FieldValue<'a>>>>,
}

impl<'a> DecodedRecord<'a> {
    /// The value of a field for one row: `item` selects an exploded element.
    pub fn get(&self, field: FieldRef, item: Option<usize>) -> Option<&FieldValue<'a>> {
        match field {
            FieldRef::Top(slot) => self.fields[slot].as_ref(),
            FieldRef::Item(slot) => item.and_then(|i| self.items[i][slot].as_ref()),
        }
    }
}
