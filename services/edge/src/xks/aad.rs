//! The AES-GCM AAD framing of XKS §6: `u16be(len AAD) ‖ AAD ‖ u8(len CM) ‖ CM`.
//!
//! Both lengths are always written, so an AAD can never slide into the
//! ciphertext metadata or back. This is keymesh's only framing scheme; a future
//! change would be recorded in `ciphertextMetadata` (XKS-40).

/// Largest AAD the 2-byte length can carry.
pub const MAX_AAD: usize = u16::MAX as usize;
/// Largest `ciphertextMetadata` (XKS-33).
pub const MAX_METADATA: usize = 20;

/// Callers have checked `aad.len() <= MAX_AAD` and `metadata.len() <= MAX_METADATA`.
pub fn frame(aad: &[u8], metadata: &[u8]) -> Vec<u8> {
    let a = u16::try_from(aad.len()).unwrap_or(u16::MAX);
    let c = u8::try_from(metadata.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(c);
    out.extend_from_slice(metadata);
    out
}

#[cfg(test)]
mod tests {
    use super::frame;

    #[test]
    fn spec_6_2_layout() {
        let f = frame(b"tenant=blue;app=ledger", b"kv=7");
        assert_eq!(f.len(), 29);
        assert_eq!(&f[..2], &[0x00, 0x16]);
        assert_eq!(f[24], 4);
        assert_eq!(&f[25..], b"kv=7");
    }

    #[test]
    fn confusable_cases_differ() {
        assert_eq!(frame(b"", b"kv=7"), [0, 0, 4, b'k', b'v', b'=', b'7']);
        assert_eq!(frame(b"kv=7", b""), [0, 4, b'k', b'v', b'=', b'7', 0]);
        assert_eq!(frame(b"", b""), [0, 0, 0]);
    }
}
