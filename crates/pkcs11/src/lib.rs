//! keymesh-pkcs11: the PKCS#11 layer the crypto-worker and keymeshctl share.
//!
//! [`token`] loads the module once per process, finds the token by label
//! (looking again when SoftHSM2 skipped it mid-rewrite), logs in and opens
//! sessions, and initialises new tokens; [`args`] holds the flags that name
//! module, token and PIN. [`keys`] reads, finds, copies and creates customer
//! key objects; [`wrap`] owns the domain key and wraps and unwraps customer
//! master keys under it; [`aead`] is AES-256-GCM on a session. [`mac`] and
//! [`pair`] keep HMAC keys and asymmetric private keys wrapped the same way,
//! computing MACs and signatures on unwrapped session objects. Every failure
//! is a cause in [`error`], where `CKR_*` is mapped once and where the one
//! re-login / handle-eviction decision ([`error::recovery`]) lives.
//! [`backend`] is the trait session holders are written against, so their
//! logic can be tested without an HSM. Nothing here is async: every call
//! blocks on the HSM.

pub mod aead;
pub mod args;
pub mod backend;
pub mod error;
pub mod keys;
pub mod mac;
pub mod pair;
pub mod token;
pub mod wrap;

pub use backend::Backend;
pub use error::{Error, Recovery, recovery};
pub use token::Hsm;
