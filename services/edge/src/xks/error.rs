//! The XKS wire errors and the one table that maps every edge failure to them.
//!
//! Each variant is a cause; [`XksError::wire`] is the only place that decides
//! HTTP status and `errorName` (checked row by row against
//! `shared/errors/xks.csv` by the table test in `tests/`). Messages are short,
//! printable ASCII, and never carry secrets, expected signatures or internals:
//! the full cause is logged once, by the rescue step (`crate::http::rescue`),
//! and written into the audit line.

use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;

use crate::mesh::PoolError;
use keymesh_worker_pool::WorkerFailure;

/// Why a request failed, in the edge's terms.
#[derive(Debug, thiserror::Error)]
pub enum XksError {
    /// 400 ValidationException: malformed JSON, missing member, bad Base64, bad enum.
    #[error("{0}")]
    Validation(&'static str),
    /// 400 InvalidStateException: the key is disabled.
    #[error("the external key is disabled")]
    KeyDisabled,
    /// 400 InvalidCiphertextException: ciphertext, IV, AAD or tag unusable or not authentic.
    #[error("{0}")]
    InvalidCiphertext(&'static str),
    /// 400 InvalidKeyUsageException: the key may not do this.
    #[error("the external key does not permit this operation")]
    KeyUsage,
    /// 401 AuthenticationFailedException: SigV4 missing, malformed, stale or wrong.
    #[error("{0}")]
    Authentication(&'static str),
    /// 403 AccessDeniedException: the secondary-authorization policy denied it.
    #[error("denied by the key store's authorization policy")]
    AccessDenied,
    /// 404 KeyNotFoundException: no key with this externalKeyId in this key store.
    #[error("the external key was not found")]
    KeyNotFound,
    /// 404 InvalidUriPathException: unknown prefix, version or operation.
    #[error("the URI path is not valid")]
    InvalidUriPath,
    /// 405 (no XKS name exists; the body still uses the XKS shape).
    #[error("only POST is allowed")]
    MethodNotAllowed,
    /// 429 ThrottlingException: over quota, or the worker pool is saturated.
    #[error("the request rate is too high")]
    Throttled,
    /// 500 InternalException: an invariant of the edge broke.
    #[error("internal error")]
    Internal,
    /// 500 InternalException: a crypto-worker failed (HSM error, worker
    /// unreachable, none available).
    #[error("internal error")]
    Worker(#[source] WorkerFailure),
    /// 501 UnsupportedOperationException: above this implementation's limits.
    #[error("{0}")]
    Unsupported(&'static str),
    /// 503 DependencyTimeoutException: the deadline passed while waiting on a dependency.
    #[error("a dependency did not answer in time")]
    DependencyTimeout,
}

impl XksError {
    /// The one mapping table: cause → (HTTP status, errorName).
    pub fn wire(&self) -> (StatusCode, &'static str) {
        use XksError::*;
        match self {
            Validation(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            KeyDisabled => (StatusCode::BAD_REQUEST, "InvalidStateException"),
            InvalidCiphertext(_) => (StatusCode::BAD_REQUEST, "InvalidCiphertextException"),
            KeyUsage => (StatusCode::BAD_REQUEST, "InvalidKeyUsageException"),
            Authentication(_) => (StatusCode::UNAUTHORIZED, "AuthenticationFailedException"),
            AccessDenied => (StatusCode::FORBIDDEN, "AccessDeniedException"),
            KeyNotFound => (StatusCode::NOT_FOUND, "KeyNotFoundException"),
            InvalidUriPath => (StatusCode::NOT_FOUND, "InvalidUriPathException"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Throttled => (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException"),
            Internal | Worker(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalException"),
            Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException"),
            DependencyTimeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "DependencyTimeoutException",
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        self.wire().1
    }

    /// `{"errorName","errorMessage"}` with `Content-Type: application/json`.
    /// The cause of a 5xx is not attached: the stack's rescue step logs it
    /// from the error itself (`xks::layers`).
    pub fn into_response(&self) -> Response {
        let (status, name) = self.wire();
        let message = printable(&self.to_string());
        let body = serde_json::json!({ "errorName": name, "errorMessage": message });
        let mut resp = crate::http::json_response(status, body.to_string().into());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        resp
    }

    /// Map a failed SigV4 verification: 401 with the verifier's
    /// (deliberately vague) message, or 500 when the verifier itself broke.
    /// A named function, not `From`: the pool's generic `?` conversions
    /// infer their error type from `XksError`'s one `From` impl.
    pub fn from_signature(e: keymesh_xks_auth::VerifyError) -> Self {
        use keymesh_xks_auth::VerifyError;
        match e {
            VerifyError::Rejected(message) => Self::Authentication(message),
            VerifyError::Internal => Self::Internal,
        }
    }

    /// Map a crypto-worker gRPC failure by its machine-readable reason.
    pub fn from_worker(status: &tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => return Self::DependencyTimeout,
            Code::Unavailable | Code::Unknown => return Self::Worker(status.into()),
            _ => {}
        }
        let reason = ErrorInfo::decode(status.details())
            .map(|i| i.reason())
            .unwrap_or(ErrorReason::Unspecified);
        match reason {
            ErrorReason::KeyNotFound => Self::KeyNotFound,
            ErrorReason::KeyDisabled => Self::KeyDisabled,
            ErrorReason::KeyUsageNotPermitted | ErrorReason::UnsupportedKey => Self::KeyUsage,
            ErrorReason::InvalidCiphertext => {
                Self::InvalidCiphertext("the ciphertext, IV, AAD or tag is not authentic")
            }
            ErrorReason::InvalidArgument => Self::Validation("invalid request parameters"),
            ErrorReason::HsmBusy => Self::Throttled,
            ErrorReason::AmbiguousKey
            | ErrorReason::HsmFailure
            | ErrorReason::WrappingKeyMissing
            | ErrorReason::InvalidKeyMaterial
            | ErrorReason::Unspecified => Self::Worker(status.into()),
        }
    }
}

/// Keep printable ASCII only and stay under 512 chars (XKS-55).
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(500)
        .collect()
}

/// The pool's failures in XKS terms: no worker or a worker failure → 500,
/// shed → 429.
impl PoolError for XksError {
    fn no_worker() -> Self {
        Self::Worker(WorkerFailure::NoWorker)
    }
    fn shed() -> Self {
        Self::Throttled
    }
    fn from_status(status: &tonic::Status) -> Self {
        Self::from_worker(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_reasons_map_to_the_contract() {
        let with = |code, reason: ErrorReason| {
            let info = ErrorInfo {
                reason: reason as i32,
            };
            XksError::from_worker(&tonic::Status::with_details(
                code,
                "x",
                info.encode_to_vec().into(),
            ))
            .name()
        };
        use tonic::Code;
        assert_eq!(
            with(Code::NotFound, ErrorReason::KeyNotFound),
            "KeyNotFoundException"
        );
        assert_eq!(
            with(Code::FailedPrecondition, ErrorReason::KeyDisabled),
            "InvalidStateException"
        );
        assert_eq!(
            with(Code::FailedPrecondition, ErrorReason::KeyUsageNotPermitted),
            "InvalidKeyUsageException"
        );
        assert_eq!(
            with(Code::InvalidArgument, ErrorReason::InvalidCiphertext),
            "InvalidCiphertextException"
        );
        assert_eq!(
            with(Code::ResourceExhausted, ErrorReason::HsmBusy),
            "ThrottlingException"
        );
        assert_eq!(
            with(Code::Internal, ErrorReason::HsmFailure),
            "InternalException"
        );
        assert_eq!(
            with(Code::DeadlineExceeded, ErrorReason::Unspecified),
            "DependencyTimeoutException"
        );
        assert_eq!(
            with(Code::Unavailable, ErrorReason::Unspecified),
            "InternalException"
        );
    }

    /// The wire table against the published one (the in-repo copy in
    /// `tests/fixtures`, so this runs in every clone): every cause answers a
    /// published (status, errorName) row, except 405, for which XKS names
    /// none, and every published row is answered by some cause.
    #[test]
    fn wire_table_matches_the_published_table() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/xks.csv"
        ));
        let published: std::collections::BTreeSet<(u16, &str)> = text
            .lines()
            .skip(1)
            .map(|line| {
                let mut f = line.split(',');
                let status = f.next().unwrap().parse().unwrap();
                (status, f.next().unwrap())
            })
            .collect();
        assert_eq!(published.len(), 12, "{published:?}");
        let causes = [
            XksError::Validation("x"),
            XksError::KeyDisabled,
            XksError::InvalidCiphertext("x"),
            XksError::KeyUsage,
            XksError::Authentication("x"),
            XksError::AccessDenied,
            XksError::KeyNotFound,
            XksError::InvalidUriPath,
            XksError::MethodNotAllowed,
            XksError::Throttled,
            XksError::Internal,
            XksError::Worker(WorkerFailure::NoWorker),
            XksError::Unsupported("x"),
            XksError::DependencyTimeout,
        ];
        let mut answered = std::collections::BTreeSet::new();
        for cause in &causes {
            let (status, name) = cause.wire();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            assert!(
                published.contains(&(status.as_u16(), name)),
                "{cause:?} answers {status} {name}, which is not a published row"
            );
            answered.insert((status.as_u16(), name));
        }
        assert_eq!(answered, published, "published rows no cause answers");
    }

    #[test]
    fn messages_are_printable_and_short() {
        let m = printable(&format!("a\tb\n{}", "x".repeat(600)));
        assert!(m.len() < 512);
        assert!(m.chars().all(|c| (' '..='~').contains(&c)));
    }
}
