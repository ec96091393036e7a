//! All integration tests, linked into one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic: that is how they fail

mod support;

mod forward_auth;
mod request_path;
