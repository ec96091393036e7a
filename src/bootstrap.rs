//! The commands behind the CLI: `serve`, `check`, and the bootstrapping
//! commands that act on the store directly (`user …`, `token issue`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app;
use crate::authn::token;
use crate::authz::{loader, LoadError, PolicySource, PolicyStore};
use crate::cli::{TokenCommand, UserCommand, EXIT_CONFIG, EXIT_INVALID};
use crate::config::{read_file_config, Overrides, Settings};
use crate::store::{self, NewUser, SharedStore, Store};

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("rolegate: {msg}");
    ExitCode::FAILURE
}

/// Run the sidecar until SIGTERM/SIGINT, then drain.
pub async fn serve(settings: Settings) -> Result<ExitCode, ExitCode> {
    crate::telemetry::init();
    let state = app::build(settings).await.map_err(|e| {
        eprintln!("rolegate: {e}");
        match e {
            app::StartError::Policies(_) | app::StartError::ShadowPolicies(_) => {
                ExitCode::from(EXIT_CONFIG)
            }
            _ => ExitCode::FAILURE,
        }
    })?;
    // Listen before `start` announces readiness: a SIGTERM that arrives right
    // after must drain, not meet the default action (kill).
    let signal = shutdown_signal();
    let running = app::start(state).await.map_err(fail)?;
    signal.await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Start listening for SIGTERM and SIGINT now (the handlers are installed by
/// this call, not when the future is first polled); the future resolves when
/// one arrives.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Some(mut one), None) | (None, Some(mut one)) => {
                    one.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Where the policies are, from flags, environment or config file (no secret needed).
pub fn policy_source(o: &Overrides) -> Result<PolicySource, ExitCode> {
    let file = match &o.config {
        Some(p) => read_file_config(p).map_err(|e| {
            eprintln!("rolegate: {e}");
            ExitCode::from(EXIT_CONFIG)
        })?,
        None => Default::default(),
    };
    let base = o
        .config
        .as_deref()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf);
    let rel = |p: std::path::PathBuf| match &base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    };
    Ok(PolicySource {
        policies_dir: o
            .policies_dir
            .clone()
            .or(file.policies_dir.map(rel))
            .unwrap_or_else(|| crate::config::DEFAULT_POLICIES_DIR.into()),
        schema_dir: o
            .schema_dir
            .clone()
            .or(file.schema_dir.map(rel))
            .unwrap_or_else(|| crate::config::DEFAULT_SCHEMA_DIR.into()),
    })
}

/// `rolegate check`: 0 valid, 3 invalid, 1 could not check.
pub fn check(o: &Overrides) -> Result<ExitCode, ExitCode> {
    let source = policy_source(o)?;
    match loader::load(&source, 1) {
        Ok(snap) => {
            println!(
                "ok: {} policies, {} routes, {} roles, digest {}",
                snap.policies.policies().count(),
                snap.routes.routes().len(),
                snap.roles.len(),
                snap.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(problems)) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            Err(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(fail(e)),
    }
}

async fn open_store(settings: &Settings) -> Result<SharedStore, ExitCode> {
    store::open(&settings.store).await.map_err(|e| {
        fail(format!(
            "store `{}`: {e}",
            crate::store::redact(&settings.store)
        ))
    })
}

fn known_role(settings: &Settings, role: &str) -> Result<(), ExitCode> {
    let policies = PolicyStore::open(settings.policy_source()).map_err(|e| {
        eprintln!("rolegate: policies: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let snap = policies.current();
    if snap.has_role(role) {
        Ok(())
    } else {
        let roles: Vec<&str> = snap.roles.keys().map(String::as_str).collect();
        Err(fail(format!(
            "unknown role `{role}`; valid roles: {}",
            roles.join(", ")
        )))
    }
}

/// The organisation of that name, created if missing (its keys are printed once, to stderr).
async fn org_id(store: &Arc<dyn Store>, name: &str) -> Result<String, ExitCode> {
    if let Some(org) = store.org_by_name(name).await.map_err(fail)? {
        return Ok(org.id);
    }
    let created = store.create_org(name).await.map_err(fail)?;
    eprintln!(
        "created organisation `{name}` ({})\n  API key (shown once): {}\n  player key: {}",
        created.org.id, created.api_key, created.player_key
    );
    Ok(created.org.id)
}

fn hash_password(password: &str) -> Result<String, ExitCode> {
    crate::authn::password::hash(password.as_bytes()).map_err(fail)
}

pub fn mint_for(settings: &Settings, user: &store::User) -> Result<String, token::TokenError> {
    token::mint_for_user(
        &settings.token_settings(),
        &settings.master_secret,
        user,
        crate::clock::unix_now(),
    )
}

pub async fn user(settings: Settings, cmd: &UserCommand) -> Result<ExitCode, ExitCode> {
    let store = open_store(&settings).await?;
    match cmd {
        UserCommand::Add {
            org,
            email,
            role,
            password_env,
        } => {
            known_role(&settings, role)?;
            let org_id = org_id(&store, org).await?;
            let password_hash = match password_env {
                Some(var) => {
                    let pw = std::env::var(var)
                        .map_err(|_| fail(format!("environment variable `{var}` is not set")))?;
                    Some(hash_password(&pw)?)
                }
                None => None,
            };
            let user = store
                .create_user(NewUser {
                    org_id,
                    email: email.clone(),
                    role: role.clone(),
                    password_hash,
                })
                .await
                .map_err(fail)?;
            println!("{}", user.id);
        }
        UserCommand::AddMany {
            org,
            role,
            count,
            tokens_out,
        } => {
            known_role(&settings, role)?;
            let org_id = org_id(&store, org).await?;
            let batch = format!("{:08x}", rand::random::<u32>());
            let new: Vec<NewUser> = (0..*count)
                .map(|i| NewUser {
                    org_id: org_id.clone(),
                    email: format!("user-{batch}-{i}@{org}.invalid"),
                    role: role.clone(),
                    password_hash: None,
                })
                .collect();
            let users = store.create_users(new).await.map_err(fail)?;
            let file = std::fs::File::create(tokens_out)
                .map_err(|e| fail(format!("cannot write `{}`: {e}", tokens_out.display())))?;
            let mut out = std::io::BufWriter::new(file);
            for u in &users {
                let t = mint_for(&settings, u).map_err(fail)?;
                writeln!(out, "{t}").map_err(fail)?;
            }
            out.flush().map_err(fail)?;
            eprintln!(
                "created {} users; tokens in `{}`",
                users.len(),
                tokens_out.display()
            );
        }
        UserCommand::List { org } => {
            let Some(o) = store.org_by_name(org).await.map_err(fail)? else {
                return Err(fail(format!("no organisation `{org}`")));
            };
            for u in store.list_users(&o.id, None).await.map_err(fail)? {
                println!("{}\t{}\t{}", u.id, u.role, u.email);
            }
        }
        UserCommand::Rotate { user } => {
            let u = store
                .set_token_key(user, &store::random_key())
                .await
                .map_err(fail)?;
            store
                .append_audit(store::NewAudit {
                    org_id: u.org_id.clone(),
                    actor: "cli".to_owned(),
                    action: "resetUserToken".to_owned(),
                    target: u.id.clone(),
                    outcome: "ok".to_owned(),
                    request_id: String::new(),
                    detail: String::new(),
                })
                .await
                .map_err(fail)?;
            eprintln!(
                "renewed the tokenKey of {}: earlier API tokens no longer work",
                u.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(settings: Settings, cmd: &TokenCommand) -> Result<ExitCode, ExitCode> {
    let store = open_store(&settings).await?;
    match cmd {
        TokenCommand::Issue { user, email } => {
            let found = match (user, email) {
                (Some(id), _) => store.user(id).await.map_err(fail)?,
                (None, Some(e)) => store.user_by_email(e).await.map_err(fail)?,
                (None, None) => None,
            };
            let Some(u) = found else {
                return Err(fail("no such user"));
            };
            println!("{}", mint_for(&settings, &u).map_err(fail)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
