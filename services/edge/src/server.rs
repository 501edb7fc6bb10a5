//! The HTTP(S) listener and the per-request pipeline.
//!
//! Outermost first: probes (unauthenticated GETs for load balancers) → route
//! (404) → span + deadline (503 past it) → method (405) → body size limit
//! before authentication (501) → SigV4 (401) → quota (429) → the XKS
//! handler. Every error becomes the XKS JSON shape in exactly one place
//! (`XksError::into_response`), and every request writes one audit line.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::Instrument;

use crate::audit::Audit;
use crate::error::XksError;
use crate::json_response;
use crate::state::AppState;
use crate::xks::{self, Route};

/// How long a client may take to finish the TLS handshake or send headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Serve until `shutdown` resolves, then drain in-flight connections.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(state, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            let result = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}

/// Load-balancer probes and metrics: GET, no SigV4 (XKS-80).
fn probe(state: &AppState, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    if !matches!(path, "/ping" | "/livez" | "/readyz" | "/metrics") {
        return None;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Some(XksError::MethodNotAllowed.into_response());
    }
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    Some(match path {
        "/readyz" if !state.workers.ready() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
        }
        "/metrics" => text(
            StatusCode::OK,
            state
                .metrics
                .as_ref()
                .map(|m| m.render())
                .unwrap_or_default(),
        ),
        _ => text(StatusCode::OK, "ok\n".into()),
    })
}

pub async fn respond(state: Arc<AppState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(resp) = probe(&state, &req) {
        return resp;
    }
    let start = Instant::now();
    let deadline = start + state.config.deadline();
    let path = req.uri().path().to_owned();
    let mut audit = Audit::default();
    let route = xks::route(&path);
    let (uri_path, operation, key_id) = route
        .as_ref()
        .map(|r| (r.uri_path, r.operation.as_str(), r.key_id))
        .unwrap_or(("", "Unknown", ""));
    let span = tracing::info_span!(
        "xks",
        operation,
        uri_path,
        key_id,
        kms_request_id = tracing::field::Empty
    );
    let result = match &route {
        None => Err(XksError::InvalidUriPath),
        Some(route) => {
            let work = pipeline(&state, route, req, deadline, &mut audit).instrument(span.clone());
            tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or(Err(XksError::DependencyTimeout))
        }
    };
    if let Some(id) = &audit.kms_request_id {
        span.record("kms_request_id", id.as_str());
    }
    let (response, outcome) = match result {
        Ok(body) => (json_response(StatusCode::OK, body), "success"),
        Err(e) => (e.into_response(), e.name()),
    };
    let latency = start.elapsed();
    let status = response.status().as_u16();
    let _entered = span.enter();
    audit.log(uri_path, operation, key_id, status, outcome, latency);
    metrics::counter!("keymesh_edge_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("keymesh_edge_request_seconds", "operation" => operation)
        .record(latency.as_secs_f64());
    response
}

async fn pipeline(
    state: &Arc<AppState>,
    route: &Route<'_>,
    req: Request<Incoming>,
    deadline: Instant,
    audit: &mut Audit,
) -> Result<Bytes, XksError> {
    if req.method() != Method::POST {
        return Err(XksError::MethodNotAllowed);
    }
    if state.keystores.get().get(route.uri_path).is_none() {
        return Err(XksError::InvalidUriPath);
    }
    let (parts, body) = req.into_parts();
    // Refuse oversized bodies before buffering or authenticating anything.
    let max = state.config.max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(XksError::Unsupported(
            "the request body exceeds this proxy's maximum size",
        ));
    }
    let body = match tokio::time::timeout_at(deadline, Limited::new(body, max).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(XksError::Unsupported(
                "the request body exceeds this proxy's maximum size",
            ));
        }
        Ok(Err(_)) => return Err(XksError::Validation("the request body could not be read")),
        Err(_) => {
            return Err(XksError::Validation(
                "the request body did not arrive in time",
            ));
        }
    };
    audit.access_key_id = Some(xks::authenticate(state, route, &parts, &body)?);
    if !xks::content_type_ok(&parts.headers) {
        return Err(XksError::Validation(
            "Content-Type must be application/json",
        ));
    }
    xks::rate_limit(state, route, deadline).await?;
    xks::handle(state, route, &body, deadline, audit).await
}
