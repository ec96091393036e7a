//! The policy authors' toolchain on the real binary: `check` (file:line of
//! every problem), `fmt`, `test` (request-level cases) and `explain`.

use crate::support::{repo, rolegate, scratch, text};

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
