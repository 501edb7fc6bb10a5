//! AES-256-GCM through PKCS#11 (CKM_AES_GCM, 128-bit tag).
//!
//! The worker, not the HSM, picks the 12-byte IV from the OS CSPRNG: SoftHSM2
//! never generates one, and a random 96-bit IV per message is the NIST
//! SP 800-38D construction. Some HSMs overwrite the IV buffer with their own,
//! so the IV is read back after the call and that is what the caller gets.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::error::Error;

pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
const TAG_BITS: u64 = 128;

/// What Encrypt answers: ciphertext without the tag, the IV actually used,
/// the tag, and SHA-256(prefix||iv||ct||tag) when a prefix was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub integrity_value: Option<Vec<u8>>,
}

/// The inputs of one Encrypt.
#[derive(Debug, Clone, Copy)]
pub struct SealRequest<'a> {
    pub plaintext: &'a [u8],
    pub aad: &'a [u8],
    pub integrity_prefix: Option<&'a [u8]>,
    /// Decrypt the result on the same session and compare before answering.
    pub verify: bool,
}

/// Encrypt with `key`. `key_id` only labels errors.
pub fn seal(
    session: &Session,
    key: ObjectHandle,
    key_id: &str,
    rng: &SystemRandom,
    req: SealRequest<'_>,
) -> Result<Sealed, Error> {
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| Error::Rng)?;
    let mut out = {
        let params = GcmParams::new(&mut iv, req.aad, TAG_BITS.into()).map_err(Error::Hsm)?;
        session
            .encrypt(&Mechanism::AesGcm(params), key, req.plaintext)
            .map_err(|e| Error::from_pkcs11(e, key_id))?
    };
    // `params` (which borrowed `iv` mutably) is gone: `iv` now holds whatever
    // the HSM left in the buffer.
    if out.len() != req.plaintext.len() + TAG_LEN {
        return Err(Error::HsmOutput(
            "GCM output is not plaintext + 16-byte tag",
        ));
    }
    let tag = out.split_off(req.plaintext.len());
    let ciphertext = out;

    // Computed before the verify-decrypt, over exactly what is returned.
    let integrity_value = req.integrity_prefix.map(|prefix| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(prefix);
        ctx.update(&iv);
        ctx.update(&ciphertext);
        ctx.update(&tag);
        ctx.finish().as_ref().to_vec()
    });

    if req.verify {
        let back =
            open(session, key, key_id, &iv, &ciphertext, &tag, req.aad).map_err(|e| match e {
                // A fresh ciphertext that does not authenticate is our fault,
                // not the caller's.
                Error::InvalidCiphertext(_) => Error::VerifyFailed,
                other => other,
            })?;
        if !bool::from(back.as_slice().ct_eq(req.plaintext)) {
            return Err(Error::VerifyFailed);
        }
    }

    Ok(Sealed {
        ciphertext,
        iv: iv.to_vec(),
        tag,
        integrity_value,
    })
}

/// Whether an IV/tag pair has lengths this worker accepts (else INVALID_ARGUMENT).
pub fn check_lengths(iv: &[u8], tag: &[u8]) -> Result<(), Error> {
    if iv.len() != 12 && iv.len() != 16 {
        return Err(Error::InvalidArgument("iv must be 12 or 16 bytes"));
    }
    if tag.len() != TAG_LEN {
        return Err(Error::InvalidArgument("tag must be 16 bytes"));
    }
    Ok(())
}

/// Decrypt and authenticate. The plaintext is zeroized when dropped.
pub fn open(
    session: &Session,
    key: ObjectHandle,
    key_id: &str,
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    check_lengths(iv, tag)?;
    // GCM params take the IV mutably (the HSM may write it); decrypt must not
    // change the caller's bytes, so work on a copy.
    let mut iv = iv.to_vec();
    let mut input = Vec::with_capacity(ciphertext.len() + TAG_LEN);
    input.extend_from_slice(ciphertext);
    input.extend_from_slice(tag);
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(Error::Hsm)?;
    let plaintext = session
        .decrypt(&Mechanism::AesGcm(params), key, &input)
        .map_err(|e| Error::from_pkcs11(e, key_id))?;
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn lengths() {
        assert!(check_lengths(&[0; 12], &[0; 16]).is_ok());
        assert!(check_lengths(&[0; 16], &[0; 16]).is_ok());
        assert!(matches!(
            check_lengths(&[0; 8], &[0; 16]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            check_lengths(&[0; 12], &[0; 12]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
