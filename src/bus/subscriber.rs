//! A replica's subscription: applies each change event to the engine's
//! entity store, notices what it may have missed, and tells the cache
//! whether the bus is there (entities are kept for `cache.ttl_without_bus`
//! while it is not).

use std::sync::Arc;
use std::time::Duration;

use cedar_policy::EntityUid;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::event::{ChangeEvent, Changed, Continuity, Revisions};
use super::{BusError, BusSettings, connect, options};
use crate::engine::Engine;
use crate::telemetry::metrics;

/// Most events applied together: those already waiting when one arrives
/// are read at once and applied as one invalidation, so a storm costs one
/// pass over the cache per batch, not per event.
const BATCH: usize = 1024;

/// What the connection's callback reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Link {
    connected: bool,
    /// slow-consumer notices so far: the client dropped messages
    dropped: u64,
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
        .event_callback(move |event| {
            let link = link.clone();
            async move {
                link.send_modify(|state| match event {
                    async_nats::Event::Connected => state.connected = true,
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        state.connected = false;
                    }
                    async_nats::Event::SlowConsumer(_) => state.dropped += 1,
                    _ => {}
                });
            }
        });
    let client = connect(&url, options).await?;
    tokio::spawn(run(client, settings.subject, engine, links));
    Ok(())
}

async fn run(
    client: async_nats::Client,
    subject: String,
    engine: Arc<Engine>,
    mut links: watch::Receiver<Link>,
) {
    let mut revisions = Revisions::default();
    let mut seen = Link::default();
    let mut ever_connected = false;
    let mut subscription = None;
    loop {
        let Some(messages) = subscription.as_mut() else {
            match client.subscribe(subject.clone()).await {
                Ok(subscriber) => subscription = Some(subscriber),
                Err(error) => {
                    tracing::warn!(%error, %subject, "cannot subscribe to entity change events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        tokio::select! {
            message = messages.next() => match message {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        // Only what is already waiting: never wait here.
                        match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                            Ok(Some(more)) => batch.push(more),
                            _ => break,
                        }
                    }
                    apply(&engine, &mut revisions, &batch).await;
                }
                None => {
                    // The subscription ended: whatever came meanwhile is lost.
                    tracing::warn!(%subject, "entity change subscription lost; forgetting all cached entities");
                    forget_all(&engine, &mut revisions, "subscription_lost");
                    subscription = None;
                }
            },
            changed = links.changed() => {
                if changed.is_err() {
                    return; // the client is gone
                }
                let now = *links.borrow_and_update();
                if now.connected != seen.connected {
                    engine.store().set_bus_connected(now.connected);
                    metrics().bus_connected.set(i64::from(now.connected));
                    if now.connected {
                        tracing::info!(%subject, "entity change bus connected");
                        if ever_connected {
                            // Events published while away were not seen:
                            // the cache forgot everything on connecting
                            // (`set_bus_connected`); the count starts over.
                            revisions.reset();
                            metrics().bus_gap("reconnect");
                        }
                        ever_connected = true;
                    } else {
                        tracing::warn!(
                            "entity change bus disconnected: entities are now kept for cache.ttl_without_bus only"
                        );
                    }
                }
                if now.dropped > seen.dropped {
                    tracing::warn!("entity change events dropped (slow consumer); forgetting all cached entities");
                    forget_all(&engine, &mut revisions, "slow_consumer");
                }
                seen = now;
            }
        }
    }
}

/// Applies a batch of events as one invalidation.
async fn apply(engine: &Engine, revisions: &mut Revisions, batch: &[async_nats::Message]) {
    let mut all = false;
    let mut uids: Vec<EntityUid> = Vec::new();
    for message in batch {
        metrics().bus_events_received.inc();
        let event = match ChangeEvent::parse(&message.payload) {
            Ok(event) => event,
            Err(ignored) => {
                metrics().bus_ignored(ignored.label());
                continue;
            }
        };
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
            Changed::Uids(named) => {
                let before = uids.len();
                uids.extend(
                    named
                        .iter()
                        .filter_map(|uid| engine.parse_uid(&uid.type_name, &uid.id)),
                );
                if uids.len() == before {
                    // Every type unknown to this schema: nothing to forget.
                    metrics().bus_ignored("unknown_type");
                    continue;
                }
            }
        }
        metrics().bus_events_applied.inc();
        metrics().bus_event_seen();
    }
    if all {
        engine.store().invalidate_all();
    } else if !uids.is_empty() {
        engine.store().changed(&uids).await;
    }
}

fn forget_all(engine: &Engine, revisions: &mut Revisions, cause: &'static str) {
    engine.store().invalidate_all();
    revisions.reset();
    metrics().bus_gap(cause);
}
