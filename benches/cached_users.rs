//! Memory per cached user: a counting global allocator measures the heap a
//! real `PrincipalCache` holds after N users (from a real SQLite store) were
//! looked up and their tokens verified, divided by N. It fails (non-zero
//! exit) when a user costs more than `BOUND_BYTES`, so the regression cannot
//! come back unnoticed; it runs in the test suite too (`cargo test --benches`,
//! 10,000 users). Criterion then times a cache miss (store read, entry, first
//! token check) per user.
//! Run: `cargo bench --bench cached_users` (10,000 and 100,000 users).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/cached_users.rs"]
mod support;

use criterion::Criterion;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

/// Heap bytes a cached user may cost before this bench fails: about 280
/// measured (313 at 10,000 users, where the tables' growth slack weighs
/// more), so one more string per user (64 bytes) or a keyed HMAC context
/// (192) fails it.
const BOUND_BYTES: f64 = 350.0;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (test
    // mode: the smaller population only, and criterion runs each routine once).
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[10_000, 100_000] } else { &[10_000] };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failed = false;
    for &n in sizes {
        let pop = support::populate(&rt, n);
        let m = support::measure(&rt, &pop);
        println!(
            "cached_users/{n}: {:.0} bytes per cached user (bound {BOUND_BYTES:.0}), {:.1} allocations per cache miss",
            m.bytes, m.allocations_per_miss
        );
        if m.bytes > BOUND_BYTES {
            eprintln!(
                "cached_users/{n}: {:.0} bytes per cached user exceeds the bound of {BOUND_BYTES:.0}",
                m.bytes
            );
            failed = true;
        }
        let cache = support::cache(&pop.store, 2 * n as u64);
        let d = support::decision_share(&rt, &cache, &pop);
        println!(
            "cached_users/{n}: decision cache {:.1} bytes per user, {:.2} allocations per decision for a user never seen before",
            d.bytes, d.allocations_per_new_user
        );
        // A Cedar evaluation allocates hundreds of times: a new user of a
        // shape already decided must be answered from the decision cache.
        if d.allocations_per_new_user >= 1.0 || d.bytes >= 1.0 {
            eprintln!("cached_users/{n}: users never seen before cost decisions of their own");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }

    // The time of a cache miss: a fresh cache per batch, each user once.
    let pop = support::populate(&rt, 10_000);
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("cache_miss_and_first_token", |b| {
        b.iter_custom(|iters| {
            let settings = support::token_settings();
            let now = rolegate::clock::unix_now();
            let mut spent = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let cache = support::cache(&pop.store, 20_000);
                let batch = (iters - done).min(pop.ids.len() as u64) as usize;
                let started = Instant::now();
                for (id, t) in pop.ids.iter().zip(&pop.tokens).take(batch) {
                    let user = rt.block_on(cache.user(id)).unwrap().value.unwrap();
                    user.verify(&rolegate::authn::token::parse(t).unwrap(), &settings, now)
                        .unwrap();
                }
                spent += started.elapsed();
                done += batch as u64;
            }
            spent
        })
    });
    c.final_summary();
}
