//! Logging: `tracing` with an env filter (`RUST_LOG`, default `info`), plain
//! text on a terminal and JSON lines otherwise (`ROLEGATE_LOG_FORMAT=json|text`).
//! Tokens, keys and passwords are never logged: the request path logs ids and
//! reason codes only.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("ROLEGATE_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
