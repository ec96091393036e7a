//! All integration tests, linked into one binary.

mod support;

mod policy_tools;
mod request_path;
