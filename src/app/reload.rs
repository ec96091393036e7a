//! Reload triggers: file events (notify), a poll of the files' digest, and
//! SIGHUP. File events make an edit live within milliseconds; the digest poll
//! stays because Kubernetes ConfigMap updates arrive as an atomic symlink swap
//! of the mounted directory, which inotify on the directory does not always
//! report, and because a watcher can fail to start (inotify limits). The poll
//! reads and hashes the files only when their metadata moved (`loader::fingerprint`).
//! `POST /reload` on the ops listener is the fourth trigger (ops.rs).

use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::authz::loader::{self, Fingerprint};
use crate::state::AppState;

/// How often the policy files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Editors write a file in several steps (truncate, write, rename); events
/// closer together than this are taken as one change.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watch the policy and schema directories; events are sent on the channel.
/// `None` when the platform watcher cannot start: the poll still catches changes.
fn file_watcher(state: &AppState, tx: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            if !e.kind.is_access() {
                // A full channel already holds a wake-up; dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; relying on the digest poll");
            return None;
        }
    };
    let source = state.policies.source();
    for dir in [&source.policies_dir, &source.schema_dir] {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on the digest poll");
        }
    }
    Some(watcher)
}

/// Reload when the files' digest differs from the last one seen. Both the
/// watcher and the poll go through here, so one change reloads once. False
/// when the files could not be read (nothing was compared).
async fn reload_if_changed(state: &Arc<AppState>, last_seen: &mut String, why: &str) -> bool {
    let src = state.policies.source().clone();
    let digest = tokio::task::spawn_blocking(move || loader::digest(&src)).await;
    let Ok(Ok(digest)) = digest else { return false };
    // A set already live (loaded by `POST /reload` or SIGHUP) needs no second load.
    if digest == state.policies.current().digest {
        *last_seen = digest;
        return true;
    }
    if digest != *last_seen {
        tracing::info!(trigger = why, "policy files changed: reloading");
        // Remember what was seen even if it fails to load, so a broken file is
        // reported once, not on every tick.
        *last_seen = digest;
        let _ = state.reload();
    }
    true
}

/// The poll: compare the digest only when the files' metadata moved since
/// the last comparison (or is too fresh to prove anything).
async fn poll(
    state: &Arc<AppState>,
    last_seen: &mut String,
    compared_at: &mut Option<Fingerprint>,
) {
    let src = state.policies.source().clone();
    // Taken before the digest, so a write racing the comparison moves the
    // next fingerprint and is compared then.
    let stamp = tokio::task::spawn_blocking(move || loader::fingerprint(&src))
        .await
        .ok()
        .and_then(Result::ok);
    let unchanged = stamp
        .as_ref()
        .is_some_and(|s| s.settled() && compared_at.as_ref() == Some(s));
    if !unchanged && reload_if_changed(state, last_seen, "digest poll").await {
        *compared_at = stamp;
    }
}

pub async fn watch(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let (tx, mut events) = mpsc::channel::<()>(1);
    // Kept alive for the whole loop: dropping the watcher stops the events.
    let _watcher = file_watcher(&state, tx);
    let mut last_seen = state.policies.current().digest.clone();
    let mut compared_at = None;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = stop.changed() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading policies");
                let _ = state.reload();
                last_seen = state.policies.current().digest.clone();
            }
            Some(()) = events.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
                let _ = reload_if_changed(&state, &mut last_seen, "file event").await;
            }
            _ = tick.tick() => poll(&state, &mut last_seen, &mut compared_at).await,
        }
    }
}
