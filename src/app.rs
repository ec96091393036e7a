//! Building the application state, binding the listeners, and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::authn::cache::PrincipalCache;
use crate::authn::principal::Caller;
use crate::authn::token::TokenSettings;
use crate::authz::entities::RequestFacts;
use crate::authz::routes::Route;
use crate::authz::{LoadError, Outcome, PolicySource, PolicyStore};
use crate::config::Settings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::store::{self, SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("policies: {0}")]
    Policies(#[from] LoadError),
    #[error("shadow policies: {0}")]
    ShadowPolicies(LoadError),
    #[error("store `{location}`: {source}")]
    Store {
        location: String,
        source: StoreError,
    },
    #[error("cannot bind `{addr}` ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream: {0}")]
    Upstream(ApiError),
}

pub struct AppState {
    pub settings: Settings,
    pub policies: Arc<PolicyStore>,
    /// Candidate policies evaluated beside the live set; never decides.
    pub shadow: Option<Arc<PolicyStore>>,
    pub store: SharedStore,
    pub cache: PrincipalCache,
    pub tokens: TokenSettings,
    pub upstream: Option<Upstream>,
    pub metrics: Metrics,
    pub login_throttle: crate::api::users::LoginThrottle,
    ready: AtomicBool,
    request_seq: AtomicU64,
    request_prefix: u32,
    /// The last reload error, for `/status`.
    pub last_reload_error: std::sync::Mutex<Option<String>>,
}

impl AppState {
    /// Build the state: load (and strictly validate) policies, open the store.
    pub async fn build(settings: Settings) -> Result<Arc<Self>, StartError> {
        let policies = Arc::new(PolicyStore::open(settings.policy_source())?);
        let shadow = match &settings.shadow_policies_dir {
            Some(dir) => Some(Arc::new(
                PolicyStore::open(PolicySource {
                    policies_dir: dir.clone(),
                    schema_dir: settings.schema_dir.clone(),
                })
                .map_err(StartError::ShadowPolicies)?,
            )),
            None => None,
        };
        let store = store::open(&settings.store)
            .await
            .map_err(|source| StartError::Store {
                location: redact(&settings.store),
                source,
            })?;
        Self::with_parts(settings, policies, shadow, store)
    }

    pub fn with_parts(
        settings: Settings,
        policies: Arc<PolicyStore>,
        shadow: Option<Arc<PolicyStore>>,
        store: SharedStore,
    ) -> Result<Arc<Self>, StartError> {
        let master: Arc<[u8]> = Arc::from(settings.master_secret.as_slice());
        let cache = PrincipalCache::new(store.clone(), master, settings.cache_settings());
        let upstream = match &settings.upstream {
            Some(u) => {
                Some(Upstream::new(u, settings.upstream_timeout).map_err(StartError::Upstream)?)
            }
            None => None,
        };
        let metrics = Metrics::new();
        metrics
            .policy_version
            .set(policies.current().version as i64);
        Ok(Arc::new(AppState {
            tokens: settings.token_settings(),
            settings,
            policies,
            shadow,
            store,
            cache,
            upstream,
            metrics,
            login_throttle: Default::default(),
            ready: AtomicBool::new(false),
            request_seq: AtomicU64::new(0),
            request_prefix: rand::random(),
            last_reload_error: std::sync::Mutex::new(None),
        }))
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

    /// Evaluate the shadow set (if any) and count a disagreement with the live outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn shadow_compare(
        &self,
        caller: &Caller,
        route: &Route,
        resource_id: &str,
        org: &str,
        facts: &RequestFacts<'_>,
        live: &Outcome,
        request_id: &HeaderValue,
    ) {
        let Some(shadow) = &self.shadow else { return };
        let snapshot = shadow.current();
        if snapshot.action(&route.action).is_none() {
            self.metrics.shadow_disagreements.inc();
            tracing::warn!(action = %route.action, "shadow set lacks the route's action");
            return;
        }
        // Decided exactly as the live set is, with the shadow snapshot's own
        // decision cache, so shadow mode does not double the evaluation cost.
        let candidate = crate::authz::decide::decide_action(
            &snapshot,
            caller,
            &route.action,
            &route.resource_type,
            resource_id,
            org,
            facts,
        );
        if candidate.allowed != live.allowed {
            self.metrics.shadow_disagreements.inc();
            tracing::warn!(
                request_id = request_id.to_str().unwrap_or(""),
                route = %format_args!("{} {}", route.method, route.template),
                action = %route.action,
                principal = %caller.actor(),
                live = if live.allowed { "allow" } else { "deny" },
                live_policies = ?live.policies,
                shadow = if candidate.allowed { "allow" } else { "deny" },
                shadow_policies = ?candidate.policies,
                shadow_errors = ?candidate.errors,
                "shadow disagreement"
            );
        }
    }
}

/// Hide credentials in a store URL before it reaches a message.
pub fn redact(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => location.to_owned(),
        },
        None => location.to_owned(),
    }
}

/// A running rolegate: its bound addresses and the handle that stops it.
pub struct Running {
    pub data_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, drain in-flight requests within the grace period, and return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// A receiver that flips to `true` when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            setting,
            addr,
            source,
        })
}

/// Bind both listeners and start serving. Readiness is set once everything is up.
pub async fn start(state: Arc<AppState>) -> Result<Running, StartError> {
    let data = bind("listen", state.settings.listen).await?;
    let ops = bind("ops_listen", state.settings.ops_listen).await?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind {
        setting: "listen",
        addr: state.settings.listen,
        source,
    })?;
    let ops_addr = ops.local_addr().map_err(|source| StartError::Bind {
        setting: "ops_listen",
        addr: state.settings.ops_listen,
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let s = state.clone();
    tasks.push(tokio::spawn(serve_data(s, data, rx.clone())));
    let s = state.clone();
    tasks.push(tokio::spawn(crate::ops::serve(s, ops, rx.clone())));
    let s = state.clone();
    tasks.push(tokio::spawn(crate::reload::watch(s, rx.clone())));
    if let Some(changes) = state.store.subscribe() {
        let s = state.clone();
        tasks.push(tokio::spawn(crate::invalidation::follow(
            s,
            changes,
            rx.clone(),
        )));
    }

    if state.settings.passthrough {
        tracing::warn!(
            "passthrough is on: every request is forwarded WITHOUT authorization (benchmarks only)"
        );
    }
    state.set_ready(true);
    tracing::info!(
        data = %data_addr,
        ops = %ops_addr,
        store = state.store.kind(),
        policy_version = state.policies.current().version,
        "rolegate ready"
    );
    Ok(Running {
        data_addr,
        ops_addr,
        state,
        shutdown: tx,
        tasks,
    })
}

/// Header-read timeout: a client that has not sent its headers by then is cut
/// off (slowloris); hyper only enforces it with a timer configured.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (HTTP/1 read buffer); bigger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    builder
}

async fn serve_data(state: Arc<AppState>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let builder = http_builder();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let s = state.clone();
                let svc = service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, std::convert::Infallible>(crate::proxy::handle(s, req, peer).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    state.set_ready(false);
    let drain = state.settings.drain;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained all connections"),
        _ = tokio::time::sleep(drain) => tracing::warn!(seconds = drain.as_secs(), "drain period over; closing remaining connections"),
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
