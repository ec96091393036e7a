//! Forward-auth mode: a proxy asks rolegate about the original request.

use crate::support::{tok, Echo, Options, Sidecar};

async fn sidecar(trusted: &str) -> (Echo, Sidecar) {
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: format!("trusted_proxies = [\"{trusted}\"]\n"),
        ..Default::default()
    })
    .await;
    (echo, sc)
}

fn original<'a>(method: &'a str, uri: &'a str) -> [(&'static str, &'a str); 2] {
    [("x-original-method", method), ("x-original-uri", uri)]
}

#[tokio::test]
async fn forward_auth_decides_the_original_request_for_a_trusted_proxy() {
    let (echo, sc) = sidecar("127.0.0.1/32").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let ask = |m: &'static str, uri: &'static str, t: Option<String>| {
        let sc = &sc;
        async move {
            let mut h: Vec<(&str, &str)> = original(m, uri).to_vec();
            if let Some(t) = &t {
                h.push(tok(t));
                return sc.send("GET", "/_rolegate/forward-auth", &h, None).await;
            }
            sc.send("GET", "/_rolegate/forward-auth", &h, None).await
        }
    };
    let r = ask("GET", "/stream?quantity=3", Some(t.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-rolegate-role"], "nanoReadOnly");
    assert_eq!(r.headers["x-rolegate-user-id"], u.id.as_str());
    assert_eq!(r.headers["x-rolegate-org-id"], org.org.id.as_str());
    let r = ask("DELETE", "/stream/s1", Some(t.clone())).await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("x-rolegate-role").is_none());
    assert_eq!(ask("GET", "/stream", None).await.status, 401);
    assert_eq!(
        ask("GET", "/stream/../user", Some(t.clone())).await.status,
        400
    );
    // Traefik's spelling works the same way.
    let r = sc
        .send(
            "GET",
            "/_rolegate/forward-auth",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/tag"),
                tok(&t),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // A renewal bites on the next question.
    sc.state
        .store
        .set_token_key(&u.id, &rolegate::store::random_key())
        .await
        .unwrap();
    sc.state.cache.invalidate_user(&u.id);
    assert_eq!(ask("GET", "/stream", Some(t)).await.status, 401);
    assert_eq!(echo.count(), 0, "forward-auth never forwards");
}

#[tokio::test]
async fn forward_auth_headers_from_an_untrusted_address_are_ignored() {
    let (echo, sc) = sidecar("10.0.0.0/8").await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    let mut h = original("GET", "/stream").to_vec();
    h.push(tok(&t));
    let r = sc.send("GET", "/_rolegate/forward-auth", &h, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason(), "no_route");
    // And an ordinary request's X-Forwarded-For does not become the client address.
    let r = sc
        .send(
            "GET",
            "/stream",
            &[tok(&t), ("x-forwarded-for", "203.0.113.7")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.last().unwrap().headers["x-forwarded-for"], "127.0.0.1");
    // Nor do its scheme and host claims: the upstream is told rolegate's own view.
    let r = sc
        .send(
            "GET",
            "/stream",
            &[
                tok(&t),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = echo.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        sc.base.trim_start_matches("http://")
    );
}

/// Behind a proxy that terminates TLS and rewrites `Host`, the upstream still
/// learns the scheme and host the client used, to build its own absolute
/// URLs: from a trusted proxy what that proxy wrote (the last entry of a
/// list; entries before it came with the request), when well-formed, and
/// rolegate's own view otherwise. A forward-auth answer carries neither: the
/// proxy that asked forwards the request with its own.
#[tokio::test]
async fn the_upstream_is_told_the_scheme_and_host_a_trusted_proxy_saw() {
    let (echo, sc) = sidecar("127.0.0.1/32").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let own_host = sc.base.trim_start_matches("http://").to_owned();
    // (headers the proxy sends, the scheme and host the upstream is told)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "streams.example"),
            ],
            "https",
            "streams.example",
        ),
        (
            &[
                ("x-forwarded-proto", "https, HTTP"),
                ("x-forwarded-host", "evil.example, streams.example:8443"),
            ],
            "http",
            "streams.example:8443",
        ),
        (
            &[("forwarded", "for=192.0.2.1;proto=https;host=\"a.example\"")],
            "https",
            "a.example",
        ),
        (
            &[
                ("x-forwarded-proto", "ftp"),
                ("x-forwarded-host", "user@evil.example"),
            ],
            "http",
            &own_host,
        ),
        (&[("x-forwarded-host", "a/b")], "http", &own_host),
        (&[], "http", &own_host),
    ];
    for (sent, proto, host) in cases {
        let mut h = vec![tok(&t)];
        h.extend_from_slice(sent);
        let r = sc.send("GET", "/stream", &h, None).await;
        assert_eq!(r.status, 200, "{sent:?}: {}", r.body);
        let seen = echo.last().unwrap();
        assert_eq!(seen.header("x-forwarded-proto"), [*proto], "{sent:?}");
        assert_eq!(seen.header("x-forwarded-host"), [*host], "{sent:?}");
        assert!(seen.header("forwarded").is_empty(), "{sent:?}");
    }
    let mut h = original("GET", "/stream").to_vec();
    h.extend([tok(&t), ("x-forwarded-proto", "https")]);
    let r = sc.send("GET", "/_rolegate/forward-auth", &h, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.get("x-forwarded-proto").is_none());
    assert!(r.headers.get("x-forwarded-host").is_none());
}

// === the shipped Traefik example, against what forward_auth.rs reads ===
// Traefik cannot be installed here, so its example config is read (line by
// line: plain YAML, one key per line) and rolegate is asked exactly the way
// that config makes Traefik ask it.

fn traefik_example() -> Vec<String> {
    let text = std::fs::read_to_string(
        crate::support::repo().join("deploy/traefik/rolegate-forward-auth.yml"),
    )
    .unwrap();
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim_end().to_owned())
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

/// The scalar value of `key:` under the `forwardAuth:` block.
fn traefik_value(lines: &[String], key: &str) -> String {
    let from = lines
        .iter()
        .position(|l| l.trim() == "forwardAuth:")
        .expect("a forwardAuth middleware");
    lines[from..]
        .iter()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("forwardAuth has no `{key}`"))
}

/// The items of the list `key:` under the `forwardAuth:` block.
fn traefik_list(lines: &[String], key: &str) -> Vec<String> {
    let from = lines
        .iter()
        .position(|l| l.trim() == format!("{key}:"))
        .unwrap_or_else(|| panic!("forwardAuth has no `{key}`"));
    lines[from + 1..]
        .iter()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- ").trim_matches('"').to_owned())
        .collect()
}

#[tokio::test]
async fn the_traefik_example_asks_rolegate_what_forward_auth_reads() {
    let lines = traefik_example();
    let address = traefik_value(&lines, "address");
    assert!(
        address.ends_with(rolegate::forward_auth::PATH),
        "forwardAuth address `{address}` is not rolegate's {}",
        rolegate::forward_auth::PATH
    );
    // Traefik builds X-Forwarded-* itself; client-sent ones are not passed on.
    assert_eq!(traefik_value(&lines, "trustForwardHeader"), "false");
    let request_headers: Vec<String> = traefik_list(&lines, "authRequestHeaders")
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    // Every credential header rolegate reads reaches it, and nothing that
    // would describe the request a second time (the nginx spelling).
    for h in [
        "authorization",
        rolegate::authn::credential::TOKEN_HEADER,
        rolegate::authn::credential::API_KEY_HEADER,
        rolegate::authn::credential::PLAYER_KEY_HEADER,
    ] {
        assert!(
            request_headers.iter().any(|x| x == h),
            "{h} is not sent to rolegate"
        );
    }
    for h in ["x-original-method", "x-original-uri", "x-original-host"] {
        assert!(
            !request_headers.iter().any(|x| x == h),
            "{h} is sent to rolegate"
        );
    }
    let response_headers: Vec<String> = traefik_list(&lines, "authResponseHeaders")
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let regex = traefik_value(&lines, "authResponseHeadersRegex");
    assert_eq!(
        regex, "(?i)^x-rolegate-",
        "the test reads only this pattern"
    );
    let copied =
        |name: &str| response_headers.iter().any(|x| x == name) || name.starts_with("x-rolegate-");

    // What Traefik sends for a client's `GET /tag?quantity=2` with a user token:
    // the listed request headers, plus its own X-Forwarded-*.
    let (echo, sc) = sidecar("127.0.0.1/32").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "op@acme.test", "nanoUser").await;
    let t = sc.token(&u.id).await;
    let path = address
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap()
        .to_owned();
    let traefik = |method: &'static str, uri: &'static str, credential: Option<String>| {
        let (sc, path) = (&sc, path.clone());
        async move {
            let mut h: Vec<(&str, &str)> = vec![
                ("x-forwarded-method", method),
                ("x-forwarded-uri", uri),
                ("x-forwarded-host", "api.example.test"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-for", "198.51.100.4"),
            ];
            if let Some(c) = &credential {
                h.push(tok(c));
            }
            sc.send("GET", &path, &h, None).await
        }
    };
    let r = traefik("GET", "/tag?quantity=2", Some(t.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Every identity header rolegate answers with is one Traefik copies.
    let identity: Vec<&str> = r
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-rolegate-") || *k == "x-request-id")
        .collect();
    for h in [
        "x-rolegate-user-id",
        "x-rolegate-org-id",
        "x-rolegate-role",
        "x-rolegate-credential",
        "x-request-id",
    ] {
        assert!(identity.contains(&h), "rolegate did not answer with {h}");
    }
    for h in &identity {
        assert!(copied(h), "Traefik would not copy {h}");
    }
    assert_eq!(r.headers["x-rolegate-role"], "nanoUser");
    // Denies come back as rolegate's own answers, which Traefik relays as they are.
    let r = traefik("DELETE", "/tag/t1", Some(t.clone())).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.reason(), "policy_deny");
    let r = traefik("GET", "/tag", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(echo.count(), 0, "forward-auth never forwards");
}

/// The proxy forwards the original request as it is, so a method override
/// in it would reach the upstream: forward-auth refuses it as proxy mode does,
/// in the original request's fields and in its (decoded) query.
#[tokio::test]
async fn forward_auth_refuses_a_method_override_in_the_original_request() {
    let (_echo, sc) = sidecar("127.0.0.1/32").await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let fa = "/_rolegate/forward-auth";
    let allowed = original("GET", "/stream/s1");
    let mut h: Vec<(&str, &str)> = allowed.to_vec();
    h.push(tok(&t));
    assert_eq!(sc.send("GET", fa, &h, None).await.status, 200);
    h.push(("x-http-method-override", "DELETE"));
    let r = sc.send("GET", fa, &h, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.reason(), "method_override");
    let mut h: Vec<(&str, &str)> = original("GET", "/stream/s1?%5Fmethod=DELETE").to_vec();
    h.push(tok(&t));
    let r = sc.send("GET", fa, &h, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.reason(), "method_override");
}
