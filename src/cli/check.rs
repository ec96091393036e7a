//! `rolegate check`: validate policies, schema, route table and roles
//! (0 valid, 3 invalid, 1 could not check).

use std::path::Path;

use super::{load_policies, CliError, PolicyArgs};

pub fn run(config: Option<&Path>, args: &PolicyArgs) -> Result<(), CliError> {
    let snap = load_policies(&args.source(config)?)?;
    println!(
        "ok: {} policies, {} routes, {} roles, digest {}",
        snap.policies.policies().count(),
        snap.routes.routes().len(),
        snap.roles.len(),
        snap.digest
    );
    Ok(())
}
