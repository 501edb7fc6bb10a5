//! Secret tags: add one, add or delete several, delete one, show a
//! secret's, list the project's, and filter or count secrets by tags and
//! name (`resource_instances`). Unlike the secret paths, the tag paths
//! address a secret by its id. The bodies are the KMS tag bodies (parsed by
//! `huawei::tagging`) under the CSMS grammar: keys of 1..=128 letters,
//! separators, digits and `_ . : = + - @`, without leading or trailing
//! whitespace or the reserved `_sys_` prefix; values of at most 255 of the
//! same characters and `/`. The CSMS table has one code for every invalid
//! parameter (CSMS.0002). Secrets pending deletion take no tag changes
//! (CSMS.0103) but can still be read.

use bytes::Bytes;
use keymesh_kms_core::csms::tags::TagChange;
use serde_json::json;

use super::secret_json;
use crate::huawei::codes;
use crate::huawei::error::ApiError;
use crate::huawei::json::Body;
use crate::huawei::json::ok;
use crate::huawei::kms::Ctx;
use crate::huawei::tagging::{
    self, BATCH_FIELDS, Batch, SEARCH_FIELDS, TagRules, project_tags_json, resource_json,
    search_answer, tags_json,
};

/// Tag key length in characters.
const MAX_KEY: usize = 128;
/// Tag value length in characters.
const MAX_VALUE: usize = 255;
/// Tag keys with this prefix are the cloud's system tags.
const SYSTEM_PREFIX: &str = "_sys_";
const INVALID: ApiError = ApiError::Invalid(codes::CSMS_0002);

/// The CSMS tag grammar for the shared parsers: every violation is the one
/// "invalid parameter" code. `action` is required by resource_instances,
/// and count ignores `limit` and `offset` alike (the reference: "not used
/// with action=count"; CSMS publishes no code for refusing them).
pub const RULES: TagRules = TagRules {
    check_key: check_tag_key,
    check_value: check_tag_value,
    bad_action: codes::CSMS_0002,
    bad_filter_entry: codes::CSMS_0002,
    bad_limit: codes::CSMS_0002,
    bad_offset: codes::CSMS_0002,
    action_required: true,
    offset_on_count: None,
    bad_match_key: codes::CSMS_0002,
    // Only "max length 255" is documented; an empty fuzzy value matches
    // every name.
    empty_match: true,
};

/// `\p{L}`, `\p{N}` or `\p{Z}`, the classes both patterns start from.
/// `is_alphabetic` is Unicode `Alphabetic`: the letters plus letter-like
/// marks and numerals, a slight superset of `\p{L}` that only ever lets
/// through characters a script writes inside words. `\p{Z}` is exactly
/// `White_Space` without its control characters (tab, line feeds, NEL).
fn word_char(ch: char) -> bool {
    ch.is_alphabetic() || ch.is_numeric() || separator(ch)
}

/// `\p{Z}`: space, line and paragraph separators.
fn separator(ch: char) -> bool {
    ch.is_whitespace() && !ch.is_control()
}

/// A tag key: `^((?!\s)(?!_sys_)[\p{L}\p{Z}\p{N}_.:=+\-@]*)(?<!\s)$`, 1..=128
/// characters (CSMS.0002).
pub fn check_tag_key(k: &str) -> Result<(), ApiError> {
    let len = k.chars().count();
    let chars_ok = k
        .chars()
        .all(|ch| word_char(ch) || matches!(ch, '_' | '.' | ':' | '=' | '+' | '-' | '@'));
    // `\s` of the lookarounds: any white space at either end.
    let ends_ok = !k.starts_with(char::is_whitespace) && !k.ends_with(char::is_whitespace);
    if (1..=MAX_KEY).contains(&len) && chars_ok && ends_ok && !k.starts_with(SYSTEM_PREFIX) {
        Ok(())
    } else {
        Err(INVALID)
    }
}

/// A tag value: `^([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)$`, at most 255 characters
/// (CSMS.0002).
pub fn check_tag_value(v: &str) -> Result<(), ApiError> {
    let chars_ok = v
        .chars()
        .all(|ch| word_char(ch) || matches!(ch, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@'));
    if v.chars().count() <= MAX_VALUE && chars_ok {
        Ok(())
    } else {
        Err(INVALID)
    }
}

/// `sequence` is informational but bounded (36 bytes, CSMS.0002).
fn check_sequence(b: &Body) -> Result<(), ApiError> {
    match b.str("sequence")? {
        Some(s) if s.len() > 36 => Err(INVALID),
        _ => Ok(()),
    }
}

/// The `{secret_id}` path segment.
fn path_id<'r>(c: &Ctx<'r>) -> Result<&'r str, ApiError> {
    // The router sets it for every tag path; its absence is a routing bug.
    c.route.secret.as_deref().ok_or(ApiError::Internal)
}

pub async fn create(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_id(c)?;
    Body::parse(c.body, &["tag"])?;
    let tag = tagging::create_body(c.body, &RULES)?;
    // Upsert; Quota(SecretTags) → CSMS.0002.
    c.h.kms
        .secrets
        .change_tags(&c.caller.project_id, id, TagChange::Put(vec![tag]))
        .await?;
    Ok(ok(json!({})))
}

pub async fn batch(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_id(c)?;
    let b = Body::parse(c.body, BATCH_FIELDS)?;
    check_sequence(&b)?;
    let change = match tagging::parse_batch(&b, &RULES)? {
        Batch::Create(tags) => TagChange::Put(tags),
        // All or nothing: a tag key the secret lacks → CSMS.0005.
        Batch::Delete(keys) => TagChange::Delete(keys),
    };
    c.h.kms
        .secrets
        .change_tags(&c.caller.project_id, id, change)
        .await?;
    Ok(ok(json!({})))
}

pub async fn delete(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_id(c)?;
    let tag = c.route.param.clone().ok_or(ApiError::Internal)?;
    check_tag_key(&tag)?;
    c.h.kms
        .secrets
        .change_tags(&c.caller.project_id, id, TagChange::Delete(vec![tag]))
        .await?;
    Ok(ok(json!({})))
}

pub async fn show(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let id = path_id(c)?;
    // NotFound (the secret, in this project) → CSMS.0005.
    let tags = c.h.kms.secrets.tags(&c.caller.project_id, id).await?;
    Ok(ok(json!({
        "tags": tags_json(&tags),
        "sys_tags": [],
    })))
}

pub async fn list_project(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let tags = c.h.kms.secrets.project_tags(&c.caller.project_id).await?;
    Ok(ok(json!({ "tags": project_tags_json(&tags) })))
}

pub async fn resource_instances(c: &mut Ctx<'_>) -> Result<Bytes, ApiError> {
    let b = Body::parse(c.body, SEARCH_FIELDS)?;
    check_sequence(&b)?;
    let s = tagging::parse_search(&b, &RULES)?;
    let page =
        c.h.kms
            .secrets
            .find_by_tags(&c.caller.project_id, &s.filter, s.offset, s.limit)
            .await?;
    Ok(ok(search_answer(&s, &page, |(secret, tags)| {
        let mut resource =
            resource_json(&secret.secret_id, secret_json(secret), &secret.name, tags);
        // CSMS answers system tags too; this service keeps none.
        resource.insert("sys_tags".to_owned(), json!([]));
        resource
    })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::huawei::error::Dialect;
    use keymesh_kms_core::{Tag, TagFilter};
    use serde_json::Value;

    fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> &'static str {
        r.unwrap_err().wire(Dialect::Csms).code
    }

    fn search(s: &str) -> Result<tagging::Search, ApiError> {
        let b = Body::parse(s.as_bytes(), SEARCH_FIELDS)?;
        tagging::parse_search(&b, &RULES)
    }

    fn batch(s: &str) -> Result<Batch, ApiError> {
        let b = Body::parse(s.as_bytes(), BATCH_FIELDS)?;
        tagging::parse_batch(&b, &RULES)
    }

    #[test]
    fn tag_key_rules() {
        for good in [
            "k",
            "env",
            "部门",
            "cost center",
            "a_b.c:d=e+f-g@h",
            "x_sys_",
            "_sy",
            "١٢٣",
            "a\u{3000}b",
        ] {
            assert!(check_tag_key(good).is_ok(), "{good:?}");
        }
        assert!(check_tag_key(&"é".repeat(128)).is_ok());
        assert_eq!(code(check_tag_key("")), "CSMS.0002");
        assert_eq!(code(check_tag_key(&"é".repeat(129))), "CSMS.0002");
        for bad in [
            " a",
            "a ",
            "\u{a0}a",
            "a\u{3000}",
            "_sys_",
            "_sys_x",
            "a/b",
            "a*",
            "a<",
            "a\\b",
            "a\tb",
            "a\nb",
            "a\u{7f}",
            "a#",
            "a,b",
            "a'b",
            "a\"b",
            "a?",
            "a!",
            "a%",
        ] {
            assert_eq!(code(check_tag_key(bad)), "CSMS.0002", "{bad:?}");
        }
    }

    #[test]
    fn tag_value_rules() {
        for good in [
            "",
            "v",
            "a/b",
            "prod 1",
            "值_.:/=+-@",
            " leading and trailing ",
        ] {
            assert!(check_tag_value(good).is_ok(), "{good:?}");
        }
        assert!(check_tag_value(&"ü".repeat(255)).is_ok());
        assert_eq!(code(check_tag_value(&"ü".repeat(256))), "CSMS.0002");
        for bad in ["*", "<", ">", "\\", "\n", "\t", "a,b", "a#", "a\u{1}"] {
            assert_eq!(code(check_tag_value(bad)), "CSMS.0002", "{bad:?}");
        }
    }

    #[test]
    fn create_bodies() {
        let t = tagging::create_body(br#"{"tag": {"key": "k", "value": "a/b"}}"#, &RULES).unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("k", "a/b"));
        let t = tagging::create_body(br#"{"tag": {"key": "k"}}"#, &RULES).unwrap();
        assert_eq!(t.value, "");
        assert_eq!(code(tagging::create_body(b"{}", &RULES)), "CSMS.0002");
        assert_eq!(code(tagging::create_body(b"", &RULES)), "CSMS.0002");
        assert_eq!(
            code(tagging::create_body(br#"{"tag": {"value": "v"}}"#, &RULES)),
            "CSMS.0002"
        );
        assert_eq!(
            code(tagging::create_body(
                br#"{"tag": {"key": "_sys_a"}}"#,
                &RULES
            )),
            "CSMS.0002"
        );
        assert_eq!(
            code(tagging::create_body(br#"{"tag": {"key": 1}}"#, &RULES)),
            "CSMS.0004"
        );
        assert_eq!(
            code(tagging::create_body(
                br#"{"tag": {"key": "k", "x": "1"}}"#,
                &RULES
            )),
            "CSMS.0004"
        );
        assert_eq!(code(Body::parse(br#"{"tags": []}"#, &["tag"])), "CSMS.0004");
    }

    #[test]
    fn batches() {
        assert_eq!(
            batch(r#"{"action": "create", "tags": [{"key": "a", "value": "1"}, {"key": "b"}]}"#)
                .unwrap(),
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
        assert_eq!(
            batch(r#"{"action": "delete", "tags": [{"key": "a"}], "sequence": "s"}"#).unwrap(),
            Batch::Delete(vec!["a".into()])
        );
        for bad in [
            r#"{"tags": [{"key": "a"}]}"#,
            r#"{"action": "update", "tags": [{"key": "a"}]}"#,
            r#"{"action": "create"}"#,
            r#"{"action": "create", "tags": []}"#,
            r#"{"action": "create", "tags": [{"key": "a"}, {"key": "a"}]}"#,
            r#"{"action": "create", "tags": [{"key": " a"}]}"#,
        ] {
            assert_eq!(code(batch(bad)), "CSMS.0002", "{bad}");
        }
        let many: Vec<Value> = (0..=keymesh_kms_core::tags::MAX_BATCH)
            .map(|i| json!({"key": format!("k{i}")}))
            .collect();
        let raw = json!({"action": "create", "tags": many}).to_string();
        assert_eq!(code(batch(&raw)), "CSMS.0002");
        assert_eq!(code(batch(r#"{"action": "create", "x": 1}"#)), "CSMS.0004");
    }

    #[test]
    fn sequence_is_bounded() {
        let ok = Body::parse(
            br#"{"sequence": "0123456789abcdef0123456789abcdef0123"}"#,
            &["sequence"],
        )
        .unwrap();
        assert!(check_sequence(&ok).is_ok());
        let long = Body::parse(
            br#"{"sequence": "0123456789abcdef0123456789abcdef01234"}"#,
            &["sequence"],
        )
        .unwrap();
        assert_eq!(code(check_sequence(&long)), "CSMS.0002");
    }

    #[test]
    fn search_paging() {
        // `action` is required here (KMS defaults it to filter).
        assert_eq!(code(search("{}")), "CSMS.0002");
        assert_eq!(code(search(r#"{"action": "list"}"#)), "CSMS.0002");
        let s = search(r#"{"action": "filter"}"#).unwrap();
        assert_eq!((s.count, s.offset, s.limit), (false, 0, 10));
        assert_eq!(s.filter, TagFilter::default());
        let s = search(r#"{"action": "filter", "limit": "1000", "offset": 3}"#).unwrap();
        assert_eq!((s.offset, s.limit), (3, 1000));
        for bad in [
            r#"{"action": "filter", "limit": "0"}"#,
            r#"{"action": "filter", "limit": 1001}"#,
            r#"{"action": "filter", "limit": "x"}"#,
            r#"{"action": "filter", "offset": "-1"}"#,
        ] {
            assert_eq!(code(search(bad)), "CSMS.0002", "{bad}");
        }
        // count ignores both paging fields.
        let s = search(r#"{"action": "count", "limit": "0", "offset": "5"}"#).unwrap();
        assert!(s.count);
    }

    #[test]
    fn search_filters() {
        let s = search(
            r#"{"action": "filter", "tags": [{"key": "env", "values": ["prod", "a/b"]}, {"key": "team"}],
                "matches": [{"key": "resource_name", "value": "db"}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.filter.tags,
            vec![
                ("env".to_owned(), vec!["prod".to_owned(), "a/b".to_owned()]),
                ("team".to_owned(), vec![])
            ]
        );
        assert_eq!(s.filter.resource_name.as_deref(), Some("db"));
        // An empty fuzzy value matches every name.
        let s =
            search(r#"{"action": "count", "matches": [{"key": "resource_name", "value": ""}]}"#)
                .unwrap();
        assert_eq!(s.filter.resource_name, None);
        let eleven: Vec<Value> = (0..11).map(|i| json!({"key": format!("k{i}")})).collect();
        let vals: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        let long = "a".repeat(256);
        let m = json!({"key": "resource_name", "value": "a"});
        for bad in [
            json!({"action": "filter", "tags": eleven}),
            json!({"action": "filter", "tags": [{"values": ["a"]}]}),
            json!({"action": "filter", "tags": [{"key": "a"}, {"key": "a"}]}),
            json!({"action": "filter", "tags": [{"key": "a", "values": ["x", "x"]}]}),
            json!({"action": "filter", "tags": [{"key": "a", "values": vals}]}),
            json!({"action": "filter", "tags": [{"key": "_sys_a"}]}),
            json!({"action": "filter", "tags": [{"key": "a", "values": ["<"]}]}),
            json!({"action": "filter", "matches": [{"key": "name", "value": "db"}]}),
            json!({"action": "filter", "matches": [{"key": "resource_name", "value": long}]}),
            json!({"action": "filter", "matches": [m.clone(), m]}),
        ] {
            assert_eq!(code(search(&bad.to_string())), "CSMS.0002", "{bad}");
        }
        assert_eq!(
            code(search(
                r#"{"action": "filter", "tags": [{"key": "a", "values": [1]}]}"#
            )),
            "CSMS.0004"
        );
    }
}
