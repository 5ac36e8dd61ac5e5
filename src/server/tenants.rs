//! What a listener knows of its open connections: whether each has asked
//! anything yet, how many requests it has in flight, when its last one
//! ended; and, at the connection limit, which one has been idle longest
//! and should make way for a new client (as nginx closes idle keep-alive
//! connections when it runs out of connections).
//!
//! Knows no sockets or protocols: the connection acts on what it is told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// What one connection's requests are doing, for its deadlines: whether
/// one has arrived, how many are in flight, when the last one ended; and
/// whether it has been told to make way.
pub(super) struct Activity {
    born: Instant,
    first: Notify,
    asked: AtomicBool,
    /// bytes arrived since the last request ended: the next one's head
    /// begun, on HTTP/1.1
    heard: AtomicBool,
    /// the requests are HTTP/1.1 (bytes between them are a next head)
    http1: AtomicBool,
    in_flight: AtomicUsize,
    /// milliseconds after `born` when the last request ended
    last_ms: AtomicU64,
    evict: Notify,
    evicting: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            born: Instant::now(),
            first: Notify::new(),
            asked: AtomicBool::new(false),
            heard: AtomicBool::new(false),
            http1: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            evict: Notify::new(),
            evicting: AtomicBool::new(false),
        }
    }

    pub(super) fn began(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.asked.store(true, Ordering::Relaxed);
        self.first.notify_one();
    }

    pub(super) fn ended(&self) {
        // Rounded up: the idle deadline never comes before its time.
        let ms =
            u64::try_from(self.born.elapsed().as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.heard.store(false, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request begun, ended when the returned guard is dropped: also
    /// when hyper drops the request unanswered (an HTTP/2 stream reset
    /// while it waits), which would else stay in flight for good, and
    /// the connection never idle.
    pub(super) fn begin(self: Arc<Self>, http1: bool) -> InFlight {
        self.http1.store(http1, Ordering::Relaxed);
        self.began();
        InFlight(self)
    }

    /// Bytes arrived from the client (told by the connection's socket).
    pub(super) fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// Resolves when the first request arrives.
    pub(super) async fn first_request(&self) {
        self.first.notified().await;
    }

    /// When the last request ended.
    fn last_ended(&self) -> Instant {
        self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Since when the connection has been idle: `None` while it has asked
    /// nothing (the first-request deadline bounds it), has a request in
    /// flight, or is already making way.
    fn idle_since(&self) -> Option<Instant> {
        let idle = self.asked.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.evicting.load(Ordering::Relaxed);
        idle.then(|| self.last_ended())
    }

    /// Resolves once the connection has had no request in flight for
    /// `idle`: at that time to the millisecond, when it is idle.
    pub(super) async fn idle_for(&self, idle: Duration) {
        let tick = (idle / 4).max(Duration::from_millis(10));
        loop {
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                let until = self.last_ended() + idle;
                if Instant::now() >= until {
                    return;
                }
                tokio::time::sleep_until(until).await;
            } else {
                // Busy: looked at again a quarter of the limit later; a
                // request ending meanwhile moves the deadline past it.
                tokio::time::sleep(tick).await;
            }
        }
    }

    /// Resolves once `quiet` has passed since `since` and since the last
    /// request ended, with none in flight: a closing connection can then
    /// go without cutting anyone off (an answer that left the handler
    /// within `quiet` may still be being written).
    pub(super) async fn quiet_since(&self, since: Instant, quiet: Duration) {
        tokio::time::sleep_until(since + quiet).await;
        loop {
            if self.in_flight.load(Ordering::Relaxed) == 0 && self.last_ended().elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves when the connection is told to make way.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Tells `close` why the connection should close, once it should:
    /// idle for `idle` (with a request's head begun, too slow with it),
    /// told to make way, or shutting down. Runs as its own task beside the
    /// connection, which aborts it when it ends.
    pub(super) async fn why_close(
        activity: Arc<Self>,
        idle: Duration,
        draining: watch::Receiver<bool>,
        close: tokio::sync::oneshot::Sender<Close>,
    ) {
        let why = tokio::select! {
            () = activity.idle_for(idle) => if activity.heard.load(Ordering::Relaxed)
                && activity.http1.load(Ordering::Relaxed)
            {
                Close::SlowHead
            } else {
                Close::Idle
            },
            () = activity.evicted() => Close::MakeWay,
            () = Self::shutdown_began(draining) => Close::Shutdown,
        };
        let _ = close.send(why);
    }

    /// Resolves once shutdown has begun (or the listener is gone).
    pub(super) async fn shutdown_began(mut draining: watch::Receiver<bool>) {
        let _ = draining.wait_for(|draining| *draining).await;
    }
}

/// A request in flight on a connection ([`Activity::begin`]).
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// Why a connection that has asked something is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    /// no request in flight for the idle timeout, nothing sent since
    Idle,
    /// no request in flight for the idle timeout, the next one's head
    /// begun and not finished (the header read timeout, HTTP/1.1's wait
    /// for the next request, bounds both)
    SlowHead,
    /// at the connection limit, idle longest
    MakeWay,
    /// the listener is shutting down
    Shutdown,
}

impl Close {
    /// What the debug log says.
    pub(super) fn why(self) -> &'static str {
        match self {
            Self::Idle => "connection idle",
            Self::SlowHead => "a request's head not finished in time",
            Self::MakeWay => "at the connection limit, idle longest",
            Self::Shutdown => "shutting down",
        }
    }
}

/// The connections of one listener that hold a permit, so one can be
/// asked to make way.
#[derive(Default)]
pub(super) struct Tenants {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

/// A connection's place among the [`Tenants`], given up when dropped.
pub(super) struct Tenancy {
    tenants: Arc<Tenants>,
    id: u64,
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        self.tenants.open().remove(&self.id);
    }
}

impl Tenants {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // A panic elsewhere leaves the map whole: every change is one call.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `activity`'s connection among those that may make way.
    pub(super) fn register(self: &Arc<Self>, activity: &Arc<Activity>) -> Tenancy {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open().insert(id, Arc::clone(activity));
        Tenancy {
            tenants: Arc::clone(self),
            id,
        }
    }

    /// Tells the connection idle longest to make way; `false` when none is
    /// idle (every one is busy, or has not asked yet).
    pub(super) fn evict_idlest(&self) -> bool {
        let open = self.open();
        let idlest = open
            .values()
            .filter_map(|activity| activity.idle_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        match idlest {
            Some((_, activity)) => {
                activity.evicting.store(true, Ordering::Relaxed);
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked_and_ended(tenants: &Arc<Tenants>, held: &mut Vec<Tenancy>) -> Arc<Activity> {
        let activity = Arc::new(Activity::new());
        activity.began();
        activity.ended();
        held.push(tenants.register(&activity));
        activity
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_idle_longest_makes_way_and_busy_or_new_ones_never_do() {
        let tenants = Arc::new(Tenants::default());
        let mut held = Vec::new();
        let oldest = asked_and_ended(&tenants, &mut held);
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = asked_and_ended(&tenants, &mut held);
        let busy = Arc::new(Activity::new());
        busy.began();
        held.push(tenants.register(&busy));
        let silent = Arc::new(Activity::new());
        held.push(tenants.register(&silent));

        let told = |activity: Arc<Activity>| async move {
            tokio::time::timeout(Duration::from_secs(1), activity.evicted())
                .await
                .is_ok()
        };
        assert!(tenants.evict_idlest());
        assert!(told(Arc::clone(&oldest)).await, "the idlest made way");
        assert!(!told(Arc::clone(&newer)).await, "only the idlest");
        assert!(tenants.evict_idlest(), "the next idlest");
        assert!(told(Arc::clone(&newer)).await, "the next idlest made way");
        assert!(
            !tenants.evict_idlest(),
            "one in flight and one not yet asked stay"
        );
        held.clear();
        assert!(tenants.open().is_empty(), "a closed connection leaves");
    }

    /// The watchdog's answer for one connection: what happened, then the
    /// reason it gave (none within a minute: it is still watching).
    async fn why_closed(
        happen: impl Fn(&Tenants, &Activity, &watch::Sender<bool>),
        after: Duration,
    ) -> Option<Close> {
        let tenants = Arc::new(Tenants::default());
        let mut held = Vec::new();
        let activity = asked_and_ended(&tenants, &mut held);
        let (drain, draining) = watch::channel(false);
        let (close, closing) = tokio::sync::oneshot::channel();
        // Told before the watchdog starts, or after it waits: either way.
        if after.is_zero() {
            happen(&tenants, &activity, &drain);
        }
        let watchdog = tokio::spawn(Activity::why_close(
            Arc::clone(&activity),
            Duration::from_secs(10),
            draining,
            close,
        ));
        if !after.is_zero() {
            tokio::time::sleep(after).await;
            happen(&tenants, &activity, &drain);
        }
        let why = tokio::time::timeout(Duration::from_secs(60), closing).await;
        watchdog.abort();
        why.ok().and_then(Result::ok)
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_gives_each_reason_told_before_or_after_it_waits() {
        for after in [Duration::ZERO, Duration::from_secs(3)] {
            let evicted = why_closed(|tenants, _, _| assert!(tenants.evict_idlest()), after);
            assert_eq!(evicted.await, Some(Close::MakeWay));
            let shut = why_closed(
                |_, _, drain| {
                    drain.send_replace(true);
                },
                after,
            );
            assert_eq!(shut.await, Some(Close::Shutdown));
        }
        // Nothing told: idle once 10 s have passed with nothing in flight.
        assert_eq!(
            why_closed(|_, _, _| {}, Duration::ZERO).await,
            Some(Close::Idle)
        );
        // Bytes heard since the last answer, before or while it waits: a
        // head begun and not finished, too slow.
        let http1_heard = |activity: &Activity| {
            activity.http1.store(true, Ordering::Relaxed);
            activity.heard();
        };
        for after in [Duration::ZERO, Duration::from_secs(3)] {
            let slow = why_closed(|_, activity, _| http1_heard(activity), after);
            assert_eq!(slow.await, Some(Close::SlowHead));
        }
        // On HTTP/2, bytes between requests are frames (a PING, a
        // WINDOW_UPDATE), not a head: idle.
        let frames = why_closed(|_, activity, _| activity.heard(), Duration::ZERO);
        assert_eq!(frames.await, Some(Close::Idle));
        // Heard, then answered: the bytes were that request's.
        let answered = why_closed(
            |_, activity, _| {
                http1_heard(activity);
                activity.began();
                activity.ended();
            },
            Duration::from_secs(3),
        );
        assert_eq!(answered.await, Some(Close::Idle));
        // A request in flight from then on: never idle, nothing said.
        let busy = why_closed(|_, activity, _| activity.began(), Duration::from_secs(3));
        assert_eq!(busy.await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_answer_and_never_while_one_is_in_flight() {
        let activity = Activity::new();
        activity.began();
        let idle = tokio::time::timeout(
            Duration::from_secs(30),
            activity.idle_for(Duration::from_secs(10)),
        );
        assert!(idle.await.is_err(), "in flight: never idle");
        activity.ended();
        let started = Instant::now();
        activity.idle_for(Duration::from_secs(10)).await;
        let waited = started.elapsed();
        // At the limit to the millisecond, not a check's tick later.
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert!(waited <= Duration::from_millis(10_001), "{waited:?}");
    }
}
