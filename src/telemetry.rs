//! Logs: JSON lines for CloudWatch, each under the runtime's invocation span.

/// Logs as JSON lines (CloudWatch-friendly) at `RUST_LOG` or `info`. Every line logged during
/// an invocation carries the runtime's invocation span (`"span": {"requestId": ...}`), so lines
/// of invocations served at once (Lambda Managed Instances) are told apart by their own id.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_current_span(true)
        .with_span_list(false)
        .init();
}
