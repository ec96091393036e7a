//! Shared copies of the values many cached users have in common: their
//! organisation id and their role. A platform has few roles and far fewer
//! organisations than users, so each value is held once and every cache
//! entry points at it (an `Arc<str>` clone) instead of owning a copy of its
//! own (a heap block of 32–64 bytes per user and value). The pair itself is
//! shared too ([`Membership`]): an entry then holds one thin pointer where
//! two `Arc<str>` took 32 bytes, which brings the entry's heap block from
//! 144 to 128 bytes.
//!
//! Hand-written (a mutex around a set): it runs only when a user is read
//! from the store, never on a cache hit, and the crates that intern strings
//! keep their tables for ever or bring a concurrent map along. Values no
//! entry holds any more are dropped when the table has doubled since it was
//! last pruned, so it stays within twice the values in use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use http::HeaderValue;

/// Smallest table size at which pruning starts.
const MIN_PRUNE_AT: usize = 64;

/// The organisation a caller acts in and the role they act as, one copy per
/// distinct pair: a user's (interned, shared by every user of the pair), an
/// API key's (`nanoAdmin`) or a player key's (no role), the latter two built
/// once per cached key.
#[derive(Debug, PartialEq, Eq)]
pub struct Membership {
    pub org: Arc<str>,
    pub role: Option<Arc<str>>,
    /// The two as the values of the identity headers a forwarded request
    /// carries (`None`: not a valid header value, and so not sent). Built
    /// once per pair: building them per request was a validation, a copy
    /// and an allocation each, on every forwarded request.
    pub org_value: Option<HeaderValue>,
    pub role_value: Option<HeaderValue>,
}

impl Membership {
    pub fn new(org: Arc<str>, role: Option<Arc<str>>) -> Self {
        Membership {
            org_value: HeaderValue::from_str(&org).ok(),
            role_value: role.as_deref().and_then(|r| HeaderValue::from_str(r).ok()),
            org,
            role,
        }
    }
}

#[derive(Debug)]
pub struct Interner {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    values: HashSet<Arc<str>>,
    /// Prune when the table reaches this size.
    prune_at: usize,
    /// The pairs, by the addresses of their two interned values: equal
    /// addresses are equal strings, and a pair in the table keeps both
    /// values alive, so no address is reused while its key is here.
    pairs: HashMap<(usize, usize), Arc<Membership>>,
    pairs_prune_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            table: Mutex::new(Table {
                values: HashSet::new(),
                prune_at: MIN_PRUNE_AT,
                pairs: HashMap::new(),
                pairs_prune_at: MIN_PRUNE_AT,
            }),
        }
    }
}

impl Table {
    fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        if self.values.len() >= self.prune_at {
            // Only the table's own handle left: no entry uses the value.
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.prune_at = (self.values.len() * 2).max(MIN_PRUNE_AT);
        }
        let shared: Arc<str> = Arc::from(value);
        self.values.insert(shared.clone());
        shared
    }
}

impl Interner {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds no invariant a panicking holder could break halfway.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shared copy of `value` (entries take values through
    /// [`Interner::membership`]; this is the tests' way in).
    #[cfg(test)]
    fn intern(&self, value: &str) -> Arc<str> {
        self.table().intern(value)
    }

    /// The shared copy of the pair (`org`, `role`).
    pub fn membership(&self, org: &str, role: &str) -> Arc<Membership> {
        let mut table = self.table();
        if table.pairs.len() >= table.pairs_prune_at {
            // Pairs first: a pruned pair lets go of its values, which the
            // values' own pruning then drops when nothing else holds them.
            table.pairs.retain(|_, m| Arc::strong_count(m) > 1);
            table.pairs_prune_at = (table.pairs.len() * 2).max(MIN_PRUNE_AT);
        }
        let org = table.intern(org);
        let role = table.intern(role);
        let key = (
            Arc::as_ptr(&org).cast::<u8>() as usize,
            Arc::as_ptr(&role).cast::<u8>() as usize,
        );
        table
            .pairs
            .entry(key)
            .or_insert_with(|| Arc::new(Membership::new(org, Some(role))))
            .clone()
    }

    /// Values in the table (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let interner = Interner::default();
        let a = interner.intern("nanoUser");
        let b = interner.intern(&String::from("nanoUser"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "nanoUser");
        let c = interner.intern("nanoAdmin");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn equal_pairs_share_one_copy_and_unused_ones_are_dropped() {
        let interner = Interner::default();
        let a = interner.membership("o1", "nanoUser");
        let b = interner.membership(&String::from("o1"), "nanoUser");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((&*a.org, a.role.as_deref()), ("o1", Some("nanoUser")));
        assert_eq!(
            (a.org_value.as_ref(), a.role_value.as_ref()),
            (
                Some(&HeaderValue::from_static("o1")),
                Some(&HeaderValue::from_static("nanoUser"))
            )
        );
        let c = interner.membership("o1", "nanoAdmin");
        let d = interner.membership("o2", "nanoUser");
        assert!(!Arc::ptr_eq(&a, &c) && !Arc::ptr_eq(&a, &d));
        // The pair's values are the interned ones.
        assert!(Arc::ptr_eq(&a.org, &c.org));
        assert!(matches!((&a.role, &d.role), (Some(x), Some(y)) if Arc::ptr_eq(x, y)));
        for i in 0..1000 {
            // As for evicted users of organisations seen once.
            interner.membership(&format!("gone{i}"), "nanoUser");
        }
        let table = interner.table();
        assert!(
            table.pairs.len() <= 2 * MIN_PRUNE_AT,
            "{}",
            table.pairs.len()
        );
        drop(table);
        assert!(Arc::ptr_eq(&a, &interner.membership("o1", "nanoUser")));
        assert!(interner.len() <= 2 * MIN_PRUNE_AT + 4, "{}", interner.len());
    }

    #[test]
    fn values_nobody_holds_are_dropped_once_the_table_has_doubled() {
        let interner = Interner::default();
        let kept: Vec<Arc<str>> = (0..10).map(|i| interner.intern(&format!("k{i}"))).collect();
        for i in 0..1000 {
            // Interned and dropped at once, as for an evicted user's organisation.
            interner.intern(&format!("gone{i}"));
        }
        // Bounded by twice what is in use (and the smallest prune size).
        assert!(interner.len() <= 2 * MIN_PRUNE_AT, "{}", interner.len());
        for (i, k) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(k, &interner.intern(&format!("k{i}"))));
        }
    }
}
