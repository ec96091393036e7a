//! The application layer: builds the shared state from settings, binds the
//! listeners (data, ops, and ext_authz and AuthZEN when set), starts the
//! background work (policy reload, following the store's changes), and
//! drains on shutdown. It wires the front doors together; none of them knows
//! about another.

pub mod allocator;
mod data;
pub mod follower;
mod listener;
pub mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::state::AppState;

use crate::authz::{LoadError, PolicySource, PolicyStore};
use crate::config::Settings;
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::proxy::Proxy;
use crate::store::{self, StoreError};

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
    Upstream(UpstreamError),
    #[error("setting `{setting}`: {0}", setting = .0.setting)]
    Tls(crate::tls::TlsError),
    /// A route the dashboard's prefix would hide: it could never be reached.
    #[error(
        "dashboard_prefix `{prefix}` hides the route `{route}`: move the dashboard or the route"
    )]
    DashboardHidesRoute { prefix: String, route: String },
    #[error("otel_endpoint: {0}")]
    Otel(#[from] crate::otel::TraceError),
}

/// Build the state: load (and strictly validate) policies, open the store.
pub async fn build(settings: Settings) -> Result<Arc<AppState>, StartError> {
    let policies = Arc::new(PolicyStore::open(settings.policy_source())?);
    if let Some(prefix) = &settings.dashboard_prefix {
        if crate::dashboard::owns(prefix, crate::forward_auth::PATH) {
            return Err(StartError::DashboardHidesRoute {
                prefix: prefix.clone(),
                route: format!("forward-auth {}", crate::forward_auth::PATH),
            });
        }
        let current = policies.current();
        if let Some(r) = current
            .routes
            .routes()
            .iter()
            .find(|r| crate::dashboard::owns(prefix, &r.template))
        {
            return Err(StartError::DashboardHidesRoute {
                prefix: prefix.clone(),
                route: format!("{} {}", r.method, r.template),
            });
        }
    }
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
            location: store::redact(&settings.store),
            source,
        })?;
    let otel = match &settings.otel {
        Some(t) => Some(crate::otel::Tracing::start(t)?),
        None => None,
    };
    Ok(AppState::new(settings, policies, shadow, store, otel))
}

/// A running rolegate: its bound addresses and the handle that stops it.
pub struct Running {
    pub data_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    /// The ext_authz gRPC listener, when `ext_authz_listen` is set.
    pub ext_authz_addr: Option<SocketAddr>,
    /// The AuthZEN listener's address, when `authzen_listen` is set.
    pub authzen_addr: Option<SocketAddr>,
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
        // The drained requests' spans leave last.
        if let Some(otel) = &self.state.otel {
            otel.shutdown().await;
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
        if let Some(otel) = &self.state.otel {
            otel.shutdown().await;
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

/// How long the ops listener waits for its own open connections on shutdown.
const OPS_DRAIN: Duration = Duration::from_secs(1);
/// Probes, scrapes and reloads: a handful of clients.
const OPS_MAX_CONNECTIONS: usize = 64;
/// Policy enforcement points keep a pool of connections each; a few gateways.
const AUTHZEN_MAX_CONNECTIONS: usize = 1024;

/// Serve the ops listener (`/live`, `/ready`, `/metrics`, `/status`,
/// `POST /reload`) on `listener` until `stop` flips.
pub async fn serve_ops(state: Arc<AppState>, listener: TcpListener, stop: watch::Receiver<bool>) {
    listener::serve(
        "ops",
        listener,
        move |req, _peer| {
            let s = state.clone();
            async move { crate::ops::route(&s, req).await }
        },
        stop,
        OPS_DRAIN,
        listener::Limits {
            max_connections: OPS_MAX_CONNECTIONS,
        },
        || {},
    )
    .await
}

/// Serve Envoy's ext_authz gRPC service (HTTP/2) on `listener` with the
/// same accept loop, connection cap and drain as the data listener.
async fn serve_ext_authz(
    state: Arc<AppState>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    max_connections: usize,
) {
    use tonic::codegen::Service;
    let drain = state.settings.drain;
    let svc = crate::ext_authz::service::server(state);
    listener::serve(
        "ext_authz",
        listener,
        move |mut req: http::Request<_>, peer| {
            // The peer, for the trust rule of a traced Check's `traceparent`.
            req.extensions_mut().insert(peer);
            let mut svc = svc.clone();
            async move {
                match svc.call(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        },
        stop,
        drain,
        listener::Limits { max_connections },
        || {},
    )
    .await
}

/// The ops listener on its own thread and single-threaded runtime, so
/// `/live` and `/ready` keep answering while the data listener's runtime is
/// saturated (a busy pod is not a dead one). Resolves when it has stopped.
fn spawn_ops_thread(
    state: Arc<AppState>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let listener = listener.into_std().map_err(ops_thread_error)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rolegate-ops".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the ops listener's runtime did not start");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve_ops(state, l, stop).await,
                    Err(e) => {
                        tracing::error!(error = %e, "the ops listener could not be registered")
                    }
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(ops_thread_error)?;
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

fn ops_thread_error(source: std::io::Error) -> StartError {
    StartError::Bind {
        setting: "ops_listen",
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    }
}

/// The data listener's TLS, when `tls_cert_file` is set, and the task that
/// reloads its certificate when the files change.
fn data_tls(
    state: &AppState,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<Arc<crate::tls::server::ServerTls>>, StartError> {
    let Some(files) = &state.settings.tls else {
        return Ok(None);
    };
    let tls = Arc::new(crate::tls::server::ServerTls::load(files).map_err(StartError::Tls)?);
    tracing::info!(
        cert = %files.cert.display(),
        client_certificates = files.client_ca.is_some(),
        "TLS on the data listener (ALPN h2, http/1.1)"
    );
    tasks.push(tokio::spawn(
        tls.clone()
            .watch(stop.clone(), crate::tls::server::CHECK_INTERVAL),
    ));
    Ok(Some(tls))
}

/// The machine's (in Kubernetes: the pod's) host name, for the default replica id.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rolegate".to_owned())
}

/// Bind both listeners and start serving. Readiness is set once everything is up.
pub async fn start(state: Arc<AppState>) -> Result<Running, StartError> {
    let upstream = match &state.settings.upstream {
        Some(u) => Some(
            Upstream::with_tls(
                u,
                state.settings.upstream_timeout,
                state.settings.upstream_ca_file.as_deref(),
                state.settings.upstream_http2,
            )
            .map_err(StartError::Upstream)?,
        ),
        None => None,
    };
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
    let ext_authz = match state.settings.ext_authz_listen {
        Some(addr) => {
            let l = bind("ext_authz_listen", addr).await?;
            let bound = l.local_addr().map_err(|source| StartError::Bind {
                setting: "ext_authz_listen",
                addr,
                source,
            })?;
            Some((l, bound))
        }
        None => None,
    };
    let ext_authz_addr = ext_authz.as_ref().map(|(_, a)| *a);
    let authzen = match &state.settings.authzen {
        Some(a) => {
            let listener = bind("authzen_listen", a.listen).await?;
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                setting: "authzen_listen",
                addr: a.listen,
                source,
            })?;
            Some((listener, addr))
        }
        None => None,
    };
    let authzen_addr = authzen.as_ref().map(|(_, addr)| *addr);
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some((listener, addr)) = authzen {
        let door = Arc::new(crate::authzen::Door::new(state.clone(), addr));
        tracing::info!(authzen = %addr, pdp = door.pdp(), "AuthZEN evaluation API listening");
        tasks.push(tokio::spawn(listener::serve(
            "authzen",
            listener,
            move |req, peer| {
                let door = door.clone();
                async move { door.handle(req, peer).await }
            },
            rx.clone(),
            state.settings.drain,
            listener::Limits {
                max_connections: AUTHZEN_MAX_CONNECTIONS,
            },
            || {},
        )));
    }

    let live = crate::proxy::live::Live::new(
        state.settings.websocket.max_connections,
        state.metrics.clone(),
    );
    let relay = Arc::new(
        crate::proxy::websocket::Relay::new(
            state.settings.upstream.as_ref(),
            state.settings.upstream_ca_file.as_deref(),
            state.settings.upstream_timeout,
            state.settings.websocket,
            state.settings.forward_credentials,
            live.clone(),
            state.metrics.clone(),
        )
        .map_err(StartError::Upstream)?,
    );
    let proxy = Proxy::new(
        upstream,
        state.settings.forward_credentials,
        state.metrics.clone(),
    )
    .with_websocket(relay);
    let door = Arc::new(data::DataListener::new(state.clone(), proxy));
    let wanted = state.settings.max_connections;
    let budget = allocator::connection_budget().unwrap_or(wanted);
    if budget < wanted {
        tracing::warn!(
            max_connections = wanted,
            budget,
            "the open-file limit allows fewer connections than `max_connections`; using the budget"
        );
    }
    let max_connections = wanted.min(budget);
    tracing::info!(max_connections, "data listener connection cap");
    let data_tls = data_tls(&state, &rx, &mut tasks)?;
    let s = state.clone();
    tasks.push(tokio::spawn(listener::serve_tls(
        "data",
        data,
        data_tls,
        move |req, peer| {
            let door = door.clone();
            // Boxed here, once: the request's future (~4 KiB) is otherwise
            // moved whole through the connection's service wrapper into
            // hyper's in-flight slot, a copy at each step.
            Box::pin(async move { door.handle(req, peer).await })
        },
        rx.clone(),
        state.settings.drain,
        listener::Limits { max_connections },
        move || s.set_ready(false),
    )));
    if let Some((listener, _)) = ext_authz {
        tasks.push(tokio::spawn(serve_ext_authz(
            state.clone(),
            listener,
            rx.clone(),
            max_connections,
        )));
    }
    tasks.push(spawn_ops_thread(state.clone(), ops, rx.clone())?);
    let s = state.clone();
    tasks.push(tokio::spawn(reload::watch(s, rx.clone())));
    let follower = follower::Follower {
        store: state.store.clone(),
        cache: state.cache.clone(),
        metrics: state.metrics.clone(),
        progress: state.follower.clone(),
        replica_id: state
            .settings
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host_name(), data_addr.port())),
        poll: state.settings.change_poll,
        max_lag: state.settings.max_change_lag,
        live: Some(live.clone()),
    };
    let position = follower.start_position().await;
    tasks.push(tokio::spawn(follower.run(position, rx.clone())));
    // On shutdown, relayed WebSockets are closed with 1001 and given the
    // drain period to finish their closing handshakes.
    let mut stop = rx.clone();
    let drain = state.settings.drain;
    tasks.push(tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        live.drain(drain).await;
    }));

    if state.settings.passthrough {
        tracing::warn!(
            "passthrough is on: every request is forwarded WITHOUT authorization (benchmarks only)"
        );
    }
    state.set_ready(true);
    tracing::info!(
        data = %data_addr,
        ops = %ops_addr,
        ext_authz = ?ext_authz_addr,
        store = state.store.kind(),
        policy_version = state.policies.current().version,
        "rolegate ready"
    );
    Ok(Running {
        data_addr,
        ops_addr,
        ext_authz_addr,
        authzen_addr,
        state,
        shutdown: tx,
        tasks,
    })
}
