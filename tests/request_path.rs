//! The request path end to end: real sockets, a real SQLite file, a real echo
//! upstream, real signed tokens.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rolegate::authz::routes::{ResourceId, RouteTable};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{tok, Echo, Options, Sidecar, MASTER_SECRET};

fn now() -> u64 {
    rolegate::clock::unix_now()
}

/// Build a JWT by hand: header and payload JSON as given, signed HS256 with `secret`.
fn forge(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let h = B64.encode(header.to_string());
    let p = B64.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// The signing secret rolegate derives for a user (the documented derivation).
fn secret_of(user_id: &str, token_key: &[u8]) -> [u8; 32] {
    rolegate::authn::token::derive_secret(MASTER_SECRET.as_bytes(), user_id, token_key)
}

fn claims(sub: &str) -> Value {
    let n = now();
    json!({"iss": "rolegate", "aud": "bintu", "sub": sub, "exp": n + 600, "nbf": n - 5, "iat": n, "jti": "j1"})
}

fn header(kid: &str) -> Value {
    json!({"alg": "HS256", "typ": "bintu-api+jwt", "kid": kid})
}

struct World {
    echo: Echo,
    sc: Sidecar,
    org: rolegate::store::CreatedOrg,
    users: HashMap<&'static str, rolegate::store::User>,
}

async fn world() -> World {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let mut users = HashMap::new();
    for (role, email) in [
        ("nanoAdmin", "admin@acme.test"),
        ("nanoUser", "user@acme.test"),
        ("nanoReadOnly", "ro@acme.test"),
    ] {
        users.insert(role, sc.user(&org, email, role).await);
    }
    World {
        echo,
        sc,
        org,
        users,
    }
}

#[tokio::test]
async fn allowed_request_reaches_upstream_with_identity_headers_only_from_rolegate() {
    let w = world().await;
    let u = &w.users["nanoReadOnly"];
    let t = w.sc.token(&u.id).await;
    let r =
        w.sc.send(
            "GET",
            "/stream?quantity=5",
            &[
                tok(&t),
                ("x-rolegate-role", "nanoAdmin"),
                ("x-rolegate-org-id", "other"),
                ("x-forwarded-user", "admin"),
                ("x_rolegate_role", "nanoAdmin"),
                ("x-request-id", "spoofed"),
                ("connection", "x-custom-hop"),
                ("x-custom-hop", "1"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = w.echo.last().unwrap();
    assert_eq!(seen.target, "/stream?quantity=5");
    assert_eq!(
        seen.headers
            .get_all("x-rolegate-role")
            .iter()
            .collect::<Vec<_>>(),
        ["nanoReadOnly"]
    );
    assert_eq!(seen.headers["x-rolegate-user-id"], u.id.as_str());
    assert_eq!(seen.headers["x-rolegate-org-id"], w.org.org.id.as_str());
    assert_ne!(seen.headers["x-request-id"], "spoofed");
    assert_eq!(r.headers["x-request-id"], seen.headers["x-request-id"]);
    for gone in [
        "x-bintu-token",
        "x-forwarded-user",
        "x_rolegate_role",
        "x-custom-hop",
    ] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the upstream"
        );
    }
}

/// Expected access per action, from the platform's permission overview (bintu-api.md §4).
fn expected(action: &str, role: &str) -> bool {
    let read = [
        "listStreams",
        "getStream",
        "validateStream",
        "getMetrics",
        "listTags",
        "getPlayerKey",
        "getOrganisation",
        "getBintuToken",
    ];
    let operate = [
        "createStream",
        "setStreamTags",
        "setStreamPushUrl",
        "setStreamProcessing",
        "setStreamGroup",
        "getStreamOptions",
        "setStreamOptions",
        "deleteStreamOptions",
        "createTag",
        "editTag",
        "listUsers",
        "getUser",
        "listPermissions",
        "createPlaybackToken",
        "revokePlaybackToken",
    ];
    let public = [
        "login",
        "resetPassword",
        "acceptInvite",
        "verifyPlaybackToken",
        "getJwks",
    ];
    if public.contains(&action) {
        return true;
    }
    match role {
        "nanoAdmin" | "apikey" => true,
        "nanoUser" => read.contains(&action) || operate.contains(&action),
        "nanoReadOnly" => read.contains(&action),
        "playerkey" => action == "getStream",
        _ => false,
    }
}

/// Routes whose allowed call changes the credentials of later cells (key
/// rotations, deleting the victim): each of their cells gets a fresh world.
const DESTRUCTIVE: &[&str] = &[
    "organisation.apikey.rotate",
    "organisation.playerkey.rotate",
    "users.delete",
];

async fn callers(w: &World) -> Vec<(&'static str, (&'static str, String))> {
    let mut callers = Vec::new();
    for role in ["nanoAdmin", "nanoUser", "nanoReadOnly"] {
        callers.push((role, ("x-bintu-token", w.sc.token(&w.users[role].id).await)));
    }
    callers.push(("apikey", ("x-bintu-apikey", w.org.api_key.clone())));
    callers.push(("playerkey", ("x-bintu-playerkey", w.org.player_key.clone())));
    callers
}

/// What each of rolegate's own endpoints answers an allowed caller whose body
/// is `{}` and who passes no parameters: the reads succeed, the writes that
/// need fields refuse the empty body with 400 (after the decision allowed it).
fn local_status(endpoint: &str) -> u16 {
    match endpoint {
        "audit.list"
        | "organisation.apikey.get"
        | "organisation.apikey.rotate"
        | "organisation.get"
        | "organisation.playerkey.get"
        | "organisation.playerkey.rotate"
        | "permissions.list"
        | "playback.jwks"
        | "playback.key.rotate"
        | "users.delete"
        | "users.get"
        | "users.list" => 200,
        "organisation.webhook"
        | "permissions.get"
        | "playback.issue"
        | "playback.revoke"
        | "playback.verify"
        | "users.invite"
        | "users.invite.accept"
        | "users.login"
        | "users.password"
        | "policy.explain" => 400,
        other => panic!("no expected status for endpoint `{other}`: add it"),
    }
}

/// One cell of the matrix: `None` when it matches §4, else a description.
async fn cell(
    w: &World,
    route: &rolegate::authz::routes::Route,
    who: &str,
    cred: &(&str, String),
) -> Option<String> {
    let victim = &w.users["nanoReadOnly"].id;
    let path = route.template.replace(
        "{id}",
        if route.resource_type == "User" {
            victim
        } else {
            "s1"
        },
    );
    let before = w.echo.count();
    let r =
        w.sc.send(
            &route.method,
            &path,
            &[(cred.0, cred.1.as_str())],
            Some("{}"),
        )
        .await;
    let allowed = expected(&route.action, who);
    let reached = w.echo.count() > before;
    let ok = if allowed && route.is_upstream() {
        reached && r.status == 200
    } else if allowed {
        // rolegate's own endpoint answered, with exactly what it answers an
        // allowed caller who sends `{}` and no parameters.
        !reached && r.status == local_status(route.handler.name())
    } else {
        r.status == 403 && !reached
    };
    (!ok).then(|| {
        format!(
            "{who} {} {path}: {} (expected {})",
            route.method,
            r.status,
            if allowed { "allow" } else { "deny" }
        )
    })
}

crate::on_both_stores! {
async fn permission_matrix_golden_table() {
    let w = world().await;
    let src = std::fs::read_to_string(crate::support::repo().join("policies/routes.toml")).unwrap();
    let table = RouteTable::parse("routes.toml", &src).unwrap();
    let shared = callers(&w).await;
    let mut checked = 0;
    let mut failures = Vec::new();
    // The second pass asks the same questions again, now answered from the
    // snapshot's decision cache: the answers must not change.
    for pass in 0..2 {
        for route in table.routes() {
            // Routes whose target is in the body are decided by their handler (tests/users.rs).
            if route.resource_id == ResourceId::Target {
                continue;
            }
            let destructive = DESTRUCTIVE.contains(&route.handler.name());
            if pass == 1 && destructive {
                continue;
            }
            for (i, (who, cred)) in shared.iter().enumerate() {
                let failure = if destructive {
                    let fresh = world().await;
                    let c = callers(&fresh).await;
                    cell(&fresh, route, who, &c[i].1).await
                } else {
                    cell(&w, route, who, cred).await
                };
                failures.extend(failure.map(|f| format!("pass {pass}: {f}")));
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 150);
}
}

#[tokio::test]
async fn player_key_lists_streams_only_with_a_tag_filter() {
    let w = world().await;
    let pk = ("x-bintu-playerkey", w.org.player_key.as_str());
    assert_eq!(w.sc.send("GET", "/stream", &[pk], None).await.status, 403);
    assert_eq!(
        w.sc.send("GET", "/stream?tags[]=live", &[pk], None)
            .await
            .status,
        200
    );
}

crate::on_both_stores! {
async fn renewing_the_token_key_kills_old_tokens_on_the_next_request() {
    let w = world().await;
    let u = &w.users["nanoUser"];
    let old = w.sc.token(&u.id).await;
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&old)], None).await.status,
        200
    );
    let other = w.sc.token(&w.users["nanoReadOnly"].id).await;
    let new_key = rolegate::store::random_key();
    w.sc.state
        .store
        .set_token_key(&u.id, &new_key)
        .await
        .unwrap();
    w.sc.state.cache.invalidate_user(&u.id);
    let r = w.sc.send("GET", "/stream", &[tok(&old)], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "token_bad_signature");
    let fresh = w.sc.token(&u.id).await;
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&fresh)], None)
            .await
            .status,
        200
    );
    // Another user's token is untouched.
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&other)], None)
            .await
            .status,
        200
    );
}
}

crate::on_both_stores! {
async fn role_change_kills_old_tokens_and_new_tokens_get_the_new_role() {
    let w = world().await;
    let admin2 = w.sc.user(&w.org, "admin2@acme.test", "nanoAdmin").await;
    let old = w.sc.token(&admin2.id).await;
    assert_eq!(
        w.sc.send("DELETE", "/stream/s1", &[tok(&old)], None)
            .await
            .status,
        200
    );
    w.sc.state
        .store
        .set_role(&admin2.id, "nanoReadOnly", &rolegate::store::random_key())
        .await
        .unwrap();
    w.sc.state.cache.invalidate_user(&admin2.id);
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&old)], None).await.status,
        401
    );
    let new = w.sc.token(&admin2.id).await;
    let before = w.echo.count();
    assert_eq!(
        w.sc.send("DELETE", "/stream/s1", &[tok(&new)], None)
            .await
            .status,
        403
    );
    assert_eq!(w.echo.count(), before);
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&new)], None).await.status,
        200
    );
}
}

crate::on_both_stores! {
async fn deleted_user_gets_401() {
    let w = world().await;
    let u = w.sc.user(&w.org, "gone@acme.test", "nanoUser").await;
    let t = w.sc.token(&u.id).await;
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        200
    );
    w.sc.state.store.delete_user(&u.id).await.unwrap();
    w.sc.state.cache.invalidate_user(&u.id);
    let r = w.sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "unknown_user");
}
}

crate::on_both_stores! {
async fn cache_ttl_bounds_staleness_without_invalidation() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "cache_ttl_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "a@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        200
    );
    // A write the cache is not told about (as from a replica whose notification was lost).
    sc.state
        .store
        .set_token_key(&u.id, &rolegate::store::random_key())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        401
    );
}
}

crate::on_both_stores! {
async fn cache_hits_do_no_store_io_and_unknown_kids_are_cached() {
    let w = world().await;
    let t = w.sc.token(&w.users["nanoUser"].id).await;
    for _ in 0..5 {
        assert_eq!(
            w.sc.send("GET", "/stream", &[tok(&t)], None).await.status,
            200
        );
    }
    assert_eq!(w.sc.state.metrics.cache_misses.get(), 1);
    assert_eq!(w.sc.state.metrics.cache_hits.get(), 4);
    // Every request times its credential stage; the cache stage times only
    // the lookup the store answered (hits are counted, not timed apart).
    let metrics = w.sc.ops_get("/metrics").await.body;
    let stage_count = |stage: &str| {
        let prefix = format!("rolegate_stage_seconds_count{{stage=\"{stage}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(stage_count("credential"), Some(5), "{metrics}");
    assert_eq!(stage_count("cache"), Some(1), "{metrics}");
    assert_eq!(stage_count("decision"), Some(5), "{metrics}");
    let unknown = forge(
        &header("00000000-0000-4000-8000-000000000000"),
        &claims("x"),
        b"k",
    );
    for _ in 0..20 {
        let r = w.sc.send("GET", "/stream", &[tok(&unknown)], None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.reason(), "unknown_user");
    }
    assert_eq!(
        w.sc.state.metrics.cache_misses.get(),
        2,
        "an unknown kid is looked up once"
    );
}
}

crate::on_both_stores! {
async fn concurrent_misses_for_one_user_read_the_store_once() {
    let w = world().await;
    let t = w.sc.token(&w.users["nanoUser"].id).await;
    let headers = [tok(&t)];
    let m = &w.sc.state.metrics;
    let before = w.echo.count();
    // A cold cache, then a cleared one (as after a lost change feed): each
    // time 32 requests of one user arrive together.
    for round in 1..=2 {
        let burst = (0..32).map(|_| w.sc.send("GET", "/stream", &headers, None));
        let replies = futures_util::future::join_all(burst).await;
        assert!(replies.iter().all(|r| r.status == 200));
        assert_eq!(m.cache_misses.get(), round, "store reads after round {round}");
        assert_eq!(m.cache_hits.get() + m.cache_joined.get(), 31 * round);
        w.sc.state.cache.clear();
    }
    assert_eq!(w.echo.count() - before, 64);
}
}

crate::on_both_stores! {
async fn a_user_of_one_org_cannot_reach_another_orgs_resources() {
    let w = world().await;
    let other = w.sc.org("globex").await;
    let victim = w.sc.user(&other, "boss@globex.test", "nanoAdmin").await;
    let admin = w.sc.token(&w.users["nanoAdmin"].id).await;
    let before = w.echo.count();
    for (method, path) in [
        ("GET", format!("/user/{}", victim.id)),
        ("DELETE", format!("/user/{}", victim.id)),
    ] {
        for cred in [
            ("x-bintu-token", admin.as_str()),
            ("x-bintu-apikey", w.org.api_key.as_str()),
        ] {
            let r = w.sc.send(method, &path, &[cred], None).await;
            assert_eq!(r.status, 403, "{method} {path} with {}", cred.0);
        }
    }
    assert!(w.sc.state.store.user(&victim.id).await.unwrap().is_some());
    // Upstream requests carry the caller's org, never one the client names.
    let r =
        w.sc.send(
            "GET",
            "/stream",
            &[tok(&admin), ("x-rolegate-org-id", &other.org.id)],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        w.echo.last().unwrap().headers["x-rolegate-org-id"],
        w.org.org.id.as_str()
    );
    assert_eq!(w.echo.count(), before + 1);
    // A token signed for one user but naming another in `sub` is refused.
    let a = &w.users["nanoAdmin"];
    let t = forge(
        &header(&a.id),
        &claims(&victim.id),
        &secret_of(&a.id, &a.token_key),
    );
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        401
    );
}
}

#[tokio::test]
async fn bad_tokens_are_401_and_never_reach_the_upstream() {
    let w = world().await;
    let u = &w.users["nanoAdmin"];
    let secret = secret_of(&u.id, &u.token_key);
    let good = forge(&header(&u.id), &claims(&u.id), &secret);
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&good)], None)
            .await
            .status,
        200
    );
    let before = w.echo.count();
    let n = now();
    let with = |k: &str, v: Value| {
        let mut c = claims(&u.id);
        c[k] = v;
        forge(&header(&u.id), &c, &secret)
    };
    let without = |k: &str| {
        let mut c = claims(&u.id);
        c.as_object_mut().unwrap().remove(k);
        forge(&header(&u.id), &c, &secret)
    };
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = {
        let mut c = claims(&u.id);
        c["sub"] = json!("someone-else");
        format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2])
    };
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let mut cases: Vec<(&str, String)> = vec![
        ("tampered payload", tampered_payload),
        ("flipped signature bit", String::from_utf8(flipped).unwrap()),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.x")),
        ("wrong key", forge(&header(&u.id), &claims(&u.id), b"wrong")),
        ("expired", with("exp", json!(n - 120))),
        ("not yet valid", with("nbf", json!(n + 3600))),
        ("wrong aud", with("aud", json!("other-service"))),
        ("aud array without ours", with("aud", json!(["x", "y"]))),
        ("wrong iss", with("iss", json!("evil"))),
        ("missing exp", without("exp")),
        ("missing aud", without("aud")),
        ("missing iss", without("iss")),
        ("missing sub", without("sub")),
        ("string exp", with("exp", json!("99999999999"))),
        ("string nbf", with("nbf", json!("0"))),
        ("float exp", with("exp", json!(1e12))),
        ("negative exp", with("exp", json!(-1))),
        ("null exp", with("exp", Value::Null)),
        ("garbage", "not-a-token".to_owned()),
        (
            "playback typ",
            forge(
                &json!({"alg": "HS256", "typ": "playback+jwt", "kid": u.id}),
                &claims(&u.id),
                &secret,
            ),
        ),
        (
            "no typ",
            forge(
                &json!({"alg": "HS256", "kid": u.id}),
                &claims(&u.id),
                &secret,
            ),
        ),
        (
            "RS256 header",
            forge(
                &json!({"alg": "RS256", "typ": "bintu-api+jwt", "kid": u.id}),
                &claims(&u.id),
                &secret,
            ),
        ),
        (
            "no kid",
            forge(
                &json!({"alg": "HS256", "typ": "bintu-api+jwt"}),
                &claims(&u.id),
                &secret,
            ),
        ),
        (
            "kid path",
            forge(&header("../../dev/null"), &claims(&u.id), &secret),
        ),
        (
            "kid sql",
            forge(&header("x' OR '1'='1"), &claims(&u.id), &secret),
        ),
        (
            "kid url",
            forge(&header("http://127.0.0.1:1/key"), &claims(&u.id), &secret),
        ),
        (
            "kid huge",
            forge(&header(&"a".repeat(10_000)), &claims(&u.id), &secret),
        ),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = B64.encode(json!({"alg": alg, "typ": "bintu-api+jwt", "kid": u.id}).to_string());
        let p = B64.encode(claims(&u.id).to_string());
        cases.push(("alg none", format!("{h}.{p}.")));
    }
    for (name, t) in &cases {
        let r = w.sc.send("GET", "/stream", &[tok(t)], None).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], 4002, "{name}");
        assert!(!r.reason().is_empty(), "{name} has a reason code");
    }
    assert_eq!(w.echo.count(), before, "a bad token reached the upstream");
}

#[tokio::test]
async fn credential_ambiguity_is_refused() {
    let w = world().await;
    let t = w.sc.token(&w.users["nanoAdmin"].id).await;
    let bearer = format!("Bearer {t}");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![tok(&t), ("authorization", &bearer)],
            "multiple_credentials",
        ),
        (
            vec![tok(&t), ("x-bintu-apikey", &w.org.api_key)],
            "multiple_credentials",
        ),
        (vec![tok(&t), tok(&t)], "duplicate_credential_header"),
        (
            vec![("authorization", "Basic dXNlcjpwdw==")],
            "unsupported_auth_scheme",
        ),
        (vec![], "credential_required"),
        (vec![("x-bintu-apikey", "ak_wrong")], "unknown_api_key"),
    ];
    for (headers, reason) in cases {
        let r = w.sc.send("GET", "/stream", &headers, None).await;
        assert_eq!(r.status, 401, "{reason}");
        assert_eq!(r.reason(), reason);
        assert!(r.headers.get("www-authenticate").is_some());
    }
    assert_eq!(w.echo.count(), 0);
    let r =
        w.sc.send("GET", "/stream", &[("authorization", &bearer)], None)
            .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_route_is_403_and_paths_are_normalised_once() {
    let w = world().await;
    let t = w.sc.token(&w.users["nanoAdmin"].id).await;
    for (method, path) in [
        ("GET", "/admin"),
        ("TRACE", "/stream"),
        ("GET", "/STREAM"),
        ("PATCH", "/stream/x"),
    ] {
        let r = w.sc.send(method, path, &[tok(&t)], None).await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.reason(), "no_route");
    }
    let r =
        w.sc.send("GET", "/tag/../stream//s1/", &[tok(&t)], None)
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.echo.last().unwrap().target, "/stream/s1");
    // Absolute form reaches the upstream in origin form; an already normal
    // path keeps its query as sent.
    let abs = format!(
        "GET http://elsewhere.example/stream/s1?limit=5 HTTP/1.1\r\nHost: x\r\nx-bintu-token: {t}\r\nConnection: close\r\n\r\n"
    );
    let out = crate::support::raw(&w.sc.base, abs.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(w.echo.last().unwrap().uri, "/stream/s1?limit=5");
    let r =
        w.sc.send("GET", "/stream/s1?limit=5&q=%20a", &[tok(&t)], None)
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.echo.last().unwrap().target, "/stream/s1?limit=5&q=%20a");
    for bad in [
        "/stream/%2e%2e/user",
        "/stream%2fs1",
        "/stream/s1;x",
        "/stream/%C0%AF",
    ] {
        let r = w.sc.send("GET", bad, &[tok(&t)], None).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(w.echo.count(), 3);
}

#[tokio::test]
async fn upstream_down_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let sc = Sidecar::with(Options {
        upstream: Some(format!("http://{addr}")),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "a@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.reason(), "upstream_unreachable");
}

#[tokio::test]
async fn request_smuggling_reaches_the_upstream_as_one_request() {
    let w = world().await;
    let t = w.sc.token(&w.users["nanoAdmin"].id).await;
    let raw = format!(
        "POST /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {t}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /user HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let out = crate::support::raw(&w.sc.base, raw.as_bytes()).await;
    // Transfer-Encoding wins over Content-Length (RFC 9112 6.3): one chunked
    // POST, answered once, and the connection closed so the bytes after it
    // are never read as a second request.
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    let seen = w.echo.all();
    assert_eq!(seen.len(), 1, "upstream saw {} requests", seen.len());
    assert_eq!(seen[0].target, "/stream");
    assert_eq!(seen[0].method, "POST");
}

#[tokio::test]
async fn upstream_that_never_answers_is_504() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let sc = Sidecar::with(Options {
        upstream: Some(format!("http://{addr}")),
        config: "upstream_timeout_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "a@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.reason(), "upstream_timeout");
    hold.abort();
}
