//! Logging. Secrets never reach a log line: keys and tokens are redacted types, the request
//! context names route templates rather than paths, and nothing logs a request body.
//!
//! Every line logged while a request is handled starts with that request's context
//! (`request{method=… route=… request_id=…}:`), as a span's fields would. It is kept in a
//! task-local ([`scope`]) rather than in a `tracing` span: a span is registered, has its
//! fields formatted into a string and is entered and left at every poll, on every request,
//! whether anything is logged or not; the task-local costs a pointer swap per poll, and the
//! context is written only into a line that is logged (`docs/decisions.md`).

use axum::http::{HeaderValue, Method};
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (an `EnvFilter` directive such as `info` or `keyward=debug`);
/// `RUST_LOG` wins when set. Plain text, without colours, on a terminal too.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields())
        .event_format(Line)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What identifies the request a log line was written for (SPEC §3).
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub method: Method,
    /// The route template, never the path: a link's path holds its token.
    pub route: Cow<'static, str>,
    /// The id keyward chose (SPEC §3).
    pub request_id: HeaderValue,
    /// The client's own `X-Request-Id`, cut short, when keyward did not take it.
    pub client_request_id: Option<String>,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// `work`, with `context` named on every line it logs.
pub fn scope<F: Future>(
    context: RequestContext,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<RequestContext, F> {
    REQUEST.scope(context, work)
}

/// Runs `log` with `context` named on every line it logs (after the request's work is done).
pub fn within<R>(context: RequestContext, log: impl FnOnce() -> R) -> R {
    REQUEST.sync_scope(context, log)
}

/// `name=value` pairs, the message bare: the default format's text without its styling,
/// which (even when off) was a tenth of `/healthz`'s instructions (`docs/benchmarks.md`).
fn fields() -> impl for<'w> format::FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|writer, field, value| match field.name() {
        "message" => write!(writer, "{value:?}"),
        name => write!(writer, "{name}={value:?}"),
    })
    .delimited(" ")
}

/// The default line (time, level, spans, target, fields), with the request's context
/// written where its span would have been, outermost.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let metadata = event.metadata();
        write!(writer, " {:>5} ", metadata.level())?;
        let written = REQUEST.try_with(|request| {
            // Plain ASCII, both: a route template; an id keyward made or took only as
            // visible ASCII. Nothing to escape.
            write!(
                writer,
                "request{{method={} route={} request_id={}",
                request.method,
                request.route,
                request.request_id.to_str().unwrap_or("-")
            )?;
            if let Some(theirs) = &request.client_request_id {
                write!(writer, " client_request_id={theirs:?}")?;
            }
            writer.write_str("}: ")
        });
        if let Ok(result) = written {
            result?;
        }
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            writer.write_str(span.name())?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    write!(writer, "{{{fields}}}")?;
                }
            }
            writer.write_str(": ")?;
        }
        write!(writer, "{}: ", metadata.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_line_logged_for_a_request_names_it_first_then_its_spans() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .fmt_fields(fields())
            .event_format(Line)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let context = RequestContext {
            method: Method::POST,
            route: Cow::Borrowed("/api/v1/PartnerP2P/WhoAmI"),
            request_id: HeaderValue::from_static("0b5e-id"),
            client_request_id: Some("theirs".into()),
        };
        scope(context, async {
            let span = tracing::info_span!("onboard", partner_code = "ACME");
            let _entered = span.enter();
            tracing::info!(attempt = 2, "inside");
        })
        .await;
        tracing::info!("outside");

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(
                " INFO request{method=POST route=/api/v1/PartnerP2P/WhoAmI request_id=0b5e-id \
                 client_request_id=\"theirs\"}: onboard{partner_code=\"ACME\"}: \
                 keyward_server::telemetry::tests: inside attempt=2"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(" INFO keyward_server::telemetry::tests: outside"),
            "{}",
            lines[1]
        );
    }
}
