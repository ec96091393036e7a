//! Shared copies of the values many cached users have in common: their
//! organisation id and their role. A platform has few roles and far fewer
//! organisations than users, so each value is held once and every cache
//! entry points at it (an `Arc<str>` clone) instead of owning a copy of its
//! own (a heap block of 32–64 bytes per user and value).
//!
//! Hand-written (a mutex around a set): it runs only when a user is read
//! from the store, never on a cache hit, and the crates that intern strings
//! keep their tables for ever or bring a concurrent map along. Values no
//! entry holds any more are dropped when the table has doubled since it was
//! last pruned, so it stays within twice the values in use.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Smallest table size at which pruning starts.
const MIN_PRUNE_AT: usize = 64;

#[derive(Debug)]
pub struct Interner {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    values: HashSet<Arc<str>>,
    /// Prune when the table reaches this size.
    prune_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            table: Mutex::new(Table {
                values: HashSet::new(),
                prune_at: MIN_PRUNE_AT,
            }),
        }
    }
}

impl Interner {
    /// The shared copy of `value`.
    pub fn intern(&self, value: &str) -> Arc<str> {
        // The table holds no invariant a panicking holder could break halfway.
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = table.values.get(value) {
            return shared.clone();
        }
        if table.values.len() >= table.prune_at {
            // Only the table's own handle left: no entry uses the value.
            table.values.retain(|v| Arc::strong_count(v) > 1);
            table.prune_at = (table.values.len() * 2).max(MIN_PRUNE_AT);
        }
        let shared: Arc<str> = Arc::from(value);
        table.values.insert(shared.clone());
        shared
    }

    /// Values in the table (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values
            .len()
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
