//! The command line, one file per subcommand: [`serve`], [`demo`], the policy
//! tools ([`check`], [`fmt`], [`test`](mod@test), [`explain`]), and the bootstrapping
//! commands that work on the store directly, without any API ([`user`],
//! [`token`]).
//!
//! Each subcommand offers only the options it uses (the groups below), and
//! turns them into the [`Overrides`] that [`Settings::resolve`] merges with the
//! config file. A command returns a [`CliError`]; [`run`] prints it once and
//! exits with its code: 0 ok, 1 failure, 3 invalid policies, 64 bad config.

pub mod check;
pub mod demo;
pub mod explain;
pub mod fmt;
pub mod serve;
pub mod test;
pub mod token;
pub mod user;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::StartError;
use crate::authn::password::PasswordError;
use crate::authn::token::TokenError;
use crate::authz::loader::Problem;
use crate::authz::{loader, LoadError, PolicySnapshot, PolicySource};
use crate::config::{ConfigError, Overrides, ProcessEnv, Settings};
use crate::policy_tools::fmt::FmtError;
use crate::policy_tools::testing::{ProbeError, SuiteError};
use crate::store::StoreError;

/// Exit code of a bad configuration (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of `check`, `test` and `explain` when the policies are invalid (as Cedar's CLI).
pub const EXIT_INVALID: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Authorization sidecar for stream-platform APIs"
)]
pub struct Cli {
    /// TOML config file (paths in it are relative to its directory)
    #[arg(long, env = "ROLEGATE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: the data listener in front of the upstream, and the ops listener
    Serve(serve::ServeArgs),
    /// Run a self-contained demo: sidecar, example stream API and one user per role
    Demo(demo::DemoArgs),
    /// Validate policies, schema, route table and roles (exit 0 valid, 3 invalid, 1 other failure)
    Check(PolicyArgs),
    /// Format the policy files with Cedar's formatter (`--check`: exit 1 and name files that would change)
    Fmt(fmt::FmtArgs),
    /// Run request-level policy tests (default: policies/tests/*.toml); exit 0 all pass, 1 any failure
    Test(test::TestArgs),
    /// Show how a request by a caller is decided: route, action, resource, decision, policies, errors
    Explain(explain::ExplainArgs),
    /// Manage users in the store directly (bootstrapping)
    #[command(subcommand)]
    User(user::UserCommand),
    /// Issue API tokens from the command line
    #[command(subcommand)]
    Token(token::TokenCommand),
}

// === option groups ===

/// Where the policies are: what the offline policy tools need.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Directory of policy files, routes.toml and roles.toml (default: policies)
    #[arg(long, env = "ROLEGATE_POLICIES_DIR", value_name = "DIR")]
    pub policies_dir: Option<PathBuf>,
    /// Directory of Cedar schema files (default: schema)
    #[arg(long, env = "ROLEGATE_SCHEMA_DIR", value_name = "DIR")]
    pub schema_dir: Option<PathBuf>,
}

impl PolicyArgs {
    fn apply(&self, o: &mut Overrides) {
        o.policies_dir.clone_from(&self.policies_dir);
        o.schema_dir.clone_from(&self.schema_dir);
    }

    /// Where the policies are, merged with the config file by the one function
    /// `Settings::resolve` uses as well.
    pub fn source(&self, config: Option<&Path>) -> Result<PolicySource, CliError> {
        let mut o = overrides(config);
        self.apply(&mut o);
        Ok(crate::config::policy_source(&o)?)
    }
}

/// The store, its master secret and the policies (for role names): what the
/// bootstrapping commands need.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Store: a SQLite file path, or a postgres:// URL (default: rolegate.db)
    #[arg(long, env = "ROLEGATE_STORE", value_name = "LOCATION")]
    pub store: Option<String>,
    /// File holding the master secret (alternative: ROLEGATE_MASTER_SECRET)
    #[arg(long, env = "ROLEGATE_MASTER_SECRET_FILE", value_name = "FILE")]
    pub master_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

impl StoreArgs {
    fn apply(&self, o: &mut Overrides) {
        o.store.clone_from(&self.store);
        o.master_secret_file.clone_from(&self.master_secret_file);
        self.policies.apply(o);
    }

    /// The settings of a command that does not forward (no upstream needed).
    pub fn settings(&self, config: Option<&Path>) -> Result<Settings, CliError> {
        let mut o = overrides(config);
        self.apply(&mut o);
        Ok(Settings::resolve(&o, &ProcessEnv, false)?)
    }
}

/// The listeners.
#[derive(Debug, Clone, Default, Args)]
pub struct ListenArgs {
    /// Data listener address (default: 127.0.0.1:8080)
    #[arg(long, env = "ROLEGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Ops listener address: /live, /ready, /metrics, /status, /reload (default: 127.0.0.1:9090)
    #[arg(long, env = "ROLEGATE_OPS_LISTEN", value_name = "ADDR")]
    pub ops_listen: Option<String>,
    /// Envoy ext_authz gRPC listener address (default: off)
    #[arg(long, env = "ROLEGATE_EXT_AUTHZ_LISTEN", value_name = "ADDR")]
    pub ext_authz_listen: Option<String>,
}

impl ListenArgs {
    fn apply(&self, o: &mut Overrides) {
        o.listen.clone_from(&self.listen);
        o.ops_listen.clone_from(&self.ops_listen);
        o.ext_authz_listen.clone_from(&self.ext_authz_listen);
    }
}

/// Overrides holding only the config file; each group adds its own.
fn overrides(config: Option<&Path>) -> Overrides {
    Overrides {
        config: config.map(Path::to_path_buf),
        ..Default::default()
    }
}

// === errors ===

/// Why a command failed. [`run`] prints it once, to stderr, and exits with
/// [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting or the config file is bad (64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The demo's settings are bad, most often because it runs outside the
    /// repository (64).
    #[error("{0} (run the demo from the repository root, where policies/ and schema/ are)")]
    DemoConfig(ConfigError),
    /// The sidecar did not start: its policies are bad (64) or something else (1).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The policies a store command checks role names against do not load (64).
    #[error("policies: {0}")]
    Policies(LoadError),
    /// The policy set was read and is invalid (3); each problem is printed on its own line.
    #[error("{} problem(s) found", .0.len())]
    InvalidPolicies(Vec<Problem>),
    /// The policy files could not be read (1).
    #[error("{0}")]
    PolicyFiles(LoadError),
    #[error("store `{location}`: {source}")]
    OpenStore {
        location: String,
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown role `{role}`; valid roles: {valid}")]
    UnknownRole { role: String, valid: String },
    #[error("no user `{0}`")]
    NoSuchUser(String),
    #[error("no organisation `{0}`")]
    NoSuchOrg(String),
    #[error("environment variable `{0}` is not set")]
    EnvUnset(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot mint a token: {0}")]
    Token(#[from] TokenError),
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Fmt(#[from] FmtError),
    #[error("{0} file(s) not formatted; run `rolegate fmt`")]
    NotFormatted(usize),
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error("no test files")]
    NoTestFiles,
    #[error("{0} test case(s) failed")]
    TestsFailed(usize),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The demo could not set itself up (1).
    #[error("demo: {0}")]
    Demo(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::DemoConfig(_) | CliError::Policies(_) => EXIT_CONFIG,
            CliError::Start(
                StartError::Policies(_)
                | StartError::ShadowPolicies(_)
                | StartError::DashboardHidesRoute { .. },
            ) => EXIT_CONFIG,
            CliError::InvalidPolicies(_) => EXIT_INVALID,
            _ => 1,
        }
    }

    /// Print the error to stderr: an invalid set's problems one per line, then the message.
    pub fn print(&self) {
        if let CliError::InvalidPolicies(problems) = self {
            for p in problems {
                eprintln!("error: {p}");
            }
            eprintln!("{self}");
        } else {
            eprintln!("rolegate: {self}");
        }
    }
}

/// Load the policy set for a policy tool: an invalid set is [`CliError::InvalidPolicies`] (exit 3).
pub fn load_policies(source: &PolicySource) -> Result<PolicySnapshot, CliError> {
    loader::load(source, 1).map_err(|e| match e {
        LoadError::Invalid(problems) => CliError::InvalidPolicies(problems),
        other => CliError::PolicyFiles(other),
    })
}

/// Threads of the blocking pool. Its work is the embedded store's calls (one
/// SQLite connection behind a lock: a second thread only waits for it),
/// password hashing (CPU-bound, 19 MiB of argon2 memory each) and the policy
/// and certificate file checks. tokio's default of 512 let a burst of cache
/// misses on the embedded store start ~50 threads, each with its own stack and
/// malloc arena (~150 KiB resident apiece, measured under 100,000 users); the
/// queue behind a small pool costs those misses nothing, since they were
/// waiting for the connection's lock anyway.
const BLOCKING_THREADS: usize = 4;

/// A runtime for a command. One worker thread means the current-thread
/// scheduler: every task runs on the thread that started the runtime, with no
/// work-stealing queues and no cross-thread wake-ups (the multi-threaded
/// scheduler with one worker still hands tasks between the main thread and
/// its worker).
pub fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, CliError> {
    let mut b = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Run a parsed command line; the one place a command's error is printed.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    let config = cli.config.as_deref();
    match &cli.command {
        Command::Serve(args) => serve::run(config, args),
        Command::Demo(args) => demo::run(config, args),
        Command::Check(args) => check::run(config, args),
        Command::Fmt(args) => fmt::run(config, args),
        Command::Test(args) => test::run(config, args),
        Command::Explain(args) => explain::run(config, args),
        Command::User(cmd) => user::run(config, cmd),
        Command::Token(cmd) => token::run(config, cmd),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::CommandFactory;

    use super::*;

    /// Every subcommand, depth first, with its path (`user rotate`).
    fn all_commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((name.clone(), sub.clone()));
            all_commands(sub, &name, out);
        }
    }

    fn built() -> clap::Command {
        let mut cmd = Cli::command();
        cmd.build();
        cmd
    }

    fn help_of(path: &[&str]) -> String {
        let mut cmd = built();
        let mut at = &mut cmd;
        for name in path {
            at = at.find_subcommand_mut(name).unwrap();
        }
        at.render_long_help().to_string()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_and_positional_has_help() {
        let root = built();
        let mut commands = vec![("rolegate".to_owned(), root.clone())];
        all_commands(&root, "", &mut commands);
        let mut missing = Vec::new();
        for (name, cmd) in &commands {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{name}: {}", arg.get_id()));
                }
            }
            if name != "rolegate" {
                assert!(cmd.get_about().is_some(), "`{name}` has no description");
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        // Every subcommand's help renders.
        for (name, _) in &commands {
            let path: Vec<&str> = name.split(' ').collect();
            if name != "rolegate" {
                assert!(help_of(&path).contains("Usage:"), "{name}");
            }
        }
    }

    #[test]
    fn each_subcommand_offers_only_the_options_it_uses() {
        let rotate = help_of(&["user", "rotate"]);
        for other in [
            "--upstream",
            "--passthrough",
            "--worker-threads",
            "--listen",
            "--drain-seconds",
        ] {
            assert!(
                !rotate.contains(other),
                "`user rotate` offers {other}:\n{rotate}"
            );
        }
        for own in ["--user", "--store", "--master-secret-file", "--config"] {
            assert!(rotate.contains(own), "`user rotate` lacks {own}:\n{rotate}");
        }
        for tool in [["check"], ["fmt"], ["test"], ["explain"]] {
            let help = help_of(&tool);
            assert!(help.contains("--policies-dir"), "{tool:?}:\n{help}");
            for other in ["--store", "--upstream", "--master-secret-file", "--listen"] {
                assert!(!help.contains(other), "{tool:?} offers {other}:\n{help}");
            }
        }
        let serve = help_of(&["serve"]);
        for own in [
            "--listen",
            "--ops-listen",
            "--upstream",
            "--store",
            "--master-secret-file",
            "--policies-dir",
            "--schema-dir",
            "--worker-threads",
            "--drain-seconds",
            "--passthrough",
        ] {
            assert!(serve.contains(own), "`serve` lacks {own}:\n{serve}");
        }
        let demo = help_of(&["demo"]);
        assert!(
            demo.contains("--ops-listen") && !demo.contains("--upstream"),
            "{demo}"
        );
    }

    #[test]
    fn global_config_is_accepted_before_and_after_the_subcommand() {
        for args in [
            &[
                "rolegate", "--config", "x.toml", "user", "rotate", "--user", "a@b.test",
            ][..],
            &[
                "rolegate", "user", "rotate", "--user", "a@b.test", "--config", "x.toml",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        }
    }

    #[test]
    fn token_issue_takes_an_id_or_an_email_and_email_as_an_alias() {
        let user_of = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Token(token::TokenCommand::Issue { user, .. }) => user,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            user_of(&["rolegate", "token", "issue", "--user", "u1"]),
            "u1"
        );
        assert_eq!(
            user_of(&["rolegate", "token", "issue", "--email", "a@b.test"]),
            "a@b.test"
        );
        assert!(Cli::try_parse_from(["rolegate", "token", "issue"]).is_err());
    }

    #[test]
    fn exit_codes_are_those_of_today() {
        let config = CliError::Config(ConfigError::File {
            path: "x".into(),
            message: "y".into(),
        });
        assert_eq!(config.exit_code(), 64);
        assert_eq!(CliError::InvalidPolicies(vec![]).exit_code(), 3);
        assert_eq!(CliError::TestsFailed(1).exit_code(), 1);
        assert_eq!(CliError::NotFormatted(1).exit_code(), 1);
        assert_eq!(
            CliError::Start(StartError::Policies(LoadError::Invalid(vec![]))).exit_code(),
            64
        );
    }

    /// A burst of blocking work never runs on more than BLOCKING_THREADS
    /// threads, whatever the number of workers: the rest waits in the queue.
    #[test]
    fn blocking_work_runs_on_at_most_four_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        for workers in [Some(1), Some(2)] {
            let rt = runtime(workers).unwrap();
            let running = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let tasks: Vec<_> = (0..24)
                    .map(|_| {
                        let (running, most) = (running.clone(), most.clone());
                        tokio::task::spawn_blocking(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let most = most.load(Ordering::SeqCst);
            assert!(most <= BLOCKING_THREADS, "{most} ran at once");
            assert!(most >= 2, "the pool still runs work side by side ({most})");
        }
    }
}
