//! What the gateway tells its operators: the Prometheus metrics
//! (docs/metrics.md) and one JSON access line per failed request.

pub mod access_log;
pub mod metrics;

pub use metrics::{ClientErrorKind, FailureKind, Metrics, RouteMetrics};
