//! Following one request across services: the W3C trace context a caller
//! sends (`traceparent`), the trace id every decision line carries (the
//! caller's, else one made here, so a line and its trace always join), and
//! the target of the spans Mandate opens. Spans cost nothing unless
//! [`super::otel`] exports them: no layer is interested in [`SPANS`]
//! otherwise, so each span macro is one cached check.

use super::decision_log::Hex128;
use std::fmt;

/// The `tracing` target of every span Mandate opens for OpenTelemetry; the
/// process log never shows them.
pub const SPANS: &str = "mandate::span";

/// The W3C header carrying the caller's trace.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C header carrying vendors' trace state, passed on with the parent.
pub const TRACESTATE: &str = "tracestate";

// The names as header names, made at compile time: a `&str` name is parsed
// again on every lookup.
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// A W3C trace id: 128 bits, never all zeros; written as 32 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl TraceId {
    /// A new random trace id (for a request that came without one).
    pub fn random() -> Self {
        Self(fastrand::u128(1..))
    }

    /// The id as a number (OpenTelemetry's form).
    pub fn get(self) -> u128 {
        self.0
    }

    /// `value` as a trace id, unless it is the invalid all-zeros id.
    pub fn new(value: u128) -> Option<Self> {
        (value != 0).then_some(Self(value))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex128(self.0).fmt(f)
    }
}

impl serde::Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Hex128(self.0).serialize(serializer)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A caller's `traceparent`: the trace, the caller's span (the parent of
/// ours) and its flags (bit 0: sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// the trace the request belongs to
    pub trace_id: TraceId,
    /// the caller's span id
    pub parent_id: u64,
    /// the trace flags (`01`: sampled)
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value as W3C Trace Context (level 1) says:
    /// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, no all-zero id; a later
    /// version is read by its first four fields (and must be followed by
    /// `-` or nothing); version `ff` is invalid. `None` for anything else:
    /// a trace never decides, so a bad one only starts a new trace.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        let version = hex_field(bytes.get(0..2)?)?;
        if version == 0xff || bytes.get(2) != Some(&b'-') {
            return None;
        }
        match (version, bytes.len()) {
            (0, 55) => {}
            (0, _) => return None,
            (_, 55) => {}
            (_, n) if n > 55 && bytes.get(55) == Some(&b'-') => {}
            _ => return None,
        }
        let trace_id = TraceId::new(hex_field(bytes.get(3..35)?)?)?;
        if bytes.get(35) != Some(&b'-') || bytes.get(52) != Some(&b'-') {
            return None;
        }
        let parent_id = u64::try_from(hex_field(bytes.get(36..52)?)?).ok()?;
        let flags = u8::try_from(hex_field(bytes.get(53..55)?)?).ok()?;
        (parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The caller's trace from `headers`: exactly one valid `traceparent`
    /// (two are ambiguous, and W3C says to start over), else `None`.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        Self::parse(one_header(headers, &TRACEPARENT_HEADER)?)
    }

    /// Whether the caller sampled its span (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// The caller's `tracestate`, when sent exactly once.
pub fn tracestate(headers: &http::HeaderMap) -> Option<&str> {
    one_header(headers, &TRACESTATE_HEADER)
}

/// The value of `name` when `headers` carry it exactly once, as text: a
/// trace header sent twice is ambiguous and read as absent.
fn one_header<'h>(headers: &'h http::HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

/// Lowercase hex digits as a number; `None` for anything else (uppercase
/// included, as W3C requires) or more than 32 digits.
fn hex_field(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((value << 4) | u128::from(nibble))
    })
}

tokio::task_local! {
    /// The trace of the request this task is answering, and whether its
    /// spans are sampled (exported).
    static CURRENT: (TraceId, bool);
}

/// Runs `work` as part of `trace`: every decision line it writes carries
/// that trace id, and its stages open spans only when `sampled`.
/// Not an `async fn`: its state would hold `work` twice (the argument and
/// the scope's own), doubling what every move of the future copies.
pub fn within<F: std::future::Future>(
    trace: TraceId,
    sampled: bool,
    work: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope((trace, sampled), work)
}

/// The trace of the request being answered on this task, if any.
pub fn current() -> Option<TraceId> {
    CURRENT.try_with(|(trace, _)| *trace).ok()
}

/// Whether the request being answered is sampled: its stages' spans would
/// be exported. Unsampled (or with spans off), a stage opens none, so a 1 %
/// sample costs one span per request, not one per stage.
pub fn sampled() -> bool {
    CURRENT.try_with(|(_, sampled)| *sampled).unwrap_or(false)
}

/// A span for a decision stage: `open()`'s when the request is sampled,
/// else none (nothing built, nothing recorded).
pub fn stage(open: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if sampled() {
        open()
    } else {
        tracing::Span::none()
    }
}

/// The trace a line written now belongs to: the request's, else (a line
/// written outside any request: a test, a tool) a new one.
pub fn current_or_random() -> TraceId {
    current().unwrap_or_else(TraceId::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_is_read_and_every_malformed_one_refused() {
        let parsed = TraceParent::parse(GOOD).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id, 0x00f0_67aa_0ba9_02b7);
        assert!(parsed.sampled());
        // A later version is read by its first fields; more must follow a dash.
        assert!(TraceParent::parse(&GOOD.replacen("00", "01", 1)).is_some());
        assert!(TraceParent::parse(&format!("{}-more", GOOD.replacen("00", "cc", 1))).is_some());
        for bad in [
            "",
            "00",
            &GOOD.replacen("00", "ff", 1),                 // version ff
            &format!("{GOOD}-x"),                          // version 00 is exactly 55
            &format!("{}x", GOOD.replacen("00", "cc", 1)), // no dash after the fields
            &GOOD.to_uppercase(),                          // uppercase hex
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn two_traceparents_are_ambiguous_and_start_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.append(TRACEPARENT, GOOD.parse().unwrap());
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, GOOD.parse().unwrap());
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[tokio::test]
    async fn the_current_trace_is_the_one_the_task_runs_within() {
        assert_eq!(current(), None);
        let trace = TraceId::random();
        assert_eq!(
            within(trace, true, async { (current(), sampled()) }).await,
            (Some(trace), true)
        );
        assert!(!within(trace, false, async { sampled() }).await);
        assert_eq!((current(), sampled()), (None, false));
        assert!(stage(|| tracing::info_span!("never")).is_none());
        assert_eq!(trace.to_string().len(), 32);
    }
}
