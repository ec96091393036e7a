//! Policy slices: for each action and principal shape (entity type, and role
//! for role members), the subset of policies whose *scope* can match. Cedar
//! evaluates every policy of the set it is given, and most policies of a role
//! file cannot apply to a caller of another role; evaluating only the slice
//! gives the same decision and the same determining policies, for less work.
//!
//! The analysis is conservative: a policy is left out only when its principal
//! or action scope provably excludes the request. Conditions (`when`/`unless`)
//! are never analysed, and the resource scope is ignored.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{ActionConstraint, Entity, EntityUid, Policy, PolicySet, PrincipalConstraint};

/// Principal types of the schema that a slice is built for.
const PRINCIPAL_TYPES: &[&str] = &["User", "ApiKey", "PlayerKey", "Anonymous", "Viewer"];
/// Types that are members of a `Role`.
const ROLE_MEMBERS: &[&str] = &["User", "ApiKey"];

pub struct Slice {
    principal_type: &'static str,
    /// `None`: the role is unknown (every role-scoped policy is kept).
    role: Option<String>,
    /// Shared between slices with the same members: most (action, principal
    /// shape) pairs select one of a few member lists, and a `PolicySet` per
    /// pair cost ~50 MiB with 100 custom roles.
    policies: Arc<PolicySet>,
}

/// Every action with the action groups it belongs to (transitively).
fn ancestors(actions: &HashMap<EntityUid, Entity>) -> HashMap<EntityUid, HashSet<EntityUid>> {
    let parents: HashMap<EntityUid, HashSet<EntityUid>> = actions
        .iter()
        .map(|(uid, e)| (uid.clone(), e.clone().into_inner().2))
        .collect();
    parents
        .keys()
        .map(|uid| {
            let mut seen = HashSet::new();
            let mut todo: Vec<&EntityUid> = parents
                .get(uid)
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            while let Some(p) = todo.pop() {
                if seen.insert(p.clone()) {
                    todo.extend(parents.get(p).into_iter().flatten());
                }
            }
            (uid.clone(), seen)
        })
        .collect()
}

fn principal_may_match(p: &Policy, ty: &str, role: Option<&str>) -> bool {
    let in_ok = |uid: &EntityUid| {
        let uty = uid.type_name().basename();
        if uty == ty {
            return true;
        }
        if uty == "Role" {
            return ROLE_MEMBERS.contains(&ty)
                && match role {
                    Some(r) => uid.id().unescaped() == r,
                    None => true,
                };
        }
        // Membership in anything else is not tracked here: keep the policy.
        true
    };
    match p.principal_constraint() {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Eq(uid) => uid.type_name().basename() == ty,
        PrincipalConstraint::Is(t) => t.basename() == ty,
        PrincipalConstraint::In(uid) => in_ok(&uid),
        PrincipalConstraint::IsIn(t, uid) => t.basename() == ty && in_ok(&uid),
    }
}

fn action_may_match(p: &Policy, action: &EntityUid, groups: &HashSet<EntityUid>) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || groups.contains(a)),
    }
}

pub fn build<'a>(
    policies: &PolicySet,
    actions: &HashMap<EntityUid, Entity>,
    roles: impl Iterator<Item = &'a String>,
) -> HashMap<EntityUid, Vec<Slice>> {
    let groups = ancestors(actions);
    let roles: Vec<Option<String>> = roles.cloned().map(Some).chain([None]).collect();
    let all: Vec<&Policy> = policies.policies().collect();
    let mut sets: HashMap<Vec<usize>, Arc<PolicySet>> = HashMap::new();
    let mut out = HashMap::new();
    for (action, action_groups) in &groups {
        let mut slices = Vec::new();
        for &ty in PRINCIPAL_TYPES {
            let shapes: &[Option<String>] = if ROLE_MEMBERS.contains(&ty) {
                &roles
            } else {
                &[None]
            };
            for role in shapes {
                let members: Vec<usize> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        principal_may_match(p, ty, role.as_deref())
                            && action_may_match(p, action, action_groups)
                    })
                    .map(|(i, _)| i)
                    .collect();
                let set = sets
                    .entry(members)
                    .or_insert_with_key(|members| {
                        let mut set = PolicySet::new();
                        for &i in members {
                            // Ids are unique in the full set, so adding cannot clash.
                            let _ = set.add(all[i].clone());
                        }
                        Arc::new(set)
                    })
                    .clone();
                slices.push(Slice {
                    principal_type: ty,
                    role: role.clone(),
                    policies: set,
                });
            }
        }
        out.insert(action.clone(), slices);
    }
    out
}

/// The slice for a request, if one was built for its shape.
pub fn find<'s>(
    slices: &'s HashMap<EntityUid, Vec<Slice>>,
    action: &EntityUid,
    principal_type: &str,
    role: Option<&str>,
) -> Option<&'s PolicySet> {
    slices
        .get(action)?
        .iter()
        .find(|s| s.principal_type == principal_type && s.role.as_deref() == role)
        .map(|s| s.policies.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_hold_the_policies_that_can_apply_and_share_equal_sets() {
        let store = crate::authz::shipped();
        let snap = store.current();
        let ids = |set: &PolicySet| {
            let mut v: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
            v.sort();
            v
        };
        let get_stream = snap.action("getStream").unwrap();
        let ro = find(&snap.slices, get_stream, "User", Some("nanoReadOnly")).unwrap();
        let members = ids(ro);
        assert!(members.contains(&"nanoReadOnly".to_owned()), "{members:?}");
        assert!(
            members.contains(&"tenant-isolation".to_owned()),
            "{members:?}"
        );
        assert!(!members.contains(&"nanoAdmin".to_owned()), "{members:?}");
        // Two read actions select the same members for the same caller shape:
        // one shared set, not two copies.
        let list = snap.action("listStreams").unwrap();
        let ro2 = find(&snap.slices, list, "User", Some("nanoReadOnly")).unwrap();
        assert_eq!(members, ids(ro2));
        assert!(std::ptr::eq(ro, ro2), "equal slices are not shared");
        // Distinct sets are far fewer than slices.
        let slices: Vec<&Slice> = snap.slices.values().flatten().collect();
        let mut distinct: Vec<*const PolicySet> =
            slices.iter().map(|s| Arc::as_ptr(&s.policies)).collect();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() * 4 < slices.len(),
            "{} sets for {} slices",
            distinct.len(),
            slices.len()
        );
    }
}
