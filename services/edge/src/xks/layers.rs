//! The XKS request pipeline as tower middleware (see [`service`] for the
//! order and why each step sits where it does). Each step either passes the request
//! on with what it learnt in the request extensions, or answers with an
//! `XksError` response; the wire mapping lives only in `error.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder};
use tracing::Instrument;

use super::audit::Audit;
use super::error::{Outcome, XksError};
use super::handlers::{self as xks, OwnedRoute};
use crate::http::abuse::{Peer, PreAuthBytes};
use crate::http::body::{BodyError, RawBody, closes_connection, declared_length, read_bounded};
use crate::http::cause::Cause;
use crate::http::{Deadline, json_response};
use crate::state::AppState;

/// The XKS API: the tower stack, outermost first, ending in the handler.
pub fn service(
    state: Arc<AppState>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        // Outermost: it sees every outcome, so it owns the span, the one
        // audit line per request and the request metrics.
        .layer(from_fn_with_state(Arc::clone(&state), observe))
        // The total budget covers everything below; gRPC hops get the
        // remainder as their grpc-timeout. Past it: 503.
        .layer(from_fn_with_state(Arc::clone(&state), deadline))
        // Unknown key store → 404 and non-POST → 405 before any work.
        .layer(from_fn_with_state(Arc::clone(&state), resolve))
        // Bounded buffering before authentication: SigV4 hashes the exact
        // body bytes, and nobody unauthenticated may make us buffer more.
        .layer(from_fn_with_state(Arc::clone(&state), body_limit))
        .layer(from_fn_with_state(Arc::clone(&state), authenticate))
        // Quota after authentication, so nobody can spend another tenant's.
        .layer(from_fn_with_state(Arc::clone(&state), rate_limit))
        // The handler sheds load first (429 when too little budget is left):
        // only there is the budget for the worker call known, after body
        // reading, SigV4 and the limiter have spent theirs.
        .service_fn(move |req| handler(Arc::clone(&state), req))
}

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
