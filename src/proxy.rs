//! The request path of the data listener:
//!
//! ```text
//! path ─► route ─► credential ─► principal ─► Cedar ─► forward (or a local handler)
//! ```
//!
//! Every step that fails answers with an [`ApiError`]; nothing fails open.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cedar_policy::Entity;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::credential::{self, Credential, CredentialKind};
use crate::error::{ApiError, LocalBody};
use crate::forward::{self, Identity};
use crate::metrics::Stage;
use crate::path;
use crate::policy::decisions::{self, DecisionInputs};
use crate::policy::entities::{self, RequestFacts};
use crate::policy::routes::{ResourceId, Route};
use crate::policy::{Outcome, PolicySnapshot};
use crate::single_flight::Source;
use crate::token;
use crate::upstream::UpstreamBody;

pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// The authenticated caller of a request.
#[derive(Clone)]
pub struct Caller {
    pub kind: CredentialKind,
    pub user_id: Option<Arc<str>>,
    pub org: Option<Arc<str>>,
    /// The current role (users), `nanoAdmin` (API key), or none.
    pub role: Option<Arc<str>>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            kind: CredentialKind::Anonymous,
            user_id: None,
            org: None,
            role: None,
        }
    }

    /// The caller as a Cedar principal. Built when a decision is evaluated,
    /// not kept per cache entry: decisions are mostly answered from the
    /// decision cache, and an `Entity` per cached user (attribute map,
    /// ancestor set) costs ~2 KiB, which 100,000 cached users would feel.
    pub fn entity(&self) -> Entity {
        let org = self.org.as_deref().unwrap_or("");
        match self.kind {
            CredentialKind::UserToken => entities::user(
                self.user_id.as_deref().unwrap_or(""),
                self.role.as_deref().unwrap_or(""),
                org,
            ),
            CredentialKind::ApiKey => entities::api_key(org),
            CredentialKind::PlayerKey => entities::player_key(org),
            CredentialKind::Anonymous => entities::anonymous(),
        }
    }

    /// The principal's entity type and id, as `entity()` builds them.
    fn principal_key(&self) -> (&'static str, &str) {
        let org = self.org.as_deref().unwrap_or("");
        match self.kind {
            CredentialKind::UserToken => ("User", self.user_id.as_deref().unwrap_or("")),
            CredentialKind::ApiKey => ("ApiKey", org),
            CredentialKind::PlayerKey => ("PlayerKey", org),
            CredentialKind::Anonymous => ("Anonymous", "anonymous"),
        }
    }

    /// A name for audit records: the user id, or the key that acted.
    pub fn actor(&self) -> String {
        match (&self.user_id, &self.org, self.kind) {
            (Some(u), _, _) => format!("user:{u}"),
            (None, Some(o), CredentialKind::ApiKey) => format!("apikey:{o}"),
            (None, Some(o), CredentialKind::PlayerKey) => format!("playerkey:{o}"),
            _ => "anonymous".to_owned(),
        }
    }
}

/// Everything a local handler gets about the request it answers.
pub struct RequestCtx {
    pub caller: Caller,
    pub request_id: HeaderValue,
    pub client_ip: std::net::IpAddr,
    pub path: String,
    pub route: Arc<Route>,
    /// Path parameters of the matched route.
    pub params: Vec<(String, String)>,
    pub snapshot: Arc<PolicySnapshot>,
}

impl RequestCtx {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    /// Decide `action` on a resource with the live snapshot of this request.
    pub fn authorize(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        resource_org: &str,
    ) -> Result<(), ApiError> {
        let facts = RequestFacts {
            method: self.route.method.as_str(),
            path: &self.path,
            credential: self.caller.kind,
            client_ip: self.client_ip,
            tag_filter: false,
        };
        let outcome = decide_action(
            &self.snapshot,
            &self.caller,
            action,
            resource_type,
            resource_id,
            resource_org,
            &facts,
        );
        if outcome.allowed {
            Ok(())
        } else {
            log_deny(
                self.request_id(),
                &self.route,
                action,
                &format!("{resource_type}::\"{resource_id}\""),
                &self.caller,
                &outcome,
            );
            Err(ApiError::Denied("policy_deny"))
        }
    }
}

/// The route-level decision, as a pure function of the snapshot: the proxy, `rolegate test`
/// and `rolegate explain` all decide through it, so the tools cannot drift from the proxy.
pub fn decide_action(
    snapshot: &PolicySnapshot,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    resource_org: &str,
    facts: &RequestFacts<'_>,
) -> Arc<Outcome> {
    let Some(action_uid) = snapshot.action(action) else {
        return Arc::new(Outcome {
            allowed: false,
            policies: vec![],
            errors: vec![format!("unknown action `{action}`")],
        });
    };
    // The key holds every input the principal, resource and context are
    // built from (`Caller::entity` is built from its kind, id, role and org),
    // ids abstracted unless a policy names them (see `decisions`).
    let (principal_type, principal_id) = caller.principal_key();
    let looked_up = snapshot.decisions.lookup(|k| {
        decisions::write_key(
            k,
            &DecisionInputs {
                action,
                principal_type,
                principal_id,
                role: caller.role.as_deref(),
                org: caller.org.as_deref(),
                resource_type,
                resource_id,
                resource_org,
                facts,
            },
            snapshot.context_needs,
            &snapshot.named_ids,
        )
    });
    let key = match looked_up {
        Ok(known) => return known,
        Err(key) => key,
    };
    let resource = entities::resource(resource_type, resource_id, resource_org);
    let outcome = snapshot.decide_as(
        caller.role.as_deref(),
        caller.entity(),
        action_uid,
        resource,
        snapshot.context(facts),
    );
    let outcome = Arc::new(outcome);
    // An error names the entities it met, which the key may have abstracted.
    if outcome.errors.is_empty() {
        snapshot.decisions.insert(key, outcome.clone());
    }
    outcome
}

/// The one structured line of a deny: the same facts `rolegate explain` prints.
fn log_deny(
    request_id: &str,
    route: &Route,
    action: &str,
    resource: &str,
    caller: &Caller,
    outcome: &Outcome,
) {
    tracing::info!(
        request_id,
        route = %format_args!("{} {}", route.method, route.template),
        action,
        resource,
        principal = %caller.actor(),
        role = caller.role.as_deref().unwrap_or(""),
        policies = ?outcome.policies,
        errors = ?outcome.errors,
        "deny"
    );
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who is calling: verify the credential and look the principal up (cache, then store).
pub async fn authenticate(state: &AppState, cred: &Credential<'_>) -> Result<Caller, ApiError> {
    match cred {
        Credential::Anonymous => Ok(Caller::anonymous()),
        Credential::UserToken(t) => {
            let parsed = token::parse(t)?;
            let started = Instant::now();
            let lookup = state.cache.user(parsed.kid()).await?;
            state
                .metrics
                .observe(Stage::Cache, started.elapsed().as_secs_f64());
            match lookup.source {
                Source::Cached => state.metrics.cache_hits.inc(),
                Source::Read => state.metrics.cache_misses.inc(),
                Source::Joined => state.metrics.cache_joined.inc(),
            };
            let user = lookup
                .value
                .ok_or(ApiError::UnknownPrincipal("unknown_user"))?;
            user.verify(&parsed, &state.tokens, unix_now())?;
            Ok(Caller {
                kind: CredentialKind::UserToken,
                user_id: Some(user.id.clone()),
                org: Some(user.org.clone()),
                role: Some(user.role.clone()),
            })
        }
        Credential::ApiKey(k) => {
            let org = state
                .cache
                .api_key(k)
                .await?
                .value
                .ok_or(ApiError::UnknownPrincipal("unknown_api_key"))?;
            Ok(Caller {
                kind: CredentialKind::ApiKey,
                user_id: None,
                org: Some(org.org),
                role: Some(Arc::from(crate::store::ADMIN_ROLE)),
            })
        }
        Credential::PlayerKey(k) => {
            let org = state
                .cache
                .player_key(k)
                .await?
                .value
                .ok_or(ApiError::UnknownPrincipal("unknown_player_key"))?;
            Ok(Caller {
                kind: CredentialKind::PlayerKey,
                user_id: None,
                org: Some(org.org),
                role: None,
            })
        }
    }
}

/// The organisation a route's resource belongs to. Upstream resources are
/// scoped to the caller's organisation (the upstream is told which one in a
/// header it can trust); users are looked up, so a user of another
/// organisation is denied by the tenant-isolation policy.
async fn resource_org(
    state: &AppState,
    route: &Route,
    id: &str,
    caller: &Caller,
) -> Result<Arc<str>, ApiError> {
    let own = caller.org.clone().unwrap_or_else(|| Arc::from(""));
    if route.resource_type == "User" {
        if let Some(u) = state.store.user(id).await? {
            return Ok(Arc::from(u.org_id.as_str()));
        }
    }
    Ok(own)
}

/// What the decision step hands on: the caller, the matched route and the snapshot it was decided with.
pub struct Authorized {
    pub caller: Caller,
    pub route: Arc<Route>,
    /// Path parameters, for local handlers (empty for forwarded routes).
    pub params: Vec<(String, String)>,
    pub snapshot: Arc<PolicySnapshot>,
}

/// Credential → principal → route → Cedar, for a request already normalised.
/// The proxy and the forward-auth endpoint both decide through this.
pub async fn authorize(
    state: &Arc<AppState>,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    client_ip: std::net::IpAddr,
    request_id: &HeaderValue,
) -> Result<Authorized, ApiError> {
    let snapshot = state.policies.current();
    let started = Instant::now();
    let cred = credential::extract(headers)?;
    let caller = authenticate(state, &cred).await?;
    state
        .metrics
        .observe(Stage::Credential, started.elapsed().as_secs_f64());

    let Some(m) = snapshot.routes.find(method, path) else {
        tracing::info!(
            request_id = request_id.to_str().unwrap_or(""),
            method,
            path = %path,
            principal = %caller.actor(),
            "deny: no route"
        );
        return Err(ApiError::Denied("no_route"));
    };
    let route = m.route.clone();
    // Only local handlers read the parameters; forwarded routes skip the copies.
    let params: Vec<(String, String)> = if route.is_upstream() {
        Vec::new()
    } else {
        m.params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };

    // Routes whose resource is named in the body are decided by their handler.
    if route.resource_id != ResourceId::Target {
        let resource_id = m.resource_id().unwrap_or("").to_owned();
        let org = resource_org(state, &route, &resource_id, &caller).await?;
        let facts = RequestFacts {
            method,
            path,
            credential: caller.kind,
            client_ip,
            tag_filter: path::query_has_tag_filter(query),
        };
        let decided = Instant::now();
        let outcome = decide_action(
            &snapshot,
            &caller,
            &route.action,
            &route.resource_type,
            &resource_id,
            &org,
            &facts,
        );
        state
            .metrics
            .observe(Stage::Decision, decided.elapsed().as_secs_f64());
        state.shadow_compare(
            &caller,
            &route,
            &resource_id,
            &org,
            &facts,
            &outcome,
            request_id,
        );
        if !outcome.allowed {
            log_deny(
                request_id.to_str().unwrap_or(""),
                &route,
                &route.action,
                &format!("{}::\"{resource_id}\"", route.resource_type),
                &caller,
                &outcome,
            );
            // Without a credential the fix is to bring one: 401, not 403.
            if caller.kind == CredentialKind::Anonymous {
                return Err(ApiError::UnknownPrincipal("credential_required"));
            }
            return Err(ApiError::Denied("policy_deny"));
        }
    }

    Ok(Authorized {
        caller,
        route,
        params,
        snapshot,
    })
}

/// The whole request path. Never panics, never fails open.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let request_id = state.next_request_id();
    match handle_inner(&state, req, peer, &request_id).await {
        Ok(resp) => resp,
        Err(e) => {
            let (status, _, reason) = e.parts();
            if status.is_server_error() {
                tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = %e, "request failed");
            } else {
                tracing::debug!(request_id = request_id.to_str().unwrap_or(""), error = %e, "request refused");
            }
            state.metrics.count(
                if status == StatusCode::FORBIDDEN {
                    "deny"
                } else {
                    "error"
                },
                reason,
            );
            e.into_response(Some(&request_id)).map(Either::Right)
        }
    }
}

async fn handle_inner(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    request_id: &HeaderValue,
) -> Result<Response<ProxyBody>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::NotReady);
    }
    let client_ip =
        crate::client_addr::client_ip(peer.ip(), req.headers(), &state.settings.trusted_proxies);
    // A clone of the URI (a reference count) lets the path and query borrow
    // from it while `req` moves on: a normal path, the common case, then costs
    // no allocation here.
    let uri = req.uri().clone();
    let path = path::normalize(uri.path()).map_err(|e| ApiError::BadRequest {
        reason: e.reason(),
        message: format!("Invalid request path: {e}"),
        userinfo: serde_json::json!({}),
    })?;
    let query = uri.query();
    let path_and_query: Cow<'_, str> = match (&path, query) {
        (Cow::Borrowed(_), _) => Cow::Borrowed(uri.path_and_query().map_or("/", |pq| pq.as_str())),
        (Cow::Owned(p), Some(q)) => Cow::Owned(format!("{p}?{q}")),
        (Cow::Owned(p), None) => Cow::Borrowed(p.as_str()),
    };
    if let Some(len) = req.headers().get(http::header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        if len > state.settings.max_body_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
    }

    // Forward-auth questions are only taken from trusted proxies; from anyone
    // else this path is an ordinary request (no route: denied).
    if path == crate::forward_auth::PATH
        && crate::client_addr::is_trusted(peer.ip(), &state.settings.trusted_proxies)
    {
        // Rare branches are boxed: the request future is as large as its
        // largest branch, and hyper keeps one per open connection.
        return Box::pin(crate::forward_auth::handle(
            state,
            req.headers(),
            client_ip,
            request_id,
        ))
        .await
        .map(|r| r.map(Either::Right));
    }

    if state.settings.passthrough {
        return forward(
            state,
            req,
            &path_and_query,
            &Caller::anonymous(),
            request_id,
            client_ip,
        )
        .await;
    }

    // Playback prefix: decided with the playback token's facts (see playback.rs).
    if let Some(prefix) = &state.settings.playback_prefix {
        let under_prefix = path
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        // rolegate's own routes (e.g. POST /playback/token) win over the
        // prefix; only paths under it pay for that extra route lookup.
        if under_prefix
            && state
                .policies
                .current()
                .routes
                .find(req.method().as_str(), &path)
                .is_none()
        {
            return Box::pin(crate::handlers::guarded_playback(
                state,
                req,
                &path,
                &path_and_query,
                request_id,
                client_ip,
            ))
            .await;
        }
    }

    let decided = authorize(
        state,
        req.method().as_str(),
        &path,
        query,
        req.headers(),
        client_ip,
        request_id,
    )
    .await?;
    let Authorized {
        caller,
        route,
        params,
        snapshot,
    } = decided;

    if route.is_upstream() {
        let resp = forward(state, req, &path_and_query, &caller, request_id, client_ip).await?;
        state.metrics.count_forwarded();
        return Ok(resp);
    }

    let ctx = RequestCtx {
        caller,
        request_id: request_id.clone(),
        client_ip,
        path: path.into_owned(),
        route,
        params,
        snapshot,
    };
    let resp: Response<LocalBody> = Box::pin(crate::handlers::dispatch(state, ctx, req)).await?;
    state.metrics.count("allow", "local");
    Ok(resp.map(Either::Right))
}

async fn forward(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    path_and_query: &str,
    caller: &Caller,
    request_id: &HeaderValue,
    client_ip: std::net::IpAddr,
) -> Result<Response<ProxyBody>, ApiError> {
    let identity = Identity {
        user_id: caller.user_id.as_deref(),
        org_id: caller.org.as_deref(),
        role: caller.role.as_deref(),
        credential: caller.kind.as_str(),
    };
    forward_as(state, req, path_and_query, &identity, request_id, client_ip).await
}

/// Forward with an explicit identity (guarded playback has no `Caller`).
pub(crate) async fn forward_as(
    state: &Arc<AppState>,
    mut req: Request<Incoming>,
    path_and_query: &str,
    identity: &Identity<'_>,
    request_id: &HeaderValue,
    client_ip: std::net::IpAddr,
) -> Result<Response<ProxyBody>, ApiError> {
    let upstream = state
        .upstream
        .as_ref()
        .ok_or_else(|| ApiError::UpstreamUnreachable("no upstream configured".to_owned()))?;
    let headers = req.headers_mut();
    forward::strip_request(headers, state.settings.forward_credentials);
    forward::set_identity(headers, identity, request_id, client_ip);
    if req.method() == Method::CONNECT {
        return Err(ApiError::Denied("method_not_allowed"));
    }
    let started = Instant::now();
    let mut resp = upstream.send(req, path_and_query).await?;
    state
        .metrics
        .observe(Stage::Upstream, started.elapsed().as_secs_f64());
    resp.headers_mut()
        .insert(forward::REQUEST_ID_NAME, request_id.clone());
    Ok(resp.map(Either::Left))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of a GET with a user token from loopback.
    fn get_facts(path: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path,
            credential: CredentialKind::UserToken,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            tag_filter: false,
        }
    }

    /// A caller with a user token.
    fn user_caller(id: &str, org: &str, role: &str) -> Caller {
        Caller {
            kind: CredentialKind::UserToken,
            user_id: Some(Arc::from(id)),
            org: Some(Arc::from(org)),
            role: Some(Arc::from(role)),
        }
    }

    /// The decision cache keys a decision by `principal_key`, and Cedar sees
    /// `entity()`: they must name the same principal, or two callers could
    /// share a cached decision.
    #[test]
    fn the_decision_key_names_the_principal_cedar_sees() {
        let member = |kind| Caller {
            kind,
            user_id: (kind == CredentialKind::UserToken).then(|| Arc::from("u-1")),
            org: (kind != CredentialKind::Anonymous).then(|| Arc::from("org-1")),
            role: Some(Arc::from("nanoUser")),
        };
        for kind in [
            CredentialKind::UserToken,
            CredentialKind::ApiKey,
            CredentialKind::PlayerKey,
            CredentialKind::Anonymous,
        ] {
            let caller = member(kind);
            let uid = caller.entity().uid();
            let (type_name, id) = caller.principal_key();
            assert_eq!(uid.type_name().basename(), type_name, "{kind:?}");
            assert_eq!(uid.id().unescaped(), id, "{kind:?}");
        }
    }

    /// A repeated decision comes from the snapshot's cache (the very same
    /// outcome), equals what evaluation says, and a reload starts empty.
    #[test]
    fn a_repeated_decision_is_answered_from_the_snapshot_cache() {
        let store = crate::policy::shipped();
        let caller = user_caller("u-1", "org-1", "nanoReadOnly");
        let facts = get_facts("/stream/s1");
        let decide = |snap: &PolicySnapshot, action: &str| {
            decide_action(snap, &caller, action, "Stream", "s1", "org-1", &facts)
        };
        let snap = store.current();
        let first = decide(&snap, "getStream");
        let again = decide(&snap, "getStream");
        assert!(first.allowed);
        assert!(
            Arc::ptr_eq(&first, &again),
            "second decision was evaluated again"
        );
        // Another action is another key, with its own (denied) answer.
        assert!(!decide(&snap, "deleteStream").allowed);
        // A new snapshot (a reload) evaluates afresh and agrees.
        store.reload().unwrap();
        let fresh = decide(&store.current(), "getStream");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert_eq!(first.allowed, fresh.allowed);
        assert_eq!(first.policies, fresh.policies);
    }

    /// Decision keys abstract the ids no policy names (see `decisions`): a
    /// grid of callers and resources, some named by policies and some not,
    /// decided through the cache in two orders on fresh snapshots, must give
    /// exactly what evaluating each request afresh gives.
    #[test]
    fn cached_decisions_with_abstracted_ids_equal_evaluation() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(root.join("policies")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(
            dir.path().join("named.cedar"),
            r#"
@id("vip-may-delete")
permit (principal == User::"u-vip", action == Action::"deleteStream", resource);

@id("secret-stream")
forbid (principal, action == Action::"getStream", resource == Stream::"s-secret");

@id("locked-org")
forbid (principal, action in Action::"operate", resource)
when { resource has org && resource.org == Organisation::"org-locked" };

@id("users-see-themselves")
permit (principal is User, action == Action::"getUser", resource)
when { principal == resource };
"#,
        )
        .unwrap();
        let store = crate::policy::PolicyStore::open(crate::policy::PolicySource {
            policies_dir: dir.path().to_owned(),
            schema_dir: root.join("schema"),
        })
        .unwrap();

        let users = ["u1", "u2", "u-vip"];
        let orgs = ["org-a", "org-b", "org-locked"];
        let mut callers = Vec::new();
        for user in users {
            for role in ["nanoAdmin", "nanoUser", "nanoReadOnly"] {
                for org in orgs {
                    callers.push(user_caller(user, org, role));
                }
            }
        }
        for org in orgs {
            callers.push(Caller {
                kind: CredentialKind::ApiKey,
                user_id: None,
                org: Some(Arc::from(org)),
                role: Some(Arc::from(crate::store::ADMIN_ROLE)),
            });
        }
        let mut targets: Vec<(&str, &str, &str, &str)> = Vec::new();
        for action in ["getStream", "deleteStream", "setStreamTags"] {
            for stream in ["s1", "s2", "s-secret"] {
                for org in orgs {
                    targets.push((action, "Stream", stream, org));
                }
            }
        }
        for user in users {
            for org in orgs {
                targets.push(("getUser", "User", user, org));
            }
        }
        for org in orgs {
            targets.push(("getOrganisation", "OrgResource", "organisation", org));
            targets.push(("getPlayerKey", "OrgResource", "playerkey", org));
        }
        let facts = get_facts("/x");
        let mut grid = Vec::new();
        for c in &callers {
            for t in &targets {
                grid.push((c, *t));
            }
        }

        let (mut allowed, mut denied) = (0, 0);
        for reversed in [false, true] {
            store.reload().unwrap();
            let snap = store.current();
            let order: Vec<_> = if reversed {
                grid.iter().rev().collect()
            } else {
                grid.iter().collect()
            };
            for (caller, (action, rtype, rid, rorg)) in order {
                let cached = decide_action(&snap, caller, action, rtype, rid, rorg, &facts);
                let fresh = snap.decide_as(
                    caller.role.as_deref(),
                    caller.entity(),
                    snap.action(action).unwrap(),
                    entities::resource(rtype, rid, rorg),
                    snap.context(&facts),
                );
                assert_eq!(
                    (cached.allowed, &cached.policies, &cached.errors),
                    (fresh.allowed, &fresh.policies, &fresh.errors),
                    "{:?} {:?} {:?} on {action} {rtype}::{rid} in {rorg}",
                    caller.user_id,
                    caller.role,
                    caller.org
                );
                if fresh.allowed {
                    allowed += 1;
                } else {
                    denied += 1;
                }
            }
        }
        assert!(
            allowed > 100 && denied > 100,
            "{allowed} allowed, {denied} denied"
        );

        // Unnamed callers of one shape share one cached outcome; a named one does not.
        let snap = store.current();
        let member = |user: &str, org: &str| user_caller(user, org, "nanoUser");
        let first = decide_action(
            &snap,
            &member("u1", "org-a"),
            "deleteStream",
            "Stream",
            "s1",
            "org-a",
            &facts,
        );
        let other = decide_action(
            &snap,
            &member("u2", "org-b"),
            "deleteStream",
            "Stream",
            "s2",
            "org-b",
            &facts,
        );
        let vip = decide_action(
            &snap,
            &member("u-vip", "org-a"),
            "deleteStream",
            "Stream",
            "s1",
            "org-a",
            &facts,
        );
        assert!(
            Arc::ptr_eq(&first, &other),
            "same shape was evaluated again"
        );
        assert!(!first.allowed && vip.allowed);
    }
}
