//! `rolegate explain`: how a request by a caller is decided
//! ([`crate::policy_tools::testing::evaluate`], rendered by
//! [`crate::policy_tools::explain`]).

use std::path::Path;

use clap::Args;

use super::{load_policies, CliError, PolicyArgs};
use crate::policy_tools::{explain, testing};

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["role", "credential"])))]
pub struct ExplainArgs {
    /// The caller is a user with this role
    #[arg(long)]
    pub role: Option<String>,
    /// The caller is a credential: apikey, playerkey or anonymous
    #[arg(long)]
    pub credential: Option<String>,
    /// HTTP method of the request (GET, POST, …)
    #[arg(long)]
    pub method: String,
    /// Path, with the query where it matters (`/stream?tags[]=a`)
    #[arg(long)]
    pub path: String,
    /// The resource belongs to another organisation than the caller's
    #[arg(long)]
    pub other_org: bool,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

pub fn run(config: Option<&Path>, args: &ExplainArgs) -> Result<(), CliError> {
    let snapshot = load_policies(&args.policies.source(config)?)?;
    let caller = testing::CallerSpec::new(args.role.as_deref(), args.credential.as_deref())?;
    let probe = testing::Probe {
        caller,
        method: args.method.to_ascii_uppercase(),
        target: args.path.clone(),
        other_org: args.other_org,
    };
    let ex = testing::evaluate(&snapshot, &probe)?;
    print!("{}", explain::render(&probe, &ex));
    Ok(())
}
