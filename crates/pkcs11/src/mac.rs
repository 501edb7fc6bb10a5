//! HMAC keys (HMAC_256/384/512) kept outside the HSM, wrapped under the
//! domain key like the AES customer master keys of [`crate::wrap`].
//!
//! Why wrapped and not exported: the secret part of an HMAC key is as
//! valuable as an AES key, so it is generated inside the HSM
//! (CKM_GENERIC_SECRET_KEY_GEN) as a sensitive session object, extractable
//! only so that it can be wrapped once with CKM_AES_KEY_WRAP_PAD, and
//! destroyed right after. To compute a MAC the blob is unwrapped into a
//! sensitive, non-extractable session object that may only sign and verify,
//! C_Sign runs on it, and the object is destroyed: the key never leaves the
//! HSM in clear. Verification recomputes the tag in the HSM and compares in
//! constant time outside it (`subtle`), so a wrong tag takes as long as a
//! right one.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use subtle::ConstantTimeEq as _;

use crate::error::Error;
use crate::wrap::{SessionObject, VAULT_KEY_LABEL, WRAP_MECHANISM, WrappedKeyRef, find_domain_key};

/// The HMAC algorithms on offer: HMAC over SHA-2, as CKM_SHA*_HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlg {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl MacAlg {
    /// The PKCS#11 mechanism computing this MAC.
    pub fn mechanism(self) -> Mechanism<'static> {
        match self {
            MacAlg::HmacSha256 => Mechanism::Sha256Hmac,
            MacAlg::HmacSha384 => Mechanism::Sha384Hmac,
            MacAlg::HmacSha512 => Mechanism::Sha512Hmac,
        }
    }

    /// Bytes of the tag (the full hash output; no truncation is offered).
    pub fn tag_len(self) -> usize {
        match self {
            MacAlg::HmacSha256 => 32,
            MacAlg::HmacSha384 => 48,
            MacAlg::HmacSha512 => 64,
        }
    }
}

/// HMAC key sizes accepted by [`generate_wrapped_secret`]: the key specs
/// HMAC_256/384/512, a key as long as the hash output.
pub const HMAC_KEY_BITS: [u32; 3] = [256, 384, 512];

/// Template of a generic secret key; every attribute explicit (SoftHSM2
/// defaults to SENSITIVE=false and WRAP=true). `extractable` is true only
/// for the freshly generated key, which must be wrapped once.
fn secret_template(extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Label(VAULT_KEY_LABEL.as_bytes().to_vec()),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

/// A fresh HMAC key generated in the HSM: sensitive, extractable only so it
/// can be wrapped.
pub fn new_secret_template(bits: u32) -> Vec<Attribute> {
    let mut template = secret_template(true);
    template.push(Attribute::ValueLen(u64::from(bits / 8).into()));
    template
}

/// An unwrapped HMAC key: sensitive, non-extractable, sign/verify only.
/// CKA_VALUE_LEN is left out: the length comes from the wrapped bytes.
pub fn unwrapped_secret_template() -> Vec<Attribute> {
    secret_template(false)
}

/// GenerateKey for HMAC_256/384/512: a `bits`-bit generic secret generated
/// in the HSM, returned wrapped under the domain key `wrapping_key_label`.
/// The clear key exists only as a session object for the length of the call.
pub fn generate_wrapped_secret(
    session: &Session,
    wrapping_key_label: &str,
    bits: u32,
) -> Result<Vec<u8>, Error> {
    if !HMAC_KEY_BITS.contains(&bits) {
        return Err(Error::InvalidArgument(
            "HMAC key size must be 256, 384 or 512 bits",
        ));
    }
    let domain = find_domain_key(session, wrapping_key_label)?;
    let key = session
        .generate_key(&Mechanism::GenericSecretKeyGen, &new_secret_template(bits))
        .map_err(Error::Hsm)?;
    let key = SessionObject::new(session, key);
    session
        .wrap_key(&WRAP_MECHANISM, domain, key.handle)
        .map_err(|e| Error::from_pkcs11(e, wrapping_key_label))
}

/// Unwrap an HMAC key onto `session` as a sensitive, non-extractable session
/// object that may only sign and verify; destroyed when the result drops.
pub fn unwrap_secret<'a>(
    session: &'a Session,
    key: WrappedKeyRef<'_>,
) -> Result<SessionObject<'a>, Error> {
    let domain = find_domain_key(session, key.wrapping_key)?;
    let handle = session
        .unwrap_key(
            &WRAP_MECHANISM,
            domain,
            key.wrapped,
            &unwrapped_secret_template(),
        )
        .map_err(|e| Error::from_pkcs11(e, key.wrapping_key))?;
    Ok(SessionObject::new(session, handle))
}

/// The MAC `alg` of `msg` under the wrapped HMAC key, computed in the HSM.
pub fn mac(
    session: &Session,
    wrapped: WrappedKeyRef<'_>,
    alg: MacAlg,
    msg: &[u8],
) -> Result<Vec<u8>, Error> {
    let key = unwrap_secret(session, wrapped)?;
    let tag = session
        .sign(&alg.mechanism(), key.handle, msg)
        .map_err(|e| Error::from_pkcs11(e, wrapped.wrapping_key))?;
    if tag.len() != alg.tag_len() {
        return Err(Error::HsmOutput("HMAC output has the wrong length"));
    }
    Ok(tag)
}

/// Whether `tag` is the MAC `alg` of `msg` under the wrapped key: the tag is
/// recomputed in the HSM and compared in constant time. `Ok(false)` is a
/// wrong tag; `Err` is a failure to compute one.
pub fn verify_mac(
    session: &Session,
    wrapped: WrappedKeyRef<'_>,
    alg: MacAlg,
    msg: &[u8],
    tag: &[u8],
) -> Result<bool, Error> {
    let expected = mac(session, wrapped, alg, msg)?;
    // `ct_eq` on slices of different lengths is false (the length is public).
    Ok(bool::from(expected.as_slice().ct_eq(tag)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn templates() {
        let n = new_secret_template(384);
        for a in [
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Wrap(false),
            Attribute::Encrypt(false),
            Attribute::ValueLen(48u64.into()),
        ] {
            assert!(n.contains(&a), "{a:?}");
        }
        let u = unwrapped_secret_template();
        assert!(u.contains(&Attribute::Extractable(false)));
        assert!(u.contains(&Attribute::Sensitive(true)));
        assert!(!u.iter().any(|a| matches!(a, Attribute::ValueLen(_))));
    }

    #[test]
    fn tag_lengths() {
        assert_eq!(MacAlg::HmacSha256.tag_len(), 32);
        assert_eq!(MacAlg::HmacSha512.tag_len(), 64);
    }
}
