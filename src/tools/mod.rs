//! The policy authors' toolchain: `fmt`, `test` and `explain`. They work on the
//! policy files alone (no store, no upstream), so they run in CI and on a laptop.

pub mod explain;
pub mod fmt;
pub mod testing;

use std::process::ExitCode;

use crate::authz::{loader, LoadError, PolicySnapshot};
use crate::cli::{ExplainArgs, FmtArgs, TestArgs, EXIT_INVALID};
use crate::config::Overrides;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rolegate: {msg}");
    ExitCode::FAILURE
}

/// Load the policy set for a tool; an invalid set is reported as `check` does (exit 3).
fn load(o: &Overrides) -> Result<PolicySnapshot, ExitCode> {
    let source = crate::bootstrap::policy_source(o)?;
    loader::load(&source, 1).map_err(|e| match e {
        LoadError::Invalid(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            ExitCode::from(EXIT_INVALID)
        }
        other => fail(other),
    })
}

/// `rolegate fmt [--check]`.
pub fn fmt_command(o: &Overrides, args: &FmtArgs) -> Result<ExitCode, ExitCode> {
    let source = crate::bootstrap::policy_source(o)?;
    let changed = fmt::unformatted(&source.policies_dir).map_err(fail)?;
    if args.check {
        for c in &changed {
            println!("would reformat {}", c.path.display());
        }
        return if changed.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "{} file(s) not formatted; run `rolegate fmt`",
                changed.len()
            );
            Err(ExitCode::FAILURE)
        };
    }
    fmt::write(&changed).map_err(fail)?;
    for c in &changed {
        println!("formatted {}", c.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `rolegate test [FILES]`.
pub fn test_command(o: &Overrides, args: &TestArgs) -> Result<ExitCode, ExitCode> {
    let snapshot = load(o)?;
    let files = if args.files.is_empty() {
        let source = crate::bootstrap::policy_source(o)?;
        testing::default_files(&source.policies_dir).map_err(fail)?
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        return Err(fail("no test files"));
    }
    let report = testing::run(&snapshot, &files).map_err(fail)?;
    for f in &report.failures {
        println!("FAIL {} :: {}: {}", f.file, f.name, f.message);
    }
    println!(
        "coverage: policies not exercised: {}",
        list_or_none(&report.unexercised_policies)
    );
    println!(
        "coverage: routes not exercised: {}",
        list_or_none(&report.unexercised_routes)
    );
    println!(
        "test result: {}. {} passed; {} failed",
        if report.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        report.passed,
        report.failures.len()
    );
    if report.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(ExitCode::FAILURE)
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// `rolegate explain`.
pub fn explain_command(o: &Overrides, args: &ExplainArgs) -> Result<ExitCode, ExitCode> {
    let snapshot = load(o)?;
    let caller =
        testing::CallerSpec::new(args.role.as_deref(), args.credential.as_deref()).map_err(fail)?;
    let probe = testing::Probe {
        caller,
        method: args.method.to_ascii_uppercase(),
        target: args.path.clone(),
        other_org: args.other_org,
    };
    let ex = testing::evaluate(&snapshot, &probe).map_err(fail)?;
    print!("{}", explain::render(&probe, &ex));
    Ok(ExitCode::SUCCESS)
}
