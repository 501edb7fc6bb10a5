//! The unauthenticated probes (`/ping`, `/livez`, `/readyz`) and the admin
//! router (probes plus `/metrics`). Load balancers, kubelet and scrapers
//! cannot sign, so nothing here is behind a dialect's stack; `/readyz`
//! answers from the readiness the composition hands in ([`Health`]: in the
//! edge, a worker admitted and a limiter replica serving).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the probes report: readiness, asked on every `/readyz`, and the
/// metrics handle `/metrics` renders (none: an empty page).
#[derive(Clone)]
pub struct Health {
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    pub metrics: Option<PrometheusHandle>,
}

/// Probes. No SigV4 (XKS-80): load balancers cannot sign.
pub fn probes(health: Health) -> Router {
    Router::new()
        .route("/ping", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ready))
        .with_state(health)
}

/// The admin listener: probes and `/metrics` (scrapers cannot sign either).
/// Anything else is a plain 404, so it never exposes the XKS API without
/// its authentication.
pub fn admin(health: Health) -> Router {
    probes(health.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(health),
    )
}

async fn ok() -> &'static str {
    "ok\n"
}

async fn ready(State(health): State<Health>) -> Response {
    if (health.ready)() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(health): State<Health>) -> String {
    health
        .metrics
        .as_ref()
        .map(|m| m.render())
        .unwrap_or_default()
}
