//! Logging. Secrets never reach a log line: keys and tokens are redacted types, spans name
//! route templates rather than paths, and nothing logs a request body.

use std::io::IsTerminal;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (an `EnvFilter` directive such as `info` or `keyward=debug`);
/// `RUST_LOG` wins when set.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// `name=value` pairs, the message bare: the default format's text without its styling.
/// Every request's span has its fields written when it is made, logged or not, and the
/// default formatter's styling (even when it is off) was a tenth of `/healthz`'s
/// instructions (`docs/benchmarks.md`).
fn fields() -> impl for<'w> format::FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| match field.name() {
        "message" => write!(writer, "{value:?}"),
        name => write!(writer, "{name}={value:?}"),
    })
    .delimited(" ")
}
