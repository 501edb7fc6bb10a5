//! [`KeyTagRepo`] over the `key_tags` table: the [`TagTable`] of keys.

use async_trait::async_trait;

use super::SqlStore;
use super::common::KEY_EXISTS;
use super::tags::TagTable;
use crate::model::{KeyRecord, Page, QuotaKind, Quotas, Tag, TagFilter};
use crate::sql::key_columns;
use crate::sql::rows::KeyRow;
use crate::{KeyTagRepo, Result};

const TAGS_OF_KEY: &str = "SELECT t.tag_key, t.tag_value FROM key_tags t \
     JOIN keys k ON k.key_id = t.key_id WHERE k.project_id = $1 AND t.key_id = $2 \
     ORDER BY t.tag_key";
const TAGS_BY_KEY_ID: &str = "SELECT tag_key, tag_value FROM key_tags WHERE key_id = $1";
const UPSERT_TAG: &str = "INSERT INTO key_tags (key_id, tag_key, tag_value) \
     VALUES ($1, $2, $3) ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
const DELETE_TAG: &str = "DELETE FROM key_tags WHERE key_id = $1 AND tag_key = $2";
const PROJECT_TAGS: &str = "SELECT DISTINCT t.tag_key, t.tag_value FROM key_tags t \
     JOIN keys k ON k.key_id = t.key_id WHERE k.project_id = $1 ORDER BY t.tag_key, t.tag_value";
/// Selected columns of the tag search (`k` is `keys`); the caller appends
/// the filter built by `push_tag_filter`.
const FIND_KEYS_HEAD: &str = concat!("SELECT ", key_columns!("k."));
const FIND_KEYS_ORDER: &str = " ORDER BY k.created_ms, k.key_id LIMIT ";
const TAGS_OF_KEYS_HEAD: &str =
    "SELECT key_id AS owner_id, tag_key, tag_value FROM key_tags WHERE key_id IN (";

const KEY_TAGS: TagTable = TagTable {
    owner_exists: KEY_EXISTS,
    tags_of: TAGS_OF_KEY,
    tags_by_id: TAGS_BY_KEY_ID,
    upsert: UPSERT_TAG,
    delete: DELETE_TAG,
    project_tags: PROJECT_TAGS,
    quota: QuotaKind::TagsPerKey,
    find_head: FIND_KEYS_HEAD,
    find_from: " FROM keys k WHERE k.project_id = ",
    find_tag: " AND EXISTS (SELECT 1 FROM key_tags t WHERE t.key_id = k.key_id \
               AND t.tag_key = ",
    find_name: "(k.alias, ",
    find_order: FIND_KEYS_ORDER,
    tags_of_owners: TAGS_OF_KEYS_HEAD,
};

#[async_trait]
impl KeyTagRepo for SqlStore {
    async fn key_tags(&self, project_id: &str, key_id: &str) -> Result<Vec<Tag>> {
        self.owner_tags(&KEY_TAGS, project_id, key_id).await
    }

    async fn put_tags(
        &self,
        project_id: &str,
        key_id: &str,
        tags: &[Tag],
        quotas: &Quotas,
    ) -> Result<()> {
        self.put_owner_tags(&KEY_TAGS, project_id, key_id, tags, quotas.tags_per_key)
            .await
    }

    async fn delete_tags(&self, project_id: &str, key_id: &str, tag_keys: &[String]) -> Result<()> {
        self.delete_owner_tags(&KEY_TAGS, project_id, key_id, tag_keys)
            .await
    }

    async fn project_tags(&self, project_id: &str) -> Result<Vec<(String, Vec<String>)>> {
        self.tags_in_project(&KEY_TAGS, project_id).await
    }

    async fn find_keys_by_tags(
        &self,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(KeyRecord, Vec<Tag>)>> {
        self.find_by_tags::<KeyRow, KeyRecord>(&KEY_TAGS, project_id, filter, offset, limit)
            .await
    }
}
