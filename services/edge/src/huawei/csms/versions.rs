//! Secret versions (create, show with value, list, expiry) and version
//! stages (show, move, delete): request parsing and answers around one
//! `SecretService` call each.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_kms_core::csms::SecretValue;
use keymesh_kms_core::csms::versions::{MAX_STAGES, NewVersion};
use keymesh_kms_core::{SecretVersion, StageRecord};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::secrets::list_limit;
use super::values;
use super::{path_name, secs};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::ok;
use crate::huawei::json::{Body, query_params};
use crate::huawei::kms::Ctx;

fn invalid() -> ApiError {
    ApiError::Invalid(codes::CSMS_0002)
}

/// A stage name: `^[a-zA-Z0-9_-]{1,64}$` (CSMS.0002).
fn check_stage(s: &str) -> Result<(), ApiError> {
    super::check_name(s)
}

#[derive(Serialize)]
struct Metadata<'a> {
    id: &'a str,
    create_time: i64,
    expire_time: Option<i64>,
    kms_key_id: &'a str,
    secret_name: &'a str,
    version_stages: &'a [String],
}

fn metadata<'a>(v: &'a SecretVersion, secret_name: &'a str) -> Metadata<'a> {
    Metadata {
        id: &v.version_id,
        create_time: secs(v.created_ms),
        expire_time: v.expire_ms.map(secs),
        kms_key_id: &v.kms_key_id,
        secret_name,
        version_stages: &v.stages,
    }
}

fn metadata_json(v: &SecretVersion, secret_name: &str) -> Result<Value, ApiError> {
    serde_json::to_value(metadata(v, secret_name)).map_err(|_| ApiError::Internal)
}

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    *c.audit_key = Some(name.clone());
    let b = Body::parse(
        c.body,
        &[
            "secret_binary",
            "secret_string",
            "version_stages",
            "expire_time",
        ],
    )?;
    let value = values::required(&b)?;
    let stages = match b.array("version_stages")? {
        None => None,
        Some(a) => {
            if a.is_empty() || a.len() > MAX_STAGES {
                return Err(invalid());
            }
            let mut out: Vec<String> = Vec::with_capacity(a.len());
            for v in a {
                let s = v
                    .as_str()
                    .ok_or(ApiError::MalformedJson("a stage is not a string"))?;
                check_stage(s)?;
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
            Some(out)
        }
    };
    let n = NewVersion {
        value,
        stages,
        expire_secs: b.int("expire_time", codes::CSMS_0002)?,
    };
    let v =
        c.h.kms
            .secrets
            .add_version(&c.caller.project_id, &name, n, c.deadline)
            .await?;
    Ok(ok(json!({ "version_metadata": metadata_json(&v, &name)? })))
}

#[derive(Serialize)]
struct Shown<'a> {
    version: ShownVersion<'a>,
}

#[derive(Serialize)]
struct ShownVersion<'a> {
    version_metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_string: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_binary: Option<&'a str>,
}

pub async fn show(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?;
    *c.audit_key = Some(name.to_owned());
    let vid = c.route.param.as_deref().ok_or(ApiError::Internal)?;
    let wanted = (vid != "latest").then_some(vid);
    let (_, v, value) =
        c.h.kms
            .secrets
            .read_version(&c.caller.project_id, name, wanted, c.deadline)
            .await?;
    let b64;
    let (text, binary) = match &value {
        SecretValue::Text(t) => (Some(t.as_str()), None),
        SecretValue::Binary(b) => {
            b64 = Zeroizing::new(B64.encode(&**b));
            (None, Some(b64.as_str()))
        }
    };
    // Written straight into a zeroizing buffer that hyper drops (and so
    // wipes) once the response is sent: no other copy of the value exists.
    crate::http::zeroizing::json(&Shown {
        version: ShownVersion {
            version_metadata: metadata(&v, name),
            secret_string: text,
            secret_binary: binary,
        },
    })
    .map_err(|_| ApiError::Internal)
}

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let [limit, marker] = query_params(c.query, ["limit", "marker"]).ok_or_else(invalid)?;
    let limit = list_limit(limit.as_deref())?;
    let page =
        c.h.kms
            .secrets
            .list_versions(&c.caller.project_id, &name, marker.as_deref(), limit)
            .await?;
    let next = if page.more {
        page.items.last().map(|v| v.version_id.clone())
    } else {
        None
    };
    let items = page
        .items
        .iter()
        .map(|v| metadata_json(v, &name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok(json!({
        "version_metadatas": items,
        "page_info": {
            "next_marker": next,
            "previous_marker": marker,
            "current_count": page.items.len(),
        }
    })))
}

pub async fn update(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let vid = c.route.param.clone().ok_or(ApiError::Internal)?;
    let b = Body::parse(c.body, &["expire_time"])?;
    let expire = b.req_int("expire_time", codes::CSMS_0002)?;
    let v =
        c.h.kms
            .secrets
            .update_version_expiry(&c.caller.project_id, &name, &vid, expire)
            .await?;
    Ok(ok(json!({ "version_metadata": metadata_json(&v, &name)? })))
}

fn stage_json(st: &StageRecord, secret_name: &str) -> Value {
    json!({
        "name": st.name,
        "update_time": secs(st.updated_ms),
        "secret_name": secret_name,
        "version_id": st.version_id,
    })
}

fn stage_param(c: &Ctx<'_>) -> Result<String, ApiError> {
    let s = c.route.param.clone().ok_or(ApiError::Internal)?;
    check_stage(&s)?;
    Ok(s)
}

pub async fn show_stage(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let stage = stage_param(c)?;
    let st =
        c.h.kms
            .secrets
            .get_stage(&c.caller.project_id, &name, &stage)
            .await?;
    Ok(ok(json!({ "stage": stage_json(&st, &name) })))
}

pub async fn update_stage(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let stage = stage_param(c)?;
    let b = Body::parse(c.body, &["version_id"])?;
    let vid = b.req("version_id")?.to_owned();
    let st =
        c.h.kms
            .secrets
            .put_stage(&c.caller.project_id, &name, &stage, &vid)
            .await?;
    Ok(ok(json!({ "stage": stage_json(&st, &name) })))
}

pub async fn delete_stage(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let stage = stage_param(c)?;
    c.h.kms
        .secrets
        .delete_stage(&c.caller.project_id, &name, &stage)
        .await?;
    Ok(ok(json!({})))
}
