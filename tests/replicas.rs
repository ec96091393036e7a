//! Several replicas on one PostgreSQL: a change made through one replica bites
//! on the other (the change log, with NOTIFY as its doorbell; not the TTL:
//! these replicas cache for five minutes unless a test says otherwise), a
//! missed doorbell costs at most one poll interval, SQL that bypasses the log
//! is bounded by the TTL, a dead store fails closed and recovers by itself,
//! and racing role changes end consistent.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::pg::{self, PgCluster};
use crate::support::{metric, tok, Echo, Options, Reply, Sidecar, MASTER_SECRET};

/// Long enough that only a notification can explain a refusal within a test.
const LONG_TTL: &str = "cache_ttl_secs = 300\n";
/// How long a notification may take to bite in these tests (the target is
/// tens of milliseconds; `bench/revocation` measures it).
const NOTIFY_BOUND: Duration = Duration::from_secs(2);

struct Pair {
    echo: Echo,
    a: Sidecar,
    b: Sidecar,
    url: String,
    org: rolegate::store::CreatedOrg,
    admin_token: String,
}

async fn replica(echo: &Echo, url: &str, config: &str) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(echo.url()),
        store: Some(url.to_owned()),
        config: config.to_owned(),
        ..Default::default()
    })
    .await
}

async fn pair(config: &str) -> Pair {
    let url = pg::shared().database().await;
    let echo = Echo::start().await;
    let a = replica(&echo, &url, config).await;
    let b = replica(&echo, &url, config).await;
    let org = a.org("acme").await;
    let admin = a.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = a.token(&admin.id).await;
    Pair {
        echo,
        a,
        b,
        url,
        org,
        admin_token,
    }
}

async fn get_stream(sc: &Sidecar, header: (&str, &str)) -> Reply {
    sc.send("GET", "/stream", &[header], None).await
}

/// Poll until `header` gets `status` from `sc`; how long that took.
async fn until_status(
    sc: &Sidecar,
    header: (&str, &str),
    status: u16,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let r = get_stream(sc, header).await;
        if r.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "still {} (not {status}) after {bound:?}: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until B has applied every notification sent so far: notifications
/// arrive in commit order, so once B acts on a fresh renewal made through A,
/// it has acted on everything before it (a user's creation, say, which drops
/// B's entry for that user).
async fn settle(p: &Pair) {
    let email = format!("barrier-{}@acme.test", uuid::Uuid::new_v4().simple());
    let barrier = p.a.user(&p.org, &email, "nanoUser").await;
    let t = p.a.token(&barrier.id).await;
    until_status(&p.b, tok(&t), 200, NOTIFY_BOUND).await;
    renew(&p.a, tok(&p.admin_token), &barrier.id).await;
    until_status(&p.b, tok(&t), 401, NOTIFY_BOUND).await;
}

/// Wait until `sc` has applied at least `n` change notifications.
async fn heard_at_least(sc: &Sidecar, n: u64) {
    let start = Instant::now();
    loop {
        let metrics = sc.ops_get("/metrics").await.body;
        let heard = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rolegate_store_notifications_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if heard >= n {
            return;
        }
        assert!(start.elapsed() < NOTIFY_BOUND, "heard {heard} of {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Renew a user's tokenKey through `sc`'s API, as an admin would.
async fn renew(sc: &Sidecar, admin: (&str, &str), user_id: &str) {
    let body = json!({ "userId": user_id }).to_string();
    let r = sc
        .send("PUT", "/user/tokenkey", &[admin], Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Change a user's tokenKey behind rolegate's back: no notification is sent.
async fn silent_renewal(url: &str, user_id: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let n = client
        .execute(
            "UPDATE users SET token_key = $1 WHERE id = $2",
            &[&rolegate::store::random_key(), &user_id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(client);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_role_change_or_deletion_through_one_replica_bites_on_the_other() {
    let p = pair(LONG_TTL).await;
    let victims = [
        p.a.user(&p.org, "renew@acme.test", "nanoUser").await,
        p.a.user(&p.org, "demote@acme.test", "nanoUser").await,
        p.a.user(&p.org, "delete@acme.test", "nanoUser").await,
    ];
    let mut tokens = Vec::new();
    for v in &victims {
        let t = p.a.token(&v.id).await;
        // B has the user cached: only a notification can make it refuse now.
        assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
        tokens.push(t);
    }
    let admin = tok(&p.admin_token);
    renew(&p.a, admin, &victims[0].id).await;
    let r =
        p.a.send(
            "PUT",
            "/user/permission",
            &[admin],
            Some(&json!({"userId": victims[1].id, "permission": "nanoReadOnly"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        p.a.send(
            "DELETE",
            &format!("/user/{}", victims[2].id),
            &[admin],
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    for t in &tokens {
        until_status(&p.b, tok(t), 401, NOTIFY_BOUND).await;
    }
    // B heard the three changes (and counts them for /metrics).
    heard_at_least(&p.b, 3).await;
    // The demoted user's new token carries the new role on B.
    let fresh = p.a.token(&victims[1].id).await;
    assert_eq!(get_stream(&p.b, tok(&fresh)).await.status, 200);
    assert_eq!(
        p.echo.last().unwrap().headers["x-rolegate-role"],
        "nanoReadOnly"
    );
    assert_eq!(
        p.b.send("DELETE", "/stream/s1", &[tok(&fresh)], None)
            .await
            .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_rotation_through_one_replica_bites_on_the_other() {
    let p = pair(LONG_TTL).await;
    let old = ("x-bintu-apikey", p.org.api_key.as_str());
    assert_eq!(get_stream(&p.b, old).await.status, 200);
    let r =
        p.a.send("PUT", "/organisation/apikey", &[tok(&p.admin_token)], None)
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["data"]["apiKey"].as_str().unwrap().to_owned();
    until_status(&p.b, old, 401, NOTIFY_BOUND).await;
    assert_eq!(get_stream(&p.b, ("x-bintu-apikey", &new)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playback_revocation_through_one_replica_bites_on_the_other() {
    let p = pair(&format!("{LONG_TTL}playback_prefix = \"/playback\"\n")).await;
    let u = p.a.user(&p.org, "u@acme.test", "nanoUser").await;
    let api = p.a.token(&u.id).await;
    let r =
        p.a.send(
            "POST",
            "/playback/token",
            &[tok(&api)],
            Some(&json!({"orgawide": true, "revocable": true}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let play = |sc: &Sidecar| {
        let path = format!("/playback/any/x?token={t}");
        let base = sc.base.clone();
        async move {
            crate::support::send(&base, "GET", &path, &[], None)
                .await
                .status
        }
    };
    assert_eq!(play(&p.b).await, 200);
    let r =
        p.a.send(
            "POST",
            "/playback/token/revoke",
            &[tok(&api)],
            Some(&json!({ "token": t }).to_string()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(play(&p.b).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_between_revocation_and_replay_still_refuses() {
    let p = pair(LONG_TTL).await;
    let u = p.a.user(&p.org, "u@acme.test", "nanoUser").await;
    let t = p.a.token(&u.id).await;
    assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
    let b_config = p.b.settings.clone();
    p.b.stop().await;
    renew(&p.a, tok(&p.admin_token), &u.id).await;
    let b = replica(&p.echo, &p.url, LONG_TTL).await;
    assert_eq!(b.settings.store, b_config.store);
    assert_eq!(get_stream(&b, tok(&t)).await.status, 401);
    let fresh = b.token(&u.id).await;
    assert_eq!(get_stream(&b, tok(&fresh)).await.status, 200);
}

/// How long a logged change may go unseen without its doorbell: one poll
/// interval (250 ms by default) plus a request; the target is 1 s.
const POLL_BOUND: Duration = Duration::from_secs(1);

/// Renew a user's tokenKey and log it as rolegate does, but without the
/// doorbell (as if the NOTIFY were lost).
async fn logged_renewal_without_doorbell(url: &str, user_id: &str) {
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    let n = tx
        .execute(
            "UPDATE users SET token_key = $1 WHERE id = $2",
            &[&rolegate::store::random_key(), &user_id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.execute(
        "INSERT INTO change_log (change, at_ms) VALUES ($1, $2)",
        &[&format!("u:{user_id}"), &rolegate::clock::unix_now_ms()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    drop(client);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_doorbell_is_lost_bites_within_one_poll_interval() {
    let p = pair(LONG_TTL).await;
    let u = p.a.user(&p.org, "u@acme.test", "nanoUser").await;
    let t = p.a.token(&u.id).await;
    settle(&p).await;
    assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
    let heard = metric(&p.b, "rolegate_store_notifications_total").await;
    logged_renewal_without_doorbell(&p.url, &u.id).await;
    let took = until_status(&p.b, tok(&t), 401, POLL_BOUND).await;
    assert!(took < POLL_BOUND, "{took:?}");
    // It was the poll, not a doorbell, that found it.
    assert_eq!(
        metric(&p.b, "rolegate_store_notifications_total").await,
        heard
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_bypasses_the_change_log_is_bounded_by_the_cache_ttl() {
    let ttl = Duration::from_secs(2);
    let p = pair(&format!("cache_ttl_secs = {}\n", ttl.as_secs())).await;
    let u = p.a.user(&p.org, "u@acme.test", "nanoUser").await;
    let t = p.a.token(&u.id).await;
    settle(&p).await;
    assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
    let cached_at = Instant::now();
    silent_renewal(&p.url, &u.id).await;
    // No log entry: B keeps the entry it has...
    assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
    // ...until the TTL ends it, and not later.
    until_status(&p.b, tok(&t), 401, ttl + Duration::from_secs(2)).await;
    let stale_for = cached_at.elapsed();
    assert!(
        stale_for <= ttl + Duration::from_millis(500),
        "stale for {stale_for:?} with a TTL of {ttl:?}"
    );
    assert!(
        stale_for >= ttl - Duration::from_millis(100),
        "{stale_for:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_doorbell_connection_is_down_still_bite() {
    let p = pair(LONG_TTL).await;
    let u = p.a.user(&p.org, "u@acme.test", "nanoUser").await;
    let t = p.a.token(&u.id).await;
    settle(&p).await;
    assert_eq!(get_stream(&p.b, tok(&t)).await.status, 200);
    // Cut both replicas' doorbell connections, as a network blip would, and
    // renew while they are down: the log carries the change.
    let (client, conn) = tokio_postgres::connect(&p.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let killed: i64 = client
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'rolegate-listener' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2);
    drop(client);
    let _ = task.await;
    renew(&p.a, tok(&p.admin_token), &u.id).await;
    until_status(&p.b, tok(&t), 401, POLL_BOUND).await;
    // Nothing had to be cleared wholesale: the log had every entry.
    assert_eq!(metric(&p.b, "rolegate_cache_resyncs_total").await, 0.0);
    // And doorbells ring again on the new connection.
    let fresh = p.a.token(&u.id).await;
    assert_eq!(get_stream(&p.b, tok(&fresh)).await.status, 200);
    renew(&p.a, tok(&p.admin_token), &u.id).await;
    until_status(&p.b, tok(&fresh), 401, NOTIFY_BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_fails_closed_and_service_resumes_when_it_is_back() {
    // A cluster of its own: this test stops its server.
    let cluster = PgCluster::start();
    let url = cluster.database().await;
    let echo = Echo::start().await;
    let sc = replica(&echo, &url, LONG_TTL).await;
    let org = sc.org("acme").await;
    let cached = sc.user(&org, "cached@acme.test", "nanoUser").await;
    let cold = sc.user(&org, "cold@acme.test", "nanoUser").await;
    let (tc, tn) = (sc.token(&cached.id).await, sc.token(&cold.id).await);
    assert_eq!(get_stream(&sc, tok(&tc)).await.status, 200);
    assert_eq!(sc.ops_get("/ready").await.status, 200);
    let upstream_before = echo.count();

    cluster.stop_server();
    // A miss cannot be decided: 503, never an allow, never a 401 blaming the token.
    let r = get_stream(&sc, tok(&tn)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.reason(), "store_unavailable");
    assert_eq!(echo.count(), upstream_before);
    let ready = sc.ops_get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], "store_unavailable");
    // What is cached still decides (bounded by the TTL), as documented.
    assert_eq!(get_stream(&sc, tok(&tc)).await.status, 200);

    cluster.start_server();
    until_status(&sc, tok(&tn), 200, Duration::from_secs(15)).await;
    assert_eq!(sc.ops_get("/ready").await.status, 200);
    // The listener is back too: a renewal through the API still bites.
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let at = sc.token(&admin.id).await;
    renew(&sc, tok(&at), &cold.id).await;
    assert_eq!(get_stream(&sc, tok(&tn)).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_role_changes_through_two_replicas_end_consistent() {
    let p = pair(LONG_TTL).await;
    let u = p.a.user(&p.org, "target@acme.test", "nanoUser").await;
    let roles = ["nanoAdmin", "nanoUser", "nanoReadOnly"];
    let mut tasks = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 {
            p.a.base.clone()
        } else {
            p.b.base.clone()
        };
        let admin = p.admin_token.clone();
        let id = u.id.clone();
        let role = roles[i % roles.len()];
        tasks.push(tokio::spawn(async move {
            let body = json!({"userId": id, "permission": role}).to_string();
            let r = crate::support::send(
                &base,
                "PUT",
                "/user/permission",
                &[tok(&admin)],
                Some(&body),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            // Mint a token under whatever key this replica sees right now.
            let body = json!({"userId": id}).to_string();
            let r =
                crate::support::send(&base, "POST", "/bintu/token", &[tok(&admin)], Some(&body))
                    .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["data"]["token"].as_str().unwrap().to_owned()
        }));
    }
    let mut minted = Vec::new();
    for t in tasks {
        minted.push(t.await.unwrap());
    }
    let last = p.a.state.store.user(&u.id).await.unwrap().unwrap();
    assert!(roles.contains(&last.role.as_str()));
    let final_secret =
        rolegate::authn::token::derive_secret(MASTER_SECRET.as_bytes(), &u.id, &last.token_key);
    let final_token = p.a.token(&u.id).await;
    for sc in [&p.a, &p.b] {
        // Both replicas settle on the store's final state...
        until_status(sc, tok(&final_token), 200, NOTIFY_BOUND).await;
        assert_eq!(
            p.echo.last().unwrap().headers["x-rolegate-role"],
            last.role.as_str()
        );
        // ...and no token minted under an intermediate key works anywhere.
        for t in &minted {
            let under_final = signed_with(t, &final_secret);
            let expect = if under_final { 200 } else { 401 };
            until_status(sc, tok(t), expect, NOTIFY_BOUND).await;
        }
    }
    // Every change is in the audit log, from both replicas.
    let audit =
        p.a.state
            .store
            .list_audit(
                &p.org.org.id,
                &rolegate::store::AuditFilter {
                    target: Some(u.id.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.action == "editUserRole" && r.outcome == "ok")
            .count(),
        12,
        "{audit:?}"
    );
}

/// Whether a token's HS256 signature was made with `secret`.
fn signed_with(token: &str, secret: &[u8]) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_the_schema_exactly_once() {
    let url = pg::shared().database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { rolegate::store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM rolegate_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    drop(client);
    let _ = task.await;
}

#[tokio::test]
async fn a_bad_postgres_url_stops_start_up_without_echoing_the_password() {
    let Err(e) = rolegate::store::open("postgres://u:s3cret@127.0.0.1:notaport/db").await else {
        panic!("opened");
    };
    let msg = e.to_string();
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(msg.contains("PostgreSQL URL"), "{msg}");
    // A server that is not there: a clear error, in bounded time.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let Err(e) = rolegate::store::open(&format!("postgres://u:s3cret@127.0.0.1:{port}/db")).await
    else {
        panic!("opened");
    };
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_tls_is_verified_and_used() {
    let cluster = PgCluster::start_with_tls();
    let url = format!("{}?sslmode=require", cluster.database().await);
    // Nobody vouches for the test CA: refused, saying why.
    std::env::remove_var("SSL_CERT_FILE");
    let Err(e) = rolegate::store::open(&url).await else {
        panic!("an unverifiable server certificate was accepted");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    // With the CA trusted the way operators do it (SSL_CERT_FILE): TLS for
    // the pool and the listener alike.
    std::env::set_var("SSL_CERT_FILE", cluster.ca_file());
    let store = rolegate::store::open(&url).await;
    std::env::remove_var("SSL_CERT_FILE");
    let store = store.unwrap();
    store.ping().await.unwrap();
    let (client, conn) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let start = Instant::now();
    loop {
        let rows = client
            .query(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'rolegate%'",
                &[],
            )
            .await
            .unwrap();
        let names: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if names.iter().any(|(n, _)| n == "rolegate-listener") {
            assert!(names.iter().all(|(_, ssl)| *ssl), "{names:?}");
            assert!(names.iter().any(|(n, _)| n == "rolegate"), "{names:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    let _ = task.await;
}
