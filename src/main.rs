//! The `rolegate` binary: parse the command line and run it (see `rolegate::cli`).

use clap::Parser;

/// jemalloc on Linux (see `rolegate::app::allocator` for why).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    rolegate::cli::run(rolegate::cli::Cli::parse())
}
