//! Group keys: the values of an aggregation's `group_by` fields, as compact comparable bytes.

use super::FieldValue;

/// Encoded group values. Byte layout per value: a tag (0 null, 1 false, 2 true, 3 int, 4 float,
/// 5 string) then 8 big-endian bytes for numbers or a u32 length and UTF-8 for strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(pub Box<[u8]>);

impl GroupKey {
    /// Appends one value's encoding to `buf` (the hot path reuses one buffer per task).
    pub fn encode_value(buf: &mut Vec<u8>, value: Option<&FieldValue<'_>>) {
        match value {
            None | Some(FieldValue::Null) => buf.push(0),
            Some(FieldValue::Bool(false)) => buf.push(1),
            Some(FieldValue::Bool(true)) => buf.push(2),
            Some(FieldValue::Int(i)) => {
                buf.push(3);
                buf.extend_from_slice(&i.to_be_bytes());
            }
            Some(FieldValue::Float(f)) => {
                buf.push(4);
                buf.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Some(FieldValue::Str(s)) => {
                buf.push(5);
                buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// Decodes back into JSON values, paired with the group field names, for output records.
    pub fn to_json(&self, names: &[String]) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        let mut rest: &[u8] = &self.0;
        for name in names {
            let (value, tail) = decode_value(rest);
            map.insert(name.clone(), value);
            rest = tail;
        }
        map
    }
}

fn decode_value(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    use serde_json::Value;
    let Some((&tag, rest)) = bytes.split_first() else {
        return (Value::Null, bytes);
    };
    let eight = |rest: &[u8]| -> [u8; 8] {
        rest.get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8])
    };
    match tag {
        1 => (Value::Bool(false), rest),
        2 => (Value::Bool(true), rest),
        3 => (
            Value::from(i64::from_be_bytes(eight(rest))),
            rest.get(8..).unwrap_or(&[]),
        ),
        4 => (
            Value::from(f64::from_bits(u64::from_be_bytes(eight(rest)))),
            rest.get(8..).unwrap_or(&[]),
        ),
        5 => {
            let len = rest.get(..4).map_or(0, |b| {
                u32::from_be_bytes(b.try_into().unwrap_or([0; 4])) as usize
            });
            let text = rest
                .get(4..4 + len)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            (
                Value::String(text.into_owned()),
                rest.get(4 + len..).unwrap_or(&[]),
            )
        }
        _ => (Value::Null, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn round_trips_every_kind_of_value() {
        let mut buf = Vec::new();
        let values = [
            FieldValue::Str(Cow::Borrowed("page_view")),
            FieldValue::Int(-7),
            FieldValue::Float(2.5),
            FieldValue::Bool(true),
            FieldValue::Null,
        ];
        for v in &values {
            GroupKey::encode_value(&mut buf, Some(v));
        }
        let key = GroupKey(buf.into_boxed_slice());
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let json = serde_json::Value::Object(key.to_json(&names));
        assert_eq!(
            json,
            serde_json::json!({"a": "page_view", "b": -7, "c": 2.5, "d": true, "e": null})
        );
    }
}
