//! The vault adapter (`keymesh-keyvault-client`) against this edge's wire
//! table: a worker failure reaches the wire through the vault exactly as it
//! did when handlers called the pool themselves (`ApiError::from_worker`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keymesh_keyvault_client::PoolFailure;
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use keymesh_worker_pool::WorkerFailure;
use prost::Message as _;

use crate::http::cause::Cause;
use crate::huawei::error::{ApiError, Dialect};
use crate::mesh::PoolError;

fn status(code: tonic::Code, reason: ErrorReason) -> tonic::Status {
    let info = ErrorInfo {
        reason: reason as i32,
    };
    tonic::Status::with_details(code, "x", info.encode_to_vec().into())
}

#[test]
fn worker_failures_keep_their_wire_codes() {
    use tonic::Code as G;
    let cases = [
        status(G::DeadlineExceeded, ErrorReason::Unspecified),
        status(G::Cancelled, ErrorReason::Unspecified),
        status(G::Unavailable, ErrorReason::Unspecified),
        status(G::Unknown, ErrorReason::Unspecified),
        status(G::InvalidArgument, ErrorReason::InvalidCiphertext),
        status(G::ResourceExhausted, ErrorReason::HsmBusy),
        status(G::InvalidArgument, ErrorReason::InvalidArgument),
        status(G::Internal, ErrorReason::HsmFailure),
    ];
    for s in cases {
        let via_vault = ApiError::from(<PoolFailure as PoolError>::from_status(&s).0);
        let direct = ApiError::from_worker(&s);
        for d in [Dialect::Kms, Dialect::Csms] {
            assert_eq!(via_vault.wire(d), direct.wire(d), "{s:?}");
        }
        // The 5xx cause (the source chain) is the same too.
        assert_eq!(Cause::of(&via_vault).0, Cause::of(&direct).0);
    }
    let shed = ApiError::from(<PoolFailure as PoolError>::shed().0);
    assert_eq!(shed.wire(Dialect::Kms).code, "APIGW.0308");
    let none = ApiError::from(<PoolFailure as PoolError>::no_worker().0);
    assert!(matches!(none, ApiError::Worker(WorkerFailure::NoWorker)));
}
