//! `rolegate user …`: manage users in the store directly (bootstrapping,
//! benchmarks), without any API. A user is named by id or by email.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{CliError, StoreArgs};
use crate::authz::PolicyStore;
use crate::config::Settings;
use crate::store::{self, NewUser, SharedStore, User};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (and the organisation, if it does not exist); prints the user id
    Add(AddArgs),
    /// Add many users at once and write one API token per line to a file (benchmarks)
    AddMany(AddManyArgs),
    /// List the users of an organisation (id, role, email)
    List(ListArgs),
    /// Renew a user's tokenKey: every API token of that user stops working
    Rotate(RotateArgs),
    /// Change a user's role (renews their tokenKey: their API tokens stop working)
    Role(RoleArgs),
    /// Delete a user: their API tokens stop working (playback tokens live until they expire)
    Delete(RotateArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Organisation name (created if it does not exist; its keys are printed once)
    #[arg(long)]
    pub org: String,
    /// The user's email address (unique)
    #[arg(long)]
    pub email: String,
    /// Role: nanoAdmin, nanoUser, nanoReadOnly or a custom role of policies/roles.toml
    #[arg(long)]
    pub role: String,
    /// Password for logging in, read from the environment variable of this name
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct AddManyArgs {
    /// Organisation name (created if it does not exist)
    #[arg(long)]
    pub org: String,
    /// Role of every user created
    #[arg(long)]
    pub role: String,
    /// How many users to create (emails `user-<batch>-<n>@<org>.invalid`)
    #[arg(long)]
    pub count: usize,
    /// File to write the users' API tokens to, one per line
    #[arg(long, value_name = "FILE")]
    pub tokens_out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Organisation name
    #[arg(long)]
    pub org: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The user: an email address (contains `@`) or a user id
    #[arg(long, value_name = "ID_OR_EMAIL")]
    pub user: String,
    #[command(flatten)]
    pub receipt: ReceiptArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The user: an email address (contains `@`) or a user id
    #[arg(long, value_name = "ID_OR_EMAIL")]
    pub user: String,
    /// The new role: nanoAdmin, nanoUser, nanoReadOnly or a custom role of policies/roles.toml
    #[arg(long)]
    pub role: String,
    #[command(flatten)]
    pub receipt: ReceiptArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ReceiptArgs {
    /// Seconds to wait for every live replica to apply the change (0: do not wait)
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub wait: f64,
}

impl UserCommand {
    fn store_args(&self) -> &StoreArgs {
        match self {
            UserCommand::Add(a) => &a.store,
            UserCommand::AddMany(a) => &a.store,
            UserCommand::List(a) => &a.store,
            UserCommand::Rotate(a) | UserCommand::Delete(a) => &a.store,
            UserCommand::Role(a) => &a.store,
        }
    }
}

pub fn run(config: Option<&Path>, cmd: &UserCommand) -> Result<(), CliError> {
    let settings = cmd.store_args().settings(config)?;
    super::runtime(Some(1))?.block_on(user(settings, cmd))
}

async fn user(settings: Settings, cmd: &UserCommand) -> Result<(), CliError> {
    let store = open_store(&settings).await?;
    match cmd {
        UserCommand::Add(a) => add(&settings, &store, a).await,
        UserCommand::AddMany(a) => add_many(&settings, &store, a).await,
        UserCommand::List(a) => {
            let org = store
                .org_by_name(&a.org)
                .await?
                .ok_or_else(|| CliError::NoSuchOrg(a.org.clone()))?;
            for u in store.list_users(&org.id, None).await? {
                println!("{}\t{}\t{}", u.id, u.role, u.email);
            }
            Ok(())
        }
        UserCommand::Rotate(a) => {
            rotate(&store, &a.user).await?;
            print_receipt(&store, &a.receipt).await
        }
        UserCommand::Role(a) => {
            known_role(&settings, &a.role)?;
            let found = find_user(&store, &a.user).await?;
            let u = store
                .set_role(&found.id, &a.role, &store::random_key())
                .await?;
            cli_audit(
                &store,
                &u,
                "editUserRole",
                &format!("{} -> {}", found.role, u.role),
            )
            .await;
            eprintln!(
                "{} ({}) is now {}: earlier API tokens no longer work",
                u.id, u.email, u.role
            );
            print_receipt(&store, &a.receipt).await
        }
        UserCommand::Delete(a) => {
            let found = find_user(&store, &a.user).await?;
            let u = store.delete_user(&found.id).await?;
            cli_audit(&store, &u, "deleteUser", &u.role).await;
            eprintln!(
                "deleted {} ({}): API tokens no longer work; playback tokens live until they expire",
                u.id, u.email
            );
            print_receipt(&store, &a.receipt).await
        }
    }
}

/// Wait for the running replicas to apply the change just written, and say
/// how that went (to stderr, like every other message of these commands).
async fn print_receipt(store: &SharedStore, a: &ReceiptArgs) -> Result<(), CliError> {
    if a.wait.is_nan() || a.wait <= 0.0 {
        return Ok(());
    }
    let wait = std::time::Duration::from_secs_f64(a.wait.min(3600.0));
    let seq = store::changelog::head(store).await?;
    let r = store::changelog::wait_for_replicas(store, seq, wait).await?;
    let live = r.acknowledged.len() + r.pending.len();
    if live == 0 {
        eprintln!("no replica is running: each applies the change when it starts");
    } else if r.complete {
        eprintln!(
            "applied by all {live} live replicas in {} ms: {}",
            r.elapsed_ms,
            r.acknowledged.join(", ")
        );
    } else {
        eprintln!(
            "applied by {} of {live} live replicas within {} ms; not yet by: {}\n\
             (a replica that stays behind stops answering from its cache once its lag \
             passes max_change_lag_secs)",
            r.acknowledged.len(),
            r.elapsed_ms,
            r.pending.join(", ")
        );
    }
    Ok(())
}

async fn add(settings: &Settings, store: &SharedStore, a: &AddArgs) -> Result<(), CliError> {
    known_role(settings, &a.role)?;
    let org_id = org_id(store, &a.org).await?;
    let password_hash = match &a.password_env {
        Some(var) => {
            let pw = std::env::var(var).map_err(|_| CliError::EnvUnset(var.clone()))?;
            Some(crate::authn::password::hash(pw.as_bytes())?)
        }
        None => None,
    };
    let user = store
        .create_user(NewUser {
            org_id,
            email: a.email.clone(),
            role: a.role.clone(),
            password_hash,
        })
        .await?;
    println!("{}", user.id);
    Ok(())
}

async fn add_many(
    settings: &Settings,
    store: &SharedStore,
    a: &AddManyArgs,
) -> Result<(), CliError> {
    known_role(settings, &a.role)?;
    let org_id = org_id(store, &a.org).await?;
    let batch = format!("{:08x}", rand::random::<u32>());
    let new: Vec<NewUser> = (0..a.count)
        .map(|i| NewUser {
            org_id: org_id.clone(),
            email: format!("user-{batch}-{i}@{}.invalid", a.org),
            role: a.role.clone(),
            password_hash: None,
        })
        .collect();
    let users = store.create_users(new).await?;
    let write_err = |source| CliError::Io {
        action: "write",
        path: a.tokens_out.display().to_string(),
        source,
    };
    let file = std::fs::File::create(&a.tokens_out).map_err(write_err)?;
    let mut out = std::io::BufWriter::new(file);
    for u in &users {
        let t = super::token::mint(settings, u)?;
        writeln!(out, "{t}").map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    eprintln!(
        "created {} users; tokens in `{}`",
        users.len(),
        a.tokens_out.display()
    );
    Ok(())
}

/// Audit a change made from the command line. The audit rule of every
/// writer: the change stands even if its record cannot be written (it is
/// logged in full instead; see `api::audit`).
async fn cli_audit(store: &SharedStore, u: &User, action: &str, detail: &str) {
    let written = store::audit::write(
        store.as_ref(),
        store::NewAudit {
            org_id: u.org_id.clone(),
            actor: "cli".to_owned(),
            action: action.to_owned(),
            target: u.id.clone(),
            outcome: "ok".to_owned(),
            request_id: String::new(),
            detail: detail.to_owned(),
        },
    )
    .await;
    if !written {
        eprintln!("rolegate: warning: the audit record of this change could not be written");
    }
}

async fn rotate(store: &SharedStore, name: &str) -> Result<(), CliError> {
    let found = find_user(store, name).await?;
    let u = store.set_token_key(&found.id, &store::random_key()).await?;
    cli_audit(store, &u, "resetUserToken", "").await;
    eprintln!(
        "renewed the tokenKey of {} ({}): earlier API tokens no longer work",
        u.id, u.email
    );
    Ok(())
}

/// The user a command names: by email when the name contains `@`, else by id.
pub(super) async fn find_user(store: &SharedStore, name: &str) -> Result<User, CliError> {
    let found = if name.contains('@') {
        store.user_by_email(name).await?
    } else {
        store.user(name).await?
    };
    found.ok_or_else(|| CliError::NoSuchUser(name.to_owned()))
}

pub(super) async fn open_store(settings: &Settings) -> Result<SharedStore, CliError> {
    store::open(&settings.store)
        .await
        .map_err(|source| CliError::OpenStore {
            location: store::redact(&settings.store),
            source,
        })
}

fn known_role(settings: &Settings, role: &str) -> Result<(), CliError> {
    let policies = PolicyStore::open(settings.policy_source()).map_err(CliError::Policies)?;
    let snap = policies.current();
    if snap.has_role(role) {
        Ok(())
    } else {
        let roles: Vec<&str> = snap.roles.keys().map(String::as_str).collect();
        Err(CliError::UnknownRole {
            role: role.to_owned(),
            valid: roles.join(", "),
        })
    }
}

/// The organisation of that name, created if missing (its keys are printed once, to stderr).
async fn org_id(store: &SharedStore, name: &str) -> Result<String, CliError> {
    if let Some(org) = store.org_by_name(name).await? {
        return Ok(org.id);
    }
    let created = store.create_org(name).await?;
    eprintln!(
        "created organisation `{name}` ({})\n  API key (shown once): {}\n  player key: {}",
        created.org.id, created.api_key, created.player_key
    );
    Ok(created.org.id)
}
