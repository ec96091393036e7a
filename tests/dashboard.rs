//! The dashboard's server side: its pages are public files served under the
//! prefix with the security headers on every answer and never forwarded; the
//! password-reset links and the policy playground it uses.

use rolegate::store::NewPasswordReset;
use serde_json::json;

use crate::support::{tok, Echo, Options, Sidecar};

const ASSETS: &[&str] = &[
    "index.html",
    "style.css",
    "js/app.js",
    "js/api.js",
    "js/dom.js",
    "js/dialog.js",
    "js/views/login.js",
    "js/views/overview.js",
    "js/views/users.js",
    "js/views/user.js",
    "js/views/invite.js",
    "js/views/accept.js",
    "js/views/reset.js",
    "js/views/audit.js",
    "js/views/playground.js",
];

fn assert_secure(r: &crate::support::Reply, what: &str) {
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, rolegate::dashboard::CSP, "{what}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{what}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{what}");
    assert!(csp.contains("default-src 'self'"), "{what}");
    assert_eq!(r.headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(r.headers["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test]
async fn every_dashboard_answer_carries_the_csp_and_nothing_under_the_prefix_is_forwarded() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let r = sc.send("GET", "/_rolegate/dashboard", &[], None).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "/_rolegate/dashboard/index.html");
    assert_secure(&r, "redirect");
    let r = sc.send("GET", "/_rolegate/dashboard/", &[], None).await;
    assert_eq!(r.status, 302);
    for asset in ASSETS {
        let r = sc
            .send("GET", &format!("/_rolegate/dashboard/{asset}"), &[], None)
            .await;
        assert_eq!(r.status, 200, "{asset}");
        assert_secure(&r, asset);
        assert!(!r.body.is_empty());
        if asset.ends_with(".js") {
            // No HTML parsing of data anywhere in the page's code.
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!r.body.contains(sink), "{asset} uses {sink}");
            }
        }
    }
    let index = sc
        .send("GET", "/_rolegate/dashboard/index.html", &[], None)
        .await;
    assert!(index
        .body
        .contains("<script type=\"module\" src=\"js/app.js\"></script>"));
    assert_eq!(index.body.matches("<script").count(), 1, "no inline script");
    assert!(!index.body.contains("style="), "no inline style");
    // Unknown files, other methods, encoded tricks: answered here, not upstream.
    for (method, path, status) in [
        ("GET", "/_rolegate/dashboard/nope.js", 404),
        ("POST", "/_rolegate/dashboard/index.html", 405),
        ("DELETE", "/_rolegate/dashboard/index.html", 405),
    ] {
        let r = sc.send(method, path, &[], None).await;
        assert_eq!(r.status, status, "{method} {path}");
        assert_secure(&r, path);
    }
    assert_eq!(
        echo.count(),
        0,
        "nothing under the prefix reached the upstream"
    );
    // Leaving the prefix by dot segments lands on the ordinary, decided path.
    for path in [
        "/_rolegate/dashboard/../../stream",
        "/_rolegate/dashboard/js/../../../stream",
    ] {
        let r = sc.send("GET", path, &[], None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.headers.get("content-security-policy").is_none());
    }
    assert_eq!(echo.count(), 0);
    // The dashboard sees to its own files only: no credential is read there,
    // and an upstream path next to the prefix is still decided.
    let r = sc.send("GET", "/_rolegate/dashboardx", &[], None).await;
    assert_eq!(r.status, 403, "no route: denied, {}", r.body);
}

#[tokio::test]
async fn the_dashboard_can_be_switched_off_and_moved() {
    let echo = Echo::start().await;
    let off = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "dashboard_prefix = \"\"\n".into(),
        ..Default::default()
    })
    .await;
    let r = off
        .send("GET", "/_rolegate/dashboard/index.html", &[], None)
        .await;
    assert_eq!(r.status, 403, "an ordinary request: no route, denied");
    assert!(r.headers.get("content-security-policy").is_none());
    let moved = Sidecar::with(Options {
        upstream: Some(echo.url()),
        config: "dashboard_prefix = \"/console/\"\n".into(),
        ..Default::default()
    })
    .await;
    let r = moved.send("GET", "/console/index.html", &[], None).await;
    assert_eq!(r.status, 200);
    assert_secure(&r, "moved");
    assert_eq!(echo.count(), 0);
}

#[test]
fn a_bad_or_overlapping_prefix_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master.secret"),
        crate::support::MASTER_SECRET,
    )
    .unwrap();
    let repo = crate::support::repo();
    let base = format!(
        "master_secret_file = \"master.secret\"\npolicies_dir = \"{}\"\nschema_dir = \"{}\"\nstore = \"{}\"\n",
        repo.join("policies").display(),
        repo.join("schema").display(),
        dir.path().join("rolegate.db").display()
    );
    let config = dir.path().join("rolegate.toml");
    let resolve = |text: String| {
        std::fs::write(&config, text).unwrap();
        let overrides = rolegate::config::Overrides {
            config: Some(config.clone()),
            ..Default::default()
        };
        let env: std::collections::HashMap<String, String> = Default::default();
        rolegate::config::Settings::resolve(&overrides, &env, false)
    };
    let ok = resolve(base.clone()).unwrap();
    assert_eq!(ok.dashboard_prefix.as_deref(), Some("/_rolegate/dashboard"));
    for (value, extra) in [
        ("stream", ""),
        ("/a b", ""),
        ("/x/../y", ""),
        ("/playback/ui", "playback_prefix = \"/playback\"\n"),
    ] {
        let e = resolve(format!("{base}dashboard_prefix = \"{value}\"\n{extra}")).unwrap_err();
        assert!(e.to_string().contains("dashboard_prefix"), "{value}: {e}");
    }
}

struct World {
    sc: Sidecar,
    org: rolegate::store::CreatedOrg,
    admin_token: String,
    _echo: Echo,
}

async fn world() -> World {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let admin = sc.user(&org, "admin@acme.test", "nanoAdmin").await;
    let admin_token = sc.token(&admin.id).await;
    World {
        sc,
        org,
        admin_token,
        _echo: echo,
    }
}

crate::on_both_stores! {
async fn a_password_reset_link_sets_a_new_password_once_and_kills_every_api_token() {
    let w = world().await;
    let user = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let old = w.sc.token(&user.id).await;
    let body = json!({"userId": user.id}).to_string();
    // Only a role the policies let create resets may.
    let r = w.sc.send("POST", "/user/password/reset", &[tok(&old)], Some(&body)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = w.sc.send("POST", "/user/password/reset", &[tok(&w.admin_token)], Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["data"]["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pwr_"));
    // Creating the link changes nothing yet.
    assert_eq!(w.sc.send("GET", "/stream", &[tok(&old)], None).await.status, 200);

    let short = json!({"token": token, "password": "short"}).to_string();
    let r = w.sc.send("POST", "/user/password", &[], Some(&short)).await;
    assert_eq!(r.reason(), "weak_password");
    let set = json!({"token": token, "password": "a new password!"}).to_string();
    let r = w.sc.send("POST", "/user/password", &[], Some(&set)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["email"], "op@acme.test");
    // Every earlier API token is dead; the new password signs in.
    assert_eq!(w.sc.send("GET", "/stream", &[tok(&old)], None).await.status, 401);
    let login = json!({"email": "op@acme.test", "password": "a new password!"}).to_string();
    let r = w.sc.send("POST", "/user/validate", &[], Some(&login)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = w.sc.state.store.user(&user.id).await.unwrap().unwrap();
    assert_ne!(stored.token_key, user.token_key);
    // Single use.
    let again = json!({"token": token, "password": "another password!"}).to_string();
    let r = w.sc.send("POST", "/user/password", &[], Some(&again)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "reset_refused");
    let r = w.sc.send("POST", "/user/validate", &[], Some(&login)).await;
    assert_eq!(r.status, 200, "the refused reuse changed nothing");
    // Unknown and expired links are refused and change nothing.
    let r = w.sc.send("POST", "/user/password", &[], Some(&json!({"token": "pwr_bogus", "password": "whatever12345"}).to_string())).await;
    assert_eq!(r.reason(), "reset_refused");
    w.sc.state.store.create_password_reset(NewPasswordReset {
        org_id: w.org.org.id.clone(),
        user_id: user.id.clone(),
        token_hash: rolegate::store::key_hash("pwr_expired"),
        created_by: "test".into(),
        expires_at: 1,
    }).await.unwrap();
    let r = w.sc.send("POST", "/user/password", &[], Some(&json!({"token": "pwr_expired", "password": "whatever12345"}).to_string())).await;
    assert_eq!(r.reason(), "reset_refused");
    assert!(r.body.contains("expired"), "{}", r.body);
    let r = w.sc.send("POST", "/user/validate", &[], Some(&login)).await;
    assert_eq!(r.status, 200);
    // Both steps are audited; the link's token is in no record.
    let r = w.sc.send("GET", &format!("/audit?user={}", user.id), &[tok(&w.admin_token)], None).await;
    let actions: Vec<String> = r.json()["data"].as_array().unwrap().iter()
        .map(|a| a["action"].as_str().unwrap().to_owned()).collect();
    assert!(actions.contains(&"createPasswordReset".to_owned()), "{actions:?}");
    assert!(actions.contains(&"resetPassword".to_owned()), "{actions:?}");
    assert!(!r.body.contains(&token));
}
}

crate::on_both_stores! {
async fn a_reset_link_of_a_deleted_user_is_refused() {
    let w = world().await;
    let user = w.sc.user(&w.org, "gone@acme.test", "nanoReadOnly").await;
    let body = json!({"userId": user.id}).to_string();
    let r = w.sc.send("POST", "/user/password/reset", &[tok(&w.admin_token)], Some(&body)).await;
    let token = r.json()["data"]["token"].as_str().unwrap().to_owned();
    let r = w.sc.send("DELETE", &format!("/user/{}", user.id), &[tok(&w.admin_token)], None).await;
    assert_eq!(r.status, 200);
    let set = json!({"token": token, "password": "a new password!"}).to_string();
    let r = w.sc.send("POST", "/user/password", &[], Some(&set)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "reset_refused");
}
}

#[tokio::test]
async fn the_playground_answers_as_rolegate_explain_for_admins_only() {
    let w = world().await;
    let other_org = w.sc.org("other").await;
    let stranger = w.sc.user(&other_org, "x@other.test", "nanoAdmin").await;
    let op = w.sc.user(&w.org, "op@acme.test", "nanoUser").await;
    let op_token = w.sc.token(&op.id).await;
    let ask = |q: serde_json::Value| q.to_string();
    let r =
        w.sc.send(
            "POST",
            "/policy/explain",
            &[tok(&w.admin_token)],
            Some(&ask(
                json!({"role": "nanoReadOnly", "method": "delete", "path": "/stream/s1"}),
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &r.json()["data"];
    assert_eq!(d["allowed"], false);
    assert_eq!(d["action"], "deleteStream");
    // The same answer as the offline tool's decision function.
    let snapshot = w.sc.state.policies.current();
    let ex = rolegate::policy_tools::testing::evaluate(
        &snapshot,
        &rolegate::policy_tools::testing::Probe {
            caller: rolegate::policy_tools::testing::CallerSpec::Role("nanoReadOnly".into()),
            method: "DELETE".into(),
            target: "/stream/s1".into(),
            other_org: false,
        },
    )
    .unwrap();
    assert_eq!(d["allowed"], ex.allowed());
    assert_eq!(d["policies"], json!(ex.outcome.policies));
    // A user is asked about at their current role.
    let r =
        w.sc.send(
            "POST",
            "/policy/explain",
            &[tok(&w.admin_token)],
            Some(&ask(
                json!({"userId": op.id, "method": "POST", "path": "/stream"}),
            )),
        )
        .await;
    let d = &r.json()["data"];
    assert_eq!(d["allowed"], true);
    assert_eq!(d["role"], "nanoUser");
    assert_eq!(d["policies"], json!(["nanoUser"]));
    // Another organisation's user is not there to ask about.
    let r =
        w.sc.send(
            "POST",
            "/policy/explain",
            &[tok(&w.admin_token)],
            Some(&ask(
                json!({"userId": stranger.id, "method": "GET", "path": "/stream"}),
            )),
        )
        .await;
    assert_eq!(r.status, 404);
    // No route: a deny that says so.
    let r =
        w.sc.send(
            "POST",
            "/policy/explain",
            &[tok(&w.admin_token)],
            Some(&ask(
                json!({"role": "nanoAdmin", "method": "GET", "path": "/nowhere"}),
            )),
        )
        .await;
    assert_eq!(r.json()["data"]["allowed"], false);
    assert!(r.json()["data"]["route"].is_null());
    // Admin only.
    let r =
        w.sc.send(
            "POST",
            "/policy/explain",
            &[tok(&op_token)],
            Some(&ask(
                json!({"role": "nanoAdmin", "method": "GET", "path": "/stream"}),
            )),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_route_under_the_dashboard_prefix_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    crate::support::copy_dir(&crate::support::repo().join("policies"), &policies);
    crate::support::copy_dir(
        &crate::support::repo().join("schema"),
        &dir.path().join("schema"),
    );
    let mut routes = std::fs::read_to_string(policies.join("routes.toml")).unwrap();
    routes.push_str(
        "\n[[route]]\nmethod = \"GET\"\npath = \"/_rolegate/dashboard/streams\"\naction = \"listStreams\"\nresource = \"OrgResource::streams\"\nhandler = \"upstream\"\n",
    );
    std::fs::write(policies.join("routes.toml"), routes).unwrap();
    std::fs::write(
        dir.path().join("master.secret"),
        crate::support::MASTER_SECRET,
    )
    .unwrap();
    let config = dir.path().join("rolegate.toml");
    std::fs::write(
        &config,
        format!(
            "master_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\nstore = \"{}\"\n",
            dir.path().join("rolegate.db").display()
        ),
    )
    .unwrap();
    let overrides = rolegate::config::Overrides {
        config: Some(config),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = rolegate::config::Settings::resolve(&overrides, &env, false).unwrap();
    let e = match rolegate::app::build(settings).await {
        Ok(_) => panic!("a hidden route must stop start-up"),
        Err(e) => e,
    };
    assert!(
        e.to_string()
            .contains("hides the route `GET /_rolegate/dashboard/streams`"),
        "{e}"
    );
    // The forward-auth path cannot be hidden either.
    crate::support::copy_dir(&crate::support::repo().join("policies"), &policies);
    let text = std::fs::read_to_string(overrides.config.as_ref().unwrap()).unwrap();
    std::fs::write(
        overrides.config.as_ref().unwrap(),
        format!("{text}dashboard_prefix = \"/_rolegate\"\n"),
    )
    .unwrap();
    let settings = rolegate::config::Settings::resolve(&overrides, &env, false).unwrap();
    let e = match rolegate::app::build(settings).await {
        Ok(_) => panic!("hiding forward-auth must stop start-up"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("/_rolegate/forward-auth"), "{e}");
}
