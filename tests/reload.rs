//! Policies change while rolegate runs: hot reload (a broken set keeps the
//! live one, a good one changes the next decision, no request sees a mix),
//! custom roles added at runtime, and shadow policies.

use std::path::Path;
use std::time::Duration;

use crate::support::{copy_dir, metric, ops_post, repo, send, tok, Echo, Options, Sidecar};

const GRANT_OBSERVER_CREATE: &str = r#"
@id("nanoReadOnly-createStream")
permit (
  principal in Role::"nanoReadOnly",
  action == Action::"createStream",
  resource
);
"#;

#[tokio::test]
async fn broken_reload_keeps_the_live_set_and_a_good_one_changes_the_next_decision() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let ro = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let op = sc.user(&org, "op@acme.test", "nanoUser").await;
    let (ro, op) = (sc.token(&ro.id).await, sc.token(&op.id).await);
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&ro)], None).await.status,
        403
    );
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&op)], None).await.status,
        200
    );

    // A syntax error in one file: refused, old set stays, counted, reported with file:line.
    let file = sc.policies_dir().join("nanoUser.cedar");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("resource\n);", "resource\n) when { };")).unwrap();
    let before = sc.state.policies.current().version;
    let r = ops_post(&sc, "/reload").await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(sc.state.policies.current().version, before);
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&op)], None).await.status,
        200
    );
    assert!(metric(&sc, "rolegate_policy_reload_failures_total").await >= 1.0);
    let status = sc.ops_get("/status").await.json();
    let last = status["policy"]["last_reload_error"].as_str().unwrap_or("");
    assert!(last.contains("nanoUser.cedar:9:"), "{status}");

    // Repair it and grant the observer createStream: the next request sees it.
    std::fs::write(&file, &good).unwrap();
    let ro_file = sc.policies_dir().join("nanoReadOnly.cedar");
    let mut grant = std::fs::read_to_string(&ro_file).unwrap();
    grant.push_str(GRANT_OBSERVER_CREATE);
    std::fs::write(&ro_file, grant).unwrap();
    let r = ops_post(&sc, "/reload").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&ro)], None).await.status,
        200
    );
    let status = sc.ops_get("/status").await.json();
    assert!(status["policy"]["last_reload_error"].is_null(), "{status}");
    assert!(metric(&sc, "rolegate_policy_reloads_total").await >= 1.0);
}

#[tokio::test]
async fn a_file_edit_is_picked_up_without_any_trigger() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let org = sc.org("acme").await;
    let ro = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let ro = sc.token(&ro.id).await;
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&ro)], None).await.status,
        403
    );
    let ro_file = sc.policies_dir().join("nanoReadOnly.cedar");
    let mut grant = std::fs::read_to_string(&ro_file).unwrap();
    grant.push_str(GRANT_OBSERVER_CREATE);
    std::fs::write(&ro_file, grant).unwrap();
    // The watcher (or, at worst, the 1 s digest poll) reloads on its own.
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = sc
            .send("POST", "/stream", &[tok(&ro)], None)
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200);
}

/// Two complete, valid sets whose decisions agree, but a mix of them would
/// not: set B adds a permit for observers to create streams in one file and a
/// forbid of the same in another. A or B: deny. Half of each: allow.
fn write_set(dir: &Path, b: bool) {
    copy_dir(&repo().join("policies"), dir);
    if b {
        let mut ro = std::fs::read_to_string(dir.join("nanoReadOnly.cedar")).unwrap();
        ro.push_str(GRANT_OBSERVER_CREATE);
        std::fs::write(dir.join("nanoReadOnly.cedar"), ro).unwrap();
        let mut t = std::fs::read_to_string(dir.join("tenant.cedar")).unwrap();
        t.push_str(
            "\n@id(\"no-observer-create\")\nforbid (\n  principal in Role::\"nanoReadOnly\",\n  action == Action::\"createStream\",\n  resource\n);\n",
        );
        std::fs::write(dir.join("tenant.cedar"), t).unwrap();
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_reloads_never_see_a_mixed_set() {
    // The policies directory is a symlink swapped atomically between two
    // complete sets, as a ConfigMap update does.
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let (a, b) = (dir.path().join("set-a"), dir.path().join("set-b"));
    write_set(&a, false);
    write_set(&b, true);
    copy_dir(&repo().join("schema"), &dir.path().join("schema"));
    // The detector works: each set denies, a mix of the two allows.
    let mixed = dir.path().join("mixed");
    write_set(&mixed, false);
    std::fs::copy(
        b.join("nanoReadOnly.cedar"),
        mixed.join("nanoReadOnly.cedar"),
    )
    .unwrap();
    let schema = dir.path().join("schema");
    for (set, allowed) in [(&a, false), (&b, false), (&mixed, true)] {
        let snap = rolegate::authz::loader::load(
            &rolegate::authz::PolicySource {
                policies_dir: set.clone(),
                schema_dir: schema.clone(),
            },
            1,
        )
        .unwrap();
        let probe = rolegate::policy_tools::testing::Probe {
            caller: rolegate::policy_tools::testing::CallerSpec::Role("nanoReadOnly".into()),
            method: "POST".into(),
            target: "/stream".into(),
            other_org: false,
        };
        let ex = rolegate::policy_tools::testing::evaluate(&snap, &probe).unwrap();
        assert_eq!(ex.allowed(), allowed, "{}", set.display());
    }
    let link = dir.path().join("policies");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let echo = Echo::start().await;
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let ro = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let ro = sc.token(&ro.id).await;

    let base = sc.base.clone();
    let hammer = tokio::spawn(async move {
        let mut codes = Vec::new();
        for _ in 0..200 {
            let r = send(&base, "POST", "/stream", &[("x-bintu-token", &ro)], None).await;
            codes.push(r.status.as_u16());
            let r = send(&base, "GET", "/stream", &[("x-bintu-token", &ro)], None).await;
            codes.push(r.status.as_u16() + 1000);
        }
        codes
    });
    let v0 = sc.state.policies.current().version;
    for i in 0..20 {
        let target = if i % 2 == 0 { &b } else { &a };
        let tmp = dir.path().join("policies.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        let r = ops_post(&sc, "/reload").await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let codes = hammer.await.unwrap();
    assert!(sc.state.policies.current().version >= v0 + 20);
    assert!(
        codes.iter().all(|&c| c == 403 || c == 1200),
        "a request saw a mixed set or failed: {codes:?}"
    );
}

#[tokio::test]
async fn a_custom_role_added_at_runtime_is_listed_and_enforced() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    std::fs::write(
        sc.policies_dir().join("nanoOps.cedar"),
        "// nanoOps: reads everything and stops streams, nothing else.\n@id(\"nanoOps\")\npermit (\n  principal in Role::\"nanoOps\",\n  action in [Action::\"read\", Action::\"stopStream\"],\n  resource\n);\n",
    )
    .unwrap();
    let roles = sc.policies_dir().join("roles.toml");
    let mut text = std::fs::read_to_string(&roles).unwrap();
    text.push_str("\n[roles.nanoOps]\ntitle = \"Operations\"\ndescription = \"Reads and stops streams.\"\naudiences = [\"bintu\"]\n");
    std::fs::write(&roles, text).unwrap();
    let r = ops_post(&sc, "/reload").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = sc.ops_get("/status").await.json();
    let listed = status["policy"]["roles"].as_array().unwrap();
    assert!(listed.iter().any(|r| r == "nanoOps"), "{status}");
    assert!(sc.state.policies.current().has_role("nanoOps"));

    let org = sc.org("acme").await;
    let u = sc.user(&org, "ops@acme.test", "nanoOps").await;
    let t = sc.token(&u.id).await;
    assert_eq!(
        sc.send("POST", "/stream/s1/stop", &[tok(&t)], None)
            .await
            .status,
        200
    );
    assert_eq!(
        sc.send("GET", "/stream/s1", &[tok(&t)], None).await.status,
        200
    );
    assert_eq!(
        sc.send("POST", "/stream", &[tok(&t)], None).await.status,
        403
    );
    assert_eq!(
        sc.send("DELETE", "/stream/s1", &[tok(&t)], None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn shadow_disagreements_are_counted_while_the_live_set_decides() {
    let echo = Echo::start().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let shadow = dir.path().join("shadow");
    copy_dir(&repo().join("policies"), &shadow);
    let mut ro = std::fs::read_to_string(shadow.join("nanoReadOnly.cedar")).unwrap();
    ro.push_str(GRANT_OBSERVER_CREATE);
    std::fs::write(shadow.join("nanoReadOnly.cedar"), ro).unwrap();
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(dir),
        config: "shadow_policies_dir = \"shadow\"\n".to_owned(),
        ..Default::default()
    })
    .await;
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    assert_eq!(
        metric(&sc, "rolegate_shadow_disagreements_total").await,
        0.0
    );
    // Agreement: both sets allow a read.
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        200
    );
    assert_eq!(
        metric(&sc, "rolegate_shadow_disagreements_total").await,
        0.0
    );
    // Disagreement: the shadow set would allow; the live deny is what counts.
    for _ in 0..3 {
        assert_eq!(
            sc.send("POST", "/stream", &[tok(&t)], None).await.status,
            403
        );
    }
    assert_eq!(
        metric(&sc, "rolegate_shadow_disagreements_total").await,
        3.0
    );
    assert_eq!(echo.count(), 1);
}

#[tokio::test]
async fn a_refused_shadow_reload_is_counted_and_the_previous_shadow_set_stays() {
    let echo = Echo::start().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let shadow = dir.path().join("shadow");
    copy_dir(&repo().join("policies"), &shadow);
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(dir),
        config: "shadow_policies_dir = \"shadow\"\n".to_owned(),
        ..Default::default()
    })
    .await;
    let name = "rolegate_shadow_reload_failures_total";
    assert!(
        sc.ops_get("/metrics").await.body.contains(name),
        "the counter is exported from the start"
    );
    assert_eq!(metric(&sc, name).await, 0.0);
    let shadow_version = sc.state.shadow.as_ref().unwrap().current().version;

    // A good reload of both sets counts nothing.
    assert_eq!(ops_post(&sc, "/reload").await.status, 200);
    assert_eq!(metric(&sc, name).await, 0.0);
    let shadow_version_after_good = sc.state.shadow.as_ref().unwrap().current().version;
    assert!(shadow_version_after_good > shadow_version);

    // A syntax error in the shadow set only: the live reload goes through, the
    // shadow one is refused and counted, and the previous shadow set stays.
    std::fs::write(shadow.join("nanoUser.cedar"), "permit (principal,").unwrap();
    let live_before = metric(&sc, "rolegate_policy_reloads_total").await;
    assert_eq!(ops_post(&sc, "/reload").await.status, 200);
    assert_eq!(metric(&sc, name).await, 1.0);
    assert_eq!(
        metric(&sc, "rolegate_policy_reloads_total").await,
        live_before + 1.0
    );
    assert_eq!(
        metric(&sc, "rolegate_policy_reload_failures_total").await,
        0.0
    );
    assert_eq!(
        sc.state.shadow.as_ref().unwrap().current().version,
        shadow_version_after_good
    );
    assert_eq!(ops_post(&sc, "/reload").await.status, 200);
    assert_eq!(metric(&sc, name).await, 2.0);

    // The shadow set still decides (as the live one): no disagreement.
    let org = sc.org("acme").await;
    let u = sc.user(&org, "ro@acme.test", "nanoReadOnly").await;
    let t = sc.token(&u.id).await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&t)], None).await.status,
        200
    );
    assert_eq!(
        metric(&sc, "rolegate_shadow_disagreements_total").await,
        0.0
    );
}
