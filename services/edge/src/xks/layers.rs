//! The XKS request pipeline, outermost first (see [`service`] for why each
//! step sits where it does). The route is parsed once, the key store looked
//! up once, and what the steps learn travels in one typed `Ctx`; each step
//! either passes on or fails with an [`XksError`], and [`service`] turns the
//! outcome into the answer in one place (the wire mapping lives only in
//! `error.rs`), through the shared rescue step that logs every 5xx once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tower::Service;
use tracing::Instrument;

use super::audit::Audit;
use super::error::XksError;
use super::handlers::{self as xks, Route};
use crate::http::abuse::Peer;
use crate::http::body::{BodyError, Bounded, closes_connection, declared_length, read_bounded};
use crate::http::json_response;
use crate::http::rescue::rescue;
use crate::state::AppState;
use keymesh_contracts::keystores::Keystore;

/// The XKS API as one tower service. The steps, outermost first:
///
/// 1. route (404) — outermost, with the span, the one audit line and the
///    request metrics: it sees every outcome;
/// 2. the total budget (503 past it) covers everything below; gRPC hops get
///    the remainder as their grpc-timeout;
/// 3. method (405) and key store (404) before any work;
/// 4. bounded body buffering (501 too large, 429 pre-auth budget spent)
///    before authentication: SigV4 hashes the exact body bytes, and nobody
///    unauthenticated may make us buffer more;
/// 5. SigV4 against that key store's credentials (401; 429 once the
///    source's failures are over budget), then Content-Type (400);
/// 6. the quota (429), after authentication so nobody spends another
///    tenant's;
/// 7. load shedding (429 when too little budget is left): only here is the
///    budget for the worker call known, after body reading, SigV4 and the
///    limiter have spent theirs;
/// 8. the operation.
///
/// Plain async steps rather than one `from_fn` layer each: a middleware
/// layer costs a boxed future per request, and the steps share a typed
/// context instead of re-reading request extensions.
pub fn service(
    state: Arc<AppState>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |req: Request| {
        let state = Arc::clone(&state);
        async move { Ok(observe(&state, req).await) }
    })
}

/// What the pipeline knows about one request, built as it goes: the route
/// (borrowed from the request head), its key store, its deadline.
struct Ctx<'a> {
    route: Route<'a>,
    keystore: &'a Keystore,
    deadline: Instant,
}

/// How a request failed on the way to its handler.
type Refused = crate::http::Refused<XksError>;

/// Span, audit line and metrics for every XKS request; the rescue step.
async fn observe(state: &Arc<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let route = xks::route(parts.uri.path());
    let (uri_path, operation, key_id) = match &route {
        Some(r) => (r.uri_path, r.operation.as_str(), r.key_id),
        None => ("", "Unknown", ""),
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
    let mut audit = Audit::default();
    let result = match route {
        None => Err(Refused::from(XksError::InvalidUriPath)),
        Some(route) => {
            deadline(state, route, &parts, body, &mut audit)
                .instrument(span.clone())
                .await
        }
    };
    let (resp, outcome) = match result {
        Ok(body) => (json_response(StatusCode::OK, body), "success"),
        Err(Refused { error, close }) => {
            let mut resp = error.into_response();
            let request_id = audit.kms_request_id.as_deref().unwrap_or("");
            audit.cause = rescue("xks", request_id, resp.status(), &error);
            if close {
                resp = closes_connection(resp, parts.version);
            }
            (resp, error.name())
        }
    };
    let latency = start.elapsed();
    let status = resp.status().as_u16();
    if let Some(id) = &audit.kms_request_id {
        span.record("kms_request_id", id.as_str());
    }
    let _entered = span.enter();
    audit.log(uri_path, operation, key_id, status, outcome, latency);
    metrics::counter!("keymesh_edge_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("keymesh_edge_request_seconds", "operation" => operation)
        .record(latency.as_secs_f64());
    resp
}

/// The total budget; past it → 503 DependencyTimeoutException.
async fn deadline(
    state: &Arc<AppState>,
    route: Route<'_>,
    parts: &Parts,
    body: Body,
    audit: &mut Audit,
) -> Result<Bytes, Refused> {
    let at = Instant::now() + state.config.deadline();
    match tokio::time::timeout_at(at, resolve(state, route, at, parts, body, audit)).await {
        Ok(r) => r,
        Err(_) => Err(XksError::DependencyTimeout.into()),
    }
}

/// 405 for anything but POST; 404 for a key store we do not serve. The one
/// key store lookup of the request.
async fn resolve(
    state: &Arc<AppState>,
    route: Route<'_>,
    at: Instant,
    parts: &Parts,
    body: Body,
    audit: &mut Audit,
) -> Result<Bytes, Refused> {
    if parts.method != Method::POST {
        return Err(XksError::MethodNotAllowed.into());
    }
    let keystores = state.keystores.get();
    let Some(keystore) = keystores.get(route.uri_path) else {
        return Err(XksError::InvalidUriPath.into());
    };
    let ctx = Ctx {
        route,
        keystore,
        deadline: at,
    };
    let mut body = body_limit(state, &ctx, parts, body).await?;
    authenticate(state, &ctx, parts, &body.bytes, audit)?;
    // Authenticated: its body no longer counts as pre-authentication bytes.
    body.held = None;
    rate_limit(state, &ctx).await?;
    handler(state, &ctx, &body, audit)
        .await
        .map_err(Refused::from)
}

/// Buffer at most `max_body_bytes` (501 beyond; 429 when the pre-auth budget
/// is spent); a body that fails or stalls → 400. The buffer's share of the
/// pre-authentication budget is held until authentication succeeds
/// ([`resolve`] drops it then).
async fn body_limit(
    state: &AppState,
    ctx: &Ctx<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Bounded, Refused> {
    let max = state.config.max_body_bytes;
    let declared = declared_length(&parts.headers);
    match read_bounded(body, max, ctx.deadline, declared, &state.abuse.preauth).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err(Refused {
            error: XksError::Unsupported("the request body exceeds this proxy's maximum size"),
            close: true,
        }),
        Err(BodyError::OverBudget) => Err(XksError::Throttled.into()),
        Err(BodyError::Unreadable) => {
            Err(XksError::Validation("the request body could not be read").into())
        }
        Err(BodyError::Late) => {
            Err(XksError::Validation("the request body did not arrive in time").into())
        }
    }
}

/// SigV4 against the addressed key store's credentials (401), then
/// Content-Type (400). The access key id goes to the audit line either way.
fn authenticate(
    state: &AppState,
    ctx: &Ctx<'_>,
    parts: &Parts,
    body: &[u8],
    audit: &mut Audit,
) -> Result<(), Refused> {
    let access_key_id = match xks::authenticate(state, ctx.keystore, parts, body) {
        Ok(id) => id,
        // A failed signature costs its source; past its budget → 429.
        Err(e) => {
            let peer = Peer::of(&parts.extensions);
            if matches!(e, XksError::Authentication(_)) && !state.abuse.sources.admit(peer) {
                return Err(XksError::Throttled.into());
            }
            return Err(e.into());
        }
    };
    audit.access_key_id = Some(access_key_id);
    if !xks::content_type_ok(&parts.headers) {
        return Err(XksError::Validation("Content-Type must be application/json").into());
    }
    Ok(())
}

/// Quota per (key store, operation) through the limiter's lease cache (429).
async fn rate_limit(state: &AppState, ctx: &Ctx<'_>) -> Result<(), Refused> {
    xks::rate_limit(state, ctx.route.uri_path, ctx.route.operation, ctx.deadline)
        .await
        .map_err(Refused::from)
}

/// Load shedding at the last step before the worker call: with less than
/// `shed_floor_ms` of the budget left, no worker round trip can finish in time
/// (a loopback gRPC hop alone costs ~0.1 ms, an HSM operation more, and a
/// queue adds to both), so the request would end as a 503
/// DependencyTimeoutException after holding a worker slot. Refusing now with
/// 429 ThrottlingException tells the caller to back off instead. The second
/// half of the rule, a worker whose queue exceeds the remaining budget, is
/// decided per worker in `WorkerPool::call`.
fn shed(state: &AppState, ctx: &Ctx<'_>) -> Result<(), XksError> {
    if ctx.deadline.saturating_duration_since(Instant::now()) >= state.config.shed_floor() {
        return Ok(());
    }
    metrics::counter!("keymesh_edge_shed_total", "operation" => ctx.route.operation.as_str(), "reason" => "deadline")
        .increment(1);
    Err(XksError::Throttled)
}

/// The operation itself.
async fn handler(
    state: &Arc<AppState>,
    ctx: &Ctx<'_>,
    body: &Bounded,
    audit: &mut Audit,
) -> Result<Bytes, XksError> {
    shed(state, ctx)?;
    xks::handle(
        state,
        ctx.keystore,
        &ctx.route,
        &body.bytes,
        ctx.deadline,
        audit,
    )
    .await
}
