//! [`SecretTagRepo`] over the `secret_tags` table: the [`TagTable`] of
//! secrets (addressed by id).

use async_trait::async_trait;

use super::SqlStore;
use super::common::SECRET_EXISTS;
use super::tags::TagTable;
use crate::model::{Page, QuotaKind, SecretQuotas, SecretRecord, Tag, TagFilter};
use crate::sql::rows::SecretRow;
use crate::sql::secret_columns;
use crate::{Result, SecretTagRepo};

const TAGS_OF_SECRET: &str = "SELECT t.tag_key, t.tag_value FROM secret_tags t \
     JOIN secrets s ON s.secret_id = t.secret_id WHERE s.project_id = $1 AND t.secret_id = $2 \
     ORDER BY t.tag_key";
const TAGS_BY_SECRET_ID: &str = "SELECT tag_key, tag_value FROM secret_tags WHERE secret_id = $1";
const UPSERT_SECRET_TAG: &str = "INSERT INTO secret_tags \
     (secret_id, tag_key, tag_value) VALUES ($1, $2, $3) \
     ON CONFLICT (secret_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
const DELETE_SECRET_TAG: &str = "DELETE FROM secret_tags WHERE secret_id = $1 AND tag_key = $2";
const PROJECT_SECRET_TAGS: &str = "SELECT DISTINCT t.tag_key, t.tag_value \
     FROM secret_tags t JOIN secrets s ON s.secret_id = t.secret_id WHERE s.project_id = $1 \
     ORDER BY t.tag_key, t.tag_value";
/// Selected columns of the secret tag search (`s` is `secrets`).
const FIND_SECRETS_HEAD: &str = concat!("SELECT ", secret_columns!("s."));
const FIND_SECRETS_ORDER: &str = " ORDER BY s.name LIMIT ";
const TAGS_OF_SECRETS_HEAD: &str =
    "SELECT secret_id AS owner_id, tag_key, tag_value FROM secret_tags WHERE secret_id IN (";

const SECRET_TAGS: TagTable = TagTable {
    owner_exists: SECRET_EXISTS,
    tags_of: TAGS_OF_SECRET,
    tags_by_id: TAGS_BY_SECRET_ID,
    upsert: UPSERT_SECRET_TAG,
    delete: DELETE_SECRET_TAG,
    project_tags: PROJECT_SECRET_TAGS,
    quota: QuotaKind::SecretTags,
    find_head: FIND_SECRETS_HEAD,
    find_from: " FROM secrets s WHERE s.project_id = ",
    find_tag: " AND EXISTS (SELECT 1 FROM secret_tags t \
               WHERE t.secret_id = s.secret_id AND t.tag_key = ",
    find_name: "(s.name, ",
    find_order: FIND_SECRETS_ORDER,
    tags_of_owners: TAGS_OF_SECRETS_HEAD,
};

#[async_trait]
impl SecretTagRepo for SqlStore {
    async fn secret_tags(&self, project_id: &str, secret_id: &str) -> Result<Vec<Tag>> {
        self.owner_tags(&SECRET_TAGS, project_id, secret_id).await
    }

    async fn put_secret_tags(
        &self,
        project_id: &str,
        secret_id: &str,
        tags: &[Tag],
        quotas: &SecretQuotas,
    ) -> Result<()> {
        self.put_owner_tags(
            &SECRET_TAGS,
            project_id,
            secret_id,
            tags,
            quotas.tags_per_secret,
        )
        .await
    }

    async fn delete_secret_tags(
        &self,
        project_id: &str,
        secret_id: &str,
        keys: &[String],
    ) -> Result<()> {
        self.delete_owner_tags(&SECRET_TAGS, project_id, secret_id, keys)
            .await
    }

    async fn project_secret_tags(&self, project_id: &str) -> Result<Vec<(String, Vec<String>)>> {
        self.tags_in_project(&SECRET_TAGS, project_id).await
    }

    async fn find_secrets_by_tags(
        &self,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(SecretRecord, Vec<Tag>)>> {
        self.find_by_tags::<SecretRow, SecretRecord>(
            &SECRET_TAGS,
            project_id,
            filter,
            offset,
            limit,
        )
        .await
    }
}
