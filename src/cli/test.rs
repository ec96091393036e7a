//! `rolegate test [FILES]`: run request-level policy tests
//! ([`crate::policy_tools::testing`]) and print failures and coverage.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{load_policies, CliError, PolicyArgs};
use crate::policy_tools::testing;

#[derive(Debug, Clone, Default, Args)]
pub struct TestArgs {
    /// Test files (TOML with `[[case]]` tables); default `<policies_dir>/tests/*.toml`
    #[arg(value_name = "FILES")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(config: Option<&Path>, args: &TestArgs) -> Result<(), CliError> {
    let source = args.policies.source(config)?;
    let snapshot = load_policies(&source)?;
    let files = if args.files.is_empty() {
        testing::default_files(&source.policies_dir)?
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        return Err(CliError::NoTestFiles);
    }
    let report = testing::run(&snapshot, &files)?;
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
        Ok(())
    } else {
        Err(CliError::TestsFailed(report.failures.len()))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
