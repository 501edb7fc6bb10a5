//! Grants: create, list (per key and retirable by the caller), revoke (any
//! full-access caller of the project, i.e. the key owner) and retire (only
//! the grantee, the retiring principal or the issuer). Grants are records
//! only: keymesh callers are bound to one project, so a grant documents
//! intent for Huawei-compatible tooling and does not widen anyone's access.

use bytes::Bytes;
use keymesh_kms_core::grants::{NewGrant, OPERATIONS, is_grant_name, is_principal};
use keymesh_kms_core::{GrantRecord, Page};
use serde_json::{Value, json};

use super::Ctx;
use super::keys::{check_sequence, key_id_field};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;

/// Page size of the grant lists when the caller sends no `limit`.
const DEFAULT_LIMIT: u64 = 1000;

/// A grant id, `^[A-Fa-f0-9]{64}$` (KMS.2501), normalised to the lower
/// case it is stored in.
pub fn grant_id(s: &str) -> Result<String, ApiError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::Invalid(codes::KMS_2501))
    }
}

/// `operations`: a non-empty list (KMS.0204) of documented names (KMS.0308),
/// not only `create-grant` (KMS.2401). Repeats are dropped, order kept.
pub fn parse_operations(list: &[Value]) -> Result<Vec<String>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::Missing("operations"));
    }
    let mut ops: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let Value::String(op) = v else {
            return Err(ApiError::MalformedJson("an operation is not a string"));
        };
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(ApiError::Invalid(codes::KMS_0308));
        }
        if !ops.contains(op) {
            ops.push(op.clone());
        }
    }
    if ops.iter().all(|o| o == "create-grant") {
        return Err(ApiError::Invalid(codes::KMS_2401));
    }
    Ok(ops)
}

fn grant_json(g: &GrantRecord) -> Value {
    json!({
        "key_id": g.key_id,
        "grant_id": g.grant_id,
        "grantee_principal": g.grantee_principal,
        "grantee_principal_type": g.grantee_principal_type,
        "operations": g.operations,
        "issuing_principal": g.issuing_principal,
        "creation_date": g.created_ms.to_string(),
        "name": g.name,
        "retiring_principal": g.retiring_principal,
    })
}

fn grants_page(page: &Page<GrantRecord>) -> Bytes {
    let (next, truncated, total) = super::page_fields(page);
    let grants: Vec<Value> = page.items.iter().map(grant_json).collect();
    ok(json!({
        "grants": grants,
        "next_marker": next,
        "truncated": truncated,
        "total": total,
    }))
}

const CREATE_FIELDS: &[&str] = &[
    "key_id",
    "grantee_principal",
    "operations",
    "name",
    "retiring_principal",
    "grantee_principal_type",
    "sequence",
];

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, CREATE_FIELDS)?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let grantee = b.req("grantee_principal")?;
    if !is_principal(grantee) {
        return Err(ApiError::Invalid(codes::KMS_2402));
    }
    let operations = parse_operations(
        b.array("operations")?
            .ok_or(ApiError::Missing("operations"))?,
    )?;
    let name = b.str("name")?.unwrap_or("");
    if !name.is_empty() && !is_grant_name(name) {
        return Err(ApiError::Invalid(codes::KMS_0308));
    }
    let retiring = b.str("retiring_principal")?.unwrap_or("");
    if !retiring.is_empty() && !is_principal(retiring) {
        return Err(ApiError::Invalid(codes::KMS_2402));
    }
    let grantee_type = match b.str("grantee_principal_type")? {
        None | Some("user") => "user",
        Some("domain") => "domain",
        Some(_) => return Err(ApiError::Invalid(codes::KMS_0308)),
    };
    let grant = NewGrant {
        key_id: id,
        grantee_principal: grantee.to_owned(),
        grantee_principal_type: grantee_type.to_owned(),
        operations,
        name: name.to_owned(),
        retiring_principal: retiring.to_owned(),
    };
    // Missing key → KMS.0207, default key → KMS.0211, pending deletion →
    // KMS.0210, over quota → KMS.2404 / KMS.2405.
    let grant =
        c.h.kms
            .grants
            .create(c.project(), &c.caller.user_id, grant)
            .await?;
    Ok(ok(json!({ "grant_id": grant.grant_id })))
}

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "limit", "marker", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let (offset, limit) = super::page_params(&b, DEFAULT_LIMIT)?;
    // Another project's (or no) key is KMS.0207, not an empty list.
    let page = c.h.kms.grants.list(c.project(), &id, offset, limit).await?;
    Ok(grants_page(&page))
}

/// `key_id` + `grant_id` of revoke / retire.
fn grant_ref(c: &mut Ctx<'_>) -> Result<(String, String), ApiError> {
    let b = Body::parse(c.body, &["key_id", "grant_id", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let grant = grant_id(b.req("grant_id")?)?;
    Ok((id, grant))
}

/// Delete the grant: KMS.2501 when it is not in the project, KMS.2502
/// when it belongs to another key.
pub async fn revoke(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let (id, grant) = grant_ref(c)?;
    c.h.kms.grants.revoke(c.project(), &id, &grant).await?;
    Ok(ok(json!({})))
}

/// Only the grantee, the retiring principal or the issuer (KMS.0306).
pub async fn retire(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let (id, grant) = grant_ref(c)?;
    c.h.kms
        .grants
        .retire(c.project(), &c.caller.user_id, &id, &grant)
        .await?;
    Ok(ok(json!({})))
}

pub async fn list_retirable(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["limit", "marker", "sequence"])?;
    check_sequence(&b)?;
    let (offset, limit) = super::page_params(&b, DEFAULT_LIMIT)?;
    let page =
        c.h.kms
            .grants
            .list_retirable(c.project(), &c.caller.user_id, offset, limit)
            .await?;
    Ok(grants_page(&page))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> &'static str {
        r.unwrap_err().wire(crate::huawei::error::Dialect::Kms).code
    }

    #[test]
    fn grant_ids() {
        let upper = "AB".repeat(32);
        assert_eq!(grant_id(&upper).unwrap(), "ab".repeat(32));
        assert_eq!(code(grant_id(&"a".repeat(63))), "KMS.2501");
        assert_eq!(code(grant_id(&"g".repeat(64))), "KMS.2501");
        let fresh = keymesh_kms_core::ids::new_grant_id().unwrap();
        assert_eq!(grant_id(&fresh).unwrap(), fresh);
        assert_ne!(fresh, keymesh_kms_core::ids::new_grant_id().unwrap());
    }

    #[test]
    fn operations() {
        let ops = parse_operations(&[
            json!("encrypt-data"),
            json!("create-grant"),
            json!("encrypt-data"),
        ])
        .unwrap();
        assert_eq!(ops, vec!["encrypt-data", "create-grant"]);
        assert_eq!(code(parse_operations(&[])), "KMS.0204");
        assert_eq!(code(parse_operations(&[json!("create-grant")])), "KMS.2401");
        assert_eq!(
            code(parse_operations(&[
                json!("create-grant"),
                json!("create-grant")
            ])),
            "KMS.2401"
        );
        assert_eq!(code(parse_operations(&[json!("sign")])), "KMS.0308");
        assert_eq!(code(parse_operations(&[json!(1)])), "KMS.0202");
        let all: Vec<Value> = OPERATIONS.iter().map(|o| json!(o)).collect();
        assert_eq!(parse_operations(&all).unwrap().len(), OPERATIONS.len());
    }
}
