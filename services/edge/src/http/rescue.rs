//! The rescue step both dialects end in (linkerd2-proxy's `ServerRescue`):
//! a dialect's stack returns its own error type, its one wire table turns
//! it into the answer, and here every 5xx is logged exactly once, with its
//! whole `#[source]` chain and the request id, and handed back as the audit
//! line's `cause`. The caller never sees the chain (5xx bodies say little).

use http::StatusCode;

use super::cause::Cause;

/// Log a failed request's cause when it is a 5xx; returns the cause for
/// the audit line (`None` below 500: a 4xx is the caller's doing and its
/// error code says all).
pub fn rescue(
    dialect: &'static str,
    request_id: &str,
    status: StatusCode,
    error: &(dyn std::error::Error + 'static),
) -> Option<String> {
    if !status.is_server_error() {
        return None;
    }
    let Cause(cause) = Cause::of(error);
    tracing::warn!(
        target: "keymesh::rescue",
        dialect,
        request_id,
        status = status.as_u16(),
        cause = %cause,
        "request failed"
    );
    Some(cause)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn only_server_errors_have_a_cause_and_it_is_the_whole_chain() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(
            rescue("xks", "r1", StatusCode::INTERNAL_SERVER_ERROR, &e).as_deref(),
            Some("outer: inner")
        );
        assert_eq!(rescue("xks", "r1", StatusCode::BAD_REQUEST, &e), None);
    }
}
