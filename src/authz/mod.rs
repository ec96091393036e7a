//! Policies as one immutable snapshot: schema, policy set, route table and role
//! catalogue, loaded and validated together ([`loader`]) and swapped atomically
//! ([`PolicyStore`]). A request loads the snapshot once and decides against it,
//! so it never sees a mix of two versions, and the read path takes no lock.

pub mod decide;
pub mod decisions;
pub mod entities;
pub mod loader;
pub mod play;
pub mod routes;
mod slices;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, PolicySet, Request, Schema,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use loader::{LoadError, PolicySource, Problem};
use routes::RouteTable;

/// What the role catalogue (`policies/roles.toml`) says about a role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoleMeta {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// The outcome of one decision, with what explains it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation errors; any error makes the decision a deny.
    pub errors: Vec<String>,
}

pub struct PolicySnapshot {
    pub policies: PolicySet,
    pub schema: Schema,
    pub routes: RouteTable,
    pub roles: BTreeMap<String, RoleMeta>,
    pub version: u64,
    pub digest: String,
    pub loaded_at: OffsetDateTime,
    /// The context attributes these policies read (the rest are not built).
    pub context_needs: entities::ContextNeeds,
    /// The entity ids these policies name (decision keys keep only those).
    pub named_ids: decisions::NamedIds,
    /// Route decisions made with this snapshot (see [`decisions`]).
    pub decisions: decisions::DecisionCache,
    /// foldhash: looked up on every decision, filled only from the schema.
    actions: foldhash::HashMap<String, EntityUid>,
    /// Each action's entity with its groups as (transitive) parents: the one
    /// piece of the action hierarchy a decision needs, so a request adds just
    /// that entity instead of the whole hierarchy.
    action_entities: HashMap<EntityUid, Entity>,
    /// The policies that can apply, per action and principal shape (see [`slices`]).
    slices: HashMap<EntityUid, Vec<slices::Slice>>,
    authorizer: Authorizer,
}

impl PolicySnapshot {
    pub(crate) fn new(
        policies: PolicySet,
        schema: Schema,
        routes: RouteTable,
        roles: BTreeMap<String, RoleMeta>,
        version: u64,
        digest: String,
        authorizer: Authorizer,
    ) -> Self {
        let actions = schema
            .actions()
            .map(|a| (a.id().unescaped().to_owned(), a.clone()))
            .collect();
        let action_entities = schema
            .action_entities()
            .map(|es| es.iter().map(|e| (e.uid(), e.clone())).collect())
            .unwrap_or_default();
        let slices = slices::build(&policies, &action_entities, roles.keys());
        PolicySnapshot {
            context_needs: entities::ContextNeeds::of(&policies),
            named_ids: decisions::NamedIds::of(&policies),
            decisions: Default::default(),
            slices,
            policies,
            schema,
            routes,
            roles,
            version,
            digest,
            loaded_at: OffsetDateTime::now_utc(),
            actions,
            action_entities,
            authorizer,
        }
    }

    /// The action's entity uid, if the schema declares it.
    pub fn action(&self, name: &str) -> Option<&EntityUid> {
        self.actions.get(name)
    }

    /// Every action the schema declares (groups excluded), sorted by name.
    pub fn action_names(&self) -> Vec<&str> {
        let groups: Vec<&EntityUid> = self.schema.action_groups().collect();
        let mut names: Vec<&str> = self
            .actions
            .iter()
            .filter(|(_, uid)| !groups.contains(uid))
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// The context of an ordinary request, as these policies need it.
    pub fn context(&self, facts: &entities::RequestFacts<'_>) -> Context {
        entities::context(facts, self.context_needs)
    }

    /// The context of a guarded playback request, as these policies need it.
    pub fn playback_context(
        &self,
        facts: &entities::RequestFacts<'_>,
        playback: &entities::PlaybackFacts<'_>,
    ) -> Context {
        entities::playback_context(facts, playback, self.context_needs)
    }

    /// Decide one request. Anything that goes wrong is a deny.
    pub fn decide(
        &self,
        principal: Entity,
        action: &EntityUid,
        resource: Entity,
        context: Context,
    ) -> Outcome {
        self.decide_as(None, principal, action, resource, context)
    }

    /// Decide one request whose principal is known to hold `role` (its only
    /// `Role` parent). The role only narrows which policies are evaluated: a
    /// policy whose scope names another role could not have matched anyway.
    pub fn decide_as(
        &self,
        role: Option<&str>,
        principal: Entity,
        action: &EntityUid,
        resource: Entity,
        context: Context,
    ) -> Outcome {
        let policies = slices::find(
            &self.slices,
            action,
            principal.uid().type_name().basename(),
            role,
        )
        .unwrap_or(&self.policies);
        let request = match Request::new(
            principal.uid(),
            action.clone(),
            resource.uid(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    allowed: false,
                    policies: vec![],
                    errors: vec![e.to_string()],
                }
            }
        };
        // Both entities are built by rolegate, so the schema check is skipped here;
        // the policies were validated against the schema when they were loaded.
        let Some(action_entity) = self.action_entities.get(action).cloned() else {
            return Outcome {
                allowed: false,
                policies: vec![],
                errors: vec![format!("action `{action}` has no entity")],
            };
        };
        // A user acting on themselves (their own token, `GET /user/{own id}`) is
        // both principal and resource; Cedar refuses the same uid twice, so the
        // principal (which carries the role parent as well as `org`) stands for both.
        let mut list = vec![principal];
        if resource.uid() != list[0].uid() {
            list.push(resource);
        }
        list.push(action_entity);
        let entities = match Entities::from_entities(list, None) {
            Ok(e) => e,
            Err(e) => {
                return Outcome {
                    allowed: false,
                    policies: vec![],
                    errors: vec![e.to_string()],
                }
            }
        };
        let response = self.authorizer.is_authorized(&request, policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .collect();
        policies.sort_unstable();
        Outcome {
            // Fail closed: an error in any policy (a forbid that could not be
            // evaluated, say) turns the decision into a deny.
            allowed: response.decision() == Decision::Allow && errors.is_empty(),
            policies,
            errors,
        }
    }
}

/// The shipped policies and schema of this repository, for unit tests.
#[cfg(test)]
pub(crate) fn shipped() -> PolicyStore {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match PolicyStore::open(PolicySource {
        policies_dir: root.join("policies"),
        schema_dir: root.join("schema"),
    }) {
        Ok(store) => store,
        Err(e) => panic!("the shipped policies do not load: {e}"),
    }
}

/// The live snapshot, swapped atomically on reload.
pub struct PolicyStore {
    current: ArcSwap<PolicySnapshot>,
    source: PolicySource,
    next_version: AtomicU64,
}

impl PolicyStore {
    /// Load the first snapshot; failure is fatal to start-up.
    pub fn open(source: PolicySource) -> Result<Self, LoadError> {
        let first = loader::load(&source, 1)?;
        Ok(PolicyStore {
            current: ArcSwap::from_pointee(first),
            source,
            next_version: AtomicU64::new(2),
        })
    }

    /// The live snapshot. Call once per request and keep the `Arc` for the whole decision.
    #[inline]
    pub fn current(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// Load the files again and swap the new set in if, and only if, it is valid.
    /// Returns the new version, or the error while the old set stays live.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let snapshot = loader::load(&self.source, version)?;
        self.current.store(Arc::new(snapshot));
        Ok(version)
    }
}
