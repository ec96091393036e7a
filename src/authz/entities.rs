//! Building the Cedar entities and context of a request. These shapes must
//! match `schema/`: principals carry `org` (and users their role as parent),
//! resources carry the organisation they belong to.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{
    Context, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, RestrictedExpression,
};

use crate::authn::credential::CredentialKind;

/// Distinct type names remembered per thread; they come from the schema and
/// the route table, so a handful in practice.
const TYPE_NAME_CACHE: usize = 256;

/// A parsed entity type name. Parsing runs Cedar's grammar (its lexer is built
/// afresh per call: thousands of instructions), and every request names three
/// or four types, so each thread parses each name once.
fn type_name(name: &str) -> EntityTypeName {
    thread_local! {
        static PARSED: RefCell<HashMap<Box<str>, EntityTypeName>> = RefCell::new(HashMap::new());
    }
    PARSED.with(|cache| {
        if let Some(t) = cache.borrow().get(name) {
            return t.clone();
        }
        // Type names here are rolegate's own and the schema's, and always
        // parse; a bad one yields an entity no policy matches (deny), never a panic.
        let t = name
            .parse::<EntityTypeName>()
            .unwrap_or_else(|_| fallback_type());
        let mut cache = cache.borrow_mut();
        if cache.len() < TYPE_NAME_CACHE {
            cache.insert(name.into(), t.clone());
        }
        t
    })
}

fn uid(type_name_str: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(type_name_str), EntityId::new(id))
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

/// The entity type of organisations (the `org` attribute of principals and resources).
pub const ORGANISATION: &str = "Organisation";
/// The entity type of roles (the parent of users and API keys).
pub const ROLE: &str = "Role";

/// Resources of this type carry their id as data too (the `kind` attribute).
const ID_AS_KIND: &str = "OrgResource";

/// Whether an entity of `type_name` carries its id as attribute data, where a
/// policy can read it as a string (decision keys must then keep it verbatim).
pub fn id_is_data(type_name: &str) -> bool {
    type_name == ID_AS_KIND
}

fn org_attr(org: &str) -> (String, RestrictedExpression) {
    (
        "org".to_owned(),
        RestrictedExpression::new_entity_uid(uid(ORGANISATION, org)),
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
        HashSet::from([uid(ROLE, role)]),
    )
}

/// The organisation's API key: a member of nanoAdmin.
pub fn api_key(org: &str) -> Entity {
    entity(
        uid("ApiKey", org),
        HashMap::from([org_attr(org)]),
        HashSet::from([uid(ROLE, crate::store::ADMIN_ROLE)]),
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
        ID_AS_KIND => {
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

/// Which context attributes some policy reads. An attribute no policy names
/// cannot change a decision, so it is not built: the `ipaddr` value of
/// `client_ip` alone (Cedar parses the extension's name and the address on
/// every construction) cost about a seventh of a whole proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextNeeds {
    pub method: bool,
    pub path: bool,
    pub credential: bool,
    pub client_ip: bool,
    pub tag_filter: bool,
    pub playback: bool,
}

impl ContextNeeds {
    pub const ALL: ContextNeeds = ContextNeeds {
        method: true,
        path: true,
        credential: true,
        client_ip: true,
        tag_filter: true,
        playback: true,
    };

    /// What `policies` may read, from their text. Conservative: a policy can
    /// only read an attribute by naming it (Cedar has no computed attribute
    /// names), and a policy that uses `context` other than as `context.x`,
    /// `context has x` or `context["x"]` (comparing the whole record, say)
    /// gets every attribute.
    pub fn of(policies: &PolicySet) -> ContextNeeds {
        let text: String = policies.policies().map(|p| p.to_string()).collect();
        let whole_record = text.match_indices("context").any(|(i, _)| {
            let rest = text[i + "context".len()..].trim_start();
            let word_before = text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let word_after = text[i + "context".len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let accessed =
                rest.starts_with('.') || rest.starts_with("has") || rest.starts_with('[');
            // `context` as a whole word, not followed by an attribute access.
            !(word_before || word_after || accessed)
        });
        if whole_record {
            return ContextNeeds::ALL;
        }
        ContextNeeds {
            method: text.contains("method"),
            path: text.contains("path"),
            credential: text.contains("credential"),
            client_ip: text.contains("client_ip"),
            tag_filter: text.contains("tag_filter"),
            playback: text.contains("playback"),
        }
    }
}

fn base_pairs(f: &RequestFacts<'_>, needs: ContextNeeds) -> Vec<(String, RestrictedExpression)> {
    let mut pairs = Vec::with_capacity(6);
    if needs.method {
        pairs.push((
            "method".to_owned(),
            RestrictedExpression::new_string(f.method.to_owned()),
        ));
    }
    if needs.path {
        pairs.push((
            "path".to_owned(),
            RestrictedExpression::new_string(f.path.to_owned()),
        ));
    }
    if needs.credential {
        pairs.push((
            "credential".to_owned(),
            RestrictedExpression::new_string(f.credential.as_str().to_owned()),
        ));
    }
    if needs.client_ip {
        pairs.push((
            "client_ip".to_owned(),
            RestrictedExpression::new_ip(f.client_ip.to_string()),
        ));
    }
    if needs.tag_filter {
        pairs.push((
            "tag_filter".to_owned(),
            RestrictedExpression::new_bool(f.tag_filter),
        ));
    }
    pairs
}

/// The context of an ordinary request, with the attributes `needs` names
/// (`PolicySnapshot::context` passes its own). An invalid context becomes an
/// empty one, which fails every policy that reads it (deny).
pub fn context(f: &RequestFacts<'_>, needs: ContextNeeds) -> Context {
    Context::from_pairs(base_pairs(f, needs)).unwrap_or_else(|_| Context::empty())
}

/// Facts of a guarded playback request, from the verified playback token.
pub struct PlaybackFacts<'a> {
    pub stream: &'a str,
    pub stream_allowed: bool,
    pub ip_allowed: bool,
    pub domain_allowed: bool,
    pub org_wide: bool,
}

pub fn playback_context(
    f: &RequestFacts<'_>,
    p: &PlaybackFacts<'_>,
    needs: ContextNeeds,
) -> Context {
    let mut pairs = base_pairs(f, needs);
    if !needs.playback {
        return Context::from_pairs(pairs).unwrap_or_else(|_| Context::empty());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(src: &str) -> ContextNeeds {
        ContextNeeds::of(&src.parse::<PolicySet>().unwrap())
    }

    #[test]
    fn only_attributes_a_policy_names_are_needed() {
        let n = needs(r#"permit(principal, action, resource) when { context.tag_filter };"#);
        assert!(n.tag_filter);
        assert!(!n.client_ip && !n.method && !n.path && !n.credential && !n.playback);
        let n = needs(
            r#"forbid(principal, action, resource) unless { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) };"#,
        );
        assert!(n.client_ip && !n.tag_filter);
        let n =
            needs(r#"permit(principal, action, resource) when { context["method"] == "GET" };"#);
        assert!(n.method && !n.path);
    }

    #[test]
    fn the_whole_record_used_means_every_attribute() {
        let n = needs(r#"permit(principal, action, resource) when { context == {} };"#);
        assert_eq!(n, ContextNeeds::ALL);
    }

    #[test]
    fn type_names_parse_once_and_stay_correct() {
        let a = uid("User", "u1");
        let b = uid("User", "u2");
        assert_eq!(a.type_name(), b.type_name());
        assert_eq!(a.to_string(), r#"User::"u1""#);
        assert_eq!(uid("Stream", "s").type_name().basename(), "Stream");
    }
}
