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
//! If an entity ever gains an attribute built from something else, that input
//! must join the key (see `key`).

use std::sync::Arc;

use moka::sync::Cache;

use super::entities::{ContextNeeds, RequestFacts};
use super::Outcome;

/// Decisions kept per snapshot. An entry is a few hundred bytes.
const CAPACITY: u64 = 4096;

pub struct DecisionCache {
    entries: Cache<Box<[u8]>, Arc<Outcome>>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            entries: Cache::builder().max_capacity(CAPACITY).build(),
        }
    }
}

impl DecisionCache {
    pub fn get(&self, key: &[u8]) -> Option<Arc<Outcome>> {
        self.entries.get(key)
    }

    pub fn insert(&self, key: Box<[u8]>, outcome: Arc<Outcome>) {
        self.entries.insert(key, outcome);
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

/// The cache key of a decision: every input, and of the context only what
/// the snapshot's policies read (the rest cannot change the outcome).
pub fn key(i: &DecisionInputs<'_>, needs: ContextNeeds) -> Box<[u8]> {
    let mut k = Vec::with_capacity(160);
    field(&mut k, i.action);
    field(&mut k, i.principal_type);
    field(&mut k, i.principal_id);
    optional(&mut k, i.role);
    optional(&mut k, i.org);
    field(&mut k, i.resource_type);
    field(&mut k, i.resource_id);
    field(&mut k, i.resource_org);
    let f = i.facts;
    optional(&mut k, needs.method.then_some(f.method));
    optional(&mut k, needs.path.then_some(f.path));
    optional(&mut k, needs.credential.then_some(f.credential.as_str()));
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
    k.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
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
        let base = key(&inputs(&f, "u1", "nanoUser"), ContextNeeds::ALL);
        assert_eq!(base, key(&inputs(&f, "u1", "nanoUser"), ContextNeeds::ALL));
        assert_ne!(base, key(&inputs(&f, "u1", "nanoAdmin"), ContextNeeds::ALL));
        assert_ne!(base, key(&inputs(&f, "u2", "nanoUser"), ContextNeeds::ALL));
        let g = facts("/stream/s2");
        assert_ne!(base, key(&inputs(&g, "u1", "nanoUser"), ContextNeeds::ALL));
        // Field boundaries cannot be shifted to forge another key.
        let mut a = inputs(&f, "u1", "nanoUser");
        a.resource_id = "s1x";
        a.resource_org = "o";
        let mut b = inputs(&f, "u1", "nanoUser");
        b.resource_id = "s1";
        b.resource_org = "xo";
        assert_ne!(key(&a, ContextNeeds::ALL), key(&b, ContextNeeds::ALL));
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
            key(&inputs(&f, "u1", "nanoUser"), needs),
            key(&inputs(&g, "u1", "nanoUser"), needs)
        );
        let mut h = facts("/stream/s1");
        h.tag_filter = true;
        assert_ne!(
            key(&inputs(&f, "u1", "nanoUser"), needs),
            key(&inputs(&h, "u1", "nanoUser"), needs)
        );
    }
}
