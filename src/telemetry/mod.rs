//! Telemetry: Prometheus metrics, the decision log (and its volume rules
//! and the action history's outbox), trace context and OpenTelemetry
//! export. Called by every layer; imports none of ours, so labels and
//! fields arrive as plain values.

pub mod decision_log;
pub mod history;
pub mod keep;
mod line;
pub mod metrics;
pub mod otel;
pub mod trace;

pub use decision_log::{
    DecisionLog, DecisionLogSettings, Hex128, LINE_VERSION, LineText, LogEntry, LogSink,
    LoggedError, SearchEntry, Text, display_escaped, mask_attributes,
};
pub use metrics::{Metrics, SEARCH_OUTCOMES, metrics};
