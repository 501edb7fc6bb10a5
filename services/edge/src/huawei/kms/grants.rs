//! Grants: create, list (per key and retirable by the caller), revoke (any
//! full-access caller of the project, i.e. the key owner) and retire (only
//! the grantee, the retiring principal or the issuer). Grants are records
//! only: keymesh callers are bound to one project, so a grant documents
//! intent for Huawei-compatible tooling and does not widen anyone's access.

use bytes::Bytes;
use keymesh_store::{GrantRecord, StoreError};
use serde_json::{Value, json};

use super::Ctx;
use super::aliases::{not_pending, project_key};
use super::keys::{check_sequence, key_id_field};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;

/// The operations a grant may name (the wire names of §9).
pub const OPERATIONS: &[&str] = &[
    "create-datakey",
    "create-datakey-without-plaintext",
    "encrypt-datakey",
    "decrypt-datakey",
    "describe-key",
    "create-grant",
    "retire-grant",
    "encrypt-data",
    "decrypt-data",
];

/// Page size of the grant lists when the caller sends no `limit`.
const DEFAULT_LIMIT: u64 = 1000;

/// A principal id: `^[a-zA-Z0-9]{1,64}$` (grantee and retiring principal).
pub fn is_principal(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A grant name: `^[a-zA-Z0-9:/_-]{1,255}$`.
pub fn is_grant_name(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
}

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

/// Whether `user` may retire `g`: its grantee, retiring or issuing
/// principal. An empty id (no principal) never matches, so a grant without
/// a retiring principal is not retirable by an anonymous caller.
pub fn may_retire(g: &GrantRecord, user: &str) -> bool {
    !user.is_empty()
        && (g.grantee_principal == user
            || g.retiring_principal == user
            || g.issuing_principal == user)
}

/// 32 bytes from the OS CSPRNG as 64 lower-case hex characters.
fn new_grant_id() -> Result<String, ApiError> {
    // Unlike a request id, a grant id must be unique: never fall back to zeros.
    let b = crate::huawei::random_bytes::<32>().map_err(|_| ApiError::Internal)?;
    Ok(hex::encode(b))
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

fn grants_page(page: &keymesh_store::Page<GrantRecord>) -> Bytes {
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
    let key = project_key(c, &id).await?;
    if key.default_key {
        return Err(ApiError::DefaultKey);
    }
    // Huawei grants on disabled keys too; only a key on its way out is refused.
    not_pending(&key)?;
    let grant = GrantRecord {
        grant_id: new_grant_id()?,
        project_id: c.caller.project_id.clone(),
        key_id: id,
        name: name.to_owned(),
        grantee_principal: grantee.to_owned(),
        grantee_principal_type: grantee_type.to_owned(),
        operations,
        issuing_principal: c.caller.user_id.clone(),
        retiring_principal: retiring.to_owned(),
        created_ms: c.h.now_ms(),
    };
    // NotFound → KMS.0207; Quota(GrantsPerKey | GrantsPerProject) → KMS.2404 / KMS.2405.
    c.h.store.create_grant(&grant, &c.h.quotas).await?;
    Ok(ok(json!({ "grant_id": grant.grant_id })))
}

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "limit", "marker", "sequence"])?;
    check_sequence(&b)?;
    let id = key_id_field(c, &b, "key_id")?;
    let (offset, limit) = super::page_params(&b, DEFAULT_LIMIT)?;
    // Another project's (or no) key is KMS.0207, not an empty list.
    project_key(c, &id).await?;
    let page =
        c.h.store
            .list_grants(&c.caller.project_id, &id, offset, limit)
            .await?;
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
async fn remove(c: &Ctx<'_>, key_id: &str, grant_id: &str) -> Result<(), ApiError> {
    c.h.store
        .delete_grant(&c.caller.project_id, key_id, grant_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::GrantNotFound,
            e => e.into(),
        })
}

pub async fn revoke(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let (id, grant) = grant_ref(c)?;
    // The key first: a missing key is KMS.0207, not a grant mismatch.
    super::aliases::project_key(c, &id).await?;
    remove(c, &id, &grant).await?;
    Ok(ok(json!({})))
}

pub async fn retire(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let (id, grant) = grant_ref(c)?;
    super::aliases::project_key(c, &id).await?;
    let g =
        c.h.store
            .get_grant(&c.caller.project_id, &grant)
            .await?
            .ok_or(ApiError::GrantNotFound)?;
    if g.key_id != id {
        return Err(ApiError::GrantKeyMismatch);
    }
    if !may_retire(&g, &c.caller.user_id) {
        return Err(ApiError::NoAccess);
    }
    remove(c, &id, &grant).await?;
    Ok(ok(json!({})))
}

pub async fn list_retirable(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["limit", "marker", "sequence"])?;
    check_sequence(&b)?;
    let (offset, limit) = super::page_params(&b, DEFAULT_LIMIT)?;
    let user = &c.caller.user_id;
    // Grants without a retiring principal store it as "": a caller without
    // an id must not see them all.
    let page = if user.is_empty() {
        keymesh_store::Page {
            items: Vec::new(),
            next_offset: None,
            total: 0,
        }
    } else {
        c.h.store
            .list_retirable_grants(&c.caller.project_id, user, offset, limit)
            .await?
    };
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
    fn principals_and_names() {
        assert!(is_principal("a"));
        assert!(is_principal(&"Z9".repeat(32)));
        for bad in ["", "a-b", "a b", "é", &"a".repeat(65)] {
            assert!(!is_principal(bad), "{bad:?}");
        }
        assert!(is_grant_name("svc:grant/one_2-x"));
        assert!(is_grant_name(&"n".repeat(255)));
        for bad in ["", "a b", "a.b", &"n".repeat(256)] {
            assert!(!is_grant_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn grant_ids() {
        let upper = "AB".repeat(32);
        assert_eq!(grant_id(&upper).unwrap(), "ab".repeat(32));
        assert_eq!(code(grant_id(&"a".repeat(63))), "KMS.2501");
        assert_eq!(code(grant_id(&"g".repeat(64))), "KMS.2501");
        let fresh = new_grant_id().unwrap();
        assert_eq!(grant_id(&fresh).unwrap(), fresh);
        assert_ne!(fresh, new_grant_id().unwrap());
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

    #[test]
    fn who_may_retire() {
        let g = GrantRecord {
            grant_id: "ab".repeat(32),
            project_id: "p".into(),
            key_id: "k".into(),
            name: String::new(),
            grantee_principal: "grantee".into(),
            grantee_principal_type: "user".into(),
            operations: vec!["encrypt-data".into()],
            issuing_principal: "issuer".into(),
            retiring_principal: String::new(),
            created_ms: 0,
        };
        assert!(may_retire(&g, "grantee"));
        assert!(may_retire(&g, "issuer"));
        assert!(!may_retire(&g, "someone"));
        assert!(!may_retire(&g, ""));
        let g = GrantRecord {
            retiring_principal: "retirer".into(),
            ..g
        };
        assert!(may_retire(&g, "retirer"));
    }
}
