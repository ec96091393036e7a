//! The one question every front door asks: may the caller who presents these
//! credentials send this request?
//!
//! ```text
//! Question ─► credential ─► principal ─► route ─► Cedar ─► Verdict
//!             (authn)       (authn:      (authz:  (authz)   Forward(Allowed) | Local
//!                            cache/store) table)
//! ```
//!
//! [`Decider::decide`] answers it for the proxy and forward-auth alike, and
//! [`Decider::play`] for the guarded playback prefix. `rolegate test` and
//! `explain` run the same pure steps (route match, [`crate::authz::decide`])
//! without a store. Forwarding needs an [`Allowed`], which only an allow
//! decision produces ([`allowed`]).

pub mod allowed;
pub mod forwarding;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};

pub use allowed::{Allowed, Decision, PlaybackGrant};

use crate::authn::cache::PrincipalCache;
use crate::authn::credential::{self, Credential, CredentialKind};
use crate::authn::playback_token;
use crate::authn::principal::Caller;
use crate::authn::single_flight::Source;
use crate::authn::token::{self, TokenSettings};
use crate::authz::decide::{decide_action, log_deny};
use crate::authz::entities::RequestFacts;
use crate::authz::play::{stream_of, PlayRequest};
use crate::authz::routes::{Endpoint, Handler, ResourceId, Route};
use crate::authz::{Outcome, PolicySnapshot, PolicyStore};
use crate::error::ApiError;
use crate::metrics::{Door, Metrics, Stage};
use crate::otel::{self, StageName};
use crate::reason::Reason;
use crate::request::path;
use crate::store::SharedStore;

/// A request as a front door describes it, already in normal form.
pub struct Question<'a> {
    pub method: &'a str,
    /// The normalised path (`request::path::normalize`): what is matched is
    /// what is forwarded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The request's headers, where the credential is read from.
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    /// The front door asking, for the deny log line.
    pub door: Door,
}

/// What may happen to an allowed request.
pub enum Verdict {
    /// An upstream route Cedar allowed: forward it with this proof.
    Forward(Allowed),
    /// One of rolegate's own endpoints, allowed by the route's decision or
    /// (for a `{target}` route) to be decided by the endpoint on the user the
    /// body names.
    Local(Local),
}

/// An allowed request for one of rolegate's own endpoints.
pub struct Local {
    pub caller: Caller,
    pub endpoint: Endpoint,
    pub route: Arc<Route>,
    /// Path parameters of the matched route.
    pub params: Vec<(String, String)>,
    /// The policy snapshot the request was decided with; the endpoint decides
    /// any further question with the same one.
    pub snapshot: Arc<PolicySnapshot>,
}

/// What explains a decision, for a door that reports more than allow or deny
/// (AuthZEN answers with the reason and, to admins, the policies).
#[derive(Default)]
pub struct Explanation {
    /// Who was calling, once the credential verified.
    pub caller: Option<Caller>,
    /// The policies that determined the Cedar decision (empty when Cedar was
    /// not asked: no credential that verified, no route).
    pub policies: Vec<String>,
}

/// Everything a decision reads: the live (and shadow) policies, the principal
/// cache in front of the store, and the token settings.
pub struct Decider {
    policies: Arc<PolicyStore>,
    shadow: Option<Arc<PolicyStore>>,
    store: SharedStore,
    cache: PrincipalCache,
    tokens: TokenSettings,
    metrics: Arc<Metrics>,
    passthrough: bool,
}

/// The parts a [`Decider`] is built from.
pub struct DeciderParts {
    pub policies: Arc<PolicyStore>,
    pub shadow: Option<Arc<PolicyStore>>,
    pub store: SharedStore,
    pub cache: PrincipalCache,
    pub tokens: TokenSettings,
    pub metrics: Arc<Metrics>,
    /// The benchmark-only setting: forward everything undecided.
    pub passthrough: bool,
}

impl Decider {
    pub fn new(parts: DeciderParts) -> Self {
        Decider {
            policies: parts.policies,
            shadow: parts.shadow,
            store: parts.store,
            cache: parts.cache,
            tokens: parts.tokens,
            metrics: parts.metrics,
            passthrough: parts.passthrough,
        }
    }

    /// The proof to forward with when the `passthrough` setting is on (and
    /// only then): every request is forwarded without authorization.
    pub fn passthrough(&self) -> Option<Allowed> {
        self.passthrough.then(allowed::passthrough)
    }

    /// Who is calling: verify the credential and look the principal up
    /// (cache, then store). `now` is the request's start: the principal
    /// cache reads its entries' age from it instead of the clock.
    pub async fn authenticate(
        &self,
        cred: &Credential<'_>,
        now: Instant,
    ) -> Result<Caller, ApiError> {
        match cred {
            Credential::Anonymous => Ok(Caller::anonymous()),
            Credential::UserToken(t) => {
                let parsed = token::parse(t)?;
                let cache = otel::stage(StageName::Cache);
                let lookup = self.cache.user_at(parsed.kid(), now).await?;
                if let Some(waited) = lookup.waited {
                    // The stage times the lookups the store answered: a hit
                    // is a probe of an in-memory table, counted in
                    // `cache_hits` and timed within the credential stage,
                    // and timing it apart cost more than the probe.
                    self.metrics.observe(Stage::Cache, waited.as_secs_f64());
                }
                let outcome = match lookup.source {
                    Source::Cached => (&self.metrics.cache_hits, "hit"),
                    Source::Read => (&self.metrics.cache_misses, "miss"),
                    Source::Joined => (&self.metrics.cache_joined, "joined"),
                };
                outcome.0.inc();
                cache.set("rolegate.cache", outcome.1);
                drop(cache);
                let user = lookup
                    .value
                    .ok_or(ApiError::UnknownPrincipal(Reason::UnknownUser))?;
                user.verify(&parsed, &self.tokens, crate::clock::unix_now())?;
                Ok(Caller::user(user.id.clone(), user.membership.clone()))
            }
            Credential::ApiKey(k) => {
                let org = self
                    .cache
                    .api_key(k)
                    .await?
                    .value
                    .ok_or(ApiError::UnknownPrincipal(Reason::UnknownApiKey))?;
                Ok(Caller::org_key(CredentialKind::ApiKey, org.membership))
            }
            Credential::PlayerKey(k) => {
                let org = self
                    .cache
                    .player_key(k)
                    .await?
                    .value
                    .ok_or(ApiError::UnknownPrincipal(Reason::UnknownPlayerKey))?;
                Ok(Caller::org_key(CredentialKind::PlayerKey, org.membership))
            }
        }
    }

    /// The organisation a route's resource belongs to. Upstream resources are
    /// scoped to the caller's organisation (the upstream is told which one in a
    /// header it can trust); users are looked up, so a user of another
    /// organisation is denied by the tenant-isolation policy.
    pub async fn resource_org(
        &self,
        resource_type: &str,
        id: &str,
        caller: &Caller,
    ) -> Result<Arc<str>, ApiError> {
        let own = caller
            .shared_org()
            .cloned()
            .unwrap_or_else(|| Arc::from(""));
        if resource_type == "User" {
            if let Some(u) = self.store.user(id).await? {
                return Ok(Arc::from(u.org_id.as_str()));
            }
        }
        Ok(own)
    }

    /// Credential → principal → route → Cedar for a request in normal form.
    /// Any doubt is an error: no credential that verifies, no route, a deny.
    pub async fn decide(&self, q: &Question<'_>) -> Result<Verdict, ApiError> {
        self.decide_inner(q, None).await
    }

    /// [`Decider::decide`], also filling in what explains the decision. The
    /// same steps: only what is recorded differs.
    pub async fn decide_explained(
        &self,
        q: &Question<'_>,
        explanation: &mut Explanation,
    ) -> Result<Verdict, ApiError> {
        self.decide_inner(q, Some(explanation)).await
    }

    async fn decide_inner(
        &self,
        q: &Question<'_>,
        mut explanation: Option<&mut Explanation>,
    ) -> Result<Verdict, ApiError> {
        let snapshot = self.policies.current();
        let started = Instant::now();
        let stage = otel::stage(StageName::Credential);
        let cred = credential::extract(q.headers)?;
        let caller = self.authenticate(&cred, started).await?;
        stage.set("rolegate.credential", caller.kind.as_str());
        drop(stage);
        // One clock read ends the credential stage and starts the decision
        // stage (the route's match, the resource's organisation, Cedar).
        let decided = Instant::now();
        self.metrics
            .observe(Stage::Credential, (decided - started).as_secs_f64());
        if let Some(e) = explanation.as_mut() {
            e.caller = Some(caller.clone());
        }

        let Some(m) = snapshot.routes.find(q.method, q.path) else {
            tracing::info!(
                request_id = q.request_id.to_str().unwrap_or(""),
                door = q.door.as_str(),
                method = q.method,
                path = %q.path,
                principal = %caller.actor(),
                "deny: no route"
            );
            return Err(ApiError::Denied(Reason::NoRoute));
        };
        let route = m.route.clone();
        otel::route(&route.method, &route.template);
        // Only local endpoints read the parameters; forwarded routes skip the copies.
        let params = || -> Vec<(String, String)> {
            m.params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };

        if route.resource_id == ResourceId::Target {
            // The user is named in the body: only an endpoint that resolves
            // that user and decides on it may have such a route (the route
            // table refuses anything else at load). Checked again here, so
            // even a table built some other way cannot leave it undecided.
            return match route.handler {
                Handler::Local(endpoint) if endpoint.decides_target() => {
                    Ok(Verdict::Local(Local {
                        caller,
                        endpoint,
                        params: params(),
                        route,
                        snapshot,
                    }))
                }
                _ => Err(ApiError::Denied(Reason::UndecidedRoute)),
            };
        }

        let resource_id: &str = m.resource_id().unwrap_or("");
        let org = self
            .resource_org(&route.resource_type, resource_id, &caller)
            .await?;
        let facts = RequestFacts {
            method: q.method,
            path: q.path,
            credential: caller.kind,
            client_ip: q.client_ip,
            tag_filter: path::query_has_tag_filter(q.query),
        };
        let stage = otel::stage(StageName::Decision);
        let decision = allowed::decide_route(&snapshot, caller, &route, resource_id, &org, &facts);
        stage.set_str("rolegate.action", &route.action);
        stage.set_str("http.route", &route.template);
        stage.set(
            "rolegate.decision",
            if decision.is_ok() { "allow" } else { "deny" },
        );
        drop(stage);
        self.metrics
            .observe(Stage::Decision, decided.elapsed().as_secs_f64());
        let allowed = match decision {
            Ok(allowed) => {
                if let Some(e) = explanation.as_deref_mut() {
                    e.policies = allowed.policies().to_vec();
                }
                self.shadow_compare(
                    allowed.caller(),
                    &route,
                    resource_id,
                    &org,
                    &facts,
                    true,
                    allowed.policies(),
                    q.request_id,
                );
                allowed
            }
            Err(allowed::Denied { caller, outcome }) => {
                if let Some(e) = explanation {
                    e.policies = outcome.policies.clone();
                }
                self.shadow_compare(
                    &caller,
                    &route,
                    resource_id,
                    &org,
                    &facts,
                    false,
                    &outcome.policies,
                    q.request_id,
                );
                log_deny(
                    q.request_id.to_str().unwrap_or(""),
                    q.door.as_str(),
                    &route,
                    &route.action,
                    &format!("{}::\"{resource_id}\"", route.resource_type),
                    &caller,
                    &outcome,
                );
                // Without a credential the fix is to bring one: 401, not 403.
                if caller.kind == CredentialKind::Anonymous {
                    return Err(ApiError::UnknownPrincipal(Reason::CredentialRequired));
                }
                return Err(ApiError::Denied(Reason::PolicyDeny));
            }
        };
        match route.handler {
            Handler::Upstream => Ok(Verdict::Forward(allowed)),
            Handler::Local(endpoint) => Ok(Verdict::Local(Local {
                caller: allowed.into_caller(),
                endpoint,
                params: params(),
                route,
                snapshot,
            })),
        }
    }

    /// A viewer's request on the guarded playback prefix `prefix`: verify the
    /// playback token (signature, expiry, revocation), then Cedar decides
    /// `play` with the token's facts.
    pub async fn play(&self, q: &Question<'_>, prefix: &str) -> Result<Allowed, ApiError> {
        let stream = stream_of(q.path, prefix);
        let stage = otel::stage(StageName::Credential);
        stage.set("rolegate.credential", "playback_token");
        let token = playback_token::request_token(q.headers, q.query)?
            .ok_or(ApiError::UnknownPrincipal(Reason::PlaybackTokenRequired))?;
        let claims = playback_token::validate(self.store.as_ref(), &token).await?;
        drop(stage);
        if stream.is_empty() {
            return Err(ApiError::Denied(Reason::NoStream));
        }
        let snapshot = self.policies.current();
        let stage = otel::stage(StageName::Decision);
        let decision = allowed::decide_play(
            &snapshot,
            &claims.grant(),
            &PlayRequest {
                method: q.method,
                path: q.path,
                stream,
                headers: q.headers,
                client_ip: q.client_ip,
            },
        );
        drop(stage);
        match decision {
            Decision::Allow(allowed) => Ok(allowed.with_playback(allowed::PlaybackGrant {
                jti: Arc::from(claims.jti.as_str()),
                exp: claims.exp,
                revocable: claims.revocable,
            })),
            Decision::Deny(outcome) => {
                tracing::info!(
                    request_id = q.request_id.to_str().unwrap_or(""),
                    door = q.door.as_str(),
                    stream = %stream,
                    org = %claims.org,
                    jti = %claims.jti,
                    errors = ?outcome.errors,
                    "deny: play"
                );
                Err(ApiError::Denied(Reason::PolicyDeny))
            }
        }
    }

    /// Evaluate the shadow set (if any) and count a disagreement with the live decision.
    #[allow(clippy::too_many_arguments)]
    fn shadow_compare(
        &self,
        caller: &Caller,
        route: &Route,
        resource_id: &str,
        org: &str,
        facts: &RequestFacts<'_>,
        live_allowed: bool,
        live_policies: &[String],
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
        let candidate: Arc<Outcome> = decide_action(
            &snapshot,
            caller,
            &route.action,
            &route.resource_type,
            resource_id,
            org,
            facts,
        );
        if candidate.allowed != live_allowed {
            self.metrics.shadow_disagreements.inc();
            tracing::warn!(
                request_id = request_id.to_str().unwrap_or(""),
                route = %format_args!("{} {}", route.method, route.template),
                action = %route.action,
                principal = %caller.actor(),
                live = if live_allowed { "allow" } else { "deny" },
                live_policies = ?live_policies,
                shadow = if candidate.allowed { "allow" } else { "deny" },
                shadow_policies = ?candidate.policies,
                shadow_errors = ?candidate.errors,
                "shadow disagreement"
            );
        }
    }
}
