//! Prometheus metrics: the process-wide recorder and a `GET /metrics` listener.
//!
//! Services record with the `metrics` macros. Until [`install`] runs those are
//! no-ops, so a service started without a metrics listener pays nothing. The
//! edge renders the handle on its main listener; the crypto-worker and the
//! rate-limiter speak gRPC on theirs and serve `/metrics` from a separate,
//! opt-in listener ([`serve`], [`install_and_serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of every keymesh latency histogram. An AES-GCM call
/// on a session-object key takes tens of µs, a request through the mesh a
/// millisecond or two, and AWS KMS gives each call 250 ms: the buckets are
/// dense from 25 µs to 100 ms and stop at 1 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// How often histogram samples are folded into buckets when nobody scrapes
/// (`install_recorder` leaves upkeep to the caller; without it the raw
/// samples grow until the next scrape).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format version the handle renders.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A builder with keymesh's histogram buckets (every histogram is a latency
/// in seconds); histograms render as real Prometheus histograms, so p99 can
/// be aggregated across replicas, which summaries cannot.
pub fn builder() -> anyhow::Result<PrometheusBuilder> {
    Ok(PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS)?)
}

/// Install the process-wide recorder and start its upkeep task on the current
/// tokio runtime. Call once, from `main`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| anyhow::anyhow!("metrics upkeep needs a tokio runtime: {e}"))?;
    let handle = builder()?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The answer to one scrape request: `GET /metrics` renders `handle`.
pub fn respond<B>(handle: &PrometheusHandle, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, Bytes::from(handle.render())),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
        _ => (StatusCode::NOT_FOUND, Bytes::new()),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if status == StatusCode::OK {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(CONTENT_TYPE),
        );
    }
    resp
}

/// Serve `GET /metrics` (HTTP/1.1) on `listener` until `shutdown` resolves.
/// Scrapes are rare and small: one task per connection, no limits beyond
/// hyper's defaults.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            () = &mut shutdown => return,
            conn = listener.accept() => conn,
        };
        let stream = match conn {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE; the next accept may succeed, and spinning
                // on a persistent error is worse than a short pause.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = respond(&handle, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// Install the recorder, bind `addr` and serve `/metrics` there in the
/// background for the rest of the process (scrapes keep working while the
/// gRPC server drains). Returns the bound address.
pub async fn install_and_serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let handle = install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the metrics listener {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, handle, std::future::pending()));
    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_histograms_with_buckets() {
        // A local recorder: tests never install the process-wide one.
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("t_hsm_seconds", "op" => "encrypt").record(0.000_3);
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, handle, async {
            let _ = stopped.await;
        }));

        let ok = get(addr, "GET", "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(
            ok.contains("t_hsm_seconds_bucket{op=\"encrypt\",le=\"0.0005\"} 1"),
            "{ok}"
        );
        assert!(
            ok.contains("t_hsm_seconds_bucket{op=\"encrypt\",le=\"0.00025\"} 0"),
            "{ok}"
        );
        assert!(get(addr, "GET", "/").await.starts_with("HTTP/1.1 404"));
        assert!(
            get(addr, "POST", "/metrics")
                .await
                .starts_with("HTTP/1.1 405")
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
