//! Cross-replica revocation latency: two rolegate replicas on one PostgreSQL
//! (a throwaway cluster on loopback), a user whose token replica B has cached,
//! and, per trial, the time from replica A's answer to `PUT /user/tokenkey`
//! until B first refuses the old token. B's cache TTL is five minutes, so only
//! the change notification can explain a refusal.
//!
//! `cargo bench --bench revocation` runs 1000 trials (ROLEGATE_BENCH_TRIALS
//! overrides) and writes `bench/results/revocation-latest.md`; under
//! `cargo test --benches` it runs 5 trials as a smoke test. The peer measured
//! in the same run is one plain request to B (a cache hit): the latency is
//! reported as a multiple of it too.
//!
//! A second row measures the bound when the doorbell is lost: the renewal is
//! written by SQL with its change-log entry but without `pg_notify`, so only
//! B's poll of the log (`change_poll_ms`, 250 ms) can find it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{tok, Echo, Options, Sidecar};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn replica(echo: &Echo, url: &str) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(echo.url()),
        store: Some(url.to_owned()),
        config: "cache_ttl_secs = 300\n".to_owned(),
        ..Default::default()
    })
    .await
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let trials: usize = if measuring {
        std::env::var("ROLEGATE_BENCH_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000)
    } else {
        5
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let url = support::pg::shared().database().await;
        let echo = Echo::start().await;
        let a = replica(&echo, &url).await;
        let b = replica(&echo, &url).await;
        let org = a.org("acme").await;
        let admin = a.user(&org, "admin@acme.test", "nanoAdmin").await;
        let admin_token = a.token(&admin.id).await;
        let user = a.user(&org, "u@acme.test", "nanoUser").await;
        let renew = json!({ "userId": user.id }).to_string();

        let mut revocation = Vec::with_capacity(trials);
        let mut request = Vec::with_capacity(trials);
        let deadline = Duration::from_secs(5);
        for _ in 0..trials {
            let old = a.token(&user.id).await;
            // B caches the current key; time one such request as the peer.
            let t = Instant::now();
            let r = b.send("GET", "/stream", &[tok(&old)], None).await;
            request.push(t.elapsed());
            assert_eq!(r.status, 200, "{}", r.body);

            let r = a
                .send("PUT", "/user/tokenkey", &[tok(&admin_token)], Some(&renew))
                .await;
            let returned = Instant::now();
            assert_eq!(r.status, 200, "{}", r.body);
            loop {
                let r = b.send("GET", "/stream", &[tok(&old)], None).await;
                if r.status == 401 {
                    break;
                }
                assert!(
                    returned.elapsed() < deadline,
                    "B still accepts the old token after {deadline:?}"
                );
            }
            revocation.push(returned.elapsed());
        }
        // The doorbell lost: a tenth of the trials (at least 5).
        let mut lost = Vec::new();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for _ in 0..(trials / 10).max(5) {
            let old = a.token(&user.id).await;
            let r = b.send("GET", "/stream", &[tok(&old)], None).await;
            assert_eq!(r.status, 200, "{}", r.body);
            client
                .batch_execute(&format!(
                    "BEGIN; UPDATE users SET token_key = '\\x{}' WHERE id = '{}'; \
                     INSERT INTO change_log (change, at_ms) VALUES ('u:{}', 0); COMMIT;",
                    hex::encode(rolegate::store::random_key()),
                    user.id,
                    user.id
                ))
                .await
                .unwrap();
            let committed = Instant::now();
            while b.send("GET", "/stream", &[tok(&old)], None).await.status != 401 {
                assert!(committed.elapsed() < deadline, "the poll never found it");
            }
            lost.push(committed.elapsed());
        }
        lost.sort();
        revocation.sort();
        request.sort();
        let (p50, p99, max) = (
            percentile(&revocation, 0.50),
            percentile(&revocation, 0.99),
            *revocation.last().unwrap(),
        );
        let peer = percentile(&request, 0.50);
        let report = format!(
            "# Cross-replica revocation latency\n\n\
             `cargo bench --bench revocation` ({trials} trials; two replicas, one PostgreSQL, loopback)\n\n\
             | measure | p50 | p99 | max |\n|---|---|---|---|\n\
             | renew on A returned → B refuses the old token | {} | {} | {} |\n\
             | doorbell lost ({} trials): commit → B refuses (the poll bound) | {} | {} | {} |\n\
             | peer: one cached request to B | {} | {} | {} |\n\n\
             p50 revocation ÷ p50 request: {:.1}×. Targets: p99 < 10 ms with the doorbell; \
             within one poll interval (250 ms) without it.\n",
            ms(p50),
            ms(p99),
            ms(max),
            lost.len(),
            ms(percentile(&lost, 0.50)),
            ms(percentile(&lost, 0.99)),
            ms(*lost.last().unwrap()),
            ms(peer),
            ms(percentile(&request, 0.99)),
            ms(*request.last().unwrap()),
            p50.as_secs_f64() / peer.as_secs_f64(),
        );
        print!("{report}");
        if measuring {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("bench/results/revocation-latest.md");
            std::fs::write(&path, &report).unwrap();
            println!("written to {}", path.display());
        }
    });
}
