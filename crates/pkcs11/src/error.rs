//! Every way a PKCS#11 operation can fail, the one mapping of `CKR_*` to
//! those causes ([`Error::from_pkcs11`]), and the one decision of what a
//! failure means for the session and the handles it used ([`recovery`]).
//!
//! The crypto-worker turns these causes into gRPC codes and reasons (its own
//! `error` module); keymeshctl prints them.

use cryptoki::context::Function;
use cryptoki::error::{Error as Pkcs11Error, RvError};

/// Causes, not messages: each variant is one thing that went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No secret key has this label.
    #[error("key {key_id:?} not found")]
    KeyNotFound { key_id: String },

    /// CKA_ENCRYPT/CKA_DECRYPT is false, or the HSM said
    /// CKR_KEY_FUNCTION_NOT_PERMITTED.
    #[error("key {key_id:?} does not permit {operation}")]
    UsageNotPermitted {
        key_id: String,
        operation: &'static str,
    },

    /// Tag/AAD mismatch or malformed ciphertext.
    #[error("ciphertext does not authenticate under this key, IV and AAD")]
    InvalidCiphertext(#[source] Pkcs11Error),

    /// An input is malformed (IV or tag length).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    /// The key exists but is not AES-256.
    #[error("key {key_id:?} is {key_spec}, not AES_256")]
    UnsupportedKey { key_id: String, key_spec: String },

    /// Several secret keys share the label.
    #[error("{count} secret keys are labelled {key_id:?}")]
    AmbiguousKey { key_id: String, count: usize },

    /// Any other PKCS#11 failure.
    #[error("HSM call failed")]
    Hsm(#[source] Pkcs11Error),

    /// The HSM answered with something the operation cannot produce (e.g.
    /// AES-GCM output shorter than the tag).
    #[error("HSM returned malformed output: {0}")]
    HsmOutput(&'static str),

    /// `verify` was requested and the fresh ciphertext did not decrypt back to
    /// the plaintext.
    #[error("encrypt verification failed: ciphertext does not round-trip")]
    VerifyFailed,

    /// The OS CSPRNG failed to produce an IV.
    #[error("system random number generator failed")]
    Rng,

    /// No slot carries a token with the configured label.
    #[error("no token labelled {label:?}")]
    TokenNotFound { label: String },

    /// The wrapping (domain) key is not on the token, or is not an AES-256
    /// key that may wrap and unwrap (`keymeshctl domain-key init` creates it).
    #[error("wrapping key {label:?} {problem}")]
    WrappingKeyMissing {
        label: String,
        problem: &'static str,
    },

    /// A wrapped key does not unwrap under its wrapping key into an AES-256
    /// key (corrupted, truncated, or wrapped under another key).
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

    /// What this failure means for the session and the handles it used
    /// ([`recovery`]); only a plain HSM failure can mean anything but
    /// [`Recovery::None`].
    pub fn recovery(&self) -> Recovery {
        match self {
            Error::Hsm(e) => recovery(e),
            _ => Recovery::None,
        }
    }
}

/// What a failed PKCS#11 call asks of the code that holds the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: the failure is the answer (or not about the session at all).
    None,
    /// The session (or the login behind it) is gone: the only cure is to
    /// drop the session, open a fresh one and log in again.
    Reopen,
    /// The session is fine but a cached object handle no longer names an
    /// object (another process deleted or re-created the key, or the session
    /// that owned it is gone): forget the handle and find the key again.
    Refind,
}

/// THE decision between re-login, handle eviction and nothing, from the
/// `CKR_*` of a failed call. Every session holder (the worker's session
/// threads, its key-copy and unwrapped-key keeper sessions) acts on this
/// answer and decides nothing of its own.
pub fn recovery(err: &Pkcs11Error) -> Recovery {
    match err {
        Pkcs11Error::Pkcs11(
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized,
            _,
        ) => Recovery::Reopen,
        Pkcs11Error::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _) => {
            Recovery::Refind
        }
        _ => Recovery::None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn rv(e: RvError, f: Function) -> Pkcs11Error {
        Pkcs11Error::Pkcs11(e, f)
    }

    #[test]
    fn ckr_mapping() {
        let k = "k1";
        assert!(matches!(
            Error::from_pkcs11(rv(RvError::KeyFunctionNotPermitted, Function::Decrypt), k),
            Error::UsageNotPermitted {
                operation: "DECRYPT",
                ..
            }
        ));
        assert!(matches!(
            Error::from_pkcs11(rv(RvError::GeneralError, Function::Decrypt), k),
            Error::InvalidCiphertext(_)
        ));
        assert!(matches!(
            Error::from_pkcs11(rv(RvError::GeneralError, Function::Encrypt), k),
            Error::Hsm(_)
        ));
        assert!(matches!(
            Error::from_pkcs11(rv(RvError::GeneralError, Function::UnwrapKey), k),
            Error::InvalidKeyMaterial { .. }
        ));
        assert!(matches!(
            Error::from_pkcs11(rv(RvError::KeyTypeInconsistent, Function::EncryptInit), k),
            Error::UnsupportedKey { .. }
        ));
    }

    #[test]
    fn recovery_decisions() {
        for lost in [
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::UserNotLoggedIn,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
        ] {
            let e = rv(lost, Function::Encrypt);
            assert_eq!(recovery(&e), Recovery::Reopen, "{lost:?}");
            assert_eq!(Error::Hsm(e).recovery(), Recovery::Reopen);
        }
        for stale in [RvError::ObjectHandleInvalid, RvError::KeyHandleInvalid] {
            assert_eq!(
                recovery(&rv(stale, Function::EncryptInit)),
                Recovery::Refind
            );
        }
        assert_eq!(
            recovery(&rv(RvError::GeneralError, Function::Encrypt)),
            Recovery::None
        );
        // A mapped cause is an answer, never a reason to re-open.
        assert_eq!(
            Error::from_pkcs11(rv(RvError::GeneralError, Function::Decrypt), "k").recovery(),
            Recovery::None
        );
    }
}
