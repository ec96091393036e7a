//! The change log on the embedded store: a change made by another process
//! (the CLI, a second sidecar on the same file) bites within the poll bound,
//! receipts count the replicas that applied a change and name the others, a
//! follower that fell behind retention resyncs, a follower that cannot read
//! the log stops answering from its cache, and an acknowledged renewal
//! survives SIGKILL. Every sidecar here caches for five minutes: only the log
//! can explain a refusal.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{metric, rolegate, text, tok, Echo, Options, Reply, Sidecar, MASTER_SECRET};

const LONG_TTL: &str = "cache_ttl_secs = 300\n";
/// The embedded store's target: a change from another process bites within 1 s.
const POLL_BOUND: Duration = Duration::from_secs(1);

/// A sidecar on `store` (a SQLite file shared with others), named `id`.
async fn replica(echo: &Echo, store: &str, id: &str, extra: &str) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(echo.url()),
        store: Some(store.to_owned()),
        config: format!("{LONG_TTL}replica_id = \"{id}\"\n{extra}"),
        ..Default::default()
    })
    .await
}

async fn stream(sc: &Sidecar, token: &str) -> u16 {
    sc.send("GET", "/stream", &[tok(token)], None)
        .await
        .status
        .as_u16()
}

async fn until_status(sc: &Sidecar, token: &str, status: u16, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = stream(sc, token).await;
        if got == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "still {got} (not {status}) after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn renew_waiting(sc: &Sidecar, admin: &str, user_id: &str, wait: &str) -> Reply {
    let body = json!({ "userId": user_id }).to_string();
    let r = sc
        .send(
            "PUT",
            &format!("/user/tokenkey?wait={wait}"),
            &[tok(admin)],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

fn sqlite(path: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_rotation_bites_on_the_running_sidecar_within_a_second() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: LONG_TTL.to_owned(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    assert_eq!(stream(&sc, &t).await, 200);
    let config = sc.dir.path().join("rolegate.toml");
    let config = config.to_str().unwrap();

    // Without waiting: the command returns, the sidecar refuses within the bound.
    let o = rolegate(&[
        "--config",
        config,
        "user",
        "rotate",
        "--user",
        "u@acme.test",
        "--wait",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let took = until_status(&sc, &t, 401, POLL_BOUND).await;
    assert!(took < POLL_BOUND, "{took:?}");

    // With the receipt: when the command returns, the sidecar has applied it.
    let t2 = sc.token(&u.id).await;
    assert_eq!(stream(&sc, &t2).await, 200);
    let o = rolegate(&[
        "--config",
        config,
        "user",
        "rotate",
        "--user",
        "u@acme.test",
        "--wait",
        "5",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let me = sc.state.follower.replica_id().unwrap().to_owned();
    assert!(
        out.contains("applied by all 1 live replicas") && out.contains(&me),
        "{out}"
    );
    assert_eq!(stream(&sc, &t2).await, 401);

    // Role changes and deletions from the CLI are followed the same way.
    let t3 = sc.token(&u.id).await;
    assert_eq!(stream(&sc, &t3).await, 200);
    let o = rolegate(&[
        "--config",
        config,
        "user",
        "role",
        "--user",
        "u@acme.test",
        "--role",
        "nanoReadOnly",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stream(&sc, &t3).await, 401);
    let t4 = sc.token(&u.id).await;
    let o = rolegate(&["--config", config, "user", "delete", "--user", &u.id]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stream(&sc, &t4).await, 401);
    assert!(sc.state.store.user(&u.id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_count_the_replicas_that_applied_a_change_and_name_the_rest() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared.db").display().to_string();
    let a = replica(&echo, &store, "a", "").await;
    let b = replica(&echo, &store, "b", "").await;
    let org = a.org("acme").await;
    let admin = a.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_t = a.token(&admin.id).await;
    let u = a.user(&org, "u@acme.test", "nanoUser").await;

    // Two replicas.
    let r = renew_waiting(&a, &admin_t, &u.id, "5").await.json();
    let p = &r["propagation"];
    assert_eq!(p["complete"], true, "{r}");
    assert_eq!(names(&p["acknowledged"]), ["a", "b"], "{r}");
    assert!(names(&p["pending"]).is_empty(), "{r}");

    // Three.
    let c = replica(&echo, &store, "c", "").await;
    let t = a.token(&u.id).await;
    assert_eq!(stream(&c, &t).await, 200);
    let r = renew_waiting(&a, &admin_t, &u.id, "5").await.json();
    let p = &r["propagation"];
    assert_eq!(p["complete"], true, "{r}");
    assert_eq!(names(&p["acknowledged"]), ["a", "b", "c"], "{r}");
    assert_eq!(stream(&c, &t).await, 401);

    // c stops: its heartbeat is still fresh, so it counts as live and is named.
    let t = a.token(&u.id).await;
    assert_eq!(stream(&c, &t).await, 200);
    let c_dir = c.stop().await;
    let started = Instant::now();
    let r = renew_waiting(&a, &admin_t, &u.id, "0.5").await.json();
    let p = &r["propagation"];
    assert_eq!(p["complete"], false, "{r}");
    assert_eq!(names(&p["acknowledged"]), ["a", "b"], "{r}");
    assert_eq!(names(&p["pending"]), ["c"], "{r}");
    assert!(p["elapsed_ms"].as_u64().unwrap() >= 500, "{r}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // c comes back: it refuses the renewed token before answering anything.
    let c = Sidecar::with(Options {
        upstream: Some(echo.url()),
        store: Some(store.clone()),
        config: format!("{LONG_TTL}replica_id = \"c\"\n"),
        dir: Some(c_dir),
    })
    .await;
    assert_eq!(stream(&c, &t).await, 401);
    let r = renew_waiting(&a, &admin_t, &u.id, "5").await.json();
    assert_eq!(
        names(&r["propagation"]["acknowledged"]),
        ["a", "b", "c"],
        "{r}"
    );
    // Each replica shows where it is.
    let status = c.ops_get("/status").await.json();
    let log = &status["change_log"];
    assert_eq!(log["replica_id"], "c", "{status}");
    assert_eq!(log["applied"], log["head"], "{status}");
    assert_eq!(log["replicas"].as_array().unwrap().len(), 3, "{status}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_is_not_a_number_of_seconds_is_refused_and_changes_nothing() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_t = sc.token(&admin.id).await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let before = sc.state.store.user(&u.id).await.unwrap().unwrap();
    for wait in ["-1", "31", "abc", "NaN", "inf"] {
        let r = sc
            .send(
                "PUT",
                &format!("/user/tokenkey?wait={wait}"),
                &[tok(&admin_t)],
                Some(&json!({ "userId": u.id }).to_string()),
            )
            .await;
        assert_eq!(r.status, 400, "{wait}: {}", r.body);
        assert_eq!(r.reason(), "invalid_parameter", "{wait}");
    }
    let after = sc.state.store.user(&u.id).await.unwrap().unwrap();
    assert_eq!(before.token_key, after.token_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_retained_log_clears_its_cache_and_refuses() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared.db").display().to_string();
    let a = replica(&echo, &store, "a", "").await;
    // b reads the log only every 10 s, so the test can prune between its reads.
    let b = replica(
        &echo,
        &store,
        "b",
        "change_poll_ms = 10000\nmax_change_lag_secs = 60\n",
    )
    .await;
    let org = a.org("acme").await;
    let admin = a.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_t = a.token(&admin.id).await;
    let mut attempts = 0;
    let (t, renewed_at) = loop {
        attempts += 1;
        assert!(attempts <= 3, "b kept reading the log before it was pruned");
        let u = a
            .user(&org, &format!("u{attempts}@acme.test"), "nanoUser")
            .await;
        let t = a.token(&u.id).await;
        assert_eq!(stream(&b, &t).await, 200);
        let applied_before = b.state.follower.applied();
        renew_waiting(&a, &admin_t, &u.id, "0").await;
        // Retention passes: everything but a newer entry is pruned.
        let db = sqlite(&store);
        db.execute(
            "INSERT INTO change_log (change, at_ms) VALUES ('u:nobody', 0)",
            [],
        )
        .unwrap();
        db.execute(
            "DELETE FROM change_log WHERE seq < (SELECT MAX(seq) FROM change_log)",
            [],
        )
        .unwrap();
        if b.state.follower.applied() == applied_before {
            break (t, Instant::now());
        }
    };
    // b still holds the renewed user until its next read finds the gap...
    assert_eq!(stream(&b, &t).await, 200);
    until_status(&b, &t, 401, Duration::from_secs(12)).await;
    assert!(renewed_at.elapsed() < Duration::from_secs(12));
    assert_eq!(metric(&b, "rolegate_cache_resyncs_total").await, 1.0);
    // ...and then follows on from the head.
    assert_eq!(b.state.follower.applied(), b.state.follower.head());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_read_the_log_stops_answering_from_its_cache() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("shared.db").display().to_string();
    let sc = replica(
        &echo,
        &store,
        "lagging",
        "change_poll_ms = 100\nmax_change_lag_secs = 1\n",
    )
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    assert_eq!(stream(&sc, &t).await, 200);
    // The log becomes unreadable, and the user changes behind rolegate's back.
    let db = sqlite(&store);
    db.execute("ALTER TABLE change_log RENAME TO change_log_away", [])
        .unwrap();
    db.execute(
        "UPDATE users SET token_key = ?1 WHERE id = ?2",
        rusqlite::params![rolegate::store::random_key(), u.id],
    )
    .unwrap();
    let started = Instant::now();
    // Within the lag bound (plus a poll), cached answers stop being used.
    until_status(&sc, &t, 401, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(metric(&sc, "rolegate_stale_cache_clears_total").await >= 1.0);
    assert!(metric(&sc, "rolegate_change_log_lag_seconds").await > 1.0);
    // Fresh tokens still work: lookups read the store.
    let fresh = sc.token(&u.id).await;
    assert_eq!(stream(&sc, &fresh).await, 200);
    // The log is back: the lag falls to zero.
    db.execute("ALTER TABLE change_log_away RENAME TO change_log", [])
        .unwrap();
    let start = Instant::now();
    while metric(&sc, "rolegate_change_log_lag_seconds").await > 0.5 {
        assert!(start.elapsed() < Duration::from_secs(3), "still lagging");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `rolegate serve` as its own process, on loopback ports it picks itself.
struct Process {
    child: Child,
    base: String,
}

/// Start `rolegate serve` and wait for its "ready" line, which names the
/// data listener's address.
fn serve(dir: &std::path::Path, echo: &Echo) -> Process {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["serve", "--config"])
        .arg(dir.join("rolegate.toml"))
        .args(["--upstream", &echo.url()])
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .env("ROLEGATE_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let data = loop {
        let line = lines
            .next()
            .expect("rolegate exited before it was ready")
            .unwrap();
        if line.contains("rolegate ready") {
            let at = line.find("data=").expect("ready line names its address") + 5;
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Process {
        child,
        base: format!("http://{data}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_renewal_survives_sigkill() {
    let echo = Echo::start().await;
    // The users are made by an in-process sidecar on the same file, then it stops.
    let setup = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: LONG_TTL.to_owned(),
        ..Default::default()
    })
    .await;
    let org = setup.org("acme").await;
    let admin = setup.user(&org, "admin@acme.test", "nanoAdmin").await;
    let u = setup.user(&org, "u@acme.test", "nanoUser").await;
    let (admin_t, t) = (setup.token(&admin.id).await, setup.token(&u.id).await);
    let dir: Arc<tempfile::TempDir> = setup.stop().await;
    std::fs::write(dir.path().join("master.secret"), MASTER_SECRET).unwrap();

    let mut p = serve(dir.path(), &echo);
    let get = |base: String, token: String| async move {
        let r = crate::support::send(&base, "GET", "/stream", &[tok(&token)], None).await;
        assert!(r.status == 200 || r.status == 401, "{r:?}");
        r.status
    };
    assert_eq!(get(p.base.clone(), t.clone()).await, 200);
    let r = crate::support::send(
        &p.base,
        "PUT",
        "/user/tokenkey",
        &[tok(&admin_t)],
        Some(&json!({ "userId": u.id }).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Killed the instant after the acknowledgement: no shutdown, no flush.
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let mut p = serve(dir.path(), &echo);
    assert_eq!(get(p.base.clone(), t.clone()).await, 401);
    assert_eq!(get(p.base.clone(), admin_t.clone()).await, 200);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
