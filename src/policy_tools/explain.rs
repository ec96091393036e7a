//! `rolegate explain`: the facts the proxy logs for a deny, for any request and
//! caller, decided with the same code (see [`super::testing::evaluate`]).

use std::fmt::Write as _;

use super::testing::{Explanation, Probe, OTHER_ORG};

/// Render an explanation for a terminal, one fact per line.
pub fn render(probe: &Probe, ex: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request:   {} {}", probe.method, probe.target);
    let _ = writeln!(
        out,
        "caller:    {}{}",
        probe.caller,
        if probe.other_org {
            format!(" (resource in `{OTHER_ORG}`)")
        } else {
            String::new()
        }
    );
    match &ex.route {
        Some(r) => {
            let _ = writeln!(
                out,
                "route:     {} {} (handler `{}`)",
                r.method, r.template, r.handler
            );
            let _ = writeln!(out, "action:    Action::\"{}\"", r.action);
            let _ = writeln!(
                out,
                "resource:  {} (org `{}`)",
                ex.resource, ex.resource_org
            );
        }
        None => {
            let _ = writeln!(out, "route:     none (denied as `no_route`)");
        }
    }
    let _ = writeln!(
        out,
        "decision:  {}",
        if ex.outcome.allowed { "allow" } else { "deny" }
    );
    let _ = writeln!(
        out,
        "policies:  {}",
        if ex.outcome.policies.is_empty() {
            "(none: no permit applies)".to_owned()
        } else {
            ex.outcome.policies.join(", ")
        }
    );
    if ex.outcome.errors.is_empty() {
        let _ = writeln!(out, "errors:    none");
    } else {
        for e in &ex.outcome.errors {
            let _ = writeln!(out, "error:     {e}");
        }
    }
    out
}
