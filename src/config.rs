//! Settings: a TOML file (`--config`), overridden by `ROLEGATE_*` environment
//! variables, overridden by flags. Raw values are validated once into
//! [`Settings`]; a missing or bad value stops start-up with a message naming
//! the setting (exit code 64, as sysexits' EX_USAGE).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::authz::PolicySource;

/// Where the data listener binds by default: loopback, so a newcomer's demo is
/// not exposed; a pod sets `ROLEGATE_LISTEN=0.0.0.0:8080`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The ops listener (health, metrics, reload) stays on loopback unless told otherwise.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9090";
/// The embedded store, next to where rolegate runs.
pub const DEFAULT_STORE: &str = "rolegate.db";
pub const DEFAULT_POLICIES_DIR: &str = "policies";
pub const DEFAULT_SCHEMA_DIR: &str = "schema";
pub const DEFAULT_ISSUER: &str = "rolegate";
pub const DEFAULT_AUDIENCE: &str = "bintu";
/// API tokens live 12 hours: a working day, as the platform's session-based tokens.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 12 * 3600;
/// Clock skew tolerated on `exp`/`nbf`; small and explicit (not jsonwebtoken's implicit 60 s).
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Bound on how stale a cached user can be if a change notification is lost.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 30;
pub const DEFAULT_CACHE_CAPACITY: u64 = 200_000;
/// Unknown key ids are remembered briefly: long enough to absorb a flood,
/// short enough that a just-created user is found (creation also clears it).
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 10;
pub const DEFAULT_NEGATIVE_CAPACITY: u64 = 10_000;
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 30;
/// SIGTERM waits this long for in-flight requests before exiting.
pub const DEFAULT_DRAIN_SECS: u64 = 20;
/// Request bodies above this size are refused (413) before being read.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Open client connections on the data listener: idle, a connection costs
/// hyper a few KiB; 4,096 of them in the middle of sending their heads stay
/// well inside the 64 MiB a sidecar is often given (`bench/flood`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Invites are valid for 7 days and single-use.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 7 * 24 * 3600;
/// A password-reset link is handed over by an admin in person or by chat, so
/// it need not live long: one hour.
pub const DEFAULT_PASSWORD_RESET_TTL_SECS: u64 = 3600;
/// Where the dashboard is served: in rolegate's own namespace `/_rolegate/`
/// (beside the forward-auth path), whose underscore-led first segment no
/// stream-platform API path uses, so it cannot shadow an upstream route.
pub const DEFAULT_DASHBOARD_PREFIX: &str = "/_rolegate/dashboard";
/// The change log is read this often without a doorbell: a change made from
/// the CLI or another process bites within it (target: 1 s).
pub const DEFAULT_CHANGE_POLL_MS: u64 = 250;
/// A replica that has not confirmed it is caught up with the change log for
/// this long stops answering from its cache (every lookup reads the store).
pub const DEFAULT_MAX_CHANGE_LAG_SECS: u64 = 10;
/// Largest WebSocket message relayed (either way): API feeds and status
/// messages are small; a larger one closes the connection with 1009.
pub const DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// A relayed WebSocket with no frame either way for this long is closed
/// (1001); pings count, so a client that keeps its connection alive stays.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT_SECS: u64 = 300;
/// Upgraded connections leave the listener's connection cap; this is theirs.
pub const DEFAULT_WEBSOCKET_MAX_CONNECTIONS: usize = 4096;
/// Shortest master secret accepted (256 bits).
pub const MIN_MASTER_SECRET_LEN: usize = 32;
/// Shortest AuthZEN PEP credential accepted: a bearer secret, as strong as the master secret.
pub const MIN_PEP_TOKEN_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error("config file `{path}`: {message}")]
    File { path: String, message: String },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// The settings as flags and environment variables. Every one is optional here;
/// the file and the defaults fill the gaps. The command line fills in the
/// fields its subcommand offers (see `cli`); tests build it directly.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// TOML config file (`ROLEGATE_CONFIG`, `--config`).
    pub config: Option<PathBuf>,
    /// Data listener address (`ROLEGATE_LISTEN`).
    pub listen: Option<String>,
    /// Ops listener address (`ROLEGATE_OPS_LISTEN`).
    pub ops_listen: Option<String>,
    /// Envoy ext_authz gRPC listener address (`ROLEGATE_EXT_AUTHZ_LISTEN`); off when unset.
    pub ext_authz_listen: Option<String>,
    /// Upstream base URL (`ROLEGATE_UPSTREAM`).
    pub upstream: Option<String>,
    /// Store location (`ROLEGATE_STORE`).
    pub store: Option<String>,
    /// File holding the master secret (`ROLEGATE_MASTER_SECRET_FILE`).
    pub master_secret_file: Option<PathBuf>,
    /// Directory of policy files (`ROLEGATE_POLICIES_DIR`).
    pub policies_dir: Option<PathBuf>,
    /// Directory of Cedar schema files (`ROLEGATE_SCHEMA_DIR`).
    pub schema_dir: Option<PathBuf>,
    /// Worker threads of the runtime (`ROLEGATE_WORKER_THREADS`).
    pub worker_threads: Option<usize>,
    /// SIGTERM grace period in seconds (`ROLEGATE_DRAIN_SECONDS`).
    pub drain_seconds: Option<u64>,
    /// Forward without authorization, benchmarks only (`ROLEGATE_PASSTHROUGH`).
    pub passthrough: Option<bool>,
    /// AuthZEN evaluation API listener address (`ROLEGATE_AUTHZEN_LISTEN`).
    pub authzen_listen: Option<String>,
    /// File of the PEP credentials the AuthZEN listener accepts (`ROLEGATE_AUTHZEN_PEP_TOKEN_FILE`).
    pub authzen_pep_token_file: Option<PathBuf>,
    /// The AuthZEN Policy Decision Point identifier (`ROLEGATE_AUTHZEN_PDP_URL`).
    pub authzen_pdp_url: Option<String>,
}

/// The config file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub ops_listen: Option<String>,
    pub ext_authz_listen: Option<String>,
    pub upstream: Option<String>,
    pub store: Option<String>,
    pub master_secret_file: Option<PathBuf>,
    pub policies_dir: Option<PathBuf>,
    pub schema_dir: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub token_ttl_secs: Option<u64>,
    pub leeway_secs: Option<u64>,
    pub cache_ttl_secs: Option<u64>,
    pub cache_capacity: Option<u64>,
    pub negative_cache_ttl_secs: Option<u64>,
    pub worker_threads: Option<usize>,
    pub drain_seconds: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub upstream_timeout_secs: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub passthrough: Option<bool>,
    pub invite_ttl_secs: Option<u64>,
    pub password_reset_ttl_secs: Option<u64>,
    pub playback_prefix: Option<String>,
    /// `""` switches the dashboard off.
    pub dashboard_prefix: Option<String>,
    pub shadow_policies_dir: Option<PathBuf>,
    pub forward_credentials: Option<bool>,
    pub change_poll_ms: Option<u64>,
    pub max_change_lag_secs: Option<u64>,
    pub replica_id: Option<String>,
    pub authzen_listen: Option<String>,
    pub authzen_pep_token_file: Option<PathBuf>,
    pub authzen_pdp_url: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub upstream_ca_file: Option<PathBuf>,
    pub upstream_http2: Option<bool>,
    pub websocket_max_message_bytes: Option<usize>,
    pub websocket_idle_timeout_secs: Option<u64>,
    pub websocket_max_connections: Option<usize>,
    pub otel_endpoint: Option<String>,
    pub otel_service_name: Option<String>,
    pub otel_sample_ratio: Option<f64>,
}

/// The WebSocket relay's limits (`websocket_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct WebSocketSettings {
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The AuthZEN evaluation API (`authzen_*` settings); off unless `authzen_listen` is set.
#[derive(Clone)]
pub struct AuthzenSettings {
    pub listen: SocketAddr,
    /// SHA-256 digests of the accepted PEP credentials (one per line of the
    /// file, so a credential can be rolled without a gap). Only digests are
    /// kept: they are compared in constant time and never printed.
    pub pep_token_digests: Vec<[u8; 32]>,
    /// The Policy Decision Point identifier the metadata document announces;
    /// `None`: `http://` and the listener's bound address.
    pub pdp_url: Option<String>,
}

impl std::fmt::Debug for AuthzenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzenSettings")
            .field("listen", &self.listen)
            .field(
                "pep_token_digests",
                &format_args!("[{} redacted]", self.pep_token_digests.len()),
            )
            .field("pdp_url", &self.pdp_url)
            .finish()
    }
}

/// Validated settings. `Debug` is written out by hand: the master secret
/// prints as `[redacted]`.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    /// Where Envoy's ext_authz gRPC service listens; `None` (the default): not served.
    pub ext_authz_listen: Option<SocketAddr>,
    /// `None` only for commands that do not forward (user management CLI).
    pub upstream: Option<http::Uri>,
    pub store: String,
    pub master_secret: Vec<u8>,
    pub policies_dir: PathBuf,
    pub schema_dir: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub token_ttl: Duration,
    pub leeway: Duration,
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    pub negative_cache_ttl: Duration,
    pub worker_threads: Option<usize>,
    pub drain: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub upstream_timeout: Duration,
    pub max_body_bytes: u64,
    /// Open client connections on the data listener (further ones wait in
    /// the kernel backlog); lowered to the descriptor budget at start-up.
    pub max_connections: usize,
    pub passthrough: bool,
    pub invite_ttl: Duration,
    pub password_reset_ttl: Duration,
    pub playback_prefix: Option<String>,
    /// Where the dashboard's pages are served; `None`: no dashboard.
    pub dashboard_prefix: Option<String>,
    pub shadow_policies_dir: Option<PathBuf>,
    pub forward_credentials: bool,
    /// How often the change log is read when no doorbell rang: the bound on
    /// how long a change made elsewhere can go unseen (`store::changelog`).
    pub change_poll: Duration,
    /// Past this lag behind the change log, cached answers are not used.
    pub max_change_lag: Duration,
    /// This replica's name in heartbeats and receipts; `None`: the host name
    /// and the data listener's bound port (`app::start`).
    pub replica_id: Option<String>,
    pub authzen: Option<AuthzenSettings>,
    /// TLS on the data listener (`tls_*`); `None`: plain TCP (HTTP/1.1 and h2c).
    pub tls: Option<crate::tls::server::ServerFiles>,
    /// A private CA for an `https://` upstream, beside the system's roots.
    pub upstream_ca_file: Option<PathBuf>,
    /// Speak HTTP/2 to the upstream (ALPN `h2` over TLS, prior knowledge on http://).
    pub upstream_http2: bool,
    pub websocket: WebSocketSettings,
    /// OpenTelemetry traces (`otel_*`); `None` (the default): off.
    pub otel: Option<crate::otel::TraceSettings>,
}

/// Every field but the master secret, which prints as `[redacted]`. The
/// destructuring makes a new field a compile error here until it is listed.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Settings {
            listen,
            ops_listen,
            ext_authz_listen,
            upstream,
            store,
            master_secret: _,
            policies_dir,
            schema_dir,
            issuer,
            audience,
            token_ttl,
            leeway,
            cache_ttl,
            cache_capacity,
            negative_cache_ttl,
            worker_threads,
            drain,
            trusted_proxies,
            upstream_timeout,
            max_body_bytes,
            max_connections,
            passthrough,
            invite_ttl,
            password_reset_ttl,
            playback_prefix,
            dashboard_prefix,
            shadow_policies_dir,
            forward_credentials,
            change_poll,
            max_change_lag,
            replica_id,
            authzen,
            tls,
            upstream_ca_file,
            upstream_http2,
            websocket,
            otel,
        } = self;
        f.debug_struct("Settings")
            .field("listen", listen)
            .field("ops_listen", ops_listen)
            .field("ext_authz_listen", ext_authz_listen)
            .field("upstream", upstream)
            .field("store", &crate::store::redact(store))
            .field("master_secret", &"[redacted]")
            .field("policies_dir", policies_dir)
            .field("schema_dir", schema_dir)
            .field("issuer", issuer)
            .field("audience", audience)
            .field("token_ttl", token_ttl)
            .field("leeway", leeway)
            .field("cache_ttl", cache_ttl)
            .field("cache_capacity", cache_capacity)
            .field("negative_cache_ttl", negative_cache_ttl)
            .field("worker_threads", worker_threads)
            .field("drain", drain)
            .field("trusted_proxies", trusted_proxies)
            .field("upstream_timeout", upstream_timeout)
            .field("max_body_bytes", max_body_bytes)
            .field("max_connections", max_connections)
            .field("passthrough", passthrough)
            .field("invite_ttl", invite_ttl)
            .field("password_reset_ttl", password_reset_ttl)
            .field("playback_prefix", playback_prefix)
            .field("dashboard_prefix", dashboard_prefix)
            .field("change_poll", change_poll)
            .field("max_change_lag", max_change_lag)
            .field("replica_id", replica_id)
            .field("shadow_policies_dir", shadow_policies_dir)
            .field("forward_credentials", forward_credentials)
            .field("authzen", authzen)
            .field("tls", tls)
            .field("upstream_ca_file", upstream_ca_file)
            .field("upstream_http2", upstream_http2)
            .field("websocket", websocket)
            .field("otel", otel)
            .finish()
    }
}

/// Environment lookups go through this, so tests pass a map instead of
/// mutating the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

pub fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

fn addr(setting: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        invalid(
            setting,
            format!("`{v}` is not an address like 127.0.0.1:8080"),
        )
    })
}

/// Paths in a config file are relative to the file's directory.
fn rel(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// The config file named by `o`, or an empty one.
fn file_config(o: &Overrides) -> Result<FileConfig, ConfigError> {
    match &o.config {
        Some(p) => read_file_config(p),
        None => Ok(FileConfig::default()),
    }
}

/// Where the policies are, from flags or environment, the config file (its
/// paths relative to its directory) and the defaults. The one merge of these
/// two settings: [`Settings::resolve`] uses it too, and the offline policy
/// tools (which need no secret and no store) call it alone. It does not check
/// that the directories exist: the loader reports that when it reads them.
pub fn policy_source(o: &Overrides) -> Result<PolicySource, ConfigError> {
    let file = file_config(o)?;
    Ok(merge_policy_source(o, &file, config_dir(o)))
}

fn config_dir(o: &Overrides) -> Option<&Path> {
    o.config.as_deref().and_then(Path::parent)
}

fn merge_policy_source(o: &Overrides, file: &FileConfig, base: Option<&Path>) -> PolicySource {
    PolicySource {
        policies_dir: o
            .policies_dir
            .clone()
            .or_else(|| file.policies_dir.clone().map(|p| rel(base, p)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES_DIR)),
        schema_dir: o
            .schema_dir
            .clone()
            .or_else(|| file.schema_dir.clone().map(|p| rel(base, p)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SCHEMA_DIR)),
    }
}

/// A duration in seconds: the value or its default, at least `min`.
fn secs(
    setting: &'static str,
    v: Option<u64>,
    default: u64,
    min: u64,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v < min {
        return Err(invalid(setting, format!("must be at least {min}")));
    }
    Ok(Duration::from_secs(v))
}

// === the sections of `Settings::resolve`, in the order they are checked ===

/// The data, ops and (when set) ext_authz listener addresses.
fn listeners(
    o: &Overrides,
    file: &FileConfig,
) -> Result<(SocketAddr, SocketAddr, Option<SocketAddr>), ConfigError> {
    let listen = addr(
        "listen",
        o.listen
            .as_deref()
            .or(file.listen.as_deref())
            .unwrap_or(DEFAULT_LISTEN),
    )?;
    let ops_listen = addr(
        "ops_listen",
        o.ops_listen
            .as_deref()
            .or(file.ops_listen.as_deref())
            .unwrap_or(DEFAULT_OPS_LISTEN),
    )?;
    let ext_authz_listen = o
        .ext_authz_listen
        .as_deref()
        .or(file.ext_authz_listen.as_deref())
        .map(|v| addr("ext_authz_listen", v))
        .transpose()?;
    Ok((listen, ops_listen, ext_authz_listen))
}

/// The upstream base URL: required when the command forwards requests.
fn upstream(
    o: &Overrides,
    file: &FileConfig,
    need_upstream: bool,
) -> Result<Option<http::Uri>, ConfigError> {
    match o.upstream.clone().or(file.upstream.clone()) {
        Some(u) => {
            let uri: http::Uri = u
                .parse()
                .map_err(|_| invalid("upstream", format!("`{u}` is not a URL")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(invalid(
                    "upstream",
                    format!("`{u}` must be an http://host:port or https://host:port URL"),
                ));
            }
            if uri.path() != "/" && !uri.path().is_empty() {
                return Err(invalid("upstream", format!("`{u}` must not have a path")));
            }
            Ok(Some(uri))
        }
        None if need_upstream => Err(invalid(
            "upstream",
            "missing: set `upstream` in the config file, ROLEGATE_UPSTREAM or --upstream",
        )),
        None => Ok(None),
    }
}

/// The store location: a SQLite path (relative to the config file when it
/// comes from there) or a URL.
fn store_location(
    o: &Overrides,
    file: &FileConfig,
    base: Option<&Path>,
) -> Result<String, ConfigError> {
    let store = o
        .store
        .clone()
        .or_else(|| {
            file.store.clone().map(|s| {
                if s.contains("://") {
                    s
                } else {
                    rel(base, PathBuf::from(s)).display().to_string()
                }
            })
        })
        .unwrap_or_else(|| DEFAULT_STORE.to_owned());
    if store.is_empty() {
        return Err(invalid("store", "is empty"));
    }
    Ok(store)
}

/// The master secret: from its file (flag, environment or config file), else
/// from `ROLEGATE_MASTER_SECRET`; at least [`MIN_MASTER_SECRET_LEN`] bytes.
fn master_secret(
    o: &Overrides,
    file: &FileConfig,
    base: Option<&Path>,
    env: &dyn Env,
) -> Result<Vec<u8>, ConfigError> {
    let secret_file = o
        .master_secret_file
        .clone()
        .or_else(|| file.master_secret_file.clone().map(|p| rel(base, p)));
    let master_secret = match (secret_file, env.var("ROLEGATE_MASTER_SECRET")) {
        (Some(path), _) => std::fs::read(&path)
            .map_err(|e| {
                invalid(
                    "master_secret_file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?
            .trim_ascii()
            .to_vec(),
        (None, Some(v)) => v.trim().as_bytes().to_vec(),
        (None, None) => {
            return Err(invalid(
                "master_secret",
                "missing: set ROLEGATE_MASTER_SECRET or `master_secret_file` (at least 32 bytes, e.g. `openssl rand -hex 32`)",
            ))
        }
    };
    if master_secret.len() < MIN_MASTER_SECRET_LEN {
        return Err(invalid(
            "master_secret",
            format!(
                "is {} bytes; at least {MIN_MASTER_SECRET_LEN} are required",
                master_secret.len()
            ),
        ));
    }
    Ok(master_secret)
}

/// The policy and schema directories, which must exist.
fn policies(
    o: &Overrides,
    file: &FileConfig,
    base: Option<&Path>,
) -> Result<PolicySource, ConfigError> {
    let source = merge_policy_source(o, file, base);
    if !source.policies_dir.is_dir() {
        return Err(invalid(
            "policies_dir",
            format!("`{}` is not a directory", source.policies_dir.display()),
        ));
    }
    if !source.schema_dir.is_dir() {
        return Err(invalid(
            "schema_dir",
            format!("`{}` is not a directory", source.schema_dir.display()),
        ));
    }
    Ok(source)
}

/// The API tokens rolegate issues and the invites it hands out.
struct Tokens {
    issuer: String,
    audience: String,
    token_ttl: Duration,
    leeway: Duration,
    invite_ttl: Duration,
    password_reset_ttl: Duration,
}

fn tokens(file: &FileConfig) -> Result<Tokens, ConfigError> {
    let issuer = file
        .issuer
        .clone()
        .unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
    let audience = file
        .audience
        .clone()
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    if issuer.is_empty() {
        return Err(invalid("issuer", "is empty"));
    }
    if audience.is_empty() {
        return Err(invalid("audience", "is empty"));
    }
    Ok(Tokens {
        issuer,
        audience,
        token_ttl: secs(
            "token_ttl_secs",
            file.token_ttl_secs,
            DEFAULT_TOKEN_TTL_SECS,
            1,
        )?,
        leeway: secs("leeway_secs", file.leeway_secs, DEFAULT_LEEWAY_SECS, 0)?,
        invite_ttl: secs(
            "invite_ttl_secs",
            file.invite_ttl_secs,
            DEFAULT_INVITE_TTL_SECS,
            1,
        )?,
        password_reset_ttl: secs(
            "password_reset_ttl_secs",
            file.password_reset_ttl_secs,
            DEFAULT_PASSWORD_RESET_TTL_SECS,
            60,
        )?,
    })
}

/// The principal cache.
struct Cache {
    ttl: Duration,
    capacity: u64,
    negative_ttl: Duration,
}

fn cache(file: &FileConfig) -> Result<Cache, ConfigError> {
    Ok(Cache {
        ttl: secs(
            "cache_ttl_secs",
            file.cache_ttl_secs,
            DEFAULT_CACHE_TTL_SECS,
            1,
        )?,
        capacity: file.cache_capacity.unwrap_or(DEFAULT_CACHE_CAPACITY).max(1),
        negative_ttl: secs(
            "negative_cache_ttl_secs",
            file.negative_cache_ttl_secs,
            DEFAULT_NEGATIVE_TTL_SECS,
            1,
        )?,
    })
}

/// Following the change log (`store::changelog`).
struct ChangeLog {
    poll: Duration,
    max_lag: Duration,
    replica_id: Option<String>,
}

fn change_log(file: &FileConfig) -> Result<ChangeLog, ConfigError> {
    let poll_ms = file.change_poll_ms.unwrap_or(DEFAULT_CHANGE_POLL_MS);
    if !(10..=10_000).contains(&poll_ms) {
        return Err(invalid(
            "change_poll_ms",
            "must be between 10 and 10000 (milliseconds)",
        ));
    }
    let poll = Duration::from_millis(poll_ms);
    let max_lag = secs(
        "max_change_lag_secs",
        file.max_change_lag_secs,
        DEFAULT_MAX_CHANGE_LAG_SECS,
        1,
    )?;
    if max_lag < poll * 2 {
        return Err(invalid(
            "max_change_lag_secs",
            "must be at least two change_poll_ms intervals",
        ));
    }
    let replica_id = file.replica_id.clone();
    if let Some(id) = &replica_id {
        if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return Err(invalid(
                "replica_id",
                "must be 1 to 200 printable characters",
            ));
        }
    }
    Ok(ChangeLog {
        poll,
        max_lag,
        replica_id,
    })
}

/// The WebSocket relay's limits.
fn websocket(file: &FileConfig) -> Result<WebSocketSettings, ConfigError> {
    let max_message_bytes = file
        .websocket_max_message_bytes
        .unwrap_or(DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES);
    if max_message_bytes < 125 {
        // 125 bytes: the largest control frame, which must always fit.
        return Err(invalid(
            "websocket_max_message_bytes",
            "must be at least 125",
        ));
    }
    let max_connections = file
        .websocket_max_connections
        .unwrap_or(DEFAULT_WEBSOCKET_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("websocket_max_connections", "must be at least 1"));
    }
    Ok(WebSocketSettings {
        max_message_bytes,
        idle_timeout: secs(
            "websocket_idle_timeout_secs",
            file.websocket_idle_timeout_secs,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT_SECS,
            1,
        )?,
        max_connections,
    })
}

/// How the proxy behaves: whom it trusts, how it runs, forwards and drains.
struct ProxyBehaviour {
    trusted_proxies: Vec<IpNet>,
    worker_threads: Option<usize>,
    playback_prefix: Option<String>,
    dashboard_prefix: Option<String>,
    drain: Duration,
    upstream_timeout: Duration,
    max_body_bytes: u64,
    max_connections: usize,
    passthrough: bool,
    shadow_policies_dir: Option<PathBuf>,
    forward_credentials: bool,
}

fn proxy_behaviour(
    o: &Overrides,
    file: &FileConfig,
    base: Option<&Path>,
) -> Result<ProxyBehaviour, ConfigError> {
    let trusted_proxies = file
        .trusted_proxies
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        "trusted_proxies",
                        format!("`{s}` is not an address or CIDR"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let worker_threads = o.worker_threads.or(file.worker_threads);
    if worker_threads == Some(0) {
        return Err(invalid("worker_threads", "must be at least 1"));
    }

    let playback_prefix = file.playback_prefix.clone();
    if let Some(p) = &playback_prefix {
        if !p.starts_with('/') || p.len() < 2 {
            return Err(invalid(
                "playback_prefix",
                format!("`{p}` must be a path like /playback"),
            ));
        }
    }

    let max_connections = file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(invalid("max_connections", "must be at least 1"));
    }

    let dashboard_prefix = dashboard_prefix(file, playback_prefix.as_deref())?;

    Ok(ProxyBehaviour {
        trusted_proxies,
        worker_threads,
        playback_prefix,
        dashboard_prefix,
        drain: secs(
            "drain_seconds",
            o.drain_seconds.or(file.drain_seconds),
            DEFAULT_DRAIN_SECS,
            0,
        )?,
        upstream_timeout: secs(
            "upstream_timeout_secs",
            file.upstream_timeout_secs,
            DEFAULT_UPSTREAM_TIMEOUT_SECS,
            1,
        )?,
        max_body_bytes: file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_connections,
        passthrough: o.passthrough.or(file.passthrough).unwrap_or(false),
        shadow_policies_dir: file.shadow_policies_dir.clone().map(|p| rel(base, p)),
        forward_credentials: file.forward_credentials.unwrap_or(false),
    })
}

/// The dashboard's prefix: default `/_rolegate/dashboard`, `""` for none. A trailing
/// `/` is dropped; a prefix that overlaps the playback prefix is refused,
/// since one of the two would shadow the other.
fn dashboard_prefix(
    file: &FileConfig,
    playback_prefix: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    let raw = file
        .dashboard_prefix
        .as_deref()
        .unwrap_or(DEFAULT_DASHBOARD_PREFIX);
    if raw.is_empty() {
        return Ok(None);
    }
    let p = raw.trim_end_matches('/');
    let safe = |c: char| c.is_ascii_alphanumeric() || "/_-.~".contains(c);
    if !p.starts_with('/') || p.len() < 2 || !p.chars().all(safe) || p.contains("//") {
        return Err(invalid(
            "dashboard_prefix",
            format!("`{raw}` must be a path like /_rolegate/dashboard (letters, digits, `/_-.~`), or \"\" for no dashboard"),
        ));
    }
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(invalid(
            "dashboard_prefix",
            format!("`{raw}` has a dot segment"),
        ));
    }
    if let Some(play) = playback_prefix {
        let under =
            |a: &str, b: &str| a == b || a.starts_with(&format!("{}/", b.trim_end_matches('/')));
        if under(p, play) || under(play, p) {
            return Err(invalid(
                "dashboard_prefix",
                format!("`{raw}` overlaps playback_prefix `{play}`"),
            ));
        }
    }
    Ok(Some(p.to_owned()))
}

/// The AuthZEN listener, its PEP credentials and its identifier. Off (`None`)
/// unless `authzen_listen` is set; then the credential file is required, so
/// the evaluation API is never open to anonymous callers.
fn authzen(
    o: &Overrides,
    file: &FileConfig,
    base: Option<&Path>,
) -> Result<Option<AuthzenSettings>, ConfigError> {
    let Some(listen) = o
        .authzen_listen
        .as_deref()
        .or(file.authzen_listen.as_deref())
    else {
        return Ok(None);
    };
    let listen = addr("authzen_listen", listen)?;
    let path = o
        .authzen_pep_token_file
        .clone()
        .or_else(|| file.authzen_pep_token_file.clone().map(|p| rel(base, p)))
        .ok_or_else(|| {
            invalid(
                "authzen_pep_token_file",
                "missing: the AuthZEN listener needs the PEP credentials it accepts (a file, one secret of at least 32 bytes per line)",
            )
        })?;
    let text = std::fs::read(&path).map_err(|e| {
        invalid(
            "authzen_pep_token_file",
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let mut pep_token_digests = Vec::new();
    for (n, line) in text.split(|b| *b == b'\n').enumerate() {
        let token = line.trim_ascii();
        if token.is_empty() {
            continue;
        }
        if token.len() < MIN_PEP_TOKEN_LEN || !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "authzen_pep_token_file",
                format!(
                    "line {}: a credential is at least {MIN_PEP_TOKEN_LEN} visible ASCII characters (e.g. `openssl rand -hex 32`)",
                    n + 1
                ),
            ));
        }
        pep_token_digests.push(<sha2::Sha256 as sha2::Digest>::digest(token).into());
    }
    if pep_token_digests.is_empty() {
        return Err(invalid(
            "authzen_pep_token_file",
            format!("`{}` holds no credential", path.display()),
        ));
    }
    let pdp_url = match o
        .authzen_pdp_url
        .as_deref()
        .or(file.authzen_pdp_url.as_deref())
    {
        Some(u) => Some(pdp_url(u)?),
        None => None,
    };
    Ok(Some(AuthzenSettings {
        listen,
        pep_token_digests,
        pdp_url,
    }))
}

/// A Policy Decision Point identifier: an `https` (or, behind a mesh that
/// terminates TLS, `http`) URL of a host, without path, query or fragment;
/// the AuthZEN endpoints are at its default paths. Returned without a trailing `/`.
/// OpenTelemetry traces: on when `otel_endpoint` names a collector
/// (`http://host:port`, OTLP over gRPC), off when it is absent or empty.
/// The other `otel_*` settings are checked either way, so a bad one is found
/// before traces are switched on.
fn otel(file: &FileConfig) -> Result<Option<crate::otel::TraceSettings>, ConfigError> {
    let service_name = file
        .otel_service_name
        .clone()
        .unwrap_or_else(|| crate::otel::DEFAULT_SERVICE_NAME.to_owned());
    if service_name.is_empty()
        || service_name.len() > 255
        || !service_name.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(invalid(
            "otel_service_name",
            format!("`{service_name}` must be 1 to 255 visible ASCII characters"),
        ));
    }
    let sample_ratio = file
        .otel_sample_ratio
        .unwrap_or(crate::otel::DEFAULT_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(invalid(
            "otel_sample_ratio",
            format!("`{sample_ratio}` must be between 0.0 and 1.0"),
        ));
    }
    let endpoint = match file.otel_endpoint.as_deref() {
        None | Some("") => return Ok(None),
        Some(e) => e,
    };
    let bad = |why: &str| invalid("otel_endpoint", format!("`{endpoint}` {why}"));
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| bad("is not a URL like http://127.0.0.1:4317"))?;
    // The exporter speaks plain gRPC (no TLS in the build): a collector
    // agent beside rolegate, on loopback or the pod network.
    if uri.scheme_str() != Some("http") {
        return Err(bad("must start with http:// (OTLP over gRPC, no TLS)"));
    }
    if uri.authority().is_none() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("must be http://host:port with no path"));
    }
    Ok(Some(crate::otel::TraceSettings {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        service_name,
        sample_ratio,
    }))
}

fn pdp_url(u: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| invalid("authzen_pdp_url", format!("`{u}` {why}"));
    let uri: http::Uri = u.parse().map_err(|_| bad("is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.authority().is_none() {
        return Err(bad("must be an https://host[:port] URL"));
    }
    if uri.query().is_some() || u.contains('#') {
        return Err(bad("must have no query or fragment"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(bad(
            "must have no path (the endpoints are at their default paths)",
        ));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// TLS on the data listener: certificate and key together or neither; the
/// files are loaded here once so a bad one stops start-up naming its setting.
fn server_tls(
    file: &FileConfig,
    base: Option<&Path>,
) -> Result<Option<crate::tls::server::ServerFiles>, ConfigError> {
    let cert = file.tls_cert_file.clone().map(|p| rel(base, p));
    let key = file.tls_key_file.clone().map(|p| rel(base, p));
    let client_ca = file.tls_client_ca_file.clone().map(|p| rel(base, p));
    let files = match (cert, key) {
        (Some(cert), Some(key)) => crate::tls::server::ServerFiles {
            cert,
            key,
            client_ca,
        },
        (Some(_), None) => {
            return Err(invalid(
                "tls_key_file",
                "missing: `tls_cert_file` is set, so the key is needed too",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_cert_file",
                "missing: `tls_key_file` is set, so the certificate is needed too",
            ))
        }
        (None, None) if client_ca.is_some() => {
            return Err(invalid(
                "tls_client_ca_file",
                "client certificates need TLS: set `tls_cert_file` and `tls_key_file`",
            ))
        }
        (None, None) => return Ok(None),
    };
    crate::tls::server::ServerTls::load(&files).map_err(|e| invalid(e.setting, e.to_string()))?;
    Ok(Some(files))
}

/// The upstream's TLS and protocol: a private CA only makes sense for an
/// `https://` upstream (set for an `http://` one it would suggest a TLS that
/// is not there, so it is refused); the CA file is read here once.
fn upstream_tls(
    file: &FileConfig,
    base: Option<&Path>,
    upstream: Option<&http::Uri>,
) -> Result<(Option<PathBuf>, bool), ConfigError> {
    let http2 = file.upstream_http2.unwrap_or(false);
    let ca = file.upstream_ca_file.clone().map(|p| rel(base, p));
    if let Some(path) = &ca {
        if upstream.is_some_and(|u| u.scheme_str() != Some("https")) {
            return Err(invalid(
                "upstream_ca_file",
                "set, but `upstream` is not an https:// URL",
            ));
        }
        crate::tls::client::upstream_config(Some(path), http2)
            .map_err(|e| invalid(e.setting, e.to_string()))?;
    }
    Ok((ca, http2))
}

impl Settings {
    /// Merge flags/env (`o`), the config file and defaults, then validate,
    /// section by section (the first bad setting is the one reported).
    /// `need_upstream`: whether the command forwards requests.
    pub fn resolve(
        o: &Overrides,
        env: &dyn Env,
        need_upstream: bool,
    ) -> Result<Settings, ConfigError> {
        let file = file_config(o)?;
        let base = config_dir(o);

        let (listen, ops_listen, ext_authz_listen) = listeners(o, &file)?;
        let upstream = upstream(o, &file, need_upstream)?;
        let store = store_location(o, &file, base)?;
        let master_secret = master_secret(o, &file, base, env)?;
        let PolicySource {
            policies_dir,
            schema_dir,
        } = policies(o, &file, base)?;
        let tokens = tokens(&file)?;
        let cache = cache(&file)?;
        let proxy = proxy_behaviour(o, &file, base)?;
        let change_log = change_log(&file)?;
        let authzen = authzen(o, &file, base)?;
        let tls = server_tls(&file, base)?;
        let (upstream_ca_file, upstream_http2) = upstream_tls(&file, base, upstream.as_ref())?;
        let websocket = websocket(&file)?;
        let otel = otel(&file)?;

        Ok(Settings {
            listen,
            ops_listen,
            ext_authz_listen,
            upstream,
            store,
            master_secret,
            policies_dir,
            schema_dir,
            issuer: tokens.issuer,
            audience: tokens.audience,
            token_ttl: tokens.token_ttl,
            leeway: tokens.leeway,
            cache_ttl: cache.ttl,
            cache_capacity: cache.capacity,
            negative_cache_ttl: cache.negative_ttl,
            worker_threads: proxy.worker_threads,
            drain: proxy.drain,
            trusted_proxies: proxy.trusted_proxies,
            upstream_timeout: proxy.upstream_timeout,
            max_body_bytes: proxy.max_body_bytes,
            max_connections: proxy.max_connections,
            passthrough: proxy.passthrough,
            invite_ttl: tokens.invite_ttl,
            password_reset_ttl: tokens.password_reset_ttl,
            playback_prefix: proxy.playback_prefix,
            dashboard_prefix: proxy.dashboard_prefix,
            shadow_policies_dir: proxy.shadow_policies_dir,
            forward_credentials: proxy.forward_credentials,
            change_poll: change_log.poll,
            max_change_lag: change_log.max_lag,
            replica_id: change_log.replica_id,
            authzen,
            tls,
            upstream_ca_file,
            upstream_http2,
            websocket,
            otel,
        })
    }

    pub fn token_settings(&self) -> crate::authn::token::TokenSettings {
        crate::authn::token::TokenSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            ttl_secs: self.token_ttl.as_secs(),
            leeway_secs: self.leeway.as_secs(),
        }
    }

    pub fn cache_settings(&self) -> crate::authn::cache::CacheSettings {
        crate::authn::cache::CacheSettings {
            ttl: self.cache_ttl,
            capacity: self.cache_capacity,
            negative_ttl: self.negative_cache_ttl,
            negative_capacity: DEFAULT_NEGATIVE_CAPACITY,
        }
    }

    pub fn policy_source(&self) -> PolicySource {
        PolicySource {
            policies_dir: self.policies_dir.clone(),
            schema_dir: self.schema_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret-0123";

    fn repo_overrides() -> Overrides {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Overrides {
            policies_dir: Some(repo.join(DEFAULT_POLICIES_DIR)),
            schema_dir: Some(repo.join(DEFAULT_SCHEMA_DIR)),
            store: Some("postgres://rolegate:pa55word@db.internal/rolegate".to_owned()),
            ..Default::default()
        }
    }

    fn env_with_secret() -> std::collections::HashMap<String, String> {
        [("ROLEGATE_MASTER_SECRET".to_owned(), SECRET.to_owned())].into()
    }

    #[test]
    fn settings_debug_redacts_the_master_secret_and_the_store_password() {
        let settings = Settings::resolve(&repo_overrides(), &env_with_secret(), false).unwrap();
        assert_eq!(settings.master_secret, SECRET.as_bytes());
        let printed = format!("{settings:?}");
        assert!(!printed.contains(SECRET), "{printed}");
        // Nor as the byte list the derived `Debug` of a `Vec<u8>` would print.
        assert!(
            !printed.contains(&format!("{:?}", SECRET.as_bytes())),
            "{printed}"
        );
        assert!(
            printed.contains("master_secret: \"[redacted]\""),
            "{printed}"
        );
        assert!(!printed.contains("pa55word"), "{printed}");
        assert!(printed.contains("issuer: \"rolegate\""), "{printed}");
    }

    #[test]
    fn store_records_debug_redacts_their_secrets() {
        let user = crate::store::User {
            id: "u1".to_owned(),
            org_id: "o1".to_owned(),
            email: "a@b.test".to_owned(),
            role: "nanoUser".to_owned(),
            token_key: vec![0xab; 32],
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            password_hash: Some("$argon2id$v=19$secret-hash".to_owned()),
        };
        let printed = format!("{user:?}");
        assert!(!printed.contains("secret-hash"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
        assert!(printed.contains("a@b.test"), "{printed}");
        let key = crate::store::PlaybackKey {
            kid: "k1".to_owned(),
            org_id: "o1".to_owned(),
            private_key: vec![0xcd; 32],
            public_key: vec![0x01; 32],
            created_at: 0,
            retired_at: None,
            max_token_exp: 0,
        };
        let printed = format!("{key:?}");
        assert!(!printed.contains("205"), "{printed}");
        assert!(!printed.contains("cdcd"), "{printed}");
        assert!(printed.contains("k1"), "{printed}");
    }

    #[test]
    fn the_policy_tools_and_the_settings_agree_on_where_the_policies_are() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rolegate.toml");
        std::fs::write(
            &config,
            "policies_dir = \"p\"\nschema_dir = \"/abs/schema\"\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(config),
            ..Default::default()
        };
        let source = policy_source(&o).unwrap();
        assert_eq!(source.policies_dir, dir.path().join("p"));
        assert_eq!(source.schema_dir, PathBuf::from("/abs/schema"));
        let flagged = Overrides {
            policies_dir: Some(PathBuf::from("flag")),
            ..o.clone()
        };
        assert_eq!(
            policy_source(&flagged).unwrap().policies_dir,
            PathBuf::from("flag")
        );
        // `resolve` uses the same merge, then checks the directories exist.
        std::fs::create_dir(dir.path().join("p")).unwrap();
        let resolved = Overrides {
            schema_dir: Some(dir.path().join("p")),
            ..o.clone()
        };
        let settings = Settings::resolve(&resolved, &env_with_secret(), false).unwrap();
        let source = policy_source(&resolved).unwrap();
        assert_eq!(settings.policies_dir, source.policies_dir);
        assert_eq!(settings.schema_dir, source.schema_dir);
        let missing = Settings::resolve(&o, &env_with_secret(), false).unwrap_err();
        assert!(
            missing.to_string().contains("setting `schema_dir`"),
            "{missing}"
        );
    }

    #[test]
    fn the_authzen_listener_is_off_by_default_and_its_secrets_never_print() {
        let off = Settings::resolve(&repo_overrides(), &env_with_secret(), false).unwrap();
        assert!(off.authzen.is_none());
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("pep.tokens");
        let (a, b) = (
            "pep-secret-a-0123456789abcdef0123456789",
            "pep-secret-b-0123456789abcdef0123456789",
        );
        std::fs::write(&tokens, format!("{a}\n\n  {b}  \n")).unwrap();
        let o = Overrides {
            authzen_listen: Some("127.0.0.1:0".to_owned()),
            authzen_pep_token_file: Some(tokens),
            authzen_pdp_url: Some("https://pdp.example:8443/".to_owned()),
            ..repo_overrides()
        };
        let settings = Settings::resolve(&o, &env_with_secret(), false).unwrap();
        let authzen = settings.authzen.as_ref().unwrap();
        assert_eq!(authzen.pep_token_digests.len(), 2);
        assert_eq!(authzen.pdp_url.as_deref(), Some("https://pdp.example:8443"));
        let printed = format!("{settings:?}");
        assert!(!printed.contains(a) && !printed.contains(b), "{printed}");
        assert!(printed.contains("[2 redacted]"), "{printed}");
        for bad in [
            "pdp.example",
            "ftp://pdp.example",
            "https://pdp.example/tenant",
            "https://pdp.example/?x=1",
            "https://pdp.example/#f",
        ] {
            let o = Overrides {
                authzen_pdp_url: Some(bad.to_owned()),
                ..o.clone()
            };
            let e = Settings::resolve(&o, &env_with_secret(), false).unwrap_err();
            assert!(
                e.to_string().contains("setting `authzen_pdp_url`"),
                "{bad}: {e}"
            );
        }
    }

    fn with_file(lines: &str) -> (tempfile::TempDir, Overrides) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.toml");
        std::fs::write(&path, lines).unwrap();
        let o = Overrides {
            config: Some(path),
            ..repo_overrides()
        };
        (dir, o)
    }

    #[test]
    fn traces_are_off_by_default_and_a_bad_otel_setting_stops_start_up() {
        let off = Settings::resolve(&repo_overrides(), &env_with_secret(), false).unwrap();
        assert!(off.otel.is_none());
        let (_d, o) = with_file("otel_endpoint = \"\"\n");
        assert!(Settings::resolve(&o, &env_with_secret(), false)
            .unwrap()
            .otel
            .is_none());
        let (_d, o) = with_file("otel_endpoint = \"http://127.0.0.1:4317/\"\n");
        let on = Settings::resolve(&o, &env_with_secret(), false).unwrap();
        assert_eq!(
            on.otel,
            Some(crate::otel::TraceSettings {
                endpoint: "http://127.0.0.1:4317".to_owned(),
                service_name: "rolegate".to_owned(),
                sample_ratio: 1.0,
            })
        );
        for (line, setting) in [
            ("otel_endpoint = \"127.0.0.1:4317\"", "otel_endpoint"),
            (
                "otel_endpoint = \"https://collector:4317\"",
                "otel_endpoint",
            ),
            (
                "otel_endpoint = \"http://collector:4317/v1/traces\"",
                "otel_endpoint",
            ),
            ("otel_endpoint = \"http://\"", "otel_endpoint"),
            ("otel_sample_ratio = 1.5", "otel_sample_ratio"),
            ("otel_sample_ratio = -0.1", "otel_sample_ratio"),
            ("otel_sample_ratio = nan", "otel_sample_ratio"),
            ("otel_service_name = \"\"", "otel_service_name"),
            ("otel_service_name = \"role gate\"", "otel_service_name"),
        ] {
            let (_d, o) = with_file(&format!("{line}\n"));
            let e = Settings::resolve(&o, &env_with_secret(), false).unwrap_err();
            assert!(
                e.to_string().contains(&format!("setting `{setting}`")),
                "{line}: {e}"
            );
        }
    }
}
