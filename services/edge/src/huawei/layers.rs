//! The Huawei request pipeline as tower middleware, outermost first (see
//! [`service`] for why each step sits where it does). Each step passes the
//! request on with what it learnt in the request extensions, or answers with
//! a [`ApiError`]; the wire mapping lives only in `error.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder};
use tracing::Instrument;

use super::Huawei;
use super::auth::Caller;
use super::error::{ApiError, Dialect, Failure};
use super::route::{self, Op, Route, RouteError};
use crate::http::Deadline;
use crate::http::abuse::PreAuthBytes;
use crate::http::body::{BodyError, RawBody, closes_connection, declared_length, read_bounded};
use crate::http::cause::Cause;

/// The Huawei dialect: the tower stack, outermost first, ending in the handler.
pub fn service(
    h: Arc<Huawei>,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    ServiceBuilder::new()
        // Outermost: it sees every outcome, so it owns the request id, the
        // span, the one audit line and the metrics.
        .layer(from_fn_with_state(Arc::clone(&h), observe))
        // The total budget covers everything below; past it: 503 KMS.0104.
        .layer(from_fn_with_state(Arc::clone(&h), deadline))
        // Bounded buffering before anything can answer early: the signature
        // covers the exact body bytes, nobody unauthenticated may make us
        // buffer more, and an HTTP/1.1 answer sent before the body was read
        // would cost the client its keep-alive connection.
        .layer(from_fn_with_state(Arc::clone(&h), body_limit))
        // Unknown path (KMS.0201) and wrong method (KMS.0215).
        .layer(from_fn_with_state(Arc::clone(&h), resolve))
        .layer(from_fn_with_state(Arc::clone(&h), authenticate))
        // Quota after authentication, so nobody spends another project's.
        .layer(from_fn_with_state(Arc::clone(&h), rate_limit))
        .service_fn(move |req| handler(Arc::clone(&h), req))
}

/// 16 random bytes as hex: the `X-Request-Id` of one request.
fn request_id() -> String {
    // The OS CSPRNG does not fail on Linux; an all-zero id is still an id.
    hex::encode(super::random_bytes::<16>().unwrap_or_default())
}

/// The routing outcome, computed once in [`observe`] (which needs the
/// operation for its span) and turned into an answer by [`resolve`].
#[derive(Clone)]
struct Routed(Result<Route, RouteError>);

/// Request id, span, audit line and metrics for every Huawei request.
async fn observe(State(_): State<Arc<Huawei>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id();
    let routed = route::route(req.method(), req.uri().path());
    let (operation, project) = match &routed {
        Ok(r) => (r.op.name(), r.project_id.clone()),
        Err(_) => ("unknown", String::new()),
    };
    req.extensions_mut().insert(Routed(routed));
    let span = tracing::debug_span!("kms", operation, project_id = %project, request_id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let latency = start.elapsed();
    let code = resp.extensions().get::<Failure>().map_or("", |f| f.0);
    let caller = resp
        .extensions()
        .get::<Arc<Caller>>()
        .map(|c| c.principal())
        .unwrap_or_default();
    let key_id = resp
        .extensions_mut()
        .remove::<AuditKey>()
        .map(|k| k.0)
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let cause = resp.extensions_mut().remove::<Cause>().map(|c| c.0);
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
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The key a request addressed, for the audit line (set by handlers).
#[derive(Debug, Clone)]
pub struct AuditKey(pub String);

async fn deadline(State(h): State<Arc<Huawei>>, mut req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    let at = Instant::now() + std::time::Duration::from_millis(h.config.deadline_ms);
    req.extensions_mut().insert(Deadline(at));
    match tokio::time::timeout_at(at, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(d),
    }
}

async fn resolve(State(_): State<Arc<Huawei>>, mut req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    match req.extensions_mut().remove::<Routed>() {
        Some(Routed(Ok(r))) => {
            req.extensions_mut().insert(r);
            next.run(req).await
        }
        Some(Routed(Err(RouteError::UnknownPath))) => ApiError::UnknownPath.into_response(d),
        Some(Routed(Err(RouteError::Method(allow)))) => {
            ApiError::MethodNotAllowed(allow).into_response(d)
        }
        None => ApiError::Internal.into_response(d),
    }
}

async fn body_limit(State(h): State<Arc<Huawei>>, req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    let max = match d {
        Dialect::Kms => h.config.max_body_bytes,
        Dialect::Csms => h.config.csms_max_body_bytes,
    };
    let Some(Deadline(at)) = req.extensions().get::<Deadline>().copied() else {
        return ApiError::Internal.into_response(d);
    };
    let declared = declared_length(req.headers());
    let (mut parts, body) = req.into_parts();
    let bounded = match read_bounded(body, max, at, declared, &h.app.abuse.preauth).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return closes_connection(ApiError::BodyTooLarge.into_response(d), parts.version);
        }
        Err(BodyError::OverBudget) => return ApiError::Throttled.into_response(d),
        Err(BodyError::Unreadable) => {
            return ApiError::MalformedJson("the body could not be read").into_response(d);
        }
        Err(BodyError::Late) => return ApiError::Timeout.into_response(d),
    };
    parts.extensions.insert(RawBody(bounded.bytes));
    if let Some(p) = bounded.held {
        parts.extensions.insert(PreAuthBytes(Arc::new(p)));
    }
    next.run(Request::from_parts(parts, Body::empty())).await
}

async fn authenticate(State(h): State<Arc<Huawei>>, req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    let (mut parts, body) = req.into_parts();
    let (Some(route), Some(RawBody(raw))) = (
        parts.extensions.get::<Route>(),
        parts.extensions.get::<RawBody>(),
    ) else {
        return ApiError::Internal.into_response(d);
    };
    let op = route.op;
    if op.anonymous() {
        parts.extensions.remove::<PreAuthBytes>();
        return next.run(Request::from_parts(parts, body)).await;
    }
    let caller = match super::auth::authenticate(&h, &parts, raw, route).await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            // A failed authentication costs its source; past its budget → 429.
            let refused = matches!(e, ApiError::Signature(_) | ApiError::Token(_));
            if refused && !h.app.abuse.sources.admit(super::auth::peer(&parts)) {
                return ApiError::Throttled.into_response(d);
            }
            return e.into_response(d);
        }
    };
    // Authenticated: its body no longer counts as pre-authentication bytes.
    parts.extensions.remove::<PreAuthBytes>();
    if op.writes() && caller.role == keymesh_kms_core::Role::ReadOnly {
        let mut r = ApiError::ReadOnly.into_response(d);
        r.extensions_mut().insert(caller);
        return r;
    }
    // Shared, not copied, with the handler (request) and `observe` (response).
    parts.extensions.insert(Arc::clone(&caller));
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    resp.extensions_mut().insert(caller);
    resp
}

async fn rate_limit(State(h): State<Arc<Huawei>>, req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    let (Some(route), Some(Deadline(at))) = (
        req.extensions().get::<Route>(),
        req.extensions().get::<Deadline>().copied(),
    ) else {
        return ApiError::Internal.into_response(d);
    };
    if !route.op.anonymous() {
        let tenant = format!("{}:{}", route.op.service(), route.project_id);
        match h.app.limiter.check(&tenant, route.op.name(), at).await {
            crate::limiter::Decision::Allow => {}
            crate::limiter::Decision::Throttle { .. } => {
                return ApiError::Throttled.into_response(d);
            }
            crate::limiter::Decision::Unavailable => return ApiError::Timeout.into_response(d),
        }
    }
    next.run(req).await
}

async fn handler(h: Arc<Huawei>, req: Request) -> Result<Response, Infallible> {
    let d = Dialect::of_path(req.uri().path());
    let ext = req.extensions();
    let (Some(route), Some(Deadline(at)), Some(RawBody(body))) = (
        ext.get::<Route>(),
        ext.get::<Deadline>().copied(),
        ext.get::<RawBody>(),
    ) else {
        return Ok(ApiError::Internal.into_response(d));
    };
    // Anonymous operations have no caller: they get the empty one.
    let anonymous;
    let caller = match ext.get::<Arc<Caller>>() {
        Some(c) => &**c,
        None => {
            anonymous = Caller::default();
            &anonymous
        }
    };
    let mut audit = None;
    let query = req.uri().query();
    let ctx = super::kms::Ctx {
        h: &h,
        route,
        caller,
        body,
        query,
        deadline: at,
        audit_key: &mut audit,
    };
    let result = match route.op {
        Op::Kms(op) => super::kms::dispatch(ctx, op).await,
        Op::Csms(op) => super::csms::dispatch(ctx, op).await,
    };
    let mut resp = match result {
        Ok(body) => crate::http::json_response(StatusCode::OK, body),
        // A 5xx carries its cause to the audit line (`observe`).
        Err(e) => e.into_response(d),
    };
    if let Some(k) = audit {
        resp.extensions_mut().insert(AuditKey(k));
    }
    Ok(resp)
}

/// A JSON body for a successful answer.
pub fn ok(v: serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}
