//! Secrets: create, show, list, update, delete, batch import, scheduled
//! deletion and restore, backup and restore from a blob.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_store::{SecretRecord, SecretState, SecretVersion, StageRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::values::{self, SecretValue};
use super::{check_name, load, path_name, secret_json, store_err};
use crate::huawei::blob::{Blob, Kind};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::ok;
use crate::huawei::json::{Body, query_params};
use crate::huawei::kms::{Ctx, crypto, keys};

/// Days a secret may wait for deletion (CSMS.0002 outside).
const RECOVERY_DAYS: std::ops::RangeInclusive<i64> = 7..=30;
const DAY_MS: i64 = 86_400_000;
pub const SYSCURRENT: &str = "SYSCURRENT";
pub const SYSPREVIOUS: &str = "SYSPREVIOUS";

fn invalid() -> ApiError {
    ApiError::Invalid(codes::CSMS_0002)
}

const CREATE_FIELDS: &[&str] = &[
    "name",
    "kms_key_id",
    "description",
    "secret_binary",
    "secret_string",
    "secret_type",
    "auto_rotation",
    "rotation_period",
    "rotation_config",
    "event_subscriptions",
    "enterprise_project_id",
    "rotation_func_urn",
];

/// A validated create request (create-secret and batch-import items).
struct NewSecret {
    name: String,
    kms_key_id: Option<String>,
    description: String,
    enterprise_project_id: String,
    value: SecretValue,
}

/// Rotation and events need FunctionGraph and notification services keymesh
/// does not have: only their "off" values are accepted (CSMS.0002).
fn check_unserved_settings(b: &Body) -> Result<(), ApiError> {
    if b.bool("auto_rotation")? == Some(true) {
        return Err(invalid());
    }
    for f in ["rotation_period", "rotation_config", "rotation_func_urn"] {
        if b.str(f)?.is_some_and(|v| !v.is_empty()) {
            return Err(invalid());
        }
    }
    if b.array("event_subscriptions")?
        .is_some_and(|a| !a.is_empty())
    {
        return Err(invalid());
    }
    Ok(())
}

fn description(b: &Body) -> Result<String, ApiError> {
    match b.str("description")? {
        Some(d) if d.len() > 2048 => Err(invalid()),
        d => Ok(d.unwrap_or("").to_owned()),
    }
}

fn parse_new(b: &Body) -> Result<NewSecret, ApiError> {
    let name = b.req("name")?;
    check_name(name)?;
    match b.str("secret_type")? {
        None | Some("COMMON") => {}
        Some(_) => return Err(invalid()),
    }
    check_unserved_settings(b)?;
    let enterprise = b.str("enterprise_project_id")?.unwrap_or("0");
    if enterprise.len() > 64 {
        return Err(invalid());
    }
    Ok(NewSecret {
        name: name.to_owned(),
        kms_key_id: b.str("kms_key_id")?.map(str::to_owned),
        description: description(b)?,
        enterprise_project_id: enterprise.to_owned(),
        value: values::required(b)?,
    })
}

/// Encrypt the first value and insert the secret, `v1` and SYSCURRENT in
/// one transaction: a failure anywhere leaves nothing behind.
async fn insert(c: &Ctx<'_>, n: NewSecret) -> Result<SecretRecord, ApiError> {
    let kms_key_id = values::resolve_key(c, n.kms_key_id.as_deref()).await?;
    let now = c.h.now_ms();
    let secret = SecretRecord {
        secret_id: keys::new_uuid(),
        project_id: c.caller.project_id.clone(),
        name: n.name,
        state: SecretState::Enabled,
        kms_key_id: kms_key_id.clone(),
        description: n.description,
        secret_type: "COMMON".into(),
        auto_rotation: false,
        rotation_period: String::new(),
        rotation_config: String::new(),
        event_subscriptions: Vec::new(),
        enterprise_project_id: n.enterprise_project_id,
        rotation_func_urn: String::new(),
        created_ms: now,
        updated_ms: now,
        scheduled_delete_ms: None,
    };
    let ciphertext = values::seal(c, &secret.secret_id, &kms_key_id, &n.value).await?;
    let version = SecretVersion {
        secret_id: secret.secret_id.clone(),
        version_id: "v1".into(),
        kms_key_id,
        ciphertext,
        created_ms: now,
        expire_ms: None,
        stages: vec![SYSCURRENT.into()],
    };
    let stage = StageRecord {
        secret_id: secret.secret_id.clone(),
        name: SYSCURRENT.into(),
        version_id: "v1".into(),
        updated_ms: now,
    };
    c.h.store
        .create_secret(&secret, &[version], &[stage], &c.h.secret_quotas)
        .await
        .map_err(store_err)?;
    Ok(secret)
}

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, CREATE_FIELDS)?;
    let n = parse_new(&b)?;
    *c.audit_key = Some(n.name.clone());
    let s = insert(c, n).await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn show(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    let s = load(c, name).await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

/// `limit` of the CSMS lists: 1..=200 (default 50), CSMS.0002 otherwise.
pub fn list_limit(v: Option<&str>) -> Result<u64, ApiError> {
    match v {
        None => Ok(50),
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(invalid),
    }
}

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let [limit, marker, event] =
        query_params(c.query, ["limit", "marker", "event_name"]).ok_or_else(invalid)?;
    let limit = list_limit(limit.as_deref())?;
    let page =
        c.h.store
            .list_secrets(
                &c.caller.project_id,
                marker.as_deref(),
                limit,
                event.as_deref(),
            )
            .await
            .map_err(store_err)?;
    let next = if page.more {
        page.items.last().map(|s| s.name.clone())
    } else {
        None
    };
    let secrets: Vec<Value> = page.items.iter().map(secret_json).collect();
    Ok(ok(json!({
        "secrets": secrets,
        "page_info": {
            "next_marker": next,
            "previous_marker": marker,
            "current_count": page.items.len(),
        }
    })))
}

const UPDATE_FIELDS: &[&str] = &[
    "kms_key_id",
    "description",
    "auto_rotation",
    "rotation_period",
    "event_subscriptions",
    "rotation_func_urn",
];

pub async fn update(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let b = Body::parse(c.body, UPDATE_FIELDS)?;
    check_unserved_settings(&b)?;
    let mut s = load(c, &name).await?;
    if s.state != SecretState::Enabled {
        return Err(super::unusable(s.state));
    }
    if let Some(k) = b.str("kms_key_id")? {
        s.kms_key_id = values::resolve_key(c, Some(k)).await?;
    }
    if b.str("description")?.is_some() {
        s.description = description(&b)?;
    }
    s.updated_ms = c.h.now_ms();
    let s = c.h.store.update_secret(&s).await.map_err(store_err)?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn delete(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    c.h.store
        .delete_secret(&c.caller.project_id, &name)
        .await
        .map_err(store_err)?;
    Ok(ok(json!({})))
}

pub async fn batch_import(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["secrets"])?;
    let items = b.array("secrets")?.ok_or(ApiError::Missing("secrets"))?;
    if items.is_empty() || items.len() > 50 {
        return Err(invalid());
    }
    // Each item is its own all-or-nothing create; failures are reported per
    // item with the message of the code they would have had alone.
    let mut errors = Vec::new();
    let mut success = 0u64;
    for item in items {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let created = match Body::from_value(item, CREATE_FIELDS).and_then(|b| parse_new(&b)) {
            Ok(n) => insert(c, n).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match created {
            Ok(()) => success += 1,
            Err(e @ (ApiError::Timeout | ApiError::Throttled)) => return Err(e),
            Err(e) => {
                let w = e.wire(crate::huawei::error::Dialect::Csms);
                errors.push(json!({ "name": name, "error_msg": w.msg, "error_code": w.code }));
            }
        }
    }
    Ok(ok(json!({
        "error_list": errors,
        "total": items.len(),
        "success": success,
        "failed": errors.len(),
    })))
}

pub async fn schedule_deletion(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let b = Body::parse(c.body, &["recovery_window_in_days"])?;
    let days = b
        .int("recovery_window_in_days", codes::CSMS_0002)?
        .unwrap_or(30);
    if !RECOVERY_DAYS.contains(&days) {
        return Err(invalid());
    }
    let now = c.h.now_ms();
    let s =
        c.h.store
            .set_secret_state(
                &c.caller.project_id,
                &name,
                &[SecretState::Enabled, SecretState::Disabled],
                SecretState::PendingDelete,
                Some(now + days * DAY_MS),
                now,
            )
            .await
            .map_err(|e| match e {
                keymesh_store::StoreError::WrongSecretState {
                    current: SecretState::PendingDelete,
                } => ApiError::Invalid(codes::CSMS_0107),
                e => store_err(e),
            })?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn restore(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let s =
        c.h.store
            .set_secret_state(
                &c.caller.project_id,
                &name,
                &[SecretState::PendingDelete],
                SecretState::Enabled,
                None,
                c.h.now_ms(),
            )
            .await
            .map_err(|e| match e {
                keymesh_store::StoreError::WrongSecretState { .. } => {
                    ApiError::Invalid(codes::CSMS_0108)
                }
                e => store_err(e),
            })?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

/// What a backup blob holds: the secret's metadata, every version's
/// ciphertext (still under its CMK) and the stages. The whole document is
/// then sealed under the secret's CMK, so it is confidential, tamper-evident
/// and restorable only in a project that holds that key.
#[derive(Debug, Serialize, Deserialize)]
struct Backup {
    name: String,
    description: String,
    kms_key_id: String,
    secret_id: String,
    enterprise_project_id: String,
    created_ms: i64,
    versions: Vec<BackupVersion>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BackupVersion {
    id: String,
    kms_key_id: String,
    ciphertext: String,
    created_ms: i64,
    expire_ms: Option<i64>,
    stages: Vec<String>,
}

pub async fn backup(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let s = load(c, &name).await?;
    if s.state != SecretState::Enabled {
        return Err(super::unusable(s.state));
    }
    let versions =
        c.h.store
            .all_versions(&c.caller.project_id, &name)
            .await
            .map_err(store_err)?;
    let doc = Backup {
        name: s.name.clone(),
        description: s.description.clone(),
        kms_key_id: s.kms_key_id.clone(),
        secret_id: s.secret_id.clone(),
        enterprise_project_id: s.enterprise_project_id.clone(),
        created_ms: s.created_ms,
        versions: versions
            .into_iter()
            .map(|v| BackupVersion {
                id: v.version_id,
                kms_key_id: v.kms_key_id,
                ciphertext: B64.encode(v.ciphertext),
                created_ms: v.created_ms,
                expire_ms: v.expire_ms,
                stages: v.stages,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&doc).map_err(|_| ApiError::Internal)?;
    let sealed = crypto::seal(c, &s.kms_key_id, Kind::Backup, Bytes::from(json), b"").await?;
    Ok(ok(json!({ "secret_blob": B64.encode(sealed) })))
}

pub async fn upload_blob(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["secret_blob"])?;
    let text = b.req("secret_blob")?;
    let raw = B64.decode(text).map_err(|_| invalid())?;
    let blob = Blob::decode(&raw).ok_or_else(invalid)?;
    let doc = crypto::open(c, &blob, Kind::Backup, b"")
        .await
        .map_err(|e| match e {
            ApiError::Ciphertext => invalid(),
            e => e,
        })?;
    let doc: Backup = serde_json::from_slice(&doc).map_err(|_| invalid())?;
    check_name(&doc.name)?;
    *c.audit_key = Some(doc.name.clone());
    let now = c.h.now_ms();
    // The secret keeps its id (the values' AAD binds it) and its versions.
    let secret = SecretRecord {
        secret_id: doc.secret_id.clone(),
        project_id: c.caller.project_id.clone(),
        name: doc.name.clone(),
        state: SecretState::Enabled,
        kms_key_id: doc.kms_key_id.clone(),
        description: doc.description.clone(),
        secret_type: "COMMON".into(),
        auto_rotation: false,
        rotation_period: String::new(),
        rotation_config: String::new(),
        event_subscriptions: Vec::new(),
        enterprise_project_id: doc.enterprise_project_id.clone(),
        rotation_func_urn: String::new(),
        created_ms: doc.created_ms,
        updated_ms: now,
        scheduled_delete_ms: None,
    };
    let mut versions = Vec::new();
    let mut stages = Vec::new();
    for v in &doc.versions {
        for st in &v.stages {
            stages.push(StageRecord {
                secret_id: secret.secret_id.clone(),
                name: st.clone(),
                version_id: v.id.clone(),
                updated_ms: now,
            });
        }
        versions.push(SecretVersion {
            secret_id: secret.secret_id.clone(),
            version_id: v.id.clone(),
            kms_key_id: v.kms_key_id.clone(),
            ciphertext: B64.decode(&v.ciphertext).map_err(|_| invalid())?,
            created_ms: v.created_ms,
            expire_ms: v.expire_ms,
            stages: v.stages.clone(),
        });
    }
    // The same secret (by id) may still exist under another name.
    if c.h
        .store
        .get_secret_by_id(&c.caller.project_id, &secret.secret_id)
        .await
        .map_err(store_err)?
        .is_some()
    {
        return Err(ApiError::Invalid(codes::CSMS_0101));
    }
    c.h.store
        .create_secret(&secret, &versions, &stages, &c.h.secret_quotas)
        .await
        .map_err(store_err)?;
    Ok(ok(json!({ "secret": secret_json(&secret) })))
}
