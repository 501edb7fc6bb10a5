//! Log lines inside a traced span carry that span's OTel trace and span ids.
//! Its own test binary: the check needs the process-wide subscriber, as in
//! the services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_lines_carry_trace_ids() {
    // No exporter: spans are still sampled and get real ids.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let lines = Lines::default();
    let writer = lines.clone();
    keymesh_common::telemetry::subscriber(
        "test",
        EnvFilter::new("info"),
        move || writer.clone(),
        Some(&provider),
    )
    .try_init()
    .unwrap();

    tracing::info!("outside any span");
    // DEBUG like the services' request spans: hidden from the INFO log filter.
    let span = tracing::debug_span!(target: "keymesh_common", "request");
    let (trace_id, span_id) = {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    span.in_scope(|| tracing::info!(answer = 42, "inside the request span"));

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(parsed.len(), 2, "{text}");
    assert!(parsed[0].get("trace_id").is_none(), "{text}");
    assert_eq!(parsed[1]["fields"]["answer"], 42, "{text}");
    assert_eq!(parsed[1]["trace_id"], trace_id.as_str(), "{text}");
    assert_eq!(parsed[1]["span_id"], span_id.as_str(), "{text}");
    assert_ne!(trace_id, "00000000000000000000000000000000");
}
