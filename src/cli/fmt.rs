//! `rolegate fmt [--check]`: format the policy files with Cedar's formatter
//! ([`crate::policy_tools::fmt`]).

use std::path::Path;

use clap::Args;

use super::{CliError, PolicyArgs};
use crate::policy_tools::fmt;

#[derive(Debug, Clone, Default, Args)]
pub struct FmtArgs {
    /// Change nothing; exit 1 if any file is not formatted
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(config: Option<&Path>, args: &FmtArgs) -> Result<(), CliError> {
    let source = args.policies.source(config)?;
    let changed = fmt::unformatted(&source.policies_dir)?;
    if args.check {
        for c in &changed {
            println!("would reformat {}", c.path.display());
        }
        return if changed.is_empty() {
            Ok(())
        } else {
            Err(CliError::NotFormatted(changed.len()))
        };
    }
    fmt::write(&changed)?;
    for c in &changed {
        println!("formatted {}", c.path.display());
    }
    Ok(())
}
