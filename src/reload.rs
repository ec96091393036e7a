//! Reload triggers: SIGHUP, and a poll of the files' digest. Polling the digest
//! (rather than trusting file events alone) catches Kubernetes ConfigMap
//! updates, which arrive as an atomic symlink swap of the mounted directory.
//! `POST /reload` on the ops listener is the third trigger (ops.rs).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::AppState;
use crate::policy::loader;

/// How often the policy files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let source = state.policies.source().clone();
    let mut last_seen = state.policies.current().digest.clone();
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
            _ = tick.tick() => {
                let src = source.clone();
                let digest = tokio::task::spawn_blocking(move || loader::digest(&src)).await;
                let Ok(Ok(digest)) = digest else { continue };
                if digest != last_seen {
                    tracing::info!("policy files changed: reloading");
                    // Remember what was seen even if it fails to load, so a broken
                    // file is reported once, not every second.
                    last_seen = digest;
                    let _ = state.reload();
                }
            }
        }
    }
}
