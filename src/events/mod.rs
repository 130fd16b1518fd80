//! Producer-side mirrors of the seed services' Go structs, serialized exactly as Go's
//! `encoding/json` writes them, and a realistic, deterministic generator of them. What eddy
//! accepts is defined by [`crate::schema`]; a test checks these structs against it.

mod domain_events;
mod generator;

pub use domain_events::{DomainEvent, DomainEventGenerator, DOMAIN_SUBJECTS};
pub use generator::{EventGenerator, GeneratedEvent, GeneratorConfig};

use serde::{Deserialize, Serialize};

/// Published by the order service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub total_amount: f64,
    /// Go `int64`: Unix seconds.
    pub timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: u32,
    pub unit_price: f64,
}

/// Published by product analytics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsEvent {
    /// `omitempty`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Go `time.Time`: RFC 3339 with up to nine fractional digits and a zone.
    pub timestamp: String,
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Go `map[string]string` with `omitempty` (Go writes map keys sorted).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Formats epoch nanoseconds the way Go's `time.Time.MarshalJSON` does (RFC 3339 with trailing
/// fractional zeros trimmed) in a zone `offset_minutes` east of UTC.
pub fn go_time_json(epoch_nanos: i128, offset_minutes: i16) -> String {
    let offset =
        time::UtcOffset::from_hms((offset_minutes / 60) as i8, (offset_minutes % 60) as i8, 0)
            .unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp_nanos(epoch_nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TimeFormat;

    #[test]
    fn go_time_json_matches_go_output() {
        // Printed by Go 1.26 here: json.Marshal(time.Unix(1795000000, n).In(time.FixedZone(..))).
        assert_eq!(
            go_time_json(1_795_000_000_000_000_000, 0),
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(
            go_time_json(1_795_000_000_120_000_000, 180),
            "2026-11-18T14:06:40.12+03:00"
        );
        assert_eq!(
            go_time_json(1_795_000_000_000_000_001, -330),
            "2026-11-18T05:36:40.000000001-05:30"
        );
        let text = go_time_json(1_795_000_000_987_654_321, 60);
        assert_eq!(text, "2026-11-18T12:06:40.987654321+01:00");
        assert_eq!(TimeFormat::Rfc3339.from_str(&text), Ok(1_795_000_000_987));
    }

    #[test]
    fn generated_events_decode_under_the_schema_tables() {
        use crate::record::DecodePlan;
        use crate::topology::Topology;
        let topology = Topology::from_files(&[
            "topology/analytics.toml".into(),
            "topology/orders.toml".into(),
        ])
        .unwrap();
        let mut generator = EventGenerator::new(GeneratorConfig {
            events_per_order: 3,
            ..GeneratorConfig::default()
        });
        for _ in 0..2_000 {
            let event = generator.next_event();
            let source = topology.source_of_topic(event.stream).unwrap();
            let plan = DecodePlan::for_source(&topology, source);
            let record = plan
                .decode(&event.value, None)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&event.value)));
            assert_eq!(record.event_time_ms, event.event_time_ms);
        }
    }
}
