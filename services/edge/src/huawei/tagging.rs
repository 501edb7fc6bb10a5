//! Tag request parsing shared by the two dialects: KMS key tags
//! (`/v1.0/{project_id}/kms/...tags`) and CSMS secret tags
//! (`/v1/{project_id}/csms/...tags`). Both take the same bodies (one
//! `{key, value}`, a create/delete batch, a `resource_instances` filter of
//! tags and `resource_name` matches) but differ in the character rules and
//! in the published code for each malformed request, so the parsers take a
//! [`TagRules`] naming them and each dialect keeps one constant. The rules
//! on what a request may ask for (sizes, repeats, the name match) are the
//! domain's (`keymesh_kms_core::tags`), called here where each applies; the
//! wire table maps their errors per dialect. The answers share their shape
//! too ([`search_answer`], [`resource_json`]).

use keymesh_kms_core::tags as tag_rules;
use keymesh_kms_core::{Page, Tag, TagFilter};
use serde_json::{Map, Value, json};

use super::codes::Code;
use super::error::ApiError;
use super::json::{Body, member};

/// One dialect's tag grammar and its published code for each rule.
#[derive(Debug)]
pub struct TagRules {
    /// A tag key's length and characters.
    pub check_key: fn(&str) -> Result<(), ApiError>,
    /// A tag value's length and characters.
    pub check_value: fn(&str) -> Result<(), ApiError>,
    /// An `action` outside the allowed ones.
    pub bad_action: Code,
    /// A filter entry without a key.
    pub bad_filter_entry: Code,
    /// `limit` outside 1..=1000 or not an integer.
    pub bad_limit: Code,
    /// `offset` negative or not an integer.
    pub bad_offset: Code,
    /// `resource_instances` needs an explicit `action` (CSMS) or defaults
    /// to `filter` (KMS).
    pub action_required: bool,
    /// `offset` sent with `action=count`: refused with this code, or
    /// ignored (`None`) like `limit`.
    pub offset_on_count: Option<Code>,
    /// A `matches[].key` other than `resource_name`.
    pub bad_match_key: Code,
    /// An empty `matches[].value` is allowed and matches every name.
    pub empty_match: bool,
}

/// The members a batch body may carry.
pub const BATCH_FIELDS: &[&str] = &["tags", "action", "sequence"];
/// The members a `resource_instances` body may carry.
pub const SEARCH_FIELDS: &[&str] = &["limit", "offset", "action", "tags", "matches", "sequence"];

/// An array element that must be an object with only `allowed` members.
pub fn object<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let Value::Object(m) = v else {
        return Err(ApiError::MalformedJson("an array element is not an object"));
    };
    if m.keys().any(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::MalformedJson("unknown field"));
    }
    Ok(m)
}

/// One `{key, value}` of create / batch: key required, value may be empty.
pub fn parse_tag(v: &Value, rules: &TagRules) -> Result<Tag, ApiError> {
    object(v, &["key", "value"])?;
    let key = member(v, "key")?.ok_or(ApiError::Missing("key"))?;
    (rules.check_key)(key)?;
    let value = member(v, "value")?.unwrap_or("");
    (rules.check_value)(value)?;
    Ok(Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// The `tag` object of a create body (already parsed by [`Body::parse`],
/// which exposes no object members; the bytes parsed there, so this second
/// parse of the same bytes succeeds, an empty body being `null`).
pub fn create_body(raw: &[u8], rules: &TagRules) -> Result<Tag, ApiError> {
    let raw: Value = serde_json::from_slice(raw).unwrap_or_default();
    let tag = raw
        .get("tag")
        .filter(|v| !v.is_null())
        .ok_or(ApiError::Missing("tag"))?;
    parse_tag(tag, rules)
}

/// What a batch asks for, validated.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    Create(Vec<Tag>),
    Delete(Vec<String>),
}

/// `action` (absent → `Missing`, unknown → `bad_action`) and `tags` (absent
/// → `Missing`, then the domain's batch size and repeated key rules).
pub fn parse_batch(b: &Body, rules: &TagRules) -> Result<Batch, ApiError> {
    let create = match b.req("action")? {
        "create" => true,
        "delete" => false,
        _ => return Err(ApiError::Invalid(rules.bad_action)),
    };
    let list = b.array("tags")?.ok_or(ApiError::Missing("tags"))?;
    tag_rules::check_batch_size(list.len())?;
    let mut tags: Vec<Tag> = Vec::with_capacity(list.len());
    for v in list {
        let t = parse_tag(v, rules)?;
        tag_rules::check_new_key(tags.iter().map(|x| x.key.as_str()), &t.key)?;
        tags.push(t);
    }
    Ok(if create {
        Batch::Create(tags)
    } else {
        // Deletion is by tag key; a value, when sent, was checked above.
        Batch::Delete(tags.into_iter().map(|t| t.key).collect())
    })
}

/// A validated `resource_instances` request.
#[derive(Debug, PartialEq, Eq)]
pub struct Search {
    /// `action=count`: only `total_count` is answered.
    pub count: bool,
    pub offset: u64,
    pub limit: u64,
    pub filter: TagFilter,
}

/// `action` filter|count (`bad_action`; absent → filter or `Missing` per
/// `action_required`); `limit` 1..=1000 default 10 (`bad_limit`) and
/// `offset` >= 0 (`bad_offset`), neither used by count (an `offset` there is
/// refused with `offset_on_count` when the dialect has a code for it);
/// `tags` and `matches` as in [`parse_filter_tags`] and [`parse_matches`].
pub fn parse_search(b: &Body, rules: &TagRules) -> Result<Search, ApiError> {
    let action = if rules.action_required {
        Some(b.req("action")?)
    } else {
        b.str("action")?
    };
    let count = match action {
        None | Some("filter") => false,
        Some("count") => true,
        Some(_) => return Err(ApiError::Invalid(rules.bad_action)),
    };
    let (offset, limit) = if count {
        if let Some(code) = rules.offset_on_count
            && b.int("offset", code)?.is_some()
        {
            return Err(ApiError::Invalid(code));
        }
        (0, 1)
    } else {
        let limit = match b.int("limit", rules.bad_limit)? {
            None => 10,
            Some(n) => u64::try_from(n)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or(ApiError::Invalid(rules.bad_limit))?,
        };
        let offset = match b.int("offset", rules.bad_offset)? {
            None => 0,
            Some(n) => u64::try_from(n).map_err(|_| ApiError::Invalid(rules.bad_offset))?,
        };
        (offset, limit)
    };
    let tags = match b.array("tags")? {
        None => Vec::new(),
        Some(list) => parse_filter_tags(list, rules)?,
    };
    let resource_name = match b.array("matches")? {
        None => None,
        Some(list) => parse_matches(list, rules)?,
    };
    Ok(Search {
        count,
        offset,
        limit,
        filter: TagFilter {
            tags,
            resource_name,
        },
    })
}

/// `tags[] {key, values}`: the domain's filter size, then for each entry a
/// key (`bad_filter_entry` absent, tag key grammar otherwise) not seen
/// before, and values under the domain's count rule, each under the tag
/// value grammar and given once. No values means any value.
pub fn parse_filter_tags(
    list: &[Value],
    rules: &TagRules,
) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    tag_rules::check_filter_size(list.len())?;
    let mut out: Vec<(String, Vec<String>)> = Vec::with_capacity(list.len());
    for v in list {
        let m = object(v, &["key", "values"])?;
        let key = member(v, "key")?.ok_or(ApiError::Invalid(rules.bad_filter_entry))?;
        (rules.check_key)(key)?;
        tag_rules::check_new_key(out.iter().map(|(k, _)| k.as_str()), key)?;
        let values = match m.get("values") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err(ApiError::MalformedJson("an array field has another type")),
        };
        tag_rules::check_filter_values(values.len())?;
        let mut vals: Vec<String> = Vec::with_capacity(values.len());
        for x in values {
            let Value::String(s) = x else {
                return Err(ApiError::MalformedJson("a tag value is not a string"));
            };
            (rules.check_value)(s)?;
            tag_rules::check_new_value(&vals, s)?;
            vals.push(s.clone());
        }
        out.push((key.to_owned(), vals));
    }
    Ok(out)
}

/// `matches[] {key, value}`: the only key is `resource_name`
/// (`bad_match_key`), then the domain's match value rule (empty allowed per
/// `empty_match`) and given once. An empty list, or an allowed empty
/// value, matches everything.
pub fn parse_matches(list: &[Value], rules: &TagRules) -> Result<Option<String>, ApiError> {
    let mut name = None;
    let mut seen = false;
    for v in list {
        object(v, &["key", "value"])?;
        if member(v, "key")? != Some("resource_name") {
            return Err(ApiError::Invalid(rules.bad_match_key));
        }
        let value = member(v, "value")?.unwrap_or("");
        tag_rules::check_match_value(value, rules.empty_match)?;
        tag_rules::check_first_match(seen)?;
        seen = true;
        name = Some(value.to_owned()).filter(|v| !v.is_empty());
    }
    Ok(name)
}

/// Tags as the answers list them.
pub fn tags_json(tags: &[Tag]) -> Vec<Value> {
    tags.iter()
        .map(|t| json!({ "key": t.key, "value": t.value }))
        .collect()
}

/// A project's tag keys with their values, as list-project answers them.
pub fn project_tags_json(tags: &[(String, Vec<String>)]) -> Vec<Value> {
    tags.iter()
        .map(|(k, vs)| json!({ "key": k, "values": vs }))
        .collect()
}

/// One matching resource of a `resource_instances` answer, as an object a
/// dialect may add members to.
pub fn resource_json(id: &str, detail: Value, name: &str, tags: &[Tag]) -> Map<String, Value> {
    Map::from_iter([
        ("resource_id".to_owned(), json!(id)),
        ("resource_detail".to_owned(), detail),
        ("resource_name".to_owned(), json!(name)),
        ("tags".to_owned(), Value::Array(tags_json(tags))),
    ])
}

/// The `resource_instances` answer: `total_count` alone for `action=count`,
/// else with each resource of the page as `resource` renders it.
pub fn search_answer<T>(
    search: &Search,
    page: &Page<T>,
    resource: impl Fn(&T) -> Map<String, Value>,
) -> Value {
    if search.count {
        return json!({ "total_count": page.total });
    }
    let resources: Vec<Value> = page
        .items
        .iter()
        .map(|item| Value::Object(resource(item)))
        .collect();
    json!({ "resources": resources, "total_count": page.total })
}
