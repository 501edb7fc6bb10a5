//! The typed cause of a failed crypto-worker call, for the dialects' error
//! tables and the edge's 5xx cause line: the status code, the worker's
//! machine-readable reason and a bounded message, never the status's
//! details or metadata (so it carries no secrets).

use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;

/// Why a crypto-worker call failed without a wire-specific reason.
#[derive(Debug, thiserror::Error)]
pub enum WorkerFailure {
    /// No worker is known at all.
    #[error("no crypto-worker available")]
    NoWorker,
    /// The worker (or the transport to it) answered this status.
    #[error("crypto-worker call failed: {code:?} {reason:?}: {message}")]
    Status {
        code: tonic::Code,
        reason: ErrorReason,
        message: String,
    },
}

impl From<&tonic::Status> for WorkerFailure {
    fn from(s: &tonic::Status) -> Self {
        Self::Status {
            code: s.code(),
            reason: ErrorInfo::decode(s.details())
                .map(|i| i.reason())
                .unwrap_or(ErrorReason::Unspecified),
            // Bounded: the message ends up in one audit line.
            message: s.message().chars().take(200).collect(),
        }
    }
}
