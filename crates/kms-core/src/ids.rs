//! Identifiers the domain mints and the grammar of the ones callers send:
//! key ids (UUID-shaped), grant ids, all from the OS CSPRNG.

use crate::error::{Error, Result};

/// `N` bytes from the OS CSPRNG. `SystemRandom::new()` is a zero-sized
/// handle onto getrandom(2), so making one per call costs nothing.
pub fn random_bytes<const N: usize>() -> std::result::Result<[u8; N], ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut b)?;
    Ok(b)
}

/// A key id in any of the grammars the API documents (§8.4): 8-4-4-4-12
/// ASCII alphanumerics.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_alphanumeric(),
        })
}

/// A fresh lower-case hex UUID (version 4) from the OS CSPRNG.
pub fn new_uuid() -> String {
    // The OS CSPRNG does not fail on Linux.
    let mut b = random_bytes::<16>().unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// 32 bytes from the OS CSPRNG as 64 lower-case hex characters.
pub fn new_grant_id() -> Result<String> {
    // Unlike a request id, a grant id must be unique: never fall back to zeros.
    let b = random_bytes::<32>().map_err(|_| Error::Random)?;
    Ok(hex::encode(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn uuids_are_key_ids() {
        let a = new_uuid();
        assert!(is_key_id(&a));
        assert_ne!(a, new_uuid());
        assert!(!is_key_id("0d0466b0-e727-4d9c-b35d-f84bb474a37"));
        assert!(!is_key_id("0d0466b0_e727-4d9c-b35d-f84bb474a37f"));
        let g = new_grant_id().unwrap();
        assert_eq!(g.len(), 64);
    }
}
