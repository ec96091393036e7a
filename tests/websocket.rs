//! WebSocket through the proxy door: upgrades decided like any request,
//! messages relayed both ways within the size limit, hostile handshakes
//! refused, and live connections cut when their credential is revoked
//! (through the API, and through another replica on PostgreSQL), while a
//! playback-token connection lives until its `exp` or its revocation.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::pg;
use crate::support::ws_echo::WsEcho;
use crate::support::{metric, tok, Echo, Options, Sidecar};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The revocation bound these tests hold rolegate to (the follower's poll is
/// 250 ms by default; a local API write nudges it at once).
const CUT_BOUND: Duration = Duration::from_secs(2);
const LIMIT: usize = 64 * 1024;

async fn sidecar(up: &WsEcho, extra: &str) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(up.url()),
        config: format!(
            "playback_prefix = \"/playback\"\nwebsocket_max_message_bytes = {LIMIT}\n{extra}"
        ),
        ..Default::default()
    })
    .await
}

/// Open a WebSocket through `sc` (the client's own limit is far above rolegate's).
async fn open(
    sc: &Sidecar,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), WsError> {
    let url = format!("{}{path}", sc.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    tokio_tungstenite::connect_async_with_config(req, Some(config), false).await
}

async fn echoes(ws: &mut Client, m: Message) {
    ws.send(m.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo in time")
        .unwrap()
        .unwrap();
    assert_eq!(back, m);
}

/// Wait for the close frame rolegate sends; its code and reason, and how
/// long it took from `since`.
async fn closed(ws: &mut Client, since: Instant, bound: Duration) -> (u16, String, Duration) {
    loop {
        let left = bound.saturating_sub(since.elapsed());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no close frame within {bound:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string(), since.elapsed())
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => {
                panic!("closed without a close frame")
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("connection failed before a close frame: {e}"),
        }
    }
}

/// Send raw bytes; the status and body of the answer.
async fn raw(sc: &Sidecar, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(sc.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if text.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + len].to_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(deadline - Instant::now(), s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed without an answer: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["userinfo"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_upgrade_relays_messages_both_ways_within_the_size_limit() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let (mut ws, resp) = open(
        &sc,
        "/stream/s1?live=1",
        &[
            tok(&t),
            ("sec-websocket-protocol", "echo.v1, other"),
            ("x-rolegate-user-id", "someone-else"),
            ("x-forwarded-user", "admin"),
            ("x-role", "nanoAdmin"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "echo.v1");
    assert!(resp.headers().contains_key("x-request-id"));

    // The upstream's handshake: rolegate's identity headers, never the
    // client's claims or credential, the subprotocol offer passed on.
    let seen = up.last().unwrap();
    assert_eq!(seen.target, "/stream/s1?live=1");
    assert_eq!(seen.headers["x-rolegate-user-id"], u.id.as_str());
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    assert_eq!(seen.headers["x-rolegate-role"], "nanoUser");
    assert_eq!(seen.headers["x-rolegate-credential"], "token");
    assert_eq!(seen.headers.get_all("x-rolegate-user-id").iter().count(), 1);
    assert!(!seen.headers.contains_key("x-bintu-token"));
    assert!(!seen.headers.contains_key("x-forwarded-user"));
    assert!(!seen.headers.contains_key("x-role"));
    assert_eq!(seen.headers["sec-websocket-protocol"], "echo.v1, other");
    assert_eq!(seen.headers["host"], up.addr.to_string().as_str());

    echoes(&mut ws, Message::text("hello")).await;
    echoes(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    // Near the limit: relayed whole, both ways.
    echoes(&mut ws, Message::binary(vec![7u8; LIMIT - 16])).await;
    echoes(&mut ws, Message::text("x".repeat(LIMIT - 16))).await;
    assert_eq!(metric(&sc, "rolegate_websocket_open").await, 1.0);

    // Over it: the sender is told 1009, the upstream gets 1001.
    ws.send(Message::binary(vec![1u8; LIMIT + 1]))
        .await
        .unwrap();
    let (code, why, _) = closed(&mut ws, Instant::now(), Duration::from_secs(5)).await;
    assert_eq!(code, 1009, "{why}");
    let start = Instant::now();
    while up.closes().is_empty() && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.closes(), vec![Some(1001)]);
    assert_eq!(metric(&sc, "rolegate_websocket_upgrades_total").await, 1.0);
    let start = Instant::now();
    while metric(&sc, "rolegate_websocket_open").await != 0.0 {
        assert!(start.elapsed() < Duration::from_secs(3), "still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_reaches_the_upstream_with_its_code() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let (mut ws, _) = open(&sc, "/stream/s1", &[("x-bintu-apikey", &org.api_key)])
        .await
        .unwrap();
    echoes(&mut ws, Message::text("hi")).await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let start = Instant::now();
    while up.closes().is_empty() && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.closes(), vec![Some(1000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_unauthenticated_upgrades_never_reach_the_upstream() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;

    // The player key may not read metrics: 403 in the platform's shape.
    let Err(WsError::Http(r)) = open(
        &sc,
        "/stream/s1/metrics",
        &[("x-bintu-playerkey", &org.player_key)],
    )
    .await
    else {
        panic!("upgraded a denied request")
    };
    assert_eq!(r.status(), 403);
    let body = String::from_utf8(r.body().clone().unwrap()).unwrap();
    assert_eq!(reason(&body), "policy_deny", "{body}");

    // No credential: 401. A forged token: 401. No route: 403.
    let Err(WsError::Http(r)) = open(&sc, "/stream/s1", &[]).await else {
        panic!("upgraded without a credential")
    };
    assert_eq!(r.status(), 401);
    let Err(WsError::Http(r)) = open(&sc, "/stream/s1", &[tok("a.b.c")]).await else {
        panic!("upgraded with a forged token")
    };
    assert_eq!(r.status(), 401);
    let Err(WsError::Http(r)) = open(&sc, "/nowhere", &[("x-bintu-apikey", &org.api_key)]).await
    else {
        panic!("upgraded without a route")
    };
    assert_eq!(r.status(), 403);
    assert_eq!(up.count(), 0);

    // Allowed by rolegate, refused by the upstream: its answer, as it gave it.
    let Err(WsError::Http(r)) =
        open(&sc, "/stream/refuse", &[("x-bintu-apikey", &org.api_key)]).await
    else {
        panic!("the upstream's refusal became an upgrade")
    };
    assert_eq!(r.status(), 403);
    assert_eq!(
        String::from_utf8(r.body().clone().unwrap()).unwrap(),
        "upstream says no"
    );
    assert_eq!(up.count(), 1);
    assert_eq!(metric(&sc, "rolegate_websocket_open").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_are_refused_before_any_decision() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let key = &org.api_key;
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    let cases: Vec<(String, &str)> = vec![
        // No Sec-WebSocket-Key.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_key",
        ),
        // A key that is not 16 bytes.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_key",
        ),
        // Two keys.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_key",
        ),
        // An old protocol version.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 8\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_version",
        ),
        // POST upgrade, with a body.
        (
            format!("POST /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 2\r\nx-bintu-apikey: {key}\r\n\r\nhi"),
            "websocket_handshake",
        ),
        // A GET with a body.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 2\r\nx-bintu-apikey: {key}\r\n\r\nhi"),
            "websocket_handshake",
        ),
        // Upgrade without Connection: upgrade.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_handshake",
        ),
        // Two Upgrade fields.
        (
            format!("GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_handshake",
        ),
        // HTTP/1.0.
        (
            format!("GET /stream/s1 HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {good_key}\r\nSec-WebSocket-Version: 13\r\nx-bintu-apikey: {key}\r\n\r\n"),
            "websocket_handshake",
        ),
        // Without a credential, a bad handshake is still a bad handshake.
        (
            "GET /stream/s1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".to_owned(),
            "websocket_key",
        ),
    ];
    for (request, want) in &cases {
        let (status, body) = raw(&sc, request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(reason(&body), *want, "{request}: {body}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_passed_on() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let request = format!(
        "GET /stream/s1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nx-bintu-apikey: {}\r\n\r\n",
        org.api_key
    );
    let (status, body) = raw(&sc, &request).await;
    assert_eq!(status, 200, "{body}");
    let seen = echo.last().unwrap();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the upstream");
    }
}

/// The three user changes the API offers, each through `via`'s API.
async fn change_user(via: &Sidecar, admin: &str, which: usize, user_id: &str) {
    let admin = tok(admin);
    let r = match which {
        0 => {
            via.send(
                "PUT",
                "/user/tokenkey",
                &[admin],
                Some(&json!({ "userId": user_id }).to_string()),
            )
            .await
        }
        1 => {
            via.send(
                "PUT",
                "/user/permission",
                &[admin],
                Some(&json!({"userId": user_id, "permission": "nanoReadOnly"}).to_string()),
            )
            .await
        }
        _ => {
            via.send("DELETE", &format!("/user/{user_id}"), &[admin], None)
                .await
        }
    };
    assert!(r.status.is_success(), "{}", r.body);
}

crate::on_both_stores! {
async fn a_renewal_role_change_or_deletion_cuts_the_users_open_connections() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    let bystander = sc.user(&org, "by@acme.test", "nanoUser").await;
    let (mut other, _) = open(&sc, "/stream/s1", &[tok(&sc.token(&bystander.id).await)])
        .await
        .unwrap();
    for which in 0..3 {
        let u = sc
            .user(&org, &format!("v{which}@acme.test"), "nanoUser")
            .await;
        let (mut ws, _) = open(&sc, "/stream/s1", &[tok(&sc.token(&u.id).await)])
            .await
            .unwrap();
        echoes(&mut ws, Message::text("before")).await;
        let since = Instant::now();
        change_user(&sc, &admin_token, which, &u.id).await;
        let (code, why, took) = closed(&mut ws, since, CUT_BOUND).await;
        assert_eq!((code, why.as_str()), (1008, "credential revoked"));
        assert!(took < CUT_BOUND, "{took:?}");
    }
    // Another user's connection is untouched.
    echoes(&mut other, Message::text("still here")).await;
    assert_eq!(
        metric(&sc, "rolegate_websocket_cuts_total{reason=\"revoked\"}").await,
        3.0
    );
    let start = Instant::now();
    while up.closes().iter().filter(|c| **c == Some(1008)).count() < 3 {
        assert!(start.elapsed() < CUT_BOUND, "{:?}", up.closes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
}

crate::on_both_stores! {
async fn an_api_key_rotation_cuts_connections_opened_with_the_old_key() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    let (mut ws, _) = open(&sc, "/stream/s1", &[("x-bintu-apikey", &org.api_key)])
        .await
        .unwrap();
    echoes(&mut ws, Message::text("before")).await;
    let since = Instant::now();
    let r = sc
        .send("PUT", "/organisation/apikey", &[tok(&admin_token)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, _, took) = closed(&mut ws, since, CUT_BOUND).await;
    assert_eq!(code, 1008);
    assert!(took < CUT_BOUND, "{took:?}");
    assert_eq!(
        metric(&sc, "rolegate_websocket_cuts_total{reason=\"key_rotated\"}").await,
        1.0
    );
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_another_replica_cut_connections_on_this_one() {
    let url = pg::shared().database().await;
    let up = WsEcho::start().await;
    let replica = |config: &str| {
        let (url, config, upstream) = (url.clone(), config.to_owned(), up.url());
        async move {
            Sidecar::with(Options {
                upstream: Some(upstream),
                store: Some(url),
                // Long cache TTL: only the change log can explain a cut.
                config: format!("cache_ttl_secs = 300\nplayback_prefix = \"/playback\"\n{config}"),
                ..Default::default()
            })
            .await
        }
    };
    let a = replica("").await;
    let b = replica("").await;
    let org = a.org("acme").await;
    let admin = a.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = a.token(&admin.id).await;
    for which in 0..3 {
        let u = a
            .user(&org, &format!("v{which}@acme.test"), "nanoUser")
            .await;
        let (mut ws, _) = open(&b, "/stream/s1", &[tok(&a.token(&u.id).await)])
            .await
            .unwrap();
        echoes(&mut ws, Message::text("before")).await;
        let since = Instant::now();
        change_user(&a, &admin_token, which, &u.id).await;
        let (code, why, took) = closed(&mut ws, since, CUT_BOUND).await;
        assert_eq!((code, why.as_str()), (1008, "credential revoked"));
        assert!(took < CUT_BOUND, "{took:?}");
    }
    assert_eq!(
        metric(&b, "rolegate_websocket_cuts_total{reason=\"revoked\"}").await,
        3.0
    );
    // A revocable playback token revoked through A closes B's connection.
    let u = a.user(&org, "viewer-issuer@acme.test", "nanoUser").await;
    let api = a.token(&u.id).await;
    let r = a
        .send(
            "POST",
            "/playback/token",
            &[tok(&api)],
            Some(&json!({"orgawide": true, "revocable": true}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let (mut ws, _) = open(&b, &format!("/playback/s1/live?token={t}"), &[])
        .await
        .unwrap();
    echoes(&mut ws, Message::text("frame")).await;
    let since = Instant::now();
    let r = a
        .send(
            "POST",
            "/playback/token/revoke",
            &[tok(&api)],
            Some(&json!({ "token": t }).to_string()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (code, _, took) = closed(&mut ws, since, CUT_BOUND).await;
    assert_eq!(code, 1008);
    assert!(took < CUT_BOUND, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playback_connection_survives_its_issuers_changes_and_closes_at_exp() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    let issuer = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&issuer.id).await;
    let exp = rolegate::clock::unix_now() + 3;
    let r = sc
        .send(
            "POST",
            "/playback/token",
            &[tok(&api)],
            Some(&json!({"streams": ["s1"], "exp": exp}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let (mut ws, _) = open(&sc, &format!("/playback/s1/live?token={t}"), &[])
        .await
        .unwrap();
    let seen = up.last().unwrap();
    assert_eq!(seen.headers["x-rolegate-credential"], "playback");
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    // The token stays in the query the upstream sees (it is the playback
    // URL); no API credential is added.
    assert!(!seen.headers.contains_key("x-rolegate-user-id"));

    // The issuer is renewed and demoted: the viewer's connection stays.
    change_user(&sc, &admin_token, 0, &issuer.id).await;
    change_user(&sc, &admin_token, 1, &issuer.id).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    echoes(&mut ws, Message::text("still playing")).await;

    // At exp it closes (1008, expired), not before.
    let (code, why, _) = closed(&mut ws, Instant::now(), Duration::from_secs(6)).await;
    assert_eq!((code, why.as_str()), (1008, "credential expired"));
    let now_ms = rolegate::clock::unix_now_ms();
    let exp_ms = i64::try_from(exp * 1000).unwrap();
    assert!(now_ms >= exp_ms, "closed {} ms before exp", exp_ms - now_ms);
    assert!(
        now_ms - exp_ms < 1500,
        "closed {} ms after exp",
        now_ms - exp_ms
    );
    assert_eq!(
        metric(&sc, "rolegate_websocket_cuts_total{reason=\"expired\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_playback_token_closes_its_connection_at_once() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "").await;
    let org = sc.org("acme").await;
    let issuer = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&issuer.id).await;
    let mut tokens = Vec::new();
    for revocable in [true, false] {
        let r = sc
            .send(
                "POST",
                "/playback/token",
                &[tok(&api)],
                Some(&json!({"orgawide": true, "revocable": revocable}).to_string()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.push(r.json()["data"]["token"].as_str().unwrap().to_owned());
    }
    let (mut revoked, _) = open(&sc, &format!("/playback/s1/live?token={}", tokens[0]), &[])
        .await
        .unwrap();
    let (mut kept, _) = open(&sc, &format!("/playback/s2/live?token={}", tokens[1]), &[])
        .await
        .unwrap();
    let since = Instant::now();
    let r = sc
        .send(
            "POST",
            "/playback/token/revoke",
            &[tok(&api)],
            Some(&json!({ "token": tokens[0] }).to_string()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let (code, why, took) = closed(&mut revoked, since, CUT_BOUND).await;
    assert_eq!((code, why.as_str()), (1008, "credential revoked"));
    assert!(took < CUT_BOUND, "{took:?}");
    echoes(&mut kept, Message::text("unaffected")).await;
    assert_eq!(
        metric(
            &sc,
            "rolegate_websocket_cuts_total{reason=\"playback_revoked\"}"
        )
        .await,
        1.0
    );
    // A playback token is refused on an API route, upgrade or not.
    let Err(WsError::Http(r)) = open(
        &sc,
        "/stream/s1",
        &[("authorization", &format!("Bearer {}", tokens[1]))],
    )
    .await
    else {
        panic!("a playback token opened an API route")
    };
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_shutdown_closes_with_going_away() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "websocket_idle_timeout_secs = 1\n").await;
    let org = sc.org("acme").await;
    let key = ("x-bintu-apikey", org.api_key.as_str());
    let (mut idle, _) = open(&sc, "/stream/s1", &[key]).await.unwrap();
    let since = Instant::now();
    let (code, why, took) = closed(&mut idle, since, Duration::from_secs(4)).await;
    assert_eq!((code, why.as_str()), (1001, "idle timeout"));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(
        metric(&sc, "rolegate_websocket_cuts_total{reason=\"idle\"}").await,
        1.0
    );

    let (mut open_one, _) = open(&sc, "/stream/s1", &[key]).await.unwrap();
    echoes(&mut open_one, Message::text("hi")).await;
    let stopping = tokio::spawn(sc.stop());
    let (code, _, _) = closed(&mut open_one, Instant::now(), Duration::from_secs(4)).await;
    assert_eq!(code, 1001);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_connection_closes_at_the_tokens_exp() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "token_ttl_secs = 2\n").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let exp = rolegate::clock::unix_now() + 2;
    let (mut ws, _) = open(&sc, "/stream/s1", &[tok(&t)]).await.unwrap();
    echoes(&mut ws, Message::text("while valid")).await;
    let (code, why, _) = closed(&mut ws, Instant::now(), Duration::from_secs(5)).await;
    assert_eq!((code, why.as_str()), (1008, "credential expired"));
    let late_ms = rolegate::clock::unix_now_ms() - i64::try_from(exp * 1000).unwrap();
    assert!(late_ms > -1000 && late_ms < 1500, "{late_ms} ms after exp");
    // An API key has no expiry: its connection stays past that time.
    let (mut keyed, _) = open(&sc, "/stream/s1", &[("x-bintu-apikey", &org.api_key)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echoes(&mut keyed, Message::text("no expiry")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_bad_limits_stop_start_up() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up, "websocket_max_connections = 1\n").await;
    let org = sc.org("acme").await;
    let key = ("x-bintu-apikey", org.api_key.as_str());
    let (mut first, _) = open(&sc, "/stream/s1", &[key]).await.unwrap();
    let Err(WsError::Http(r)) = open(&sc, "/stream/s2", &[key]).await else {
        panic!("a connection past the cap was relayed")
    };
    assert_eq!(r.status(), 503);
    let body = String::from_utf8(r.body().clone().unwrap()).unwrap();
    assert_eq!(reason(&body), "too_many_websockets", "{body}");
    assert_eq!(up.count(), 1);
    first.close(None).await.unwrap();
    // Once the first has gone, there is room again.
    let start = Instant::now();
    loop {
        match open(&sc, "/stream/s2", &[key]).await {
            Ok((mut ws, _)) => {
                echoes(&mut ws, Message::text("room")).await;
                break;
            }
            Err(e) => assert!(start.elapsed() < Duration::from_secs(3), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (line, setting) in [
        (
            "websocket_max_message_bytes = 10",
            "websocket_max_message_bytes",
        ),
        ("websocket_max_connections = 0", "websocket_max_connections"),
        (
            "websocket_idle_timeout_secs = 0",
            "websocket_idle_timeout_secs",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rolegate.toml");
        std::fs::write(
            &config,
            format!("master_secret_file = \"m\"\nupstream = \"http://127.0.0.1:1\"\n{line}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("m"), crate::support::MASTER_SECRET).unwrap();
        let overrides = rolegate::config::Overrides {
            config: Some(config),
            ..Default::default()
        };
        let env: std::collections::HashMap<String, String> = Default::default();
        let err = rolegate::config::Settings::resolve(&overrides, &env, true)
            .expect_err("a bad limit refused");
        assert!(err.to_string().contains(setting), "{err}");
    }
}
