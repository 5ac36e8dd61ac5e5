//! Telemetry: Prometheus metrics and the decision log. Called by every
//! layer; imports none of ours, so labels and fields arrive as plain values.

pub mod decision_log;
pub mod metrics;

pub use decision_log::{
    DecisionLog, DecisionLogSettings, LINE_VERSION, LogEntry, LogSink, LoggedError, SearchEntry,
    Text, mask_attributes,
};
pub use metrics::{Metrics, SEARCH_OUTCOMES, metrics};
