//! Running a check on a timer for as long as its target lives: the watchers
//! of the entities file, the TLS certificate and the policy files.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// Calls `tick` on `target` every `interval`, until `target` is dropped.
/// Needs a tokio runtime.
pub fn every<T: Send + Sync + 'static>(
    target: &Arc<T>,
    interval: Duration,
    tick: impl Fn(&T) + Send + 'static,
) {
    let target: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(target) = target.upgrade() else {
                break;
            };
            tick(&target);
        }
    });
}
