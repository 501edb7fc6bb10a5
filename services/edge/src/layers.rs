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

use crate::abuse::{Peer, PreAuthBudget, PreAuthBytes};
use crate::audit::Audit;
use crate::cause::Cause;
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
    let cause = resp.extensions_mut().remove::<Cause>();
    let audit = audit_of(&mut resp);
    if let Some(Cause(c)) = cause {
        audit.cause = Some(c);
    }
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

/// First buffer of a declared body: one up to this size is buffered in one
/// allocation of its exact size.
const FIRST_BUFFER: usize = 64 << 10;
/// Growth factor beyond it: a 1 MiB body costs two reallocations, and the
/// allocator keeps little of the buffers it outgrew.
const GROWTH: usize = 4;

/// Why a body could not be buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the allowed bytes, declared or sent.
    TooLarge,
    /// The edge-wide budget of bytes buffered before authentication is spent.
    OverBudget,
    /// The connection failed mid-body.
    Unreadable,
    /// The body did not arrive before the deadline.
    Late,
}

/// The `Content-Length` a request declares, when it parses.
pub fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A buffered body and the pre-authentication bytes it holds.
#[derive(Debug)]
pub struct Bounded {
    pub bytes: Bytes,
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A body refused as too large may be left unread (a declared length over
/// the limit, or more than [`DRAIN_CAP`] sent): hyper then closes the HTTP/1.1
/// connection after the answer. Saying so in the answer stops a keep-alive
/// client from sending its next request into the closing socket. HTTP/2
/// forbids the header and resets just the stream, so it is left out there.
pub fn closes_connection(mut resp: Response, version: http::Version) -> Response {
    if version < http::Version::HTTP_2 {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Buffer at most `max` bytes of `body` before `at` (shared by every
/// dialect's body-limit layer), counting the buffer against `budget` as it
/// grows. A declared length above `max` is refused at once: the client may
/// never send those bytes, and waiting for them would hold the connection
/// to the deadline. A body found oversized (or over budget) while reading is
/// released and the rest drained up to [`DRAIN_CAP`], so an HTTP/1.1 client
/// still sending reads the refusal instead of a reset connection.
pub async fn read_bounded(
    mut body: axum::body::Body,
    max: usize,
    at: Instant,
    declared: Option<usize>,
    budget: &PreAuthBudget,
) -> Result<Bounded, BodyError> {
    if declared.is_some_and(|d| d > max) {
        return Err(BodyError::TooLarge);
    }
    // Grown as bytes arrive ([`FIRST_BUFFER`], then by [`GROWTH`]) up to
    // what the body can still need, each step taken from the budget before
    // it is allocated: the budget counts capacity, and a client that
    // declares a body but sends nothing holds nothing.
    let limit = declared.unwrap_or(max);
    // Without a declared length (HTTP/2 often sends none), the first frame
    // sizes the first buffer, so a one-frame body is buffered exactly.
    let first = if declared.is_some() { FIRST_BUFFER } else { 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut held = None;
    let mut seen = 0usize;
    let mut refused = None;
    let read = tokio::time::timeout_at(at, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if refused.is_none() {
                if seen > max {
                    refused = Some(BodyError::TooLarge);
                } else if seen > buf.capacity() {
                    let cap = seen
                        .max(buf.capacity().saturating_mul(GROWTH))
                        .max(first)
                        .min(limit.max(seen));
                    if budget.take(&mut held, cap - buf.capacity()) {
                        buf.reserve_exact(cap - buf.len());
                    } else {
                        refused = Some(BodyError::OverBudget);
                    }
                }
                match refused {
                    None => buf.extend_from_slice(&data),
                    Some(_) => {
                        buf = Vec::new();
                        held = None;
                    }
                }
            }
            if refused.is_some() && seen > DRAIN_CAP {
                break;
            }
        }
        Ok::<(), ()>(())
    })
    .await;
    if let Some(e) = refused {
        return Err(e);
    }
    match read {
        Ok(Ok(())) => Ok(Bounded {
            bytes: Bytes::from(buf),
            held,
        }),
        Ok(Err(())) => Err(BodyError::Unreadable),
        Err(_) => Err(BodyError::Late),
    }
}

/// Buffer at most `max_body_bytes` (501 beyond; 429 when the pre-auth budget
/// is spent); a body that fails or stalls → 400.
pub async fn body_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let max = state.config.max_body_bytes;
    let Some(Deadline(at)) = req.extensions().get::<Deadline>().copied() else {
        return XksError::Internal.into_response();
    };
    let declared = declared_length(req.headers());
    let (mut parts, body) = req.into_parts();
    let bounded = match read_bounded(body, max, at, declared, &state.abuse.preauth).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return closes_connection(
                XksError::Unsupported("the request body exceeds this proxy's maximum size")
                    .into_response(),
                parts.version,
            );
        }
        Err(BodyError::OverBudget) => return XksError::Throttled.into_response(),
        Err(BodyError::Unreadable) => {
            return XksError::Validation("the request body could not be read").into_response();
        }
        Err(BodyError::Late) => {
            return XksError::Validation("the request body did not arrive in time").into_response();
        }
    };
    parts.extensions.insert(RawBody(bounded.bytes));
    if let Some(p) = bounded.held {
        parts.extensions.insert(PreAuthBytes(Arc::new(p)));
    }
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
        // A failed signature costs its source; past its budget → 429.
        Err(e) => {
            let peer = Peer::of(&parts.extensions);
            if matches!(e, XksError::Authentication(_)) && !state.abuse.sources.admit(peer) {
                return XksError::Throttled.into_response();
            }
            return e.into_response();
        }
    };
    // Authenticated: its body no longer counts as pre-authentication bytes.
    let mut parts = parts;
    parts.extensions.remove::<PreAuthBytes>();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn chunks(n: usize, size: usize) -> axum::body::Body {
        let frames = (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size])));
        axum::body::Body::from_stream(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_declared_length_above_the_limit_is_refused_without_reading() {
        // A body that never sends a byte: only an up-front refusal returns.
        let never = axum::body::Body::from_stream(futures_util::stream::pending::<
            Result<Bytes, std::io::Error>,
        >());
        let budget = PreAuthBudget::new(1 << 20);
        let r = read_bounded(never, 1000, later(), Some(1_000_000_000), &budget).await;
        assert_eq!(r.err(), Some(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn buffered_bytes_count_against_the_budget_until_dropped() {
        let budget = PreAuthBudget::new(1 << 20);
        let b = read_bounded(chunks(4, 1000), 65536, later(), Some(4000), &budget)
            .await
            .unwrap();
        assert_eq!(b.bytes.len(), 4000);
        // A declared body is buffered in one allocation of its size.
        assert_eq!(budget.available(), (1 << 20) - 4000);
        drop(b);
        assert_eq!(budget.available(), 1 << 20);
        // Undeclared: sized by the frames, never past the limit.
        let b = read_bounded(chunks(3, 10_000), 65536, later(), None, &budget)
            .await
            .unwrap();
        assert_eq!(b.bytes.len(), 30_000);
        assert!((1 << 20) - budget.available() <= 65536);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_and_keeps_nothing() {
        let budget = PreAuthBudget::new(1 << 20);
        let mut hog = None;
        assert!(budget.take(&mut hog, (1 << 20) - 100));
        let r = read_bounded(chunks(2, 1000), 65536, later(), Some(2000), &budget).await;
        assert_eq!(r.err(), Some(BodyError::OverBudget));
        assert_eq!(budget.available(), 100);
        drop(hog);
        let r = read_bounded(chunks(2, 1000), 65536, later(), Some(2000), &budget).await;
        assert_eq!(r.map(|b| b.bytes.len()).ok(), Some(2000));
    }

    #[tokio::test]
    async fn a_body_found_oversized_while_reading_is_refused() {
        let budget = PreAuthBudget::new(1 << 20);
        let r = read_bounded(chunks(10, 1000), 5000, later(), None, &budget).await;
        assert_eq!(r.err(), Some(BodyError::TooLarge));
        assert_eq!(budget.available(), 1 << 20);
    }
}
