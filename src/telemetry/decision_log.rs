//! The decision log: one JSON line per decision, the account's "action
//! history". A decision writes its line into a shared buffer bounded in
//! bytes and lines (a full buffer drops the line and counts it, never
//! blocking); a dedicated thread writes the buffer out every few
//! milliseconds in one system call, so no async worker ever waits on a
//! slow disk or a stalled stderr, and no decision wakes a thread.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::history::{HistoryQueue, HistoryRecord, subject};
use super::keep::KeepRules;
use super::metrics;
use super::trace::TraceId;

/// Where decision lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// standard output (the default: container logs, apart from the
    /// process log on standard error)
    Stdout,
    /// standard error
    Stderr,
    /// appended to a file
    File(PathBuf),
    /// nowhere
    Off,
}

/// How the decision log behaves.
#[derive(Debug, Clone)]
pub struct DecisionLogSettings {
    /// where lines go
    pub sink: LogSink,
    /// lines waiting to be written before new ones are dropped
    pub queue: usize,
    /// bytes waiting to be written before new lines are dropped
    pub max_bytes: usize,
    /// context attributes whose values are replaced by `"***"`, in the
    /// context and in error messages
    pub mask: Vec<String>,
    /// write the entities each decision read into its line (masked)
    pub capture_entities: bool,
    /// which lines are kept (`log.keep`), for every sink
    pub keep: Arc<KeepRules>,
    /// the action history: each kept decision line also goes to this
    /// outbox, on its resource's subject under this prefix
    pub history: Option<(HistoryQueue, String)>,
}

/// The version of a decision's line: a line with `"v"` can be replayed
/// (`mandate replay`); the number grows when its meaning changes.
pub const LINE_VERSION: u32 = 1;

/// One decision, as logged; borrowed from the decision, written at once.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry<'a> {
    /// [`LINE_VERSION`]
    pub v: u32,
    /// when it was decided (RFC 3339)
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// the caller's `X-Request-ID`, or one made for this request
    pub request_id: &'a str,
    /// this line's own id, made here (a request id is the caller's, and a
    /// batch shares one): the action history's deduplication key
    pub id: Hex128,
    /// the W3C trace id: the caller's `traceparent`'s, else one made for
    /// the request, so a line and its trace join
    pub trace_id: TraceId,
    /// canonical `Namespace::Type::"id"`
    pub principal: Text<'a>,
    /// the action id
    pub action: &'a str,
    /// canonical `Namespace::Type::"id"`
    pub resource: Text<'a>,
    /// the resource's type (as Cedar prints it) and id apart: its history
    /// subject
    #[serde(skip)]
    pub resource_parts: (&'a str, &'a str),
    /// the action's groups, for `log.keep`
    #[serde(skip)]
    pub action_groups: &'a [String],
    /// `allow` or `deny`
    pub decision: &'static str,
    /// the determining policies
    pub reasons: Vec<&'a str>,
    /// `{code, message}` of each error
    pub errors: Vec<LoggedError<'a>>,
    /// the policy version that decided
    pub policy_version: &'a str,
    /// the schema version it was decided under
    pub schema_version: &'a str,
    /// `sha256:` of the entities the decision read (the named ones and
    /// their ancestors, as Cedar's JSON, sorted): two lines with the same
    /// digest saw the same data
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities_digest: Option<&'a str>,
    /// those entities themselves, masked (`log.capture_entities`), as
    /// JSON written once per slice
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<&'a serde_json::value::RawValue>,
    /// some entity was served stale because the store failed
    pub stale_data: bool,
    /// time to decide, microseconds
    pub latency_us: u64,
    /// the request context, masked as configured
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a Value>,
}

/// 128 bits written as 32 lowercase hex digits (a line id, a trace id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex128(pub u128);

impl Hex128 {
    /// A new random id.
    pub fn random() -> Self {
        Self(fastrand::u128(..))
    }

    /// The 32 digits, made on the stack: every line writes two ids, and
    /// `{:032x}` through a formatter costs several times more.
    pub fn digits(self) -> [u8; 32] {
        let mut digits = [0; 32];
        let (high, low) = digits.split_at_mut(16);
        high.copy_from_slice(&hex16((self.0 >> 64) as u64));
        low.copy_from_slice(&hex16(self.0 as u64));
        digits
    }
}

/// `value`'s 16 lowercase hex digits, without a loop: each nibble is spread
/// into its own byte (halving the lanes four times), then turned into
/// ASCII all at once (`'0' + n`, and 39 more for `a`–`f`).
fn hex16(value: u64) -> [u8; 16] {
    const fn lanes(byte: u8) -> u128 {
        u128::from_ne_bytes([byte; 16])
    }
    let mut v = u128::from(value);
    v = ((v & 0xffff_ffff_0000_0000) << 32) | (v & 0xffff_ffff);
    v = ((v & 0x0000_0000_ffff_0000_0000_0000_ffff_0000) << 16)
        | (v & 0x0000_0000_0000_ffff_0000_0000_0000_ffff);
    v = ((v & 0x0000_ff00_0000_ff00_0000_ff00_0000_ff00) << 8)
        | (v & 0x0000_00ff_0000_00ff_0000_00ff_0000_00ff);
    v = ((v & 0x00f0_00f0_00f0_00f0_00f0_00f0_00f0_00f0) << 4)
        | (v & 0x000f_000f_000f_000f_000f_000f_000f_000f);
    // A byte above 9 carries into its bit 4 when 6 is added.
    let letters = ((v + lanes(6)) >> 4) & lanes(1);
    (v + lanes(b'0') + letters * 39).to_be_bytes()
}

impl std::fmt::Display for Hex128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.digits()).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Hex128 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let digits = self.digits();
        let text = std::str::from_utf8(&digits).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// One AuthZEN search, as logged: one line per search (not per candidate
/// decided), told from a decision's line by its `search` field.
#[derive(Debug, Clone, Serialize)]
pub struct SearchEntry<'a> {
    /// when it was answered (RFC 3339)
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// the caller's `X-Request-ID`, or one made for this request
    pub request_id: &'a str,
    /// the W3C trace id, as a decision's line carries it
    pub trace_id: TraceId,
    /// what was searched: `subject`, `resource` or `action`
    pub search: &'static str,
    /// canonical `Namespace::Type::"id"`, or the type alone when searched
    pub subject: Text<'a>,
    /// the action id, absent when actions were searched
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    /// canonical `Namespace::Type::"id"`, or the type alone when searched
    pub resource: Text<'a>,
    /// `answered`, `pruned` (answered by partial evaluation, nothing
    /// listed), `refused`, `store_unavailable` or `over_budget`
    pub outcome: &'static str,
    /// how many the search found (all pages)
    pub results: usize,
    /// how many candidates it decided
    pub candidates: usize,
    /// why it was not answered
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// the policy version that decided
    pub policy_version: &'a str,
    /// time to answer, microseconds
    pub latency_us: u64,
    /// the request context, masked as configured
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a Value>,
}

/// One error of a decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedError<'a> {
    /// stable code
    pub code: &'static str,
    /// for a person
    pub message: &'a str,
}

/// Text written straight into the line, never built as a string of its own.
#[derive(Clone, Copy)]
pub struct Text<'a>(pub &'a (dyn LineText + Sync));

/// Text a line carries: its `Display`, and that written as the inside of
/// a JSON string, through the `Display` unless the text knows a faster way.
pub trait LineText: std::fmt::Display {
    /// The text, escaped as the inside of a JSON string (no quotes).
    fn write_escaped(&self, out: &mut Vec<u8>) {
        display_escaped(out, self);
    }
}

/// `value`'s `Display` escaped as the inside of a JSON string: what a
/// [`LineText`] falls back on.
pub fn display_escaped(out: &mut Vec<u8>, value: &(impl std::fmt::Display + ?Sized)) {
    crate::support::json::display_inside(out, value);
}

impl LineText for &str {}

impl LineText for String {}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.to_string())
    }
}

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

/// A time as RFC 3339 with microseconds, as every log line writes it.
pub(crate) fn rfc3339<S: serde::Serializer>(
    time: &SystemTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

/// How often the writer thread writes what is buffered.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Buffered bytes past which the writer is woken at once.
const WAKE_BYTES: usize = 256 * 1024;

/// Lines waiting for the writer.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
}

#[derive(Debug)]
struct Shared {
    /// whether a sink writes lines (else only the history takes them)
    writes: bool,
    keep: Arc<KeepRules>,
    history: Option<(HistoryQueue, String)>,
    pending: Mutex<Pending>,
    wake: Condvar,
    max_bytes: usize,
    max_lines: usize,
    mask: Vec<String>,
    capture_entities: bool,
    /// the writer holds lines it has taken and not yet written
    writing: AtomicBool,
}

/// The log's sending half; cheap to clone.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    shared: Option<Arc<Shared>>,
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        Self { shared: None }
    }

    /// Whether entries are wanted (so callers can skip building them).
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// With `log.capture_entities`: the attribute names to mask in the
    /// entities captured (see [`mask_attributes`]).
    pub fn captures_entities(&self) -> Option<&[String]> {
        self.shared
            .as_ref()
            .filter(|shared| shared.capture_entities)
            .map(|shared| shared.mask.as_slice())
    }

    /// Starts the writer thread.
    ///
    /// # Errors
    /// A log file that cannot be opened for appending, or no thread.
    pub fn start(settings: DecisionLogSettings) -> std::io::Result<Self> {
        let out: Option<Box<dyn Write + Send>> = match &settings.sink {
            LogSink::Off if settings.history.is_none() => return Ok(Self::off()),
            LogSink::Off => None,
            LogSink::Stdout => Some(Box::new(std::io::stdout())),
            LogSink::Stderr => Some(Box::new(std::io::stderr())),
            LogSink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        let shared = Arc::new(Shared {
            writes: out.is_some(),
            keep: settings.keep,
            history: settings.history,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            max_bytes: settings.max_bytes.max(1),
            max_lines: settings.queue.max(1),
            mask: settings.mask,
            capture_entities: settings.capture_entities,
            writing: AtomicBool::new(false),
        });
        if let Some(out) = out {
            let writer = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("decision-log".to_owned())
                .spawn(move || write_forever(&writer, out))?;
        }
        Ok(Self {
            shared: Some(shared),
        })
    }

    /// Whether lines need their action's groups (a `log.keep` rule names
    /// actions); else [`LogEntry::action_groups`] may be left empty.
    pub fn needs_action_groups(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.keep.names_actions())
    }

    /// Writes `entry` into the buffer and the history's outbox, when the
    /// `log.keep` rules keep it; when either is full the line is dropped
    /// there and counted.
    pub fn record(&self, entry: &LogEntry<'_>) {
        let Some(shared) = &self.shared else {
            return;
        };
        if !shared
            .keep
            .keep(entry.decision == "allow", entry.action, entry.action_groups)
        {
            return;
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            if shared.mask.is_empty() {
                entry.write_json(line);
            } else {
                write_masked(line, entry, &shared.mask);
            }
            if let Some((outbox, prefix)) = &shared.history {
                let (resource_type, resource_id) = entry.resource_parts;
                outbox.push(HistoryRecord {
                    subject: subject(prefix, resource_type, resource_id),
                    id: entry.id.to_string(),
                    line: bytes::Bytes::copy_from_slice(line),
                    queued: std::time::Instant::now(),
                });
            }
            if shared.writes {
                line.push(b'\n');
                shared.push(line);
            }
        });
    }
}

impl DecisionLog {
    /// Waits (at most `limit`) until every line recorded so far is written:
    /// at shutdown, so the last decisions' lines are not lost with the
    /// process.
    pub fn flush(&self, limit: Duration) {
        let Some(shared) = &self.shared else {
            return;
        };
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let empty = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .bytes
                .is_empty();
            if empty && !shared.writing.load(Ordering::Acquire) {
                return;
            }
            shared.wake.notify_one();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (at most `limit`) until the history's outbox is empty: at
    /// shutdown, while the publisher still runs. What is left is counted
    /// dropped (`shutdown`).
    pub async fn drain_history(&self, limit: Duration) {
        let Some((outbox, _)) = self.shared.as_ref().and_then(|s| s.history.as_ref()) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !outbox.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = outbox.len();
        if left > 0 {
            metrics()
                .history_dropped
                .with_label_values(&["shutdown"])
                .inc_by(left as u64);
        }
    }

    /// Writes one line of any other kind (a shadow divergence), unmasked:
    /// the caller puts no context in it.
    pub fn record_line<T: Serialize>(&self, entry: &T) {
        let Some(shared) = self.shared.as_ref().filter(|shared| shared.writes) else {
            return;
        };
        if let Ok(mut line) = serde_json::to_vec(entry) {
            line.push(b'\n');
            shared.push(&line);
        }
    }

    /// Writes a search's line, its context and error masked as a
    /// decision's are; dropped and counted like one when the buffer is full.
    pub fn record_search(&self, entry: &SearchEntry<'_>) {
        let Some(shared) = self.shared.as_ref().filter(|shared| shared.writes) else {
            return;
        };
        let hidden = entry.context.and_then(|c| masked(c, &shared.mask));
        let error = match (&hidden, entry.error) {
            (Some((_, secrets)), Some(error)) => Some(hide(error, &written_forms(secrets))),
            _ => None,
        };
        let entry = SearchEntry {
            context: hidden.as_ref().map(|(masked, _)| masked).or(entry.context),
            error: error.as_deref().or(entry.error),
            ..entry.clone()
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            shared.push(&line);
        }
    }
}

thread_local! {
    /// Each thread's line being written, reused from line to line.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

impl Shared {
    /// Appends a whole line to the buffer, or drops and counts it when the
    /// buffer is full.
    fn push(&self, line: &[u8]) {
        let shared = self;
        let mut pending = shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pending.lines >= shared.max_lines || pending.bytes.len() + line.len() > shared.max_bytes
        {
            drop(pending);
            metrics().decision_log_dropped.inc();
            return;
        }
        pending.bytes.extend_from_slice(line);
        pending.lines += 1;
        let wake = pending.bytes.len() >= WAKE_BYTES;
        drop(pending);
        if wake {
            shared.wake.notify_one();
        }
    }
}

/// The writer thread: every [`FLUSH_INTERVAL`] (or sooner when much is
/// waiting) takes what is buffered and writes it in one call.
fn write_forever(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut writing = Vec::new();
    loop {
        {
            let pending = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (mut pending, _) = shared
                .wake
                .wait_timeout(pending, FLUSH_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut pending.bytes, &mut writing);
            pending.lines = 0;
            // Taken while the lock is held: `flush` never sees an empty
            // buffer whose lines are not yet written.
            shared.writing.store(!writing.is_empty(), Ordering::Release);
        }
        if !writing.is_empty() {
            let _ = out.write_all(&writing);
            let _ = out.flush();
            writing.clear();
            // A burst's buffer is not kept: memory returns to the bound.
            writing.shrink_to(WAKE_BYTES);
            shared.writing.store(false, Ordering::Release);
        }
    }
}

/// Writes `entry` with the masked context attributes replaced by `"***"`,
/// and their values hidden wherever else the line carries them: in error
/// messages and in captured entities (a destination's own uid), however
/// Cedar or JSON escaped them. Over-masking (a secret inside a longer id)
/// is the safe side.
fn write_masked(out: &mut Vec<u8>, entry: &LogEntry<'_>, mask: &[String]) {
    let Some((masked, secrets)) = entry.context.and_then(|c| masked(c, mask)) else {
        return entry.write_json(out);
    };
    let forms = written_forms(&secrets);
    let messages: Vec<String> = entry
        .errors
        .iter()
        .map(|error| hide(error.message, &forms))
        .collect();
    let errors = entry
        .errors
        .iter()
        .zip(&messages)
        .map(|(error, message)| LoggedError {
            code: error.code,
            message,
        })
        .collect();
    let json_forms: Vec<String> = forms
        .iter()
        .filter_map(|form| {
            let json = serde_json::to_string(form).ok()?;
            Some(json.get(1..json.len().checked_sub(1)?)?.to_owned())
        })
        .collect();
    let entities = entry.entities.and_then(|raw| {
        let hidden = hide_in_strings(raw.get().as_bytes(), &json_forms);
        serde_json::value::RawValue::from_string(String::from_utf8(hidden).ok()?).ok()
    });
    let masked_entry = LogEntry {
        errors,
        context: Some(&masked),
        // A capture that cannot be re-read after masking is left out, never
        // written unmasked.
        entities: entities.as_deref(),
        ..entry.clone()
    };
    masked_entry.write_json(out);
}

/// Each secret as a message may write it: itself, and as Rust and Cedar
/// escape it (`a"b` → `a\"b`); longest first, so that a form is never half
/// replaced by a shorter one.
fn written_forms(secrets: &[String]) -> Vec<String> {
    let mut forms: Vec<String> = secrets
        .iter()
        .flat_map(|secret| {
            [
                secret.clone(),
                secret.escape_debug().to_string(),
                secret.escape_default().to_string(),
            ]
        })
        .filter(|form| !form.is_empty())
        .collect();
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    forms
}

/// `text` with every form replaced by `***`, longest forms first.
fn hide(text: &str, forms: &[String]) -> String {
    forms.iter().fold(text.to_owned(), |text, form| {
        text.replace(form.as_str(), "***")
    })
}

/// `json` with every occurrence of a form (JSON-escaped) inside a JSON
/// string replaced by `***`; numbers and structure untouched.
fn hide_in_strings(json: &[u8], forms: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut at = 0;
    let mut in_string = false;
    while let Some(&byte) = json.get(at) {
        let rest = json.get(at..).unwrap_or_default();
        if !in_string {
            in_string = byte == b'"';
            out.push(byte);
            at += 1;
        } else if let Some(form) = forms.iter().find(|f| rest.starts_with(f.as_bytes())) {
            out.extend_from_slice(b"***");
            at += form.len();
        } else if byte == b'\\' {
            out.extend_from_slice(rest.get(..2).unwrap_or(rest));
            at += 2;
        } else {
            in_string = byte != b'"';
            out.push(byte);
            at += 1;
        }
    }
    out
}

/// A context object with the masked attributes' values replaced by
/// `"***"`, and the texts those values could show up as elsewhere; `None`
/// for a context that is no object.
fn masked(context: &Value, mask: &[String]) -> Option<(Value, Vec<String>)> {
    let context = context.as_object()?;
    let secrets: Vec<String> = mask
        .iter()
        .filter_map(|name| context.get(name))
        .flat_map(secret_texts)
        .filter(|text| !text.is_empty())
        .collect();
    let masked = Value::Object(
        context
            .iter()
            .map(|(name, value)| {
                let value = if mask.contains(name) {
                    Value::String("***".to_owned())
                } else {
                    value.clone()
                };
                (name.clone(), value)
            })
            .collect(),
    );
    Some((masked, secrets))
}

/// The texts a masked value could show up as in a message: a string
/// itself, a number, an entity reference's id.
fn secret_texts(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Number(number) => vec![number.to_string()],
        Value::Object(map) => {
            let target = map.get("__entity").unwrap_or(value);
            target
                .get("id")
                .and_then(Value::as_str)
                .map(|id| vec![id.to_owned()])
                .unwrap_or_default()
        }
        Value::Array(items) => items.iter().flat_map(secret_texts).collect(),
        Value::Bool(_) | Value::Null => Vec::new(),
    }
}

/// Replaces with `"***"` the value of every attribute named in `mask`, at
/// any depth of `value` (captured entities, masked as contexts are).
pub fn mask_attributes(value: &mut Value, mask: &[String]) {
    match value {
        Value::Object(object) => {
            for (name, inner) in object.iter_mut() {
                if mask.contains(name) {
                    *inner = Value::String("***".to_owned());
                } else {
                    mask_attributes(inner, mask);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| mask_attributes(item, mask)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_always_32_lowercase_hex_digits_as_text_and_in_json() {
        let values = [
            0,
            1,
            0xab,
            9,
            10,
            0xf,
            u128::MAX,
            0x0123_4567_89ab_cdef << 64,
        ];
        for value in values
            .into_iter()
            .chain(std::iter::repeat_with(|| fastrand::u128(..)).take(1000))
        {
            let expected = format!("{value:032x}");
            assert_eq!(Hex128(value).to_string(), expected);
            assert_eq!(
                serde_json::to_string(&Hex128(value)).unwrap(),
                format!("\"{expected}\"")
            );
        }
    }

    fn entry<'a>(context: &'a Value, errors: Vec<LoggedError<'a>>) -> LogEntry<'a> {
        LogEntry {
            v: LINE_VERSION,
            time: SystemTime::UNIX_EPOCH,
            request_id: "r-1",
            id: Hex128(1),
            trace_id: TraceId::random(),
            principal: Text(&r#"Brokerage::User::"erin""#),
            action: "withdraw",
            resource: Text(&r#"Brokerage::Account::"alice-personal""#),
            resource_parts: ("Brokerage::Account", "alice-personal"),
            action_groups: &[],
            decision: "deny",
            reasons: vec![],
            errors,
            policy_version: "v1",
            schema_version: "s1",
            entities_digest: None,
            entities: None,
            stale_data: false,
            latency_us: 3,
            context: Some(context),
        }
    }

    #[test]
    fn a_hostile_masked_id_is_hidden_however_it_was_escaped_and_wherever_written() {
        for id in [
            "evil\"wallet",
            "back\\slash",
            "bell\u{7}ring",
            "new\nline",
            "9",
        ] {
            let context = serde_json::json!({
                "destination": {"type": "Brokerage::Destination", "id": id},
                "amount": 9,
            });
            let cedar = format!(
                "entity `Brokerage::Destination::\"{}\"` is not known",
                id.escape_debug()
            );
            let errors = vec![LoggedError {
                code: "entity_not_found",
                message: &cedar,
            }];
            let captured = serde_json::json!([{"uid": {"type": "Brokerage::Destination", "id": id},
                                                 "attrs": {}, "parents": []}]);
            let raw = serde_json::value::RawValue::from_string(captured.to_string()).unwrap();
            let mut entry = entry(&context, errors);
            entry.entities = Some(&raw);
            let mut line = Vec::new();
            write_masked(&mut line, &entry, &["destination".to_owned()]);
            let text = String::from_utf8(line).unwrap();
            let parsed: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            for part in ["context", "errors", "entities"] {
                let strings = strings_of(&parsed[part]);
                assert!(
                    strings.iter().all(|s| !s.contains(id)),
                    "{id:?} in {part}: {text}"
                );
            }
            assert_eq!(parsed["entities"][0]["uid"]["id"], "***", "{text}");
            // Numbers and structure are untouched: the amount stays 9.
            assert_eq!(parsed["context"]["amount"], 9, "{text}");
            assert_eq!(parsed["latency_us"], 3, "{text}");
        }
    }

    fn strings_of(value: &Value) -> Vec<String> {
        match value {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) => items.iter().flat_map(strings_of).collect(),
            Value::Object(map) => map.values().flat_map(strings_of).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_masked_value_is_hidden_in_the_context_and_in_error_messages() {
        let context = serde_json::json!({
            "destination": {"type": "Brokerage::Destination", "id": "mallory-wallet"},
            "amount": "12.00"
        });
        let errors = vec![LoggedError {
            code: "entity_not_found",
            message: r#"entity `Brokerage::Destination::"mallory-wallet"` is not known"#,
        }];
        let entry = entry(&context, errors);
        let mask = vec!["destination".to_owned()];
        let mut line = Vec::new();
        write_masked(&mut line, &entry, &mask);
        let text = String::from_utf8(line).unwrap();
        assert!(!text.contains("mallory-wallet"), "{text}");
        assert!(text.contains(r#""destination":"***""#), "{text}");
        assert!(text.contains("12.00"), "{text}");
        let line: Value = serde_json::from_str(&text).unwrap();
        let plain: Value = serde_json::to_value(&entry).unwrap();
        for key in ["time", "request_id", "principal", "action", "latency_us"] {
            assert_eq!(line[key], plain[key], "{key}");
        }
    }
}
