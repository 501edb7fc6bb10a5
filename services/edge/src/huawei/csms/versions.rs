//! Secret versions (create, show with value, list, expiry) and version
//! stages (show, move, delete).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_store::{SecretState, SecretVersion, StageRecord, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::secrets::{SYSCURRENT, SYSPREVIOUS, list_limit};
use super::values::{self, SecretValue};
use super::{load, path_name, secs, store_err, unusable};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::ok;
use crate::huawei::json::{Body, query_params};
use crate::huawei::kms::Ctx;

/// Stages one request may attach.
const MAX_STAGES: usize = 12;

fn invalid() -> ApiError {
    ApiError::Invalid(codes::CSMS_0002)
}

/// A stage name: `^[a-zA-Z0-9_-]{1,64}$` (CSMS.0002).
fn check_stage(s: &str) -> Result<(), ApiError> {
    super::check_name(s)
}

/// The latest accepted `expire_time`, 9999-12-31T23:59:59Z in epoch seconds.
const MAX_EXPIRE_SECS: i64 = 253_402_300_799;

/// An `expire_time` (epoch seconds) as stored milliseconds. Accepted from
/// the current second (a version may be made to expire at once) to the end
/// of year 9999; anything else, the far values that would overflow the
/// milliseconds included, is CSMS.0002.
fn expire_ms(now_ms: i64, expire_secs: i64) -> Result<i64, ApiError> {
    if !(secs(now_ms)..=MAX_EXPIRE_SECS).contains(&expire_secs) {
        return Err(invalid());
    }
    Ok(expire_secs * 1000)
}

/// A missing version or stage in a secret that exists: CSMS.0005.
fn missing_is_resource(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::ResourceNotFound,
        e => store_err(e),
    }
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

/// The secret must be ENABLED to read or add values (CSMS.0103 pending
/// deletion, CSMS.0109 otherwise).
async fn enabled(c: &Ctx<'_>, name: &str) -> Result<keymesh_store::SecretRecord, ApiError> {
    let s = load(c, name).await?;
    if s.state != SecretState::Enabled {
        return Err(unusable(s.state));
    }
    Ok(s)
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
        None => vec![SYSCURRENT.to_owned()],
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
            out
        }
    };
    let now = c.h.now_ms();
    let expire_ms = b
        .int("expire_time", codes::CSMS_0002)?
        .map(|e| expire_ms(now, e))
        .transpose()?;
    let s = enabled(c, &name).await?;
    // Encrypt first (the HSM round trip), then one transaction that adds the
    // version and moves the stages: a failure leaves no version behind.
    let ciphertext = values::seal(c, &s.secret_id, &s.kms_key_id, &value).await?;
    let v = SecretVersion {
        secret_id: s.secret_id.clone(),
        version_id: String::new(),
        kms_key_id: s.kms_key_id.clone(),
        ciphertext,
        created_ms: now,
        expire_ms,
        stages: Vec::new(),
    };
    let v =
        c.h.store
            .add_version(
                &c.caller.project_id,
                &name,
                &v,
                &stages,
                &c.h.secret_quotas,
                now,
            )
            .await
            .map_err(store_err)?;
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
    // The hot read: secret and version in one store statement. The checks
    // keep `enabled`'s order: a missing secret, then its state, then the
    // version.
    let (s, v) =
        c.h.store
            .read_secret_version(&c.caller.project_id, name, wanted)
            .await
            .map_err(store_err)?
            .ok_or(ApiError::SecretNotFound)?;
    if s.state != SecretState::Enabled {
        return Err(unusable(s.state));
    }
    let v = v.ok_or(ApiError::ResourceNotFound)?;
    let value = values::open(c, &s.secret_id, &v.ciphertext).await?;
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
    load(c, &name).await?;
    let page =
        c.h.store
            .list_versions(&c.caller.project_id, &name, marker.as_deref(), limit)
            .await
            .map_err(store_err)?;
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
    let expire = expire_ms(c.h.now_ms(), b.req_int("expire_time", codes::CSMS_0002)?)?;
    enabled(c, &name).await?;
    let v =
        c.h.store
            .update_version_expiry(&c.caller.project_id, &name, &vid, Some(expire))
            .await
            .map_err(missing_is_resource)?;
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
    load(c, &name).await?;
    let st =
        c.h.store
            .get_stage(&c.caller.project_id, &name, &stage)
            .await
            .map_err(store_err)?
            .ok_or(ApiError::ResourceNotFound)?;
    Ok(ok(json!({ "stage": stage_json(&st, &name) })))
}

pub async fn update_stage(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let stage = stage_param(c)?;
    let b = Body::parse(c.body, &["version_id"])?;
    let vid = b.req("version_id")?.to_owned();
    enabled(c, &name).await?;
    let now = c.h.now_ms();
    // Moving SYSCURRENT by hand keeps the rotation contract: the store hands
    // SYSPREVIOUS to the version that held it, in the same transaction, so
    // a move the stage quota refuses (CSMS.0203) moves nothing.
    let st =
        c.h.store
            .put_stage(
                &c.caller.project_id,
                &name,
                &stage,
                &vid,
                now,
                &c.h.secret_quotas,
            )
            .await
            .map_err(missing_is_resource)?;
    Ok(ok(json!({ "stage": stage_json(&st, &name) })))
}

pub async fn delete_stage(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let name = path_name(c)?.to_owned();
    let stage = stage_param(c)?;
    if stage == SYSCURRENT || stage == SYSPREVIOUS {
        return Err(ApiError::Invalid(codes::CSMS_0105));
    }
    load(c, &name).await?;
    c.h.store
        .delete_stage(&c.caller.project_id, &name, &stage)
        .await
        .map_err(missing_is_resource)?;
    Ok(ok(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_time_range() {
        let now_ms = 1_700_000_000_500;
        assert_eq!(
            expire_ms(now_ms, 1_700_000_000).ok(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            expire_ms(now_ms, MAX_EXPIRE_SECS).ok(),
            Some(MAX_EXPIRE_SECS * 1000)
        );
        for bad in [
            -1,
            0,
            1_699_999_999,
            MAX_EXPIRE_SECS + 1,
            i64::MAX / 1000 + 1,
            i64::MAX,
            i64::MIN,
        ] {
            assert!(expire_ms(now_ms, bad).is_err(), "{bad}");
        }
    }
}
