//! `rolegate serve`: run the sidecar until SIGTERM/SIGINT, then drain.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{overrides, CliError, ListenArgs, StoreArgs};
use crate::app;
use crate::config::{ProcessEnv, Settings};

/// Every setting the sidecar takes from flags or the environment; the config
/// file holds the rest.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Upstream base URL (http://host:port); requests that pass are forwarded there
    #[arg(long, env = "ROLEGATE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Worker threads of the runtime (default: one per core)
    #[arg(long, env = "ROLEGATE_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// SIGTERM grace period for in-flight requests, in seconds (default: 20)
    #[arg(long, env = "ROLEGATE_DRAIN_SECONDS", value_name = "SECONDS")]
    pub drain_seconds: Option<u64>,
    /// Benchmark only: forward every request without authorization
    #[arg(long, env = "ROLEGATE_PASSTHROUGH", value_name = "BOOL")]
    pub passthrough: Option<bool>,
    /// AuthZEN 1.0 evaluation API listener address (default: off)
    #[arg(long, env = "ROLEGATE_AUTHZEN_LISTEN", value_name = "ADDR")]
    pub authzen_listen: Option<String>,
    /// File of the PEP credentials the AuthZEN listener accepts, one per line (required with it)
    #[arg(long, env = "ROLEGATE_AUTHZEN_PEP_TOKEN_FILE", value_name = "FILE")]
    pub authzen_pep_token_file: Option<PathBuf>,
    /// The AuthZEN Policy Decision Point identifier, https://host[:port] (default: http:// and the listener's address)
    #[arg(long, env = "ROLEGATE_AUTHZEN_PDP_URL", value_name = "URL")]
    pub authzen_pdp_url: Option<String>,
}

impl ServeArgs {
    /// The settings of the sidecar (an upstream is required).
    pub fn settings(&self, config: Option<&Path>) -> Result<Settings, CliError> {
        let mut o = overrides(config);
        self.listen.apply(&mut o);
        o.upstream.clone_from(&self.upstream);
        self.store.apply(&mut o);
        o.worker_threads = self.worker_threads;
        o.drain_seconds = self.drain_seconds;
        o.passthrough = self.passthrough;
        o.authzen_listen.clone_from(&self.authzen_listen);
        o.authzen_pep_token_file
            .clone_from(&self.authzen_pep_token_file);
        o.authzen_pdp_url.clone_from(&self.authzen_pdp_url);
        Ok(Settings::resolve(&o, &ProcessEnv, true)?)
    }
}

pub fn run(config: Option<&Path>, args: &ServeArgs) -> Result<(), CliError> {
    let settings = args.settings(config)?;
    super::runtime(settings.worker_threads)?.block_on(serve(settings))
}

async fn serve(settings: Settings) -> Result<(), CliError> {
    crate::telemetry::init();
    let state = app::build(settings).await?;
    // Listen before `start` announces readiness: a SIGTERM that arrives right
    // after must drain, not meet the default action (kill).
    let signal = shutdown_signal();
    let running = app::start(state).await?;
    signal.await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
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
