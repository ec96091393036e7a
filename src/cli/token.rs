//! `rolegate token issue`: print a fresh API token for a user named by id or email.

use std::path::Path;

use clap::Subcommand;

use super::{CliError, StoreArgs};
use crate::config::Settings;
use crate::store::User;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh API token for a user
    Issue {
        /// The user: an email address (contains `@`) or a user id
        #[arg(long, visible_alias = "email", value_name = "ID_OR_EMAIL")]
        user: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn run(config: Option<&Path>, cmd: &TokenCommand) -> Result<(), CliError> {
    let TokenCommand::Issue { user, store } = cmd;
    let settings = store.settings(config)?;
    super::runtime(Some(1))?.block_on(issue(settings, user))
}

async fn issue(settings: Settings, name: &str) -> Result<(), CliError> {
    let store = super::user::open_store(&settings).await?;
    let u = super::user::find_user(&store, name).await?;
    // Printing the token is this command's purpose.
    println!("{}", mint(&settings, &u)?);
    Ok(())
}

/// An API token for `user`, valid from now.
pub(super) fn mint(settings: &Settings, user: &User) -> Result<String, CliError> {
    Ok(crate::authn::token::mint_for_user(
        &settings.token_settings(),
        &settings.master_secret,
        user,
        crate::clock::unix_now(),
    )?)
}
