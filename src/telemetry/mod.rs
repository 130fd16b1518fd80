//! Metrics, health endpoints and logs.

mod health;
mod http;
mod logging;
pub mod metrics;

pub use health::Health;
pub use http::serve_http;
pub use logging::init_logging;
