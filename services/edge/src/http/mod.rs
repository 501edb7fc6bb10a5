//! HTTP plumbing shared by both dialects and the admin listener: the
//! dialect-independent machinery from crate `keymesh-http-server`
//! (re-exported: the listener [`server`], TLS in [`tls`], the per-source and
//! pre-authentication budgets [`abuse`], bounded body buffering [`body`],
//! zeroizing JSON answers [`zeroizing`]), and what needs this edge: the
//! probes ([`probes`]), the one rescue step that logs every 5xx with its
//! cause ([`rescue`], rendered by [`cause`]) and the request [`Deadline`].
//! Nothing here knows a dialect's wire table.

pub mod cause;
pub mod probes;
pub mod rescue;

pub use keymesh_http_server::{abuse, body, server, tls, zeroizing};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use tokio::time::Instant;

/// When the request's total budget runs out.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// How a request failed on the way to its handler, in either dialect: the
/// dialect's error, and whether the connection must close (a body refused
/// unread).
#[derive(Debug)]
pub struct Refused<E> {
    pub error: E,
    pub close: bool,
}

impl<E> From<E> for Refused<E> {
    fn from(error: E) -> Self {
        Self {
            error,
            close: false,
        }
    }
}

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
