//! Key tags: free-form labels on a key, at most `tags_per_key` (enforced in
//! the store's transaction). Keys pending deletion take no tag changes but
//! can still be read. This module owns who may change what
//! ([`TagService`]) and the rules on what a tag request may ask for, the
//! same in both dialects (batch and filter sizes, keys and values given
//! twice, the `resource_name` match): each rule is a function returning
//! [`Error::Tag`] naming the broken [`TagRule`], which the dialect's wire
//! table turns into its code. The JSON shape of the requests, and each
//! dialect's key and value character grammar, are the edge's
//! (`huawei/tagging.rs`, `huawei/{kms,csms}/tags.rs`); it calls these rules
//! at the point of parsing where they applied before, so the first broken
//! rule (and thus the code answered) is unchanged.

use std::sync::Arc;

use keymesh_store::{KeyRecord, KeyTagRepo, Page, Quotas, StoreError, Tag, TagFilter};

use crate::error::{Error, Result};
use crate::keys::KeyService;

/// Tags one create/delete batch may carry: the default per-resource tag
/// quota (both dialects), so a batch can set every tag at once.
pub const MAX_BATCH: usize = 20;
/// Tag keys, and values per key, in a `resource_instances` filter: the
/// documented "up to 10" of both dialects.
pub const MAX_FILTER_KEYS: usize = 10;
pub const MAX_FILTER_VALUES: usize = 10;
/// `matches[].value` length in characters (both dialects).
pub const MAX_MATCH_VALUE: usize = 255;

pub use crate::error::TagRule;

fn rule(ok: bool, broken: TagRule) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::Tag(broken)) }
}

/// A create/delete batch of `n` tags: not empty, at most [`MAX_BATCH`].
pub fn check_batch_size(n: usize) -> Result<()> {
    rule(n != 0, TagRule::EmptyBatch)?;
    rule(n <= MAX_BATCH, TagRule::TooMany)
}

/// A filter of `n` tag keys: at most [`MAX_FILTER_KEYS`].
pub fn check_filter_size(n: usize) -> Result<()> {
    rule(n <= MAX_FILTER_KEYS, TagRule::TooMany)
}

/// `n` values under one filter key: at most [`MAX_FILTER_VALUES`].
pub fn check_filter_values(n: usize) -> Result<()> {
    rule(n <= MAX_FILTER_VALUES, TagRule::TooManyValues)
}

/// `key` is not among the keys `seen` earlier in the same batch or filter.
pub fn check_new_key<'a>(mut seen: impl Iterator<Item = &'a str>, key: &str) -> Result<()> {
    rule(!seen.any(|k| k == key), TagRule::DuplicateKey)
}

/// `value` is not among the values `seen` earlier under the same filter key.
pub fn check_new_value(seen: &[String], value: &str) -> Result<()> {
    rule(!seen.iter().any(|v| v == value), TagRule::DuplicateValue)
}

/// A `resource_name` match value: at most [`MAX_MATCH_VALUE`] characters,
/// and not empty unless the dialect lets an empty value match every name.
pub fn check_match_value(value: &str, empty_allowed: bool) -> Result<()> {
    rule(
        (empty_allowed || !value.is_empty()) && value.chars().count() <= MAX_MATCH_VALUE,
        TagRule::BadMatchValue,
    )
}

/// A `resource_name` match, when one was `already_seen`.
pub fn check_first_match(already_seen: bool) -> Result<()> {
    rule(!already_seen, TagRule::RepeatedMatch)
}

#[derive(Debug, Clone)]
pub struct TagService {
    store: Arc<dyn KeyTagRepo>,
    quotas: Quotas,
    keys: KeyService,
}

impl TagService {
    pub(crate) fn new(store: Arc<dyn KeyTagRepo>, quotas: Quotas, keys: KeyService) -> Self {
        Self {
            store,
            quotas,
            keys,
        }
    }

    /// Set `tags` on the key (upsert; over quota: [`Error::Quota`]).
    pub async fn put(&self, project: &str, key_id: &str, tags: &[Tag]) -> Result<()> {
        self.keys.get_writable(project, key_id).await?;
        Ok(self
            .store
            .put_tags(project, key_id, tags, &self.quotas)
            .await?)
    }

    /// Delete tag `keys` (all or none) from the key: a missing tag is
    /// [`Error::TagNotFound`].
    pub async fn delete(&self, project: &str, key_id: &str, keys: &[String]) -> Result<()> {
        self.keys.get_writable(project, key_id).await?;
        self.store
            .delete_tags(project, key_id, keys)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::TagNotFound,
                e => e.into(),
            })
    }

    /// A key's tags (a missing key is [`Error::KeyNotFound`]).
    pub async fn show(&self, project: &str, key_id: &str) -> Result<Vec<Tag>> {
        Ok(self.store.key_tags(project, key_id).await?)
    }

    /// The project's tag keys with their values.
    pub async fn project_tags(&self, project: &str) -> Result<Vec<(String, Vec<String>)>> {
        Ok(self.store.project_tags(project).await?)
    }

    /// Keys matching `filter`, with their tags.
    pub async fn find(
        &self,
        project: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(KeyRecord, Vec<Tag>)>> {
        Ok(self
            .store
            .find_keys_by_tags(project, filter, offset, limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn broken(r: Result<()>) -> TagRule {
        match r {
            Err(Error::Tag(t)) => t,
            other => panic!("not a tag rule: {other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(broken(check_batch_size(0)), TagRule::EmptyBatch);
        check_batch_size(1).unwrap();
        check_batch_size(MAX_BATCH).unwrap();
        assert_eq!(broken(check_batch_size(MAX_BATCH + 1)), TagRule::TooMany);
        check_filter_size(0).unwrap();
        check_filter_size(MAX_FILTER_KEYS).unwrap();
        assert_eq!(
            broken(check_filter_size(MAX_FILTER_KEYS + 1)),
            TagRule::TooMany
        );
        check_filter_values(MAX_FILTER_VALUES).unwrap();
        assert_eq!(
            broken(check_filter_values(MAX_FILTER_VALUES + 1)),
            TagRule::TooManyValues
        );
    }

    #[test]
    fn repeats() {
        check_new_key(["a", "b"].into_iter(), "c").unwrap();
        assert_eq!(
            broken(check_new_key(["a", "b"].into_iter(), "b")),
            TagRule::DuplicateKey
        );
        check_new_value(&["x".to_owned()], "y").unwrap();
        assert_eq!(
            broken(check_new_value(&["x".to_owned()], "x")),
            TagRule::DuplicateValue
        );
        check_first_match(false).unwrap();
        assert_eq!(broken(check_first_match(true)), TagRule::RepeatedMatch);
    }

    #[test]
    fn match_values() {
        assert_eq!(broken(check_match_value("", false)), TagRule::BadMatchValue);
        check_match_value("", true).unwrap();
        // Characters, not bytes.
        check_match_value(&"é".repeat(MAX_MATCH_VALUE), false).unwrap();
        assert_eq!(
            broken(check_match_value(&"a".repeat(MAX_MATCH_VALUE + 1), true)),
            TagRule::BadMatchValue
        );
    }
}
