//! Key lifecycle: create, describe, list, enable, disable, schedule and
//! cancel deletion, `key_alias` and `key_description` updates; plus the
//! helpers every group uses to address a key.

use std::sync::Arc;

use bytes::Bytes;
use keymesh_store::{KeyFilter, KeyRecord, KeyState, Material};
use serde_json::{Value, json};

use super::Ctx;
use crate::huawei::cache::KeyEntry;
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;
use crate::huawei::vault;

/// Days a key may wait for deletion (KMS.1401).
const PENDING_DAYS: std::ops::RangeInclusive<i64> = 7..=1096;
const DAY_MS: i64 = 86_400_000;

/// A key id in any of the grammars the API documents (§8.4): 8-4-4-4-12
/// ASCII alphanumerics.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_alphanumeric(),
        })
}

/// Validate a key id (KMS.0205) and normalise it to lower case.
pub fn key_id(s: &str) -> Result<String, ApiError> {
    if is_key_id(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::InvalidKeyId)
    }
}

/// The `key_id` body field: required, valid.
pub fn key_id_field(c: &mut Ctx<'_>, b: &Body, name: &'static str) -> Result<String, ApiError> {
    let id = key_id(b.req(name)?)?;
    *c.audit_key = Some(id.clone());
    Ok(id)
}

/// `sequence` is informational but bounded (KMS.0206).
pub fn check_sequence(b: &Body) -> Result<(), ApiError> {
    match b.str("sequence")? {
        Some(s) if s.len() > 36 => Err(ApiError::Invalid(codes::KMS_0206)),
        _ => Ok(()),
    }
}

/// The wire error for a key found in `state` where it cannot be used.
pub fn state_error(state: KeyState) -> ApiError {
    match state {
        KeyState::Disabled => ApiError::KeyDisabled,
        KeyState::PendingDeletion => ApiError::KeyPendingDeletion,
        _ => ApiError::KeyNotEnabled,
    }
}

/// The key (and its current material) in the caller's project: cache, then store.
pub async fn load(c: &Ctx<'_>, key_id: &str) -> Result<KeyEntry, ApiError> {
    let project = &c.caller.project_id;
    if let Some(e) = c.h.cache.key(project, key_id) {
        return Ok(e);
    }
    let Some(found) = c.h.store.get_key_with_material(project, key_id).await? else {
        return Err(ApiError::KeyNotFound);
    };
    let (key, material) = found;
    let e = Arc::new((key, material.map(Arc::new)));
    c.h.cache.put_key(project, key_id, Arc::clone(&e));
    Ok(e)
}

/// The key, enabled, with material: what every crypto operation needs.
/// Both halves are shared with the cache, not copied.
pub async fn usable(c: &Ctx<'_>, key_id: &str) -> Result<(KeyEntry, Arc<Material>), ApiError> {
    let e = load(c, key_id).await?;
    if e.0.state != KeyState::Enabled {
        return Err(state_error(e.0.state));
    }
    let m = e.1.clone().ok_or(ApiError::KeyNotEnabled)?;
    Ok((e, m))
}

fn ms(v: i64) -> String {
    v.to_string()
}

/// The key detail object of describe-key, list-keys and resource_instances
/// (§2.4: every field a string, flags as "true"/"false").
pub fn key_json(h: &crate::huawei::Huawei, k: &KeyRecord) -> Value {
    json!({
        "key_id": k.key_id,
        "domain_id": k.project_id,
        "key_alias": k.alias,
        "realm": h.config.region_id,
        "key_spec": k.spec,
        "key_usage": k.usage,
        "key_description": k.description,
        "creation_date": ms(k.created_ms),
        "scheduled_deletion_date": k.deletion_ms.map(ms).unwrap_or_default(),
        "key_state": k.state.code().to_string(),
        "default_key_flag": if k.default_key { "1" } else { "0" },
        "key_type": "1",
        "expiration_time": "",
        "origin": k.origin,
        "key_rotation_enabled": "false",
        "sys_enterprise_project_id": k.enterprise_project_id,
        "keystore_id": k.keystore_id,
    })
}

/// A `key_alias`: `^[a-zA-Z0-9:/_-]{1,255}$` (KMS.1101).
pub fn check_alias(a: &str) -> Result<(), ApiError> {
    let ok = (1..=255).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(codes::KMS_1101))
    }
}

/// Aliases ending in `/default` name service default keys; callers cannot
/// create or rename to them (KMS.1101).
pub fn is_default_alias(a: &str) -> bool {
    a.ends_with("/default")
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() <= 255 && !d.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::Invalid(codes::KMS_1103))
    }
}

/// A fresh lower-case hex UUID (version 4) from the OS CSPRNG.
pub fn new_uuid() -> String {
    // The OS CSPRNG does not fail on Linux.
    let mut b = crate::huawei::random_bytes::<16>().unwrap_or_default();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Generate material in the HSM and insert the key (and its first material
/// version) in one transaction. Shared with default keys.
pub async fn insert_new_key(c: &Ctx<'_>, mut key: KeyRecord) -> Result<KeyRecord, ApiError> {
    let material = if key.origin == "kms" {
        let w = vault::generate_key(c.h, c.deadline).await?;
        key.material_version = 1;
        Some(Material {
            key_id: key.key_id.clone(),
            version: 1,
            wrapping_key: w.wrapping_key,
            wrapped: w.wrapped.to_vec(),
            created_ms: key.created_ms,
        })
    } else {
        None
    };
    c.h.store
        .create_key(&key, material.as_ref(), &c.h.quotas)
        .await?;
    Ok(key)
}

const CREATE_FIELDS: &[&str] = &[
    "key_alias",
    "key_spec",
    "key_usage",
    "key_description",
    "origin",
    "enterprise_project_id",
    "sequence",
    "keystore_id",
    "vm_id",
];

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, CREATE_FIELDS)?;
    check_sequence(&b)?;
    let alias = b.req("key_alias")?;
    check_alias(alias)?;
    if is_default_alias(alias) {
        return Err(ApiError::Invalid(codes::KMS_1101));
    }
    // Only AES_256 is generated by this HSM backend; asymmetric, SM4 and
    // HMAC specs are refused as an unsupported algorithm type.
    match b.str("key_spec")? {
        None | Some("AES_256") => {}
        Some(
            "SM4" | "RSA_2048" | "RSA_3072" | "RSA_4096" | "EC_P256" | "EC_P384" | "SECP256K1"
            | "SM2" | "ED25519" | "HMAC_256" | "HMAC_384" | "HMAC_512" | "HMAC_SM3",
        ) => return Err(ApiError::Invalid(codes::KMS_1110)),
        Some(_) => return Err(ApiError::Invalid(codes::KMS_0308)),
    }
    match b.str("key_usage")? {
        None | Some("ENCRYPT_DECRYPT") => {}
        Some("SIGN_VERIFY") => return Err(ApiError::Invalid(codes::KMS_1115)),
        Some(_) => return Err(ApiError::Invalid(codes::KMS_0308)),
    }
    let description = b.str("key_description")?.unwrap_or("");
    check_description(description)?;
    let origin = match b.str("origin")? {
        None | Some("kms") => "kms",
        Some("external") => "external",
        Some(_) => return Err(ApiError::Invalid(codes::KMS_0308)),
    };
    match b.str("keystore_id")? {
        None | Some("0") => {}
        Some(_) => return Err(ApiError::KeystoreUnsupported),
    }
    let enterprise = b.str("enterprise_project_id")?.unwrap_or("0");
    if enterprise.len() > 36 {
        return Err(ApiError::Invalid(codes::KMS_0308));
    }
    let _ = b.str("vm_id")?;
    let now = c.h.now_ms();
    let key = KeyRecord {
        key_id: new_uuid(),
        project_id: c.caller.project_id.clone(),
        alias: alias.to_owned(),
        description: description.to_owned(),
        spec: "AES_256".into(),
        usage: "ENCRYPT_DECRYPT".into(),
        origin: origin.into(),
        state: if origin == "kms" {
            KeyState::Enabled
        } else {
            KeyState::PendingImport
        },
        default_key: false,
        created_ms: now,
        deletion_ms: None,
        material_version: 0,
        enterprise_project_id: enterprise.to_owned(),
        keystore_id: "0".into(),
    };
    *c.audit_key = Some(key.key_id.clone());
    let key = insert_new_key(c, key).await?;
    Ok(ok(json!({
        "key_info": {
            "key_id": key.key_id,
            "domain_id": key.project_id,
            "region_id": c.h.config.region_id,
        }
    })))
}

const KEY_ID_FIELDS: &[&str] = &["key_id", "sequence"];

/// Parse a body holding only `key_id` (+ `sequence`).
fn key_only(c: &mut Ctx<'_>) -> Result<String, ApiError> {
    let b = Body::parse(c.body, KEY_ID_FIELDS)?;
    check_sequence(&b)?;
    key_id_field(c, &b, "key_id")
}

pub async fn describe(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = key_only(c)?;
    // Always from the store: describe is how callers confirm a change.
    let k =
        c.h.store
            .get_key(&c.caller.project_id, &id)
            .await?
            .ok_or(ApiError::KeyNotFound)?;
    Ok(ok(json!({ "key_info": key_json(c.h, &k) })))
}

const LIST_FIELDS: &[&str] = &[
    "limit",
    "marker",
    "key_state",
    "key_spec",
    "enterprise_project_id",
    "sequence",
];

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, LIST_FIELDS)?;
    check_sequence(&b)?;
    let (offset, limit) = super::page_params(&b, 1000)?;
    let state = match b.int("key_state", codes::KMS_0308)? {
        None => None,
        Some(n) => Some(
            i32::try_from(n)
                .ok()
                .and_then(KeyState::from_code)
                .ok_or(ApiError::Invalid(codes::KMS_0308))?,
        ),
    };
    // §8.6: without key_spec only AES_256 keys are listed; ALL lists all.
    let spec = match b.str("key_spec")? {
        None => Some("AES_256".to_owned()),
        Some("ALL") => None,
        Some(
            s @ ("AES_256" | "SM4" | "RSA_2048" | "RSA_3072" | "RSA_4096" | "EC_P256" | "EC_P384"
            | "SM2"),
        ) => Some(s.to_owned()),
        Some(_) => return Err(ApiError::Invalid(codes::KMS_0308)),
    };
    let enterprise = match b.str("enterprise_project_id")? {
        None | Some("all") => None,
        Some(e) => Some(e.to_owned()),
    };
    let filter = KeyFilter {
        state,
        spec,
        enterprise_project_id: enterprise,
    };
    let page =
        c.h.store
            .list_keys(&c.caller.project_id, &filter, offset, limit)
            .await?;
    let (next, truncated, total) = super::page_fields(&page);
    let ids: Vec<&str> = page.items.iter().map(|k| k.key_id.as_str()).collect();
    let details: Vec<Value> = page.items.iter().map(|k| key_json(c.h, k)).collect();
    Ok(ok(json!({
        "keys": ids,
        "key_details": details,
        "next_marker": next,
        "truncated": truncated,
        "total": total,
    })))
}

/// A compare-and-set state change; `forbid_default` refuses default keys.
async fn transition(
    c: &mut Ctx<'_>,
    id: &str,
    from: &[KeyState],
    to: KeyState,
    deletion_ms: Option<i64>,
    forbid_default: bool,
    wrong: impl Fn(KeyState) -> ApiError,
) -> Result<KeyRecord, ApiError> {
    let project = c.caller.project_id.clone();
    let current =
        c.h.store
            .get_key(&project, id)
            .await?
            .ok_or(ApiError::KeyNotFound)?;
    if forbid_default && current.default_key {
        return Err(ApiError::DefaultKey);
    }
    if !from.contains(&current.state) {
        return Err(wrong(current.state));
    }
    let r =
        c.h.store
            .transition(&project, id, from, to, deletion_ms)
            .await
            .map_err(|e| match e {
                keymesh_store::StoreError::WrongState { current } => wrong(current),
                e => e.into(),
            });
    c.h.cache.forget_key(&project, id);
    r
}

fn key_state_answer(k: &KeyRecord) -> Bytes {
    ok(json!({ "key_info": { "key_id": k.key_id, "key_state": k.state.code().to_string() } }))
}

pub async fn enable(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = key_only(c)?;
    let k = transition(
        c,
        &id,
        &[KeyState::Disabled],
        KeyState::Enabled,
        None,
        false,
        |s| match s {
            KeyState::PendingDeletion => ApiError::KeyPendingDeletion,
            _ => ApiError::KeyNotDisabled,
        },
    )
    .await?;
    Ok(key_state_answer(&k))
}

pub async fn disable(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = key_only(c)?;
    let k = transition(
        c,
        &id,
        &[KeyState::Enabled],
        KeyState::Disabled,
        None,
        true,
        |s| match s {
            KeyState::PendingDeletion => ApiError::KeyPendingDeletion,
            _ => ApiError::KeyNotEnabled,
        },
    )
    .await?;
    Ok(key_state_answer(&k))
}

pub async fn schedule_deletion(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "pending_days", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let days = b.req_int("pending_days", codes::KMS_1401)?;
    if !PENDING_DAYS.contains(&days) {
        return Err(ApiError::Invalid(codes::KMS_1401));
    }
    let at = c.h.now_ms() + days * DAY_MS;
    let k = transition(
        c,
        &id,
        &[
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingImport,
            KeyState::PendingActivation,
        ],
        KeyState::PendingDeletion,
        Some(at),
        true,
        |s| match s {
            KeyState::PendingDeletion => ApiError::AlreadyPendingDeletion,
            s => state_error(s),
        },
    )
    .await?;
    Ok(ok(
        json!({ "key_id": k.key_id, "key_state": k.state.code().to_string() }),
    ))
}

pub async fn cancel_deletion(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = key_only(c)?;
    let project = c.caller.project_id.clone();
    let current =
        c.h.store
            .get_key(&project, &id)
            .await?
            .ok_or(ApiError::KeyNotFound)?;
    // A cancelled deletion leaves the key disabled (Huawei's behaviour), or
    // pending import when it never had material.
    let to = if current.material_version == 0 && current.origin == "external" {
        KeyState::PendingImport
    } else {
        KeyState::Disabled
    };
    let k = transition(
        c,
        &id,
        &[KeyState::PendingDeletion],
        to,
        None,
        false,
        |_| ApiError::NotPendingDeletion,
    )
    .await?;
    Ok(ok(
        json!({ "key_id": k.key_id, "key_state": k.state.code().to_string() }),
    ))
}

/// Refuse renames/re-descriptions of default keys and keys pending deletion.
async fn modifiable(c: &Ctx<'_>, id: &str) -> Result<(), ApiError> {
    let k =
        c.h.store
            .get_key(&c.caller.project_id, id)
            .await?
            .ok_or(ApiError::KeyNotFound)?;
    if k.default_key {
        return Err(ApiError::DefaultKey);
    }
    if k.state == KeyState::PendingDeletion {
        return Err(ApiError::KeyPendingDeletion);
    }
    Ok(())
}

pub async fn update_alias(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "key_alias", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let alias = b.req("key_alias")?;
    check_alias(alias)?;
    if is_default_alias(alias) {
        return Err(ApiError::Invalid(codes::KMS_1101));
    }
    modifiable(c, &id).await?;
    let project = c.caller.project_id.clone();
    let k = c.h.store.update_key_alias(&project, &id, alias).await;
    c.h.cache.forget_key(&project, &id);
    let k = k?;
    Ok(ok(
        json!({ "key_info": { "key_id": k.key_id, "key_alias": k.alias } }),
    ))
}

pub async fn update_description(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "key_description", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let d = b.req("key_description")?;
    check_description(d)?;
    modifiable(c, &id).await?;
    let project = c.caller.project_id.clone();
    let k = c.h.store.update_key_description(&project, &id, d).await;
    c.h.cache.forget_key(&project, &id);
    let k = k?;
    Ok(ok(
        json!({ "key_info": { "key_id": k.key_id, "key_description": k.description } }),
    ))
}
