//! encrypt-data, decrypt-data, re-encrypt. Ciphertexts are self-describing
//! blobs (see `blob.rs`): Base64 for data, hex for data keys (re-encrypt
//! takes either: `datakey_cipher_length` marks a data-key ciphertext).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::Arc;

use bytes::Bytes;
use keymesh_proto::crypto::v1::Sealed;
use keymesh_store::Material;
use serde_json::json;
use zeroize::Zeroizing;

use super::Ctx;
use super::keys::{self, check_sequence};
use crate::huawei::blob::{self, Blob, Kind};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;
use crate::huawei::vault;

/// Largest plaintext of encrypt-data (bytes after UTF-8 encoding).
const MAX_PLAINTEXT: usize = 4096;
/// Largest `additional_authenticated_data` (bytes).
const MAX_AAD: usize = 128;

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
    let (e, m) = keys::usable(c, key_id).await?;
    let k = &e.0;
    let full_aad = blob::aad(&k.project_id, &k.key_id, m.version, kind, aad);
    let s = vault::encrypt(c.h, c.deadline, &m, plaintext, full_aad).await?;
    Ok(to_blob(&k.key_id, m.version, s).encode())
}

pub fn to_blob(key_id: &str, version: u32, s: Sealed) -> Blob {
    Blob {
        key_id: key_id.to_owned(),
        version,
        iv: s.iv.to_vec(),
        ciphertext: s.ciphertext.to_vec(),
        tag: s.tag.to_vec(),
    }
}

fn sealed(b: &Blob) -> Sealed {
    Sealed {
        iv: Bytes::from(b.iv.clone()),
        ciphertext: Bytes::from(b.ciphertext.clone()),
        tag: Bytes::from(b.tag.clone()),
    }
}

/// The material a blob was sealed with, and the sealed parts: the key must
/// be in the caller's project and enabled (older material versions stay
/// readable while the key is).
pub async fn opener(
    c: &Ctx<'_>,
    b: &Blob,
    kind: Kind,
    user_aad: &[u8],
) -> Result<(Arc<Material>, Sealed, Vec<u8>), ApiError> {
    let (e, current) = keys::usable(c, &b.key_id).await?;
    let k = &e.0;
    let m = if current.version == b.version {
        current
    } else {
        c.h.store
            .get_material(&k.project_id, &k.key_id, b.version)
            .await?
            .map(Arc::new)
            .ok_or(ApiError::Ciphertext)?
    };
    let aad = blob::aad(&k.project_id, &k.key_id, b.version, kind, user_aad);
    Ok((m, sealed(b), aad))
}

/// Decrypt a blob of `kind` for the caller.
pub async fn open(
    c: &Ctx<'_>,
    b: &Blob,
    kind: Kind,
    user_aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let (m, s, aad) = opener(c, b, kind, user_aad).await?;
    vault::decrypt(c.h, c.deadline, &m, s, aad).await
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
            let blob = super::datakeys::hex_blob(text)?;
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
    let (src_m, s, src_full) = opener(c, &blob, kind, &src_aad).await?;
    let (de, dm) = keys::usable(c, &dest_id).await?;
    let dk = &de.0;
    let dst_full = blob::aad(&dk.project_id, &dk.key_id, dm.version, kind, &dst_aad);
    let out = vault::re_encrypt(c.h, c.deadline, (&src_m, s, src_full), (&dm, dst_full)).await?;
    let encoded = to_blob(&dk.key_id, dm.version, out).encode();
    let cipher_text = match kind {
        Kind::Data => B64.encode(encoded),
        _ => hex::encode_upper(encoded),
    };
    Ok(ok(json!({
        "key_id": dk.key_id,
        "source_key_id": blob.key_id,
        "source_encryption_algorithm": "SYMMETRIC_DEFAULT",
        "destination_encryption_algorithm": "SYMMETRIC_DEFAULT",
        "cipher_text": cipher_text,
    })))
}
