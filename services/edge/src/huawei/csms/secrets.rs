//! Secrets: create, show, list, update, delete, batch import, scheduled
//! deletion and restore, backup and restore from a blob. Each handler
//! parses its request and makes one call into the domain's
//! `SecretService`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_kms_core::csms::secrets::{
    DEFAULT_RECOVERY_DAYS, MAX_DESCRIPTION, NewSecret, SecretUpdate,
};
use serde_json::{Value, json};

use super::values;
use super::{check_name, path_name, secret_json};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::ok;
use crate::huawei::json::{Body, query_params};
use crate::huawei::kms::Ctx;

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
        Some(d) if d.len() > MAX_DESCRIPTION => Err(invalid()),
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

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, CREATE_FIELDS)?;
    let n = parse_new(&b)?;
    *c.audit_key = Some(n.name.clone());
    let s =
        c.h.kms
            .secrets
            .create(&c.caller.project_id, n, c.deadline)
            .await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn show(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    let s = c.h.kms.secrets.get(&c.caller.project_id, name).await?;
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
        c.h.kms
            .secrets
            .list(
                &c.caller.project_id,
                marker.as_deref(),
                limit,
                event.as_deref(),
            )
            .await?;
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
    let name = path_name(c)?;
    let b = Body::parse(c.body, UPDATE_FIELDS)?;
    check_unserved_settings(&b)?;
    // The description's length is the domain's rule, checked after the
    // secret and its key (the order the codes have always come in).
    let (kms_key_id, description) = (b.str("kms_key_id"), b.str("description"));
    if kms_key_id.is_err() || description.is_err() {
        // A missing or unusable secret has always been reported before a
        // mistyped field: only this error path pays the extra read.
        c.h.kms.secrets.enabled(&c.caller.project_id, name).await?;
    }
    let u = SecretUpdate {
        kms_key_id: kms_key_id?.map(str::to_owned),
        description: description?.map(str::to_owned),
    };
    let s =
        c.h.kms
            .secrets
            .update(&c.caller.project_id, name, u, c.deadline)
            .await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn delete(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    c.h.kms.secrets.delete(&c.caller.project_id, name).await?;
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
            Ok(n) => {
                c.h.kms
                    .secrets
                    .create(&c.caller.project_id, n, c.deadline)
                    .await
                    .map(|_| ())
                    .map_err(ApiError::from)
            }
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
    let name = path_name(c)?;
    let b = Body::parse(c.body, &["recovery_window_in_days"])?;
    let days = b
        .int("recovery_window_in_days", codes::CSMS_0002)?
        .unwrap_or(DEFAULT_RECOVERY_DAYS);
    let s =
        c.h.kms
            .secrets
            .schedule_deletion(&c.caller.project_id, name, days)
            .await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn restore(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    let s = c.h.kms.secrets.restore(&c.caller.project_id, name).await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}

pub async fn backup(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    let sealed =
        c.h.kms
            .secrets
            .backup(&c.caller.project_id, name, c.deadline)
            .await?;
    Ok(ok(json!({ "secret_blob": B64.encode(sealed) })))
}

pub async fn upload_blob(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["secret_blob"])?;
    let text = b.req("secret_blob")?;
    let raw = B64.decode(text).map_err(|_| invalid())?;
    let secrets = &c.h.kms.secrets;
    let doc = secrets
        .open_backup(&c.caller.project_id, &raw, c.deadline)
        .await?;
    *c.audit_key = Some(doc.name.clone());
    let s = secrets.restore_backup(&c.caller.project_id, doc).await?;
    Ok(ok(json!({ "secret": secret_json(&s) })))
}
