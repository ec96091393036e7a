//! A cache of route decisions, one per policy snapshot.
//!
//! A Cedar decision is a pure function of the policy set, the principal, the
//! action, the resource and the context. The proxy builds all of those from a
//! few strings (the caller's type, id, role and organisation; the resource's
//! type, id and organisation; the context attributes the policies read), so
//! those strings, length-prefixed into one key, determine the decision
//! exactly: a hit returns what evaluation would have returned, never a stale
//! answer. The cache lives in the snapshot it was computed with, so a reload
//! (a new snapshot) starts with an empty one, and a role change (the role is
//! in the key) can never be answered with the old role's decision.
//!
//! Why: evaluation (building three entities, Cedar's transitive closure, the
//! authorizer) is most of a proxied request's CPU; real traffic repeats the
//! same caller on the same routes, so most decisions are seen before.
//!
//! Entity ids are abstracted. Cedar can only compare entity ids with each
//! other (`==`, `in`, set membership) and use them to find an entity's
//! attributes and parents; no expression turns an id into a string. So
//! renaming ids one-to-one, keeping every id some policy names, changes no
//! decision. The key therefore keeps an id verbatim only when a policy names
//! it (or the id is also data: an `OrgResource`'s id is its `kind` string);
//! any other id is recorded only as "equal to the earlier id number n of the
//! same type" or "new". Two callers of one role and organisation shape asking
//! for the same action share one cached decision, so a caller never seen
//! before is answered without evaluation once a caller of the same shape was.
//! Outcomes with evaluation errors are not cached (their messages name ids).
//! Linked templates carry ids in their links; a snapshot with any keeps
//! every id verbatim.
//!
//! If an entity ever gains an attribute built from something else, that input
//! must join the key (see `write_key`).

use std::cell::RefCell;
use std::sync::Arc;

use cedar_policy::PolicySet;

use super::entities::{self, ContextNeeds, RequestFacts};
use super::Outcome;

/// Decisions kept per snapshot. An entry is a few hundred bytes.
const CAPACITY: usize = 4096;

/// The entries: quick_cache, keys hashed with foldhash under a per-cache
/// random seed (quick_cache's default, as for the user cache). Why
/// quick_cache: a hit is one hash and a probe under a shard's read lock,
/// where moka also queued the read for its eviction policy and ran that
/// queue's upkeep, about 230 instructions and a shared channel on every
/// proxied request. Why foldhash: the std SipHash over a ~70-byte key was
/// about 1,000 instructions. Most of a key is the policies' own names and
/// small numbers, and the table holds at most `CAPACITY` entries, so a seeded
/// fast hash is enough against crafted keys.
type Entries = quick_cache::sync::Cache<Box<[u8]>, Arc<Outcome>>;

pub struct DecisionCache {
    entries: Entries,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            entries: Entries::new(CAPACITY),
        }
    }
}

impl DecisionCache {
    /// The outcome cached under the key `write_key` writes, or that key,
    /// owned, to insert the outcome under once it is known. The key is
    /// written into a per-thread buffer, so a hit allocates nothing (a key
    /// allocated per lookup was a malloc, a shrinking realloc and a free on
    /// every proxied request).
    pub fn lookup(&self, write_key: impl FnOnce(&mut Vec<u8>)) -> Result<Arc<Outcome>, Box<[u8]>> {
        thread_local! {
            static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|k| {
            k.clear();
            write_key(k);
            self.entries
                .get(k.as_slice())
                .ok_or_else(|| k.as_slice().into())
        })
    }

    pub fn insert(&self, key: Box<[u8]>, outcome: Arc<Outcome>) {
        self.entries.insert(key, outcome);
    }
}

/// The entity ids a snapshot's policies name, by entity type: the ids a key
/// must keep verbatim.
#[derive(Debug, Default)]
pub struct NamedIds {
    /// Keep every id (a linked template is present).
    all: bool,
    /// foldhash, as for the decision cache: looked up up to four times per
    /// request, and only ever filled from the policies.
    by_type: foldhash::HashMap<String, foldhash::HashSet<String>>,
}

impl NamedIds {
    /// Keep every id (keys abstract nothing).
    #[cfg(test)]
    pub fn all() -> NamedIds {
        NamedIds {
            all: true,
            by_type: Default::default(),
        }
    }

    pub fn of(policies: &PolicySet) -> NamedIds {
        let mut named = NamedIds::default();
        for p in policies.policies() {
            if !p.is_static() {
                named.all = true;
            }
            for uid in p.entity_literals() {
                named
                    .by_type
                    .entry(uid.type_name().to_string())
                    .or_default()
                    .insert(uid.id().unescaped().to_owned());
            }
        }
        named
    }

    fn keeps(&self, type_name: &str, id: &str) -> bool {
        self.all
            || entities::id_is_data(type_name)
            || self
                .by_type
                .get(type_name)
                .is_some_and(|ids| ids.contains(id))
    }
}

/// Everything a route decision is built from.
pub struct DecisionInputs<'a> {
    pub action: &'a str,
    pub principal_type: &'a str,
    pub principal_id: &'a str,
    pub role: Option<&'a str>,
    pub org: Option<&'a str>,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub resource_org: &'a str,
    pub facts: &'a RequestFacts<'a>,
}

fn field(key: &mut Vec<u8>, value: &str) {
    // Length-prefixed, so no choice of ids can make two inputs one key.
    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
    key.extend_from_slice(value.as_bytes());
}

fn optional(key: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => {
            key.push(1);
            field(key, v);
        }
        None => key.push(0),
    }
}

/// The cache key of a decision: every input, with entity ids abstracted
/// as the module explains, and of the context only what the snapshot's
/// policies read (the rest cannot change the outcome).
pub fn write_key(k: &mut Vec<u8>, i: &DecisionInputs<'_>, needs: ContextNeeds, named: &NamedIds) {
    field(k, i.action);
    field(k, i.principal_type);
    // Roles are few and parents of the principal: always verbatim.
    optional(k, i.role);
    field(k, i.resource_type);
    // Every entity id of the decision with its type, in a fixed order. The
    // role, written verbatim above, is among them so that a resource which
    // is the caller's own role is told apart from another role.
    const ROLE_SLOT: usize = 1;
    let ids: [(&str, Option<&str>); 5] = [
        (i.principal_type, Some(i.principal_id)),
        (entities::ROLE, i.role),
        (entities::ORGANISATION, i.org),
        (i.resource_type, Some(i.resource_id)),
        (entities::ORGANISATION, Some(i.resource_org)),
    ];
    for (n, &(type_name, id)) in ids.iter().enumerate() {
        let Some(id) = id else {
            k.push(0);
            continue;
        };
        if n == ROLE_SLOT {
            k.push(4);
        } else if named.keeps(type_name, id) {
            k.push(1);
            field(k, id);
        } else if let Some(earlier) = ids[..n]
            .iter()
            .position(|&(t, other)| t == type_name && other == Some(id))
        {
            // The same entity as an earlier slot (a user acting on
            // themselves, caller and resource in one organisation).
            k.push(2);
            k.push(earlier as u8);
        } else {
            k.push(3);
        }
    }
    let f = i.facts;
    optional(k, needs.method.then_some(f.method));
    optional(k, needs.path.then_some(f.path));
    optional(k, needs.credential.then_some(f.credential.as_str()));
    if needs.client_ip {
        match f.client_ip {
            std::net::IpAddr::V4(a) => {
                k.push(4);
                k.extend_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                k.push(6);
                k.extend_from_slice(&a.octets());
            }
        }
    } else {
        k.push(0);
    }
    k.push(if !needs.tag_filter {
        0
    } else if f.tag_filter {
        2
    } else {
        1
    });
}

/// [`write_key`] into a key of its own.
#[cfg(test)]
fn key(i: &DecisionInputs<'_>, needs: ContextNeeds, named: &NamedIds) -> Box<[u8]> {
    let mut k = Vec::new();
    write_key(&mut k, i, needs, named);
    k.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::credential::CredentialKind;
    use std::net::{IpAddr, Ipv4Addr};

    fn facts(path: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path,
            credential: CredentialKind::UserToken,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tag_filter: false,
        }
    }

    fn inputs<'a>(f: &'a RequestFacts<'a>, id: &'a str, role: &'a str) -> DecisionInputs<'a> {
        DecisionInputs {
            action: "getStream",
            principal_type: "User",
            principal_id: id,
            role: Some(role),
            org: Some("o1"),
            resource_type: "Stream",
            resource_id: "s1",
            resource_org: "o1",
            facts: f,
        }
    }

    #[test]
    fn every_input_separates_keys() {
        let f = facts("/stream/s1");
        let base = key(
            &inputs(&f, "u1", "nanoUser"),
            ContextNeeds::ALL,
            &NamedIds::all(),
        );
        assert_eq!(
            base,
            key(
                &inputs(&f, "u1", "nanoUser"),
                ContextNeeds::ALL,
                &NamedIds::all()
            )
        );
        assert_ne!(
            base,
            key(
                &inputs(&f, "u1", "nanoAdmin"),
                ContextNeeds::ALL,
                &NamedIds::all()
            )
        );
        assert_ne!(
            base,
            key(
                &inputs(&f, "u2", "nanoUser"),
                ContextNeeds::ALL,
                &NamedIds::all()
            )
        );
        let g = facts("/stream/s2");
        assert_ne!(
            base,
            key(
                &inputs(&g, "u1", "nanoUser"),
                ContextNeeds::ALL,
                &NamedIds::all()
            )
        );
        // Field boundaries cannot be shifted to forge another key.
        let mut a = inputs(&f, "u1", "nanoUser");
        a.resource_id = "s1x";
        a.resource_org = "o";
        let mut b = inputs(&f, "u1", "nanoUser");
        b.resource_id = "s1";
        b.resource_org = "xo";
        assert_ne!(
            key(&a, ContextNeeds::ALL, &NamedIds::all()),
            key(&b, ContextNeeds::ALL, &NamedIds::all())
        );
    }

    #[test]
    fn attributes_no_policy_reads_do_not_split_keys() {
        let needs = ContextNeeds {
            method: false,
            path: false,
            credential: false,
            client_ip: false,
            tag_filter: true,
            playback: false,
        };
        let (f, g) = (facts("/stream/s1"), facts("/stream/s1?x"));
        assert_eq!(
            key(&inputs(&f, "u1", "nanoUser"), needs, &NamedIds::all()),
            key(&inputs(&g, "u1", "nanoUser"), needs, &NamedIds::all())
        );
        let mut h = facts("/stream/s1");
        h.tag_filter = true;
        assert_ne!(
            key(&inputs(&f, "u1", "nanoUser"), needs, &NamedIds::all()),
            key(&inputs(&h, "u1", "nanoUser"), needs, &NamedIds::all())
        );
    }

    fn named(src: &str) -> NamedIds {
        NamedIds::of(&src.parse::<PolicySet>().unwrap())
    }

    #[test]
    fn ids_no_policy_names_are_abstracted_to_their_equalities() {
        let ids = named(
            r#"permit(principal == User::"vip", action, resource) when { resource.org == Organisation::"o-named" };"#,
        );
        let f = facts("/stream/s1");
        let k = |id: &str, org: &str, res: &str, res_org: &str| {
            let mut i = inputs(&f, id, "nanoUser");
            i.org = Some(org);
            i.resource_id = res;
            i.resource_org = res_org;
            key(&i, ContextNeeds::ALL, &ids)
        };
        // Unnamed users and streams of one shape share a key...
        assert_eq!(k("u1", "o1", "s1", "o1"), k("u2", "o2", "s9", "o2"));
        // ...but not when the equality between the organisations differs,
        assert_ne!(k("u1", "o1", "s1", "o1"), k("u1", "o1", "s1", "o2"));
        // nor when an id is one a policy names.
        assert_ne!(k("u1", "o1", "s1", "o1"), k("vip", "o1", "s1", "o1"));
        assert_ne!(
            k("u1", "o1", "s1", "o1"),
            k("u1", "o-named", "s1", "o-named")
        );
        assert_eq!(
            k("u1", "o-named", "s1", "o1"),
            k("u2", "o-named", "s2", "o2")
        );
        // A user acting on themselves is another shape than on someone else.
        let on_user = |caller: &str, target: &str| {
            let mut i = inputs(&f, caller, "nanoUser");
            i.resource_type = "User";
            i.resource_id = target;
            key(&i, ContextNeeds::ALL, &ids)
        };
        assert_eq!(on_user("u1", "u1"), on_user("u2", "u2"));
        assert_ne!(on_user("u1", "u1"), on_user("u1", "u2"));
    }

    #[test]
    fn ids_that_are_data_or_in_linked_templates_stay_verbatim() {
        let ids = named(r#"permit(principal, action, resource);"#);
        let f = facts("/x");
        let org_resource = |kind: &'static str| {
            let mut i = inputs(&f, "u1", "nanoUser");
            i.resource_type = "OrgResource";
            i.resource_id = kind;
            key(&i, ContextNeeds::ALL, &ids)
        };
        assert_ne!(org_resource("webhook"), org_resource("apikey"));

        let mut set = PolicySet::new();
        set.add_template(
            cedar_policy::Template::parse(
                Some(cedar_policy::PolicyId::new("t")),
                r#"permit(principal == ?principal, action, resource);"#,
            )
            .unwrap(),
        )
        .unwrap();
        set.link(
            cedar_policy::PolicyId::new("t"),
            cedar_policy::PolicyId::new("t-1"),
            std::collections::HashMap::from([(
                cedar_policy::SlotId::principal(),
                r#"User::"u7""#.parse().unwrap(),
            )]),
        )
        .unwrap();
        let linked = NamedIds::of(&set);
        assert_ne!(
            key(&inputs(&f, "u1", "nanoUser"), ContextNeeds::ALL, &linked),
            key(&inputs(&f, "u2", "nanoUser"), ContextNeeds::ALL, &linked)
        );
    }

    #[test]
    fn a_resource_that_is_the_callers_own_role_is_its_own_shape() {
        let ids = named(r#"permit(principal, action, resource);"#);
        let f = facts("/x");
        let on_role = |role: &'static str, target: &'static str| {
            let mut i = inputs(&f, "u1", role);
            i.resource_type = "Role";
            i.resource_id = target;
            key(&i, ContextNeeds::ALL, &ids)
        };
        assert_ne!(on_role("custom", "custom"), on_role("custom", "other"));
        assert_eq!(on_role("custom", "other"), on_role("custom", "third"));
    }
}
