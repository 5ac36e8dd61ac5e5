//! The decision log: one JSON line per decision, the account's "action
//! history". Written by a background task through a bounded queue: a full
//! queue drops the line and counts it, and never blocks a decision.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::metrics;

/// Where decision lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// standard error (the default: container logs)
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
    /// context attributes whose values are replaced by `"***"`
    pub mask: Vec<String>,
}

/// One decision, as logged.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// when it was decided (RFC 3339)
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// the caller's `X-Request-ID`, if any
    pub request_id: Option<String>,
    /// `Type::"id"`
    pub principal: String,
    /// the action id
    pub action: String,
    /// `Type::"id"`
    pub resource: String,
    /// `allow` or `deny`
    pub decision: &'static str,
    /// the determining policies
    pub reasons: Vec<String>,
    /// `{code, message}` of each error
    pub errors: Vec<Value>,
    /// the policy version that decided
    pub policy_version: Arc<str>,
    /// some entity was served stale because the store failed
    pub stale_data: bool,
    /// time to decide, microseconds
    pub latency_us: u64,
    /// the request context, masked as configured
    pub context: Option<Value>,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

/// The log's sending half; cheap to clone.
#[derive(Clone, Debug)]
pub struct DecisionLog {
    sender: Option<mpsc::Sender<LogEntry>>,
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        Self { sender: None }
    }

    /// Whether entries are wanted (so callers can skip building them).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Starts the writer task. Needs a tokio runtime.
    ///
    /// # Errors
    /// A log file that cannot be opened for appending.
    pub fn start(settings: DecisionLogSettings) -> std::io::Result<Self> {
        let mut out: Box<dyn Write + Send> = match &settings.sink {
            LogSink::Off => return Ok(Self::off()),
            LogSink::Stderr => Box::new(std::io::stderr()),
            LogSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, mut receiver) = mpsc::channel::<LogEntry>(settings.queue.max(1));
        let mask = settings.mask;
        tokio::spawn(async move {
            let mut line = Vec::with_capacity(512);
            while let Some(first) = receiver.recv().await {
                let mut next = Some(first);
                while let Some(mut entry) = next {
                    mask_context(&mut entry, &mask);
                    line.clear();
                    if serde_json::to_writer(&mut line, &entry).is_ok() {
                        line.push(b'\n');
                        let _ = out.write_all(&line);
                    }
                    next = receiver.try_recv().ok();
                }
                let _ = out.flush();
            }
        });
        Ok(Self {
            sender: Some(sender),
        })
    }

    /// Queues `entry`; when the queue is full the entry is dropped and counted.
    pub fn record(&self, entry: LogEntry) {
        if let Some(sender) = &self.sender
            && sender.try_send(entry).is_err()
        {
            metrics().decision_log_dropped.inc();
        }
    }
}

fn mask_context(entry: &mut LogEntry, mask: &[String]) {
    let Some(Value::Object(context)) = &mut entry.context else {
        return;
    };
    for field in mask {
        if let Some(value) = context.get_mut(field) {
            *value = Value::String("***".to_owned());
        }
    }
}
