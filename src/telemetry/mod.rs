//! Metrics (recorded by the internal events in `events`), health endpoints and logs.

pub mod events;
mod health;
mod http;
mod logging;
pub mod metrics;

pub use health::Health;
pub use http::serve_http;
pub use logging::init_logging;
