//! encrypt-data, decrypt-data, re-encrypt. Ciphertexts are self-describing
//! blobs (`keymesh_kms_core::blob`): Base64 for data, hex for data keys (re-encrypt
//! takes either: `datakey_cipher_length` marks a data-key ciphertext).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use bytes::Bytes;
use serde_json::json;
use zeroize::Zeroizing;

use super::Ctx;
use super::keys::{self, check_sequence};
use crate::huawei::blob::{Blob, Kind};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;

/// Largest plaintext of encrypt-data (bytes after UTF-8 encoding).
const MAX_PLAINTEXT: usize = 4096;
/// Largest `additional_authenticated_data` (bytes).
const MAX_AAD: usize = 128;

/// A data-key `cipher_text`: hex of a blob (KMS.2201 otherwise).
pub fn hex_blob(s: &str) -> Result<Blob, ApiError> {
    let raw = hex::decode(s).map_err(|_| ApiError::Invalid(codes::KMS_2201))?;
    Blob::decode(&raw).ok_or(ApiError::Invalid(codes::KMS_2201))
}

/// `additional_authenticated_data` (≤ 128 bytes, else KMS.0208).
pub fn user_aad(b: &Body, name: &'static str) -> Result<Vec<u8>, ApiError> {
    match b.str(name)? {
        None => Ok(Vec::new()),
        Some(a) if a.len() <= MAX_AAD => Ok(a.as_bytes().to_vec()),
        Some(_) => Err(ApiError::Invalid(codes::KMS_0208)),
    }
}

/// Symmetric keys take only `SYMMETRIC_DEFAULT` (KMS.2105).
pub fn symmetric_only(b: &Body, name: &'static str) -> Result<(), ApiError> {
    match b.str(name)? {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some("RSAES_OAEP_SHA_256" | "RSAES_OAEP_SHA_1" | "SM2_ENCRYPT") => {
            Err(ApiError::Invalid(codes::KMS_2105))
        }
        Some(_) => Err(ApiError::Invalid(codes::KMS_0308)),
    }
}

/// Seal `plaintext` under the key's current material as a blob of `kind`.
pub async fn seal(
    c: &Ctx<'_>,
    key_id: &str,
    kind: Kind,
    plaintext: Bytes,
    aad: &[u8],
) -> Result<Vec<u8>, ApiError> {
    Ok(c.h
        .kms
        .crypto
        .encrypt(c.project(), key_id, kind, plaintext, aad, c.deadline)
        .await?)
}

/// Decrypt a blob of `kind` for the caller.
pub async fn open(
    c: &Ctx<'_>,
    b: &Blob,
    kind: Kind,
    user_aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    Ok(c.h
        .kms
        .crypto
        .decrypt(c.project(), b, kind, user_aad, c.deadline)
        .await?)
}

/// A decrypt-data `cipher_text`: `^[0-9a-zA-Z+/=]{128,5648}$`, a valid blob
/// (KMS.2201 otherwise).
fn data_blob(s: &str) -> Result<Blob, ApiError> {
    if !(128..=5648).contains(&s.len()) {
        return Err(ApiError::Ciphertext);
    }
    let raw = B64.decode(s).map_err(|_| ApiError::Ciphertext)?;
    Blob::decode(&raw).ok_or(ApiError::Ciphertext)
}

const ENCRYPT_FIELDS: &[&str] = &[
    "key_id",
    "plain_text",
    "encryption_algorithm",
    "additional_authenticated_data",
    "sequence",
];

pub async fn encrypt_data(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, ENCRYPT_FIELDS)?;
    check_sequence(&b)?;
    let id = keys::key_id_field(c, &b, "key_id")?;
    let plain = b.req("plain_text")?;
    if plain.is_empty() || plain.len() > MAX_PLAINTEXT {
        return Err(ApiError::Invalid(codes::KMS_2101));
    }
    symmetric_only(&b, "encryption_algorithm")?;
    let aad = user_aad(&b, "additional_authenticated_data")?;
    let blob = seal(
        c,
        &id,
        Kind::Data,
        Bytes::copy_from_slice(plain.as_bytes()),
        &aad,
    )
    .await?;
    Ok(ok(json!({ "key_id": id, "cipher_text": B64.encode(blob) })))
}

const DECRYPT_FIELDS: &[&str] = &[
    "cipher_text",
    "encryption_algorithm",
    "key_id",
    "additional_authenticated_data",
    "sequence",
];

pub async fn decrypt_data(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, DECRYPT_FIELDS)?;
    check_sequence(&b)?;
    let blob = data_blob(b.req("cipher_text")?)?;
    *c.audit_key = Some(blob.key_id.clone());
    symmetric_only(&b, "encryption_algorithm")?;
    // An explicit key_id must be valid and name the ciphertext's key.
    if let Some(k) = b.str("key_id")?
        && keys::key_id(k)? != blob.key_id
    {
        return Err(ApiError::Ciphertext);
    }
    let aad = user_aad(&b, "additional_authenticated_data")?;
    let plain = open(c, &blob, Kind::Data, &aad).await?;
    // plain_text is a string: invalid UTF-8 is replaced there, and
    // plain_text_base64 carries the exact bytes.
    let text = Zeroizing::new(String::from_utf8_lossy(&plain).into_owned());
    let b64 = Zeroizing::new(B64.encode(&*plain));
    #[derive(serde::Serialize)]
    struct Decrypted<'a> {
        key_id: &'a str,
        plain_text: &'a str,
        plain_text_base64: &'a str,
    }
    crate::http::zeroizing::json(&Decrypted {
        key_id: &blob.key_id,
        plain_text: &text,
        plain_text_base64: &b64,
    })
    .map_err(|_| ApiError::Internal)
}

const RE_ENCRYPT_FIELDS: &[&str] = &[
    "source_key_id",
    "source_additional_authenticated_data",
    "source_encryption_algorithm",
    "destination_key_id",
    "destination_additional_authenticated_data",
    "destination_encryption_algorithm",
    "datakey_cipher_length",
    "cipher_text",
    "sequence",
];

pub async fn re_encrypt(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, RE_ENCRYPT_FIELDS)?;
    check_sequence(&b)?;
    let text = b.req("cipher_text")?;
    let dest_id = keys::key_id(b.req("destination_key_id")?)?;
    symmetric_only(&b, "source_encryption_algorithm")?;
    symmetric_only(&b, "destination_encryption_algorithm")?;
    // datakey_cipher_length marks a data-key ciphertext (hex); else data (Base64).
    let datakey_len = b.int("datakey_cipher_length", codes::KMS_2202)?;
    let (blob, kind) = match datakey_len {
        Some(n) => {
            let blob = hex_blob(text)?;
            if usize::try_from(n).ok() != Some(blob.ciphertext.len()) {
                return Err(ApiError::Invalid(codes::KMS_2204));
            }
            (blob, Kind::DataKey)
        }
        None => (data_blob(text)?, Kind::Data),
    };
    *c.audit_key = Some(blob.key_id.clone());
    if let Some(k) = b.str("source_key_id")?
        && keys::key_id(k)? != blob.key_id
    {
        return Err(ApiError::Ciphertext);
    }
    let src_aad = user_aad(&b, "source_additional_authenticated_data")?;
    let dst_aad = user_aad(&b, "destination_additional_authenticated_data")?;
    let (dest, encoded) =
        c.h.kms
            .crypto
            .re_encrypt(
                c.project(),
                &blob,
                kind,
                &src_aad,
                &dest_id,
                &dst_aad,
                c.deadline,
            )
            .await?;
    let cipher_text = match kind {
        Kind::Data => B64.encode(encoded),
        _ => hex::encode_upper(encoded),
    };
    Ok(ok(json!({
        "key_id": dest,
        "source_key_id": blob.key_id,
        "source_encryption_algorithm": "SYMMETRIC_DEFAULT",
        "destination_encryption_algorithm": "SYMMETRIC_DEFAULT",
        "cipher_text": cipher_text,
    })))
}
