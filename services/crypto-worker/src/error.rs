//! Every way a crypto-worker request can fail, and the one place that turns a
//! failure into a gRPC status.
//!
//! The edge maps the machine-readable `ErrorInfo.reason` carried in
//! `Status::details()` to the XKS wire table and never parses the message, so
//! the code/reason pairs below are a contract (docs/ARCHITECTURE.md, "gRPC
//! error contract"). The wire status the edge derives is noted on each variant.

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;
use tonic::{Code, Status};

/// Causes, not messages: each variant maps to exactly one (code, reason).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No secret key has this label. XKS 404 KeyNotFoundException.
    #[error("key {key_id:?} not found")]
    KeyNotFound { key_id: String },

    /// The key-status file marks the key disabled. XKS 400 InvalidStateException.
    #[error("key {key_id:?} is disabled")]
    KeyDisabled { key_id: String },

    /// CKA_ENCRYPT/CKA_DECRYPT is false, or the HSM said
    /// CKR_KEY_FUNCTION_NOT_PERMITTED. XKS 400 InvalidKeyUsageException.
    #[error("key {key_id:?} does not permit {operation}")]
    UsageNotPermitted {
        key_id: String,
        operation: &'static str,
    },

    /// Tag/AAD mismatch or malformed ciphertext. XKS 400 InvalidCiphertextException.
    #[error("ciphertext does not authenticate under this key, IV and AAD")]
    InvalidCiphertext(#[source] Pkcs11Error),

    /// A request field is malformed (IV/tag length, empty key id). XKS 400 ValidationException.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    /// The key exists but is not AES-256. XKS 400 InvalidKeyUsageException.
    #[error("key {key_id:?} is {key_spec}, not AES_256")]
    UnsupportedKey { key_id: String, key_spec: String },

    /// Several secret keys share the label. XKS 500 InternalException.
    #[error("{count} secret keys are labelled {key_id:?}")]
    AmbiguousKey { key_id: String, count: usize },

    /// Any other PKCS#11 failure. XKS 500 InternalException.
    #[error("HSM call failed")]
    Hsm(#[source] Pkcs11Error),

    /// The HSM answered with something AES-GCM cannot produce (e.g. output
    /// shorter than the tag). XKS 500 InternalException.
    #[error("HSM returned malformed output: {0}")]
    HsmOutput(&'static str),

    /// `verify` was requested and the fresh ciphertext did not decrypt back to
    /// the plaintext. XKS 500 InternalException.
    #[error("encrypt verification failed: ciphertext does not round-trip")]
    VerifyFailed,

    /// The OS CSPRNG failed to produce an IV. XKS 500 InternalException.
    #[error("system random number generator failed")]
    Rng,

    /// No slot carries a token with the configured label (startup).
    #[error("no token labelled {label:?}")]
    TokenNotFound { label: String },

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

    /// KeyVault: the wrapping (domain) key named by the request is not on the
    /// token, or is not an AES-256 key that may wrap and unwrap
    /// (`keymeshctl domain-key init` creates it).
    #[error("wrapping key {label:?} {problem}")]
    WrappingKeyMissing {
        label: String,
        problem: &'static str,
    },

    /// KeyVault: a wrapped key does not unwrap under its wrapping key into an
    /// AES-256 key (corrupted, truncated, or wrapped under another key).
    #[error("wrapped key does not unwrap under {label:?}: {problem}")]
    InvalidKeyMaterial {
        label: String,
        problem: &'static str,
        #[source]
        source: Option<Pkcs11Error>,
    },
}

/// Whether a PKCS#11 return value was an authentication failure of a decrypt.
fn is_decrypt(function: Function) -> bool {
    matches!(
        function,
        Function::Decrypt | Function::DecryptUpdate | Function::DecryptFinal
    )
}

impl Error {
    /// THE mapping of `CKR_*` to causes. `key_id` names the key the call used
    /// (for messages only).
    ///
    /// SoftHSM2 reports a wrong GCM tag or AAD as `CKR_GENERAL_ERROR` from
    /// `C_Decrypt` (measured, see FIELD-NOTES), so a general error on a decrypt
    /// call is a bad ciphertext; anywhere else it is an HSM failure.
    /// `CKR_KEY_TYPE_INCONSISTENT` means the key cannot do AES-GCM at all,
    /// i.e. "not an AES-256 key".
    ///
    /// `C_UnwrapKey` failing on the wrapped bytes means the key material is
    /// bad (SoftHSM2 reports a failed RFC 5649 integrity check as
    /// `CKR_WRAPPED_KEY_INVALID` or `CKR_GENERAL_ERROR`); there `key_id` is
    /// the wrapping key's label.
    pub fn from_pkcs11(err: Pkcs11Error, key_id: &str) -> Self {
        match err {
            Pkcs11Error::Pkcs11(
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::KeySizeRange,
                Function::UnwrapKey,
            ) => Error::InvalidKeyMaterial {
                label: key_id.to_owned(),
                problem: "the HSM rejected it",
                source: Some(err),
            },
            Pkcs11Error::Pkcs11(RvError::KeyFunctionNotPermitted, f) => Error::UsageNotPermitted {
                key_id: key_id.to_owned(),
                operation: if is_decrypt(f) { "DECRYPT" } else { "ENCRYPT" },
            },
            Pkcs11Error::Pkcs11(RvError::GeneralError, f) if is_decrypt(f) => {
                Error::InvalidCiphertext(err)
            }
            Pkcs11Error::Pkcs11(
                RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                _,
            ) => Error::InvalidCiphertext(err),
            Pkcs11Error::Pkcs11(RvError::KeyTypeInconsistent, _) => Error::UnsupportedKey {
                key_id: key_id.to_owned(),
                key_spec: "a key type AES-GCM cannot use".to_owned(),
            },
            other => Error::Hsm(other),
        }
    }

    /// gRPC code and machine-readable reason (the contract table).
    pub fn code_and_reason(&self) -> (Code, Option<ErrorReason>) {
        use ErrorReason as R;
        match self {
            Error::KeyNotFound { .. } => (Code::NotFound, Some(R::KeyNotFound)),
            Error::KeyDisabled { .. } => (Code::FailedPrecondition, Some(R::KeyDisabled)),
            Error::UsageNotPermitted { .. } => {
                (Code::FailedPrecondition, Some(R::KeyUsageNotPermitted))
            }
            Error::InvalidCiphertext(_) => (Code::InvalidArgument, Some(R::InvalidCiphertext)),
            Error::InvalidArgument(_) => (Code::InvalidArgument, Some(R::InvalidArgument)),
            Error::UnsupportedKey { .. } => (Code::FailedPrecondition, Some(R::UnsupportedKey)),
            Error::AmbiguousKey { .. } => (Code::FailedPrecondition, Some(R::AmbiguousKey)),
            Error::WrappingKeyMissing { .. } => {
                (Code::FailedPrecondition, Some(R::WrappingKeyMissing))
            }
            Error::InvalidKeyMaterial { .. } => {
                (Code::InvalidArgument, Some(R::InvalidKeyMaterial))
            }
            Error::Hsm(_)
            | Error::HsmOutput(_)
            | Error::VerifyFailed
            | Error::Rng
            | Error::TokenNotFound { .. }
            | Error::WorkerLost
            | Error::SessionUnavailable => (Code::Internal, Some(R::HsmFailure)),
            Error::Busy => (Code::ResourceExhausted, Some(R::HsmBusy)),
            // The table has no reason for a timeout: the code says it all.
            Error::DeadlineExceeded => (Code::DeadlineExceeded, None),
        }
    }

    /// Whether the session (or the login behind it) is gone: the only cure is
    /// a fresh session ([`crate::hsm::session_lost`]).
    pub fn session_lost(&self) -> bool {
        matches!(self, Error::Hsm(Pkcs11Error::Pkcs11(rv, _)) if crate::hsm::session_lost(*rv))
    }

    /// Whether a cached object handle no longer names an object
    /// ([`crate::hsm::handle_stale`]).
    pub fn handle_stale(&self) -> bool {
        matches!(self, Error::Hsm(Pkcs11Error::Pkcs11(rv, _)) if crate::hsm::handle_stale(*rv))
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
                Error::KeyNotFound { key_id: k() },
                Code::NotFound,
                R::KeyNotFound,
            ),
            (
                Error::KeyDisabled { key_id: k() },
                Code::FailedPrecondition,
                R::KeyDisabled,
            ),
            (
                Error::UsageNotPermitted {
                    key_id: k(),
                    operation: "ENCRYPT",
                },
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
                Error::InvalidArgument("iv"),
                Code::InvalidArgument,
                R::InvalidArgument,
            ),
            (
                Error::UnsupportedKey {
                    key_id: k(),
                    key_spec: "AES_128".into(),
                },
                Code::FailedPrecondition,
                R::UnsupportedKey,
            ),
            (
                Error::AmbiguousKey {
                    key_id: k(),
                    count: 2,
                },
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
            (Error::VerifyFailed, Code::Internal, R::HsmFailure),
            (
                Error::WrappingKeyMissing {
                    label: "d".into(),
                    problem: "not found",
                },
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
        let s = Status::from(Error::KeyNotFound {
            key_id: "k1".into(),
        });
        assert!(s.message().contains("k1"));
    }
}
