//! A decision's log line written by hand with `support::json`: the bytes
//! `serde_json` writes for a [`LogEntry`] (the tests hold it to them), at a
//! fraction of the cost, since every decision writes one. The derived
//! `Serialize` stays the line's definition.

use std::time::{SystemTime, UNIX_EPOCH};

use super::decision_log::{Hex128, LogEntry, Text};
use crate::support::json;

impl LogEntry<'_> {
    /// The line, as `serde_json::to_writer` would write it.
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"v\":");
        json::number(out, u64::from(self.v));
        out.extend_from_slice(b",\"time\":\"");
        rfc3339_micros(out, self.time);
        out.extend_from_slice(b"\",\"request_id\":");
        json::string(out, self.request_id);
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(&self.id.digits());
        out.extend_from_slice(b"\",\"trace_id\":\"");
        out.extend_from_slice(&Hex128(self.trace_id.get()).digits());
        out.extend_from_slice(b"\",\"principal\":");
        quoted(out, self.principal);
        out.extend_from_slice(b",\"action\":");
        json::string(out, self.action);
        out.extend_from_slice(b",\"resource\":");
        quoted(out, self.resource);
        out.extend_from_slice(b",\"decision\":");
        json::string(out, self.decision);
        out.extend_from_slice(b",\"reasons\":");
        json::strings(out, self.reasons.iter().copied());
        out.extend_from_slice(b",\"errors\":[");
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"code\":");
            json::string(out, error.code);
            out.extend_from_slice(b",\"message\":");
            json::string(out, error.message);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"policy_version\":");
        json::string(out, self.policy_version);
        out.extend_from_slice(b",\"schema_version\":");
        json::string(out, self.schema_version);
        if let Some(digest) = self.entities_digest {
            out.extend_from_slice(b",\"entities_digest\":");
            json::string(out, digest);
        }
        if let Some(entities) = self.entities {
            out.extend_from_slice(b",\"entities\":");
            out.extend_from_slice(entities.get().as_bytes());
        }
        out.extend_from_slice(b",\"stale_data\":");
        json::boolean(out, self.stale_data);
        out.extend_from_slice(b",\"latency_us\":");
        json::number(out, self.latency_us);
        if let Some(context) = self.context {
            out.extend_from_slice(b",\"context\":");
            json::value(out, context);
        }
        out.push(b'}');
    }
}

/// `text` as a JSON string.
fn quoted(out: &mut Vec<u8>, text: Text<'_>) {
    out.push(b'"');
    text.0.write_escaped(out);
    out.push(b'"');
}

/// `time` as RFC 3339 in UTC with microseconds (`2026-12-07T16:53:52.544704Z`),
/// as `humantime::format_rfc3339_micros` writes it; a time before 1970 as
/// 1970's first instant (no clock of ours reads one).
fn rfc3339_micros(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    // Lines come many to a second: its text is made once per thread.
    let prefix = SECOND.with(|last| {
        let (second, text) = last.get();
        if second == Some(seconds) {
            return text;
        }
        let text = second_text(seconds);
        last.set((Some(seconds), text));
        text
    });
    out.extend_from_slice(&prefix);
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

thread_local! {
    /// The second this thread wrote last, and its text.
    static SECOND: std::cell::Cell<(Option<u64>, [u8; 20])> =
        const { std::cell::Cell::new((None, [0; 20])) };
}

/// `YYYY-MM-DDTHH:MM:SS.` of the second `seconds` after 1970 began.
fn second_text(seconds: u64) -> [u8; 20] {
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut out = Vec::with_capacity(20);
    digits(&mut out, year, 4);
    out.push(b'-');
    digits(&mut out, month, 2);
    out.push(b'-');
    digits(&mut out, day, 2);
    out.push(b'T');
    digits(&mut out, of_day / 3600, 2);
    out.push(b':');
    digits(&mut out, of_day / 60 % 60, 2);
    out.push(b':');
    digits(&mut out, of_day % 60, 2);
    out.push(b'.');
    out.try_into().unwrap_or([b'0'; 20])
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `value`'s last `width` decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    while divisor > 0 {
        // A digit, 0..=9: the cast cannot truncate.
        out.push(b'0' + (value / divisor % 10) as u8);
        divisor /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::telemetry::decision_log::LoggedError;
    use crate::telemetry::trace::TraceId;

    proptest! {
        #[test]
        fn times_are_written_as_humantime_writes_them(
            seconds in 0u64..253_402_300_800,
            nanos in proptest::collection::vec(0u32..1_000_000_000, 1..4),
        ) {
            // Several times in one second: its text is kept from line to
            // line, and each still gets its own microseconds.
            for nano in nanos {
                let time = UNIX_EPOCH + Duration::new(seconds, nano);
                let mut out = Vec::new();
                rfc3339_micros(&mut out, time);
                prop_assert_eq!(
                    String::from_utf8(out).unwrap(),
                    humantime::format_rfc3339_micros(time).to_string()
                );
            }
        }

        #[test]
        fn a_line_is_written_as_serde_json_writes_it(
            texts in proptest::collection::vec(any::<String>(), 9),
            reasons in proptest::collection::vec(any::<String>(), 0..3),
            messages in proptest::collection::vec(any::<String>(), 0..3),
            (seconds, latency, id, trace) in (0u64..4_000_000_000, any::<u64>(), any::<u128>(), 1u128..),
            (stale, digest, captured, context) in (any::<bool>(), any::<bool>(), any::<bool>(), 0..3u8),
        ) {
            let context = match context {
                0 => None,
                1 => Some(serde_json::json!({"side": texts[7], "amount": 12.5, "n": [1, null, true]})),
                _ => Some(Value::String(texts[8].clone())),
            };
            let entities = serde_json::value::to_raw_value(&serde_json::json!([{"uid": texts[6]}])).unwrap();
            let entry = LogEntry {
                v: 1,
                time: UNIX_EPOCH + Duration::from_micros(seconds),
                request_id: &texts[0],
                id: Hex128(id),
                trace_id: TraceId::new(trace).unwrap(),
                principal: Text(&texts[1]),
                action: &texts[2],
                resource: Text(&texts[3]),
                resource_parts: ("", ""),
                action_groups: &[],
                decision: if stale { "allow" } else { "deny" },
                reasons: reasons.iter().map(String::as_str).collect(),
                errors: messages
                    .iter()
                    .map(|message| LoggedError { code: "some_code", message })
                    .collect(),
                policy_version: &texts[4],
                schema_version: &texts[5],
                entities_digest: digest.then_some(texts[6].as_str()),
                entities: captured.then_some(&*entities),
                stale_data: stale,
                latency_us: latency,
                context: context.as_ref(),
            };
            let mut ours = Vec::new();
            entry.write_json(&mut ours);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&entry).unwrap()
            );
        }
    }
}
