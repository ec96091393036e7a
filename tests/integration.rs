//! All integration tests, linked into one binary.

mod support;

mod playback;
mod request_path;
