//! The edge's HTTP application, in two routers: the unauthenticated probes
//! ([`probes()`]), and the dialects behind their explicit tower stacks
//! ([`crate::xks::layers::service`], [`crate::huawei::layers::service`]).
//! The main listener serves both ([`app`]); the optional admin listener
//! (`admin_listen`) serves only the probes and `/metrics` ([`admin`]), in
//! plain HTTP, so that kubelet and Prometheus reach them when the main
//! listener demands a KMS client certificate. `/metrics` is on the main
//! listener only when there is no admin listener: with one, request counts
//! by operation and outcome are not published to every API caller.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::Request;
use tower::Service;

use crate::http::probes::{self, Health};
use crate::huawei::Huawei;
use crate::state::AppState;

/// The whole HTTP surface of the main listener: probes first, then the
/// Huawei dialect's paths (`/`, `/v1.0/...`, `/v2/...`) when it is
/// configured; everything else is an XKS request.
pub fn app(state: Arc<AppState>, huawei: Option<Arc<Huawei>>) -> Router {
    let xks = crate::xks::layers::service(state.clone());
    let front = if state.config.admin_listen.is_some() {
        probes(state)
    } else {
        admin(state)
    };
    let Some(huawei) = huawei else {
        return front.fallback_service(xks);
    };
    let huawei = crate::huawei::layers::service(huawei);
    let dialects = tower::service_fn(move |req: Request<Body>| {
        let (mut xks, mut huawei) = (xks.clone(), huawei.clone());
        async move {
            if crate::huawei::route::is_huawei_path(req.uri().path()) {
                huawei.call(req).await
            } else {
                xks.call(req).await
            }
        }
    });
    front.fallback_service(dialects)
}

/// The probes over the state's readiness.
pub fn probes(state: Arc<AppState>) -> Router {
    probes::probes(health(state))
}

/// The admin router (probes and `/metrics`) over the state.
pub fn admin(state: Arc<AppState>) -> Router {
    probes::admin(health(state))
}

fn health(state: Arc<AppState>) -> Health {
    Health {
        metrics: state.metrics.clone(),
        ready: Arc::new(move || state.ready()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use http::StatusCode;
    use tower::ServiceExt as _;

    /// State over an empty key store file; the worker and limiter endpoints
    /// are never dialled (lazy channels, nothing listens there).
    fn state(dir: &std::path::Path) -> Arc<AppState> {
        state_with(dir, "")
    }

    fn state_with(dir: &std::path::Path, extra: &str) -> Arc<AppState> {
        let keystores = dir.join("keystores.json");
        std::fs::write(&keystores, br#"{"keystores": []}"#).unwrap();
        let config: crate::config::Config = toml::from_str(&format!(
            "workers = [\"http://127.0.0.1:9\"]\nlimiter = \"http://127.0.0.1:9\"\nkeystores_file = {:?}\n{extra}",
            keystores.display().to_string()
        ))
        .unwrap();
        AppState::start(config, None).unwrap()
    }

    async fn status(router: Router, method: &str, path: &str) -> StatusCode {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn probes_alone_never_reach_the_xks_api() {
        let dir = std::env::temp_dir().join(format!("keymesh-app-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = state(&dir);
        for path in ["/ping", "/livez", "/metrics"] {
            assert_eq!(status(admin(Arc::clone(&state)), "GET", path).await, 200);
        }
        // Without an admin listener, the main one serves /metrics.
        assert_eq!(
            status(app(Arc::clone(&state), None), "GET", "/metrics").await,
            200
        );
        // No worker answers: not ready, on both routers alike.
        assert_eq!(
            status(probes(Arc::clone(&state)), "GET", "/readyz").await,
            503
        );
        assert_eq!(
            status(app(Arc::clone(&state), None), "GET", "/readyz").await,
            503
        );
        // The probe router has no fallback: an XKS path is a bare 404 from
        // the router, not an XKS answer (which would be JSON).
        let xks_path = "/kms/xks/v1/keys/k/metadata";
        let req = Request::builder()
            .method("POST")
            .uri(xks_path)
            .body(Body::empty())
            .unwrap();
        let r = probes(Arc::clone(&state)).oneshot(req).await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers().get(http::header::CONTENT_TYPE).is_none());
        // The full app routes the same path into the XKS stack (JSON error).
        let req = Request::builder()
            .method("POST")
            .uri(xks_path)
            .body(Body::empty())
            .unwrap();
        let r = app(state, None).oneshot(req).await.unwrap();
        assert_eq!(
            r.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn metrics_leave_the_main_listener_with_an_admin_listener() {
        let dir =
            std::env::temp_dir().join(format!("keymesh-app-admin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = state_with(&dir, "admin_listen = \"127.0.0.1:0\"\n");
        assert_eq!(
            status(admin(Arc::clone(&state)), "GET", "/metrics").await,
            200
        );
        // The main listener routes it into the API, which does not know it.
        let r = app(Arc::clone(&state), None)
            .oneshot(
                Request::builder()
                    .uri("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        // The probes stay on both.
        assert_eq!(status(app(state, None), "GET", "/livez").await, 200);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
