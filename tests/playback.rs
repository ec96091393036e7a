//! Secure playback tokens: issue, verify, revoke, JWKS, guarded prefix.

// Tests may panic on the unexpected: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{json, Value};

use crate::support::{tok, Echo, Options, Sidecar};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn sidecar(echo: &Echo) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "playback_prefix = \"/playback\"\n".into(),
        ..Default::default()
    })
    .await
}

async fn issue(sc: &Sidecar, api: &str, body: Value) -> (String, Value) {
    let r = sc
        .send(
            "POST",
            "/playback/token",
            &[tok(api)],
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["success"], true);
    (j["data"]["token"].as_str().unwrap().to_owned(), j)
}

async fn play(sc: &Sidecar, path: &str, token: &str, extra: &[(&str, &str)]) -> u16 {
    let sep = if path.contains('?') { '&' } else { '?' };
    sc.send("GET", &format!("{path}{sep}token={token}"), extra, None)
        .await
        .status
        .as_u16()
}

async fn verify(sc: &Sidecar, token: &str) -> (u16, Value) {
    let r = sc
        .send(
            "POST",
            "/playback/token/verify",
            &[],
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    (r.status.as_u16(), r.json())
}

crate::on_both_stores! {
async fn playback_token_survives_issuer_changes_and_fails_after_exp() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&u.id).await;
    let (t, _) = issue(&sc, &api, json!({"streams": ["s1"]})).await;
    let (short, _) = issue(&sc, &api, json!({"streams": ["s1"], "exp": now() + 2})).await;

    assert_eq!(play(&sc, "/playback/s1/index.m3u8", &t, &[]).await, 200);
    let seen = echo.last().unwrap();
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());

    sc.state
        .store
        .set_role(&u.id, "nanoReadOnly", b"k2")
        .await
        .unwrap();
    sc.state.cache.invalidate_user(&u.id);
    assert_eq!(play(&sc, "/playback/s1/x", &t, &[]).await, 200);
    sc.state.store.set_token_key(&u.id, b"k3").await.unwrap();
    sc.state.cache.invalidate_user(&u.id);
    assert_eq!(play(&sc, "/playback/s1/x", &t, &[]).await, 200);
    sc.state.store.delete_user(&u.id).await.unwrap();
    sc.state.cache.invalidate_user(&u.id);
    assert_eq!(play(&sc, "/playback/s1/x", &t, &[]).await, 200);
    let (st, v) = verify(&sc, &t).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["org"], org.org.id.as_str());

    // Past exp (and the 1 s leeway): refused on the route and by verify.
    assert_eq!(play(&sc, "/playback/s1/x", &short, &[]).await, 200);
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(play(&sc, "/playback/s1/x", &short, &[]).await, 401);
    let (st, v) = verify(&sc, &short).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["errorCode"], 1002);
    assert_eq!(v["message"], "jwt expired");
}
}

crate::on_both_stores! {
async fn playback_revocable_token_refused_after_revoke_and_restart() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&u.id).await;
    let (t, _) = issue(&sc, &api, json!({"orgawide": true, "revocable": true})).await;
    let (nr, _) = issue(&sc, &api, json!({"orgawide": true})).await;
    assert_eq!(play(&sc, "/playback/any/x", &t, &[]).await, 200);

    let rv = |tkn: String| json!({ "token": tkn }).to_string();
    let r = sc
        .send(
            "POST",
            "/playback/token/revoke",
            &[tok(&api)],
            Some(&rv(nr.clone())),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["errorCode"], 2011);

    let other = sc.org("other").await;
    let ou = sc.user(&other, "o@other.test", "nanoUser").await;
    let oapi = sc.token(&ou.id).await;
    let r = sc
        .send(
            "POST",
            "/playback/token/revoke",
            &[tok(&oapi)],
            Some(&rv(t.clone())),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["errorCode"], 2012);

    let r = sc
        .send(
            "POST",
            "/playback/token/revoke",
            &[tok(&api)],
            Some(&rv(t.clone())),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(play(&sc, "/playback/any/x", &t, &[]).await, 401);
    assert_eq!(verify(&sc, &t).await.0, 403);
    assert_eq!(play(&sc, "/playback/any/x", &nr, &[]).await, 200);

    let dir = sc.stop().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "playback_prefix = \"/playback\"\n".into(),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert_eq!(play(&sc, "/playback/any/x", &t, &[]).await, 401);
    assert_eq!(play(&sc, "/playback/any/x", &nr, &[]).await, 200);
}
}

#[tokio::test]
async fn playback_restrictions_allow_and_deny() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoAdmin").await;
    let api = sc.token(&u.id).await;

    let (s, _) = issue(&sc, &api, json!({"streams": ["a", "b"]})).await;
    assert_eq!(play(&sc, "/playback/a/x", &s, &[]).await, 200);
    assert_eq!(play(&sc, "/playback/b/x", &s, &[]).await, 200);
    assert_eq!(play(&sc, "/playback/c/x", &s, &[]).await, 403);

    let (g, _) = issue(&sc, &api, json!({"groupid": "grp"})).await;
    assert_eq!(play(&sc, "/playback/grp/x", &g, &[]).await, 200);
    assert_eq!(play(&sc, "/playback/a/x", &g, &[]).await, 403);

    let (o, _) = issue(&sc, &api, json!({"orgawide": true})).await;
    assert_eq!(play(&sc, "/playback/whatever/x", &o, &[]).await, 200);

    let (ipok, _) = issue(
        &sc,
        &api,
        json!({"orgawide": true, "ip": ["10.0.0.1", "127.0.0.0/8"]}),
    )
    .await;
    assert_eq!(play(&sc, "/playback/a/x", &ipok, &[]).await, 200);
    let (ipno, _) = issue(&sc, &api, json!({"orgawide": true, "ip": "10.0.0.0/8"})).await;
    assert_eq!(play(&sc, "/playback/a/x", &ipno, &[]).await, 403);

    let (d, _) = issue(
        &sc,
        &api,
        json!({"orgawide": true, "domain": "example.com"}),
    )
    .await;
    assert_eq!(
        play(
            &sc,
            "/playback/a/x",
            &d,
            &[("origin", "https://example.com")]
        )
        .await,
        200
    );
    assert_eq!(
        play(
            &sc,
            "/playback/a/x",
            &d,
            &[("referer", "https://www.example.com/p")]
        )
        .await,
        200
    );
    assert_eq!(
        play(
            &sc,
            "/playback/a/x",
            &d,
            &[("origin", "https://badexample.com")]
        )
        .await,
        403
    );
    assert_eq!(play(&sc, "/playback/a/x", &d, &[]).await, 403);

    // Bearer works too; another org's stream namespace is the token's own org.
    let r = sc
        .send(
            "GET",
            "/playback/a/x",
            &[("authorization", &format!("Bearer {s}"))],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn playback_token_kinds_never_cross() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoAdmin").await;
    let api = sc.token(&u.id).await;
    let (t, _) = issue(&sc, &api, json!({"orgawide": true})).await;
    // API token on the playback prefix.
    assert_eq!(play(&sc, "/playback/a/x", &api, &[]).await, 401);
    let r = sc.send("GET", "/playback/a/x", &[tok(&api)], None).await;
    assert_eq!(r.status, 401);
    // Playback token on an API route.
    let r = sc.send("GET", "/stream", &[tok(&t)], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // No token at all.
    assert_eq!(sc.send("GET", "/playback/a/x", &[], None).await.status, 401);
}

#[tokio::test]
async fn playback_field_limits_and_roles() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&u.id).await;
    let n = now();
    let cases = [
        (json!({}), "streams"),
        (json!({"streams": ["a"], "orgawide": true}), "orgawide"),
        (json!({"streams": []}), "streams"),
        (json!({"groupid": 5}), "groupid"),
        (
            json!({"orgawide": true, "revocable": true, "exp": n + 25 * 3600}),
            "exp",
        ),
        (json!({"orgawide": true, "exp": n + 366 * 86400}), "exp"),
        (json!({"orgawide": true, "exp": n - 10}), "exp"),
        (json!({"orgawide": true, "nbf": "x"}), "nbf"),
        (
            json!({"orgawide": true, "ip": (0..11).map(|i| format!("10.0.0.{i}")).collect::<Vec<_>>()}),
            "ip",
        ),
        (json!({"orgawide": true, "ip": "not-an-ip"}), "ip"),
        (json!({"orgawide": true, "domain": "a/b"}), "domain"),
        (
            json!({"orgawide": true, "forceDisconnect": "yes"}),
            "forceDisconnect",
        ),
        (json!({"orgawide": true, "revocable": 1}), "revocable"),
    ];
    for (body, field) in cases {
        let r = sc
            .send(
                "POST",
                "/playback/token",
                &[tok(&api)],
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body.contains(field),
            "{body} should name {field}: {}",
            r.body
        );
    }
    // Limits themselves are fine.
    issue(
        &sc,
        &api,
        json!({"orgawide": true, "revocable": true, "exp": n + 24 * 3600}),
    )
    .await;
    issue(&sc, &api, json!({"orgawide": true, "exp": n + 365 * 86400})).await;

    let ro = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let rot = sc.token(&ro.id).await;
    let r = sc
        .send(
            "POST",
            "/playback/token",
            &[tok(&rot)],
            Some(r#"{"orgawide":true}"#),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

/// Verify a compact EdDSA JWS against a JWKS with ed25519-dalek directly.
fn verify_with_jwks(jwks: &Value, token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "playback+jwt");
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let vk = VerifyingKey::from_bytes(&x).unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap()
        .try_into()
        .unwrap();
    vk.verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

crate::on_both_stores! {
async fn playback_jwks_verifies_independently_across_rotation() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoAdmin").await;
    let api = sc.token(&u.id).await;
    let (old, oj) = issue(&sc, &api, json!({"orgawide": true})).await;
    let jwks = sc
        .send("GET", "/.well-known/jwks.json", &[], None)
        .await
        .json();
    assert!(verify_with_jwks(&jwks, &old));

    let r = sc
        .send("PUT", "/organisation/playbackkey", &[tok(&api)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_kid = r.json()["data"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, oj["data"]["kid"].as_str().unwrap());
    let (new, nj) = issue(&sc, &api, json!({"orgawide": true})).await;
    assert_eq!(nj["data"]["kid"], new_kid.as_str());

    let jwks = sc
        .send("GET", "/.well-known/jwks.json", &[], None)
        .await
        .json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(verify_with_jwks(&jwks, &old));
    assert!(verify_with_jwks(&jwks, &new));
    assert_eq!(verify(&sc, &old).await.0, 200);
    assert_eq!(verify(&sc, &new).await.0, 200);
    // A tampered payload does not verify.
    let mut parts: Vec<String> = new.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert!(!verify_with_jwks(&jwks, &parts.join(".")));

    // Rotation is audited.
    let audit = sc
        .state
        .store
        .list_audit(&org.org.id, &Default::default())
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.action == "rotatePlaybackKey"));

    // A retired key stays while its tokens live, then leaves the JWKS.
    let other = sc.org("short").await;
    let ou = sc.user(&other, "a@short.test", "nanoAdmin").await;
    let oapi = sc.token(&ou.id).await;
    let (_, sj) = issue(&sc, &oapi, json!({"orgawide": true, "exp": now() + 2})).await;
    let short_kid = sj["data"]["kid"].as_str().unwrap().to_owned();
    let r = sc
        .send("PUT", "/organisation/playbackkey", &[tok(&oapi)], None)
        .await;
    assert_eq!(r.status, 200);
    let has = |j: &Value, kid: &str| {
        j["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
    };
    let jwks = sc
        .send("GET", "/.well-known/jwks.json", &[], None)
        .await
        .json();
    assert!(has(&jwks, &short_kid));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let jwks = sc
        .send("GET", "/.well-known/jwks.json", &[], None)
        .await
        .json();
    assert!(!has(&jwks, &short_kid));
    assert!(has(&jwks, &new_kid));
    assert!(
        verify_with_jwks(&jwks, &old),
        "old key still has live tokens"
    );
}
}

#[tokio::test]
async fn playback_api_key_issues_and_verify_reports_facts() {
    let echo = Echo::start().await;
    let sc = sidecar(&echo).await;
    let org = sc.org("acme").await;
    let r = sc
        .send(
            "POST",
            "/playback/token",
            &[("x-bintu-apikey", &org.api_key)],
            Some(r#"{"streams":["s1"],"tag":"t1","forceDisconnect":true}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let (st, v) = verify(&sc, &t).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["sub"], "apikey");
    assert_eq!(v["data"]["aud"], "playback");
    assert_eq!(v["data"]["tag"], "t1");
    assert_eq!(v["data"]["forceDisconnect"], true);
    assert_eq!(v["data"]["streams"], json!(["s1"]));
    let (st, v) = verify(&sc, "not.a.jwt").await;
    assert_eq!(st, 403);
    assert_eq!(v["errorCode"], 2004);
}
