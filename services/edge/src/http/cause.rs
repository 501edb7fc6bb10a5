//! The cause of a 5xx, for the log and the audit line: rendered from the
//! error's `#[source]` chain by the rescue step both dialects end in
//! (`http::rescue`), which logs it once and writes it into the request's
//! one audit line. The caller never sees it (5xx bodies say little).
//!
//! Without secrets: edge errors carry no request data (their messages are
//! static), worker failures (`keymesh_worker_pool::WorkerFailure`) are
//! rendered from the status code, reason and
//! message only (never its details or metadata; the worker's messages name
//! no key material and say only "HSM failure" for internal errors), and
//! store errors by their display, which names no row values.

/// Longest cause one audit line carries.
const MAX_CAUSE: usize = 512;

/// The internal cause of a 5xx: a response extension read by the audit layers.
#[derive(Debug, Clone)]
pub struct Cause(pub String);

impl Cause {
    /// `e` and its sources, outermost first, joined by ": " (printable
    /// ASCII, at most `MAX_CAUSE` characters).
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out.push_str(": ");
            out.push_str(&s.to_string());
            next = s.source();
        }
        Self(
            out.chars()
                .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
                .take(MAX_CAUSE)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
    use keymesh_worker_pool::WorkerFailure;
    use prost::Message as _;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] WorkerFailure);

    #[test]
    fn renders_the_source_chain_without_details() {
        let info = ErrorInfo {
            reason: ErrorReason::HsmFailure as i32,
        };
        let status = tonic::Status::with_details(
            tonic::Code::Internal,
            "HSM failure\nline",
            info.encode_to_vec().into(),
        );
        let c = Cause::of(&Outer(WorkerFailure::from(&status)));
        assert_eq!(
            c.0,
            "outer: crypto-worker call failed: Internal HsmFailure: HSM failure?line"
        );
        let long = Cause::of(&Outer(WorkerFailure::from(&tonic::Status::unknown(
            "x".repeat(2000),
        ))));
        assert!(long.0.ends_with(&"x".repeat(200)));
        assert!(!long.0.contains(&"x".repeat(201)));
        let many = Cause(Cause::of(&Outer(WorkerFailure::NoWorker)).0.repeat(100));
        assert_eq!(Cause::of(&std::io::Error::other(many.0)).0.len(), MAX_CAUSE);
    }
}
