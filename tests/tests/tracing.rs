//! Observability end to end: one XKS Encrypt yields ONE OpenTelemetry trace
//! with spans from the edge, the rate-limiter and the crypto-worker, received
//! over OTLP/gRPC by a collector this test runs in-process; the edge's audit
//! line carries that trace's id; worker and limiter serve `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use keymesh_tests::xks::model::*;
use keymesh_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;

/// The `service.name` each binary passes to `telemetry::init`.
const EDGE: &str = "keymesh-edge";
const LIMITER: &str = "keymesh-rate-limiter";
const WORKER: &str = "crypto-worker";

/// Every span received, with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or("")
                .to_owned();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A trace id as received (16 bytes).
type TraceId = Vec<u8>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spans of the trace that holds the edge's Encrypt span, once spans of
/// all three services have arrived in it.
fn encrypt_trace(spans: &[(String, Span)]) -> Option<(TraceId, Vec<(String, Span)>)> {
    let (_, root) = spans.iter().find(|(svc, s)| {
        svc == EDGE && s.name == "xks" && string_attr(&s.attributes, "operation") == Some("Encrypt")
    })?;
    let trace: Vec<(String, Span)> = spans
        .iter()
        .filter(|(_, s)| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let services: HashSet<&str> = trace.iter().map(|(svc, _)| svc.as_str()).collect();
    [EDGE, LIMITER, WORKER]
        .iter()
        .all(|s| services.contains(s))
        .then(|| (root.trace_id.clone(), trace))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_one_trace_across_three_services() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let opts = MeshOptions {
        extra_env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{otlp}"),
            ),
            // Export within 100 ms instead of the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        metrics: true,
        ..MeshOptions::default()
    };
    // Mesh::start blocks (it polls with std sleeps): keep it off the runtime
    // threads that serve the collector.
    let mesh = tokio::task::spawn_blocking(move || Mesh::start(opts))
        .await
        .unwrap()
        .unwrap();

    // The edge's quota lease starts empty, so this first request also asks
    // the rate-limiter.
    let resp = mesh
        .client(TENANT_A)
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.body);

    let spans = Arc::clone(&collector.spans);
    let (trace_id, trace) = poll_async("spans of all three services in one trace", WAIT, || {
        let found = encrypt_trace(&spans.lock().unwrap());
        async move { found }
    })
    .await
    .unwrap_or_else(|e| {
        let got: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|(svc, s)| format!("{svc}/{} trace={}", s.name, hex(&s.trace_id)))
            .collect();
        panic!("{e}; received: {got:#?}")
    });

    // One connected tree: the edge's request span is the only root, every
    // other span's parent is in this trace, and the limiter's and the
    // worker's server spans hang off edge spans (the W3C traceparent hop).
    let ids: HashMap<&[u8], &str> = trace
        .iter()
        .map(|(svc, s)| (s.span_id.as_slice(), svc.as_str()))
        .collect();
    let describe = || {
        trace
            .iter()
            .map(|(svc, s)| {
                format!(
                    "{svc}/{} id={} parent={}",
                    s.name,
                    hex(&s.span_id),
                    hex(&s.parent_span_id)
                )
            })
            .collect::<Vec<_>>()
    };
    let roots: Vec<&(String, Span)> = trace
        .iter()
        .filter(|(_, s)| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root span: {:#?}", describe());
    assert_eq!(roots[0].0, EDGE, "{:#?}", describe());
    for (svc, s) in &trace {
        if !s.parent_span_id.is_empty() {
            assert!(
                ids.contains_key(s.parent_span_id.as_slice()),
                "{svc}/{} has a parent outside the trace: {:#?}",
                s.name,
                describe()
            );
        }
    }
    for remote in [LIMITER, WORKER] {
        assert!(
            trace.iter().any(
                |(svc, s)| svc == remote && ids.get(s.parent_span_id.as_slice()) == Some(&EDGE)
            ),
            "no {remote} span is a child of an edge span: {:#?}",
            describe()
        );
    }

    // The edge's audit line for this request carries the trace id.
    let needle = format!("\"trace_id\":\"{}\"", hex(&trace_id));
    let edge_logs: String = mesh
        .log_files()
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("edge"))
        })
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert!(
        edge_logs
            .lines()
            .any(|l| l.contains(&needle) && l.contains("Encrypt")),
        "no edge log line with {needle}:\n{edge_logs}"
    );

    // Worker and limiter metrics endpoints (the edge's is tested in xks_api).
    let scrape = |addr| {
        let (status, body) = http_request(addr, "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };
    let worker = scrape(mesh.worker_metrics_addrs[0]);
    for want in [
        "keymesh_worker_hsm_seconds_bucket{op=\"encrypt\",outcome=\"ok\",le=\"0.001\"}",
        "keymesh_worker_sessions_busy ",
        "keymesh_worker_pool_queue ",
        "keymesh_worker_health_status{status=\"active\"} 1",
    ] {
        assert!(
            worker.contains(want),
            "worker /metrics lacks {want}:\n{worker}"
        );
    }
    let limiter = scrape(mesh.limiter_metrics_addr.unwrap());
    assert!(
        limiter.contains("keymesh_limiter_decisions_total{decision="),
        "limiter /metrics:\n{limiter}"
    );

    drop(mesh);
    server.abort();
}
