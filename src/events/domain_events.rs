//! Seed 001's domain events, generated: `Event{id, type, data, timestamp}` with `data` the
//! payload's JSON inside a string, on `domain.event` subjects, as the event bus publishes them.

use super::go_time_json;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Seed 001's `Event`, serialized as Go's `encoding/json` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload's JSON, inside a string.
    pub data: String,
    /// Go `time.Time`.
    pub timestamp: String,
}

/// The subjects the generator publishes to: seed 001's two event types, and user.created's two
/// versions by subject (version 2 renames `user_id` to `uid` inside data).
pub const DOMAIN_SUBJECTS: [&str; 4] = [
    "user.created",
    "user.created.v1",
    "user.created.v2",
    "order.placed",
];

/// Deterministic domain events, one every `step_ms` of event time from `start_ms`.
pub struct DomainEventGenerator {
    rng: SmallRng,
    sequence: u64,
    start_ms: i64,
    step_ms: f64,
    users: u32,
}

impl DomainEventGenerator {
    pub fn new(seed: u64, start_ms: i64, step_ms: f64, users: u32) -> DomainEventGenerator {
        DomainEventGenerator {
            rng: SmallRng::seed_from_u64(seed),
            sequence: 0,
            start_ms,
            step_ms,
            users: users.max(1),
        }
    }

    /// The next event: its subject (one of [`DOMAIN_SUBJECTS`]) and its JSON.
    pub fn next_event(&mut self) -> (&'static str, Vec<u8>) {
        self.sequence += 1;
        let n = self.sequence;
        let subject = DOMAIN_SUBJECTS[self.rng.random_range(0..DOMAIN_SUBJECTS.len())];
        let user = format!("user-{}", self.rng.random_range(0..self.users));
        let at_ms = self.start_ms + (n as f64 * self.step_ms) as i64;
        let zone = [0, 180, -300, 330][(n % 4) as usize];
        let (kind, data) = match subject {
            "order.placed" => {
                let cents = self.rng.random_range(100..50_000);
                (
                    "order.placed",
                    format!(
                        r#"{{"order_id":"o-{n}","user_id":"{user}","amount":{}.{:02}}}"#,
                        cents / 100,
                        cents % 100
                    ),
                )
            }
            "user.created.v2" => (
                "user.created",
                format!(r#"{{"uid": "{user}", "username": "name-{n}"}}"#),
            ),
            _ => (
                "user.created",
                format!(r#"{{"user_id": "{user}", "username": "name-{n}"}}"#),
            ),
        };
        let event = DomainEvent {
            id: format!("ev-{n}"),
            kind: kind.into(),
            data,
            timestamp: go_time_json(at_ms as i128 * 1_000_000, zone),
        };
        (
            subject,
            serde_json::to_vec(&event).expect("an Event serializes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DecodePlan;
    use crate::topology::Topology;

    #[test]
    fn generated_domain_events_decode_under_the_shipped_topology() {
        let topology = Topology::from_files(&["topology/events.toml".into()]).unwrap();
        let source = &topology.sources[0];
        let plan = DecodePlan::for_source(&topology, source);
        let user = plan.resolve("data.user_id");
        let mut generator = DomainEventGenerator::new(7, 1_795_000_000_000, 10.0, 50);
        for _ in 0..500 {
            let (subject, bytes) = generator.next_event();
            let record = plan
                .decode_from(&bytes, None, plan.topic_version(subject))
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
            let Some(crate::record::FieldValue::Str(id)) = record.get(user, None) else {
                panic!("no user in {}", String::from_utf8_lossy(&bytes));
            };
            assert!(id.starts_with("user-"), "{subject}: {id}");
        }
    }
}
