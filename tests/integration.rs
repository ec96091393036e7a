//! All integration tests, linked into one binary.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api_input;
mod architecture;
mod authzen;
mod browser;
mod changelog;
mod cli;
mod dashboard;
mod deploy;
mod ext_authz;
mod ext_authz_envoy;
mod forward_auth;
mod hostile;
mod http2;
mod lifecycle;
mod nginx;
mod openapi;
mod playback;
mod policy_tools;
mod properties;
mod reload;
mod replicas;
mod request_path;
mod route_table;
mod tls;
mod tracing;
mod upstream;
mod users;
mod websocket;
mod websocket_h2;
