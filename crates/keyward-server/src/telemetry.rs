//! Logging. Secrets never reach a log line: keys and tokens are redacted types, spans name
//! route templates rather than paths, and nothing logs a request body.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (an `EnvFilter` directive such as `info` or `keyward=debug`);
/// `RUST_LOG` wins when set.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
