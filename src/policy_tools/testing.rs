//! `rolegate test`: request-level policy tests. A case is an HTTP request and
//! a caller; it is decided with the live route table and the proxy's own
//! decision function ([`crate::authz::decide::decide_action`]), so a passing suite
//! means the proxy decides the same way, without a store or an upstream.
//! A case with a `playback` table is a viewer's request on the guarded
//! playback prefix, decided by the guarded path's own
//! [`crate::authz::play::decide_play`] with the playback token's claims it describes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::authn::principal::Caller;
use crate::authz::decide::decide_action;
use crate::authz::entities::RequestFacts;
use crate::authz::routes::{ResourceId, Route};
use crate::authz::{Outcome, PolicySnapshot};
use crate::request::path;

/// The caller's organisation in every case, and the other one of `other_org`.
pub const ORG: &str = "org-a";
pub const OTHER_ORG: &str = "org-b";
/// The calling user, and the user of the other organisation.
pub const USER: &str = "user-a";
pub const OTHER_USER: &str = "user-b";
/// Cases come from a loopback client; no policy of the shipped set reads it.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("unknown role `{0}`")]
    UnknownRole(String),
    #[error("unknown credential `{0}`; expected apikey, playerkey or anonymous")]
    UnknownCredential(String),
    #[error("give exactly one of `role` and `credential`")]
    Caller,
    #[error("invalid path `{path}`: {message}")]
    Path { path: String, message: String },
    #[error("playback case: {0}")]
    Playback(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read `{path}`: {message}")]
    Io { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// Who calls: a user of a role, or a credential kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerSpec {
    Role(String),
    ApiKey,
    PlayerKey,
    Anonymous,
}

impl CallerSpec {
    pub fn new(role: Option<&str>, credential: Option<&str>) -> Result<Self, ProbeError> {
        match (role, credential) {
            (Some(r), None) => Ok(CallerSpec::Role(r.to_owned())),
            (None, Some(c)) => match c.to_ascii_lowercase().as_str() {
                "apikey" | "api_key" => Ok(CallerSpec::ApiKey),
                "playerkey" | "player_key" => Ok(CallerSpec::PlayerKey),
                "anonymous" | "none" => Ok(CallerSpec::Anonymous),
                _ => Err(ProbeError::UnknownCredential(c.to_owned())),
            },
            _ => Err(ProbeError::Caller),
        }
    }

    /// The principal as the proxy's `authenticate` builds it.
    fn caller(&self, snapshot: &PolicySnapshot) -> Result<Caller, ProbeError> {
        Ok(match self {
            CallerSpec::Role(r) => {
                if !snapshot.has_role(r) {
                    return Err(ProbeError::UnknownRole(r.clone()));
                }
                Caller::user_in(USER, ORG, r)
            }
            CallerSpec::ApiKey => Caller::api_key_of(ORG),
            CallerSpec::PlayerKey => Caller::player_key_of(ORG),
            CallerSpec::Anonymous => Caller::anonymous(),
        })
    }
}

impl std::fmt::Display for CallerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerSpec::Role(r) => write!(f, "role {r}"),
            CallerSpec::ApiKey => f.write_str("apikey"),
            CallerSpec::PlayerKey => f.write_str("playerkey"),
            CallerSpec::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct Probe {
    pub caller: CallerSpec,
    pub method: String,
    /// Path with an optional `?query`.
    pub target: String,
    /// The resource belongs to another organisation.
    pub other_org: bool,
}

/// What the proxy would decide, and why.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The route that matched; none means the request is denied with `no_route`.
    pub route: Option<Arc<Route>>,
    pub resource: String,
    pub resource_org: String,
    pub outcome: Outcome,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        self.outcome.allowed
    }
}

/// Decide a probe exactly as the proxy does: normalise, match the route, build
/// the principal, resource and context, and ask [`decide_action`].
///
/// Routes whose resource is `{target}` are decided by their handler with the
/// user the body names; a probe names the caller itself (the handler's default),
/// or a user of the other organisation with `other_org`.
pub fn evaluate(snapshot: &PolicySnapshot, probe: &Probe) -> Result<Explanation, ProbeError> {
    let (raw_path, query) = match probe.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (probe.target.as_str(), None),
    };
    let norm = path::normalize(raw_path).map_err(|e| ProbeError::Path {
        path: raw_path.to_owned(),
        message: e.to_string(),
    })?;
    let caller = probe.caller.caller(snapshot)?;
    let method = probe.method.to_ascii_uppercase();
    let Some(m) = snapshot.routes.find(&method, &norm) else {
        return Ok(Explanation {
            route: None,
            resource: String::new(),
            resource_org: String::new(),
            outcome: Outcome {
                allowed: false,
                policies: vec![],
                errors: vec!["no route matches".to_owned()],
            },
        });
    };
    let route = m.route.clone();
    let resource_id = match &route.resource_id {
        ResourceId::Target if probe.other_org => OTHER_USER.to_owned(),
        ResourceId::Target => caller.user_id.as_deref().unwrap_or(USER).to_owned(),
        _ => m.resource_id().unwrap_or("").to_owned(),
    };
    // The proxy scopes upstream resources to the caller's organisation and looks
    // users up; `other_org` stands for a resource found in another organisation.
    let resource_org = if probe.other_org {
        OTHER_ORG.to_owned()
    } else {
        caller.org().unwrap_or("").to_owned()
    };
    let facts = RequestFacts {
        method: &method,
        path: &norm,
        credential: caller.kind,
        client_ip: CLIENT_IP,
        tag_filter: path::query_has_tag_filter(query),
    };
    let outcome = Outcome::clone(&decide_action(
        snapshot,
        &caller,
        &route.action,
        &route.resource_type,
        &resource_id,
        &resource_org,
        &facts,
    ));
    Ok(Explanation {
        resource: format!("{}::\"{}\"", route.resource_type, resource_id),
        route: Some(route),
        resource_org,
        outcome,
    })
}

/// The default guarded prefix of a playback case (the setting `playback_prefix`).
pub const PLAYBACK_PREFIX: &str = "/playback";

fn default_prefix() -> String {
    PLAYBACK_PREFIX.to_owned()
}

/// A viewer's request on the guarded playback prefix: the claims of the
/// (verified) playback token it carries, issued by `org-a`, and the request
/// facts those claims are checked against. Token validity (signature, expiry,
/// revocation) is decided before Cedar and is not part of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybackCase {
    /// The guarded prefix the case's path lies under (`playback_prefix`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The token's target: exactly one of `streams`, `groupid` and `orgawide`.
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    #[serde(default)]
    pub groupid: Option<String>,
    #[serde(default)]
    pub orgawide: bool,
    /// The token's `ip` claim: addresses or CIDRs the viewer may play from.
    #[serde(default)]
    pub ip: Option<Vec<String>>,
    /// The token's `domain` claim: the page (Origin/Referer host) that may embed the player.
    #[serde(default)]
    pub domain: Option<String>,
    /// The viewer's address (default: loopback).
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// The request's `Origin` and `Referer` headers.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub referer: Option<String>,
}

/// Decide a viewer's request on the guarded prefix exactly as the proxy does:
/// normalise, leave rolegate's own routes alone, take the stream from the path
/// and ask [`crate::authz::play::decide_play`].
pub fn evaluate_playback(
    snapshot: &PolicySnapshot,
    method: &str,
    target: &str,
    case: &PlaybackCase,
) -> Result<Explanation, ProbeError> {
    let raw_path = target.split_once('?').map_or(target, |(p, _)| p);
    let norm = path::normalize(raw_path).map_err(|e| ProbeError::Path {
        path: raw_path.to_owned(),
        message: e.to_string(),
    })?;
    let method = method.to_ascii_uppercase();
    let prefix = case.prefix.trim_end_matches('/');
    if !(norm == prefix || norm.starts_with(&format!("{prefix}/"))) {
        return Err(ProbeError::Playback(format!(
            "path `{norm}` is not under the playback prefix `{prefix}`"
        )));
    }
    if snapshot.routes.find(&method, &norm).is_some() {
        return Err(ProbeError::Playback(format!(
            "`{method} {norm}` is one of rolegate's own routes, not the guarded prefix"
        )));
    }
    let targets = usize::from(case.streams.is_some())
        + usize::from(case.groupid.is_some())
        + usize::from(case.orgawide);
    if targets != 1 {
        return Err(ProbeError::Playback(
            "a playback token names exactly one of `streams`, `groupid` and `orgawide`".to_owned(),
        ));
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        (http::header::ORIGIN, &case.origin),
        (http::header::REFERER, &case.referer),
    ] {
        if let Some(v) = value {
            let v = http::HeaderValue::from_str(v)
                .map_err(|_| ProbeError::Playback(format!("invalid `{name}` value")))?;
            headers.insert(name, v);
        }
    }
    let stream = crate::authz::play::stream_of(&norm, prefix);
    let resource = format!("Stream::\"{stream}\"");
    if stream.is_empty() {
        // The proxy refuses a path without a stream before asking Cedar.
        return Ok(Explanation {
            route: None,
            resource,
            resource_org: ORG.to_owned(),
            outcome: Outcome {
                allowed: false,
                policies: vec![],
                errors: vec!["no stream in the path (`no_stream`)".to_owned()],
            },
        });
    }
    let grant = crate::authn::playback_token::Grant {
        org: ORG,
        streams: case.streams.as_deref(),
        groupid: case.groupid.as_deref(),
        orgawide: case.orgawide,
        ip: case.ip.as_deref(),
        domain: case.domain.as_deref(),
    };
    let outcome = crate::authz::play::decide_play(
        snapshot,
        &grant,
        &crate::authz::play::PlayRequest {
            method: &method,
            path: &norm,
            stream,
            headers: &headers,
            client_ip: case.client_ip.unwrap_or(CLIENT_IP),
        },
    );
    Ok(Explanation {
        route: None,
        resource,
        resource_org: ORG.to_owned(),
        outcome,
    })
}

// === the suite files ===

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub other_org: bool,
    pub expect: Expect,
    /// The determining policy ids, when the case pins them.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// A viewer's request on the guarded playback prefix (no `role`/`credential`).
    #[serde(default)]
    pub playback: Option<PlaybackCase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// The default suite: `policies/tests/*.toml`.
pub fn default_files(policies_dir: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let dir = policies_dir.join("tests");
    let rd = std::fs::read_dir(&dir).map_err(|e| SuiteError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

pub fn read_cases(file: &Path) -> Result<Vec<Case>, SuiteError> {
    let text = std::fs::read_to_string(file).map_err(|e| SuiteError::Io {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    let parsed: SuiteFile = toml::from_str(&text).map_err(|e| SuiteError::Parse {
        path: file.display().to_string(),
        message: e.message().to_owned(),
    })?;
    Ok(parsed.case)
}

/// A case that did not pass, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: String,
    pub name: String,
    pub message: String,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<Failure>,
    /// Policy ids no case's decision was determined by.
    pub unexercised_policies: Vec<String>,
    /// Routes (`METHOD /template`) no case matched.
    pub unexercised_routes: Vec<String>,
}

fn decision(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Run one case; `Err` carries the failure message.
fn run_case(snapshot: &PolicySnapshot, case: &Case) -> Result<Explanation, String> {
    let ex = match &case.playback {
        Some(pb) => {
            if case.role.is_some() || case.credential.is_some() || case.other_org {
                return Err(
                    "a playback case's caller is the token's viewer: drop `role`, `credential` and `other_org`"
                        .to_owned(),
                );
            }
            evaluate_playback(snapshot, &case.method, &case.path, pb)
        }
        None => CallerSpec::new(case.role.as_deref(), case.credential.as_deref()).and_then(
            |caller| {
                let probe = Probe {
                    caller,
                    method: case.method.clone(),
                    target: case.path.clone(),
                    other_org: case.other_org,
                };
                evaluate(snapshot, &probe)
            },
        ),
    }
    .map_err(|e| e.to_string())?;
    let want = case.expect == Expect::Allow;
    let route = match (&ex.route, &case.playback) {
        (Some(r), _) => format!("{} {} → {}", r.method, r.template, r.action),
        (None, Some(_)) => format!("playback prefix → play on {}", ex.resource),
        (None, None) => "no route".to_owned(),
    };
    if ex.allowed() != want {
        return Err(format!(
            "expected {}, got {} ({route}; policies {:?}; errors {:?})",
            decision(want),
            decision(ex.allowed()),
            ex.outcome.policies,
            ex.outcome.errors
        ));
    }
    if let Some(expected) = &case.policies {
        let mut expected = expected.clone();
        expected.sort_unstable();
        if expected != ex.outcome.policies {
            return Err(format!(
                "{} as expected, but determined by {:?}, not {:?} ({route})",
                decision(want),
                ex.outcome.policies,
                expected
            ));
        }
    }
    Ok(ex)
}

/// Run every case of `files` against `snapshot`.
pub fn run(snapshot: &PolicySnapshot, files: &[PathBuf]) -> Result<Report, SuiteError> {
    let mut report = Report::default();
    let mut policies_seen = BTreeSet::new();
    let mut routes_seen = BTreeSet::new();
    for file in files {
        for case in read_cases(file)? {
            match run_case(snapshot, &case) {
                Ok(ex) => {
                    report.passed += 1;
                    policies_seen.extend(ex.outcome.policies.iter().cloned());
                    if let Some(r) = &ex.route {
                        routes_seen.insert(r.index);
                    }
                }
                Err(message) => report.failures.push(Failure {
                    file: file.display().to_string(),
                    name: case.name.clone(),
                    message,
                }),
            }
        }
    }
    report.unexercised_policies = snapshot
        .policies
        .policies()
        .map(|p| p.id().to_string())
        .filter(|id| !policies_seen.contains(id))
        .collect();
    report.unexercised_policies.sort_unstable();
    report.unexercised_routes = snapshot
        .routes
        .routes()
        .iter()
        .filter(|r| !routes_seen.contains(&r.index))
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    Ok(report)
}
