//! The command line and start-up: the store commands (users named by id or
//! email), each subcommand's own options, exit codes, settings and policies
//! that stop start-up with a message naming the problem, the demo, and a
//! store that survives a restart.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{
    self, copy_dir, repo, rolegate, text, tok, Echo, Options, Sidecar, MASTER_SECRET,
};

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

#[tokio::test]
async fn a_policy_with_a_type_error_refuses_start_up_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        &crate::support::repo().join("policies"),
        &dir.path().join("policies"),
    );
    crate::support::copy_dir(
        &crate::support::repo().join("schema"),
        &dir.path().join("schema"),
    );
    std::fs::write(
        dir.path().join("policies/nanoUser.cedar"),
        "@id(\"nanoUser\")\npermit (principal in Role::\"nanoUser\", action, resource)\nwhen { principal.org == 3 };\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .arg("--policies-dir")
        .arg(dir.path().join("policies"))
        .arg("--schema-dir")
        .arg(dir.path().join("schema"))
        .arg("--store")
        .arg(dir.path().join("x.db"))
        .env("ROLEGATE_MASTER_SECRET", MASTER_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("nanoUser.cedar:3:"), "{stderr}");
}

#[tokio::test]
async fn bad_settings_stop_start_up_naming_the_setting() {
    let bin = env!("CARGO_BIN_EXE_rolegate");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["serve"],
            vec![("ROLEGATE_MASTER_SECRET", MASTER_SECRET)],
            "upstream",
        ),
        (
            vec!["serve", "--upstream", "ftp://x"],
            vec![("ROLEGATE_MASTER_SECRET", MASTER_SECRET)],
            "upstream",
        ),
        (
            vec!["serve", "--upstream", "http://127.0.0.1:9"],
            vec![],
            "master_secret",
        ),
        (
            vec!["serve", "--upstream", "http://127.0.0.1:9"],
            vec![("ROLEGATE_MASTER_SECRET", "short")],
            "master_secret",
        ),
        (
            vec![
                "serve",
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                "nowhere",
            ],
            vec![("ROLEGATE_MASTER_SECRET", MASTER_SECRET)],
            "listen",
        ),
        (
            vec!["serve", "--upstream", "http://127.0.0.1:9"],
            vec![
                ("ROLEGATE_MASTER_SECRET", MASTER_SECRET),
                ("ROLEGATE_EXT_AUTHZ_LISTEN", "envoy:9191"),
            ],
            "ext_authz_listen",
        ),
        (
            vec![
                "serve",
                "--upstream",
                "http://127.0.0.1:9",
                "--ext-authz-listen",
                "",
            ],
            vec![("ROLEGATE_MASTER_SECRET", MASTER_SECRET)],
            "ext_authz_listen",
        ),
    ];
    for (args, env, setting) in cases {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(&args)
            .current_dir(crate::support::repo())
            .env_remove("ROLEGATE_MASTER_SECRET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("setting `{setting}`")),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_demo_shows_allow_and_deny() {
    use std::io::{BufRead, BufReader};
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("demo.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args([
            "demo",
            "--exit-after",
            "20",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .current_dir(crate::support::repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.starts_with("Press Ctrl-C"))
            .collect()
    })
    .await
    .unwrap();
    let value = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)
                    .map(|v| v.trim().trim_matches('\'').to_owned())
            })
            .unwrap_or_else(|| panic!("no `{prefix}` in demo output: {lines:?}"))
    };
    let base = value("sidecar:");
    let observer = value("export OBSERVER=");
    let admin = value("export ADMIN=");
    let r = crate::support::send(&base, "GET", "/stream", &[tok(&observer)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        crate::support::send(&base, "DELETE", "/stream/stream-1", &[tok(&observer)], None).await;
    assert_eq!(r.status, 403);
    let r = crate::support::send(&base, "POST", "/stream", &[tok(&admin)], Some("{}")).await;
    assert_eq!(r.status, 201);
    // The dashboard's address is printed, and the printed password signs in.
    let dashboard = value("Dashboard (user management):");
    assert_eq!(dashboard, format!("{base}/_rolegate/dashboard/"));
    let r = crate::support::send(&base, "GET", "/_rolegate/dashboard/index.html", &[], None).await;
    assert_eq!(r.status, 200);
    let password = lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("sign in as any user below with the password ")
        })
        .unwrap_or_else(|| panic!("no password in demo output: {lines:?}"))
        .to_owned();
    let login =
        serde_json::json!({"email": "observer@demo.example", "password": password}).to_string();
    let r = crate::support::send(&base, "POST", "/user/validate", &[], Some(&login)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Ctrl-C / SIGTERM ends the demo cleanly.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the demo did not exit within 15 s of SIGTERM");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "demo exited with {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

crate::on_both_stores! {
async fn the_store_survives_a_restart_and_the_cli_bootstraps_users() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&echo).await;
    let config = sc.dir.path().join("rolegate.toml");
    let dir = sc.stop().await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("ROLEGATE_MASTER_SECRET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let id = cli(&[
        "user",
        "add",
        "--org",
        "acme",
        "--email",
        "cli@acme.test",
        "--role",
        "nanoUser",
    ]);
    assert!(cli(&["user", "list", "--org", "acme"]).contains(&id));
    let token = cli(&["token", "issue", "--user", &id]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .arg("--config")
        .arg(&config)
        .args([
            "user",
            "add",
            "--org",
            "acme",
            "--email",
            "x@acme.test",
            "--role",
            "nanoRoot",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid roles: nanoAdmin"));

    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&token)], None).await.status,
        200
    );
    let dir = sc.stop().await;
    cli(&["user", "rotate", "--user", &id]);
    let sc = Sidecar::with(Options {
        upstream: Some(echo.url()),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&token)], None).await.status,
        401
    );
    let fresh = sc.token(&id).await;
    assert_eq!(
        sc.send("GET", "/stream", &[tok(&fresh)], None).await.status,
        200
    );
}
}
