//! The principal behind a verified credential: who the caller is, as the
//! decision sees them. The role is the one the store holds now, never one a
//! token claims.

use std::sync::Arc;

use crate::authn::credential::CredentialKind;
use crate::authn::interner::Membership;

/// The authenticated caller of a request: the kind of credential, the user
/// (user tokens) and the organisation and role acted in, shared with the
/// cache entry they came from. Built only through the constructors, one per
/// kind of caller, so the organisation and role are held once, as one shared
/// [`Membership`] whose header values were built when it was.
#[derive(Clone)]
pub struct Caller {
    pub kind: CredentialKind,
    pub user_id: Option<Arc<str>>,
    membership: Option<Arc<Membership>>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            kind: CredentialKind::Anonymous,
            user_id: None,
            membership: None,
        }
    }

    /// A user, as the principal cache holds them.
    pub fn user(user_id: Arc<str>, membership: Arc<Membership>) -> Self {
        Caller {
            kind: CredentialKind::UserToken,
            user_id: Some(user_id),
            membership: Some(membership),
        }
    }

    /// A user from plain values (tools and tests, which hold no cache entry).
    pub fn user_in(user_id: &str, org: &str, role: &str) -> Self {
        Caller::user(
            Arc::from(user_id),
            Arc::new(Membership::new(Arc::from(org), Some(Arc::from(role)))),
        )
    }

    /// An organisation key: an API key (`nanoAdmin`) or a player key (no
    /// role), as the principal cache holds it.
    pub fn org_key(kind: CredentialKind, membership: Arc<Membership>) -> Self {
        Caller {
            kind,
            user_id: None,
            membership: Some(membership),
        }
    }

    /// An API key of `org`, from plain values (tools and tests).
    pub fn api_key_of(org: &str) -> Self {
        let admin = Arc::from(crate::store::ADMIN_ROLE);
        Caller::org_key(
            CredentialKind::ApiKey,
            Arc::new(Membership::new(Arc::from(org), Some(admin))),
        )
    }

    /// A player key of `org`, from plain values (tools and tests).
    pub fn player_key_of(org: &str) -> Self {
        Caller::org_key(
            CredentialKind::PlayerKey,
            Arc::new(Membership::new(Arc::from(org), None)),
        )
    }

    /// A viewer with a verified playback token of `org`: no credential kind
    /// of its own and no role, only the organisation the upstream is told.
    pub fn viewer_of(org: &str) -> Self {
        Caller {
            kind: CredentialKind::Anonymous,
            user_id: None,
            membership: Some(Arc::new(Membership::new(Arc::from(org), None))),
        }
    }

    /// The organisation acted in (none: anonymous).
    pub fn org(&self) -> Option<&str> {
        self.membership.as_deref().map(|m| &*m.org)
    }

    /// The organisation as its shared value (a clone is a reference count).
    pub fn shared_org(&self) -> Option<&Arc<str>> {
        self.membership.as_deref().map(|m| &m.org)
    }

    /// The current role (users), `nanoAdmin` (API key), or none.
    pub fn role(&self) -> Option<&str> {
        self.membership.as_deref().and_then(|m| m.role.as_deref())
    }

    /// The organisation and role with their prebuilt header values.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_deref()
    }

    /// A name for audit records: the user id, or the key that acted.
    pub fn actor(&self) -> String {
        match (&self.user_id, self.org(), self.kind) {
            (Some(u), _, _) => format!("user:{u}"),
            (None, Some(o), CredentialKind::ApiKey) => format!("apikey:{o}"),
            (None, Some(o), CredentialKind::PlayerKey) => format!("playerkey:{o}"),
            _ => "anonymous".to_owned(),
        }
    }
}
