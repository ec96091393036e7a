//! The request path of the data listener:
//!
//! ```text
//! path ─► route ─► credential ─► principal ─► Cedar ─► forward (or a local handler)
//! ```
//!
//! Every step that fails answers with an [`ApiError`]; nothing fails open.

pub mod playback;
pub mod upstream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::authn::credential::{self, Credential, CredentialKind};
use crate::authn::principal::Caller;
use crate::authn::single_flight::Source;
use crate::authn::token;
use crate::authz::decide::{decide_action, log_deny};
use crate::authz::entities::RequestFacts;
use crate::authz::routes::{Handler, ResourceId, Route};
use crate::authz::PolicySnapshot;
use crate::error::{ApiError, LocalBody};
use crate::forward::{self, Identity};
use crate::metrics::Stage;
use crate::proxy::upstream::UpstreamBody;
use crate::request::path;

pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

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
            user.verify(&parsed, &state.tokens, crate::clock::unix_now())?;
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
    let client_ip = crate::request::client_addr::client_ip(
        peer.ip(),
        req.headers(),
        &state.settings.trusted_proxies,
    );
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
        && crate::request::client_addr::is_trusted(peer.ip(), &state.settings.trusted_proxies)
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
            return Box::pin(playback::guarded(
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

    let endpoint = match route.handler {
        Handler::Upstream => {
            let resp = forward(state, req, &path_and_query, &caller, request_id, client_ip).await?;
            state.metrics.count_forwarded();
            return Ok(resp);
        }
        Handler::Local(endpoint) => endpoint,
    };

    let ctx = RequestCtx {
        caller,
        request_id: request_id.clone(),
        client_ip,
        path: path.into_owned(),
        route,
        params,
        snapshot,
    };
    let resp: Response<LocalBody> =
        Box::pin(crate::api::dispatch(state, ctx, endpoint, req)).await?;
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
