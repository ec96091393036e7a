//! User management, one test per behaviour of the platform's user-management pages.

use rolegate::authz::routes::{ResourceId, RouteTable};
use serde_json::json;

use crate::support::{tok, Echo, Sidecar};

struct World {
    echo: Echo,
    sc: Sidecar,
    org: rolegate::store::CreatedOrg,
    admin: rolegate::store::User,
    admin_token: String,
}

async fn world() -> World {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    World {
        echo,
        sc,
        org,
        admin,
        admin_token,
    }
}

impl World {
    async fn put(&self, path: &str, token: &str, body: serde_json::Value) -> crate::support::Reply {
        self.sc
            .send("PUT", path, &[tok(token)], Some(&body.to_string()))
            .await
    }

    async fn token_for(&self, user_id: &str) -> String {
        let r = self
            .sc
            .send(
                "POST",
                "/bintu/token",
                &[tok(&self.admin_token)],
                Some(&json!({"userId": user_id}).to_string()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["data"]["token"].as_str().unwrap().to_owned()
    }
}

crate::on_both_stores! {
async fn downgraded_admin_loses_admin_rights_on_the_next_request_even_if_logged_in() {
    let w = world().await;
    let other = w.sc.user(&w.org, "boss2@acme.test", "nanoAdmin").await;
    let old = w.token_for(&other.id).await;
    assert_eq!(
        w.sc.send("DELETE", "/stream/s1", &[tok(&old)], None)
            .await
            .status,
        200
    );
    let r = w
        .put(
            "/user/permission",
            &w.admin_token,
            json!({"userId": other.id, "permission": "nanoReadOnly"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["permission"], "nanoReadOnly");
    // Their earlier API token is dead at once.
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&old)], None).await.status,
        401
    );
    // A new token only reads.
    let new = w.token_for(&other.id).await;
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&new)], None).await.status,
        200
    );
    let before = w.echo.count();
    assert_eq!(
        w.sc.send("DELETE", "/stream/s1", &[tok(&new)], None)
            .await
            .status,
        403
    );
    assert_eq!(
        w.sc.send("GET", "/user", &[tok(&new)], None).await.status,
        403
    );
    assert_eq!(w.echo.count(), before);
    assert_eq!(
        w.sc.state
            .store
            .user(&other.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        "nanoReadOnly"
    );
}
}

crate::on_both_stores! {
async fn renewing_a_users_token_key_invalidates_all_their_tokens_and_only_theirs() {
    let w = world().await;
    let u = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let t1 = w.token_for(&u.id).await;
    let t2 = w.token_for(&u.id).await;
    let bystander = w.sc.user(&w.org, "ro@acme.test", "nanoReadOnly").await;
    let tb = w.token_for(&bystander.id).await;
    let before =
        w.sc.send(
            "GET",
            &format!("/user/{}", u.id),
            &[tok(&w.admin_token)],
            None,
        )
        .await
        .json()["data"]["tokenKey"]
            .clone();
    let r = w
        .put("/user/tokenkey", &w.admin_token, json!({"userId": u.id}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(
        r.json()["data"]["tokenKey"],
        before,
        "the list shows the renewed key"
    );
    for t in [&t1, &t2] {
        assert_eq!(
            w.sc.send("GET", "/stream", &[tok(t)], None).await.status,
            401
        );
    }
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&tb)], None).await.status,
        200
    );
}
}

crate::on_both_stores! {
async fn someone_with_the_api_key_can_renew_a_users_token_key() {
    let w = world().await;
    let u = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let t = w.token_for(&u.id).await;
    let r =
        w.sc.send(
            "PUT",
            "/user/tokenkey",
            &[("x-bintu-apikey", &w.org.api_key)],
            Some(&json!({"userId": u.id}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        401
    );
}
}

crate::on_both_stores! {
async fn deleting_a_user_invalidates_their_tokens_and_unknown_ids_are_404() {
    let w = world().await;
    let u = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let t = w.token_for(&u.id).await;
    let r =
        w.sc.send(
            "DELETE",
            &format!("/user/{}", u.id),
            &[tok(&w.admin_token)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        401
    );
    assert!(w.sc.state.store.user(&u.id).await.unwrap().is_none());
    let audit_before =
        w.sc.state
            .store
            .list_audit(&w.org.org.id, &Default::default())
            .await
            .unwrap()
            .len();
    for (m, p, body) in [
        ("DELETE", format!("/user/{}", u.id), None),
        (
            "GET",
            "/user/00000000-0000-4000-8000-000000000000".to_owned(),
            None,
        ),
        (
            "PUT",
            "/user/tokenkey".to_owned(),
            Some(json!({"userId": "nobody"}).to_string()),
        ),
        (
            "PUT",
            "/user/permission".to_owned(),
            Some(json!({"userId": "nobody", "permission": "nanoUser"}).to_string()),
        ),
    ] {
        let r =
            w.sc.send(m, &p, &[tok(&w.admin_token)], body.as_deref())
                .await;
        assert_eq!(r.status, 404, "{m} {p}: {}", r.body);
    }
    let audit_after =
        w.sc.state
            .store
            .list_audit(&w.org.org.id, &Default::default())
            .await
            .unwrap()
            .len();
    assert_eq!(audit_before, audit_after, "no writes for unknown users");
}
}

crate::on_both_stores! {
async fn nano_user_can_list_users_but_not_change_roles_renew_or_delete() {
    let w = world().await;
    let op = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let t = w.token_for(&op.id).await;
    let r = w.sc.send("GET", "/user", &[tok(&t)], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let entry = &r.json()["data"][0];
    for field in ["id", "email", "permission", "tokenKey", "createdAt"] {
        assert!(entry.get(field).is_some(), "{field}");
    }
    assert!(entry["createdAt"].as_str().unwrap().ends_with('Z'));
    let target = json!({"userId": w.admin.id, "permission": "nanoReadOnly"});
    assert_eq!(
        w.put("/user/permission", &t, target.clone()).await.status,
        403
    );
    assert_eq!(w.put("/user/tokenkey", &t, target).await.status, 403);
    assert_eq!(
        w.sc.send("DELETE", &format!("/user/{}", w.admin.id), &[tok(&t)], None)
            .await
            .status,
        403
    );
    assert_eq!(
        w.sc.state
            .store
            .user(&w.admin.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        "nanoAdmin"
    );
}
}

crate::on_both_stores! {
async fn nano_read_only_cannot_list_users_and_the_list_filters_by_role() {
    let w = world().await;
    let ro = w.sc.user(&w.org, "ro@acme.test", "nanoReadOnly").await;
    let t = w.token_for(&ro.id).await;
    assert_eq!(
        w.sc.send("GET", "/user", &[tok(&t)], None).await.status,
        403
    );
    let r =
        w.sc.send(
            "GET",
            "/user?role=nanoReadOnly",
            &[tok(&w.admin_token)],
            None,
        )
        .await;
    let data = r.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["email"], "ro@acme.test");
}
}

crate::on_both_stores! {
async fn an_unknown_role_is_400_listing_the_valid_ones() {
    let w = world().await;
    let u = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let r = w
        .put(
            "/user/permission",
            &w.admin_token,
            json!({"userId": u.id, "permission": "nanoRoot"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let valid = r.json()["error"]["userinfo"]["valid"].clone();
    assert_eq!(valid, json!(["nanoAdmin", "nanoReadOnly", "nanoUser"]));
    assert_eq!(
        w.sc.state.store.user(&u.id).await.unwrap().unwrap().role,
        "nanoUser"
    );
}
}

crate::on_both_stores! {
async fn the_last_nano_admin_cannot_be_demoted_or_deleted() {
    let w = world().await;
    let r = w
        .put(
            "/user/permission",
            &w.admin_token,
            json!({"userId": w.admin.id, "permission": "nanoUser"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("last nanoAdmin"));
    let r =
        w.sc.send(
            "DELETE",
            &format!("/user/{}", w.admin.id),
            &[("x-bintu-apikey", &w.org.api_key)],
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        w.sc.state
            .store
            .user(&w.admin.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        "nanoAdmin"
    );
    // The refused demotion did not renew the admin's key either.
    assert_eq!(
        w.sc.send("GET", "/stream", &[tok(&w.admin_token)], None)
            .await
            .status,
        200
    );
}
}

crate::on_both_stores! {
async fn an_admin_cannot_touch_a_user_of_another_organisation() {
    let w = world().await;
    let other = w.sc.org("globex").await;
    let victim = w.sc.user(&other, "v@globex.test", "nanoUser").await;
    for (path, body) in [
        (
            "/user/permission",
            json!({"userId": victim.id, "permission": "nanoAdmin"}),
        ),
        ("/user/tokenkey", json!({"userId": victim.id})),
    ] {
        assert_eq!(
            w.put(path, &w.admin_token, body).await.status,
            403,
            "{path}"
        );
    }
    let r =
        w.sc.send(
            "POST",
            "/bintu/token",
            &[tok(&w.admin_token)],
            Some(&json!({"userId": victim.id}).to_string()),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        w.sc.state.store.user(&victim.id).await.unwrap().unwrap(),
        victim
    );
}
}

crate::on_both_stores! {
async fn every_admin_change_is_audited() {
    let w = world().await;
    let u = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    w.put(
        "/user/permission",
        &w.admin_token,
        json!({"userId": u.id, "permission": "nanoReadOnly"}),
    )
    .await;
    w.put("/user/tokenkey", &w.admin_token, json!({"userId": u.id}))
        .await;
    w.put(
        "/organisation/webhook",
        &w.admin_token,
        json!({"webhook": "https://hooks.acme.test/ingest"}),
    )
    .await;
    w.put("/organisation/playerkey", &w.admin_token, json!({}))
        .await;
    w.sc.send(
        "DELETE",
        &format!("/user/{}", u.id),
        &[tok(&w.admin_token)],
        None,
    )
    .await;
    let r =
        w.sc.send(
            "GET",
            &format!("/audit?user={}", u.id),
            &[tok(&w.admin_token)],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let actions: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["deleteUser", "resetUserToken", "editUserRole"]);
    let all =
        w.sc.send("GET", "/audit", &[tok(&w.admin_token)], None)
            .await;
    let body = all.body.clone();
    assert_eq!(all.json()["data"].as_array().unwrap().len(), 5);
    for rec in all.json()["data"].as_array().unwrap() {
        assert_eq!(rec["actor"], format!("user:{}", w.admin.id));
        assert_eq!(rec["outcome"], "ok");
        assert!(!rec["request_id"].as_str().unwrap().is_empty());
    }
    assert!(!body.contains(&w.admin_token) && !body.contains("pk_") && !body.contains("ak_"));
    let org =
        w.sc.send("GET", "/organisation", &[tok(&w.admin_token)], None)
            .await;
    assert_eq!(
        org.json()["data"]["webhook"],
        "https://hooks.acme.test/ingest"
    );
    // nanoUser may not set the webhook nor read the audit log.
    let op = w.sc.user(&w.org, "op2@acme.test", "nanoUser").await;
    let t = w.token_for(&op.id).await;
    assert_eq!(
        w.put("/organisation/webhook", &t, json!({"webhook": null}))
            .await
            .status,
        403
    );
    assert_eq!(
        w.sc.send("GET", "/audit", &[tok(&t)], None).await.status,
        403
    );
}
}

crate::on_both_stores! {
async fn a_malformed_webhook_is_refused_and_the_stored_one_kept() {
    let w = world().await;
    let good = "https://[2001:db8::1]:8443/hook";
    assert_eq!(
        w.put("/organisation/webhook", &w.admin_token, json!({"webhook": good}))
            .await
            .status,
        200
    );
    for bad in ["http://[", "http://[::1]x/", "http://a b/", "https://u:p@h.example/", "http://"] {
        let r = w
            .put("/organisation/webhook", &w.admin_token, json!({"webhook": bad}))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["userinfo"]["reason"], "invalid_webhook", "{}", r.body);
    }
    let org =
        w.sc.send("GET", "/organisation", &[tok(&w.admin_token)], None)
            .await;
    assert_eq!(org.json()["data"]["webhook"], good);
}
}

crate::on_both_stores! {
async fn the_permission_overview_equals_what_the_policies_enforce() {
    let w = world().await;
    let src = std::fs::read_to_string(crate::support::repo().join("policies/routes.toml")).unwrap();
    let table = RouteTable::parse("routes.toml", &src).unwrap();
    let list =
        w.sc.send("GET", "/permission/list", &[tok(&w.admin_token)], None)
            .await;
    assert_eq!(list.status, 200);
    for role in ["nanoAdmin", "nanoUser", "nanoReadOnly"] {
        let one =
            w.sc.send(
                "GET",
                &format!("/permission?name={role}"),
                &[tok(&w.admin_token)],
                None,
            )
            .await;
        let perms: Vec<String> = one.json()["data"]["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        let entry = list.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == role)
            .unwrap()
            .clone();
        assert_eq!(entry["permissions"], one.json()["data"]["permissions"]);
        let u =
            w.sc.user(&w.org, &format!("probe-{role}@acme.test"), role)
                .await;
        let t = w.token_for(&u.id).await;
        for route in table
            .routes()
            .iter()
            .filter(|r| r.is_upstream() && r.resource_id != ResourceId::Target)
        {
            let path = route.template.replace("{id}", "s1");
            let r =
                w.sc.send(&route.method, &path, &[tok(&t)], Some("{}"))
                    .await;
            let listed = perms.contains(&route.action);
            assert_eq!(
                r.status != 403,
                listed,
                "{role} {} {path}: {} but overview says {listed}",
                route.method,
                r.status
            );
        }
    }
}
}

crate::on_both_stores! {
async fn invite_round_trip_then_login() {
    let w = world().await;
    let r =
        w.sc.send(
            "POST",
            "/user/invite",
            &[tok(&w.admin_token)],
            Some(&json!({"role": "nanoUser"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let accept =
        json!({"token": token, "email": "new@acme.test", "password": "correct horse battery"})
            .to_string();
    let r =
        w.sc.send("POST", "/user/invite/accept", &[], Some(&accept))
            .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["data"]["id"].as_str().unwrap().to_owned();
    let u = w.sc.state.store.user(&id).await.unwrap().unwrap();
    assert_eq!(
        (u.role.as_str(), u.org_id.as_str()),
        ("nanoUser", w.org.org.id.as_str())
    );
    assert!(!u.password_hash.as_deref().unwrap().contains("horse"));
    // Reuse is refused and creates nothing.
    let again =
        json!({"token": token, "email": "second@acme.test", "password": "correct horse battery"})
            .to_string();
    let r =
        w.sc.send("POST", "/user/invite/accept", &[], Some(&again))
            .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "invite_refused");
    assert!(w
        .sc
        .state
        .store
        .user_by_email("second@acme.test")
        .await
        .unwrap()
        .is_none());
    let bad = json!({"token": "inv_bogus", "email": "third@acme.test", "password": "correct horse battery"}).to_string();
    assert_eq!(
        w.sc.send("POST", "/user/invite/accept", &[], Some(&bad))
            .await
            .status,
        400
    );
    // The invitee logs in and works with the invited role.
    let login = json!({"email": "new@acme.test", "password": "correct horse battery"}).to_string();
    let r = w.sc.send("POST", "/user/validate", &[], Some(&login)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["data"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.sc.send("POST", "/stream", &[tok(&t)], Some("{}"))
            .await
            .status,
        200
    );
    assert_eq!(
        w.sc.send("DELETE", "/stream/s1", &[tok(&t)], None)
            .await
            .status,
        403
    );
    // Only nanoAdmin invites.
    let r =
        w.sc.send(
            "POST",
            "/user/invite",
            &[tok(&t)],
            Some(&json!({"role": "nanoAdmin"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 403);
}
}

crate::on_both_stores! {
async fn an_expired_invite_is_refused() {
    let echo = Echo::start().await;
    let sc = Sidecar::with(crate::support::Options {
        upstream: Some(echo.url()),
        config: "invite_ttl_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let t = sc.token(&admin.id).await;
    let r = sc
        .send(
            "POST",
            "/user/invite",
            &[tok(&t)],
            Some(&json!({"role": "nanoReadOnly"}).to_string()),
        )
        .await;
    let token = r.json()["data"]["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let accept =
        json!({"token": token, "email": "late@acme.test", "password": "correct horse battery"})
            .to_string();
    let r = sc
        .send("POST", "/user/invite/accept", &[], Some(&accept))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert!(sc
        .state
        .store
        .user_by_email("late@acme.test")
        .await
        .unwrap()
        .is_none());
}
}

crate::on_both_stores! {
async fn failed_logins_are_throttled() {
    let w = world().await;
    let hash = {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        argon2::Argon2::default()
            .hash_password(b"right password!", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    };
    w.sc.state
        .store
        .set_password(&w.admin.id, &hash)
        .await
        .unwrap();
    let wrong = json!({"email": "admin@acme.test", "password": "wrong"}).to_string();
    for _ in 0..5 {
        let r = w.sc.send("POST", "/user/validate", &[], Some(&wrong)).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.reason(), "bad_credentials");
    }
    let right = json!({"email": "admin@acme.test", "password": "right password!"}).to_string();
    assert_eq!(
        w.sc.send("POST", "/user/validate", &[], Some(&right))
            .await
            .status,
        429
    );
    let unknown = json!({"email": "nobody@acme.test", "password": "x"}).to_string();
    assert_eq!(
        w.sc.send("POST", "/user/validate", &[], Some(&unknown))
            .await
            .status,
        401
    );
}
}
