//! Alias resources (`/kms/aliases`, `/kms/alias/associate`): named pointers
//! to keys, separate from a key's `key_alias` attribute, unique per project.
//! Names follow the `key_alias` grammar (KMS.1101) and may not claim the
//! `/default` suffix of service default keys. A name that does not exist
//! when it must (delete, associate) is also KMS.1101: the table has no
//! "alias not found" code, and "invalid alias" is what the caller sent.

use bytes::Bytes;
use keymesh_store::{AliasRecord, KeyRecord, KeyState, StoreError};
use serde_json::{Value, json};

use super::Ctx;
use super::keys::{check_alias, is_default_alias, key_id, key_id_field};
use crate::huawei::Huawei;
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;

/// Page size of list-aliases when the caller sends no `limit`.
const DEFAULT_LIMIT: u64 = 1000;

/// The key `id` in the caller's project, read from the store (not the
/// cache: the state decides whether a write may proceed). KMS.0207.
pub async fn project_key(c: &Ctx<'_>, id: &str) -> Result<KeyRecord, ApiError> {
    c.h.store
        .get_key(&c.caller.project_id, id)
        .await?
        .ok_or(ApiError::KeyNotFound)
}

/// Keys pending deletion accept no new aliases, tags or grants (KMS.0210).
pub fn not_pending(k: &KeyRecord) -> Result<(), ApiError> {
    if k.state == KeyState::PendingDeletion {
        Err(ApiError::KeyPendingDeletion)
    } else {
        Ok(())
    }
}

/// An alias resource name: the `key_alias` grammar, not `…/default`.
fn check_name(a: &str) -> Result<(), ApiError> {
    check_alias(a)?;
    if is_default_alias(a) {
        return Err(ApiError::Invalid(codes::KMS_1101));
    }
    Ok(())
}

/// `kms:<region>:<project>:alias/<name>`. Huawei's own names already carry
/// the `alias/` prefix; it is not doubled for them.
fn alias_urn(region: &str, project: &str, alias: &str) -> String {
    let name = alias.strip_prefix("alias/").unwrap_or(alias);
    format!("kms:{region}:{project}:alias/{name}")
}

fn alias_json(h: &Huawei, a: &AliasRecord) -> Value {
    json!({
        "domain_id": a.project_id,
        "key_id": a.key_id,
        "alias": a.alias,
        "alias_urn": alias_urn(&h.config.region_id, &a.project_id, &a.alias),
        "create_time": a.created_ms.to_string(),
        "update_time": a.updated_ms.to_string(),
    })
}

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["key_id", "alias"])?;
    let id = key_id_field(c, &b, "key_id")?;
    let alias = b.req("alias")?;
    check_name(alias)?;
    not_pending(&project_key(c, &id).await?)?;
    let now = c.h.now_ms();
    let rec = AliasRecord {
        project_id: c.caller.project_id.clone(),
        alias: alias.to_owned(),
        key_id: id,
        created_ms: now,
        updated_ms: now,
    };
    // Conflict(Alias) → KMS.1104, Quota(AliasesPerKey) → KMS.0308.
    c.h.store.create_alias(&rec, &c.h.quotas).await?;
    Ok(ok(alias_json(c.h, &rec)))
}

/// The query parameters of list-aliases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub key_id: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// Parse `key_id`, `limit` (1..=1000, KMS.1601) and `marker` (a
/// non-negative offset, KMS.1602) from a raw query string. Values are
/// percent-decoded (`+` is not a space: the clients encode per RFC 3986);
/// an empty value counts as absent, a repeated parameter's last value wins
/// and other parameters are ignored, as Huawei's gateway does.
pub fn parse_list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let [key, limit, marker] =
        crate::huawei::json::query_params(query, ["key_id", "limit", "marker"])
            .ok_or(ApiError::Invalid(codes::KMS_0201))?;
    let key_id = key.as_deref().map(key_id).transpose()?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or(ApiError::Invalid(codes::KMS_1601))?,
    };
    let offset = match marker {
        None => 0,
        Some(m) => m
            .parse::<u64>()
            .map_err(|_| ApiError::Invalid(codes::KMS_1602))?,
    };
    Ok(ListQuery {
        key_id,
        offset,
        limit,
    })
}

pub async fn list(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let q = parse_list_query(c.query)?;
    if let Some(id) = &q.key_id {
        *c.audit_key = Some(id.clone());
        // Another project's key is reported like a missing one, not as an
        // empty list.
        project_key(c, id).await?;
    }
    let page =
        c.h.store
            .list_aliases(&c.caller.project_id, q.key_id.as_deref(), q.offset, q.limit)
            .await?;
    let items: Vec<Value> = page.items.iter().map(|a| alias_json(c.h, a)).collect();
    Ok(ok(json!({
        "aliases": items,
        "page_info": {
            "next_marker": page.next_offset.map(|n| n.to_string()).unwrap_or_default(),
            "current_count": page.items.len(),
        },
    })))
}

pub async fn delete(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["aliases", "key_id"])?;
    let id = key_id_field(c, &b, "key_id")?;
    let list = b.array("aliases")?.ok_or(ApiError::Missing("aliases"))?;
    if list.is_empty() {
        return Err(ApiError::Missing("aliases"));
    }
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let Value::String(a) = v else {
            return Err(ApiError::MalformedJson("an alias is not a string"));
        };
        check_name(a)?;
        // The store deletes all or none; a name twice is one alias.
        if !names.contains(a) {
            names.push(a.clone());
        }
    }
    // More names than a key can hold cannot all be that key's aliases: the
    // store would refuse them anyway (and this bounds the statement).
    if names.len() > c.h.quotas.aliases_per_key as usize {
        return Err(ApiError::Invalid(codes::KMS_1101));
    }
    project_key(c, &id).await?;
    c.h.store
        .delete_aliases(&c.caller.project_id, &id, &names)
        .await
        .map_err(|e| match e {
            // The key exists (checked above): a name is not its alias.
            StoreError::NotFound => ApiError::Invalid(codes::KMS_1101),
            e => e.into(),
        })?;
    Ok(ok(json!({})))
}

pub async fn associate(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, &["alias", "target_key_id"])?;
    let id = key_id_field(c, &b, "target_key_id")?;
    let alias = b.req("alias")?;
    check_name(alias)?;
    not_pending(&project_key(c, &id).await?)?;
    let rec =
        c.h.store
            .associate_alias(&c.caller.project_id, alias, &id, c.h.now_ms(), &c.h.quotas)
            .await
            .map_err(|e| match e {
                // The target exists (checked above): the alias does not.
                StoreError::NotFound => ApiError::Invalid(codes::KMS_1101),
                e => e.into(),
            })?;
    Ok(ok(alias_json(c.h, &rec)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const K: &str = "0d0466b0-e727-4d9c-b35d-f84bb474a37f";

    fn code(r: Result<ListQuery, ApiError>) -> &'static str {
        r.unwrap_err().wire(crate::huawei::error::Dialect::Kms).code
    }

    #[test]
    fn list_query_defaults_and_values() {
        assert_eq!(
            parse_list_query(None).unwrap(),
            ListQuery {
                key_id: None,
                offset: 0,
                limit: DEFAULT_LIMIT
            }
        );
        let q = parse_list_query(Some(&format!("key_id={K}&limit=5&marker=10"))).unwrap();
        assert_eq!(q.key_id.as_deref(), Some(K));
        assert_eq!((q.offset, q.limit), (10, 5));
        // Encoded values, upper-case ids, empty values, unknown parameters.
        let q = parse_list_query(Some(&format!(
            "foo=bar&key_id={}&limit=%32&marker=",
            K.to_ascii_uppercase()
        )))
        .unwrap();
        assert_eq!(q.key_id.as_deref(), Some(K));
        assert_eq!((q.offset, q.limit), (0, 2));
        let q = parse_list_query(Some("limit=3&limit=4&&key_id")).unwrap();
        assert_eq!((q.key_id, q.limit), (None, 4));
    }

    #[test]
    fn list_query_errors() {
        assert_eq!(code(parse_list_query(Some("limit=0"))), "KMS.1601");
        assert_eq!(code(parse_list_query(Some("limit=1001"))), "KMS.1601");
        assert_eq!(code(parse_list_query(Some("limit=ten"))), "KMS.1601");
        assert_eq!(code(parse_list_query(Some("marker=-1"))), "KMS.1602");
        assert_eq!(code(parse_list_query(Some("marker=x"))), "KMS.1602");
        assert_eq!(code(parse_list_query(Some("key_id=nope"))), "KMS.0205");
        assert_eq!(code(parse_list_query(Some("key_id=%FF"))), "KMS.0201");
        assert!(parse_list_query(Some("limit=1000")).is_ok());
    }

    #[test]
    fn urns() {
        assert_eq!(alias_urn("r1", "p1", "my-key"), "kms:r1:p1:alias/my-key");
        assert_eq!(
            alias_urn("r1", "p1", "alias/my-key"),
            "kms:r1:p1:alias/my-key"
        );
    }

    #[test]
    fn alias_names() {
        assert!(check_name("alias/my-key_1:x").is_ok());
        for bad in ["", "a b", "svc/default", "é", &"a".repeat(256)] {
            assert_eq!(
                check_name(bad)
                    .unwrap_err()
                    .wire(crate::huawei::error::Dialect::Kms)
                    .code,
                "KMS.1101",
                "{bad}"
            );
        }
    }
}
