//! `rolegate test`: request-level policy tests. A case is an HTTP request and
//! a caller; it is decided with the live route table and the proxy's own
//! decision function ([`crate::proxy::decide_action`]), so a passing suite
//! means the proxy decides the same way, without a store or an upstream.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::credential::CredentialKind;
use crate::path;
use crate::policy::entities::{self, RequestFacts};
use crate::policy::routes::{ResourceId, Route};
use crate::policy::{Outcome, PolicySnapshot};
use crate::proxy::{decide_action, Caller};

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
        let org: Arc<str> = Arc::from(ORG);
        Ok(match self {
            CallerSpec::Role(r) => {
                if !snapshot.has_role(r) {
                    return Err(ProbeError::UnknownRole(r.clone()));
                }
                Caller {
                    kind: CredentialKind::UserToken,
                    entity: entities::user(USER, r, ORG),
                    user_id: Some(Arc::from(USER)),
                    org: Some(org),
                    role: Some(Arc::from(r.as_str())),
                }
            }
            CallerSpec::ApiKey => Caller {
                kind: CredentialKind::ApiKey,
                entity: entities::api_key(ORG),
                user_id: None,
                org: Some(org),
                role: Some(Arc::from(crate::store::ADMIN_ROLE)),
            },
            CallerSpec::PlayerKey => Caller {
                kind: CredentialKind::PlayerKey,
                entity: entities::player_key(ORG),
                user_id: None,
                org: Some(org),
                role: None,
            },
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
    pub route: Option<Route>,
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
        caller.org.as_deref().unwrap_or("").to_owned()
    };
    let facts = RequestFacts {
        method: &method,
        path: &norm,
        credential: caller.kind,
        client_ip: CLIENT_IP,
        tag_filter: path::query_has_tag_filter(query),
    };
    let outcome = decide_action(
        snapshot,
        &caller,
        &route.action,
        &route.resource_type,
        &resource_id,
        &resource_org,
        &facts,
    );
    Ok(Explanation {
        resource: format!("{}::\"{}\"", route.resource_type, resource_id),
        route: Some(route),
        resource_org,
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
    let caller = CallerSpec::new(case.role.as_deref(), case.credential.as_deref())
        .map_err(|e| e.to_string())?;
    let probe = Probe {
        caller,
        method: case.method.clone(),
        target: case.path.clone(),
        other_org: case.other_org,
    };
    let ex = evaluate(snapshot, &probe).map_err(|e| e.to_string())?;
    let want = case.expect == Expect::Allow;
    let route = ex
        .route
        .as_ref()
        .map(|r| format!("{} {} → {}", r.method, r.template, r.action))
        .unwrap_or_else(|| "no route".to_owned());
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
