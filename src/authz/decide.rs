//! The route-level decision: a pure function of the policy snapshot, the
//! principal, the action and the resource. Every way of asking (the proxy,
//! forward-auth, `rolegate test`, `rolegate explain`, the shadow set) decides
//! through [`decide_action`], so the tools cannot drift from the proxy.

use std::sync::Arc;

use cedar_policy::Entity;

use crate::authn::credential::CredentialKind;
use crate::authn::principal::Caller;
use crate::authz::decisions::{self, DecisionInputs};
use crate::authz::entities::{self, RequestFacts};
use crate::authz::routes::Route;
use crate::authz::{Outcome, PolicySnapshot};

/// The caller as a Cedar principal. Built when a decision is evaluated,
/// not kept per cache entry: decisions are mostly answered from the
/// decision cache, and an `Entity` per cached user (attribute map,
/// ancestor set) costs ~2 KiB, which 100,000 cached users would feel.
pub fn principal_entity(caller: &Caller) -> Entity {
    let org = caller.org().unwrap_or("");
    match caller.kind {
        CredentialKind::UserToken => entities::user(
            caller.user_id.as_deref().unwrap_or(""),
            caller.role().unwrap_or(""),
            org,
        ),
        CredentialKind::ApiKey => entities::api_key(org),
        CredentialKind::PlayerKey => entities::player_key(org),
        CredentialKind::Anonymous => entities::anonymous(),
    }
}

/// The principal's entity type and id, as `entity()` builds them.
pub fn principal_key(caller: &Caller) -> (&'static str, &str) {
    let org = caller.org().unwrap_or("");
    match caller.kind {
        CredentialKind::UserToken => ("User", caller.user_id.as_deref().unwrap_or("")),
        CredentialKind::ApiKey => ("ApiKey", org),
        CredentialKind::PlayerKey => ("PlayerKey", org),
        CredentialKind::Anonymous => ("Anonymous", "anonymous"),
    }
}

/// The route-level decision, as a pure function of the snapshot: the proxy, `rolegate test`
/// and `rolegate explain` all decide through it, so the tools cannot drift from the proxy.
pub fn decide_action(
    snapshot: &PolicySnapshot,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    resource_org: &str,
    facts: &RequestFacts<'_>,
) -> Arc<Outcome> {
    // The key holds every input the principal, resource and context are
    // built from (`Caller::entity` is built from its kind, id, role and org),
    // ids abstracted unless a policy names them (see `decisions`).
    let (principal_type, principal_id) = principal_key(caller);
    let looked_up = snapshot.decisions.lookup(|k| {
        decisions::write_key(
            k,
            &DecisionInputs {
                action,
                principal_type,
                principal_id,
                role: caller.role(),
                org: caller.org(),
                resource_type,
                resource_id,
                resource_org,
                facts,
            },
            snapshot.context_needs,
            &snapshot.named_ids,
        )
    });
    let key = match looked_up {
        Ok(known) => return known,
        Err(key) => key,
    };
    // Looked up after the cache: an unknown action's outcome holds an error,
    // and outcomes with errors are never cached, so no hit skips this check.
    let Some(action_uid) = snapshot.action(action) else {
        return Arc::new(Outcome {
            allowed: false,
            policies: vec![],
            errors: vec![format!("unknown action `{action}`")],
        });
    };
    let resource = entities::resource(resource_type, resource_id, resource_org);
    let outcome = snapshot.decide_as(
        caller.role(),
        principal_entity(caller),
        action_uid,
        resource,
        snapshot.context(facts),
    );
    let outcome = Arc::new(outcome);
    // An error names the entities it met, which the key may have abstracted.
    if outcome.errors.is_empty() {
        snapshot.decisions.insert(key, outcome.clone());
    }
    outcome
}

/// The one structured line of a deny: the same facts `rolegate explain` prints.
pub fn log_deny(
    request_id: &str,
    door: &str,
    route: &Route,
    action: &str,
    resource: &str,
    caller: &Caller,
    outcome: &Outcome,
) {
    tracing::info!(
        request_id,
        door,
        route = %format_args!("{} {}", route.method, route.template),
        action,
        resource,
        principal = %caller.actor(),
        role = caller.role().unwrap_or(""),
        policies = ?outcome.policies,
        errors = ?outcome.errors,
        "deny"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of a GET with a user token from loopback.
    fn get_facts(path: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path,
            credential: CredentialKind::UserToken,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            tag_filter: false,
        }
    }

    /// A caller with a user token.
    fn user_caller(id: &str, org: &str, role: &str) -> Caller {
        Caller::user_in(id, org, role)
    }

    /// The decision cache keys a decision by `principal_key`, and Cedar sees
    /// `entity()`: they must name the same principal, or two callers could
    /// share a cached decision.
    #[test]
    fn the_decision_key_names_the_principal_cedar_sees() {
        let member = |kind| match kind {
            CredentialKind::UserToken => Caller::user_in("u-1", "org-1", "nanoUser"),
            CredentialKind::ApiKey => Caller::api_key_of("org-1"),
            CredentialKind::PlayerKey => Caller::player_key_of("org-1"),
            CredentialKind::Anonymous => Caller::anonymous(),
        };
        for kind in [
            CredentialKind::UserToken,
            CredentialKind::ApiKey,
            CredentialKind::PlayerKey,
            CredentialKind::Anonymous,
        ] {
            let caller = member(kind);
            let uid = principal_entity(&caller).uid();
            let (type_name, id) = principal_key(&caller);
            assert_eq!(uid.type_name().basename(), type_name, "{kind:?}");
            assert_eq!(uid.id().unescaped(), id, "{kind:?}");
        }
    }

    /// A repeated decision comes from the snapshot's cache (the very same
    /// outcome), equals what evaluation says, and a reload starts empty.
    #[test]
    fn a_repeated_decision_is_answered_from_the_snapshot_cache() {
        let store = crate::authz::shipped();
        let caller = user_caller("u-1", "org-1", "nanoReadOnly");
        let facts = get_facts("/stream/s1");
        let decide = |snap: &PolicySnapshot, action: &str| {
            decide_action(snap, &caller, action, "Stream", "s1", "org-1", &facts)
        };
        let snap = store.current();
        let first = decide(&snap, "getStream");
        let again = decide(&snap, "getStream");
        assert!(first.allowed);
        assert!(
            Arc::ptr_eq(&first, &again),
            "second decision was evaluated again"
        );
        // Another action is another key, with its own (denied) answer.
        assert!(!decide(&snap, "deleteStream").allowed);
        // A new snapshot (a reload) evaluates afresh and agrees.
        store.reload().unwrap();
        let fresh = decide(&store.current(), "getStream");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert_eq!(first.allowed, fresh.allowed);
        assert_eq!(first.policies, fresh.policies);
    }

    /// Decision keys abstract the ids no policy names (see `decisions`): a
    /// grid of callers and resources, some named by policies and some not,
    /// decided through the cache in two orders on fresh snapshots, must give
    /// exactly what evaluating each request afresh gives.
    #[test]
    fn cached_decisions_with_abstracted_ids_equal_evaluation() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(root.join("policies")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(
            dir.path().join("named.cedar"),
            r#"
@id("vip-may-delete")
permit (principal == User::"u-vip", action == Action::"deleteStream", resource);

@id("secret-stream")
forbid (principal, action == Action::"getStream", resource == Stream::"s-secret");

@id("locked-org")
forbid (principal, action in Action::"operate", resource)
when { resource has org && resource.org == Organisation::"org-locked" };

@id("users-see-themselves")
permit (principal is User, action == Action::"getUser", resource)
when { principal == resource };
"#,
        )
        .unwrap();
        let store = crate::authz::PolicyStore::open(crate::authz::PolicySource {
            policies_dir: dir.path().to_owned(),
            schema_dir: root.join("schema"),
        })
        .unwrap();

        let users = ["u1", "u2", "u-vip"];
        let orgs = ["org-a", "org-b", "org-locked"];
        let mut callers = Vec::new();
        for user in users {
            for role in ["nanoAdmin", "nanoUser", "nanoReadOnly"] {
                for org in orgs {
                    callers.push(user_caller(user, org, role));
                }
            }
        }
        for org in orgs {
            callers.push(Caller::api_key_of(org));
        }
        let mut targets: Vec<(&str, &str, &str, &str)> = Vec::new();
        for action in ["getStream", "deleteStream", "setStreamTags"] {
            for stream in ["s1", "s2", "s-secret"] {
                for org in orgs {
                    targets.push((action, "Stream", stream, org));
                }
            }
        }
        for user in users {
            for org in orgs {
                targets.push(("getUser", "User", user, org));
            }
        }
        for org in orgs {
            targets.push(("getOrganisation", "OrgResource", "organisation", org));
            targets.push(("getPlayerKey", "OrgResource", "playerkey", org));
        }
        let facts = get_facts("/x");
        let mut grid = Vec::new();
        for c in &callers {
            for t in &targets {
                grid.push((c, *t));
            }
        }

        let (mut allowed, mut denied) = (0, 0);
        for reversed in [false, true] {
            store.reload().unwrap();
            let snap = store.current();
            let order: Vec<_> = if reversed {
                grid.iter().rev().collect()
            } else {
                grid.iter().collect()
            };
            for (caller, (action, rtype, rid, rorg)) in order {
                let cached = decide_action(&snap, caller, action, rtype, rid, rorg, &facts);
                let fresh = snap.decide_as(
                    caller.role(),
                    principal_entity(caller),
                    snap.action(action).unwrap(),
                    entities::resource(rtype, rid, rorg),
                    snap.context(&facts),
                );
                assert_eq!(
                    (cached.allowed, &cached.policies, &cached.errors),
                    (fresh.allowed, &fresh.policies, &fresh.errors),
                    "{:?} {:?} {:?} on {action} {rtype}::{rid} in {rorg}",
                    caller.user_id,
                    caller.role(),
                    caller.org()
                );
                if fresh.allowed {
                    allowed += 1;
                } else {
                    denied += 1;
                }
            }
        }
        assert!(
            allowed > 100 && denied > 100,
            "{allowed} allowed, {denied} denied"
        );

        // Unnamed callers of one shape share one cached outcome; a named one does not.
        let snap = store.current();
        let member = |user: &str, org: &str| user_caller(user, org, "nanoUser");
        let first = decide_action(
            &snap,
            &member("u1", "org-a"),
            "deleteStream",
            "Stream",
            "s1",
            "org-a",
            &facts,
        );
        let other = decide_action(
            &snap,
            &member("u2", "org-b"),
            "deleteStream",
            "Stream",
            "s2",
            "org-b",
            &facts,
        );
        let vip = decide_action(
            &snap,
            &member("u-vip", "org-a"),
            "deleteStream",
            "Stream",
            "s1",
            "org-a",
            &facts,
        );
        assert!(
            Arc::ptr_eq(&first, &other),
            "same shape was evaluated again"
        );
        assert!(!first.allowed && vip.allowed);
    }
}
