//! rolegate: an authorization sidecar for stream-platform APIs.
//!
//! Every way of asking "may this caller do this?" is a front door onto one
//! decision core. Modules in layers, imports pointing only down (enforced by
//! `tests/architecture.rs`):
//!
//! - [`cli`] — the command line, one file per subcommand;
//! - [`app`] — wiring: listeners and their accept loop, the data-listener
//!   pipeline, reload, following a shared store's changes, shutdown;
//! - front doors — [`proxy`] (forwarding with an [`decision::Allowed`]),
//!   [`forward_auth`] (nginx, Traefik), [`ext_authz`] (Envoy, Istio),
//!   [`authzen`] (the AuthZEN evaluation API), [`api`] (the management API),
//!   [`dashboard`] (its web pages, public static files), [`ops`];
//! - [`state`], [`config`] — the shared components and the settings;
//! - the decision core — [`decision`] (**where the decision is made**:
//!   credential + request description → verdict), [`policy_tools`] (the
//!   offline `check`/`fmt`/`test`/`explain`), [`error`] and [`reason`] (the
//!   one mapping of failures to responses), [`authz`] (policies, routes,
//!   Cedar), [`authn`] (credentials, tokens, the principal cache),
//!   [`request`] (path, query, client address, head checks);
//! - [`store`] — SQLite or PostgreSQL behind one trait;
//! - support — [`metrics`], [`telemetry`], [`clock`].
//!
//! The request path: [`request::path`] (normal form) → [`authn::credential`]
//! (which header) → [`authn::cache`] (who, at their current role) →
//! [`authz::routes`] (which action on which resource) → [`authz::decide`]
//! (Cedar) → [`decision::allowed`] (the proof) → [`proxy`] (upstream) or
//! [`api`] (rolegate's own endpoints).

pub mod api;
pub mod app;
pub mod authn;
pub mod authz;
pub mod authzen;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod decision;
pub mod error;
pub mod ext_authz;
pub mod forward_auth;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod policy_tools;
pub mod proxy;
pub mod reason;
pub mod request;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
