//! Secret values: text or binary, at most 32 KiB, encrypted under a KMS CMK
//! with the same self-describing blobs as encrypt-data (kind `Secret`, the
//! secret id bound into the AAD so a value cannot be moved to another
//! secret). A one-byte type tag inside the plaintext says text or binary.
//! Every plaintext buffer is zeroizing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_store::{KeyRecord, KeyState};
use zeroize::Zeroizing;

use super::super::blob::{Blob, Kind};
use super::super::codes;
use super::super::error::ApiError;
use super::super::json::Body;
use super::super::kms::{Ctx, crypto, keys};

/// Largest value, in characters (text) or bytes (binary).
pub const MAX_VALUE: usize = 32 * 1024;
/// The project's default CMK for secrets (Huawei's service default key).
pub const DEFAULT_KEY_ALIAS: &str = "csms/default";

const TEXT: u8 = b's';
const BINARY: u8 = b'b';

/// A decrypted (or about to be encrypted) secret value.
#[derive(Debug)]
pub enum SecretValue {
    Text(Zeroizing<String>),
    Binary(Zeroizing<Vec<u8>>),
}

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

/// Encrypt `value` for the secret `secret_id` under `kms_key_id`; returns the
/// stored ciphertext (an encoded blob).
pub async fn seal(
    c: &Ctx<'_>,
    secret_id: &str,
    kms_key_id: &str,
    value: &SecretValue,
) -> Result<Vec<u8>, ApiError> {
    let mut plain = Zeroizing::new(Vec::new());
    match value {
        SecretValue::Text(s) => {
            plain.push(TEXT);
            plain.extend_from_slice(s.as_bytes());
        }
        SecretValue::Binary(b) => {
            plain.push(BINARY);
            plain.extend_from_slice(b);
        }
    }
    // The request buffer is wiped when the gRPC layer drops it.
    let plain = Bytes::from_owner(plain);
    crypto::seal(c, kms_key_id, Kind::Secret, plain, secret_id.as_bytes()).await
}

/// Decrypt a stored value of the secret `secret_id`.
pub async fn open(
    c: &Ctx<'_>,
    secret_id: &str,
    ciphertext: &[u8],
) -> Result<SecretValue, ApiError> {
    let blob = Blob::decode(ciphertext).ok_or(ApiError::Invalid(codes::CSMS_0401))?;
    let mut plain = crypto::open(c, &blob, Kind::Secret, secret_id.as_bytes()).await?;
    let binary = match plain.first() {
        Some(&TEXT) => false,
        Some(&BINARY) => true,
        _ => return Err(ApiError::Internal),
    };
    // Drop the type tag in place rather than copying the value: the buffer
    // (spare capacity included) stays zeroizing throughout.
    plain.remove(0);
    if binary {
        return Ok(SecretValue::Binary(plain));
    }
    // Checked first so no error value carries unwiped bytes away.
    std::str::from_utf8(&plain).map_err(|_| ApiError::Internal)?;
    let text = String::from_utf8(std::mem::take(&mut *plain)).map_err(|_| ApiError::Internal)?;
    Ok(SecretValue::Text(Zeroizing::new(text)))
}

/// The CMK a secret's values go under: the requested key id (CSMS.0002 when
/// malformed; it must exist in the project and be enabled, else CSMS.0401),
/// or the project's `csms/default` key, created on first use.
pub async fn resolve_key(c: &Ctx<'_>, requested: Option<&str>) -> Result<String, ApiError> {
    match requested {
        Some(id) => {
            let id = keys::key_id(id).map_err(|_| ApiError::Invalid(codes::CSMS_0002))?;
            keys::usable(c, &id).await?;
            Ok(id)
        }
        None => default_key(c).await,
    }
}

async fn default_key(c: &Ctx<'_>) -> Result<String, ApiError> {
    let project = &c.caller.project_id;
    if let Some(k) =
        c.h.store
            .find_key_by_alias(project, DEFAULT_KEY_ALIAS)
            .await?
    {
        return Ok(k.key_id);
    }
    let now = c.h.now_ms();
    let key = KeyRecord {
        key_id: keys::new_uuid(),
        project_id: project.clone(),
        alias: DEFAULT_KEY_ALIAS.into(),
        description: "Default master key for CSMS secrets".into(),
        spec: "AES_256".into(),
        usage: "ENCRYPT_DECRYPT".into(),
        origin: "kms".into(),
        state: KeyState::Enabled,
        default_key: true,
        created_ms: now,
        deletion_ms: None,
        material_version: 0,
        enterprise_project_id: "0".into(),
        keystore_id: "0".into(),
    };
    match keys::insert_new_key(c, key).await {
        Ok(k) => Ok(k.key_id),
        // Another request created it first: use theirs.
        Err(ApiError::DuplicateAlias) => {
            c.h.store
                .find_key_by_alias(project, DEFAULT_KEY_ALIAS)
                .await?
                .map(|k| k.key_id)
                .ok_or(ApiError::Internal)
        }
        Err(e) => Err(e),
    }
}
