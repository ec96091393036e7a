//! Bad input to rolegate's own endpoints is answered with a clear 4xx and
//! changes nothing: one test per case the OpenAPI document's strictness
//! exposed (`scripts/api-fuzz` runs schemathesis against the same rules).

use serde_json::{json, Value};

use crate::support::{tok, Echo, Reply, Sidecar};

struct World {
    _echo: Echo,
    sc: Sidecar,
    admin: rolegate::store::User,
    token: String,
}

async fn world() -> World {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let token = sc.token(&admin.id).await;
    World {
        _echo: echo,
        sc,
        admin,
        token,
    }
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.sc.send(method, path, &[tok(&self.token)], body).await
    }

    fn parameter(r: &Reply) -> Value {
        r.json()["error"]["userinfo"]["parameter"].clone()
    }

    async fn audit_len(&self) -> usize {
        let r = self.call("GET", "/audit", None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["data"].as_array().unwrap().len()
    }
}

#[tokio::test]
async fn a_token_request_body_that_is_not_an_object_or_names_no_string_user_is_a_400() {
    let w = world().await;
    // No body, or an empty object: the caller's own token.
    for body in [None, Some(""), Some("{}")] {
        let r = w.call("POST", "/bintu/token", body).await;
        assert_eq!(r.status, 200, "{body:?}: {}", r.body);
        assert_eq!(r.json()["data"]["userId"], w.admin.id.as_str());
    }
    // Anything else that is not a JSON object, or a userId that is not a
    // non-empty string, used to be read as "no body" and minted the caller's token.
    for body in [
        "[]",
        "\"x\"",
        "not json",
        "{\"userId\":7}",
        "{\"userId\":null}",
    ] {
        let r = w.call("POST", "/bintu/token", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            ["invalid_body", "invalid_parameter"].contains(&r.reason().as_str()),
            "{body}: {}",
            r.body
        );
    }
    let r = w
        .call("POST", "/bintu/token", Some("{\"userId\":\"\"}"))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.reason()),
        (400, "invalid_parameter".to_owned())
    );
}

#[tokio::test]
async fn a_field_given_under_both_names_must_be_a_string_and_agree() {
    let w = world().await;
    let before = w.audit_len().await;
    // `role` of the wrong type used to be ignored when `permission` was given:
    // the invite was created.
    let cases = [
        (
            "POST",
            "/user/invite",
            json!({"permission": "nanoUser", "role": 5}),
            "role",
            "invalid_parameter",
        ),
        (
            "POST",
            "/user/invite",
            json!({"permission": "nanoUser", "role": "nanoAdmin"}),
            "permission",
            "ambiguous_parameter",
        ),
        (
            "POST",
            "/user/invite",
            json!({"permission": ""}),
            "permission",
            "invalid_parameter",
        ),
        (
            "PUT",
            "/user/tokenkey",
            json!({"userId": w.admin.id, "id": 5}),
            "id",
            "invalid_parameter",
        ),
        (
            "PUT",
            "/user/tokenkey",
            json!({"userId": w.admin.id, "id": "someone-else"}),
            "userId",
            "ambiguous_parameter",
        ),
        (
            "PUT",
            "/user/permission",
            json!({"userId": w.admin.id, "permission": "nanoUser", "role": ["x"]}),
            "role",
            "invalid_parameter",
        ),
    ];
    for (method, path, body, parameter, reason) in cases {
        let r = w.call(method, path, Some(&body.to_string())).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert_eq!(r.reason(), reason, "{path} {body}");
        assert_eq!(World::parameter(&r), parameter, "{path} {body}");
    }
    // Nothing happened: no invite, no renewal, no role change (each is audited).
    assert_eq!(w.audit_len().await, before);
    let r = w.call("GET", "/organisation", None).await;
    assert_eq!(r.status, 200, "the admin's token still works");
    // Both names agreeing is fine.
    let r = w
        .call(
            "POST",
            "/user/invite",
            Some(&json!({"permission": "nanoUser", "role": "nanoUser"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn an_audit_limit_that_is_not_a_whole_number_is_a_400() {
    let w = world().await;
    // It used to be ignored (all records).
    for limit in ["abc", "-1", "1.5", "4294967296"] {
        let r = w.call("GET", &format!("/audit?limit={limit}"), None).await;
        assert_eq!(r.status, 400, "{limit}: {}", r.body);
        assert_eq!(r.reason(), "invalid_parameter");
        assert_eq!(World::parameter(&r), "limit");
    }
    for limit in ["", "0", "5", "4294967295"] {
        let r = w.call("GET", &format!("/audit?limit={limit}"), None).await;
        assert_eq!(r.status, 200, "{limit}: {}", r.body);
    }
}

#[tokio::test]
async fn a_playback_start_at_the_end_of_time_is_a_400_not_an_overflow() {
    let w = world().await;
    // Without `exp` the expiry is a day after the start; that addition
    // overflowed (a panic in a debug build) for a start near u64::MAX.
    for nbf in [u64::MAX, u64::MAX - 1000] {
        let body = json!({"streams": ["s1"], "nbf": nbf}).to_string();
        let r = w.call("POST", "/playback/token", Some(&body)).await;
        assert_eq!(r.status, 400, "{nbf}: {}", r.body);
        assert_eq!(r.reason(), "invalid_parameter");
    }
    // The sidecar is still there.
    assert_eq!(w.call("GET", "/organisation", None).await.status, 200);
}

#[tokio::test]
async fn playback_text_fields_are_limited_in_characters_not_bytes() {
    let w = world().await;
    // 200 characters of two bytes each: within the documented 256 characters.
    let tag = "é".repeat(200);
    let body = json!({"streams": ["s1"], "tag": tag}).to_string();
    let r = w.call("POST", "/playback/token", Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = json!({"streams": ["s1"], "tag": "é".repeat(257)}).to_string();
    let r = w.call("POST", "/playback/token", Some(&body)).await;
    assert_eq!(
        (r.status.as_u16(), r.reason()),
        (400, "invalid_parameter".to_owned())
    );
}

#[tokio::test]
async fn the_playground_takes_exactly_one_string_caller() {
    let w = world().await;
    // A `userId` that was not a string was passed over for `role`, and `role`
    // beside a `userId` was ignored whatever it held.
    let id = w.admin.id.as_str();
    for (body, reason, parameter) in [
        (
            json!({"method": "GET", "path": "/stream", "role": "nanoUser", "userId": 5}),
            "invalid_parameter",
            "userId",
        ),
        (
            json!({"method": "GET", "path": "/stream", "role": "nanoUser", "userId": ""}),
            "invalid_parameter",
            "userId",
        ),
        (
            json!({"method": "GET", "path": "/stream", "role": "nanoReadOnly", "userId": id}),
            "ambiguous_parameter",
            "role",
        ),
    ] {
        let r = w
            .call("POST", "/policy/explain", Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.reason(), reason, "{body}");
        assert_eq!(World::parameter(&r), parameter, "{body}");
    }
    // Either one alone is answered.
    for body in [
        json!({"method": "GET", "path": "/stream", "role": "nanoUser"}),
        json!({"method": "GET", "path": "/stream", "userId": id}),
    ] {
        let r = w
            .call("POST", "/policy/explain", Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        assert_eq!(r.json()["data"]["allowed"], true, "{body}");
    }
}

#[tokio::test]
async fn a_password_with_a_token_no_link_has_is_refused_and_changes_nothing() {
    let w = world().await;
    let before = w.sc.state.store.user(&w.admin.id).await.unwrap().unwrap();
    let r =
        w.sc.send(
            "POST",
            "/user/password",
            &[],
            Some(
                &json!({"token": "pwr_no-such-link", "password": "a long new password"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.reason(), "reset_refused");
    let after = w.sc.state.store.user(&w.admin.id).await.unwrap().unwrap();
    assert_eq!(after.token_key, before.token_key);
    assert_eq!(after.password_hash, before.password_hash);
    // The caller's token still works.
    assert_eq!(w.call("GET", "/organisation", None).await.status, 200);
}

#[tokio::test]
async fn an_address_sending_bad_reset_links_is_throttled_before_any_hashing() {
    let w = world().await;
    let attempt = || async {
        w.sc.send(
            "POST",
            "/user/password",
            &[],
            Some(&json!({"token": "pwr_guess", "password": "a long new password"}).to_string()),
        )
        .await
    };
    for _ in 0..5 {
        let r = attempt().await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.reason(), "reset_refused");
    }
    let r = attempt().await;
    assert_eq!(r.status, 429, "{}", r.body);
    // Logins from the same address are throttled separately.
    assert_eq!(w.call("GET", "/organisation", None).await.status, 200);
}
