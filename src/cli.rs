//! The command line: `serve`, `demo`, the policy tools (`check`, `fmt`, `test`,
//! `explain`), and bootstrapping commands that
//! work on the store directly, without any API (`user …`, `token issue`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, ProcessEnv, Settings};

/// Exit code of a bad configuration (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of `check` when the policies are invalid (as Cedar's CLI).
pub const EXIT_INVALID: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Authorization sidecar for stream-platform APIs"
)]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: the data listener in front of the upstream, and the ops listener
    Serve,
    /// Run a self-contained demo: sidecar, example stream API and one user per role
    Demo(DemoArgs),
    /// Validate policies, schema, route table and roles (exit 0 valid, 3 invalid, 1 other failure)
    Check,
    /// Format the policy files with Cedar's formatter (`--check`: exit 1 and name files that would change)
    Fmt(FmtArgs),
    /// Run request-level policy tests (default: policies/tests/*.toml); exit 0 all pass, 1 any failure
    Test(TestArgs),
    /// Show how a request by a caller is decided: route, action, resource, decision, policies, errors
    Explain(ExplainArgs),
    /// Manage users in the store directly (bootstrapping)
    #[command(subcommand)]
    User(UserCommand),
    /// Issue API tokens from the command line
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub exit_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Change nothing; exit 1 if any file is not formatted
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (TOML with `[[case]]` tables); default `<policies_dir>/tests/*.toml`
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["role", "credential"])))]
pub struct ExplainArgs {
    /// The caller is a user with this role
    #[arg(long)]
    pub role: Option<String>,
    /// The caller is a credential: apikey, playerkey or anonymous
    #[arg(long)]
    pub credential: Option<String>,
    #[arg(long)]
    pub method: String,
    /// Path, with the query where it matters (`/stream?tags[]=a`)
    #[arg(long)]
    pub path: String,
    /// The resource belongs to another organisation than the caller's
    #[arg(long)]
    pub other_org: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (and the organisation, if it does not exist); prints the user id
    Add {
        /// Organisation name
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        /// Role: nanoAdmin, nanoUser, nanoReadOnly or a custom role of policies/roles.toml
        #[arg(long)]
        role: String,
        /// Password for logging in (read from this environment variable)
        #[arg(long)]
        password_env: Option<String>,
    },
    /// Add many users at once and write one API token per line to a file (benchmarks)
    AddMany {
        #[arg(long)]
        org: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        tokens_out: PathBuf,
    },
    /// List the users of an organisation
    List {
        #[arg(long)]
        org: String,
    },
    /// Renew a user's tokenKey: every API token of that user stops working
    Rotate {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh API token for a user
    Issue {
        /// User id
        #[arg(long, conflicts_with = "email", required_unless_present = "email")]
        user: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
}

/// Resolve settings or print the problem and give the config exit code.
fn settings(cli: &Cli, need_upstream: bool) -> Result<Settings, ExitCode> {
    Settings::resolve(&cli.overrides, &ProcessEnv, need_upstream).map_err(|e| {
        eprintln!("rolegate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    // One worker thread means the current-thread scheduler: every task runs
    // on the thread that started the runtime, with no work-stealing queues
    // and no cross-thread wake-ups (the multi-threaded scheduler with one
    // worker still hands tasks between the main thread and its worker).
    let mut b = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("rolegate: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Serve => settings(&cli, true).and_then(|s| {
            let rt = runtime(s.worker_threads)?;
            rt.block_on(crate::bootstrap::serve(s))
        }),
        Command::Demo(args) => {
            runtime(None).and_then(|rt| rt.block_on(crate::demo::run(&cli.overrides, args)))
        }
        Command::Check => crate::bootstrap::check(&cli.overrides),
        Command::Fmt(args) => crate::tools::fmt_command(&cli.overrides, args),
        Command::Test(args) => crate::tools::test_command(&cli.overrides, args),
        Command::Explain(args) => crate::tools::explain_command(&cli.overrides, args),
        Command::User(cmd) => settings(&cli, false).and_then(|s| {
            runtime(Some(1)).and_then(|rt| rt.block_on(crate::bootstrap::user(s, cmd)))
        }),
        Command::Token(cmd) => settings(&cli, false).and_then(|s| {
            runtime(Some(1)).and_then(|rt| rt.block_on(crate::bootstrap::token(s, cmd)))
        }),
    };
    match result {
        Ok(code) | Err(code) => code,
    }
}
