//! Data keys (create, create without plaintext, encrypt, decrypt; hex on the
//! wire) and data key pairs (RSA, EC; the private key sealed under the CMK).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_kms_core::vault::KeyPairSpec;
use ring::digest::{SHA256, digest};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::Ctx;
use super::crypto::{open, seal, symmetric_only, user_aad};
use super::keys::{self, check_sequence};
use crate::huawei::blob::Kind;
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;

/// Data key lengths in bytes (1..=1024, i.e. 8..=8192 bits).
const DATAKEY_BYTES: std::ops::RangeInclusive<i64> = 1..=1024;
const DIGEST_LEN: usize = 32;

/// Bits → bytes for `datakey_length` (KMS.1901 range, KMS.1903 multiple of 8).
fn datakey_bytes(bits: i64) -> Result<u32, ApiError> {
    if !(8..=8192).contains(&bits) {
        return Err(ApiError::Invalid(codes::KMS_1901));
    }
    if bits % 8 != 0 {
        return Err(ApiError::Invalid(codes::KMS_1903));
    }
    u32::try_from(bits / 8).map_err(|_| ApiError::Invalid(codes::KMS_1901))
}

const CREATE_FIELDS: &[&str] = &[
    "key_id",
    "key_spec",
    "datakey_length",
    "additional_authenticated_data",
    "sequence",
    "pin",
    "pin_type",
];

/// create-datakey (`with_plaintext`) and create-datakey-without-plaintext.
pub async fn create(c: &mut Ctx<'_>, with_plaintext: bool) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, CREATE_FIELDS)?;
    check_sequence(&b)?;
    let id = keys::key_id_field(c, &b, "key_id")?;
    // datakey_length wins over key_spec; neither = 256 bits.
    let spec_len = match b.str("key_spec")? {
        None => None,
        Some("AES_256") => Some(32),
        Some("AES_128") => Some(16),
        Some(_) => return Err(ApiError::Invalid(codes::KMS_1902)),
    };
    let len = match b.int("datakey_length", codes::KMS_1901)? {
        Some(bits) => datakey_bytes(bits)?,
        None => spec_len.unwrap_or(32),
    };
    if b.str("pin")?.is_some() || b.str("pin_type")?.is_some() {
        // PINs exist only in Huawei's level-4 assessment deployment.
        return Err(ApiError::Invalid(codes::KMS_0308));
    }
    let aad = user_aad(&b, "additional_authenticated_data")?;
    let (plain, blob) =
        c.h.kms
            .crypto
            .data_key(c.project(), &id, len, &aad, with_plaintext, c.deadline)
            .await?;
    let cipher_text = hex::encode_upper(blob);
    let p = with_plaintext.then(|| Zeroizing::new(hex::encode_upper(&*plain)));
    #[derive(serde::Serialize)]
    struct DataKey<'a> {
        key_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        plain_text: Option<&'a str>,
        cipher_text: &'a str,
    }
    crate::http::zeroizing::json(&DataKey {
        key_id: &id,
        plain_text: p.as_deref().map(String::as_str),
        cipher_text: &cipher_text,
    })
    .map_err(|_| ApiError::Internal)
}

const ENCRYPT_FIELDS: &[&str] = &[
    "key_id",
    "plain_text",
    "datakey_plain_length",
    "additional_authenticated_data",
    "sequence",
    "pin",
    "pin_type",
    "key_spec",
];

/// encrypt-datakey: `plain_text` = hex(DEK ‖ SHA-256(DEK)).
pub async fn encrypt(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, ENCRYPT_FIELDS)?;
    check_sequence(&b)?;
    let id = keys::key_id_field(c, &b, "key_id")?;
    let plain_hex = b.req("plain_text")?;
    let len = b.req_int("datakey_plain_length", codes::KMS_2102)?;
    if !DATAKEY_BYTES.contains(&len) {
        return Err(ApiError::Invalid(codes::KMS_2102));
    }
    if b.str("pin")?.is_some() || b.str("pin_type")?.is_some() || b.str("key_spec")?.is_some() {
        return Err(ApiError::Invalid(codes::KMS_0308));
    }
    let raw =
        Zeroizing::new(hex::decode(plain_hex).map_err(|_| ApiError::Invalid(codes::KMS_2101))?);
    let len = len as usize;
    if raw.len() != len + DIGEST_LEN {
        return Err(ApiError::Invalid(codes::KMS_2104));
    }
    let (dek, dgst) = raw.split_at(len);
    if !bool::from(digest(&SHA256, dek).as_ref().ct_eq(dgst)) {
        return Err(ApiError::Invalid(codes::KMS_2103));
    }
    let aad = user_aad(&b, "additional_authenticated_data")?;
    let blob = seal(c, &id, Kind::DataKey, Bytes::copy_from_slice(dek), &aad).await?;
    Ok(ok(json!({
        "key_id": id,
        "cipher_text": hex::encode_upper(blob),
        "datakey_length": len.to_string(),
    })))
}

const DECRYPT_FIELDS: &[&str] = &[
    "key_id",
    "cipher_text",
    "datakey_cipher_length",
    "additional_authenticated_data",
    "sequence",
];

/// decrypt-datakey: returns the DEK and its SHA-256, hex.
pub async fn decrypt(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, DECRYPT_FIELDS)?;
    check_sequence(&b)?;
    let id = keys::key_id_field(c, &b, "key_id")?;
    let text = b.req("cipher_text")?;
    let len = b.req_int("datakey_cipher_length", codes::KMS_2202)?;
    if !DATAKEY_BYTES.contains(&len) {
        return Err(ApiError::Invalid(codes::KMS_2202));
    }
    let blob = super::crypto::hex_blob(text)?;
    if blob.key_id != id {
        return Err(ApiError::Invalid(codes::KMS_2201));
    }
    if usize::try_from(len).ok() != Some(blob.ciphertext.len()) {
        return Err(ApiError::Invalid(codes::KMS_2204));
    }
    let aad = user_aad(&b, "additional_authenticated_data")?;
    let dek = open(c, &blob, Kind::DataKey, &aad)
        .await
        .map_err(|e| match e {
            // A tag that does not verify: the DEK is not the one sealed here.
            ApiError::Ciphertext => ApiError::Invalid(codes::KMS_2203),
            e => e,
        })?;
    let data_key = Zeroizing::new(hex::encode_upper(&*dek));
    // The digest is the DEK's fingerprint, wiped with it.
    let dgst = Zeroizing::new(hex::encode_upper(digest(&SHA256, &dek)));
    #[derive(serde::Serialize)]
    struct Opened<'a> {
        data_key: &'a str,
        datakey_length: String,
        datakey_dgst: &'a str,
    }
    crate::http::zeroizing::json(&Opened {
        data_key: &data_key,
        datakey_length: dek.len().to_string(),
        datakey_dgst: &dgst,
    })
    .map_err(|_| ApiError::Internal)
}

const PAIR_FIELDS: &[&str] = &[
    "key_id",
    "key_spec",
    "with_plain_text",
    "additional_authenticated_data",
    "sequence",
    "pin",
    "pin_type",
];

/// create-rsa-datakey-pair / create-ec-datakey-pair. Keys are Base64 DER:
/// SubjectPublicKeyInfo and PKCS#8; the sealed private key is a data-key
/// style blob (Base64) bound to the key pair's spec.
pub async fn key_pair(c: &mut Ctx<'_>, ec: bool) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, PAIR_FIELDS)?;
    check_sequence(&b)?;
    let id = keys::key_id_field(c, &b, "key_id")?;
    let spec_name = b.req("key_spec")?;
    let spec = match (ec, spec_name) {
        (false, "RSA_2048") => KeyPairSpec::Rsa2048,
        (false, "RSA_3072") => KeyPairSpec::Rsa3072,
        (false, "RSA_4096") => KeyPairSpec::Rsa4096,
        (true, "ECC_NIST_P256") => KeyPairSpec::EcP256,
        (true, "ECC_NIST_P384") => KeyPairSpec::EcP384,
        (true, "ECC_NIST_P521") => KeyPairSpec::EcP521,
        (true, "ECC_SECG_P256K1") => KeyPairSpec::EcSecp256k1,
        _ => return Err(ApiError::Invalid(codes::KMS_0308)),
    };
    let with_plain = b.bool("with_plain_text")?.unwrap_or(true);
    if b.str("pin")?.is_some() || b.str("pin_type")?.is_some() {
        return Err(ApiError::Invalid(codes::KMS_0308));
    }
    symmetric_only(&b, "encryption_algorithm").ok();
    let mut aad = user_aad(&b, "additional_authenticated_data")?;
    // Bind the pair's spec so the sealed key cannot be passed off as another.
    aad.extend_from_slice(spec_name.as_bytes());
    let pair =
        c.h.kms
            .crypto
            .data_key_pair(c.project(), &id, spec, &aad, with_plain, c.deadline)
            .await?;
    let sealed_b64 = B64.encode(&pair.sealed_blob);
    let p = with_plain.then(|| Zeroizing::new(B64.encode(&*pair.private_key_der)));
    #[derive(serde::Serialize)]
    struct Pair<'a> {
        key_id: &'a str,
        key_spec: &'a str,
        public_key: String,
        private_key_cipher_text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        private_key_plain_text: Option<&'a str>,
    }
    crate::http::zeroizing::json(&Pair {
        key_id: &id,
        key_spec: spec_name,
        public_key: B64.encode(&pair.public_key_der),
        private_key_cipher_text: sealed_b64,
        private_key_plain_text: p.as_deref().map(String::as_str),
    })
    .map_err(|_| ApiError::Internal)
}
