//! The seed event schemas and a realistic, deterministic generator for them.

mod generator;

pub use generator::{EventGenerator, GeneratedEvent, GeneratorConfig};

use serde::{Deserialize, Serialize};

/// Published by the order service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: String,
    pub items: Vec<OrderItem>,
    pub total_amount: f64,
    /// RFC 3339.
    pub timestamp: String,
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
    pub id: String,
    /// Epoch milliseconds.
    pub timestamp: i64,
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    pub properties: serde_json::Map<String, serde_json::Value>,
}
