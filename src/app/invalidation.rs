//! Following a shared store's change announcements: every replica drops the
//! cache entries a change made anywhere affects (its own writes come back too,
//! harmlessly: they were already dropped locally).
//!
//! Fail safe in both directions of doubt: a lagging consumer (announcements
//! overflowed the buffer) and a re-subscribed listener (announcements may have
//! been missed while it was away) clear the whole cache. What a lost
//! announcement can cost is bounded by the cache TTL.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::authn::cache::PrincipalCache;
use crate::metrics::Metrics;
use crate::store::Change;

/// Apply announcements until shutdown or until the store goes away.
pub async fn follow(
    cache: PrincipalCache,
    metrics: Arc<Metrics>,
    mut changes: broadcast::Receiver<Change>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            received = changes.recv() => match received {
                Ok(change) => {
                    metrics.store_notifications.inc();
                    if apply(&cache, &change) {
                        metrics.cache_resyncs.inc();
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind the store's change announcements; clearing the cache");
                    cache.clear();
                    metrics.cache_resyncs.inc();
                }
                Err(RecvError::Closed) => break,
            },
            _ = stop.changed() => break,
        }
    }
}

/// Drop what `change` affects; true when that was everything.
fn apply(cache: &PrincipalCache, change: &Change) -> bool {
    match change {
        Change::User(id) => cache.invalidate_user(id),
        Change::OrgKeys(_) => cache.invalidate_keys(),
        // Revocations are not cached: every revocable playback token is checked
        // against the store, so there is nothing to drop.
        Change::PlaybackRevoked(_) => {}
        Change::Resync => {
            tracing::info!("store changes may have been missed; clearing the cache");
            cache.clear();
            return true;
        }
    }
    false
}
