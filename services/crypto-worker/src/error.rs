//! Every way a crypto-worker request can fail, and the one place that turns a
//! failure into a gRPC status.
//!
//! The edge maps the machine-readable `ErrorInfo.reason` carried in
//! `Status::details()` to the XKS wire table and never parses the message, so
//! the code/reason pairs below are a contract (docs/ARCHITECTURE.md, "gRPC
//! error contract"). The wire status the edge derives is noted on each variant.

use cryptoki::error::Error as Pkcs11Error;
use keymesh_pkcs11::Error as HsmError;
use keymesh_pkcs11::Recovery;
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;
use tonic::{Code, Status};

/// Causes, not messages: each variant (and each cause of a PKCS#11
/// failure) maps to exactly one (code, reason).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PKCS#11 failure, by cause ([`keymesh_pkcs11::Error`], where
    /// `CKR_*` is mapped). Wire status per cause in [`Error::code_and_reason`]:
    /// KeyNotFound XKS 404 KeyNotFoundException; UsageNotPermitted and
    /// UnsupportedKey XKS 400 InvalidKeyUsageException; InvalidCiphertext
    /// XKS 400 InvalidCiphertextException; InvalidArgument XKS 400
    /// ValidationException; AmbiguousKey, Hsm, HsmOutput, VerifyFailed, Rng
    /// and TokenNotFound XKS 500 InternalException.
    #[error(transparent)]
    Pkcs11(HsmError),

    /// The key-status file marks the key disabled. XKS 400 InvalidStateException.
    #[error("key {key_id:?} is disabled")]
    KeyDisabled { key_id: String },

    /// A request field is malformed (empty key id, missing field, bad
    /// length). XKS 400 ValidationException.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    /// The job queue is full or the pool is draining. XKS 429 ThrottlingException.
    #[error("HSM session pool busy")]
    Busy,

    /// The request deadline passed before the HSM was called. XKS 503 DependencyTimeoutException.
    #[error("request deadline exceeded before the HSM call")]
    DeadlineExceeded,

    /// A session thread died with the job (should not happen). XKS 500 InternalException.
    #[error("HSM session thread lost the request")]
    WorkerLost,

    /// No session could be opened to hold unwrapped keys or key copies (the
    /// token is gone). XKS 500 InternalException.
    #[error("no HSM session available to hold session objects")]
    SessionUnavailable,
}

impl From<HsmError> for Error {
    fn from(err: HsmError) -> Self {
        match err {
            // One malformed-input cause in the worker, whoever found it
            // (request checks here, IV/tag lengths in the AES-GCM helpers).
            HsmError::InvalidArgument(what) => Error::InvalidArgument(what),
            other => Error::Pkcs11(other),
        }
    }
}

impl Error {
    /// A PKCS#11 failure with no more specific cause.
    pub fn hsm(err: Pkcs11Error) -> Self {
        Error::Pkcs11(HsmError::Hsm(err))
    }

    /// [`keymesh_pkcs11::Error::from_pkcs11`]: THE mapping of `CKR_*` to
    /// causes, `key_id` naming the key the call used.
    pub fn from_pkcs11(err: Pkcs11Error, key_id: &str) -> Self {
        Error::from(HsmError::from_pkcs11(err, key_id))
    }

    /// gRPC code and machine-readable reason (the contract table).
    pub fn code_and_reason(&self) -> (Code, Option<ErrorReason>) {
        use ErrorReason as R;
        match self {
            Error::Pkcs11(e) => match e {
                HsmError::KeyNotFound { .. } => (Code::NotFound, Some(R::KeyNotFound)),
                HsmError::UsageNotPermitted { .. } => {
                    (Code::FailedPrecondition, Some(R::KeyUsageNotPermitted))
                }
                HsmError::InvalidCiphertext(_) => {
                    (Code::InvalidArgument, Some(R::InvalidCiphertext))
                }
                HsmError::InvalidArgument(_) => (Code::InvalidArgument, Some(R::InvalidArgument)),
                HsmError::UnsupportedKey { .. } => {
                    (Code::FailedPrecondition, Some(R::UnsupportedKey))
                }
                HsmError::AmbiguousKey { .. } => (Code::FailedPrecondition, Some(R::AmbiguousKey)),
                HsmError::WrappingKeyMissing { .. } => {
                    (Code::FailedPrecondition, Some(R::WrappingKeyMissing))
                }
                HsmError::InvalidKeyMaterial { .. } => {
                    (Code::InvalidArgument, Some(R::InvalidKeyMaterial))
                }
                HsmError::Hsm(_)
                | HsmError::HsmOutput(_)
                | HsmError::VerifyFailed
                | HsmError::Rng
                | HsmError::TokenNotFound { .. } => (Code::Internal, Some(R::HsmFailure)),
            },
            Error::KeyDisabled { .. } => (Code::FailedPrecondition, Some(R::KeyDisabled)),
            Error::InvalidArgument(_) => (Code::InvalidArgument, Some(R::InvalidArgument)),
            Error::WorkerLost | Error::SessionUnavailable => (Code::Internal, Some(R::HsmFailure)),
            Error::Busy => (Code::ResourceExhausted, Some(R::HsmBusy)),
            // The table has no reason for a timeout: the code says it all.
            Error::DeadlineExceeded => (Code::DeadlineExceeded, None),
        }
    }

    /// What this failure asks of the session that ran the call
    /// ([`keymesh_pkcs11::recovery`], the one place that decides).
    pub fn recovery(&self) -> Recovery {
        match self {
            Error::Pkcs11(e) => e.recovery(),
            _ => Recovery::None,
        }
    }

    /// Server-side faults are logged at error level, caller mistakes lower.
    pub fn is_internal(&self) -> bool {
        self.code_and_reason().0 == Code::Internal
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let (code, reason) = err.code_and_reason();
        // Internal details stay in our log (written once by the handler);
        // the caller learns only that the HSM failed.
        let message = if code == Code::Internal {
            "HSM failure".to_owned()
        } else {
            err.to_string()
        };
        match reason {
            Some(reason) => {
                let info = ErrorInfo {
                    reason: reason as i32,
                };
                Status::with_details(code, message, info.encode_to_vec().into())
            }
            None => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use cryptoki::context::Function;
    use cryptoki::error::RvError;

    use super::*;

    fn rv(e: RvError, f: Function) -> Pkcs11Error {
        Pkcs11Error::Pkcs11(e, f)
    }

    fn status_of(err: Error) -> (Code, ErrorReason) {
        let status = Status::from(err);
        let reason = if status.details().is_empty() {
            ErrorReason::Unspecified
        } else {
            let info = ErrorInfo::decode(status.details()).unwrap();
            ErrorReason::try_from(info.reason).unwrap()
        };
        (status.code(), reason)
    }

    /// Every row of the ARCHITECTURE.md gRPC error table.
    #[test]
    fn contract_table() {
        use ErrorReason as R;
        let k = || "k1".to_owned();
        let rows: Vec<(Error, Code, R)> = vec![
            (
                HsmError::KeyNotFound { key_id: k() }.into(),
                Code::NotFound,
                R::KeyNotFound,
            ),
            (
                Error::KeyDisabled { key_id: k() },
                Code::FailedPrecondition,
                R::KeyDisabled,
            ),
            (
                HsmError::UsageNotPermitted {
                    key_id: k(),
                    operation: "ENCRYPT",
                }
                .into(),
                Code::FailedPrecondition,
                R::KeyUsageNotPermitted,
            ),
            (
                Error::from_pkcs11(
                    rv(RvError::KeyFunctionNotPermitted, Function::EncryptInit),
                    "k1",
                ),
                Code::FailedPrecondition,
                R::KeyUsageNotPermitted,
            ),
            (
                Error::from_pkcs11(rv(RvError::GeneralError, Function::Decrypt), "k1"),
                Code::InvalidArgument,
                R::InvalidCiphertext,
            ),
            (
                Error::from_pkcs11(rv(RvError::EncryptedDataInvalid, Function::Decrypt), "k1"),
                Code::InvalidArgument,
                R::InvalidCiphertext,
            ),
            (
                Error::from_pkcs11(rv(RvError::EncryptedDataLenRange, Function::Decrypt), "k1"),
                Code::InvalidArgument,
                R::InvalidCiphertext,
            ),
            (
                Error::InvalidArgument("key_id"),
                Code::InvalidArgument,
                R::InvalidArgument,
            ),
            (
                HsmError::InvalidArgument("iv").into(),
                Code::InvalidArgument,
                R::InvalidArgument,
            ),
            (
                HsmError::UnsupportedKey {
                    key_id: k(),
                    key_spec: "AES_128".into(),
                }
                .into(),
                Code::FailedPrecondition,
                R::UnsupportedKey,
            ),
            (
                HsmError::AmbiguousKey {
                    key_id: k(),
                    count: 2,
                }
                .into(),
                Code::FailedPrecondition,
                R::AmbiguousKey,
            ),
            (
                Error::from_pkcs11(rv(RvError::GeneralError, Function::Encrypt), "k1"),
                Code::Internal,
                R::HsmFailure,
            ),
            (
                Error::from_pkcs11(rv(RvError::DeviceError, Function::Decrypt), "k1"),
                Code::Internal,
                R::HsmFailure,
            ),
            (HsmError::VerifyFailed.into(), Code::Internal, R::HsmFailure),
            (
                HsmError::WrappingKeyMissing {
                    label: "d".into(),
                    problem: "not found",
                }
                .into(),
                Code::FailedPrecondition,
                R::WrappingKeyMissing,
            ),
            (
                Error::from_pkcs11(rv(RvError::WrappedKeyInvalid, Function::UnwrapKey), "d"),
                Code::InvalidArgument,
                R::InvalidKeyMaterial,
            ),
            (
                Error::from_pkcs11(rv(RvError::GeneralError, Function::UnwrapKey), "d"),
                Code::InvalidArgument,
                R::InvalidKeyMaterial,
            ),
            (
                Error::from_pkcs11(rv(RvError::EncryptedDataInvalid, Function::UnwrapKey), "d"),
                Code::InvalidArgument,
                R::InvalidKeyMaterial,
            ),
            (
                Error::from_pkcs11(rv(RvError::GeneralError, Function::WrapKey), "d"),
                Code::Internal,
                R::HsmFailure,
            ),
            (Error::SessionUnavailable, Code::Internal, R::HsmFailure),
            (Error::Busy, Code::ResourceExhausted, R::HsmBusy),
            (
                Error::DeadlineExceeded,
                Code::DeadlineExceeded,
                R::Unspecified,
            ),
        ];
        for (err, code, reason) in rows {
            let label = format!("{err:?}");
            assert_eq!(status_of(err), (code, reason), "{label}");
        }
    }

    #[test]
    fn internal_errors_hide_their_text() {
        let s = Status::from(Error::from_pkcs11(
            rv(RvError::DeviceError, Function::Encrypt),
            "k1",
        ));
        assert_eq!(s.message(), "HSM failure");
        let s = Status::from(Error::from(HsmError::KeyNotFound {
            key_id: "k1".into(),
        }));
        assert!(s.message().contains("k1"));
    }
}
