//! One store read per key at a time: concurrent cache misses for the same
//! key wait for the read already under way instead of each starting their own.
//!
//! Without it, a cold or freshly cleared cache turns every connection of a busy
//! caller into its own store query (64 connections gave 42 reads for one user),
//! and a cache clear after a lost change feed does that for every active caller
//! at the moment the store is recovering.
//!
//! Two rules keep it from weakening revocation or availability:
//! - **Epochs.** A miss joins a read only if that read began in the
//!   invalidation epoch the miss observed, or a later one. A request that arrives after a role
//!   change or tokenKey renewal never receives a value read before it.
//! - **Cancellation.** Waiting is `tokio::sync::OnceCell::get_or_init`: if the
//!   request leading the read is dropped (its client went away), one of the
//!   waiters runs its own read, so nobody waits on a read no one is doing.
//!
//! moka's own `get_with` coalesces loads too, but a load under way there is
//! joined by every later miss, including one that arrived after the
//! invalidation the load predates: it cannot keep the epoch rule.
//!
//! A failed read is shared like a value: during a store outage the waiters get
//! the leader's error at once instead of queueing their own timeouts one by one.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

/// How a value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Found in the cache when re-checked under the flight lock.
    Cached,
    /// This caller read it.
    Read,
    /// Another caller's read, waited for.
    Joined,
}

struct Flight<V> {
    epoch: u64,
    result: OnceCell<V>,
}

pub struct Flights<K, V> {
    in_flight: Mutex<HashMap<K, Arc<Flight<V>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<V>>>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value for `key`: from `cached` (checked under the lock, so a read
    /// that finished a moment ago is seen rather than repeated), from a read
    /// already under way that began in `epoch` or later, or from `read`, run
    /// here.
    ///
    /// `read` must put its value in the cache before returning: a flight
    /// leaves the map after its read returns, and a later miss relies on the
    /// cache re-check to see the value.
    pub async fn get<Fut>(
        &self,
        key: K,
        epoch: u64,
        cached: impl FnOnce() -> Option<V>,
        read: impl FnOnce() -> Fut,
    ) -> (V, Source)
    where
        Fut: Future<Output = V>,
    {
        let flight = {
            let mut map = self.lock();
            match map.get(&key) {
                // A read begun in this epoch or a later one saw every change
                // this caller may be required to see.
                Some(f) if f.epoch >= epoch => f.clone(),
                _ => {
                    if let Some(v) = cached() {
                        return (v, Source::Cached);
                    }
                    // A flight of an older epoch is replaced: its waiters keep
                    // their handle to it, new arrivals start afresh.
                    let f = Arc::new(Flight {
                        epoch,
                        result: OnceCell::new(),
                    });
                    map.insert(key.clone(), f.clone());
                    f
                }
            }
        };
        let seat = Seat {
            flights: self,
            key,
            flight,
        };
        let mut led = false;
        let value = seat
            .flight
            .result
            .get_or_init(|| {
                led = true;
                read()
            })
            .await
            .clone();
        drop(seat);
        (value, if led { Source::Read } else { Source::Joined })
    }

    /// Keys with a read under way or abandoned (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A caller's place in a flight. On leaving (done, or dropped mid-wait) it
/// takes the flight out of the map once the flight has a result, or when no
/// one else is left in it, so the map holds only reads still under way.
struct Seat<'a, K: Hash + Eq + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: K,
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Seat<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        let ours = map
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight));
        // Counted under the lock, where joiners take their handles: 2 is the
        // map's and this seat's.
        let last = Arc::strong_count(&self.flight) == 2;
        if ours && (self.flight.result.initialized() || last) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A read that counts itself and finishes when told to.
    async fn gated_read(reads: &AtomicUsize, gate: &Notify, value: u32) -> u32 {
        reads.fetch_add(1, Ordering::SeqCst);
        gate.notified().await;
        value
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_epoch_share_one_read() {
        let flights = Flights::<&str, u32>::default();
        let reads = AtomicUsize::new(0);
        let gate = Notify::new();
        let callers =
            (0..16).map(|_| flights.get("u1", 7, || None, || gated_read(&reads, &gate, 42)));
        let all = futures_util::future::join_all(callers);
        let release = async {
            // Every caller is parked before the read may finish.
            tokio::time::sleep(Duration::from_millis(50)).await;
            gate.notify_waiters();
        };
        let (results, ()) = tokio::join!(all, release);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|(v, _)| *v == 42));
        let led = results.iter().filter(|(_, s)| *s == Source::Read).count();
        let joined = results.iter().filter(|(_, s)| *s == Source::Joined).count();
        assert_eq!((led, joined), (1, 15));
        assert_eq!(flights.len(), 0, "a finished flight stays in the map");
    }

    #[tokio::test]
    async fn a_miss_of_a_newer_epoch_does_not_join_an_older_read() {
        let flights = Flights::<&str, u32>::default();
        let reads = AtomicUsize::new(0);
        let gate = Notify::new();
        let before = flights.get("u1", 1, || None, || gated_read(&reads, &gate, 1));
        let after = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // The invalidation happened: epoch 2. This read must be its own.
            let r = flights
                .get(
                    "u1",
                    2,
                    || None,
                    || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        2
                    },
                )
                .await;
            gate.notify_waiters();
            r
        };
        let ((old, _), (new, source)) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(before, after)
        })
        .await
        .expect("the newer miss waited on the older read");
        assert_eq!((old, new, source), (1, 2, Source::Read));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_waiter_reads_for_itself_when_the_leader_is_dropped() {
        let flights = Flights::<&str, u32>::default();
        let reads = AtomicUsize::new(0);
        let never = Notify::new();
        let leader = flights.get("u1", 1, || None, || gated_read(&reads, &never, 1));
        // The leader's client goes away after 20 ms; the joiner, parked on the
        // same flight, must not wait for ever.
        let leader = tokio::time::timeout(Duration::from_millis(20), leader);
        let joiner = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            flights
                .get(
                    "u1",
                    1,
                    || None,
                    || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        9
                    },
                )
                .await
        };
        let (leader, joined) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(leader, joiner)
        })
        .await
        .expect("the joiner waited for a dropped leader");
        assert!(leader.is_err());
        assert_eq!(joined, (9, Source::Read));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_flight_abandoned_by_everyone_leaves_the_map() {
        let flights = Flights::<&str, u32>::default();
        let reads = AtomicUsize::new(0);
        let never = Notify::new();
        let lone = flights.get("u1", 1, || None, || gated_read(&reads, &never, 1));
        assert!(tokio::time::timeout(Duration::from_millis(10), lone)
            .await
            .is_err());
        assert_eq!(flights.len(), 0);
        // The cache re-check under the lock answers without a read.
        let (v, source) = flights
            .get("u1", 1, || Some(5), || async { unreachable!() })
            .await;
        assert_eq!((v, source), (5, Source::Cached));
    }
}
