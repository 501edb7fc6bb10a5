//! gen-random, quotas and instances, API version discovery.

use bytes::Bytes;
use serde_json::json;
use zeroize::Zeroizing;

use super::Ctx;
use super::keys::check_sequence;
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;
use crate::huawei::vault;

/// gen-random: `random_data_length` bits, 8..=8192 and a multiple of 8
/// (§8.1: the documented range; KMS.1801 outside it, KMS.1802 not a multiple).
pub async fn gen_random(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["random_data_length", "sequence"])?;
    check_sequence(&b)?;
    let bits = b.req_int("random_data_length", codes::KMS_1801)?;
    if !(8..=8192).contains(&bits) {
        return Err(ApiError::Invalid(codes::KMS_1801));
    }
    if bits % 8 != 0 {
        return Err(ApiError::Invalid(codes::KMS_1802));
    }
    let len = u32::try_from(bits / 8).map_err(|_| ApiError::Invalid(codes::KMS_1801))?;
    let r = vault::random(c.h, c.deadline, len).await?;
    let hex = Zeroizing::new(hex::encode_upper(&*r));
    #[derive(serde::Serialize)]
    struct Random<'a> {
        random_data: &'a str,
    }
    crate::http::zeroizing::json(&Random { random_data: &hex }).map_err(|_| ApiError::Internal)
}

pub async fn user_quotas(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let u = c.h.store.usage(&c.caller.project_id).await?;
    let q = &c.h.quotas;
    Ok(ok(json!({
        "quotas": { "resources": [
            { "type": "CMK", "used": u.keys, "quota": q.keys_per_project },
            { "type": "grant_per_CMK", "used": u.grants, "quota": q.grants_per_key },
        ]}
    })))
}

pub async fn user_instances(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let u = c.h.store.usage(&c.caller.project_id).await?;
    Ok(ok(json!({ "instance_num": u.keys })))
}

fn version_json(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "links": [{ "href": format!("/{id}/"), "rel": "self" }],
        "version": "",
        "status": "CURRENT",
        "updated": "2024-01-01T00:00:00Z",
        "min_version": "",
    })
}

/// Version discovery answers the one version keymesh serves.
pub fn versions(_c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    Ok(ok(json!({ "versions": [version_json("v1.0")] })))
}

pub fn version(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    match c.route.param.as_deref() {
        Some("v1.0") => Ok(ok(json!({ "version": version_json("v1.0") }))),
        _ => Err(ApiError::UnknownPath),
    }
}
