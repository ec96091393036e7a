//! All integration tests, linked into one binary.

mod support;

mod request_path;
