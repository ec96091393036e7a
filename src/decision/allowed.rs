//! The proof that a request may be forwarded.
//!
//! [`Allowed`] has private fields and no public constructor: the only ways to
//! get one are the functions in this file, each of which returns it only for
//! an allow outcome of a Cedar decision ([`decide_route`], [`decide_play`]),
//! plus the benchmark-only pass-through mode (`passthrough`, reachable only
//! through `Decider`, and only when the `passthrough` setting is on). Every
//! code path that forwards a request (the proxy, the guarded playback prefix,
//! forward-auth's 200, any future front door) takes an `Allowed`, so a request
//! no decision allowed cannot be forwarded: a reviewer checks this one file.

use std::sync::Arc;

use crate::authn::playback_token::Grant;
use crate::authn::principal::Caller;
use crate::authz::decide::decide_action;
use crate::authz::entities::RequestFacts;
use crate::authz::play::PlayRequest;
use crate::authz::routes::Route;
use crate::authz::{Outcome, PolicySnapshot};

/// A request Cedar allowed, and for whom: what the upstream is told.
#[derive(Clone)]
pub struct Allowed {
    caller: Caller,
    /// The `x-rolegate-credential` value: the caller's credential kind, or
    /// `playback` on the guarded prefix.
    credential: &'static str,
    /// The allow outcome (none in pass-through mode).
    outcome: Option<Arc<Outcome>>,
    /// The playback token behind a guarded-prefix allow: what bounds the
    /// life of a connection it opens (its `exp`, its revocation).
    playback: Option<PlaybackGrant>,
}

/// The playback token a guarded-prefix request was allowed with.
#[derive(Clone, Debug)]
pub struct PlaybackGrant {
    pub jti: Arc<str>,
    /// Unix seconds.
    pub exp: u64,
    pub revocable: bool,
}

impl Allowed {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The caller, for a local endpoint (which is answered, not forwarded).
    pub fn into_caller(self) -> Caller {
        self.caller
    }

    pub fn credential(&self) -> &'static str {
        self.credential
    }

    /// The playback token the allow rests on (guarded prefix only).
    pub fn playback(&self) -> Option<&PlaybackGrant> {
        self.playback.as_ref()
    }

    /// Attach the playback token the allow was decided with (`Decider::play`).
    pub(super) fn with_playback(mut self, grant: PlaybackGrant) -> Self {
        self.playback = Some(grant);
        self
    }

    /// The policies that determined the allow.
    pub fn policies(&self) -> &[String] {
        self.outcome
            .as_deref()
            .map_or(&[], |o| o.policies.as_slice())
    }
}

/// A Cedar decision: the proof on allow, the outcome (for the deny log) on deny.
pub enum Decision {
    Allow(Allowed),
    Deny(Arc<Outcome>),
}

/// A route Cedar did not allow: who asked (for the deny log) and the outcome.
pub struct Denied {
    pub caller: Caller,
    pub outcome: Arc<Outcome>,
}

/// Decide a route's action on its resource for `caller` (see
/// [`decide_action`]). The caller moves into the proof, or comes back with
/// the deny: a request's caller is never copied on the way.
pub fn decide_route(
    snapshot: &PolicySnapshot,
    caller: Caller,
    route: &Route,
    resource_id: &str,
    resource_org: &str,
    facts: &RequestFacts<'_>,
) -> Result<Allowed, Denied> {
    let outcome = decide_action(
        snapshot,
        &caller,
        &route.action,
        &route.resource_type,
        resource_id,
        resource_org,
        facts,
    );
    if outcome.allowed {
        Ok(Allowed {
            credential: caller.kind.as_str(),
            caller,
            outcome: Some(outcome),
            playback: None,
        })
    } else {
        Err(Denied { caller, outcome })
    }
}

/// Decide `play` for a viewer's verified playback token (see [`crate::authz::play`]).
/// The upstream is told the organisation and the credential `playback`.
pub fn decide_play(
    snapshot: &PolicySnapshot,
    grant: &Grant<'_>,
    req: &PlayRequest<'_>,
) -> Decision {
    let outcome = Arc::new(crate::authz::play::decide_play(snapshot, grant, req));
    if outcome.allowed {
        Decision::Allow(Allowed {
            caller: Caller::viewer_of(grant.org),
            credential: "playback",
            outcome: Some(outcome),
            playback: None,
        })
    } else {
        Decision::Deny(outcome)
    }
}

/// Forward without any decision: the benchmark-only `passthrough` setting.
/// `pub(super)`: only `Decider`, which checks the setting, can call it.
pub(super) fn passthrough() -> Allowed {
    Allowed {
        caller: Caller::anonymous(),
        credential: Caller::anonymous().kind.as_str(),
        outcome: None,
        playback: None,
    }
}
