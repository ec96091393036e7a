//! Change-log fan-out by simulation: hundreds of lightweight followers (tasks
//! in one process, each reading the log the way a replica's follower does:
//! `changes_after` every poll interval, no doorbell) against one throwaway
//! PostgreSQL, while a writer renews tokenKeys at a steady rate. Reports,
//! per follower count, the time from a change's log entry being written
//! (its `at_ms`, taken just before the commit, so the figure is a little
//! pessimistic) to each follower having read it (p50, p99, max), and the
//! store's load: transactions per second and per change (`pg_stat_database`).
//!
//! What it stands for: every replica polls the log through its ordinary
//! connection pool, so a fleet needs no dedicated LISTEN connection per
//! replica, works through transaction-mode poolers and read replicas, and
//! loads the store in proportion to fleet size ÷ poll interval, not to the
//! change rate. The followers here share one pool of the store's size (16
//! connections); real replicas each hold their own pool or go through a pooler.
//!
//! `cargo bench --bench fanout` runs 100, 300 and 1,000 followers for
//! 5 s each and writes `bench/results/fanout-latest.md`; under
//! `cargo test --benches` it runs 20 followers for 1 s as a smoke test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rolegate::store::{NewUser, SharedStore};

/// The followers' poll interval: the default `change_poll_ms`.
const POLL: Duration = Duration::from_millis(250);
/// One renewal every this often.
const WRITE_EVERY: Duration = Duration::from_millis(50);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn transactions(url: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = task.await;
    n
}

struct Row {
    followers: usize,
    changes: usize,
    latencies: Vec<Duration>,
    tx_per_sec: f64,
    seconds: f64,
}

async fn run(
    url: &str,
    store: &SharedStore,
    user: &str,
    followers: usize,
    length: Duration,
) -> Row {
    let start_seq = rolegate::store::changelog::head(store).await.unwrap();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..followers {
        let (store, latencies, stop) = (store.clone(), latencies.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the followers' phases over one interval, as real replicas are.
            tokio::time::sleep(POLL * (i as u32) / (followers as u32)).await;
            let mut applied = start_seq;
            let mut tick = tokio::time::interval(POLL);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let page = store.changes_after(applied, 512).await.unwrap();
                let seen_ms = rolegate::clock::unix_now_ms();
                let mine: Vec<Duration> = page
                    .entries
                    .iter()
                    .map(|e| Duration::from_millis((seen_ms - e.at_ms).max(0) as u64))
                    .collect();
                if let Some(last) = page.entries.last() {
                    applied = last.seq;
                }
                latencies.lock().unwrap().extend(mine);
            }
        }));
    }
    let before = transactions(url).await;
    let began = Instant::now();
    let mut changes = 0;
    while began.elapsed() < length {
        store
            .set_token_key(user, &rolegate::store::random_key())
            .await
            .unwrap();
        changes += 1;
        tokio::time::sleep(WRITE_EVERY).await;
    }
    // One more interval so every follower reads the last change.
    tokio::time::sleep(POLL * 2).await;
    let seconds = began.elapsed().as_secs_f64();
    let after = transactions(url).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    assert_eq!(
        latencies.len(),
        changes * followers,
        "every follower reads every change"
    );
    Row {
        followers,
        changes,
        latencies,
        tx_per_sec: (after - before) as f64 / seconds,
        seconds,
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (counts, length): (&[usize], Duration) = if measuring {
        (&[100, 300, 1000], Duration::from_secs(5))
    } else {
        (&[20], Duration::from_secs(1))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let url = support::pg::shared().database().await;
        let store = rolegate::store::open(&url).await.unwrap();
        let org = store.create_org("acme").await.unwrap();
        let user = store
            .create_user(NewUser {
                org_id: org.org.id.clone(),
                email: "u@acme.test".to_owned(),
                role: "nanoUser".to_owned(),
                password_hash: None,
            })
            .await
            .unwrap();
        let mut rows = Vec::new();
        for &n in counts {
            rows.push(run(&url, &store, &user.id, n, length).await);
        }
        let mut report = format!(
            "# Change-log fan-out (simulation)\n\n\
             `cargo bench --bench fanout`: followers polling the log every {} ms (no doorbell), \
             one renewal every {} ms, one PostgreSQL on loopback, {:.0} s per row.\n\n\
             | followers | changes | logged → read p50 | p99 | max | store tx/s | store tx per change |\n\
             |---|---|---|---|---|---|---|\n",
            POLL.as_millis(),
            WRITE_EVERY.as_millis(),
            length.as_secs_f64(),
        );
        for r in &rows {
            let per_change = r.tx_per_sec * r.seconds / r.changes as f64;
            report.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
                r.followers,
                r.changes,
                ms(percentile(&r.latencies, 0.5)),
                ms(percentile(&r.latencies, 0.99)),
                ms(*r.latencies.last().unwrap()),
                r.tx_per_sec,
                per_change,
            ));
        }
        report.push_str(&format!(
            "\nThe store's load follows the fleet (followers ÷ poll interval = {:.0} reads/s \
             per 1,000 followers), not the change rate; fan-out is bounded by one poll \
             interval plus the read. Target: p99 < 1 s at 1,000 followers.\n",
            1000.0 / POLL.as_secs_f64()
        ));
        print!("{report}");
        if measuring {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("bench/results/fanout-latest.md");
            std::fs::write(&path, &report).unwrap();
            println!("written to {}", path.display());
        }
    });
}
