//! HTTP/2 from clients (h2c prior knowledge on plain TCP, ALPN `h2` over
//! TLS) and to the upstream (`upstream_http2`): every stream is decided on
//! its own exactly as an HTTP/1.1 request is, and the head rules that differ
//! in HTTP/2 (pseudo-headers, connection-specific fields, `:authority`
//! against `host`) fail closed.

use std::collections::HashMap;
use std::sync::Arc;

use rolegate::authz::routes::{ResourceId, RouteTable};

use crate::support::tls::{echo_over, raw_h2, Ca, Client, EchoOver, H2Outcome, Proto};
use crate::support::{tok, Echo, Options, Sidecar};

/// A sidecar with an organisation and one user per role; TLS on the data
/// listener when `ca` is given.
struct World {
    echo: Echo,
    sc: Sidecar,
    callers: Vec<(&'static str, (&'static str, String))>,
    users: HashMap<&'static str, rolegate::store::User>,
    _certs: Option<tempfile::TempDir>,
}

async fn world(ca: Option<&Ca>) -> World {
    let echo = Echo::start().await;
    let (config, certs) = match ca {
        Some(ca) => {
            let dir = tempfile::tempdir().unwrap();
            let (c, k) = ca.server("rolegate").write(dir.path());
            (
                format!(
                    "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                    c.display(),
                    k.display()
                ),
                Some(dir),
            )
        }
        None => (String::new(), None),
    };
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config,
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let mut users = HashMap::new();
    let mut callers = Vec::new();
    for (role, email) in [
        ("nanoAdmin", "admin@acme.test"),
        ("nanoUser", "user@acme.test"),
        ("nanoReadOnly", "ro@acme.test"),
    ] {
        let u = sc.user(&org, email, role).await;
        callers.push((role, ("x-bintu-token", sc.token(&u.id).await)));
        users.insert(role, u);
    }
    callers.push(("apikey", ("x-bintu-apikey", org.api_key.clone())));
    callers.push(("playerkey", ("x-bintu-playerkey", org.player_key.clone())));
    callers.push(("anonymous", ("x-none", String::new())));
    World {
        echo,
        sc,
        callers,
        users,
        _certs: certs,
    }
}

fn addr(sc: &Sidecar) -> std::net::SocketAddr {
    sc.base.trim_start_matches("http://").parse().unwrap()
}

/// Routes whose allowed call changes later cells' credentials.
const DESTRUCTIVE: &[&str] = &[
    "organisation.apikey.rotate",
    "organisation.playerkey.rotate",
    "users.delete",
    "playback.key.rotate",
];

/// Every route of the table × every caller, sent once with `baseline` and
/// once with `other`: the status, the reason and whether the upstream was
/// reached must be the same. Returns the differences and the baseline's
/// (allowed, denied) counts.
async fn compare_matrix(
    w: &World,
    baseline: &mut Client,
    other: &mut Client,
) -> (Vec<String>, usize, usize) {
    let src = std::fs::read_to_string(crate::support::repo().join("policies/routes.toml")).unwrap();
    let table = RouteTable::parse("routes.toml", &src).unwrap();
    let victim = &w.users["nanoReadOnly"].id;
    let (mut failures, mut allowed, mut denied) = (Vec::new(), 0, 0);
    for route in table.routes() {
        if route.resource_id == ResourceId::Target || DESTRUCTIVE.contains(&route.handler.name()) {
            continue;
        }
        let path = route.template.replace(
            "{id}",
            if route.resource_type == "User" {
                victim
            } else {
                "s1"
            },
        );
        for (who, cred) in &w.callers {
            let headers: Vec<(&str, &str)> = if *who == "anonymous" {
                vec![]
            } else {
                vec![(cred.0, cred.1.as_str())]
            };
            let mut outcome = Vec::new();
            for client in [&mut *baseline, &mut *other] {
                let before = w.echo.count();
                let r = client
                    .send(&route.method, &path, &headers, Some("{}"))
                    .await;
                outcome.push((r.status, r.reason(), w.echo.count() > before));
            }
            match outcome[0].0.as_u16() {
                200 if outcome[0].2 => allowed += 1,
                403 => denied += 1,
                _ => {}
            }
            if outcome[0] != outcome[1] {
                failures.push(format!(
                    "{who} {} {path}: {:?} over {:?} but {:?} over {:?}",
                    route.method, outcome[0], baseline.proto, outcome[1], other.proto
                ));
            }
        }
    }
    (failures, allowed, denied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_get_the_same_decisions_as_http1_over_the_permission_matrix() {
    let w = world(None).await;
    let mut h1 = Client::new(addr(&w.sc), None, Proto::H1);
    let mut h2 = Client::new(addr(&w.sc), None, Proto::H2);
    let (failures, allowed, denied) = compare_matrix(&w, &mut h1, &mut h2).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        allowed > 40 && denied > 40,
        "allowed {allowed}, denied {denied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_h2_clients_get_the_same_decisions_as_http1_over_the_permission_matrix() {
    let ca = Ca::new("test CA");
    let w = world(Some(&ca)).await;
    let mut h1 = Client::new(
        addr(&w.sc),
        Some(ca.client_config(&["http/1.1"], None)),
        Proto::H1,
    );
    let mut h2 = Client::new(
        addr(&w.sc),
        Some(ca.client_config(&["h2"], None)),
        Proto::H2,
    );
    let (failures, allowed, denied) = compare_matrix(&w, &mut h1, &mut h2).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        allowed > 40 && denied > 40,
        "allowed {allowed}, denied {denied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_one_connection_are_decided_one_by_one() {
    let w = world(None).await;
    let admin = w.callers[0].1 .1.clone();
    let ro = w.callers[2].1 .1.clone();
    let mut h2 = Client::new(addr(&w.sc), None, Proto::H2);
    // The same connection, three callers in turn: no decision sticks to it.
    assert_eq!(
        h2.send("POST", "/stream", &[tok(&admin)], Some("{}"))
            .await
            .status,
        200
    );
    let r = h2.send("POST", "/stream", &[tok(&ro)], Some("{}")).await;
    assert_eq!(
        (r.status.as_u16(), r.reason().as_str()),
        (403, "policy_deny")
    );
    let r = h2.send("GET", "/stream", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        h2.send("GET", "/stream", &[tok(&ro)], None).await.status,
        200
    );
    assert_eq!(
        w.echo.count(),
        2,
        "only the two allowed streams were forwarded"
    );
    let seen = w.echo.last().unwrap();
    assert_eq!(
        seen.headers
            .get("x-rolegate-user-id")
            .map(|v| v.to_str().unwrap()),
        Some(w.users["nanoReadOnly"].id.as_str()),
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_agree_with_the_authority() {
    let w = world(None).await;
    let admin = w.callers[0].1 .1.clone();
    let a = addr(&w.sc);
    let mut h2 = Client::new(a, None, Proto::H2);
    // `:authority` is 127.0.0.1:port; a `host` naming another host is refused.
    let r = h2
        .send(
            "GET",
            "/stream",
            &[tok(&admin), ("host", "admin.internal")],
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.reason().as_str()),
        (400, "host_authority_mismatch")
    );
    // The same host (any case) is fine.
    let same = format!("127.0.0.1:{}", a.port());
    let r = h2
        .send("GET", "/stream", &[tok(&admin), ("host", &same)], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.echo.count(), 1);
    // (HTTP/1.1's absolute form is different: its authority wins and `Host`
    // is ignored, RFC 9112 3.2.2; tests/hostile.rs.)
    // An authority with userinfo is not a host.
    let r = raw_h2(
        a,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", &format!("user@{same}")),
            (":path", "/stream"),
            ("x-bintu-token", &admin),
        ],
    )
    .await;
    assert!(!matches!(r, H2Outcome::Response(Some(200))), "{r:?}");
    assert_eq!(w.echo.count(), 1, "nothing more reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_heads_are_refused_and_never_forwarded() {
    let w = world(None).await;
    let admin = w.callers[0].1 .1.clone();
    let a = addr(&w.sc);
    let authority = format!("127.0.0.1:{}", a.port());
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(String, String)> = vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "http".into()),
            (":authority".into(), authority.clone()),
            (":path".into(), "/stream".into()),
            ("x-bintu-token".into(), admin.clone()),
        ];
        f.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        f
    };
    let send = |fields: Vec<(String, String)>| async move {
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        raw_h2(a, &f).await
    };
    // The control: a well-formed request on the same raw writer is answered and forwarded.
    assert_eq!(send(base(&[])).await, H2Outcome::Response(Some(200)));
    assert_eq!(w.echo.count(), 1);

    let mut cases: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "duplicate :authority",
            base(&[(":authority", "admin.internal")]),
        ),
        ("connection", base(&[("connection", "keep-alive")])),
        (
            "transfer-encoding",
            base(&[("transfer-encoding", "chunked")]),
        ),
        ("te: gzip", base(&[("te", "gzip")])),
        ("upgrade", base(&[("upgrade", "websocket")])),
        ("keep-alive", base(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            base(&[("proxy-connection", "keep-alive")]),
        ),
        ("unknown pseudo-header", base(&[(":tenant", "other")])),
        ("upper-case field name", base(&[("X-Bintu-Apikey", "x")])),
        ("duplicate :path", base(&[(":path", "/user")])),
    ];
    // A pseudo-header after a regular field.
    let mut late = base(&[]);
    let path = late.remove(3);
    late.push(path);
    cases.push(("pseudo-header after a field", late));
    // No :path.
    let mut no_path = base(&[]);
    no_path.remove(3);
    cases.push(("no :path", no_path));
    for (what, fields) in cases {
        let r = send(fields).await;
        assert!(
            matches!(
                r,
                H2Outcome::Reset(_) | H2Outcome::GoAway(_) | H2Outcome::Response(Some(400))
            ),
            "{what}: {r:?}"
        );
    }
    assert_eq!(
        w.echo.count(),
        1,
        "no malformed request reached the upstream"
    );
    // `te: trailers` is the one `te` HTTP/2 allows; it is hop-by-hop and stops here.
    assert_eq!(
        send(base(&[("te", "trailers")])).await,
        H2Outcome::Response(Some(200))
    );
    assert_eq!(w.echo.count(), 2);
    assert!(w.echo.last().unwrap().headers.get("te").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_credentials_over_http2_are_judged_as_over_http1() {
    let w = world(None).await;
    let admin = w.callers[0].1 .1.clone();
    let ro = w.callers[2].1 .1.clone();
    let a = addr(&w.sc);
    let mut h1 = Client::new(a, None, Proto::H1);
    let mut h2 = Client::new(a, None, Proto::H2);
    let paths = [
        "/stream/./s1",
        "/stream//s1",
        "/stream/x/../s1",
        "/stream/%2e%2e/user",
        "/stream/%2E%2E/user",
        "/stream%2fs1",
        "/stream%5cs1",
        "/stream/s1%00",
        "/stream/%C0%AF",
        "/stream/%252e",
        "/STREAM",
        "/stream/s1;x=1",
        "/stream?_method=DELETE",
        "/user/../stream",
    ];
    for path in paths {
        let mut seen = Vec::new();
        for c in [&mut h1, &mut h2] {
            let before = w.echo.count();
            let r = c.send("GET", path, &[tok(&ro)], None).await;
            let target = (w.echo.count() > before).then(|| w.echo.last().unwrap().target);
            seen.push((r.status, r.reason(), target));
        }
        assert_eq!(seen[0], seen[1], "{path}");
    }
    let creds: [&[(&str, &str)]; 4] = [
        &[tok(&admin), tok(&ro)],
        &[tok(&admin), tok(&admin)],
        &[tok(&admin), ("x-bintu-apikey", "k")],
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ];
    let before = w.echo.count();
    for headers in creds {
        let r1 = h1.send("GET", "/stream", headers, None).await;
        let r2 = h2.send("GET", "/stream", headers, None).await;
        assert_eq!(
            (r1.status, r1.reason()),
            (r2.status, r2.reason()),
            "{headers:?}"
        );
        assert!(
            r2.status == 400 || r2.status == 401,
            "{headers:?}: {}",
            r2.status
        );
    }
    assert_eq!(
        w.echo.count(),
        before,
        "no request with two credentials was forwarded"
    );
}

async fn upstream_h2(echo: Echo, config: String) {
    let sc = Sidecar::with(Options {
        upstream: Some(match config.contains("upstream_ca_file") {
            true => format!("https://127.0.0.1:{}", echo.addr.port()),
            false => echo.url(),
        }),
        config: format!("upstream_http2 = true\n{config}"),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    // Concurrent requests share the one HTTP/2 connection.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (base, t) = (sc.base.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            crate::support::send(&base, "GET", &format!("/stream/s{i}?x=1"), &[tok(&t)], None).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["x-echo-version"], "HTTP/2.0");
    }
    let seen = echo.all();
    assert_eq!(seen.len(), 8);
    for s in &seen {
        assert!(
            s.target.starts_with("/stream/s") && s.target.ends_with("?x=1"),
            "{}",
            s.target
        );
        assert_eq!(s.headers["x-rolegate-user-id"], u.id.as_str());
    }
    // A denied request still reaches nothing.
    let r = sc.send("DELETE", "/stream/s1", &[tok(&t)], None).await;
    assert_eq!(r.status, 403);
    assert_eq!(echo.count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_an_h2c_upstream() {
    upstream_h2(echo_over(EchoOver::H2c).await, String::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_a_tls_upstream_by_alpn() {
    let ca = Arc::new(Ca::new("upstream CA"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(&dir.path().join("ca.pem"));
    let echo = echo_over(EchoOver::Tls(ca.server("upstream"), ca.clone())).await;
    upstream_h2(
        echo,
        format!("upstream_ca_file = \"{}\"\n", ca_file.display()),
    )
    .await;
}
