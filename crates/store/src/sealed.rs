//! The stored form of a secret sealed by the HSM, shared by everyone who
//! seals or unseals one (the edge through a crypto-worker, keymeshctl
//! through PKCS#11), so both produce and accept the same bytes.
//!
//! A sealed secret is AES-256-GCM (12-byte IV, 16-byte tag) under a
//! keymesh-internal seal key ([`crate::SealKey`]: generated in the HSM, kept
//! outside it only wrapped under the domain key). The associated data binds
//! the ciphertext to its row ([`account_aad`]): a sealed SK copied onto
//! another account, another project or another purpose does not open.
//!
//! Envelope, version 1:
//! `0x01 | len(seal key name) u8 | seal key name | iv (12) | tag (16) | ciphertext`.

/// Name of the seal key of account secret keys.
pub const ACCOUNT_SEAL_KEY: &str = "account-secrets-v1";
/// AAD purpose tag of an account SK: a blob sealed for another purpose under
/// the same key never opens as an account secret.
pub const ACCOUNT_SECRET_PURPOSE: &str = "keymesh/account-secret/v1";

const VERSION: u8 = 1;
pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// One sealed secret, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Name of the [`crate::SealKey`] it is sealed under.
    pub seal_key: String,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("sealed secret: unknown envelope version")]
    Version,
    #[error("sealed secret: truncated envelope")]
    Truncated,
    #[error("sealed secret: seal key name is not UTF-8 or too long")]
    KeyName,
}

impl SealedSecret {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let name_len = u8::try_from(self.seal_key.len()).map_err(|_| EnvelopeError::KeyName)?;
        if self.iv.len() != IV_LEN || self.tag.len() != TAG_LEN {
            return Err(EnvelopeError::Truncated);
        }
        let mut out =
            Vec::with_capacity(2 + self.seal_key.len() + IV_LEN + TAG_LEN + self.ciphertext.len());
        out.push(VERSION);
        out.push(name_len);
        out.extend_from_slice(self.seal_key.as_bytes());
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.ciphertext);
        Ok(out)
    }

    /// Parse stored bytes (the GCM tag, not this parser, authenticates them).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (&version, rest) = bytes.split_first().ok_or(EnvelopeError::Truncated)?;
        if version != VERSION {
            return Err(EnvelopeError::Version);
        }
        let (&name_len, rest) = rest.split_first().ok_or(EnvelopeError::Truncated)?;
        let name_len = usize::from(name_len);
        if rest.len() < name_len + IV_LEN + TAG_LEN {
            return Err(EnvelopeError::Truncated);
        }
        let (name, rest) = rest.split_at(name_len);
        let (iv, rest) = rest.split_at(IV_LEN);
        let (tag, ciphertext) = rest.split_at(TAG_LEN);
        let seal_key = std::str::from_utf8(name)
            .map_err(|_| EnvelopeError::KeyName)?
            .to_owned();
        Ok(Self {
            seal_key,
            iv: iv.to_vec(),
            tag: tag.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// The associated data of an account's sealed SK: the purpose tag and the
/// row's identity (project, access key, user), each length-prefixed so no
/// two identities share an encoding. The role is left out on purpose: it
/// may change without re-sealing.
pub fn account_aad(project_id: &str, access_key: &str, user_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        ACCOUNT_SECRET_PURPOSE.len() + project_id.len() + access_key.len() + user_id.len() + 16,
    );
    for part in [ACCOUNT_SECRET_PURPOSE, project_id, access_key, user_id] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sample() -> SealedSecret {
        SealedSecret {
            seal_key: ACCOUNT_SEAL_KEY.to_owned(),
            iv: vec![1; IV_LEN],
            tag: vec![2; TAG_LEN],
            ciphertext: b"ciphertext".to_vec(),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let s = sample();
        let bytes = s.encode().unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(usize::from(bytes[1]), ACCOUNT_SEAL_KEY.len());
        assert_eq!(SealedSecret::decode(&bytes).unwrap(), s);
        let empty = SealedSecret {
            ciphertext: Vec::new(),
            ..sample()
        };
        assert_eq!(
            SealedSecret::decode(&empty.encode().unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn bad_envelopes_are_refused() {
        let bytes = sample().encode().unwrap();
        assert_eq!(SealedSecret::decode(&[]), Err(EnvelopeError::Truncated));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(SealedSecret::decode(&v2), Err(EnvelopeError::Version));
        let cut = 2 + ACCOUNT_SEAL_KEY.len() + IV_LEN + TAG_LEN - 1;
        assert_eq!(
            SealedSecret::decode(&bytes[..cut]),
            Err(EnvelopeError::Truncated)
        );
        let long = SealedSecret {
            seal_key: "k".repeat(256),
            ..sample()
        };
        assert_eq!(long.encode(), Err(EnvelopeError::KeyName));
        let short_iv = SealedSecret {
            iv: vec![0; 16],
            ..sample()
        };
        assert_eq!(short_iv.encode(), Err(EnvelopeError::Truncated));
    }

    #[test]
    fn aad_binds_every_field_unambiguously() {
        let a = account_aad("p", "AK", "u");
        assert_ne!(a, account_aad("q", "AK", "u"));
        assert_ne!(a, account_aad("p", "AK2", "u"));
        assert_ne!(a, account_aad("p", "AK", "v"));
        // Moving a byte between fields changes the encoding.
        assert_ne!(account_aad("pA", "K", "u"), account_aad("p", "AK", "u"));
        assert!(
            a.windows(ACCOUNT_SECRET_PURPOSE.len())
                .any(|w| w == ACCOUNT_SECRET_PURPOSE.as_bytes())
        );
    }
}
