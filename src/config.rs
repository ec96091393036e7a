//! Settings: a TOML file (`--config`), overridden by `ROLEGATE_*` environment
//! variables, overridden by flags. Raw values are validated once into
//! [`Settings`]; a missing or bad value stops start-up with a message naming
//! the setting (exit code 64, as sysexits' EX_USAGE).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use serde::Deserialize;

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
/// Invites are valid for 7 days and single-use.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 7 * 24 * 3600;
/// Shortest master secret accepted (256 bits).
pub const MIN_MASTER_SECRET_LEN: usize = 32;

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
/// the file and the defaults fill the gaps.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// TOML config file
    #[arg(long, env = "ROLEGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data listener address
    #[arg(long, env = "ROLEGATE_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Ops listener address (/live, /ready, /metrics, /status, /reload)
    #[arg(long, env = "ROLEGATE_OPS_LISTEN", global = true)]
    pub ops_listen: Option<String>,
    /// Upstream base URL (http://host:port)
    #[arg(long, env = "ROLEGATE_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// Store: a SQLite file path, or a postgres:// URL
    #[arg(long, env = "ROLEGATE_STORE", global = true)]
    pub store: Option<String>,
    /// File holding the master secret (alternative: ROLEGATE_MASTER_SECRET)
    #[arg(long, env = "ROLEGATE_MASTER_SECRET_FILE", global = true)]
    pub master_secret_file: Option<PathBuf>,
    /// Directory of policy files, routes.toml and roles.toml
    #[arg(long, env = "ROLEGATE_POLICIES_DIR", global = true)]
    pub policies_dir: Option<PathBuf>,
    /// Directory of Cedar schema files
    #[arg(long, env = "ROLEGATE_SCHEMA_DIR", global = true)]
    pub schema_dir: Option<PathBuf>,
    /// Worker threads of the runtime (default: one per core)
    #[arg(long, env = "ROLEGATE_WORKER_THREADS", global = true)]
    pub worker_threads: Option<usize>,
    /// SIGTERM grace period for in-flight requests, in seconds
    #[arg(long, env = "ROLEGATE_DRAIN_SECONDS", global = true)]
    pub drain_seconds: Option<u64>,
    /// Benchmark only: forward every request without authorization
    #[arg(long, env = "ROLEGATE_PASSTHROUGH", global = true)]
    pub passthrough: Option<bool>,
}

/// The config file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub ops_listen: Option<String>,
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
    pub passthrough: Option<bool>,
    pub invite_ttl_secs: Option<u64>,
    pub playback_prefix: Option<String>,
    pub shadow_policies_dir: Option<PathBuf>,
    pub forward_credentials: Option<bool>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
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
    pub passthrough: bool,
    pub invite_ttl: Duration,
    pub playback_prefix: Option<String>,
    pub shadow_policies_dir: Option<PathBuf>,
    pub forward_credentials: bool,
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

impl Settings {
    /// Merge flags/env (`o`), the config file and defaults, then validate.
    /// `need_upstream`: whether the command forwards requests.
    pub fn resolve(
        o: &Overrides,
        env: &dyn Env,
        need_upstream: bool,
    ) -> Result<Settings, ConfigError> {
        let file = match &o.config {
            Some(p) => read_file_config(p)?,
            None => FileConfig::default(),
        };
        let base = o.config.as_deref().and_then(Path::parent);

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

        let upstream =
            match o.upstream.clone().or(file.upstream.clone()) {
                Some(u) => {
                    let uri: http::Uri = u
                        .parse()
                        .map_err(|_| invalid("upstream", format!("`{u}` is not a URL")))?;
                    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                        return Err(invalid(
                            "upstream",
                            format!("`{u}` must be an http://host:port URL"),
                        ));
                    }
                    if uri.path() != "/" && !uri.path().is_empty() {
                        return Err(invalid("upstream", format!("`{u}` must not have a path")));
                    }
                    Some(uri)
                }
                None if need_upstream => return Err(invalid(
                    "upstream",
                    "missing: set `upstream` in the config file, ROLEGATE_UPSTREAM or --upstream",
                )),
                None => None,
            };

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

        let secret_file = o
            .master_secret_file
            .clone()
            .or_else(|| file.master_secret_file.clone().map(|p| rel(base, p)));
        let master_secret = match (secret_file, env.var("ROLEGATE_MASTER_SECRET")) {
            (Some(path), _) => std::fs::read(&path)
                .map_err(|e| invalid("master_secret_file", format!("cannot read `{}`: {e}", path.display())))?
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

        let policies_dir = o
            .policies_dir
            .clone()
            .or_else(|| file.policies_dir.clone().map(|p| rel(base, p)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICIES_DIR));
        let schema_dir = o
            .schema_dir
            .clone()
            .or_else(|| file.schema_dir.clone().map(|p| rel(base, p)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SCHEMA_DIR));
        if !policies_dir.is_dir() {
            return Err(invalid(
                "policies_dir",
                format!("`{}` is not a directory", policies_dir.display()),
            ));
        }
        if !schema_dir.is_dir() {
            return Err(invalid(
                "schema_dir",
                format!("`{}` is not a directory", schema_dir.display()),
            ));
        }

        let secs = |setting: &'static str,
                    v: Option<u64>,
                    default: u64,
                    min: u64|
         -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v < min {
                return Err(invalid(setting, format!("must be at least {min}")));
            }
            Ok(Duration::from_secs(v))
        };

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

        Ok(Settings {
            listen,
            ops_listen,
            upstream,
            store,
            master_secret,
            policies_dir,
            schema_dir,
            issuer,
            audience,
            token_ttl: secs(
                "token_ttl_secs",
                file.token_ttl_secs,
                DEFAULT_TOKEN_TTL_SECS,
                1,
            )?,
            leeway: secs("leeway_secs", file.leeway_secs, DEFAULT_LEEWAY_SECS, 0)?,
            cache_ttl: secs(
                "cache_ttl_secs",
                file.cache_ttl_secs,
                DEFAULT_CACHE_TTL_SECS,
                1,
            )?,
            cache_capacity: file.cache_capacity.unwrap_or(DEFAULT_CACHE_CAPACITY).max(1),
            negative_cache_ttl: secs(
                "negative_cache_ttl_secs",
                file.negative_cache_ttl_secs,
                DEFAULT_NEGATIVE_TTL_SECS,
                1,
            )?,
            worker_threads,
            drain: secs(
                "drain_seconds",
                o.drain_seconds.or(file.drain_seconds),
                DEFAULT_DRAIN_SECS,
                0,
            )?,
            trusted_proxies,
            upstream_timeout: secs(
                "upstream_timeout_secs",
                file.upstream_timeout_secs,
                DEFAULT_UPSTREAM_TIMEOUT_SECS,
                1,
            )?,
            max_body_bytes: file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            passthrough: o.passthrough.or(file.passthrough).unwrap_or(false),
            invite_ttl: secs(
                "invite_ttl_secs",
                file.invite_ttl_secs,
                DEFAULT_INVITE_TTL_SECS,
                1,
            )?,
            playback_prefix,
            shadow_policies_dir: file.shadow_policies_dir.clone().map(|p| rel(base, p)),
            forward_credentials: file.forward_credentials.unwrap_or(false),
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

    pub fn policy_source(&self) -> crate::authz::PolicySource {
        crate::authz::PolicySource {
            policies_dir: self.policies_dir.clone(),
            schema_dir: self.schema_dir.clone(),
        }
    }
}
