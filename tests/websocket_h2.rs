//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) from an h2c client:
//! decided as a GET of its `:path` exactly like an HTTP/1.1 upgrade, relayed
//! to the same WebSocket upstream, cut on revocation like any relayed
//! connection; any other CONNECT is refused and never forwarded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::tls::{tls_connect, Ca};
use crate::support::ws_echo::WsEcho;
use crate::support::{metric, tok, Options, Sidecar};

type H2Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
/// An HTTP/2 connection to rolegate, and the base URL its requests name.
struct Conn {
    send: SendRequest<Empty<Bytes>>,
    base: String,
}

const CUT_BOUND: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(5);

async fn sidecar(up: &WsEcho) -> Sidecar {
    Sidecar::with(Options {
        upstream: Some(up.url()),
        config: "playback_prefix = \"/playback\"\n".to_owned(),
        ..Default::default()
    })
    .await
}

fn addr(sc: &Sidecar) -> &str {
    sc.base.trim_start_matches("http://")
}

/// An h2c (prior knowledge) connection to `sc`.
async fn connect(sc: &Sidecar) -> Conn {
    let tcp = TcpStream::connect(addr(sc)).await.unwrap();
    over(tcp, sc.base.clone()).await
}

/// An HTTP/2 connection over `io`, after one ordinary exchange so the
/// server's SETTINGS have been read (a client may send an extended CONNECT
/// only once it has seen SETTINGS_ENABLE_CONNECT_PROTOCOL).
async fn over<I>(io: I, base: String) -> Conn
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("{base}/stream/s1"))
        .body(Empty::new())
        .unwrap();
    let r = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Conn { send, base }
}

/// Send a `CONNECT` for `path`: with `:protocol` when `protocol` is given
/// (then with `:scheme` and `:path`), else a plain authority-form CONNECT.
async fn connect_request(
    conn: &mut Conn,
    sc: &Sidecar,
    protocol: Option<&'static str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let uri = match protocol {
        Some(_) => format!("{}{path}", conn.base),
        None => addr(sc).to_owned(),
    };
    let mut b = Request::builder().method(Method::CONNECT).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Empty::new()).unwrap();
    if let Some(p) = protocol {
        req.extensions_mut().insert(Protocol::from_static(p));
    }
    tokio::time::timeout(WAIT, conn.send.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap()
}

/// Open a WebSocket over `conn`: the status, and the socket when it was 200.
async fn open(
    conn: &mut Conn,
    sc: &Sidecar,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Result<H2Ws, String>) {
    let mut all = vec![("sec-websocket-version", "13")];
    all.extend_from_slice(headers);
    let mut resp = connect_request(conn, sc, Some("websocket"), path, &all).await;
    let status = resp.status();
    if status != StatusCode::OK {
        return (status, Err(body(resp).await));
    }
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (status, Ok(ws))
}

async fn body(resp: Response<Incoming>) -> String {
    let b = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("a body in time")
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

fn reason(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"]["userinfo"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn echoes(ws: &mut H2Ws, m: Message) {
    ws.send(m.clone()).await.unwrap();
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("an echo in time")
        .unwrap()
        .unwrap();
    assert_eq!(back, m);
}

/// The close frame rolegate sends: its code, reason and when it came.
async fn closed(ws: &mut H2Ws, since: Instant, bound: Duration) -> (u16, String, Duration) {
    loop {
        let left = bound.saturating_sub(since.elapsed());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no close frame within {bound:?}"),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (u16::from(f.code), f.reason.to_string(), since.elapsed())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) => panic!("closed without a close frame"),
            Ok(Some(Err(e))) => panic!("connection failed before a close frame: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_offers_extended_connect_in_its_settings() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let tcp = TcpStream::connect(addr(&sc)).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = Request::get(format!("{}/stream/s1", sc.base))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(WAIT, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(send.is_extended_connect_protocol_enabled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_websocket_relays_messages_both_ways_with_identity_headers() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let mut conn = connect(&sc).await;
    let mut resp = connect_request(
        &mut conn,
        &sc,
        Some("websocket"),
        "/stream/s1?live=1",
        &[
            tok(&t),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "echo.v1, other"),
            ("x-rolegate-user-id", "someone-else"),
            ("x-role", "nanoAdmin"),
        ],
    )
    .await;
    // 200 on the stream (RFC 8441 §5), the upstream's subprotocol choice.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "echo.v1");
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;

    // The upstream's leg is an HTTP/1.1 upgrade with rolegate's identity
    // headers, never the client's claims or credential.
    let seen = up.last().unwrap();
    assert_eq!(seen.target, "/stream/s1?live=1");
    assert_eq!(seen.headers["x-rolegate-user-id"], u.id.as_str());
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    assert_eq!(seen.headers["x-rolegate-role"], "nanoUser");
    assert_eq!(seen.headers["x-rolegate-credential"], "token");
    assert_eq!(seen.headers.get_all("x-rolegate-user-id").iter().count(), 1);
    assert!(!seen.headers.contains_key("x-bintu-token"));
    assert!(!seen.headers.contains_key("x-role"));
    assert_eq!(seen.headers["sec-websocket-protocol"], "echo.v1, other");
    assert_eq!(seen.headers["host"], up.addr.to_string().as_str());

    echoes(&mut ws, Message::text("hello over h2")).await;
    echoes(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    echoes(&mut ws, Message::binary(vec![9u8; 200_000])).await;
    assert_eq!(metric(&sc, "rolegate_websocket_open").await, 1.0);

    // rolegate ends the stream once it has the close frame (as a server
    // closes the TCP connection first, RFC 6455 §7.1.1), which can race this
    // client's own flush; what counts is that the upstream gets the code.
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await;
    let start = Instant::now();
    while up.closes().is_empty() {
        assert!(start.elapsed() < WAIT, "the upstream saw no close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.closes(), vec![Some(1000)]);
    assert_eq!(metric(&sc, "rolegate_websocket_upgrades_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_h2_websockets_on_one_connection_work_independently() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let mut conn = connect(&sc).await;
    let mut sockets = Vec::new();
    for i in 0..3 {
        let (status, ws) = open(
            &mut conn,
            &sc,
            &format!("/stream/s{i}"),
            &[("x-bintu-apikey", &org.api_key)],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        sockets.push(ws.unwrap());
    }
    assert_eq!(up.count(), 3);
    // Interleaved: each socket gets back only its own messages.
    for round in 0..3 {
        for (i, ws) in sockets.iter_mut().enumerate() {
            ws.send(Message::text(format!("{i}:{round}")))
                .await
                .unwrap();
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            let back = tokio::time::timeout(WAIT, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(back, Message::text(format!("{i}:{round}")));
        }
    }
    // Closing one leaves the others (and the connection) working.
    let mut first = sockets.remove(0);
    // rolegate may end the stream before this client's flush returns.
    let _ = first.close(None).await;
    for ws in &mut sockets {
        echoes(ws, Message::text("after one closed")).await;
    }
    let (status, ws) = open(
        &mut conn,
        &sc,
        "/stream/s9",
        &[("x-bintu-apikey", &org.api_key)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut fourth = ws.unwrap();
    echoes(&mut fourth, Message::text("a fourth")).await;
    // Two left of the first three, and the fourth.
    let start = Instant::now();
    while metric(&sc, "rolegate_websocket_open").await != 3.0 {
        assert!(start.elapsed() < WAIT, "open connections not 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.closes(), vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_unauthenticated_h2_websockets_never_reach_the_upstream() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let mut conn = connect(&sc).await;

    // Decided as a GET of the path: the player key may not read metrics.
    let (status, body) = open(
        &mut conn,
        &sc,
        "/stream/s1/metrics",
        &[("x-bintu-playerkey", &org.player_key)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&body.err().unwrap()), "policy_deny");
    let (status, _) = open(&mut conn, &sc, "/stream/s1", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = open(&mut conn, &sc, "/stream/s1", &[tok("a.b.c")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = open(
        &mut conn,
        &sc,
        "/nowhere",
        &[("x-bintu-apikey", &org.api_key)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // rolegate's own endpoints take no WebSocket (a 200 would open a tunnel).
    let (status, body) = open(&mut conn, &sc, "/user", &[("x-bintu-apikey", &org.api_key)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body.err().unwrap()), "websocket_handshake");
    assert_eq!(up.count(), 0);

    // Allowed here, refused by the upstream: its answer, as HTTP/1.1 gets it.
    let (status, body) = open(
        &mut conn,
        &sc,
        "/stream/refuse",
        &[("x-bintu-apikey", &org.api_key)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body.err().unwrap(), "upstream says no");
    assert_eq!(up.count(), 1);
    assert_eq!(metric(&sc, "rolegate_websocket_open").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_connect_or_another_protocol_is_refused_and_never_forwarded() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let key = ("x-bintu-apikey", org.api_key.as_str());
    let mut conn = connect(&sc).await;

    // No `:protocol`: a tunnel, refused as before.
    let r = connect_request(&mut conn, &sc, None, "", &[key]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reason(&body(r).await), "path_not_absolute");

    // Another protocol, a missing or wrong version, HTTP/1.1's key: 400.
    let v13 = ("sec-websocket-version", "13");
    for (protocol, headers, why) in [
        ("foo", vec![key, v13], "websocket_handshake"),
        ("websocket", vec![key], "websocket_version"),
        (
            "websocket",
            vec![key, ("sec-websocket-version", "8")],
            "websocket_version",
        ),
        (
            "websocket",
            vec![key, v13, ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")],
            "websocket_handshake",
        ),
    ] {
        let r = connect_request(&mut conn, &sc, Some(protocol), "/stream/s1", &headers).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{protocol} {headers:?}"
        );
        assert_eq!(reason(&body(r).await), why, "{protocol} {headers:?}");
    }
    assert_eq!(up.count(), 0);
    // The connection is still good for a WebSocket.
    let (status, _) = open(&mut conn, &sc, "/stream/s1", &[key]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_cuts_an_h2_websocket_with_1008() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let by = sc.user(&org, "by@acme.test", "nanoUser").await;
    let mut conn = connect(&sc).await;
    let (_, ws) = open(&mut conn, &sc, "/stream/s1", &[tok(&sc.token(&u.id).await)]).await;
    let mut ws = ws.unwrap();
    let (_, other) = open(
        &mut conn,
        &sc,
        "/stream/s2",
        &[tok(&sc.token(&by.id).await)],
    )
    .await;
    let mut other = other.unwrap();
    echoes(&mut ws, Message::text("before")).await;

    let since = Instant::now();
    let r = sc
        .send(
            "PUT",
            "/user/tokenkey",
            &[tok(&admin_token)],
            Some(&json!({ "userId": u.id }).to_string()),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let (code, why, took) = closed(&mut ws, since, CUT_BOUND).await;
    assert_eq!((code, why.as_str()), (1008, "credential revoked"));
    assert!(took < CUT_BOUND, "{took:?}");
    // Another user's socket on the same connection is untouched.
    echoes(&mut other, Message::text("still here")).await;
    assert_eq!(
        metric(&sc, "rolegate_websocket_cuts_total{reason=\"revoked\"}").await,
        1.0
    );
    let start = Instant::now();
    while !up.closes().contains(&Some(1008)) {
        assert!(start.elapsed() < CUT_BOUND, "{:?}", up.closes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playback_token_opens_an_h2_websocket_under_the_prefix() {
    let up = WsEcho::start().await;
    let sc = sidecar(&up).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "u@acme.test", "nanoUser").await;
    let api = sc.token(&u.id).await;
    let exp = rolegate::clock::unix_now() + 60;
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
    let mut conn = connect(&sc).await;
    // Another stream than the token's: denied, nothing forwarded.
    let (status, _) = open(&mut conn, &sc, &format!("/playback/s2/live?token={t}"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(up.count(), 0);
    let (status, ws) = open(&mut conn, &sc, &format!("/playback/s1/live?token={t}"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = up.last().unwrap();
    assert_eq!(seen.headers["x-rolegate-credential"], "playback");
    echoes(&mut ws.unwrap(), Message::text("playing")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_websocket_works_over_tls_with_alpn_h2() {
    let ca = Ca::new("ws-h2");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca.server("rolegate").write(dir.path());
    let up = WsEcho::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(up.url()),
        config: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            c.display(),
            k.display()
        ),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let tls = tls_connect(addr(&sc).parse().unwrap(), ca.client_config(&["h2"], None))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut conn = over(tls, format!("https://{}", addr(&sc))).await;
    let (status, ws) = open(
        &mut conn,
        &sc,
        "/stream/s1",
        &[("x-bintu-apikey", &org.api_key)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    echoes(&mut ws.unwrap(), Message::text("over tls")).await;
    let (status, _) = open(&mut conn, &sc, "/stream/s1", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_connect_is_never_a_forward_auth_question() {
    let up = WsEcho::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(up.url()),
        config: "trusted_proxies = [\"127.0.0.1/32\"]\n".to_owned(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let mut conn = connect(&sc).await;
    // As a forward-auth question this would be a 200, which over HTTP/2
    // opens a tunnel; it is an ordinary request instead, with no route.
    let (status, body) = open(
        &mut conn,
        &sc,
        "/_rolegate/forward-auth",
        &[
            ("x-bintu-apikey", &org.api_key),
            ("x-original-method", "GET"),
            ("x-original-uri", "/stream/s1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");
    assert_eq!(up.count(), 0);
    // The same question as a GET is answered (the proxy is trusted).
    let r = sc
        .send(
            "GET",
            "/_rolegate/forward-auth",
            &[
                ("x-bintu-apikey", &org.api_key),
                ("x-original-method", "GET"),
                ("x-original-uri", "/stream/s1"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
