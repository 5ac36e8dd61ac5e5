//! The metrics, all named `mandate_…`, registered once in one registry.
//! Labels come from closed sets (actions of the schema, outcomes, routes,
//! limits), never from a principal or resource id.

use foldhash::HashMap;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Handles of a metric vector resolved once per label set, then read with
/// one atomic load instead of the vector's lock and label hashing.
struct Resolved<K, V>(ArcSwap<HashMap<K, V>>);

impl<K, V> Default for Resolved<K, V> {
    fn default() -> Self {
        Self(ArcSwap::from_pointee(HashMap::default()))
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Resolved<K, V> {
    /// Calls `use_handle` on the handle for `key`, resolving and keeping it
    /// the first time.
    fn with<Q>(&self, key: &Q, resolve: impl FnOnce() -> V, use_handle: impl FnOnce(&V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(handle) = self.0.load().get(key) {
            return use_handle(handle);
        }
        let handle = resolve();
        use_handle(&handle);
        self.0.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(key.to_owned(), handle.clone());
            Arc::new(next)
        });
    }
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    /// per action, the resolved (allow, deny) counters
    decision_handles: Resolved<String, (IntCounter, IntCounter)>,
    /// per (route, status), the resolved counter
    http_handles: Resolved<(&'static str, u16), IntCounter>,
    decision_duration: Histogram,
    /// entity cache lookups answered from the cache
    pub cache_hits: IntCounter,
    /// entity cache lookups that needed the store
    pub cache_misses: IntCounter,
    /// entities served past their TTL because the store failed
    pub cache_stale: IntCounter,
    /// cached entities built again from their JSON (the hot tier had let
    /// them go)
    pub cache_rebuilt: IntCounter,
    /// entities evicted (size, expiry, invalidation)
    pub cache_evictions: IntCounter,
    /// entities held
    pub cache_entries: IntGauge,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    policy_reloads: IntCounterVec,
    policy_info: IntGaugeVec,
    http_requests: IntCounterVec,
    refusals: IntCounterVec,
    /// decision log lines dropped because the queue was full
    pub decision_log_dropped: IntCounter,
    /// process log lines dropped because stderr was not keeping up
    pub process_log_dropped: IntCounter,
    /// decision lines JetStream acknowledged into the action history
    pub history_published: IntCounter,
    /// decision lines the action history lost, by cause (`queue_full`,
    /// `expired`, `refused`)
    pub history_dropped: IntCounterVec,
    /// publishes of a history line tried again
    pub history_retries: IntCounter,
    /// history lines waiting to be published
    pub history_queue_lines: IntGauge,
    /// 1 while the history's NATS connection is up
    pub history_connected: IntGauge,
    /// decision-log lines by the `log.keep` rule that judged them, kept or
    /// sampled out
    pub log_lines: IntCounterVec,
    /// entity change events received from the bus
    pub bus_events_received: IntCounter,
    /// entity change events applied
    pub bus_events_applied: IntCounter,
    bus_events_ignored: IntCounterVec,
    bus_uids_dropped: IntCounterVec,
    bus_gaps: IntCounterVec,
    bus_subscription_errors: IntCounterVec,
    /// 1 while the change-event bus is connected
    pub bus_connected: IntGauge,
    bus_last_event_age: prometheus::Gauge,
    searches: IntCounterVec,
    /// decisions the shadow pack decided
    shadow_decisions: IntCounter,
    shadow_divergence: IntCounterVec,
    search_duration: HistogramVec,
    search_candidates: HistogramVec,
    /// when the last event was applied (milliseconds since the epoch; 0: never)
    bus_last_event_ms: std::sync::atomic::AtomicU64,
}

/// How a search ended, as `mandate_search_requests_total` counts it.
pub const SEARCH_OUTCOMES: [&str; 5] = [
    "answered",
    "pruned",
    "refused",
    "store_unavailable",
    "over_budget",
];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric());
    let _ = registry.register(Box::new(counter.clone()));
    counter
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
    let _ = registry.register(Box::new(gauge.clone()));
    gauge
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let vec = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|_| unreachable_metric());
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric());
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

#[expect(
    clippy::panic,
    reason = "metric names and labels are literals of this file; a bad one fails every test"
)]
fn unreachable_metric() -> ! {
    panic!("invalid metric definition")
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        // The process's CPU seconds, resident and virtual memory, open and
        // most file descriptors, start time (`process_*`, Linux).
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let decisions = counter_vec(
            &registry,
            "mandate_decisions_total",
            "Decisions made, by action and outcome.",
            &["action", "decision"],
        );
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mandate_decision_duration_seconds",
                "Time to decide one request, entity gathering included.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1,
            ]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(decision_duration.clone()));
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "mandate_upstream_request_duration_seconds",
                "Time of one entity store request.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["outcome"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(upstream_duration.clone()));
        let cache_entries = IntGauge::new(
            "mandate_entity_cache_entries",
            "Entities held in the cache.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(cache_entries.clone()));
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "mandate_policy_info",
                "The policy version in force (value 1).",
            ),
            &["version"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(policy_info.clone()));
        let build_info = IntGaugeVec::new(
            Opts::new("mandate_build_info", "The running build (value 1)."),
            &["version"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let _ = registry.register(Box::new(build_info));
        let metrics = Self {
            decision_handles: Resolved::default(),
            http_handles: Resolved::default(),
            decisions,
            decision_duration,
            cache_hits: counter(
                &registry,
                "mandate_entity_cache_hits_total",
                "Entity lookups answered from the cache.",
            ),
            cache_misses: counter(
                &registry,
                "mandate_entity_cache_misses_total",
                "Entity lookups that needed the store.",
            ),
            cache_stale: counter(
                &registry,
                "mandate_entity_cache_stale_total",
                "Entities served past their TTL because the store failed.",
            ),
            cache_rebuilt: counter(
                &registry,
                "mandate_entity_cache_rebuilt_total",
                "Cached entities built again from their JSON: the hot tier (`cache.max_built`) had let them go.",
            ),
            cache_evictions: counter(
                &registry,
                "mandate_entity_cache_evictions_total",
                "Entities evicted from the cache.",
            ),
            cache_entries,
            upstream_requests: counter_vec(
                &registry,
                "mandate_upstream_requests_total",
                "Entity store requests, by outcome.",
                &["outcome"],
            ),
            upstream_duration,
            policy_reloads: counter_vec(
                &registry,
                "mandate_policy_reloads_total",
                "Policy reloads, by result.",
                &["result"],
            ),
            policy_info,
            http_requests: counter_vec(
                &registry,
                "mandate_http_requests_total",
                "HTTP requests, by route and status.",
                &["route", "status"],
            ),
            refusals: counter_vec(
                &registry,
                "mandate_refusals_total",
                "Requests refused by a limit, by limit.",
                &["limit"],
            ),
            decision_log_dropped: counter(
                &registry,
                "mandate_decision_log_dropped_total",
                "Decision log lines dropped: the queue was full.",
            ),
            process_log_dropped: counter(
                &registry,
                "mandate_process_log_dropped_total",
                "Process log lines dropped: stderr was not keeping up.",
            ),
            history_published: counter(
                &registry,
                "mandate_history_published_total",
                "Decision lines acknowledged by JetStream into the action history.",
            ),
            history_dropped: counter_vec(
                &registry,
                "mandate_history_dropped_total",
                "Decision lines the action history lost, by cause: queue_full, expired (retried until too old), refused (JetStream refused the message), shutdown (unpublished when the process stopped).",
                &["cause"],
            ),
            history_retries: counter(
                &registry,
                "mandate_history_retries_total",
                "Publishes of an action-history line tried again.",
            ),
            history_queue_lines: gauge(
                &registry,
                "mandate_history_queue_lines",
                "Action-history lines waiting to be published.",
            ),
            history_connected: gauge(
                &registry,
                "mandate_history_connected",
                "1 while the action history's NATS connection is up, else 0.",
            ),
            log_lines: counter_vec(
                &registry,
                "mandate_log_lines_total",
                "Decision-log lines by the log.keep rule that judged them and the outcome: kept or sampled_out.",
                &["rule", "outcome"],
            ),
            bus_events_received: counter(
                &registry,
                "mandate_bus_events_received_total",
                "Entity change events received from the bus.",
            ),
            bus_events_applied: counter(
                &registry,
                "mandate_bus_events_applied_total",
                "Entity change events applied (entities forgotten).",
            ),
            bus_events_ignored: counter_vec(
                &registry,
                "mandate_bus_events_ignored_total",
                "Entity change events ignored, by reason.",
                &["reason"],
            ),
            bus_uids_dropped: counter_vec(
                &registry,
                "mandate_bus_uids_dropped_total",
                "Uids named by entity change events and dropped, by cause.",
                &["cause"],
            ),
            bus_gaps: counter_vec(
                &registry,
                "mandate_bus_gaps_total",
                "Times events may have been missed and every cached entity was forgotten, by cause.",
                &["cause"],
            ),
            bus_subscription_errors: counter_vec(
                &registry,
                "mandate_bus_subscription_errors_total",
                "Times the bus refused or lost the subscription to change events, by cause.",
                &["cause"],
            ),
            bus_connected: gauge(
                &registry,
                "mandate_bus_connected",
                "1 while the entity change bus is connected and its subscription accepted, else 0.",
            ),
            bus_last_event_age: {
                let age = prometheus::Gauge::new(
                    "mandate_bus_last_event_age_seconds",
                    "Seconds since the last entity change event was applied (-1: none yet).",
                )
                .unwrap_or_else(|_| unreachable_metric());
                let _ = registry.register(Box::new(age.clone()));
                age.set(-1.0);
                age
            },
            bus_last_event_ms: std::sync::atomic::AtomicU64::new(0),
            shadow_decisions: counter(
                &registry,
                "mandate_shadow_decisions_total",
                "Decisions the shadow pack (`policy.shadow_dir`) decided beside the live one.",
            ),
            shadow_divergence: counter_vec(
                &registry,
                "mandate_shadow_divergence_total",
                "Decisions where the shadow pack and the live one differ, by direction (`allow_to_deny`, `deny_to_allow`: live, then shadow).",
                &["direction"],
            ),
            searches: counter_vec(
                &registry,
                "mandate_search_requests_total",
                "AuthZEN searches, by what was searched and outcome (`answered`, `pruned`: answered by partial evaluation without listing, `refused`, `store_unavailable`, `over_budget`).",
                &["searched", "outcome"],
            ),
            search_duration: histogram_vec(
                &registry,
                "mandate_search_duration_seconds",
                "Time to answer one search, listing and every candidate's decision included.",
                &["searched"],
                vec![
                    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            search_candidates: histogram_vec(
                &registry,
                "mandate_search_candidates",
                "Candidates one search decided.",
                &["searched"],
                vec![0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
            ),
            registry,
        };
        for reason in ["malformed", "oversized", "unknown_type"] {
            metrics.bus_events_ignored.with_label_values(&[reason]);
        }
        metrics
            .bus_uids_dropped
            .with_label_values(&["unknown_type"]);
        for cause in [
            "revision",
            "reconnect",
            "slow_consumer",
            "subscription_lost",
            "overflow",
        ] {
            metrics.bus_gaps.with_label_values(&[cause]);
        }
        for cause in ["permission", "limit", "subscribe_failed", "ended"] {
            metrics.bus_subscription_errors.with_label_values(&[cause]);
        }
        for direction in ["allow_to_deny", "deny_to_allow"] {
            metrics.shadow_divergence.with_label_values(&[direction]);
        }
        for searched in ["subject", "resource", "action"] {
            for outcome in SEARCH_OUTCOMES {
                metrics.searches.with_label_values(&[searched, outcome]);
            }
            metrics.search_duration.with_label_values(&[searched]);
            metrics.search_candidates.with_label_values(&[searched]);
        }
        for cause in ["queue_full", "expired", "refused", "shutdown"] {
            metrics.history_dropped.with_label_values(&[cause]);
        }
        // The lines no `log.keep` rule matched (every line, with none).
        metrics.log_lines.with_label_values(&["default", "kept"]);
        // Every known label value starts at zero, so rates and dashboards
        // see the series before the first event.
        for outcome in ["ok", "unreachable", "timeout", "bad_status", "malformed"] {
            metrics.upstream_requests.with_label_values(&[outcome]);
        }
        for result in ["success", "failure"] {
            metrics.policy_reloads.with_label_values(&[result]);
        }
        for limit in [
            "body_too_large",
            "batch_too_large",
            "too_many_entities",
            "too_deep",
            "request_timeout",
            "too_many_connections",
            "header_read_timeout",
            "tls_handshake_failed",
            "tls_handshake_timeout",
            "first_request_timeout",
        ] {
            metrics.refusals.with_label_values(&[limit]);
        }
        metrics
    }

    /// Counts one decision of `action` (an action id of the schema, or
    /// `unknown`) and its duration.
    pub fn decision(&self, action: &str, allowed: bool, took: Duration) {
        self.decision_duration.observe(took.as_secs_f64());
        self.decision_handles.with(
            action,
            || {
                (
                    self.decisions.with_label_values(&[action, "allow"]),
                    self.decisions.with_label_values(&[action, "deny"]),
                )
            },
            |(allow, deny)| if allowed { allow.inc() } else { deny.inc() },
        );
    }

    /// Counts one entity store request.
    pub fn upstream(&self, outcome: &str, took: Duration) {
        self.upstream_requests.with_label_values(&[outcome]).inc();
        self.upstream_duration
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
    }

    /// Counts one policy reload (`success` or `failure`) and, on success,
    /// makes `version` the one `mandate_policy_info` reports.
    pub fn policy_reload(&self, result: &str, version: Option<&str>) {
        self.policy_reloads.with_label_values(&[result]).inc();
        if let Some(version) = version {
            self.policy_version(version);
        }
    }

    /// Makes `version` the one `mandate_policy_info` reports.
    pub fn policy_version(&self, version: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[version]).set(1);
    }

    /// Counts one HTTP request by route (a fixed name) and status.
    /// Resolved once per pair, then counted without the vector's lock.
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http_handles.with(
            &(route, status),
            || {
                let mut buffer = itoa::Buffer::new();
                self.http_requests
                    .with_label_values(&[route, buffer.format(status)])
            },
            IntCounter::inc,
        );
    }

    /// Counts an entity change event ignored, by reason.
    pub fn bus_ignored(&self, reason: &'static str) {
        self.bus_events_ignored.with_label_values(&[reason]).inc();
    }

    /// Counts uids of an event dropped, by cause (`unknown_type`: the
    /// schema declares no such type, so nothing of it can be cached).
    pub fn bus_uids_dropped(&self, cause: &'static str, count: u64) {
        self.bus_uids_dropped
            .with_label_values(&[cause])
            .inc_by(count);
    }

    /// Counts a time events may have been missed, by cause.
    pub fn bus_gap(&self, cause: &'static str) {
        self.bus_gaps.with_label_values(&[cause]).inc();
    }

    /// Counts a subscription the bus refused or lost, by cause.
    pub fn bus_subscription_error(&self, cause: &'static str) {
        self.bus_subscription_errors
            .with_label_values(&[cause])
            .inc();
    }

    /// Notes that an event was applied now (for the age gauge).
    pub fn bus_event_seen(&self) {
        self.bus_last_event_ms
            .store(unix_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the age of the last event, at scrape time.
    pub fn observe_bus_age(&self) {
        let last = self
            .bus_last_event_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 {
            let age_ms = unix_ms().saturating_sub(last);
            #[allow(clippy::cast_precision_loss)]
            self.bus_last_event_age.set(age_ms as f64 / 1000.0);
        }
    }

    /// Counts one search of `searched` (`subject`, `resource`, `action`)
    /// by outcome (one of [`SEARCH_OUTCOMES`]), its duration, and the
    /// candidates it decided.
    pub fn search(&self, searched: &str, outcome: &str, took: Duration, candidates: usize) {
        self.searches.with_label_values(&[searched, outcome]).inc();
        self.search_duration
            .with_label_values(&[searched])
            .observe(took.as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        self.search_candidates
            .with_label_values(&[searched])
            .observe(candidates as f64);
    }

    /// Counts one decision the shadow pack decided.
    pub fn shadow_decided(&self) {
        self.shadow_decisions.inc();
    }

    /// Counts one divergence of the shadow pack, by direction.
    pub fn shadow_divergence(&self, direction: &'static str) {
        self.shadow_divergence.with_label_values(&[direction]).inc();
    }

    /// Counts one request refused by `limit`.
    pub fn refusal(&self, limit: &str) {
        self.refusals.with_label_values(&[limit]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_info_reports_only_the_version_in_force() {
        metrics().policy_version("aaaaaaaaaaaa");
        metrics().policy_reload("success", Some("bbbbbbbbbbbb"));
        let text = metrics().render();
        assert!(
            text.contains("mandate_policy_info{version=\"bbbbbbbbbbbb\"} 1"),
            "{text}"
        );
        assert!(!text.contains("aaaaaaaaaaaa"), "the old version is gone");
        assert!(text.contains("mandate_policy_reloads_total{result=\"success\"}"));
    }

    #[test]
    fn decisions_are_counted_per_action_and_outcome() {
        let series = |text: &str, outcome: &str| {
            let prefix = format!(
                "mandate_decisions_total{{action=\"unit_test_action\",decision=\"{outcome}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse::<u64>().ok()))
                .unwrap_or(0)
        };
        metrics().decision("unit_test_action", true, Duration::from_micros(20));
        metrics().decision("unit_test_action", true, Duration::from_micros(20));
        metrics().decision("unit_test_action", false, Duration::from_micros(20));
        let text = metrics().render();
        assert_eq!(series(&text, "allow"), 2);
        assert_eq!(series(&text, "deny"), 1);
    }
}
