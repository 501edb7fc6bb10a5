//! keymesh edge: the HTTP(S) front door.
//!
//! It authenticates AWS KMS (SigV4, optional mTLS), validates XKS requests,
//! applies per-key-store policy and quotas, and translates each operation
//! into a gRPC call to a crypto-worker. It holds no key material.

pub mod aad;
pub mod audit;
pub mod config;
pub mod error;
pub mod glob;
pub mod keystores;
pub mod limiter;
pub mod policy;
pub mod server;
pub mod sigv4;
pub mod state;
pub mod tls;
pub mod workers;
pub mod xks;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// A JSON response (XKS-12: every response, errors included, is JSON).
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
