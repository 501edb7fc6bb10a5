//! Random passwords (CSMS generate-password): printable ASCII from the
//! character classes the request leaves in (lower case, upper case, digits,
//! the 32 ASCII punctuation characters, optionally the space), minus
//! `exclude_characters`. Characters come from the operating system's CSPRNG
//! (ring's `SystemRandom`) by rejection sampling, so every character of the
//! pool is equally likely (no modulo bias). The password only ever lives in
//! zeroizing buffers.

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::Error;

/// Password length when the request names none.
pub const DEFAULT_LENGTH: usize = 32;
/// Accepted lengths (the edge refuses others before anything else).
pub const LENGTHS: std::ops::RangeInclusive<i64> = 8..=1024;

pub const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
pub const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const DIGITS: &[u8] = b"0123456789";
pub const PUNCTUATION: &[u8] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const SPACE: &[u8] = b" ";

/// What a generate-password request asks for, its fields already typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordRequest {
    pub length: usize,
    pub exclude_characters: String,
    pub exclude_lowercase: bool,
    pub exclude_uppercase: bool,
    pub exclude_numbers: bool,
    pub exclude_punctuation: bool,
    pub include_space: bool,
    pub require_each_included_type: bool,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    length: usize,
    /// The character classes left in, each minus `exclude_characters`;
    /// classes emptied by the exclusions are dropped.
    classes: Vec<Vec<u8>>,
    /// Whether the last class is the space (never a required type).
    space: bool,
    require_each: bool,
}

impl Policy {
    /// The pool a request leaves; an empty pool, or more required types
    /// than characters, is [`Error::InvalidPasswordPolicy`].
    pub fn new(r: &PasswordRequest) -> Result<Self, Error> {
        let exclude = r.exclude_characters.as_str();
        let space = r.include_space && !exclude.contains(' ');
        let mut classes: Vec<Vec<u8>> = Vec::with_capacity(5);
        for (class, excluded) in [
            (LOWER, r.exclude_lowercase),
            (UPPER, r.exclude_uppercase),
            (DIGITS, r.exclude_numbers),
            (PUNCTUATION, r.exclude_punctuation),
        ] {
            let left: Vec<u8> = class
                .iter()
                .copied()
                .filter(|&c| !exclude.contains(char::from(c)))
                .collect();
            if !excluded && !left.is_empty() {
                classes.push(left);
            }
        }
        if space {
            classes.push(SPACE.to_vec());
        }
        let p = Self {
            length: r.length,
            classes,
            space,
            require_each: r.require_each_included_type,
        };
        if p.classes.is_empty() || (p.require_each && p.required().len() > p.length) {
            return Err(Error::InvalidPasswordPolicy);
        }
        Ok(p)
    }

    /// The classes a `require_each_included_type` password holds one of:
    /// the letter, digit and punctuation classes left in. The space is an
    /// allowed character, not a type (as in the AWS API this one mirrors).
    fn required(&self) -> &[Vec<u8>] {
        let n = self.classes.len() - usize::from(self.space);
        &self.classes[..n]
    }

    /// A fresh password: with `require_each`, one character of each
    /// required class, the rest from the whole pool, then a uniform
    /// Fisher-Yates shuffle so the required characters sit anywhere.
    pub fn generate(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let pool: Vec<u8> = self.classes.concat();
        let mut d = Draw::new();
        let mut pw = Zeroizing::new(Vec::with_capacity(self.length));
        if self.require_each {
            for class in self.required() {
                pw.push(d.pick(class)?);
            }
        }
        while pw.len() < self.length {
            pw.push(d.pick(&pool)?);
        }
        if self.require_each {
            for i in (1..pw.len()).rev() {
                let j = d.below(i + 1)?;
                pw.swap(i, j);
            }
        }
        Ok(pw)
    }
}

/// Uniform random indices from the OS CSPRNG, drawn from a zeroizing
/// buffer (its bytes decide the password).
struct Draw {
    rng: SystemRandom,
    buf: Zeroizing<[u8; 256]>,
    pos: usize,
}

impl Draw {
    fn new() -> Self {
        Self {
            rng: SystemRandom::new(),
            buf: Zeroizing::new([0; 256]),
            pos: 256,
        }
    }

    fn u16(&mut self) -> Result<u16, Error> {
        if self.pos + 2 > self.buf.len() {
            self.rng
                .fill(&mut self.buf[..])
                .map_err(|_| Error::Random)?;
            self.pos = 0;
        }
        let v = u16::from_le_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    /// A uniform index in `0..n` (`n` in 1..=65536): 16-bit draws at or
    /// above the largest multiple of `n` are rejected, so no index is
    /// favoured.
    fn below(&mut self, n: usize) -> Result<usize, Error> {
        const SPAN: usize = 1 << 16;
        if !(1..=SPAN).contains(&n) {
            return Err(Error::Random);
        }
        let zone = SPAN - SPAN % n;
        loop {
            let x = usize::from(self.u16()?);
            if x < zone {
                return Ok(x % n);
            }
        }
    }

    fn pick(&mut self, from: &[u8]) -> Result<u8, Error> {
        Ok(from[self.below(from.len())?])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn request() -> PasswordRequest {
        PasswordRequest {
            length: DEFAULT_LENGTH,
            ..PasswordRequest::default()
        }
    }

    #[test]
    fn space_is_allowed_not_required() {
        // A class emptied by the exclusions is not required either.
        let p = Policy::new(&PasswordRequest {
            require_each_included_type: true,
            include_space: true,
            exclude_characters: "0123456789".into(),
            ..request()
        })
        .unwrap();
        assert_eq!(p.required().len(), 3);
        assert_eq!(p.classes.len(), 4);
    }

    #[test]
    fn empty_pool_and_too_short_are_refused() {
        let none = PasswordRequest {
            exclude_lowercase: true,
            exclude_uppercase: true,
            exclude_numbers: true,
            exclude_punctuation: true,
            ..request()
        };
        assert!(matches!(
            Policy::new(&none),
            Err(Error::InvalidPasswordPolicy)
        ));
        let short = PasswordRequest {
            length: 3,
            require_each_included_type: true,
            ..request()
        };
        assert!(matches!(
            Policy::new(&short),
            Err(Error::InvalidPasswordPolicy)
        ));
        let pw = Policy::new(&request()).unwrap().generate().unwrap();
        assert_eq!(pw.len(), DEFAULT_LENGTH);
    }

    #[test]
    fn indices_are_uniform_enough() {
        // 60000 draws over 3 buckets (65536 is not a multiple of 3, so a
        // modulo would favour bucket 0 by 1 in 21845: too small to see;
        // this checks the rejection path returns in range and spreads).
        let mut d = Draw::new();
        let mut seen = [0u32; 3];
        for _ in 0..60000 {
            seen[d.below(3).unwrap()] += 1;
        }
        for n in seen {
            assert!((18000..22000).contains(&n), "{seen:?}");
        }
        assert!(d.below(0).is_err());
        assert_eq!(d.below(1).unwrap(), 0);
    }
}
