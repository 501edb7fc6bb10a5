//! The unauthenticated probes (`/ping`, `/livez`, `/readyz`) and the admin
//! router (probes plus `/metrics`). Load balancers, kubelet and scrapers
//! cannot sign, so nothing here is behind a dialect's stack; `/readyz`
//! answers from the state's combined readiness (a worker admitted and a
//! limiter replica serving).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use crate::state::AppState;

/// Probes. No SigV4 (XKS-80): load balancers cannot sign.
pub fn probes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// The admin listener: probes and `/metrics` (scrapers cannot sign either).
/// Anything else is a plain 404, so it never exposes the XKS API without
/// its authentication.
pub fn admin(state: Arc<AppState>) -> Router {
    probes(Arc::clone(&state)).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(state),
    )
}

async fn ok() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready() {
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
