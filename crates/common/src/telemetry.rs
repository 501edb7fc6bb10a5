//! Logs and traces, set up once per process.
//!
//! Logs are JSON lines on stderr filtered by `RUST_LOG` (default `info`).
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over
//! OTLP/gRPC, and trace ids cross service hops through W3C `traceparent`
//! metadata (see [`crate::propagation`]). With the exporter on, every log
//! line written inside a traced span also carries `trace_id` and `span_id`,
//! so a log line leads to its trace and back.

use std::fmt::Write as _;

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What the trace exporter records: INFO everywhere plus keymesh's request spans.
const SPAN_FILTER: &str = "info,keymesh_edge=debug,keymesh_common=debug,keymesh_crypto_worker=debug,keymesh_rate_limiter=debug";

/// Flushes exported spans when dropped; keep it alive in `main`.
#[must_use]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Install the process-wide subscriber. `service` names the OTLP resource.
pub fn init(service: &'static str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        _ => None,
    };
    subscriber(service, filter, std::io::stderr, provider.as_ref()).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// The subscriber [`init`] installs: JSON logs to `writer` filtered by
/// `filter`, plus span export through `provider` when there is one.
/// (Separate from `init` so a test can capture the log lines.)
pub fn subscriber<W>(
    service: &'static str,
    filter: EnvFilter,
    writer: W,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let json = tracing_subscriber::fmt::format()
        .json()
        .with_current_span(true)
        .with_span_list(false);
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .event_format(WithTraceIds {
            inner: json,
            // Without an exporter there are no trace ids to add: the wrapper
            // then costs one branch per log line.
            enabled: provider.is_some(),
        })
        .with_writer(writer)
        .with_filter(filter);
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            // Request spans are DEBUG so that plain logging never pays for them;
            // the exporter wants them.
            .with_filter(EnvFilter::new(SPAN_FILTER))
    });
    tracing_subscriber::registry().with(fmt).with(otel)
}

/// A JSON event format that appends `"trace_id"` and `"span_id"` of the
/// current OpenTelemetry span to each line.
///
/// The request spans are DEBUG and the log filter usually INFO, so the fmt
/// layer itself cannot see them (per-layer filtering hides them from its
/// context); the ids come from the OTel layer's data for the thread's current
/// span instead. The inner formatter's object is written to a buffer and the
/// ids spliced in before its closing brace: the JSON formatter has no hook for
/// extra fields, and only lines inside a traced span take this path.
struct WithTraceIds<F> {
    inner: F,
    enabled: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = if self.enabled {
            ctx.current_span().id().and_then(otel_ids)
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(512);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&splice_ids(&line, trace_id, span_id))
    }
}

/// `line` (one JSON object and a newline) with the two ids added as the
/// object's last fields; unchanged if it is not an object.
fn splice_ids(line: &str, trace_id: TraceId, span_id: SpanId) -> String {
    let Some(body) = line.trim_end().strip_suffix('}') else {
        return line.to_owned();
    };
    let sep = if body.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    let mut out = String::with_capacity(body.len() + 80);
    out.push_str(body);
    // Hex ids need no JSON escaping.
    let _ = writeln!(
        out,
        "{sep}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
    );
    out
}

/// The OTel trace and span id of span `id`, when the OTel layer traces it.
/// Looks the dispatcher up again because `FormatEvent` is not given it; under
/// the process-wide subscriber [`init`] installs that lookup always succeeds
/// (a scoped `with_default` subscriber would yield no ids, never a wrong one).
fn otel_ids(id: &tracing::span::Id) -> Option<(TraceId, SpanId)> {
    tracing::dispatcher::get_default(|dispatch| {
        let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn ids_are_spliced_into_the_object() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let s = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let out = splice_ids("{\"level\":\"INFO\",\"fields\":{\"a\":1}}\n", t, s);
        assert_eq!(
            out,
            "{\"level\":\"INFO\",\"fields\":{\"a\":1},\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(splice_ids("not json\n", t, s), "not json\n");
    }
}
