//! The change log's types and the rules every store and follower share.
//!
//! Each credential-affecting write appends one entry, with a sequence number,
//! in the same transaction as the change, so an entry exists exactly when its
//! change committed. Sequence numbers grow in commit order: the embedded store
//! has one writer, and PostgreSQL writers take one transaction-scoped advisory
//! lock before appending (credential changes are admin actions: serialising
//! them costs nothing measurable, and it is what lets a follower read
//! "everything after N" without ever skipping a late commit).
//!
//! Retention: entries older than [`RETENTION_MS`] are pruned, except the
//! newest. A follower whose position is older than the oldest entry kept may
//! have missed changes: it clears its cache and continues from the head.
//!
//! Receipts: every replica records a heartbeat with the position it has
//! applied. A replica is *live* when its heartbeat is younger than
//! [`LIVE_MS`]; a receipt waits until every live replica has applied a change
//! (or a timeout passes) and names those that have not.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Change, SharedStore, StoreError};

/// How long log entries are kept: long enough for a replica that was stopped
/// or cut off for a while to catch up entry by entry instead of resyncing.
pub const RETENTION_MS: i64 = 60 * 60 * 1000;
/// A replica writes a heartbeat after applying entries, and at least this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A replica is live while its last heartbeat is younger than this (three
/// missed heartbeats).
pub const LIVE_MS: i64 = 15_000;
/// Heartbeats of replicas gone longer than this are dropped.
pub const FORGET_REPLICA_MS: i64 = 24 * 60 * 60 * 1000;
/// How many entries a follower reads at once.
pub const PAGE: u32 = 512;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub seq: i64,
    pub change: Change,
    pub at_ms: i64,
}

/// What one read of the log returned.
#[derive(Debug, Clone, Default)]
pub struct ChangePage {
    /// Entries after the position asked for, in sequence order.
    pub entries: Vec<LoggedChange>,
    /// The oldest sequence number still kept (`None`: the log is empty).
    pub oldest: Option<i64>,
    /// The newest sequence number (0 when the log is empty).
    pub head: i64,
}

impl ChangePage {
    /// Whether entries after `applied` may have been pruned before the
    /// follower read them: then it must clear everything it caches.
    pub fn missed_after(&self, applied: i64) -> bool {
        matches!(self.oldest, Some(oldest) if oldest > applied + 1)
    }
}

/// A replica's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaBeat {
    pub id: String,
    pub applied: i64,
    pub seen_at_ms: i64,
}

/// How a change reached the replicas: which live replicas applied it in time.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    /// The log position that had to be applied.
    pub seq: i64,
    pub acknowledged: Vec<String>,
    /// Live replicas that had not applied it when the wait ended.
    pub pending: Vec<String>,
    pub elapsed_ms: u64,
    /// Every live replica applied it.
    pub complete: bool,
}

/// Where this replica's follower is, for `/status`, the lag gauge and the
/// stale-cache rule.
#[derive(Default)]
pub struct FollowerProgress {
    replica_id: std::sync::OnceLock<String>,
    /// Wakes the follower for a change this process just wrote.
    nudge: tokio::sync::Notify,
    applied: AtomicI64,
    head: AtomicI64,
    caught_up_at_ms: AtomicI64,
}

impl FollowerProgress {
    /// This replica's name in heartbeats, fixed once its listener is bound.
    pub fn replica_id(&self) -> Option<&str> {
        self.replica_id.get().map(String::as_str)
    }

    pub fn set_replica_id(&self, id: String) {
        let _ = self.replica_id.set(id);
    }

    /// Ask the follower to read the log now (this process wrote to it).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Resolves when [`Self::nudge`] was called.
    pub async fn nudged(&self) {
        self.nudge.notified().await;
    }

    /// The log position whose changes this replica has applied.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The newest position seen in the log.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    /// Record a read of the log: applied up to `applied`, the log ends at
    /// `head`; caught up when the two meet.
    pub fn record(&self, applied: i64, head: i64, now_ms: i64) {
        self.applied.store(applied, Ordering::Release);
        self.head.store(head, Ordering::Release);
        if applied >= head {
            self.caught_up_at_ms.store(now_ms, Ordering::Release);
        }
    }

    /// Milliseconds since the follower last confirmed it had applied the
    /// whole log (since start-up, before its first read).
    pub fn lag_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.caught_up_at_ms.load(Ordering::Acquire)).max(0)
    }
}

/// The current end of the log (0 when it is empty).
pub async fn head(store: &SharedStore) -> Result<i64, StoreError> {
    Ok(store.changes_after(i64::MAX, 1).await?.head)
}

/// Wait until every live replica has applied `seq`, or `timeout` passes.
/// A replica that stops heartbeating during the wait stops being live and is
/// no longer waited for; one that is live but behind is named in `pending`.
pub async fn wait_for_replicas(
    store: &SharedStore,
    seq: i64,
    timeout: Duration,
) -> Result<Receipt, StoreError> {
    let started = Instant::now();
    let poll = Duration::from_millis(20);
    loop {
        let now_ms = crate::clock::unix_now_ms();
        let live: Vec<ReplicaBeat> = store
            .replicas()
            .await?
            .into_iter()
            .filter(|r| now_ms - r.seen_at_ms < LIVE_MS)
            .collect();
        let (acknowledged, pending): (Vec<_>, Vec<_>) =
            live.into_iter().partition(|r| r.applied >= seq);
        let complete = pending.is_empty();
        if complete || started.elapsed() >= timeout {
            let names = |v: Vec<ReplicaBeat>| {
                let mut n: Vec<String> = v.into_iter().map(|r| r.id).collect();
                n.sort();
                n
            };
            return Ok(Receipt {
                seq,
                acknowledged: names(acknowledged),
                pending: names(pending),
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                complete,
            });
        }
        tokio::time::sleep(poll.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_behind_the_oldest_kept_entry_has_missed_changes() {
        let page = |oldest| ChangePage {
            entries: vec![],
            oldest,
            head: 10,
        };
        assert!(!page(None).missed_after(0));
        assert!(!page(Some(1)).missed_after(0));
        assert!(!page(Some(5)).missed_after(4));
        assert!(!page(Some(5)).missed_after(9));
        assert!(page(Some(6)).missed_after(4));
        assert!(page(Some(2)).missed_after(0));
    }
}
