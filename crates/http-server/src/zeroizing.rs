//! Response bodies that carry plaintext or key material (XKS Decrypt, KMS
//! decrypt-data, data keys, key pairs, gen-random, CSMS secret values and
//! passwords) are serialised once into a zeroizing buffer of exactly the
//! right size: no reallocation leaves an unwiped copy behind, and hyper drops
//! (so wipes) the buffer once the response is written.

use bytes::Bytes;
use serde::Serialize;
use zeroize::Zeroizing;

/// Counts what a serialiser writes, keeping none of it.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as JSON in a zeroizing buffer. Serialised twice, first only to
/// measure, so the buffer is allocated once at its final size.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)?;
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, value)?;
    Ok(Bytes::from_owner(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[derive(Serialize)]
    struct Answer<'a> {
        plaintext: &'a str,
        n: u32,
    }

    #[test]
    fn same_bytes_as_serde_json() {
        let v = Answer {
            plaintext: "a\"b\\c\u{1}é",
            n: 7,
        };
        assert_eq!(&json(&v).unwrap()[..], serde_json::to_vec(&v).unwrap());
    }
}
