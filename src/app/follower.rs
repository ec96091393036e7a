//! Following the store's change log: every replica reads the entries written
//! since its position, in order, and drops the cache entries each affects,
//! whichever process made the change (an API call through another replica,
//! `rolegate user` on the same file, SQL by hand).
//!
//! When it reads: every `change_poll_ms`, and at once when the store rings its
//! doorbell (PostgreSQL's NOTIFY). Correctness rests on the log alone: a missed
//! doorbell costs at most one poll interval.
//!
//! Fail safe in both directions of doubt:
//! - entries pruned before this replica read them (it was stopped or cut off
//!   longer than the retention): the whole cache is cleared and the follower
//!   continues from the head;
//! - no confirmed read for longer than `max_change_lag_secs` (the store is
//!   unreachable, the follower is stuck): the cache is cleared, and cleared
//!   again at every poll until it is caught up, so no cached answer older
//!   than the bound is used; lookups then read the store, and fail (503) if
//!   it cannot answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use crate::authn::cache::PrincipalCache;
use crate::clock::unix_now_ms;
use crate::metrics::Metrics;
use crate::store::changelog::{self, FollowerProgress, HEARTBEAT_EVERY, PAGE};
use crate::store::{Change, SharedStore};

/// How often old log entries and long-gone replicas are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct Follower {
    pub store: SharedStore,
    pub cache: PrincipalCache,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<FollowerProgress>,
    pub replica_id: String,
    pub poll: Duration,
    pub max_lag: Duration,
    /// Live (upgraded) connections, cut when a change revokes their credential.
    pub live: Option<Arc<crate::proxy::live::Live>>,
}

impl Follower {
    /// Take the log's current head as the starting position (the cache is
    /// empty, so nothing before it concerns this replica) and announce this
    /// replica. Called before the listeners serve.
    pub async fn start_position(&self) -> i64 {
        self.progress.set_replica_id(self.replica_id.clone());
        let now = unix_now_ms();
        match changelog::head(&self.store).await {
            Ok(head) => {
                self.progress.record(head, head, now);
                self.beat(head, now).await;
                head
            }
            Err(e) => {
                // Start from the beginning: applying old entries to an empty
                // cache is harmless, and the lag rule covers the store being away.
                tracing::warn!(error = %e, "cannot read the change log's head; following from the start");
                0
            }
        }
    }

    /// Follow the log until `stop` flips.
    pub async fn run(self, mut applied: i64, mut stop: watch::Receiver<bool>) {
        let mut doorbell = self.store.subscribe();
        let mut last_beat = Instant::now();
        let mut last_prune: Option<Instant> = None;
        let mut warned = false;
        let mut stale = false;
        loop {
            match self.read(applied).await {
                Ok((position, advanced)) => {
                    applied = position;
                    warned = false;
                    if advanced || last_beat.elapsed() >= HEARTBEAT_EVERY {
                        self.beat(applied, unix_now_ms()).await;
                        last_beat = Instant::now();
                    }
                }
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot read the change log; retrying every poll");
                }
                Err(_) => {}
            }
            stale = self.enforce_lag_bound(stale);
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                if let Err(e) = self.store.prune_changes(unix_now_ms()).await {
                    tracing::debug!(error = %e, "change log pruning failed; retried later");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                rung = ring(&mut doorbell) => if rung { self.metrics.store_notifications.inc(); },
                _ = self.progress.nudged() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Read and apply everything after `applied`; the new position, and
    /// whether it moved.
    async fn read(&self, applied: i64) -> Result<(i64, bool), crate::store::StoreError> {
        let mut position = applied;
        loop {
            let page = self.store.changes_after(position, PAGE).await?;
            if page.missed_after(position) {
                tracing::warn!(
                    position,
                    oldest = ?page.oldest,
                    "the change log was pruned past this replica's position; clearing the cache"
                );
                self.cache.clear();
                self.metrics.cache_resyncs.inc();
                self.cut_live(&Change::Resync);
                position = page.head;
            } else {
                for entry in &page.entries {
                    self.apply(&entry.change);
                    position = entry.seq;
                }
                self.metrics
                    .changes_applied
                    .inc_by(page.entries.len() as u64);
            }
            let full = page.entries.len() >= PAGE as usize;
            let head = page.head.max(position);
            self.progress.record(position, head, unix_now_ms());
            self.metrics.change_log_applied.set(position);
            if !full {
                return Ok((position, position != applied));
            }
        }
    }

    /// Drop what `change` affects.
    fn apply(&self, change: &Change) {
        match change {
            Change::User(id) => self.cache.invalidate_user(id),
            Change::OrgKeys(_) => self.cache.invalidate_keys(),
            // Revocations are not cached: every revocable playback token is
            // checked against the store, so there is nothing to drop.
            Change::PlaybackRevoked(_) => {}
            // An entry this build cannot read: drop everything (fail safe).
            Change::Resync => self.cache.clear(),
        }
        // After the cache: a decision that read the stale entry then sees
        // the registry's newer epoch (`proxy::live`).
        self.cut_live(change);
    }

    fn cut_live(&self, change: &Change) {
        if let Some(live) = &self.live {
            live.apply(change);
        }
    }

    /// Clear the cache while the lag is past the bound; whether it is.
    fn enforce_lag_bound(&self, was_stale: bool) -> bool {
        let lag_ms = self.progress.lag_ms(unix_now_ms());
        self.metrics
            .change_log_lag_seconds
            .set(lag_ms as f64 / 1000.0);
        let stale = lag_ms > i64::try_from(self.max_lag.as_millis()).unwrap_or(i64::MAX);
        if stale {
            if !was_stale {
                tracing::warn!(
                    lag_ms,
                    "behind the change log for longer than max_change_lag_secs; not answering from the cache"
                );
            }
            self.cache.clear();
            self.metrics.stale_cache_clears.inc();
        } else if was_stale {
            tracing::info!("caught up with the change log; the cache is used again");
        }
        stale
    }

    async fn beat(&self, applied: i64, now_ms: i64) {
        if let Err(e) = self
            .store
            .heartbeat(&self.replica_id, applied, now_ms)
            .await
        {
            tracing::debug!(error = %e, "heartbeat not recorded; retried with the next read");
        }
    }
}

/// Wait for the doorbell; true when it rang, false when there is none (or it
/// is gone), in which case this never returns and the poll decides.
async fn ring(doorbell: &mut Option<broadcast::Receiver<Change>>) -> bool {
    match doorbell {
        Some(rx) => match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => {
                *doorbell = None;
                false
            }
        },
        None => std::future::pending().await,
    }
}
