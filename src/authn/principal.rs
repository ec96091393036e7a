//! The principal behind a verified credential: who the caller is, as the
//! decision sees them. The role is the one the store holds now, never one a
//! token claims.

use std::sync::Arc;

use crate::authn::credential::CredentialKind;
use crate::authn::interner::Membership;

/// The authenticated caller of a request.
#[derive(Clone)]
pub struct Caller {
    pub kind: CredentialKind,
    pub user_id: Option<Arc<str>>,
    pub org: Option<Arc<str>>,
    /// The current role (users), `nanoAdmin` (API key), or none.
    pub role: Option<Arc<str>>,
    /// The shared pair `org` and `role` were taken from, with their header
    /// values prebuilt (users, through the principal cache); `None` where
    /// they came from elsewhere. Only [`Caller::user`] sets it, so the two
    /// always agree.
    pub membership: Option<Arc<Membership>>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            kind: CredentialKind::Anonymous,
            user_id: None,
            org: None,
            role: None,
            membership: None,
        }
    }

    /// A user, as the principal cache holds them.
    pub fn user(user_id: Arc<str>, membership: Arc<Membership>) -> Self {
        Caller {
            kind: CredentialKind::UserToken,
            user_id: Some(user_id),
            org: Some(membership.org.clone()),
            role: Some(membership.role.clone()),
            membership: Some(membership),
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
