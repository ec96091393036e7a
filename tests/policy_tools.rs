//! The policy authors' toolchain (`check`, `fmt`, `test`, `explain` on the real
//! binary) and live operation: hot reload, custom roles, shadow mode,
//! readiness and the SIGTERM drain.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, copy_dir, free_port, repo, send, tok, Echo, Options, Sidecar};

fn rolegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(args)
        .current_dir(repo())
        .env("ROLEGATE_LOG_FORMAT", "text")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A scratch copy of the shipped policies and schema.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    let s = dir.path().join("schema");
    copy_dir(&repo().join("policies"), &p);
    copy_dir(&repo().join("schema"), &s);
    (dir, p, s)
}

// === check ===

#[test]
fn check_accepts_the_shipped_set() {
    let o = rolegate(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn check_names_file_and_line_of_each_broken_fixture() {
    let cases = [
        ("syntax", "nanoUser.cedar:9:"),
        ("type_error", "nanoReadOnly.cedar:9:"),
        ("unknown_action_route", "routes.toml:155:"),
        ("unknown_entity_type", "playerKey.cedar:6:"),
        ("unrouted_action", "rolegate.cedarschema:150:8:"),
    ];
    for (fixture, at) in cases {
        let base = format!("tests/fixtures/broken/{fixture}");
        let o = rolegate(&[
            "check",
            "--policies-dir",
            &format!("{base}/policies"),
            "--schema-dir",
            &format!("{base}/schema"),
        ]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{fixture}: {out}");
        assert!(out.contains(at), "{fixture}: expected `{at}` in: {out}");
    }
}

#[test]
fn an_action_no_route_reaches_is_reported_at_its_schema_declaration() {
    let base = "tests/fixtures/broken/unrouted_action";
    let o = rolegate(&[
        "check",
        "--policies-dir",
        &format!("{base}/policies"),
        "--schema-dir",
        &format!("{base}/schema"),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("action `archiveStream` is reachable by no route"))
        .unwrap_or_else(|| panic!("no unreachable-action error in: {out}"));
    assert!(
        line.contains("schema/rolegate.cedarschema:150:8: "),
        "expected the declaration's file:line:col: {line}"
    );
    assert!(!out.contains("routes.toml:1:1"), "{out}");
    assert!(out.contains("help: add a route for it"), "{out}");
}

// === fmt ===

#[test]
fn shipped_policies_are_formatted() {
    let changed = rolegate::policy_tools::fmt::unformatted(&repo().join("policies")).unwrap();
    let names: Vec<_> = changed
        .iter()
        .map(|c| c.path.display().to_string())
        .collect();
    assert!(names.is_empty(), "run `rolegate fmt`: {names:?}");
    let o = rolegate(&["fmt", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn fmt_check_names_unformatted_files_and_fmt_fixes_them() {
    let (_dir, p, s) = scratch();
    std::fs::write(
        p.join("nanoUser.cedar"),
        "@id(\"nanoUser\") permit(principal in Role::\"nanoUser\",action in [Action::\"read\",Action::\"operate\"],resource);",
    )
    .unwrap();
    let (p, s) = (p.to_str().unwrap(), s.to_str().unwrap());
    let o = rolegate(&["fmt", "--check", "--policies-dir", p, "--schema-dir", s]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nanoUser.cedar"), "{}", text(&o));
    assert!(!text(&o).contains("nanoAdmin.cedar"), "{}", text(&o));
    let o = rolegate(&["fmt", "--policies-dir", p, "--schema-dir", s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = rolegate(&["fmt", "--check", "--policies-dir", p, "--schema-dir", s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = rolegate(&["check", "--policies-dir", p, "--schema-dir", s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

// === test ===

#[test]
fn shipped_suite_passes_and_covers_every_route() {
    let o = rolegate(&["test"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("routes not exercised: none"), "{out}");
    // Including `playback`, decided on the guarded prefix by the viewer cases.
    assert!(out.contains("policies not exercised: none\n"), "{out}");
    assert!(out.contains("test result: ok."), "{out}");
}

#[test]
fn a_case_expecting_the_wrong_decision_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wrong.toml");
    std::fs::write(
        &f,
        r#"
[[case]]
name = "observer stops a stream (wrong on purpose)"
method = "POST"
path = "/stream/s1/stop"
role = "nanoReadOnly"
expect = "allow"

[[case]]
name = "observer reads a stream"
method = "GET"
path = "/stream/s1"
role = "nanoReadOnly"
expect = "allow"
policies = ["nanoReadOnly"]

[[case]]
name = "admin of another org, wrong policy id"
method = "GET"
path = "/stream/s1"
role = "nanoAdmin"
other_org = true
expect = "deny"
policies = ["nanoAdmin"]
"#,
    )
    .unwrap();
    let o = rolegate(&["test", f.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL") && out.contains("observer stops a stream"),
        "{out}"
    );
    assert!(out.contains("admin of another org"), "{out}");
    assert!(!out.contains("observer reads a stream"), "{out}");
    assert!(out.contains("1 passed; 2 failed"), "{out}");
}

#[test]
fn a_playback_case_expecting_the_wrong_decision_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("playback.toml");
    std::fs::write(
        &f,
        r#"
[[case]]
name = "viewer from an address the token does not allow (wrong on purpose)"
method = "GET"
path = "/playback/s1/index.m3u8"
expect = "allow"
[case.playback]
streams = ["s1"]
ip = ["10.0.0.0/8"]
client_ip = "192.0.2.7"

[[case]]
name = "viewer of a stream the token does not name (wrong on purpose)"
method = "GET"
path = "/playback/s2/index.m3u8"
expect = "allow"
[case.playback]
streams = ["s1"]

[[case]]
name = "viewer plays a named stream"
method = "GET"
path = "/playback/s1/index.m3u8"
expect = "allow"
policies = ["playback"]
[case.playback]
streams = ["s1"]
domain = "example.com"
referer = "https://www.example.com/page"

[[case]]
name = "viewer plays a named stream, expected deny (wrong on purpose)"
method = "GET"
path = "/playback/s1/index.m3u8"
expect = "deny"
[case.playback]
streams = ["s1"]

[[case]]
name = "a playback case cannot also name a role"
method = "GET"
path = "/playback/s1/index.m3u8"
role = "nanoAdmin"
expect = "allow"
[case.playback]
streams = ["s1"]
"#,
    )
    .unwrap();
    let o = rolegate(&["test", f.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("1 passed; 4 failed"), "{out}");
    for name in [
        "viewer from an address the token does not allow",
        "viewer of a stream the token does not name",
        "viewer plays a named stream, expected deny",
        "a playback case cannot also name a role",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains(name)),
            "{name}: {out}"
        );
    }
    assert!(
        out.contains("expected allow, got deny (playback prefix → play on Stream::\"s2\""),
        "{out}"
    );
    assert!(
        out.contains("expected deny, got allow (playback prefix → play on Stream::\"s1\"; policies [\"playback\"]"),
        "{out}"
    );
    // The one passing case covers `playback`; the route table is not exercised.
    assert!(out.contains("policies not exercised: nanoAdmin"), "{out}");
    assert!(!out.contains("policies not exercised: playback"), "{out}");
    assert!(!out.contains(", playback,"), "{out}");
}

// === explain ===

#[test]
fn explain_prints_route_action_resource_decision_and_policies() {
    let o = rolegate(&[
        "explain",
        "--role",
        "nanoUser",
        "--method",
        "POST",
        "--path",
        "/stream/abc/stop",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "POST /stream/{id}/stop",
        "Action::\"stopStream\"",
        "Stream::\"abc\"",
        "decision:  deny",
    ] {
        assert!(out.contains(want), "missing `{want}` in {out}");
    }
    let o = rolegate(&[
        "explain",
        "--credential",
        "apikey",
        "--method",
        "GET",
        "--path",
        "/tag",
        "--other-org",
    ]);
    let out = text(&o);
    assert!(out.contains("decision:  deny"), "{out}");
    assert!(out.contains("tenant-isolation"), "{out}");
    let o = rolegate(&[
        "explain",
        "--credential",
        "playerkey",
        "--method",
        "GET",
        "--path",
        "/stream?tags[]=x",
    ]);
    let out = text(&o);
    assert!(out.contains("decision:  allow"), "{out}");
    assert!(out.contains("playerKey-listStreams"), "{out}");
}

// === the store commands ===

/// A scratch set-up for the store commands: policies, schema, a master secret
/// and a config file naming them and a SQLite store.
fn store_scratch() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("policies"), &dir.path().join("policies"));
    copy_dir(&repo().join("schema"), &dir.path().join("schema"));
    std::fs::write(dir.path().join("master.secret"), support::MASTER_SECRET).unwrap();
    let cfg = dir.path().join("rolegate.toml");
    std::fs::write(
        &cfg,
        "store = \"rolegate.db\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    (dir, cfg)
}

/// Run a store command with `--config` after the subcommand's own options.
fn store_cli(cfg: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(args)
        .args(["--config", cfg])
        .env_remove("ROLEGATE_MASTER_SECRET")
        .output()
        .unwrap()
}

async fn token_key(dir: &Path, email: &str) -> Vec<u8> {
    let store = rolegate::store::open(dir.join("rolegate.db").to_str().unwrap())
        .await
        .unwrap();
    store.user_by_email(email).await.unwrap().unwrap().token_key
}

#[tokio::test]
async fn user_rotate_and_token_issue_name_the_user_by_email_or_id() {
    let (dir, cfg) = store_scratch();
    let email = "rotate@acme.test";
    let add = store_cli(
        &cfg,
        &[
            "user", "add", "--org", "acme", "--email", email, "--role", "nanoUser",
        ],
    );
    assert!(add.status.success(), "{}", text(&add));
    let id = String::from_utf8(add.stdout).unwrap().trim().to_owned();
    assert!(!id.is_empty() && !id.contains('@'), "{id}");

    // A token by email, by id, and by the `--email` alias: the same user.
    for args in [
        ["token", "issue", "--user", email],
        ["token", "issue", "--user", id.as_str()],
        ["token", "issue", "--email", email],
    ] {
        let o = store_cli(&cfg, &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
    }

    let before = token_key(dir.path(), email).await;
    let o = store_cli(&cfg, &["user", "rotate", "--user", email]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&id), "{}", text(&o));
    let after_email = token_key(dir.path(), email).await;
    assert_ne!(before, after_email, "rotating by email renews the tokenKey");

    let o = store_cli(&cfg, &["user", "rotate", "--user", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_ne!(after_email, token_key(dir.path(), email).await, "and by id");

    // An unknown user is one message and exit 1, for an email and an id.
    for who in ["nobody@acme.test", "no-such-id"] {
        let o = store_cli(&cfg, &["user", "rotate", "--user", who]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim(), format!("rolegate: no user `{who}`"), "{err}");
    }
}

#[test]
fn user_rotate_help_offers_only_its_own_options() {
    let o = rolegate(&["user", "rotate", "--help"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for own in [
        "--user <ID_OR_EMAIL>",
        "--store",
        "--master-secret-file",
        "--config",
    ] {
        assert!(out.contains(own), "missing {own}: {out}");
    }
    for other in [
        "--upstream",
        "--passthrough",
        "--worker-threads",
        "--listen",
    ] {
        assert!(!out.contains(other), "offers {other}: {out}");
    }
}

#[test]
fn a_bad_config_file_is_exit_64_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "no_such_setting = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    for args in [
        &["check", "--config", cfg][..],
        &["fmt", "--check", "--config", cfg][..],
        &["test", "--config", cfg][..],
        &["user", "list", "--org", "x", "--config", cfg][..],
        &["--config", cfg, "token", "issue", "--user", "x"][..],
        &["serve", "--config", cfg][..],
    ] {
        let o = rolegate(args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {out}");
        assert_eq!(
            out.matches("rolegate: config file").count(),
            1,
            "{args:?}: printed once: {out}"
        );
    }
}

// === live operation ===

async fn ops_post(sc: &Sidecar, path: &str) -> support::Reply {
    send(&sc.ops, "POST", path, &[], None).await
}

/// The value of a counter in `/metrics` (0 when absent).
async fn metric(sc: &Sidecar, name: &str) -> f64 {
    let m = sc.ops_get("/metrics").await.body;
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

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

#[tokio::test]
async fn ready_is_503_until_started_and_200_after() {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = (dir.path().join("policies"), dir.path().join("schema"));
    copy_dir(&repo().join("policies"), &p);
    copy_dir(&repo().join("schema"), &s);
    std::fs::write(dir.path().join("master.secret"), support::MASTER_SECRET).unwrap();
    let cfg = dir.path().join("rolegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\nstore = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\n",
            dir.path().join("rolegate.db").display()
        ),
    )
    .unwrap();
    let overrides = rolegate::config::Overrides {
        config: Some(cfg),
        ..Default::default()
    };
    let env: std::collections::HashMap<String, String> = Default::default();
    let settings = rolegate::config::Settings::resolve(&overrides, &env, false).unwrap();
    let state = rolegate::app::build(settings).await.unwrap();
    // The ops listener alone, before the sidecar is started.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(rolegate::app::serve_ops(state.clone(), listener, rx));
    let r = send(&ops, "GET", "/ready", &[], None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(send(&ops, "GET", "/live", &[], None).await.status, 200);
    let running = rolegate::app::start(state.clone()).await.unwrap();
    let r = send(&ops, "GET", "/ready", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        &format!("http://{}", running.ops_addr),
        "GET",
        "/ready",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    running.shutdown().await;
    assert!(!state.is_ready());
    let _ = tx.send(true);
    let _ = task.await;
}

/// An upstream that waits 2 s, then sends its body in chunks over another second.
async fn slow_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
                    .await;
                for i in 0..5 {
                    let chunk = format!("part-{i};");
                    let _ = s
                        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                        .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_slow_response_whole_and_exits_zero() {
    let upstream = slow_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("policies"), &dir.path().join("policies"));
    copy_dir(&repo().join("schema"), &dir.path().join("schema"));
    std::fs::write(dir.path().join("master.secret"), support::MASTER_SECRET).unwrap();
    let (data, ops) = (free_port(), free_port());
    let cfg = dir.path().join("rolegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{data}\"\nops_listen = \"127.0.0.1:{ops}\"\nupstream = \"{upstream}\"\nstore = \"{}\"\nmaster_secret_file = \"master.secret\"\npolicies_dir = \"policies\"\nschema_dir = \"schema\"\ndrain_seconds = 10\n",
            dir.path().join("rolegate.db").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let bin = env!("CARGO_BIN_EXE_rolegate");
    // An organisation to call as; its API key is printed once on stderr.
    let add = Command::new(bin)
        .args([
            "--config",
            &cfg,
            "user",
            "add",
            "--org",
            "acme",
            "--email",
            "a@acme.test",
            "--role",
            "nanoAdmin",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&add.stderr).into_owned();
    assert!(add.status.success(), "{err}");
    let key = err
        .lines()
        .find_map(|l| l.split("API key (shown once): ").nth(1))
        .unwrap()
        .trim()
        .to_owned();

    // One worker thread: the current-thread scheduler (cli/mod.rs), which the
    // in-process tests do not start through the binary.
    let mut child = Command::new(bin)
        .args(["--config", &cfg, "serve"])
        .env("ROLEGATE_LOG_FORMAT", "text")
        .env("ROLEGATE_WORKER_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ops_url = format!("http://127.0.0.1:{ops}");
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", ops))
            .await
            .is_ok()
            && send(&ops_url, "GET", "/ready", &[], None).await.status == 200
        {
            ready = true;
            break;
        }
    }
    assert!(ready, "rolegate did not become ready");

    let base = format!("http://127.0.0.1:{data}");
    let req = tokio::spawn(async move {
        send(
            &base,
            "GET",
            "/stream/s1",
            &[("x-bintu-apikey", &key)],
            None,
        )
        .await
    });
    // The request is now waiting on the upstream: stop the sidecar.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let r = req.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "part-0;part-1;part-2;part-3;part-4;");
    let mut code = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(0));
}
