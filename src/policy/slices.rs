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

use cedar_policy::{ActionConstraint, Entity, EntityUid, Policy, PolicySet, PrincipalConstraint};

/// Principal types of the schema that a slice is built for.
const PRINCIPAL_TYPES: &[&str] = &["User", "ApiKey", "PlayerKey", "Anonymous", "Viewer"];
/// Types that are members of a `Role`.
const ROLE_MEMBERS: &[&str] = &["User", "ApiKey"];

pub struct Slice {
    principal_type: &'static str,
    /// `None`: the role is unknown (every role-scoped policy is kept).
    role: Option<String>,
    policies: PolicySet,
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
                let mut set = PolicySet::new();
                for p in policies.policies() {
                    if principal_may_match(p, ty, role.as_deref())
                        && action_may_match(p, action, action_groups)
                    {
                        // Ids are unique in the full set, so adding cannot clash.
                        let _ = set.add(p.clone());
                    }
                }
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
        .map(|s| &s.policies)
}
