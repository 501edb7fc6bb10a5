//! generate-password: the request's fields, typed, for the domain's
//! password generator (`keymesh_kms_core::csms::password`: printable ASCII
//! from the classes left in, uniform draws from the OS CSPRNG). The
//! password only ever lives in zeroizing buffers, the answer included:
//! hyper drops the response body after writing it, which wipes it.

use bytes::Bytes;
use keymesh_kms_core::csms::password::{DEFAULT_LENGTH, LENGTHS, PasswordRequest, Policy};
use serde::Serialize;

use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::kms::Ctx;

const INVALID: ApiError = ApiError::Invalid(codes::CSMS_0002);

/// The typed request; `length` is checked first (CSMS.0002), before the
/// flags' types.
fn parse(raw: &[u8]) -> Result<PasswordRequest, ApiError> {
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
    let exclude_characters = b.str("exclude_characters")?.unwrap_or("").to_owned();
    let flag = |name| Ok::<_, ApiError>(b.bool(name)?.unwrap_or(false));
    Ok(PasswordRequest {
        length,
        exclude_characters,
        include_space: flag("include_space")?,
        exclude_lowercase: flag("exclude_lowercase")?,
        exclude_uppercase: flag("exclude_uppercase")?,
        exclude_numbers: flag("exclude_numbers")?,
        exclude_punctuation: flag("exclude_punctuation")?,
        require_each_included_type: flag("require_each_included_type")?,
    })
}

#[derive(Serialize)]
struct Answer<'a> {
    password: &'a str,
}

/// The answer to a request body: `{"password": "..."}` in a zeroizing
/// buffer of its exact size (`crate::http::zeroizing`).
fn answer(raw: &[u8]) -> Result<Bytes, ApiError> {
    let pw = Policy::new(&parse(raw)?)?.generate()?;
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
    use keymesh_kms_core::csms::password::{DIGITS, LOWER, PUNCTUATION, UPPER};

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
}
