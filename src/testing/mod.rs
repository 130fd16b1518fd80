//! Test support that users can use too: an in-memory topology driver, like Kafka Streams'
//! `TopologyTestDriver`.

mod driver;
pub mod sim;

pub use driver::{TestRecord, TopologyTestDriver};
