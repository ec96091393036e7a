//! The components every front door shares: settings, the policy store, the
//! store and its principal cache, metrics, readiness, request ids, and the
//! [`Decider`] built from them. The application layer (`app`) builds it once
//! and hands it to the listeners.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http::HeaderValue;

use crate::authn::cache::PrincipalCache;
use crate::authn::password::LoginThrottle;
use crate::authn::token::TokenSettings;
use crate::authz::{LoadError, PolicyStore};
use crate::config::Settings;
use crate::decision::{Decider, DeciderParts};
use crate::metrics::Metrics;
use crate::store::SharedStore;

pub struct AppState {
    pub settings: Settings,
    pub policies: Arc<PolicyStore>,
    /// Candidate policies evaluated beside the live set; never decides.
    pub shadow: Option<Arc<PolicyStore>>,
    pub store: SharedStore,
    pub cache: PrincipalCache,
    pub tokens: TokenSettings,
    pub metrics: Arc<Metrics>,
    /// The one question every front door asks (see `decision`).
    pub decider: Decider,
    pub login_throttle: LoginThrottle,
    ready: AtomicBool,
    request_seq: AtomicU64,
    request_prefix: u32,
    /// Where this replica is in the store's change log (`app::follower`).
    pub follower: Arc<crate::store::changelog::FollowerProgress>,
    /// The last reload error, for `/status`.
    pub last_reload_error: std::sync::Mutex<Option<String>>,
    /// OpenTelemetry traces; `None` when `otel_endpoint` is not set, and
    /// then nothing on the request path builds a span.
    pub otel: Option<crate::otel::Tracing>,
}

impl AppState {
    /// Wire the shared components around loaded policies and an open store.
    pub fn new(
        settings: Settings,
        policies: Arc<PolicyStore>,
        shadow: Option<Arc<PolicyStore>>,
        store: SharedStore,
        otel: Option<crate::otel::Tracing>,
    ) -> Arc<Self> {
        let master: Arc<[u8]> = Arc::from(settings.master_secret.as_slice());
        let cache = PrincipalCache::new(store.clone(), master, settings.cache_settings());
        let metrics = Arc::new(Metrics::new());
        metrics
            .policy_version
            .set(policies.current().version as i64);
        let tokens = settings.token_settings();
        let decider = Decider::new(DeciderParts {
            policies: policies.clone(),
            shadow: shadow.clone(),
            store: store.clone(),
            cache: cache.clone(),
            tokens: tokens.clone(),
            metrics: metrics.clone(),
            passthrough: settings.passthrough,
        });
        Arc::new(AppState {
            tokens,
            settings,
            policies,
            shadow,
            store,
            cache,
            metrics,
            decider,
            login_throttle: LoginThrottle::default(),
            ready: AtomicBool::new(false),
            request_seq: AtomicU64::new(0),
            request_prefix: rand::random(),
            follower: Arc::default(),
            last_reload_error: std::sync::Mutex::new(None),
            otel,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// A request id unique across restarts: a random per-process prefix and a counter.
    pub fn next_request_id(&self) -> HeaderValue {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        // 8 hex digits of the per-process prefix, then 12 of the sequence;
        // written by hand because `format!` showed up in the request profile.
        let mut id = [0u8; 20];
        hex_into(&mut id[..8], u64::from(self.request_prefix));
        hex_into(&mut id[8..], n);
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
    }

    /// Reload the live (and shadow) policy sets; the old set stays on any error.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let result = self.policies.reload();
        match &result {
            Ok(v) => {
                self.metrics.reloads.inc();
                self.metrics.policy_version.set(*v as i64);
                if let Ok(mut e) = self.last_reload_error.lock() {
                    *e = None;
                }
                tracing::info!(version = v, digest = %self.policies.current().digest, "policies reloaded");
            }
            Err(e) => {
                self.metrics.reload_failures.inc();
                if let Ok(mut last) = self.last_reload_error.lock() {
                    *last = Some(e.to_string());
                }
                tracing::error!(error = %e, "policy reload refused; the previous set stays live");
            }
        }
        if let Some(shadow) = &self.shadow {
            if let Err(e) = shadow.reload() {
                self.metrics.shadow_reload_failures.inc();
                tracing::warn!(error = %e, "shadow policy reload refused");
            }
        }
        result
    }
}

/// Write the low `out.len()` hex digits of `value` into `out`, most significant first.
fn hex_into(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::hex_into;

    #[test]
    fn request_ids_are_fixed_width_hex() {
        let mut id = [0u8; 20];
        hex_into(&mut id[..8], 0xdead_beef);
        hex_into(&mut id[8..], 0x1_0000_0000_002a);
        // the sequence keeps its low 48 bits (12 digits)
        assert_eq!(&id, b"deadbeef00000000002a");
        hex_into(&mut id[..8], 0);
        assert_eq!(&id[..8], b"00000000");
    }
}
