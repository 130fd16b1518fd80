//! Deterministic event streams: Zipf-like user and product popularity, several event types,
//! event-time jitter, a few late events and, optionally, malformed records.

use super::{AnalyticsEvent, OrderCreated, OrderItem};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub users: u32,
    pub products: u32,
    /// Event time of the first event.
    pub start_ms: i64,
    /// Event-time spacing between consecutive events.
    pub step_ms: f64,
    /// Events are shifted back by up to this much (out of order within grace).
    pub jitter_ms: i64,
    /// Share of events shifted back by 2 to 10 minutes (late for short graces).
    pub late_fraction: f64,
    /// Share of analytics events sent as malformed JSON or with a bad field.
    pub malformed_fraction: f64,
    /// One order per this many events.
    pub events_per_order: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 5_000,
            products: 200,
            start_ms: 1_795_340_400_000,
            step_ms: 10.0,
            jitter_ms: 5_000,
            late_fraction: 0.002,
            malformed_fraction: 0.0,
            events_per_order: 10,
        }
    }
}

/// One generated record, ready to produce.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedEvent {
    /// `orders` or `analytics`.
    pub stream: &'static str,
    pub key: String,
    pub value: Vec<u8>,
    pub event_time_ms: i64,
}

const EVENT_TYPES: [(&str, u32); 6] = [
    ("page_view", 50),
    ("click", 20),
    ("search", 12),
    ("add_to_cart", 10),
    ("checkout", 5),
    ("purchase", 3),
];
const PAGES: [&str; 6] = ["/", "/search", "/product", "/cart", "/checkout", "/account"];

pub struct EventGenerator {
    config: GeneratorConfig,
    rng: SmallRng,
    sequence: u64,
}

impl EventGenerator {
    pub fn new(config: GeneratorConfig) -> EventGenerator {
        let rng = SmallRng::seed_from_u64(config.seed);
        EventGenerator {
            config,
            rng,
            sequence: 0,
        }
    }

    /// Skewed pick in `0..n`: low indices are far more popular, as real users and products are.
    fn skewed(&mut self, n: u32) -> u32 {
        let u: f64 = self.rng.random();
        ((n as f64).powf(u) - 1.0)
            .floor()
            .clamp(0.0, n as f64 - 1.0) as u32
    }

    fn event_time(&mut self) -> i64 {
        let base = self.config.start_ms + (self.sequence as f64 * self.config.step_ms) as i64;
        let late = self
            .rng
            .random_bool(self.config.late_fraction.clamp(0.0, 1.0));
        let shift = if late {
            self.rng.random_range(120_000..600_000)
        } else if self.config.jitter_ms > 0 {
            self.rng.random_range(0..self.config.jitter_ms)
        } else {
            0
        };
        base - shift
    }

    fn price_of(product: u32) -> f64 {
        (((product as u64 * 7919) % 20_000) as f64 / 100.0) + 0.99
    }

    /// The next event: mostly analytics, an order every `events_per_order`.
    pub fn next_event(&mut self) -> GeneratedEvent {
        self.sequence += 1;
        if self.config.events_per_order > 0
            && self
                .sequence
                .is_multiple_of(self.config.events_per_order as u64)
        {
            self.next_order()
        } else {
            self.next_analytics()
        }
    }

    fn next_analytics(&mut self) -> GeneratedEvent {
        let timestamp = self.event_time();
        let user = format!("user-{}", self.skewed(self.config.users));
        let mut roll = self.rng.random_range(0..100);
        let event_type = EVENT_TYPES
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map_or("page_view", |(t, _)| t);
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(
            "page".into(),
            PAGES[self.rng.random_range(0..PAGES.len())].into(),
        );
        if event_type == "search" {
            properties.insert("query".into(), format!("term-{}", self.skewed(500)));
        }
        if matches!(event_type, "click" | "add_to_cart") {
            properties.insert(
                "product_id".into(),
                format!("sku-{}", self.skewed(self.config.products)),
            );
        }
        // Go writes time.Time at full precision in the producer's zone; `id` is omitempty.
        let nanos = timestamp as i128 * 1_000_000 + self.rng.random_range(0..1_000_000) as i128;
        let zone = [0, 0, 0, 60, 180, -300, 330][self.rng.random_range(0..7)];
        let event = AnalyticsEvent {
            id: if self.sequence.is_multiple_of(5) {
                String::new()
            } else {
                format!("evt-{}", self.sequence)
            },
            timestamp: super::go_time_json(nanos, zone),
            event_type: event_type.into(),
            user_id: user.clone(),
            properties,
        };
        let mut value = serde_json::to_vec(&event).expect("serializable");
        if self.config.malformed_fraction > 0.0
            && self
                .rng
                .random_bool(self.config.malformed_fraction.clamp(0.0, 1.0))
        {
            value = match self.rng.random_range(0..3) {
                0 => value[..value.len() / 2].to_vec(),
                1 => String::from_utf8_lossy(&value)
                    .replace("\"timestamp\":", "\"timestamp\":\"not-a-time\",\"x\":")
                    .into_bytes(),
                _ => String::from_utf8_lossy(&value)
                    .replacen('{', "{\"version\":99,", 1)
                    .into_bytes(),
            };
        }
        GeneratedEvent {
            stream: "analytics",
            key: user,
            value,
            event_time_ms: timestamp,
        }
    }

    fn next_order(&mut self) -> GeneratedEvent {
        // Unix seconds, as the order service writes them.
        let timestamp = self.event_time().div_euclid(1000) * 1000;
        let user = format!("user-{}", self.skewed(self.config.users));
        let item_count = self.rng.random_range(1..=4);
        let mut items = Vec::with_capacity(item_count);
        let mut total_cents: i64 = 0;
        for _ in 0..item_count {
            let product = self.skewed(self.config.products);
            let quantity = self.rng.random_range(1..=3);
            let unit_price = Self::price_of(product);
            total_cents += (unit_price * 100.0).round() as i64 * quantity as i64;
            items.push(OrderItem {
                product_id: format!("sku-{product}"),
                quantity,
                unit_price,
            });
        }
        let order_id = format!("order-{}", self.sequence);
        let order = OrderCreated {
            order_id: order_id.clone(),
            user_id: user,
            items,
            total_amount: total_cents as f64 / 100.0,
            timestamp: timestamp / 1000,
        };
        GeneratedEvent {
            stream: "orders",
            key: order_id,
            value: serde_json::to_vec(&order).expect("serializable"),
            event_time_ms: timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_mixes_streams() {
        let take = || {
            let mut g = EventGenerator::new(GeneratorConfig::default());
            (0..1000).map(|_| g.next_event()).collect::<Vec<_>>()
        };
        let (a, b) = (take(), take());
        assert_eq!(a, b);
        let orders = a.iter().filter(|e| e.stream == "orders").count();
        assert_eq!(orders, 100);
        let users: std::collections::HashSet<_> = a
            .iter()
            .filter(|e| e.stream == "analytics")
            .map(|e| &e.key)
            .collect();
        assert!(
            users.len() > 100,
            "thousands of users, skewed: saw {}",
            users.len()
        );
    }
}
