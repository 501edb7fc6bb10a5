//! Self-describing ciphertexts: everything decrypt needs except the key
//! material travels in the blob, so decrypt-data needs no key id.
//!
//! Layout (version 1), all integers big-endian:
//! `0x01 | key_id (36 ASCII) | material version (u32) | IV (12) |
//!  ciphertext length (u32) | ciphertext | tag (16) | zero padding`
//! padded to at least 96 bytes, because decrypt-data accepts only Base64 of
//! 128..=5648 characters (§8.2). The header is bound into the GCM AAD (see
//! [`aad`]), so swapping a key id or version in a blob fails authentication.

/// First byte of every blob.
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 36;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER: usize = 1 + KEY_ID_LEN + 4 + IV_LEN + 4;
/// Smallest encoded blob: 96 bytes = 128 Base64 characters.
pub const MIN_LEN: usize = 96;

/// What a ciphertext protects: a caller's data or a data key. Bound into the
/// AAD so a data-key ciphertext is never accepted as data and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 1,
    DataKey = 2,
    /// A data key pair's private key.
    PrivateKey = 3,
    /// A CSMS secret value.
    Secret = 4,
    /// A CSMS backup blob.
    Backup = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub key_id: String,
    pub version: u32,
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

impl Blob {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((HEADER + self.ciphertext.len() + TAG_LEN).max(MIN_LEN));
        out.push(VERSION);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(
            &u32::try_from(self.ciphertext.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.ciphertext);
        out.extend_from_slice(&self.tag);
        if out.len() < MIN_LEN {
            out.resize(MIN_LEN, 0);
        }
        out
    }

    /// `None` for anything that is not a well-formed version-1 blob.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < MIN_LEN || b.first() != Some(&VERSION) {
            return None;
        }
        let key_id = std::str::from_utf8(b.get(1..1 + KEY_ID_LEN)?).ok()?;
        if !crate::ids::is_key_id(key_id) {
            return None;
        }
        let mut at = 1 + KEY_ID_LEN;
        let version = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let iv = b.get(at..at + IV_LEN)?.to_vec();
        at += IV_LEN;
        let n = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        let ciphertext = b.get(at..at.checked_add(n)?)?.to_vec();
        at += n;
        let tag = b.get(at..at + TAG_LEN)?.to_vec();
        at += TAG_LEN;
        // Only zero padding, and only up to the minimum length.
        let pad = b.get(at..)?;
        if pad.iter().any(|&x| x != 0) || (!pad.is_empty() && b.len() != MIN_LEN) {
            return None;
        }
        Some(Self {
            key_id: key_id.to_owned(),
            version,
            iv,
            ciphertext,
            tag,
        })
    }
}

/// The AAD handed to AES-GCM: a domain label, the project, the blob header
/// fields and the caller's `additional_authenticated_data`, length-framed so
/// no two distinct inputs frame alike.
pub fn aad(project_id: &str, key_id: &str, version: u32, kind: Kind, user_aad: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(64 + project_id.len() + user_aad.len());
    a.extend_from_slice(b"keymesh-kms-v1\0");
    for part in [project_id.as_bytes(), key_id.as_bytes()] {
        a.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        a.extend_from_slice(part);
    }
    a.extend_from_slice(&version.to_be_bytes());
    a.push(kind as u8);
    a.extend_from_slice(
        &u32::try_from(user_aad.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    a.extend_from_slice(user_aad);
    a
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn blob(n: usize) -> Blob {
        Blob {
            key_id: "0d0466b0-e727-4d9c-b35d-f84bb474a37f".into(),
            version: 1,
            iv: vec![7; 12],
            ciphertext: vec![9; n],
            tag: vec![5; 16],
        }
    }

    #[test]
    fn round_trips_and_pads_to_the_base64_minimum() {
        for n in [0, 1, 27, 28, 4096] {
            let b = blob(n);
            let e = b.encode();
            assert!(e.len() >= MIN_LEN);
            assert_eq!(Blob::decode(&e).unwrap(), b);
        }
    }

    #[test]
    fn rejects_damage() {
        let e = blob(1).encode();
        let mut bad = e.clone();
        bad[0] = 2;
        assert!(Blob::decode(&bad).is_none());
        let mut bad = e.clone();
        *bad.last_mut().unwrap() = 1; // non-zero padding
        assert!(Blob::decode(&bad).is_none());
        assert!(Blob::decode(&e[..95]).is_none());
        let mut long = blob(100).encode();
        long.push(0); // padding beyond the minimum
        assert!(Blob::decode(&long).is_none());
    }

    #[test]
    fn aad_frames_fields() {
        assert_ne!(
            aad("p", "k", 1, Kind::Data, b"x"),
            aad("p", "k", 1, Kind::DataKey, b"x")
        );
        assert_ne!(
            aad("pk", "", 1, Kind::Data, b""),
            aad("p", "k", 1, Kind::Data, b"")
        );
    }
}
