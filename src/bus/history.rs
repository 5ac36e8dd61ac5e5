//! The durable action history on NATS JetStream: every kept decision line
//! published on its resource's subject (`<prefix>.<type>.<id>`, see
//! [`crate::telemetry::history::subject`]) into one stream, acknowledged,
//! deduplicated by the line's own id (`Nats-Msg-Id`), so a retry after a
//! lost acknowledgement is never stored twice. Decisions only ever push to
//! the bounded outbox; this task drains it, retries what failed until
//! `history.retry_for`, and counts what it had to drop. `read` answers
//! "what happened to this resource" from one subject alone.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tracing::Instrument;

use super::{BusError, BusSettings, connect, options};
use crate::telemetry::history::{HistoryQueue, HistoryRecord};
use crate::telemetry::metrics;

/// How the history is reached and kept.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// the NATS server and its credentials (the bus's options apply)
    pub nats: BusSettings,
    /// the stream's name
    pub stream: String,
    /// subjects are `<prefix>.<type>.<id>`
    pub subject_prefix: String,
    /// how long a line is retried before it is dropped and counted
    pub retry_for: Duration,
    /// the stream's age limit, when Mandate creates it (zero: none)
    pub max_age: Duration,
    /// the stream's byte limit, when Mandate creates it (zero: none)
    pub max_bytes: u64,
    /// the stream's replicas, when Mandate creates it
    pub replicas: usize,
}

/// Lines published per round; their acknowledgements are awaited together.
const BATCH: usize = 256;
/// How long a publish waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause after a failed round; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The stream Mandate creates when it is missing: file storage, every
/// subject under the prefix, the configured limits (discarding new lines
/// once full, so a full stream is counted drops and an alert, never a
/// silent loss of old records), and a deduplication window longer than
/// any retry.
pub fn stream_config(settings: &HistorySettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        storage: stream::StorageType::File,
        max_age: settings.max_age,
        max_bytes: i64::try_from(settings.max_bytes)
            .ok()
            .filter(|bytes| *bytes > 0)
            .unwrap_or(-1),
        discard: if settings.max_bytes > 0 {
            stream::DiscardPolicy::New
        } else {
            stream::DiscardPolicy::Old
        },
        num_replicas: settings.replicas.max(1),
        duplicate_window: duplicate_window(settings.retry_for),
        ..Default::default()
    }
}

/// Longer than any retry: a line retried until `retry_for` is still
/// recognised as a duplicate.
fn duplicate_window(retry_for: Duration) -> Duration {
    (retry_for + Duration::from_secs(60)).max(Duration::from_secs(120))
}

/// Connects (in the background: an unreachable server is retried, never a
/// reason not to serve) and starts publishing from `outbox`.
///
/// # Errors
/// A credentials file that cannot be read.
pub async fn start(settings: HistorySettings, outbox: HistoryQueue) -> Result<(), BusError> {
    let (url, options) = options(&settings.nats, "mandate-history").await?;
    let options = options
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => metrics().history_connected.set(1),
                async_nats::Event::Disconnected | async_nats::Event::Closed => {
                    metrics().history_connected.set(0);
                }
                _ => {}
            }
        });
    let client = connect(&url, options).await?;
    let context = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .build(client);
    tokio::spawn(publish_forever(context, settings, outbox));
    Ok(())
}

/// Makes sure the stream exists (created as [`stream_config`] says when
/// missing; one that exists is used as it is), retrying until it can.
async fn ensure_stream(context: &jetstream::Context, settings: &HistorySettings) {
    let mut pause = FIRST_BACKOFF;
    loop {
        let span = tracing::info_span!(target: crate::telemetry::trace::SPANS, "history.stream");
        let created = context
            .get_or_create_stream(stream_config(settings))
            .instrument(span)
            .await;
        match created {
            Ok(mut existing) => {
                if let Ok(info) = existing.info().await {
                    let window = info.config.duplicate_window;
                    if window < settings.retry_for {
                        tracing::warn!(
                            stream = %settings.stream,
                            window = ?window,
                            retry_for = ?settings.retry_for,
                            "the history stream's duplicate window is shorter than history.retry_for: a line retried late could be stored twice"
                        );
                    }
                }
                tracing::info!(stream = %settings.stream, "action history stream ready");
                return;
            }
            Err(error) => {
                tracing::warn!(stream = %settings.stream, %error, "cannot open or create the history stream; retrying");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Drains the outbox for as long as the process runs.
async fn publish_forever(
    context: jetstream::Context,
    settings: HistorySettings,
    outbox: HistoryQueue,
) {
    ensure_stream(&context, &settings).await;
    let mut pause = FIRST_BACKOFF;
    loop {
        let batch = outbox.take(BATCH).await;
        let taken = batch.len();
        let span = tracing::info_span!(
            target: crate::telemetry::trace::SPANS,
            "history.publish",
            lines = batch.len()
        );
        let failed = publish_batch(&context, batch).instrument(span).await;
        if failed.is_empty() {
            outbox.settled(taken);
            pause = FIRST_BACKOFF;
            continue;
        }
        let (retry, expired): (Vec<HistoryRecord>, Vec<HistoryRecord>) = failed
            .into_iter()
            .partition(|record| record.queued.elapsed() < settings.retry_for);
        if !expired.is_empty() {
            metrics()
                .history_dropped
                .with_label_values(&["expired"])
                .inc_by(expired.len() as u64);
        }
        metrics().history_retries.inc_by(retry.len() as u64);
        outbox.put_back(retry);
        outbox.settled(taken);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Publishes `batch`, awaiting every acknowledgement; answers the lines to
/// try again. A line JetStream refused for what it is (too large, a
/// stream limit) is dropped and counted `refused`, not retried.
async fn publish_batch(
    context: &jetstream::Context,
    batch: Vec<HistoryRecord>,
) -> Vec<HistoryRecord> {
    use async_nats::jetstream::context::PublishErrorKind as Kind;
    let mut waiting = Vec::with_capacity(batch.len());
    let mut failed = Vec::new();
    for record in batch {
        let message = jetstream::message::PublishMessage::build()
            .message_id(&record.id)
            .payload(record.line.clone());
        match context.send_publish(record.subject.clone(), message).await {
            Ok(ack) => waiting.push((record, ack)),
            Err(error) if error.kind() == Kind::MaxPayloadExceeded => refused(&record, &error),
            Err(_) => failed.push(record),
        }
    }
    let acks = futures_util::future::join_all(
        waiting
            .into_iter()
            .map(|(record, ack)| async move { (record, ack.await) }),
    )
    .await;
    for (record, answer) in acks {
        match answer {
            Ok(_) => metrics().history_published.inc(),
            Err(error) if error.kind() == Kind::Other => refused(&record, &error),
            Err(_) => failed.push(record),
        }
    }
    failed
}

fn refused(record: &HistoryRecord, error: &dyn std::fmt::Display) {
    metrics()
        .history_dropped
        .with_label_values(&["refused"])
        .inc();
    tracing::warn!(subject = %record.subject, %error, "JetStream refused an action-history line");
}

/// Reads one subject's lines from the stream, oldest first, from `since`
/// (or the beginning), through an ordered consumer filtered to that
/// subject: the server sends only that resource's messages. Calls `line`
/// with each payload; stops at the last message present when it began.
///
/// # Errors
/// The server cannot be reached, the stream is missing, or a message
/// cannot be read.
pub async fn read(
    nats: &BusSettings,
    stream_name: &str,
    subject: &str,
    since: Option<SystemTime>,
    mut line: impl FnMut(&[u8]),
) -> Result<u64, BusError> {
    let failed = |message: String| BusError::Connect {
        url: nats.url.clone(),
        message,
    };
    let (url, options) = options(nats, "mandate-history-reader").await?;
    let client = connect(&url, options).await?;
    let context = jetstream::new(client);
    let stream = context
        .get_stream(stream_name)
        .await
        .map_err(|e| failed(format!("the history stream `{stream_name}`: {e}")))?;
    let deliver_policy = match since {
        None => consumer::DeliverPolicy::All,
        Some(start) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(start),
        },
    };
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(format!("cannot read `{subject}`: {e}")))?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| failed(format!("cannot read `{subject}`: {e}")))?
        .num_pending;
    if pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| failed(format!("cannot read `{subject}`: {e}")))?;
    let mut read = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| failed(format!("reading `{subject}`: {e}")))?;
        line(&message.payload);
        read += 1;
        let left = message
            .info()
            .map_err(|e| failed(format!("reading `{subject}`: {e}")))?
            .pending;
        if left == 0 {
            break;
        }
    }
    Ok(read)
}
