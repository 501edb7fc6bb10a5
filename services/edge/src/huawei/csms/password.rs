//! generate-password: a random password from the printable ASCII classes
//! the request leaves in (lower case, upper case, digits, the 32 ASCII
//! punctuation characters, optionally the space), minus
//! `exclude_characters`. Characters come from the operating system's CSPRNG
//! (ring's `SystemRandom`) by rejection sampling, so every character of the
//! pool is equally likely (no modulo bias). The password only ever lives in
//! zeroizing buffers, the answer included: hyper drops the response body
//! after writing it, which wipes it.

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::kms::Ctx;

/// Password length when the request names none.
const DEFAULT_LENGTH: usize = 32;
/// Accepted lengths (CSMS.0002 outside).
const LENGTHS: std::ops::RangeInclusive<i64> = 8..=1024;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const PUNCTUATION: &[u8] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const SPACE: &[u8] = b" ";

const INVALID: ApiError = ApiError::Invalid(codes::CSMS_0002);

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    length: usize,
    /// The character classes left in, each minus `exclude_characters`;
    /// classes emptied by the exclusions are dropped.
    classes: Vec<Vec<u8>>,
    /// Whether the last class is the space (never a required type).
    space: bool,
    require_each: bool,
}

impl Options {
    fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let b = Body::parse(
            raw,
            &[
                "password_policy_name",
                "length",
                "exclude_characters",
                "exclude_lowercase",
                "exclude_uppercase",
                "exclude_numbers",
                "exclude_punctuation",
                "include_space",
                "require_each_included_type",
            ],
        )?;
        // Accepted for compatibility; keymesh has no password policies.
        b.str("password_policy_name")?;
        let length = match b.int("length", codes::CSMS_0002)? {
            None => DEFAULT_LENGTH,
            Some(n) if LENGTHS.contains(&n) => usize::try_from(n).map_err(|_| INVALID)?,
            Some(_) => return Err(INVALID),
        };
        let exclude = b.str("exclude_characters")?.unwrap_or("");
        let flag = |name| Ok::<_, ApiError>(b.bool(name)?.unwrap_or(false));
        let space = flag("include_space")? && !exclude.contains(' ');
        let mut classes: Vec<Vec<u8>> = Vec::with_capacity(5);
        for (class, excluded) in [
            (LOWER, flag("exclude_lowercase")?),
            (UPPER, flag("exclude_uppercase")?),
            (DIGITS, flag("exclude_numbers")?),
            (PUNCTUATION, flag("exclude_punctuation")?),
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
        let o = Self {
            length,
            classes,
            space,
            require_each: flag("require_each_included_type")?,
        };
        if o.classes.is_empty() || (o.require_each && o.required().len() > o.length) {
            return Err(INVALID);
        }
        Ok(o)
    }

    /// The classes a `require_each_included_type` password holds one of:
    /// the letter, digit and punctuation classes left in. The space is an
    /// allowed character, not a type (as in the AWS API this one mirrors).
    fn required(&self) -> &[Vec<u8>] {
        let n = self.classes.len() - usize::from(self.space);
        &self.classes[..n]
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

    fn u16(&mut self) -> Result<u16, ApiError> {
        if self.pos + 2 > self.buf.len() {
            self.rng
                .fill(&mut self.buf[..])
                .map_err(|_| ApiError::Internal)?;
            self.pos = 0;
        }
        let v = u16::from_le_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    /// A uniform index in `0..n` (`n` in 1..=65536): 16-bit draws at or
    /// above the largest multiple of `n` are rejected, so no index is
    /// favoured.
    fn below(&mut self, n: usize) -> Result<usize, ApiError> {
        const SPAN: usize = 1 << 16;
        if !(1..=SPAN).contains(&n) {
            return Err(ApiError::Internal);
        }
        let zone = SPAN - SPAN % n;
        loop {
            let x = usize::from(self.u16()?);
            if x < zone {
                return Ok(x % n);
            }
        }
    }

    fn pick(&mut self, from: &[u8]) -> Result<u8, ApiError> {
        Ok(from[self.below(from.len())?])
    }
}

/// The password for `o`: with `require_each`, one character of each
/// required class, the rest from the whole pool, then a uniform
/// Fisher-Yates shuffle so the required characters sit anywhere.
fn password(o: &Options) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let pool: Vec<u8> = o.classes.concat();
    let mut d = Draw::new();
    let mut pw = Zeroizing::new(Vec::with_capacity(o.length));
    if o.require_each {
        for class in o.required() {
            pw.push(d.pick(class)?);
        }
    }
    while pw.len() < o.length {
        pw.push(d.pick(&pool)?);
    }
    if o.require_each {
        for i in (1..pw.len()).rev() {
            let j = d.below(i + 1)?;
            pw.swap(i, j);
        }
    }
    Ok(pw)
}

#[derive(Serialize)]
struct Answer<'a> {
    password: &'a str,
}

/// The answer to a request body: `{"password": "..."}` in a zeroizing
/// buffer of its exact size (`crate::http::zeroizing`).
fn answer(raw: &[u8]) -> Result<Bytes, ApiError> {
    let o = Options::parse(raw)?;
    let pw = password(&o)?;
    let text = std::str::from_utf8(&pw).map_err(|_| ApiError::Internal)?;
    crate::http::zeroizing::json(&Answer { password: text }).map_err(|_| ApiError::Internal)
}

pub fn generate(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    answer(c.body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::huawei::error::Dialect;

    fn generated(body: &str) -> String {
        let out = answer(body.as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["password"].as_str().unwrap().to_owned()
    }

    fn code(body: &str) -> &'static str {
        answer(body.as_bytes())
            .unwrap_err()
            .wire(Dialect::Csms)
            .code
    }

    #[test]
    fn lengths() {
        assert_eq!(generated("").chars().count(), 32);
        assert_eq!(generated("{}").chars().count(), 32);
        assert_eq!(generated(r#"{"length": 8}"#).len(), 8);
        assert_eq!(generated(r#"{"length": "64"}"#).len(), 64);
        assert_eq!(generated(r#"{"length": 1024}"#).len(), 1024);
        for bad in [
            r#"{"length": 7}"#,
            r#"{"length": 1025}"#,
            r#"{"length": 0}"#,
            r#"{"length": -8}"#,
            r#"{"length": 8.5}"#,
            r#"{"length": "x"}"#,
        ] {
            assert_eq!(code(bad), "CSMS.0002", "{bad}");
        }
        assert_eq!(code(r#"{"length": true}"#), "CSMS.0004");
        assert_eq!(code(r#"{"exclude_numbers": "true"}"#), "CSMS.0004");
        assert_eq!(code(r#"{"size": 8}"#), "CSMS.0004");
        assert!(answer(br#"{"password_policy_name": "default"}"#).is_ok());
    }

    #[test]
    fn default_pool_is_printable_ascii_without_space() {
        for _ in 0..50 {
            let p = generated(r#"{"length": 1024}"#);
            assert!(p.bytes().all(|b| b.is_ascii_graphic()), "{p}");
        }
        // 1024 draws from 94 characters: each class shows up.
        let p = generated(r#"{"length": 1024}"#);
        for class in [LOWER, UPPER, DIGITS, PUNCTUATION] {
            assert!(p.bytes().any(|b| class.contains(&b)));
        }
    }

    #[test]
    fn class_flags() {
        let p = generated(
            r#"{"length": 200, "exclude_lowercase": true, "exclude_uppercase": true, "exclude_punctuation": true}"#,
        );
        assert!(p.bytes().all(|b| b.is_ascii_digit()), "{p}");
        let p =
            generated(r#"{"length": 200, "exclude_numbers": false, "exclude_punctuation": true}"#);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
        let p = generated(
            r#"{"length": 300, "include_space": true, "exclude_lowercase": true, "exclude_uppercase": true, "exclude_numbers": true, "exclude_punctuation": true}"#,
        );
        assert_eq!(p, " ".repeat(300));
        let p = generated(r#"{"length": 1024, "include_space": true}"#);
        assert!(p.contains(' '));
    }

    #[test]
    fn excluded_characters_never_appear() {
        let body =
            r#"{"length": 64, "exclude_characters": "abcXYZ019!\"\\ `~", "include_space": true}"#;
        for _ in 0..1000 {
            let p = generated(body);
            assert_eq!(p.len(), 64);
            assert!(!p.bytes().any(|b| b"abcXYZ019!\"\\ `~".contains(&b)), "{p}");
        }
    }

    #[test]
    fn each_included_type() {
        let body = r#"{"length": 8, "require_each_included_type": true, "exclude_characters": "bcdefghijklmnopqrstuvwxyzBCDEFGHIJKLMNOPQRSTUVWXYZ123456789"}"#;
        // One letter of each case and one digit left: each must appear in
        // every 8-character password although each is 1 of 35 characters.
        for _ in 0..1000 {
            let p = generated(body);
            assert!(p.contains('a') && p.contains('A') && p.contains('0'), "{p}");
            assert!(p.bytes().any(|b| PUNCTUATION.contains(&b)), "{p}");
        }
        let body = r#"{"length": 8, "require_each_included_type": true, "exclude_punctuation": true, "exclude_uppercase": true}"#;
        for _ in 0..200 {
            let p = generated(body);
            assert!(p.bytes().any(|b| b.is_ascii_lowercase()), "{p}");
            assert!(p.bytes().any(|b| b.is_ascii_digit()), "{p}");
            assert!(
                p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
        // The space is allowed, not required; a class emptied by the
        // exclusions is not required either.
        let o = Options::parse(
            br#"{"require_each_included_type": true, "include_space": true, "exclude_characters": "0123456789"}"#,
        )
        .unwrap();
        assert_eq!(o.required().len(), 3);
        assert_eq!(o.classes.len(), 4);
    }

    #[test]
    fn empty_pool_is_refused() {
        assert_eq!(
            code(
                r#"{"exclude_lowercase": true, "exclude_uppercase": true, "exclude_numbers": true, "exclude_punctuation": true}"#
            ),
            "CSMS.0002"
        );
        assert_eq!(
            code(
                r#"{"exclude_lowercase": true, "exclude_uppercase": true, "exclude_punctuation": true, "exclude_characters": "0123456789"}"#
            ),
            "CSMS.0002"
        );
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
