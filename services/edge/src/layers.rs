//! The XKS request pipeline as tower middleware (see `app.rs` for the order
//! and why each step sits where it does). Each step either passes the request
//! on with what it learnt in the request extensions, or answers with an
//! `XksError` response; the wire mapping lives only in `error.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::audit::Audit;
use crate::error::{Outcome, XksError};
use crate::json_response;
use crate::state::AppState;
use crate::xks::{self, OwnedRoute};

/// When the request's total budget runs out.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// The request body, buffered within `max_body_bytes`.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

fn audit_of(resp: &mut Response) -> &mut Audit {
    resp.extensions_mut().get_or_insert_default::<Audit>()
}

/// Span, audit line and metrics for every XKS request.
pub async fn observe(State(_): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = xks::route(req.uri().path()).map(OwnedRoute::from);
    let (uri_path, operation, key_id) = route
        .as_ref()
        .map(|r| (r.uri_path.clone(), r.operation.as_str(), r.key_id.clone()))
        .unwrap_or_default();
    let operation = if route.is_some() {
        operation
    } else {
        "Unknown"
    };
    // Debug level: the audit line already carries these fields, so the span
    // costs nothing unless traces are exported (or RUST_LOG=debug).
    let span = tracing::debug_span!(
        "xks",
        operation,
        uri_path = %uri_path,
        key_id = %key_id,
        kms_request_id = tracing::field::Empty
    );
    let mut resp = match route {
        None => XksError::InvalidUriPath.into_response(),
        Some(route) => {
            req.extensions_mut().insert(route);
            next.run(req).instrument(span.clone()).await
        }
    };
    let latency = start.elapsed();
    let outcome = resp
        .extensions()
        .get::<Outcome>()
        .map_or("success", |o| o.0);
    let status = resp.status().as_u16();
    let audit = audit_of(&mut resp);
    if let Some(id) = &audit.kms_request_id {
        span.record("kms_request_id", id.as_str());
    }
    let _entered = span.enter();
    audit.log(&uri_path, operation, &key_id, status, outcome, latency);
    metrics::counter!("keymesh_edge_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("keymesh_edge_request_seconds", "operation" => operation)
        .record(latency.as_secs_f64());
    resp
}

/// The total budget; past it → 503 DependencyTimeoutException.
pub async fn deadline(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let at = Instant::now() + state.config.deadline();
    req.extensions_mut().insert(Deadline(at));
    match tokio::time::timeout_at(at, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => XksError::DependencyTimeout.into_response(),
    }
}

/// 405 for anything but POST; 404 for a key store we do not serve.
pub async fn resolve(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return XksError::MethodNotAllowed.into_response();
    }
    let known = req
        .extensions()
        .get::<OwnedRoute>()
        .is_some_and(|r| state.keystores.get().get(&r.uri_path).is_some());
    if !known {
        return XksError::InvalidUriPath.into_response();
    }
    next.run(req).await
}

/// How much of an oversized body is read and discarded so an HTTP/1.1 client
/// that is still sending sees the answer instead of a reset connection.
const DRAIN_CAP: usize = 1 << 20;

/// Why a body could not be buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the allowed bytes.
    TooLarge,
    /// The connection failed mid-body.
    Unreadable,
    /// The body did not arrive before the deadline.
    Late,
}

/// Buffer at most `max` bytes of `body` before `at` (shared by every
/// dialect's body-limit layer). An oversized body is drained up to
/// [`DRAIN_CAP`] so the client reads the refusal.
pub async fn read_bounded(
    mut body: axum::body::Body,
    max: usize,
    at: Instant,
    declared: Option<usize>,
) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let mut seen = 0usize;
    let read = tokio::time::timeout_at(at, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ())?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen <= max {
                    buf.extend_from_slice(&data);
                } else if seen > DRAIN_CAP {
                    break;
                }
            }
        }
        Ok::<(), ()>(())
    })
    .await;
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    match read {
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(())) => Err(BodyError::Unreadable),
        Err(_) => Err(BodyError::Late),
    }
}

/// Buffer at most `max_body_bytes` (501 beyond); a body that fails or stalls → 400.
pub async fn body_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let max = state.config.max_body_bytes;
    let Some(Deadline(at)) = req.extensions().get::<Deadline>().copied() else {
        return XksError::Internal.into_response();
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let (mut parts, body) = req.into_parts();
    let bytes = match read_bounded(body, max, at, declared).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return XksError::Unsupported("the request body exceeds this proxy's maximum size")
                .into_response();
        }
        Err(BodyError::Unreadable) => {
            return XksError::Validation("the request body could not be read").into_response();
        }
        Err(BodyError::Late) => {
            return XksError::Validation("the request body did not arrive in time").into_response();
        }
    };
    parts.extensions.insert(RawBody(bytes));
    next.run(Request::from_parts(parts, axum::body::Body::empty()))
        .await
}

/// SigV4 against the addressed key store's credentials (401), then Content-Type (400).
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let verified = match (
        parts.extensions.get::<OwnedRoute>(),
        parts.extensions.get::<RawBody>(),
    ) {
        (Some(route), Some(RawBody(bytes))) => {
            xks::authenticate(&state, &route.uri_path, &parts, bytes)
        }
        _ => Err(XksError::Internal),
    };
    let access_key_id = match verified {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if !xks::content_type_ok(&parts.headers) {
        let mut resp =
            XksError::Validation("Content-Type must be application/json").into_response();
        audit_of(&mut resp).access_key_id = Some(access_key_id);
        return resp;
    }
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    audit_of(&mut resp).access_key_id = Some(access_key_id);
    resp
}

/// Quota per (key store, operation) through the limiter's lease cache (429).
pub async fn rate_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (Some(route), Some(Deadline(at))) = (
        req.extensions().get::<OwnedRoute>(),
        req.extensions().get::<Deadline>().copied(),
    ) else {
        return XksError::Internal.into_response();
    };
    if let Err(e) = xks::rate_limit(&state, &route.uri_path, route.operation, at).await {
        return e.into_response();
    }
    next.run(req).await
}

/// Load shedding at the last step before the worker call: with less than
/// `shed_floor_ms` of the budget left, no worker round trip can finish in time
/// (a loopback gRPC hop alone costs ~0.1 ms, an HSM operation more, and a
/// queue adds to both), so the request would end as a 503
/// DependencyTimeoutException after holding a worker slot. Refusing now with
/// 429 ThrottlingException tells the caller to back off instead. The second
/// half of the rule, a worker whose queue exceeds the remaining budget, is
/// decided per worker in `WorkerPool::call`.
///
/// Called by [`handler`] rather than wrapped as one more `from_fn` layer: it
/// needs no state of its own, and a middleware layer costs a boxed future per
/// request (measurable at ~20k req/s on two cores).
fn shed(state: &AppState, route: &OwnedRoute, at: Instant) -> Option<Response> {
    if at.saturating_duration_since(Instant::now()) >= state.config.shed_floor() {
        return None;
    }
    metrics::counter!("keymesh_edge_shed_total", "operation" => route.operation.as_str(), "reason" => "deadline")
        .increment(1);
    Some(XksError::Throttled.into_response())
}

/// The operation itself.
pub async fn handler(state: Arc<AppState>, req: Request) -> Result<Response, Infallible> {
    let ext = req.extensions();
    let (Some(route), Some(Deadline(at)), Some(RawBody(body))) = (
        ext.get::<OwnedRoute>(),
        ext.get::<Deadline>().copied(),
        ext.get::<RawBody>(),
    ) else {
        return Ok(XksError::Internal.into_response());
    };
    if let Some(refused) = shed(&state, route, at) {
        return Ok(refused);
    }
    let mut audit = Audit::default();
    let mut resp = match xks::handle(&state, &route.borrow(), body, at, &mut audit).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(audit);
    Ok(resp)
}
