//! The `rolegate` binary: parse the command line and run it (see `rolegate::cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    rolegate::cli::run(rolegate::cli::Cli::parse())
}
