//! Requests whose meaning could change after rolegate authorized them: each
//! class is refused (and the upstream sees nothing) or reaches the upstream
//! only in the form rolegate decided on. Every caller here holds a valid
//! nanoAdmin token, so the only reason for a refusal is the request's shape.
//! The classes and why each is answered as it is: README, "Hostile input".

use crate::support::{raw, Echo, Sidecar};

struct World {
    echo: Echo,
    sc: Sidecar,
    token: String,
}

async fn world() -> World {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&admin.id).await;
    World { echo, sc, token }
}

/// Send `head` (with `{T}` replaced by the token) and return the status line
/// and how many requests the upstream saw because of it.
async fn probe(w: &World, head: &str) -> (String, usize) {
    let before = w.echo.count();
    let bytes = head.replace("{T}", &w.token);
    let out = raw(&w.sc.base, bytes.as_bytes()).await;
    let status = out.lines().next().unwrap_or("").to_owned();
    (status, w.echo.count() - before)
}

/// Classes that must be refused with a 4xx before anything reaches the upstream.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "two Host fields (RFC 9112 3.2)",
        "GET /stream HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "HTTP/1.1 without Host (RFC 9112 3.2)",
        "GET /stream HTTP/1.1\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "Host that is not an authority",
        "GET /stream HTTP/1.1\r\nHost: a/b@c\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "X-HTTP-Method-Override turns an allowed GET into a DELETE",
        "GET /stream/s1 HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override: DELETE\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "X-HTTP-Method",
        "POST /stream HTTP/1.1\r\nHost: x\r\nX-HTTP-Method: DELETE\r\nContent-Length: 0\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "X-Method-Override",
        "POST /stream HTTP/1.1\r\nHost: x\r\nX-Method-Override: PUT\r\nContent-Length: 0\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "_method in the query (method-override middleware)",
        "POST /stream?_method=DELETE HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "_method percent-encoded in the query",
        "POST /stream?%5Fmethod=DELETE HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "two different Content-Length values (RFC 9112 6.3)",
        "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\nab",
        "400",
    ),
    (
        "a Transfer-Encoding that does not end in chunked (RFC 9112 6.3)",
        "POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n0\r\n\r\n",
        "400",
    ),
    (
        "obsolete line folding (RFC 9112 5.2)",
        "GET /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "whitespace between a field name and the colon (RFC 9112 5.1)",
        "GET /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN : {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "a NUL in a field value",
        "GET /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nX-A: a\0b\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "an encoded slash in the path",
        "GET /stream/a%2Fb HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "an encoded dot-dot in the path",
        "GET /stream/%2e%2e/user HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "a path parameter (Tomcat, Spring read `;` differently)",
        "GET /stream;x=/s1 HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "a backslash in the path (IIS and some routers read it as `/`)",
        "GET /stream\\s1 HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "a filter parameter given twice (frameworks disagree on which wins)",
        "GET /user?role=nanoUser&role=nanoAdmin HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "CONNECT",
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "400",
    ),
    (
        "a method in lower case is another method (RFC 9110 9.1)",
        "get /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "403",
    ),
    (
        "TRACE (would echo credentials back: no route allows it)",
        "TRACE /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
        "403",
    ),
];

#[tokio::test]
async fn requests_that_could_be_reinterpreted_are_refused_before_the_upstream() {
    let w = world().await;
    let mut failures = Vec::new();
    for (name, head, status) in REFUSED {
        let (line, reached) = probe(&w, head).await;
        let want = format!("HTTP/1.1 {status}");
        if !line.starts_with(&want) || reached != 0 {
            failures.push(format!(
                "{name}: `{line}`, upstream saw {reached} (expected {status}, 0)"
            ));
        }
    }
    // The same requests without the hostile part are allowed and forwarded:
    // the refusals above are for the shape, not the caller.
    let (line, reached) = probe(
        &w,
        "GET /stream/s1 HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(reached, 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// CONNECT's authority-form target names no path, so it is refused as a
/// target before any route is looked up (never a tunnel to the upstream).
#[tokio::test]
async fn connect_is_refused_as_a_target_without_a_path() {
    let w = world().await;
    let before = w.echo.count();
    let head =
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n"
            .replace("{T}", &w.token);
    let out = raw(&w.sc.base, head.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json["error"]["userinfo"]["reason"], "path_not_absolute",
        "{out}"
    );
    assert_eq!(w.echo.count(), before);
}

/// Fields a framework or proxy behind rolegate may read as the request's
/// "real" URL, host, scheme or client: client-sent copies never reach it.
const REWRITE_AND_CLIENT_FIELDS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-url-scheme",
    "front-end-https",
    "x-host",
    "x-http-host-override",
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-rolegate-user-id",
    "x-rolegate-role",
    "x-user-id",
    "x-request-id",
];

#[tokio::test]
async fn rewrite_and_client_fields_never_reach_the_upstream() {
    let w = world().await;
    let mut head = String::from("GET /stream HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\n");
    for name in REWRITE_AND_CLIENT_FIELDS {
        head.push_str(&format!("{name}: /admin\r\n"));
    }
    // Underscored spellings some servers fold into dashes.
    head.push_str("X_Rolegate_Role: nanoAdmin\r\nX_Original_URL: /admin\r\n");
    // Hop-by-hop by declaration, and an h2c upgrade attempt.
    head.push_str("Connection: close, x-rolegate-org-id, HTTP2-Settings, Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    let (line, reached) = probe(&w, &head).await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(reached, 1);
    let seen = w.echo.last().unwrap();
    for name in REWRITE_AND_CLIENT_FIELDS {
        let got: Vec<_> = seen.headers.get_all(*name).iter().collect();
        let own = matches!(
            *name,
            "x-rolegate-user-id"
                | "x-rolegate-role"
                | "x-request-id"
                | "x-forwarded-for"
                | "x-forwarded-host"
                | "x-forwarded-proto"
        );
        if own {
            // rolegate's own value, exactly one, never the client's.
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            assert_ne!(got[0], "/admin", "{name}");
        } else {
            assert!(got.is_empty(), "{name} reached the upstream: {got:?}");
        }
    }
    for name in [
        "x_rolegate_role",
        "x_original_url",
        "upgrade",
        "http2-settings",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-rolegate-role"], "nanoAdmin");
    assert!(seen.headers.get("x-rolegate-org-id").is_some());
    // The upstream sees its own Host, not the client's; the client's is
    // told in X-Forwarded-Host, and the scheme of rolegate's listener in
    // X-Forwarded-Proto (the peer is no trusted proxy: its claims count for
    // nothing).
    assert_ne!(seen.headers["host"], "x");
    assert_eq!(seen.headers["x-forwarded-host"], "x");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn absolute_form_is_forwarded_as_the_path_that_was_decided() {
    let w = world().await;
    let (line, reached) = probe(
        &w,
        "GET http://evil.example/stream/s1?q=1 HTTP/1.1\r\nHost: x\r\nX-BINTU-TOKEN: {T}\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert_eq!(reached, 1);
    let seen = w.echo.last().unwrap();
    assert_eq!(seen.uri, "/stream/s1?q=1");
    assert!(!seen.headers["host"].to_str().unwrap().contains("evil"));
}
