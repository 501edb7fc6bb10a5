//! Key tags: add one, add or delete several, delete one, show a key's,
//! list the project's, and filter or count keys by tags
//! (`resource_instances`). Tags are free-form labels, so the character
//! rules are checked here once for every entry point: keys 1..=36 and
//! values 0..=43 Unicode characters, without control characters or any of
//! `* < > \ =` (KMS.0411/0406 for keys, KMS.0410/0405 for values); the
//! body parsing is shared with CSMS secret tags (`huawei::tagging`). Keys
//! pending deletion take no tag changes (KMS.0210) but can still be read.

use bytes::Bytes;
use keymesh_kms_core::Tag;
use serde_json::{Value, json};

use super::Ctx;
use super::keys::{check_sequence, key_id, key_json};
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;
use crate::huawei::tagging::{
    self, BATCH_FIELDS, SEARCH_FIELDS, TagRules, project_tags_json, resource_json, search_answer,
    tags_json,
};

pub use crate::huawei::tagging::{Batch, Search};

/// The KMS tag grammar and codes for the shared parsers.
pub const RULES: TagRules = TagRules {
    check_key: check_tag_key,
    check_value: check_tag_value,
    bad_action: codes::KMS_0404,
    bad_filter_entry: codes::KMS_0414,
    bad_limit: codes::KMS_1601,
    bad_offset: codes::KMS_0417,
    action_required: false,
    // The published "Offset is not required."
    offset_on_count: Some(codes::KMS_0418),
    bad_match_key: codes::KMS_0403,
    empty_match: false,
};

/// Characters no tag key or value may hold. `char::is_control` also covers
/// DEL and the C1 range, which the reference's "ASCII 0-31" leaves open:
/// tags end up in logs and consoles.
fn forbidden(ch: char) -> bool {
    ch.is_control() || matches!(ch, '*' | '<' | '>' | '\\' | '=')
}

/// A tag key: 1..=36 characters (KMS.0411), allowed characters (KMS.0406).
pub fn check_tag_key(k: &str) -> Result<(), ApiError> {
    if !(1..=36).contains(&k.chars().count()) {
        return Err(ApiError::Invalid(codes::KMS_0411));
    }
    if k.chars().any(forbidden) {
        return Err(ApiError::Invalid(codes::KMS_0406));
    }
    Ok(())
}

/// A tag value: 0..=43 characters (KMS.0410), allowed characters (KMS.0405).
pub fn check_tag_value(v: &str) -> Result<(), ApiError> {
    if v.chars().count() > 43 {
        return Err(ApiError::Invalid(codes::KMS_0410));
    }
    if v.chars().any(forbidden) {
        return Err(ApiError::Invalid(codes::KMS_0405));
    }
    Ok(())
}

/// One `{key, value}` of create / batch: key required, value may be empty.
pub fn parse_tag(v: &Value) -> Result<Tag, ApiError> {
    tagging::parse_tag(v, &RULES)
}

/// The `{key_id}` path segment: valid (KMS.0205), recorded for the audit.
fn path_key(c: &mut Ctx<'_>) -> Result<String, ApiError> {
    // The router sets it for every tag path; its absence is a routing bug.
    let raw = c.route.key_id.as_deref().ok_or(ApiError::Internal)?;
    let id = key_id(raw)?;
    *c.audit_key = Some(id.clone());
    Ok(id)
}

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_key(c)?;
    let b = Body::parse(c.body, &["tag", "sequence"])?;
    check_sequence(&b)?;
    let tag = tagging::create_body(c.body, &RULES)?;
    // Missing key → KMS.0207, pending deletion → KMS.0210; upsert;
    // over quota → KMS.0409.
    c.h.kms.tags.put(c.project(), &id, &[tag]).await?;
    Ok(ok(json!({})))
}

/// `action` (KMS.0204 absent, KMS.0404 unknown) and `tags` (KMS.0204
/// absent, KMS.0401 empty, KMS.0407 above
/// [`MAX_BATCH`](keymesh_kms_core::tags::MAX_BATCH), KMS.0412 for a key
/// given twice, whose outcome would depend on order).
pub fn parse_batch(b: &Body) -> Result<Batch, ApiError> {
    tagging::parse_batch(b, &RULES)
}

pub async fn batch(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_key(c)?;
    let b = Body::parse(c.body, BATCH_FIELDS)?;
    check_sequence(&b)?;
    let batch = parse_batch(&b)?;
    let tags = &c.h.kms.tags;
    match batch {
        Batch::Create(list) => tags.put(c.project(), &id, &list).await?,
        // A missing tag → KMS.0416.
        Batch::Delete(keys) => tags.delete(c.project(), &id, &keys).await?,
    }
    Ok(ok(json!({})))
}

pub async fn delete(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_key(c)?;
    let tag = c.route.param.clone().ok_or(ApiError::Internal)?;
    check_tag_key(&tag)?;
    c.h.kms.tags.delete(c.project(), &id, &[tag]).await?;
    Ok(ok(json!({})))
}

pub async fn show(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_key(c)?;
    // NotFound (the key) → KMS.0207.
    let tags = c.h.kms.tags.show(c.project(), &id).await?;
    Ok(ok(json!({
        "tags": tags_json(&tags),
        "existTagsNum": tags.len(),
    })))
}

pub async fn list_project(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let tags = c.h.kms.tags.project_tags(c.project()).await?;
    Ok(ok(json!({ "tags": project_tags_json(&tags) })))
}

/// `action` filter|count (default filter, KMS.0404); `limit` 1..=1000
/// default 10 (KMS.1601) and `offset` >= 0 (KMS.0417), neither used by
/// count, which refuses an `offset` (KMS.0418, the published "Offset is not
/// required."); `tags` and `matches` as in [`parse_filter_tags`] and
/// [`parse_matches`].
pub fn parse_search(b: &Body) -> Result<Search, ApiError> {
    tagging::parse_search(b, &RULES)
}

/// `tags[] {key, values}`: at most 10 entries (KMS.0407), each with a key
/// (KMS.0414 absent, tag key rules otherwise) not seen before (KMS.0412),
/// and at most 10 distinct values (KMS.0413, KMS.0414 for a repeat) under
/// the tag value rules. No values means any value.
pub fn parse_filter_tags(list: &[Value]) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    tagging::parse_filter_tags(list, &RULES)
}

/// `matches[] {key, value}`: the only key is `resource_name` (KMS.0403),
/// given once (KMS.0415), with a value of 1..=255 characters (KMS.0402). An
/// empty list matches everything.
pub fn parse_matches(list: &[Value]) -> Result<Option<String>, ApiError> {
    tagging::parse_matches(list, &RULES)
}

pub async fn resource_instances(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, SEARCH_FIELDS)?;
    check_sequence(&b)?;
    let s = parse_search(&b)?;
    let page =
        c.h.kms
            .tags
            .find(c.project(), &s.filter, s.offset, s.limit)
            .await?;
    Ok(ok(search_answer(&s, &page, |(k, tags)| {
        resource_json(&k.key_id, key_json(c.h, k), &k.alias, tags)
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::huawei::error::Dialect;
    use keymesh_kms_core::TagFilter;

    fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> &'static str {
        r.unwrap_err().wire(Dialect::Kms).code
    }

    fn body(s: &str) -> Body {
        Body::parse(s.as_bytes(), SEARCH_FIELDS).unwrap()
    }

    #[test]
    fn tag_key_rules() {
        assert!(check_tag_key("k").is_ok());
        assert!(check_tag_key("部门 cost-center/a.b_c:d@e+f").is_ok());
        assert!(check_tag_key(&"é".repeat(36)).is_ok());
        assert_eq!(code(check_tag_key("")), "KMS.0411");
        assert_eq!(code(check_tag_key(&"é".repeat(37))), "KMS.0411");
        for bad in ["a*", "<a", "a>", "a\\b", "a=b", "a\tb", "a\u{7f}", "\u{1}"] {
            assert_eq!(code(check_tag_key(bad)), "KMS.0406", "{bad:?}");
        }
    }

    #[test]
    fn tag_value_rules() {
        assert!(check_tag_value("").is_ok());
        assert!(check_tag_value(&"ü".repeat(43)).is_ok());
        assert_eq!(code(check_tag_value(&"ü".repeat(44))), "KMS.0410");
        for bad in ["a*", "<", ">", "\\", "=", "\n"] {
            assert_eq!(code(check_tag_value(bad)), "KMS.0405", "{bad:?}");
        }
    }

    #[test]
    fn tag_elements() {
        let t = parse_tag(&json!({"key": "k", "value": "v"})).unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("k", "v"));
        assert_eq!(parse_tag(&json!({"key": "k"})).unwrap().value, "");
        assert_eq!(code(parse_tag(&json!({"value": "v"}))), "KMS.0204");
        assert_eq!(code(parse_tag(&json!({"key": "k", "x": 1}))), "KMS.0202");
        assert_eq!(code(parse_tag(&json!({"key": 1}))), "KMS.0202");
        assert_eq!(code(parse_tag(&json!("k"))), "KMS.0202");
        assert_eq!(
            code(parse_tag(&json!({"key": "k", "value": "="}))),
            "KMS.0405"
        );
    }

    fn batch_body(s: &str) -> Body {
        Body::parse(s.as_bytes(), BATCH_FIELDS).unwrap()
    }

    #[test]
    fn batches() {
        let b = batch_body(
            r#"{"action": "create", "tags": [{"key": "a", "value": "1"}, {"key": "b"}]}"#,
        );
        assert_eq!(
            parse_batch(&b).unwrap(),
            Batch::Create(vec![
                Tag {
                    key: "a".into(),
                    value: "1".into()
                },
                Tag {
                    key: "b".into(),
                    value: String::new()
                },
            ])
        );
        let b = batch_body(r#"{"action": "delete", "tags": [{"key": "a", "value": "1"}]}"#);
        assert_eq!(parse_batch(&b).unwrap(), Batch::Delete(vec!["a".into()]));
        assert_eq!(
            code(parse_batch(&batch_body(r#"{"tags": [{"key": "a"}]}"#))),
            "KMS.0204"
        );
        assert_eq!(
            code(parse_batch(&batch_body(
                r#"{"action": "update", "tags": [{"key": "a"}]}"#
            ))),
            "KMS.0404"
        );
        assert_eq!(
            code(parse_batch(&batch_body(r#"{"action": "create"}"#))),
            "KMS.0204"
        );
        assert_eq!(
            code(parse_batch(&batch_body(
                r#"{"action": "create", "tags": []}"#
            ))),
            "KMS.0401"
        );
        assert_eq!(
            code(parse_batch(&batch_body(
                r#"{"action": "create", "tags": [{"key": "a"}, {"key": "a", "value": "2"}]}"#
            ))),
            "KMS.0412"
        );
        let many: Vec<Value> = (0..=keymesh_kms_core::tags::MAX_BATCH)
            .map(|i| json!({"key": format!("k{i}")}))
            .collect();
        let raw = json!({"action": "create", "tags": many}).to_string();
        assert_eq!(code(parse_batch(&batch_body(&raw))), "KMS.0407");
    }

    #[test]
    fn search_defaults_and_paging() {
        let s = parse_search(&body("{}")).unwrap();
        assert_eq!((s.count, s.offset, s.limit), (false, 0, 10));
        assert_eq!(s.filter, TagFilter::default());
        let s = parse_search(&body(r#"{"action": "filter", "limit": "5", "offset": 7}"#)).unwrap();
        assert_eq!((s.offset, s.limit), (7, 5));
        assert_eq!(code(parse_search(&body(r#"{"limit": "0"}"#))), "KMS.1601");
        assert_eq!(
            code(parse_search(&body(r#"{"limit": "1001"}"#))),
            "KMS.1601"
        );
        assert_eq!(code(parse_search(&body(r#"{"limit": "x"}"#))), "KMS.1601");
        assert_eq!(code(parse_search(&body(r#"{"offset": "-1"}"#))), "KMS.0417");
        assert_eq!(code(parse_search(&body(r#"{"offset": "x"}"#))), "KMS.0417");
        assert_eq!(
            code(parse_search(&body(r#"{"action": "list"}"#))),
            "KMS.0404"
        );
        // count ignores limit and refuses offset.
        let s = parse_search(&body(r#"{"action": "count", "limit": "0"}"#)).unwrap();
        assert!(s.count);
        assert_eq!(
            code(parse_search(&body(r#"{"action": "count", "offset": "0"}"#))),
            "KMS.0418"
        );
    }

    #[test]
    fn search_tags() {
        let s = parse_search(&body(
            r#"{"tags": [{"key": "env", "values": ["prod", "dev"]}, {"key": "team"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            s.filter.tags,
            vec![
                ("env".to_owned(), vec!["prod".to_owned(), "dev".to_owned()]),
                ("team".to_owned(), vec![])
            ]
        );
        let eleven: Vec<Value> = (0..11).map(|i| json!({"key": format!("k{i}")})).collect();
        assert_eq!(code(parse_filter_tags(&eleven)), "KMS.0407");
        assert_eq!(
            code(parse_filter_tags(&[json!({"values": ["a"]})])),
            "KMS.0414"
        );
        assert_eq!(
            code(parse_filter_tags(&[
                json!({"key": "a"}),
                json!({"key": "a"})
            ])),
            "KMS.0412"
        );
        assert_eq!(
            code(parse_filter_tags(&[
                json!({"key": "a", "values": ["x", "x"]})
            ])),
            "KMS.0414"
        );
        let vals: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            code(parse_filter_tags(&[json!({"key": "a", "values": vals})])),
            "KMS.0413"
        );
        assert_eq!(
            code(parse_filter_tags(&[json!({"key": "a", "values": [1]})])),
            "KMS.0202"
        );
        assert_eq!(
            code(parse_filter_tags(&[json!({"key": "a", "values": "x"})])),
            "KMS.0202"
        );
        assert_eq!(code(parse_filter_tags(&[json!({"key": "a*"})])), "KMS.0406");
        assert_eq!(
            code(parse_filter_tags(&[json!({"key": "a", "values": ["<"]})])),
            "KMS.0405"
        );
    }

    #[test]
    fn search_matches() {
        assert_eq!(parse_matches(&[]).unwrap(), None);
        assert_eq!(
            parse_matches(&[json!({"key": "resource_name", "value": "db"})]).unwrap(),
            Some("db".to_owned())
        );
        assert_eq!(
            code(parse_matches(&[json!({"key": "name", "value": "db"})])),
            "KMS.0403"
        );
        assert_eq!(code(parse_matches(&[json!({"value": "db"})])), "KMS.0403");
        assert_eq!(
            code(parse_matches(&[
                json!({"key": "resource_name", "value": ""})
            ])),
            "KMS.0402"
        );
        assert_eq!(
            code(parse_matches(&[json!({"key": "resource_name"})])),
            "KMS.0402"
        );
        let long = "a".repeat(256);
        assert_eq!(
            code(parse_matches(&[
                json!({"key": "resource_name", "value": long})
            ])),
            "KMS.0402"
        );
        let m = json!({"key": "resource_name", "value": "a"});
        assert_eq!(code(parse_matches(&[m.clone(), m])), "KMS.0415");
    }
}
