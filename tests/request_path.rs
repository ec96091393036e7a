//! The request path end to end: real sockets, a real SQLite file, a real echo upstream.

use crate::support::{tok, Echo, Sidecar};

#[tokio::test]
async fn allowed_request_reaches_upstream_with_identity_headers() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    let r = sc
        .send(
            "GET",
            "/stream?quantity=5",
            &[tok(&t), ("x-rolegate-role", "nanoAdmin")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = echo.last().unwrap();
    assert_eq!(seen.target, "/stream?quantity=5");
    assert_eq!(seen.headers["x-rolegate-role"], "nanoReadOnly");
    assert_eq!(seen.headers.get_all("x-rolegate-role").iter().count(), 1);
    assert_eq!(seen.headers["x-rolegate-user-id"], u.id.as_str());
    assert_eq!(seen.headers["x-rolegate-org-id"], org.org.id.as_str());
    assert!(seen.headers.get("x-bintu-token").is_none());
}
