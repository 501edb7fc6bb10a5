//! Secret values in request bodies: `secret_string` or `secret_binary`
//! (Base64), at most 32 KiB, read straight into zeroizing buffers. Sealing
//! them under the secret's CMK is the domain's
//! (`keymesh_kms_core::csms::values`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keymesh_kms_core::csms::SecretValue;
use keymesh_kms_core::csms::values::MAX_VALUE;
use zeroize::Zeroizing;

use super::super::codes;
use super::super::error::ApiError;
use super::super::json::Body;

/// `secret_string` / `secret_binary` of a body: at most one (both →
/// CSMS.0002); text ≤ 32768 characters; binary valid Base64 of ≤ 32768 bytes.
pub fn from_body(b: &Body) -> Result<Option<SecretValue>, ApiError> {
    let invalid = ApiError::Invalid(codes::CSMS_0002);
    match (b.str("secret_string")?, b.str("secret_binary")?) {
        (Some(_), Some(_)) => Err(invalid),
        (Some(s), None) if s.chars().count() <= MAX_VALUE => {
            Ok(Some(SecretValue::Text(Zeroizing::new(s.to_owned()))))
        }
        (None, Some(b64)) => {
            let raw = Zeroizing::new(
                B64.decode(b64)
                    .map_err(|_| ApiError::Invalid(codes::CSMS_0002))?,
            );
            if raw.len() > MAX_VALUE {
                return Err(invalid);
            }
            Ok(Some(SecretValue::Binary(raw)))
        }
        (None, None) => Ok(None),
        _ => Err(invalid),
    }
}

/// The value a create or new version must carry (CSMS.0002 without one).
pub fn required(b: &Body) -> Result<SecretValue, ApiError> {
    from_body(b)?.ok_or(ApiError::Invalid(codes::CSMS_0002))
}
