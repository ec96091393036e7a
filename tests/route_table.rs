//! A policy author's mistake in the route table must never forward a request
//! undecided: every combination that could is refused by `check`, at start-up
//! and on reload (the previous set stays live), at `routes.toml:line:col`; and
//! in the code, only an allow decision can produce the value forwarding needs.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{copy_dir, repo};

fn check(fixture: &str) -> (Option<i32>, String) {
    let base = repo().join("tests/fixtures/broken").join(fixture);
    let o: Output = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .arg("check")
        .arg("--policies-dir")
        .arg(base.join("policies"))
        .arg("--schema-dir")
        .arg(base.join("schema"))
        .env("ROLEGATE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Each fixture is the shipped set with one line of routes.toml changed.
const UNDECIDED: &[(&str, &str, &str)] = &[
    // `PUT /user/permission` (resource `User::{target}`) forwarded upstream.
    (
        "target_on_upstream",
        "routes.toml:264:12:",
        "with handler `upstream` the request would go undecided",
    ),
    // The same resource on an endpoint that does not resolve the body's user.
    (
        "target_on_undeciding_handler",
        "routes.toml:271:12:",
        "with handler `users.get` the request would go undecided",
    ),
    // A typo in a handler name.
    (
        "unknown_handler",
        "routes.toml:265:11:",
        "unknown handler `users.rol`",
    ),
    // No handler at all: it does not default to forwarding.
    (
        "missing_handler",
        "routes.toml:260:1:",
        "missing field `handler`",
    ),
];

#[test]
fn check_refuses_every_route_that_could_go_undecided() {
    for (fixture, at, message) in UNDECIDED {
        let (code, out) = check(fixture);
        assert_eq!(code, Some(3), "{fixture}: {out}");
        assert!(out.contains(at), "{fixture}: expected `{at}` in: {out}");
        assert!(
            out.contains(message),
            "{fixture}: expected `{message}` in: {out}"
        );
    }
}

#[test]
fn a_reload_with_an_undecided_route_keeps_the_live_set() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    copy_dir(&repo().join("policies"), &policies);
    let store = rolegate::authz::PolicyStore::open(rolegate::authz::PolicySource {
        policies_dir: policies.clone(),
        schema_dir: repo().join("schema"),
    })
    .unwrap();
    let before = store.current();
    for (fixture, at, _) in UNDECIDED {
        let broken = repo()
            .join("tests/fixtures/broken")
            .join(fixture)
            .join("policies/routes.toml");
        std::fs::copy(&broken, policies.join("routes.toml")).unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains(at), "{fixture}: {err}");
        let live = store.current();
        assert_eq!(live.version, before.version, "{fixture}");
        assert_eq!(live.digest, before.digest, "{fixture}");
        // The live route is still decided by its endpoint.
        let m = live.routes.find("PUT", "/user/permission").unwrap();
        assert_eq!(m.route.handler.name(), "users.role");
    }
}

/// Every Rust file under `src/`, with its text.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("src"), &mut out);
    out
}

/// The guarantee is structural: `Allowed` is built in one file only, and the
/// one constructor that does not decide (the benchmark-only pass-through) is
/// called from one place, behind the setting. A change that adds another way
/// to obtain an `Allowed` fails here and has to be argued for in review.
#[test]
fn only_an_allow_decision_can_produce_what_forwarding_needs() {
    let mut builders = Vec::new();
    let mut passthrough_calls = Vec::new();
    for (file, text) in sources() {
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let literals = code.matches("Allowed {").count() - code.matches("struct Allowed {").count();
        if literals > 0 {
            builders.push(file.clone());
        }
        if code.contains("allowed::passthrough(") || code.contains("self.passthrough.then(") {
            passthrough_calls.push(file.clone());
        }
    }
    assert_eq!(
        builders.len(),
        1,
        "Allowed built outside one file: {builders:?}"
    );
    assert!(
        builders[0].ends_with("src/decision/allowed.rs"),
        "{builders:?}"
    );
    assert_eq!(passthrough_calls.len(), 1, "{passthrough_calls:?}");
    assert!(passthrough_calls[0].ends_with("src/decision/mod.rs"));
    // Every forwarding function takes the proof.
    for (file, text) in sources() {
        if file.ends_with("src/proxy/mod.rs") {
            assert!(
                text.contains("allowed: &Allowed,"),
                "Proxy::forward must take an Allowed"
            );
        }
        if file.ends_with("src/decision/forwarding.rs") {
            assert!(
                text.contains("allowed: &Allowed,"),
                "set_identity must take an Allowed"
            );
        }
    }
}
