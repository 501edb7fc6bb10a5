//! keymesh edge: the HTTP(S) front door.
//!
//! It authenticates AWS KMS (SigV4, optional mTLS), validates XKS requests,
//! applies per-key-store policy and quotas, and translates each operation
//! into a gRPC call to a crypto-worker. It holds no key material.

pub mod aad;
pub mod abuse;
pub mod app;
pub mod audit;
pub mod cause;
pub mod config;
pub mod error;
pub mod glob;
pub mod huawei;
pub mod keystores;
pub mod layers;
pub mod policy;
pub mod server;
pub mod sigv4;
pub mod state;
pub mod tls;
pub mod workers;
pub mod xks;
pub mod zeroizing;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// A JSON response (XKS-12: every response, errors included, is JSON).
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
