//! A replica's subscription: applies each change event to the engine's
//! entity store, notices what it may have missed, and tells the cache
//! whether events can arrive (entities are kept for
//! `cache.ttl_without_bus` while they cannot).
//!
//! Two tasks. The *reader* only moves each event's bytes into an inbox
//! bounded in bytes and count, so the client's own buffer never fills
//! behind a slow parse; past the bound the inbox forgets what it holds and
//! says so, and the *applier* forgets every cached entity instead (one
//! `all`), which covers whatever was dropped. The applier parses and
//! applies what the inbox holds, a batch at a time, its uids bounded too.
//!
//! The bus counts as connected only once the subscription is known to be
//! accepted: NATS answers a refused `SUB` with an error and no other sign,
//! so a subscription is confirmed when [`CONFIRM`] passes with the
//! connection up and no refusal; a refused one is tried again every
//! [`RETRY`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cedar_policy::EntityUid;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::event::{ChangeEvent, Changed, Continuity, MAX_EVENT_BYTES, Revisions};
use super::{BusError, BusSettings, connect, options};
use crate::engine::Engine;
use crate::entities::BusState;
use crate::telemetry::metrics;

/// How long a new subscription must go unrefused, the connection up, to
/// count as accepted: a refusal comes back within a round trip.
pub const CONFIRM: Duration = Duration::from_secs(1);

/// How often a refused (or failed) subscription is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// Most bytes of events waiting to be applied; past it they are dropped
/// and everything cached is forgotten instead.
pub const INBOX_BYTES: usize = 4 << 20;

/// Most events waiting to be applied (small events bound by count).
pub const INBOX_EVENTS: usize = 8192;

/// Most uids one batch forgets one by one; a batch naming more forgets
/// everything (cheaper than parsing and invalidating them all).
pub const BATCH_UIDS: usize = 16_384;

/// Messages the NATS client holds for the reader: the reader drains them
/// as they come, so this bounds only a stalled runtime.
const CLIENT_CAPACITY: usize = 8192;

/// What the connection's callback reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Link {
    connected: bool,
    /// slow-consumer notices so far: the client dropped messages
    dropped: u64,
    /// subscriptions the server refused for want of permission
    forbidden: u64,
    /// subscriptions the server refused past its limit
    limited: u64,
}

/// Connects to the bus (retrying in the background until it answers) and
/// applies its events to `engine` for as long as the process runs.
///
/// # Errors
/// The credentials file cannot be read, or the URL cannot be used.
pub async fn subscribe(settings: BusSettings, engine: Arc<Engine>) -> Result<(), BusError> {
    let (url, options) = options(&settings, "mandate").await?;
    let (link, links) = watch::channel(Link::default());
    let options = options
        .retry_on_initial_connect()
        .subscription_capacity(CLIENT_CAPACITY)
        .event_callback(move |event| {
            let link = link.clone();
            async move {
                if let async_nats::Event::ServerError(error) = &event {
                    tracing::warn!(%error, "the entity change bus reported an error");
                }
                link.send_modify(|state| match event {
                    async_nats::Event::Connected => state.connected = true,
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        state.connected = false;
                    }
                    async_nats::Event::SlowConsumer(_) => state.dropped += 1,
                    async_nats::Event::ServerError(error) => match refusal(&error) {
                        Some("permission") => state.forbidden += 1,
                        Some(_) => state.limited += 1,
                        None => {}
                    },
                    _ => {}
                });
            }
        });
    let client = connect(&url, options).await?;
    let inbox = Arc::new(Inbox::default());
    tokio::spawn(apply_all(Arc::clone(&inbox), Arc::clone(&engine)));
    tokio::spawn(read(client, settings.subject, engine, links, inbox));
    Ok(())
}

/// Whether a server error refuses our subscription, and why: the only
/// subscription this client makes is the change events'.
fn refusal(error: &async_nats::ServerError) -> Option<&'static str> {
    let async_nats::ServerError::Other(message) = error else {
        return None;
    };
    let message = message.to_ascii_lowercase();
    if message.contains("permissions violation for subscription") {
        Some("permission")
    } else if message.contains("maximum subscriptions exceeded") {
        Some("limit")
    } else {
        None
    }
}

/// Keeps the subscription (subscribing, confirming, retrying), moves each
/// event into the inbox, and follows the connection.
async fn read(
    client: async_nats::Client,
    subject: String,
    engine: Arc<Engine>,
    mut links: watch::Receiver<Link>,
    inbox: Arc<Inbox>,
) {
    let mut seen = Link::default();
    let mut ever_connected = false;
    let mut subscription: Option<async_nats::Subscriber> = None;
    // A subscription waiting to be confirmed, and a refused or failed one
    // waiting to be tried again.
    let mut confirm_at: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let set_state = |state: BusState| {
        engine.store().set_bus_state(state);
        metrics()
            .bus_connected
            .set(i64::from(state == BusState::Connected));
    };
    loop {
        if subscription.is_none() && retry_at.is_none() {
            match client.subscribe(subject.clone()).await {
                Ok(subscriber) => {
                    subscription = Some(subscriber);
                    if seen.connected {
                        confirm_at = Some(Instant::now() + CONFIRM);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %subject, "cannot subscribe to entity change events; retrying");
                    metrics().bus_subscription_error("subscribe_failed");
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        let next = async {
            match subscription.as_mut() {
                Some(messages) => messages.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = next => match message {
                Some(message) => inbox.push(message.payload),
                None => {
                    // The subscription ended: whatever came meanwhile is lost.
                    tracing::warn!(%subject, "entity change subscription lost; forgetting all cached entities");
                    metrics().bus_subscription_error("ended");
                    subscription = None;
                    confirm_at = None;
                    set_state(BusState::Disconnected);
                    forget_all(&engine, &inbox, "subscription_lost");
                }
            },
            () = wake_at(confirm_at) => {
                confirm_at = None;
                set_state(BusState::Connected); // forgets everything
                tracing::info!(%subject, "entity change bus connected, subscription accepted");
                if ever_connected {
                    // Events published while away were not seen: the cache
                    // forgot everything on connecting; the count starts over.
                    inbox.reset_revisions();
                    metrics().bus_gap("reconnect");
                }
                ever_connected = true;
            },
            () = wake_at(retry_at) => {
                retry_at = None;
                // Dropped: unsubscribed; the loop subscribes again.
                subscription = None;
            },
            changed = links.changed() => {
                if changed.is_err() {
                    return; // the client is gone
                }
                let now = *links.borrow_and_update();
                if now.connected != seen.connected {
                    if now.connected {
                        // Confirmed (again) once it goes unrefused; the
                        // client re-sends the subscription on reconnecting.
                        if subscription.is_some() && retry_at.is_none() {
                            confirm_at = Some(Instant::now() + CONFIRM);
                        }
                    } else {
                        tracing::warn!(
                            "entity change bus disconnected: entities are now kept for cache.ttl_without_bus only"
                        );
                        confirm_at = None;
                        set_state(BusState::Disconnected);
                    }
                }
                let refused = [
                    ("permission", now.forbidden > seen.forbidden),
                    ("limit", now.limited > seen.limited),
                ];
                for (cause, _) in refused.iter().filter(|(_, happened)| *happened) {
                    tracing::warn!(
                        %subject,
                        cause,
                        "the bus refused the entity change subscription: entities are now kept for cache.ttl_without_bus only; retrying"
                    );
                    metrics().bus_subscription_error(cause);
                    confirm_at = None;
                    retry_at = Some(Instant::now() + RETRY);
                    set_state(BusState::Refused);
                }
                if now.dropped > seen.dropped {
                    tracing::warn!("entity change events dropped (slow consumer); forgetting all cached entities");
                    forget_all(&engine, &inbox, "slow_consumer");
                }
                seen = now;
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn wake_at(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Events waiting to be applied, bounded in bytes and count.
#[derive(Default)]
struct Inbox {
    waiting: Mutex<Waiting>,
    ready: Notify,
}

#[derive(Default)]
struct Waiting {
    events: VecDeque<Bytes>,
    bytes: usize,
    /// events were dropped past the bound: forget everything
    overflowed: bool,
    /// events may have been missed: the revision count starts over
    reset: bool,
}

impl Inbox {
    /// Takes one event in, or drops it (past the bound, or too big to be
    /// one).
    fn push(&self, payload: Bytes) {
        metrics().bus_events_received.inc();
        if payload.len() > MAX_EVENT_BYTES {
            // Never buffered; its revision is unknown, so the next one
            // shows a gap if it mattered.
            metrics().bus_ignored("oversized");
            return;
        }
        {
            let mut waiting = self.waiting();
            if waiting.overflowed {
                return;
            }
            if waiting.bytes + payload.len() > INBOX_BYTES || waiting.events.len() >= INBOX_EVENTS {
                tracing::warn!(
                    "entity change events arrive faster than they are applied; forgetting all cached entities"
                );
                waiting.overflowed = true;
                waiting.events = VecDeque::new();
                waiting.bytes = 0;
            } else {
                waiting.bytes += payload.len();
                waiting.events.push_back(payload);
            }
        }
        self.ready.notify_one();
    }

    fn reset_revisions(&self) {
        self.waiting().reset = true;
        self.ready.notify_one();
    }

    fn take(&self) -> Waiting {
        std::mem::take(&mut *self.waiting())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The applier: whatever the inbox holds, applied a batch at a time.
async fn apply_all(inbox: Arc<Inbox>, engine: Arc<Engine>) {
    let mut revisions = Revisions::default();
    loop {
        inbox.ready.notified().await;
        let waiting = inbox.take();
        if waiting.reset || waiting.overflowed {
            revisions.reset();
        }
        if waiting.overflowed {
            engine.store().invalidate_all();
            metrics().bus_gap("overflow");
        }
        let span = tracing::info_span!(
            target: crate::telemetry::trace::SPANS,
            "bus.apply",
            events = waiting.events.len(),
        );
        tracing::Instrument::instrument(apply(&engine, &mut revisions, waiting.events), span).await;
    }
}

/// Applies a batch of events as one invalidation: the uids they name, or
/// everything when one says so, a revision was missed, or they name more
/// than [`BATCH_UIDS`].
async fn apply(engine: &Engine, revisions: &mut Revisions, batch: VecDeque<Bytes>) {
    let mut all = false;
    let mut uids: Vec<EntityUid> = Vec::new();
    for payload in batch {
        let event = match ChangeEvent::parse(&payload) {
            Ok(event) => event,
            Err(ignored) => {
                metrics().bus_ignored(ignored.label());
                continue;
            }
        };
        drop(payload);
        if revisions.observe(event.revision) == Continuity::Gap {
            tracing::warn!(
                revision = event.revision,
                "entity change events were missed (revision gap); forgetting all cached entities"
            );
            metrics().bus_gap("revision");
            all = true;
        }
        match event.changed {
            Changed::All => all = true,
            Changed::Uids(named) if all || uids.len() + named.len() > BATCH_UIDS => {
                // Forgetting everything covers these; their uids need not
                // be read, nor kept.
                all = true;
                uids = Vec::new();
            }
            Changed::Uids(named) => {
                let before = uids.len();
                let mut dropped = None;
                uids.extend(named.iter().filter_map(|uid| {
                    let parsed = engine.parse_uid(&uid.type_name, &uid.id);
                    if parsed.is_none() {
                        dropped.get_or_insert((0u64, uid)).0 += 1;
                    }
                    parsed
                }));
                if let Some((count, first)) = dropped {
                    metrics().bus_uids_dropped("unknown_type", count);
                    if UNKNOWN_TYPE_WARNING.allows() {
                        tracing::warn!(
                            dropped = count,
                            first_type = %first.type_name.chars().take(128).collect::<String>(),
                            "an entity change event names types the schema does not declare; those uids are dropped (counted in mandate_bus_uids_dropped_total; this warning repeats at most once a minute)"
                        );
                    }
                }
                if uids.len() == before {
                    // Every type unknown to this schema: nothing to forget.
                    metrics().bus_ignored("unknown_type");
                    continue;
                }
            }
        }
        metrics().bus_events_applied.inc();
        metrics().bus_event_seen();
        // A big batch leaves the thread to decisions between its events.
        tokio::task::yield_now().await;
    }
    if all {
        engine.store().invalidate_all();
    } else if !uids.is_empty() {
        engine.store().changed(&uids).await;
    }
}

/// At most one warning a minute for uids of unknown types: a publisher
/// with a typo must not flood the process log.
static UNKNOWN_TYPE_WARNING: EveryMinute = EveryMinute(std::sync::atomic::AtomicU64::new(0));

/// Lets something happen at most once a minute (monotonic seconds since
/// the process's first ask, plus one; 0 is never).
struct EveryMinute(std::sync::atomic::AtomicU64);

impl EveryMinute {
    fn allows(&self) -> bool {
        use std::sync::atomic::Ordering;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.0.load(Ordering::Relaxed);
        (last == 0 || now >= last + 60)
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

fn forget_all(engine: &Engine, inbox: &Inbox, cause: &'static str) {
    engine.store().invalidate_all();
    inbox.reset_revisions();
    metrics().bus_gap(cause);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_is_bounded_in_bytes_and_count_and_past_it_forgets_all() {
        let inbox = Inbox::default();
        let event = Bytes::from(vec![b' '; MAX_EVENT_BYTES]);
        let fits = INBOX_BYTES / MAX_EVENT_BYTES;
        for _ in 0..fits {
            inbox.push(event.clone());
        }
        {
            let waiting = inbox.waiting();
            assert_eq!(waiting.events.len(), fits);
            assert!(!waiting.overflowed);
        }
        inbox.push(event.clone());
        {
            let waiting = inbox.waiting();
            assert!(waiting.overflowed, "one more byte than the bound");
            assert!(waiting.events.is_empty(), "and what it held is let go");
            assert_eq!(waiting.bytes, 0);
        }
        for _ in 0..100 {
            inbox.push(event.clone());
        }
        assert!(
            inbox.waiting().events.is_empty(),
            "nothing buffered past it"
        );
        let taken = inbox.take();
        assert!(taken.overflowed);
        assert!(!inbox.waiting().overflowed, "taken: it starts over");

        let small = Bytes::from_static(br#"{"all": true}"#);
        for _ in 0..INBOX_EVENTS {
            inbox.push(small.clone());
        }
        assert!(!inbox.waiting().overflowed);
        inbox.push(small);
        assert!(inbox.waiting().overflowed, "bounded by count as well");

        inbox.take();
        inbox.push(Bytes::from(vec![b' '; MAX_EVENT_BYTES + 1]));
        assert!(
            inbox.waiting().events.is_empty() && !inbox.waiting().overflowed,
            "an event too big to be one is never buffered"
        );
    }

    #[test]
    fn a_refused_subscription_is_told_from_other_server_errors() {
        let other = |text: &str| async_nats::ServerError::Other(text.to_owned());
        assert_eq!(
            refusal(&other(
                r#"Permissions Violation for Subscription to "mandate.entities.changed""#
            )),
            Some("permission")
        );
        assert_eq!(
            refusal(&other("maximum subscriptions exceeded")),
            Some("limit")
        );
        assert_eq!(
            refusal(&other(
                r#"Permissions Violation for Publish to "mandate.entities.changed""#
            )),
            None,
            "a publish refusal is not ours"
        );
        assert_eq!(
            refusal(&async_nats::ServerError::AuthorizationViolation),
            None
        );
    }
}
