//! Test harness: a real echo upstream on loopback that reports what reached it,
//! rolegate started in-process on port 0 with a real store (a SQLite file in a
//! temp dir, or a fresh database in a throwaway PostgreSQL cluster) and a copy
//! of the shipped policies, and a small HTTP client.
//!
//! Behaviour that must hold on both stores is written once and run on each
//! with `on_both_stores!`: the test body runs inside `with_store(kind, ..)`,
//! and every `Sidecar` it starts without an explicit store uses that kind.

#![allow(dead_code)]

pub mod pg;
pub mod tls;
pub mod webdriver;
pub mod ws_echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use rolegate::app::{self, AppState, Running};
use rolegate::config::{Overrides, Settings};
use rolegate::store::{CreatedOrg, NewUser, User};

/// What the echo upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The raw request target (path and query) as it arrived.
    pub target: String,
    /// The whole request target: differs from `target` in absolute form.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// Every value of the header field `name`, in order, as text.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// A real HTTP upstream on loopback that answers 200 with a small JSON body
/// and records every request.
#[derive(Clone)]
pub struct Echo {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let target = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers = req.headers().clone();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            s.lock().unwrap().push(Seen {
                                method,
                                target,
                                uri,
                                headers,
                                body,
                            });
                            let mut resp = http::Response::new(Full::new(Bytes::from_static(
                                b"{\"ok\":true}",
                            )));
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo {
            addr,
            seen,
            task: Arc::new(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The repository root (where policies/ and schema/ are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Which store a sidecar gets when its options name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static STORE_KIND: StoreKind;
}

/// Run a test body with `kind` as the store of every sidecar it starts.
pub async fn with_store<F: std::future::Future<Output = ()>>(kind: StoreKind, body: F) {
    STORE_KIND.scope(kind, body).await
}

pub fn store_kind() -> StoreKind {
    STORE_KIND.try_with(|k| *k).unwrap_or(StoreKind::Sqlite)
}

/// Write `async fn name() { .. }` once; get `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($($(#[doc = $doc:literal])* async fn $name:ident() $body:block)*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body() $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::support::with_store($crate::support::StoreKind::Sqlite, body()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::support::with_store($crate::support::StoreKind::Postgres, body()).await
                }
            }
        )*
    };
}

pub const MASTER_SECRET: &str = "test-master-secret-0123456789abcdef0123456789";

/// Options for a test sidecar.
#[derive(Default)]
pub struct Options {
    pub upstream: Option<String>,
    /// Extra TOML lines for the config file.
    pub config: String,
    /// Use this directory (and its rolegate.db) instead of a fresh one: restarts.
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Store location override (e.g. a postgres:// URL shared by two replicas).
    pub store: Option<String>,
}

/// The store a sidecar in `dir` uses: the one it used before (restarts), else
/// a new one of the test's kind.
async fn store_location(dir: &Path) -> String {
    let remembered = dir.join("store.location");
    if let Ok(s) = std::fs::read_to_string(&remembered) {
        return s;
    }
    let location = match store_kind() {
        StoreKind::Sqlite => dir.join("rolegate.db").display().to_string(),
        StoreKind::Postgres => pg::shared().database().await,
    };
    std::fs::write(&remembered, &location).unwrap();
    location
}

/// rolegate, in-process, on loopback port 0.
pub struct Sidecar {
    pub base: String,
    pub ops: String,
    /// The ext_authz gRPC listener (`http://…`), when `ext_authz_listen` is set.
    pub ext_authz: Option<String>,
    /// The AuthZEN listener, when the config sets `authzen_listen`.
    pub authzen: Option<String>,
    pub state: Arc<AppState>,
    pub settings: Settings,
    pub dir: Arc<tempfile::TempDir>,
    running: Option<Running>,
}

impl Sidecar {
    pub async fn start(upstream: &Echo) -> Sidecar {
        Self::with(Options {
            upstream: Some(upstream.url()),
            ..Default::default()
        })
        .await
    }

    pub async fn with(opts: Options) -> Sidecar {
        let dir = opts
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let policies = dir.path().join("policies");
        let schema = dir.path().join("schema");
        if !policies.exists() {
            copy_dir(&repo().join("policies"), &policies);
            copy_dir(&repo().join("schema"), &schema);
        }
        std::fs::write(dir.path().join("master.secret"), MASTER_SECRET).unwrap();
        let store = match opts.store {
            Some(s) => s,
            None => store_location(dir.path()).await,
        };
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\nstore = \"{store}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\ndrain_seconds = 5\n"
        );
        if let Some(u) = &opts.upstream {
            toml.push_str(&format!("upstream = \"{u}\"\n"));
        }
        toml.push_str(&opts.config);
        let config = dir.path().join("rolegate.toml");
        std::fs::write(&config, toml).unwrap();
        let overrides = Overrides {
            config: Some(config),
            ..Default::default()
        };
        let env: std::collections::HashMap<String, String> = Default::default();
        let settings = Settings::resolve(&overrides, &env, opts.upstream.is_some()).unwrap();
        let state = app::build(settings.clone()).await.unwrap();
        let running = app::start(state.clone()).await.unwrap();
        Sidecar {
            base: format!("http://{}", running.data_addr),
            ops: format!("http://{}", running.ops_addr),
            ext_authz: running.ext_authz_addr.map(|a| format!("http://{a}")),
            authzen: running.authzen_addr.map(|a| format!("http://{a}")),
            state,
            settings,
            dir,
            running: Some(running),
        }
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Stop (draining) and return the directory so the store can be reopened.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir.clone()
    }

    pub async fn org(&self, name: &str) -> CreatedOrg {
        self.state.store.create_org(name).await.unwrap()
    }

    pub async fn user(&self, org: &CreatedOrg, email: &str, role: &str) -> User {
        self.state
            .store
            .create_user(NewUser {
                org_id: org.org.id.clone(),
                email: email.to_owned(),
                role: role.to_owned(),
                password_hash: None,
            })
            .await
            .unwrap()
    }

    /// A valid API token for the user as the store holds them now.
    pub async fn token(&self, user_id: &str) -> String {
        let u = self
            .state
            .store
            .user(user_id)
            .await
            .unwrap()
            .expect("user exists");
        rolegate::authn::token::mint_for_user(
            &self.settings.token_settings(),
            &self.settings.master_secret,
            &u,
            rolegate::clock::unix_now(),
        )
        .unwrap()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        send(&self.base, method, path, headers, body).await
    }

    pub async fn ops_get(&self, path: &str) -> Reply {
        send(&self.ops, "GET", path, &[], None).await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The platform error's `userinfo.reason`.
    pub fn reason(&self) -> String {
        self.json()["error"]["userinfo"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

pub async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Send raw bytes on a fresh connection and return everything the server answered.
pub async fn raw(addr: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn tok(t: &str) -> (&'static str, &str) {
    ("x-bintu-token", t)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run the real binary from the repository root.
pub fn rolegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(args)
        .current_dir(repo())
        .env("ROLEGATE_LOG_FORMAT", "text")
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A scratch copy of the shipped policies and schema.
pub fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    let s = dir.path().join("schema");
    copy_dir(&repo().join("policies"), &p);
    copy_dir(&repo().join("schema"), &s);
    (dir, p, s)
}

pub async fn ops_post(sc: &Sidecar, path: &str) -> Reply {
    send(&sc.ops, "POST", path, &[], None).await
}

/// The value of a counter in `/metrics` (0 when absent).
pub async fn metric(sc: &Sidecar, name: &str) -> f64 {
    let m = sc.ops_get("/metrics").await.body;
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
