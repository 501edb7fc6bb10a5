//! Router-level tests of both dialects' check order, without a socket: the
//! whole app ([`crate::app::app`]) over a test state, driven with
//! `oneshot`. Each request is valid up to the check it is meant to fail, so
//! the answer shows which check comes first. Worker and limiter endpoints
//! point at a closed port: nothing here gets that far.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::app::app;
use crate::http::abuse::Peer;
use crate::huawei::{Huawei, SystemClock};
use crate::state::AppState;

pub(super) const PREFIX: &str = "/ks/kms/xks/v1";
const AKID: &str = "XKSDIGESTEXAMPLEKEY2345";
const SECRET: &str = "jFwF3w1r9GU1GwUr5hsYypKAi780VUCOv2GW/jKbMYs=";
const HOST: &str = "xks.test";

/// A fresh directory per test (tests run in parallel in one process).
pub(super) fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keymesh-order-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// State with one key store at [`PREFIX`]; `extra` is more edge config.
pub(super) fn state(dir: &Path, extra: &str) -> Arc<AppState> {
    let keystores = dir.join("keystores.json");
    let file = serde_json::json!({"keystores": [{
        "uri_path": PREFIX,
        "key_ids": ["k1"],
        "credentials": [{"access_key_id": AKID, "secret_access_key": SECRET}],
    }]});
    std::fs::write(&keystores, file.to_string()).unwrap();
    let config: crate::config::Config = toml::from_str(&format!(
        "workers = [\"http://127.0.0.1:9\"]\nlimiter = \"http://127.0.0.1:9\"\nkeystores_file = {:?}\nmax_body_bytes = 4096\n{extra}",
        keystores.display().to_string()
    ))
    .unwrap();
    AppState::start(config, None).unwrap()
}

/// The SigV4 headers (`authorization`, `x-amz-date`) for a POST of `body`
/// to `path`, signed now with the key store's credentials.
pub(super) fn sigv4(path: &str, body: &[u8]) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign,
    };
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(AKID, SECRET, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(keymesh_xks_auth::SERVICE)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        path,
        [("host", HOST)].into_iter(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A request from one fixed source address (the per-source budgets key on it).
pub(super) fn request(
    method: Method,
    path: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string());
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let mut req = b.body(Body::from(body.to_vec())).unwrap();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    req.extensions_mut().insert(Peer(peer));
    req
}

async fn answer(router: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp: Response = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

pub(super) async fn xks(router: &axum::Router, req: Request<Body>) -> (u16, String) {
    let (status, body) = answer(router, req).await;
    (
        status.as_u16(),
        body["errorName"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn xks_checks_run_in_the_documented_order() {
    let d = dir("xks");
    // One failed signature per source, then 429 (the pre-auth budget).
    let st = state(
        &d,
        "[abuse]\nunauthenticated_per_source_per_sec = 1\nunauthenticated_per_source_burst = 1\n",
    );
    let router = app(Arc::clone(&st), None);
    let metadata = format!("{PREFIX}/keys/k1/metadata");
    let post =
        |path: &str, body: &[u8], h: &[(String, String)]| request(Method::POST, path, body, h);

    // 404: no XKS route, even for a GET with an oversized body.
    let r = xks(
        &router,
        request(Method::GET, "/kms/xks/v1/nope", &[0; 8192], &[]),
    )
    .await;
    assert_eq!(r, (404, "InvalidUriPathException".into()));
    // A route, but not a key store we serve.
    let r = xks(&router, post("/other/kms/xks/v1/health", b"{}", &[])).await;
    assert_eq!(r, (404, "InvalidUriPathException".into()));
    // 405 before the body is looked at.
    let r = xks(&router, request(Method::GET, &metadata, &[0; 8192], &[])).await;
    assert_eq!(r, (405, "MethodNotAllowed".into()));
    // 501 (too large) before the signature is checked.
    let r = xks(&router, post(&metadata, &[b' '; 8192], &[])).await;
    assert_eq!(r, (501, "UnsupportedOperationException".into()));
    // 401: unsigned; the source's budget of failures is now spent → 429.
    let r = xks(&router, post(&metadata, b"{}", &[])).await;
    assert_eq!(r, (401, "AuthenticationFailedException".into()));
    let r = xks(&router, post(&metadata, b"{}", &[])).await;
    assert_eq!(r, (429, "ThrottlingException".into()));
    // Signed: the quota (limiter unreachable, failing open) passes, and the
    // body is validated: 400.
    let r = xks(&router, post(&metadata, b"{", &sigv4(&metadata, b"{"))).await;
    assert_eq!(r, (400, "ValidationException".into()));
    let body = br#"{"requestMetadata":{"kmsRequestId":"r1","kmsOperation":"DescribeKey"}}"#;
    let r = xks(&router, post(&metadata, body, &sigv4(&metadata, body))).await;
    assert_eq!(r, (400, "ValidationException".into()), "no principal");
    st.stop();

    // Authenticated but with no budget left for a worker call: 429 (shed)
    // comes before the body is validated.
    let st = state(&d, "deadline_ms = 200\nshed_floor_ms = 200\n");
    let router = app(Arc::clone(&st), None);
    let r = xks(&router, post(&metadata, b"{", &sigv4(&metadata, b"{"))).await;
    assert_eq!(r, (429, "ThrottlingException".into()));
    st.stop();
    let _ = std::fs::remove_dir_all(&d);
}

async fn kms(router: &axum::Router, req: Request<Body>) -> (u16, String) {
    let (status, body) = answer(router, req).await;
    (
        status.as_u16(),
        body["error_code"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The Huawei dialects over a fresh SQLite store holding one full-role
/// account of user `u1` in project `p1`, and an `X-Auth-Token` for it.
async fn huawei(d: &Path, st: &Arc<AppState>) -> (axum::Router, String) {
    use keymesh_huawei_auth::token;
    let (private, public) = token::keygen().unwrap();
    let keys = d.join("token.pem");
    std::fs::write(&keys, public).unwrap();
    // A fresh database per call: each one creates the same account.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = d.join(format!("kms-{n}.db"));
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());
    let store = keymesh_store::open(&url).await.unwrap();
    store
        .create_account(&keymesh_store::Account {
            access_key: "CHECKORDERAK".into(),
            secret: keymesh_store::AccountSecret::Sealed(vec![0; 32]),
            project_id: "p1".into(),
            user_id: "u1".into(),
            role: keymesh_store::Role::Full,
            created_ms: 0,
        })
        .await
        .unwrap();
    let hw: crate::huawei::HuaweiConfig = toml::from_str(&format!(
        "store_url = {url:?}\nmax_body_bytes = 4096\ntoken_public_key_file = {:?}\n",
        keys.display().to_string()
    ))
    .unwrap();
    let h = Huawei::with_store(Arc::clone(st), hw, store, Arc::new(SystemClock)).unwrap();
    let claims = token::Claims::new(
        "u1",
        Some("p1".into()),
        token::Role::Full,
        SystemTime::now(),
        std::time::Duration::from_secs(3600),
    );
    let token = token::issue(&private, &claims).unwrap();
    (app(Arc::clone(st), Some(h)), token)
}

#[tokio::test]
async fn huawei_checks_run_in_the_documented_order() {
    let d = dir("kms");
    let st = state(
        &d,
        "[abuse]\nunauthenticated_per_source_per_sec = 1\nunauthenticated_per_source_burst = 1\n",
    );
    let (router, token) = huawei(&d, &st).await;
    let describe = "/v1.0/p1/kms/describe-key";
    let post = |path: &str, body: &[u8]| request(Method::POST, path, body, &[]);

    // Too large first: the body is buffered before anything may answer.
    let r = kms(
        &router,
        request(Method::GET, "/v1.0/p1/kms/nope", &[0; 8192], &[]),
    )
    .await;
    assert_eq!(r, (400, "KMS.0203".into()));
    // Unknown path, then method.
    let r = kms(&router, post("/v1.0/p1/kms/nope", b"{}")).await;
    assert_eq!(r, (400, "KMS.0201".into()));
    let r = kms(&router, request(Method::GET, describe, b"{}", &[])).await;
    assert_eq!(r, (405, "KMS.0215".into()));
    // No credentials: 403 KMS.0301; the source's budget is then spent → 429.
    let r = kms(&router, post(describe, b"{")).await;
    assert_eq!(r, (403, "KMS.0301".into()));
    let (status, _) = kms(&router, post(describe, b"{")).await;
    assert_eq!(status, 429);
    // Authenticated: the quota (limiter unreachable, failing open) passes,
    // and the body is validated: 400 KMS.0202.
    let auth = [("x-auth-token".to_owned(), token)];
    let r = kms(&router, request(Method::POST, describe, b"{", &auth)).await;
    assert_eq!(r, (400, "KMS.0202".into()));
    st.stop();

    // With the limiter failing closed, the quota step answers (503
    // KMS.0104) before the body is validated.
    let st = state(&d, "limiter_failure_policy = \"closed\"\n");
    let (router, token) = huawei(&d, &st).await;
    let auth = [("x-auth-token".to_owned(), token)];
    let r = kms(&router, request(Method::POST, describe, b"{", &auth)).await;
    assert_eq!(r, (503, "KMS.0104".into()));
    st.stop();
    let _ = std::fs::remove_dir_all(&d);
}
