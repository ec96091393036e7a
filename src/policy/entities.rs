//! Building the Cedar entities and context of a request. These shapes must
//! match `schema/`: principals carry `org` (and users their role as parent),
//! resources carry the organisation they belong to.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};

use crate::credential::CredentialKind;

fn uid(type_name: &str, id: &str) -> EntityUid {
    // Type names here are rolegate's own constants and always parse; a bad one
    // would yield an entity no policy matches (deny), never a panic.
    let t = type_name
        .parse::<EntityTypeName>()
        .unwrap_or_else(|_| fallback_type());
    EntityUid::from_type_name_and_id(t, EntityId::new(id))
}

#[cold]
fn fallback_type() -> EntityTypeName {
    match "Invalid".parse() {
        Ok(t) => t,
        Err(_) => unreachable_type(),
    }
}

#[cold]
fn unreachable_type() -> EntityTypeName {
    // "Invalid" is a valid identifier; this is not reached.
    std::process::abort()
}

fn org_attr(org: &str) -> (String, RestrictedExpression) {
    (
        "org".to_owned(),
        RestrictedExpression::new_entity_uid(uid("Organisation", org)),
    )
}

fn entity(
    uid: EntityUid,
    attrs: HashMap<String, RestrictedExpression>,
    parents: HashSet<EntityUid>,
) -> Entity {
    // Attributes are literals and entity references, which cannot fail to evaluate.
    Entity::new(uid.clone(), attrs, parents.clone())
        .unwrap_or_else(|_| Entity::new_no_attrs(uid, parents))
}

/// A user with their current role and organisation.
pub fn user(id: &str, role: &str, org: &str) -> Entity {
    entity(
        uid("User", id),
        HashMap::from([org_attr(org)]),
        HashSet::from([uid("Role", role)]),
    )
}

/// The organisation's API key: a member of nanoAdmin.
pub fn api_key(org: &str) -> Entity {
    entity(
        uid("ApiKey", org),
        HashMap::from([org_attr(org)]),
        HashSet::from([uid("Role", crate::store::ADMIN_ROLE)]),
    )
}

pub fn player_key(org: &str) -> Entity {
    entity(
        uid("PlayerKey", org),
        HashMap::from([org_attr(org)]),
        HashSet::new(),
    )
}

pub fn anonymous() -> Entity {
    Entity::new_no_attrs(uid("Anonymous", "anonymous"), HashSet::new())
}

pub fn viewer(org: &str) -> Entity {
    entity(
        uid("Viewer", org),
        HashMap::from([org_attr(org)]),
        HashSet::new(),
    )
}

/// A resource of `type_name` in organisation `org`. `Service` resources carry no organisation.
pub fn resource(type_name: &str, id: &str, org: &str) -> Entity {
    let mut attrs = HashMap::new();
    match type_name {
        "Service" => {}
        "OrgResource" => {
            attrs.insert(org_attr(org).0, org_attr(org).1);
            attrs.insert(
                "kind".to_owned(),
                RestrictedExpression::new_string(id.to_owned()),
            );
        }
        _ => {
            attrs.insert(org_attr(org).0, org_attr(org).1);
        }
    }
    entity(uid(type_name, id), attrs, HashSet::new())
}

/// The facts every decision sees.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub credential: CredentialKind,
    pub client_ip: IpAddr,
    pub tag_filter: bool,
}

fn base_pairs(f: &RequestFacts<'_>) -> Vec<(String, RestrictedExpression)> {
    vec![
        (
            "method".to_owned(),
            RestrictedExpression::new_string(f.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(f.path.to_owned()),
        ),
        (
            "credential".to_owned(),
            RestrictedExpression::new_string(f.credential.as_str().to_owned()),
        ),
        (
            "client_ip".to_owned(),
            RestrictedExpression::new_ip(f.client_ip.to_string()),
        ),
        (
            "tag_filter".to_owned(),
            RestrictedExpression::new_bool(f.tag_filter),
        ),
    ]
}

/// The context of an ordinary request. An invalid context becomes an empty
/// one, which fails every policy that reads it (deny).
pub fn context(f: &RequestFacts<'_>) -> Context {
    Context::from_pairs(base_pairs(f)).unwrap_or_else(|_| Context::empty())
}

/// Facts of a guarded playback request, from the verified playback token.
pub struct PlaybackFacts<'a> {
    pub stream: &'a str,
    pub stream_allowed: bool,
    pub ip_allowed: bool,
    pub domain_allowed: bool,
    pub org_wide: bool,
}

pub fn playback_context(f: &RequestFacts<'_>, p: &PlaybackFacts<'_>) -> Context {
    let mut pairs = base_pairs(f);
    let record = RestrictedExpression::new_record([
        (
            "stream".to_owned(),
            RestrictedExpression::new_string(p.stream.to_owned()),
        ),
        (
            "stream_allowed".to_owned(),
            RestrictedExpression::new_bool(p.stream_allowed),
        ),
        (
            "ip_allowed".to_owned(),
            RestrictedExpression::new_bool(p.ip_allowed),
        ),
        (
            "domain_allowed".to_owned(),
            RestrictedExpression::new_bool(p.domain_allowed),
        ),
        (
            "org_wide".to_owned(),
            RestrictedExpression::new_bool(p.org_wide),
        ),
    ]);
    match record {
        Ok(r) => pairs.push(("playback".to_owned(), r)),
        Err(_) => return Context::empty(),
    }
    Context::from_pairs(pairs).unwrap_or_else(|_| Context::empty())
}
