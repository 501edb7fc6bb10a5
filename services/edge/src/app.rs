//! The edge's HTTP application: load-balancer probes plus the XKS API behind
//! an explicit tower stack.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use tower::ServiceBuilder;

use crate::layers;
use crate::state::AppState;

/// The whole HTTP surface of the edge.
pub fn app(state: Arc<AppState>) -> Router {
    let xks = ServiceBuilder::new()
        // Outermost: it sees every outcome, so it owns the span, the one
        // audit line per request and the request metrics.
        .layer(from_fn_with_state(Arc::clone(&state), layers::observe))
        // The total budget covers everything below; gRPC hops get the
        // remainder as their grpc-timeout. Past it: 503.
        .layer(from_fn_with_state(Arc::clone(&state), layers::deadline))
        // Unknown key store → 404 and non-POST → 405 before any work.
        .layer(from_fn_with_state(Arc::clone(&state), layers::resolve))
        // Bounded buffering before authentication: SigV4 hashes the exact
        // body bytes, and nobody unauthenticated may make us buffer more.
        .layer(from_fn_with_state(Arc::clone(&state), layers::body_limit))
        .layer(from_fn_with_state(Arc::clone(&state), layers::authenticate))
        // Quota after authentication, so nobody can spend another tenant's.
        .layer(from_fn_with_state(Arc::clone(&state), layers::rate_limit))
        // The handler sheds load first (429 when too little budget is left):
        // only there is the budget for the worker call known, after body
        // reading, SigV4 and the limiter have spent theirs.
        .service_fn({
            let state = Arc::clone(&state);
            move |req| layers::handler(Arc::clone(&state), req)
        });

    // Probes need no SigV4 (XKS-80): load balancers cannot sign.
    Router::new()
        .route("/ping", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        .fallback_service(xks)
}

async fn ok() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.workers.ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    state
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default()
}
