//! The `rolegate` binary: parse the command line and run it (see `rolegate::cli`).

use clap::Parser;

/// jemalloc where it is built (which targets, and why: `rolegate::app::allocator`).
#[global_allocator]
static ALLOCATOR: rolegate::app::allocator::Global = rolegate::app::allocator::GLOBAL;

fn main() -> std::process::ExitCode {
    rolegate::cli::run(rolegate::cli::Cli::parse())
}
