//! Measuring what a cached user costs: a counting global allocator and the
//! fill of a real `PrincipalCache` from a real SQLite store. Shared by the
//! `cached_users` bench and the `memory` test (each includes this file with
//! `#[path]`, and installs [`Counting`] as its global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rolegate::authn::cache::{CacheSettings, PrincipalCache};
use rolegate::authn::token::{self, TokenSettings};
use rolegate::store::{NewUser, SharedStore};

/// The system allocator, counting the bytes it holds: each block's usable
/// size plus the allocator's own header (glibc: 8 bytes), so the figure is
/// what the heap really gives up, rounding included.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn footprint(ptr: *mut u8, _layout: Layout) -> isize {
    // SAFETY: `ptr` is a live block of the system allocator.
    (unsafe { libc::malloc_usable_size(ptr.cast()) } + 8) as isize
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn footprint(_ptr: *mut u8, layout: Layout) -> isize {
    layout.size() as isize
}

// SAFETY: every call is passed to `System` unchanged; the counters only
// observe the blocks it returns.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(footprint(p, layout), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(footprint(p, layout), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(footprint(ptr, layout), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = footprint(ptr, layout);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let after = footprint(
                p,
                Layout::from_size_align(new_size, layout.align()).unwrap_or(layout),
            );
            LIVE.fetch_add(after - before, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

pub fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

pub const MASTER: &[u8] = b"cached-users-master-secret-0123456789abcdef";

pub fn token_settings() -> TokenSettings {
    TokenSettings {
        issuer: "rolegate".into(),
        audience: "bintu".into(),
        ttl_secs: 3600,
        leeway_secs: 30,
    }
}

/// A SQLite store holding `n` users spread over a few organisations and the
/// three shipped roles (as a platform's users are), and one fresh API token
/// per user.
pub struct Population {
    pub store: SharedStore,
    pub ids: Vec<String>,
    pub tokens: Vec<String>,
    _dir: tempfile::TempDir,
}

pub fn populate(rt: &tokio::runtime::Runtime, n: usize) -> Population {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("users.db").display().to_string();
    let store = rt.block_on(rolegate::store::open(&location)).unwrap();
    let orgs: Vec<String> = (0..16)
        .map(|i| {
            rt.block_on(store.create_org(&format!("org-{i}")))
                .unwrap()
                .org
                .id
        })
        .collect();
    let roles = ["nanoAdmin", "nanoUser", "nanoReadOnly"];
    let new = (0..n)
        .map(|i| NewUser {
            org_id: orgs[i % orgs.len()].clone(),
            email: format!("user-{i}@memory.invalid"),
            role: roles[i % roles.len()].into(),
            password_hash: None,
        })
        .collect();
    let users = rt.block_on(store.create_users(new)).unwrap();
    let settings = token_settings();
    let now = rolegate::clock::unix_now();
    let tokens = users
        .iter()
        .map(|u| token::mint_for_user(&settings, MASTER, u, now).unwrap())
        .collect();
    let ids = users.iter().map(|u| u.id.clone()).collect();
    Population {
        store,
        ids,
        tokens,
        _dir: dir,
    }
}

pub fn cache(store: &SharedStore, capacity: u64) -> PrincipalCache {
    PrincipalCache::new(
        store.clone(),
        Arc::from(MASTER),
        CacheSettings {
            ttl: Duration::from_secs(600),
            capacity,
            negative_ttl: Duration::from_secs(10),
            negative_capacity: 10_000,
        },
    )
}

/// Every user looked up once (a miss: a store read and a new entry) and
/// their token verified through the entry, as the request path does for a
/// user's first request.
pub fn fill(rt: &tokio::runtime::Runtime, cache: &PrincipalCache, pop: &Population) {
    let settings = token_settings();
    let now = rolegate::clock::unix_now();
    for (id, t) in pop.ids.iter().zip(&pop.tokens) {
        let user = rt.block_on(cache.user(id)).unwrap().value.unwrap();
        user.verify(&token::parse(t).unwrap(), &settings, now)
            .unwrap();
    }
}

/// What one cached user costs, measured.
#[derive(Debug, Clone, Copy)]
pub struct PerUser {
    /// Heap bytes held by the cache after the fill, per user.
    pub bytes: f64,
    /// Heap allocations made per cache miss (store read, entry, token check).
    pub allocations_per_miss: f64,
}

/// Fill a fresh cache with every user of `pop` and return what it holds per
/// user. A first fill of a throwaway cache warms the store (SQLite's page
/// cache, prepared statements) so that none of that is counted.
pub fn measure(rt: &tokio::runtime::Runtime, pop: &Population) -> PerUser {
    let n = pop.ids.len();
    let capacity = (n as u64) * 2;
    {
        let warm = cache(&pop.store, capacity);
        fill(rt, &warm, pop);
    }
    let before = live_bytes();
    let allocs = allocations();
    let measured = cache(&pop.store, capacity);
    fill(rt, &measured, pop);
    let after = live_bytes();
    let allocations_per_miss = (allocations() - allocs) as f64 / n as f64;
    assert!(measured.len() as usize == n, "every user is cached");
    let bytes = (after - before) as f64 / n as f64;
    drop(measured);
    PerUser {
        bytes,
        allocations_per_miss,
    }
}

/// What deciding for many users costs the snapshot's decision cache.
#[derive(Debug, Clone, Copy)]
pub struct DecisionShare {
    /// Heap bytes the decision cache grew by, per user.
    pub bytes: f64,
    /// Heap allocations per decision for a user never seen before (a Cedar
    /// evaluation makes hundreds; a decision-cache hit, none).
    pub allocations_per_new_user: f64,
}

/// Decide one request (`getStream` on a stream of their own organisation)
/// for every user of `pop`, each for the first time, through the proxy's
/// `decide_action` with the shipped policies. Decision keys abstract the ids
/// no policy names, so a few users of each role and organisation shape are
/// evaluated and everyone else is a decision-cache hit.
pub fn decision_share(
    rt: &tokio::runtime::Runtime,
    cache: &PrincipalCache,
    pop: &Population,
) -> DecisionShare {
    use rolegate::authn::credential::CredentialKind;
    use rolegate::authn::principal::Caller;
    use rolegate::authz::entities::RequestFacts;
    use rolegate::authz::{PolicySource, PolicyStore};

    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let snap = PolicyStore::open(PolicySource {
        policies_dir: root.join("policies"),
        schema_dir: root.join("schema"),
    })
    .unwrap()
    .current();
    let facts = RequestFacts {
        method: "GET",
        path: "/stream",
        credential: CredentialKind::UserToken,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        tag_filter: false,
    };
    let callers: Vec<(Caller, String)> = pop
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let user = rt.block_on(cache.user(id)).unwrap().value.unwrap();
            let caller = Caller::user(user.id.clone(), user.membership.clone());
            (caller, format!("stream-{i}"))
        })
        .collect();
    let decide = |(caller, stream): &(Caller, String)| {
        let org = caller.org().unwrap();
        rolegate::authz::decide::decide_action(
            &snap,
            caller,
            "getStream",
            "Stream",
            stream,
            org,
            &facts,
        )
        .allowed
    };
    // One user of each shape first (their decisions are evaluated), so that
    // what follows is the steady state: users never seen before, of shapes seen.
    let warm = callers.len().min(64);
    for c in &callers[..warm] {
        decide(c);
    }
    let before = live_bytes();
    let allocs = allocations();
    let mut allowed = 0usize;
    for c in &callers[warm..] {
        allowed += usize::from(decide(c));
    }
    let n = (callers.len() - warm).max(1) as f64;
    let share = DecisionShare {
        bytes: (live_bytes() - before) as f64 / n,
        allocations_per_new_user: (allocations() - allocs) as f64 / n,
    };
    assert_eq!(
        allowed,
        callers.len() - warm,
        "every user may read a stream"
    );
    share
}
