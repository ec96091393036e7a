//! The policy authors' toolchain behind `rolegate fmt`, `test` and `explain`:
//! formatting, request-level test cases and explanations. They work on the
//! policy files alone (no store, no upstream, no HTTP server), deciding with
//! the core's own functions, so they run in CI and on a laptop. The commands
//! that print their results are in `cli`.

pub mod explain;
pub mod fmt;
pub mod testing;
