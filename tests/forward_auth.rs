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
}
