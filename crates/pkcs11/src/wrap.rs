//! Key wrapping: the HSM-resident domain key and the customer master keys
//! (CMKs) kept outside the HSM, wrapped under it.
//!
//! A CMK is generated inside the HSM as a session object, wrapped once with
//! CKM_AES_KEY_WRAP_PAD (RFC 5649) under the domain key, and destroyed: the
//! wrapped bytes go to the caller's database. Any process whose token holds
//! the domain key can therefore use any CMK, by unwrapping it into a session
//! object (sensitive, non-extractable, encrypt/decrypt only) and running
//! AES-GCM on that ([`crate::aead`]). CMK plaintext never leaves the HSM.
//! The worker caches those unwrapped objects; keymeshctl unwraps its account
//! seal key the same way.

use cryptoki::error::Error as Pkcs11Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectHandle};
use cryptoki::session::Session;

use crate::error::Error;
use crate::keys::{aes_256_template, find_key_handles, key_info};

/// Default CKA_LABEL of the domain key (`--domain-key-label`): the HSM-resident
/// AES-256 key that wraps customer master keys kept outside the HSM.
pub const DEFAULT_DOMAIN_KEY_LABEL: &str = "keymesh-domain-v1";

/// CKA_LABEL of the session objects (CKA_TOKEN=false) holding unwrapped or
/// freshly generated customer master keys. Never a customer key label:
/// those are looked up with CKA_TOKEN=true.
pub const VAULT_KEY_LABEL: &str = "keymesh-vault-key";

/// The wrapping mechanism of customer master keys: AES Key Wrap with Padding
/// (RFC 5649, CKM_AES_KEY_WRAP_PAD; SoftHSM2 2.6 has it). It carries its own
/// integrity check, so a corrupted or foreign blob fails to unwrap instead of
/// yielding a wrong key.
pub const WRAP_MECHANISM: Mechanism<'static> = Mechanism::AesKeyWrapPad;

/// The domain key: an AES-256 token key that can only wrap and unwrap
/// (no encrypt/decrypt, so it cannot be used as a customer key), sensitive
/// and non-extractable, so it never leaves the HSM.
pub fn domain_key_template(label: &str) -> Vec<Attribute> {
    let mut template = aes_256_template(label, true, false, false);
    for attr in &mut template {
        match attr {
            Attribute::Wrap(w) | Attribute::Unwrap(w) => *w = true,
            _ => {}
        }
    }
    template
}

/// Generate the domain key labelled `label` on the token. Uniqueness of the
/// label is the caller's job.
pub fn generate_domain_key(session: &Session, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
    session.generate_key(&Mechanism::AesKeyGen, &domain_key_template(label))
}

/// The domain key labelled `label`: exactly one token secret key with that
/// label, AES-256, with CKA_WRAP and CKA_UNWRAP.
pub fn find_domain_key(session: &Session, label: &str) -> Result<ObjectHandle, Error> {
    let missing = |problem| Error::WrappingKeyMissing {
        label: label.to_owned(),
        problem,
    };
    let handles = find_key_handles(session, label).map_err(|e| Error::from_pkcs11(e, label))?;
    let handle = match handles.as_slice() {
        [] => return Err(missing("is not on the token")),
        [handle] => *handle,
        many => {
            return Err(Error::AmbiguousKey {
                key_id: label.to_owned(),
                count: many.len(),
            });
        }
    };
    let info = key_info(session, handle).map_err(|e| Error::from_pkcs11(e, label))?;
    if !info.is_aes_256() || !info.usage.wrap || !info.usage.unwrap {
        return Err(missing(
            "is not an AES-256 key with CKA_WRAP and CKA_UNWRAP",
        ));
    }
    Ok(handle)
}

/// A fresh customer master key as a session object: extractable so that it
/// can be wrapped (once, under the domain key), sensitive so its value cannot
/// be read in clear, and usable for nothing else.
pub fn new_vault_key_template() -> Vec<Attribute> {
    let mut template = aes_256_template(VAULT_KEY_LABEL, false, false, false);
    for attr in &mut template {
        if let Attribute::Extractable(e) = attr {
            *e = true;
        }
    }
    template
}

/// An unwrapped customer master key: a session object that can encrypt and
/// decrypt, sensitive and non-extractable, so it can neither be read nor
/// wrapped again. CKA_VALUE_LEN is left out: the length comes from the
/// wrapped bytes, and SoftHSM2 refuses C_UnwrapKey templates that give it.
pub fn unwrapped_vault_key_template() -> Vec<Attribute> {
    aes_256_template(VAULT_KEY_LABEL, false, true, true)
        .into_iter()
        .filter(|a| !matches!(a, Attribute::ValueLen(_)))
        .collect()
}

/// RFC 5649 output for a 32-byte key: one 8-byte integrity block plus the key.
pub const WRAPPED_LEN: usize = 40;
/// Longest accepted wrapping-key label.
pub const MAX_LABEL_LEN: usize = 128;
/// What the AES-GCM helpers print for a vault key in their errors: the CMK
/// has no name the worker knows.
pub const VAULT_KEY_ID: &str = "(wrapped key)";

/// A wrapped CMK as a request names it.
#[derive(Clone, Copy)]
pub struct WrappedKeyRef<'a> {
    /// CKA_LABEL of the domain key it is wrapped under.
    pub wrapping_key: &'a str,
    pub wrapped: &'a [u8],
}

impl std::fmt::Debug for WrappedKeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKeyRef")
            .field("wrapping_key", &self.wrapping_key)
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

/// Whether `label` can name a domain key: 1-128 bytes, no NUL (C tools
/// would cut the label there).
pub fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("wrapping key label is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return Err("wrapping key label is longer than 128 bytes");
    }
    if label.contains('\0') {
        return Err("wrapping key label contains a NUL byte");
    }
    Ok(())
}

/// A label a domain key may be created or configured under: well-formed and
/// in the wrapping-key class ([`keymesh_common::labels::is_wrapping_key`]),
/// the only labels the KeyVault service accepts.
pub fn check_domain_key_label(label: &str) -> Result<(), String> {
    check_label(label).map_err(str::to_owned)?;
    if !keymesh_common::labels::is_wrapping_key(label) {
        return Err(format!(
            "{label:?} must start with {:?} (the wrapping-key label class)",
            keymesh_common::labels::WRAPPING_KEY_PREFIX
        ));
    }
    Ok(())
}

/// A session object destroyed when dropped: the temporary CMK of
/// [`generate_wrapped`] and the halves of a data key pair.
pub struct SessionObject<'a> {
    session: &'a Session,
    pub handle: ObjectHandle,
}

impl<'a> SessionObject<'a> {
    pub fn new(session: &'a Session, handle: ObjectHandle) -> Self {
        Self { session, handle }
    }
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        // A failure leaves a session object that dies with the session.
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::debug!(error = %e, "cannot destroy a temporary session object");
        }
    }
}

/// GenerateKey: a new AES-256 CMK generated in the HSM, returned wrapped
/// under the domain key `wrapping_key`. The CMK exists unwrapped only as a
/// session object for the length of this call.
pub fn generate_wrapped(session: &Session, wrapping_key: &str) -> Result<Vec<u8>, Error> {
    let domain = find_domain_key(session, wrapping_key)?;
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &new_vault_key_template())
        .map_err(Error::Hsm)?;
    let key = SessionObject::new(session, key);
    let wrapped = session
        .wrap_key(&WRAP_MECHANISM, domain, key.handle)
        .map_err(|e| Error::from_pkcs11(e, wrapping_key))?;
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::HsmOutput("AES key wrap output is not 40 bytes"));
    }
    Ok(wrapped)
}

/// Bytes of the domain key check value (16 hex digits).
pub const KCV_LEN: usize = 8;

/// The key check value (KCV) of the domain key labelled `label`: lower-case
/// hex of the first [`KCV_LEN`] bytes of the AES Key Wrap with Padding
/// (RFC 5649, deterministic) of a fixed 32-byte all-zero AES key under it,
/// computed in the HSM. The domain key may only wrap and unwrap, so the
/// classic KCV (ECB-encrypt a zero block) is not allowed on it; wrapping a
/// known key is, and works on every domain key ever created, with no new
/// attribute. Two keys share a KCV only by a 2^-64 accident; the known-key
/// wrap tells nothing useful about the key (AES under a known plaintext).
pub fn domain_key_check(session: &Session, label: &str) -> Result<String, Error> {
    let domain = find_domain_key(session, label)?;
    let template = vec![
        cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
        cryptoki::object::Attribute::KeyType(KeyType::AES),
        cryptoki::object::Attribute::Token(false),
        cryptoki::object::Attribute::Private(true),
        cryptoki::object::Attribute::Sensitive(false),
        cryptoki::object::Attribute::Extractable(true),
        cryptoki::object::Attribute::Label(b"keymesh-kcv".to_vec()),
        cryptoki::object::Attribute::Encrypt(false),
        cryptoki::object::Attribute::Decrypt(false),
        cryptoki::object::Attribute::Wrap(false),
        cryptoki::object::Attribute::Unwrap(false),
        cryptoki::object::Attribute::Sign(false),
        cryptoki::object::Attribute::Verify(false),
        cryptoki::object::Attribute::Derive(false),
        cryptoki::object::Attribute::Value(vec![0u8; 32]),
    ];
    let known = session.create_object(&template).map_err(Error::Hsm)?;
    let known = SessionObject::new(session, known);
    let wrapped = session
        .wrap_key(&WRAP_MECHANISM, domain, known.handle)
        .map_err(|e| Error::from_pkcs11(e, label))?;
    let kcv = wrapped
        .get(..KCV_LEN)
        .ok_or(Error::HsmOutput("AES key wrap output is too short"))?;
    Ok(kcv.iter().map(|b| format!("{b:02x}")).collect())
}

/// Unwrap `key` on `session` into a session object that can encrypt and
/// decrypt, checking it is an AES-256 key.
pub fn unwrap_on(session: &Session, key: WrappedKeyRef<'_>) -> Result<ObjectHandle, Error> {
    let domain = find_domain_key(session, key.wrapping_key)?;
    let handle = session
        .unwrap_key(
            &WRAP_MECHANISM,
            domain,
            key.wrapped,
            &unwrapped_vault_key_template(),
        )
        .map_err(|e| Error::from_pkcs11(e, key.wrapping_key))?;
    // SoftHSM2 reports CKA_VALUE_LEN 0 for unwrapped keys (measured), so the
    // length is checked where the HSM reports one; otherwise the 40-byte
    // blob (RFC 5649 authenticates the length too) bounds it to 25..=32
    // bytes, of which only 32 is an AES key the HSM will use.
    let checked = match key_info(session, handle) {
        Ok(info)
            if info.key_type == Some(KeyType::AES)
                && matches!(info.value_len, None | Some(0) | Some(32)) =>
        {
            return Ok(handle);
        }
        Ok(_) => Error::InvalidKeyMaterial {
            label: key.wrapping_key.to_owned(),
            problem: "it is not an AES-256 key",
            source: None,
        },
        Err(e) => Error::from_pkcs11(e, key.wrapping_key),
    };
    if let Err(e) = session.destroy_object(handle) {
        tracing::warn!(error = %e, "cannot destroy a rejected unwrapped key");
    }
    Err(checked)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn key<'a>(label: &'a str, wrapped: &'a [u8]) -> WrappedKeyRef<'a> {
        WrappedKeyRef {
            wrapping_key: label,
            wrapped,
        }
    }

    #[test]
    fn labels() {
        assert!(check_label("keymesh-domain-v1").is_ok());
        assert!(check_label("").is_err());
        assert!(check_label("a\0b").is_err());
        assert!(check_label(&"a".repeat(129)).is_err());
    }

    #[test]
    fn debug_hides_wrapped_bytes() {
        let d = format!("{:?}", key("dk", &[7; 40]));
        assert!(d.contains("wrapped_len: 40") && !d.contains("7, 7"), "{d}");
    }

    #[test]
    fn vault_templates() {
        let d = domain_key_template("dk");
        for a in [
            Attribute::Token(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ] {
            assert!(d.contains(&a), "{a:?}");
        }
        let n = new_vault_key_template();
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ] {
            assert!(n.contains(&a), "{a:?}");
        }
        let u = unwrapped_vault_key_template();
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ] {
            assert!(u.contains(&a), "{a:?}");
        }
        assert!(!u.iter().any(|a| matches!(a, Attribute::ValueLen(_))));
    }
}
