//! The Huawei request pipeline, outermost first (see [`service`] for why
//! each step sits where it does). The route and the dialect (KMS or CSMS)
//! are worked out once, and what the steps learn (deadline, caller) travels
//! as typed values, not request extensions; each step passes on or fails
//! with an [`ApiError`], turned into the answer in one place (the wire
//! mapping lives only in `error.rs`) through the shared rescue step that
//! logs every 5xx once with the request id.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tower::Service;
use tracing::Instrument;

use super::Huawei;
use super::auth::Caller;
use super::error::{ApiError, Dialect};
use super::route::{self, Op, Route, RouteError};
use crate::http::Deadline;
use crate::http::body::{BodyError, Bounded, closes_connection, declared_length, read_bounded};
use crate::http::rescue::rescue;

/// The Huawei dialects as one tower service. The steps, outermost first:
///
/// 1. request id, span, the one audit line and the metrics — outermost, it
///    sees every outcome;
/// 2. the total budget (503 KMS.0104 past it) covers everything below;
/// 3. bounded body buffering before anything can answer early: the
///    signature covers the exact body bytes, nobody unauthenticated may make
///    us buffer more, and an HTTP/1.1 answer sent before the body was read
///    would cost the client its keep-alive connection;
/// 4. unknown path (KMS.0201) and wrong method (KMS.0215);
/// 5. authentication (SDK-HMAC or X-Auth-Token; 429 once the source's
///    failures are over budget), then the read-only role;
/// 6. the quota, after authentication so nobody spends another project's;
/// 7. the operation.
///
/// Plain async steps rather than one `from_fn` layer each: a middleware
/// layer costs a boxed future per request, and the steps share typed values
/// instead of re-reading request extensions.
pub fn service(
    h: Arc<Huawei>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |req: Request| {
        let h = Arc::clone(&h);
        async move { Ok(observe(&h, req).await) }
    })
}

/// 16 random bytes as hex: the `X-Request-Id` of one request.
fn request_id() -> String {
    // The OS CSPRNG does not fail on Linux; an all-zero id is still an id.
    hex::encode(super::random_bytes::<16>().unwrap_or_default())
}

/// What the audit line says about a request beyond its route, filled in by
/// the steps as they learn it.
#[derive(Default)]
struct Seen {
    /// Set once authenticated (also on a read-only refusal).
    caller: Option<Arc<Caller>>,
    /// The key a request addressed (set by handlers).
    key_id: Option<String>,
}

/// How a request failed on the way to its handler.
type Refused = crate::http::Refused<ApiError>;

/// Request id, span, audit line and metrics for every Huawei request; the
/// rescue step.
async fn observe(h: &Arc<Huawei>, req: Request) -> Response {
    let start = Instant::now();
    let id = request_id();
    let (mut parts, body) = req.into_parts();
    let dialect = Dialect::of_path(parts.uri.path());
    let routed = route::route(&parts.method, parts.uri.path());
    let (operation, project) = match &routed {
        Ok(r) => (r.op.name(), r.project_id.clone()),
        Err(_) => ("unknown", String::new()),
    };
    let span = tracing::debug_span!("kms", operation, project_id = %project, request_id = %id);
    // The total budget starts now; `auth` reads it from the head (until it
    // takes it as an argument).
    let at = Instant::now() + std::time::Duration::from_millis(h.config.deadline_ms);
    parts.extensions.insert(Deadline(at));
    let mut seen = Seen::default();
    let run = tokio::time::timeout_at(
        at,
        pipeline(h, dialect, routed, at, &parts, body, &mut seen),
    );
    let result = match run.instrument(span.clone()).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout.into()),
    };
    let (mut resp, code, cause) = match result {
        Ok(body) => (crate::http::json_response(StatusCode::OK, body), "", None),
        Err(Refused { error, close }) => {
            let mut resp = error.into_response(dialect);
            let cause = rescue("kms", &id, resp.status(), &error);
            if close {
                resp = closes_connection(resp, parts.version);
            }
            (resp, error.wire(dialect).code, cause)
        }
    };
    let latency = start.elapsed();
    let caller = seen
        .caller
        .as_deref()
        .map(Caller::principal)
        .unwrap_or_default();
    let key_id = seen.key_id.unwrap_or_default();
    let status = resp.status().as_u16();
    let _entered = span.enter();
    tracing::info!(
        target: "keymesh::audit",
        dialect = "kms",
        request_id = %id,
        operation,
        project_id = %project,
        caller = %caller,
        key_id = %key_id,
        status,
        error_code = code,
        cause = cause.as_deref().unwrap_or(""),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    );
    let outcome = if code.is_empty() { "success" } else { code };
    metrics::counter!("keymesh_kms_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("keymesh_kms_request_seconds", "operation" => operation)
        .record(latency.as_secs_f64());
    // The error table's own hand-off of the cause; logged above already.
    resp.extensions_mut().remove::<crate::http::cause::Cause>();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Body, route, authentication, quota, operation: the steps inside the
/// deadline.
async fn pipeline(
    h: &Huawei,
    dialect: Dialect,
    routed: Result<Route, RouteError>,
    at: Instant,
    parts: &Parts,
    body: Body,
    seen: &mut Seen,
) -> Result<Bytes, Refused> {
    let mut body = body_limit(h, dialect, at, parts, body).await?;
    let route = match routed {
        Ok(r) => r,
        Err(RouteError::UnknownPath) => return Err(ApiError::UnknownPath.into()),
        Err(RouteError::Method(allow)) => return Err(ApiError::MethodNotAllowed(allow).into()),
    };
    let caller = authenticate(h, parts, &body.bytes, &route, seen).await?;
    // Authenticated (or anonymous): its body no longer counts as
    // pre-authentication bytes.
    body.held = None;
    rate_limit(h, &route, at).await?;
    handler(h, &route, &caller, parts, &body.bytes, at, seen)
        .await
        .map_err(Refused::from)
}

/// Buffer at most the dialect's limit (KMS.0203 beyond; 429 when the
/// pre-auth budget is spent); a body that fails → KMS.0202, one that stalls
/// → KMS.0104.
async fn body_limit(
    h: &Huawei,
    dialect: Dialect,
    at: Instant,
    parts: &Parts,
    body: Body,
) -> Result<Bounded, Refused> {
    let max = match dialect {
        Dialect::Kms => h.config.max_body_bytes,
        Dialect::Csms => h.config.csms_max_body_bytes,
    };
    let declared = declared_length(&parts.headers);
    match read_bounded(body, max, at, declared, &h.app.abuse.preauth).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge) => Err(Refused {
            error: ApiError::BodyTooLarge,
            close: true,
        }),
        Err(BodyError::OverBudget) => Err(ApiError::Throttled.into()),
        Err(BodyError::Unreadable) => {
            Err(ApiError::MalformedJson("the body could not be read").into())
        }
        Err(BodyError::Late) => Err(ApiError::Timeout.into()),
    }
}

/// The caller (the empty one for anonymous operations), or why not.
async fn authenticate(
    h: &Huawei,
    parts: &Parts,
    body: &[u8],
    route: &Route,
    seen: &mut Seen,
) -> Result<Arc<Caller>, Refused> {
    if route.op.anonymous() {
        return Ok(Arc::new(Caller::default()));
    }
    let caller = match super::auth::authenticate(h, parts, body, route).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            // A failed authentication costs its source; past its budget → 429.
            let refused = matches!(e, ApiError::Signature(_) | ApiError::Token(_));
            if refused && !h.app.abuse.sources.admit(super::auth::peer(parts)) {
                return Err(ApiError::Throttled.into());
            }
            return Err(e.into());
        }
    };
    seen.caller = Some(Arc::clone(&caller));
    if route.op.writes() && caller.role == keymesh_kms_core::Role::ReadOnly {
        return Err(ApiError::ReadOnly.into());
    }
    Ok(caller)
}

/// Quota per (service:project, operation) through the limiter (429), or
/// KMS.0104 when the limiter cannot be asked and the policy is closed.
async fn rate_limit(h: &Huawei, route: &Route, at: Instant) -> Result<(), Refused> {
    if route.op.anonymous() {
        return Ok(());
    }
    let tenant = format!("{}:{}", route.op.service(), route.project_id);
    match h.app.limiter.check(&tenant, route.op.name(), at).await {
        keymesh_limiter_client::Decision::Allow => Ok(()),
        keymesh_limiter_client::Decision::Throttle { .. } => Err(ApiError::Throttled.into()),
        keymesh_limiter_client::Decision::Unavailable => Err(ApiError::Timeout.into()),
    }
}

/// The operation itself.
async fn handler(
    h: &Huawei,
    route: &Route,
    caller: &Caller,
    parts: &Parts,
    body: &[u8],
    at: Instant,
    seen: &mut Seen,
) -> Result<Bytes, ApiError> {
    let ctx = super::kms::Ctx {
        h,
        route,
        caller,
        body,
        query: parts.uri.query(),
        deadline: at,
        audit_key: &mut seen.key_id,
    };
    match route.op {
        Op::Kms(op) => super::kms::dispatch(ctx, op).await,
        Op::Csms(op) => super::csms::dispatch(ctx, op).await,
    }
}
