//! rolegate: an authorization sidecar for stream-platform APIs.
//!
//! The request path, in file order: [`path`] (normalise) → [`policy::routes`]
//! (match) → [`credential`] (which header) → [`token`] / [`cache`] / [`store`]
//! (who) → [`policy`] (Cedar decides) → [`forward`] (upstream) or
//! [`handlers`] (rolegate's own endpoints). [`error`] is the one place
//! failures become responses.

pub mod api;
pub mod app;
pub mod authn;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod error;
pub mod forward_auth;
pub mod metrics;
pub mod ops;
pub mod policy_tools;
pub mod proxy;
pub mod reason;
pub mod request;
pub mod state;
pub mod store;
pub mod telemetry;
