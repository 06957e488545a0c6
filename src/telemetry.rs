//! Logs: JSON lines for CloudWatch, each under the runtime's invocation span; a request's line
//! carries its metrics in CloudWatch's embedded metric format (`metrics`).

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs as JSON lines (CloudWatch-friendly) at `RUST_LOG` or `info`. Every line logged during
/// an invocation carries the runtime's invocation span (`"span": {"requestId": ...}`), so lines
/// of invocations served at once (Lambda Managed Instances) are told apart by their own id.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = tracing_subscriber::fmt::format()
        .json()
        .with_target(false)
        .without_time()
        .with_current_span(true)
        .with_span_list(false);
    tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(WithMetrics(json))
        .with_env_filter(filter)
        .init();
}

/// The JSON format, with a line's `emf` field made an embedded-metric-format document.
struct WithMetrics(Format<Json, ()>);

impl<S, N> FormatEvent<S, N> for WithMetrics
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match crate::metrics::lift(&line) {
            Some(doc) => writeln!(writer, "{doc}"),
            None => writer.write_str(&line),
        }
    }
}
