//! All integration tests, linked into one binary.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod architecture;
mod authzen;
mod cli;
mod deploy;
mod forward_auth;
mod hostile;
mod lifecycle;
mod nginx;
mod playback;
mod policy_tools;
mod properties;
mod reload;
mod replicas;
mod request_path;
mod route_table;
mod upstream;
mod users;
