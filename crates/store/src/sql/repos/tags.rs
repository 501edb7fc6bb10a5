//! What key tags and secret tags do alike: each tag method is written once,
//! over a [`TagTable`] (the statements of one tag table), and
//! `key_tags.rs` / `secret_tags.rs` call it with theirs.

use std::collections::BTreeSet;

use sqlx::QueryBuilder;

use super::common::{quota, require_id};
use super::{Db, SqlStore};
use crate::model::{Page, QuotaKind, Tag, TagFilter};
use crate::sql::rows::{OwnerTagRow, TagOwner, TagRow, attach_tags, group_tags};
use crate::sql::{int, page};
use crate::{Result, StoreError};

/// The statements of one tag table: the tag methods of keys
/// and of secrets are one implementation over it.
pub(super) struct TagTable {
    /// The owner's id given `($1 project, $2 owner id)`, if it is there.
    pub(super) owner_exists: &'static str,
    /// The tags of `($1 project, $2 owner id)`, by tag key.
    pub(super) tags_of: &'static str,
    /// The tags of owner `$1`, whose project was checked.
    pub(super) tags_by_id: &'static str,
    /// `($1 owner id, $2 tag key, $3 value)`.
    pub(super) upsert: &'static str,
    /// `($1 owner id, $2 tag key)`.
    pub(super) delete: &'static str,
    /// The distinct `(tag key, value)` pairs of project `$1`, sorted.
    pub(super) project_tags: &'static str,
    /// What a `put` past the limit exceeds.
    pub(super) quota: QuotaKind,
    /// The search's selected columns, then FROM up to the project bind, one
    /// tag condition up to its key bind (closed by the caller), the name
    /// column as first argument of `CONTAINS_FN`, and the order up to the
    /// limit bind.
    pub(super) find_head: &'static str,
    pub(super) find_from: &'static str,
    pub(super) find_tag: &'static str,
    pub(super) find_name: &'static str,
    pub(super) find_order: &'static str,
    /// Up to the list of owner ids (`OwnerTagRow`s).
    pub(super) tags_of_owners: &'static str,
}

/// The FROM and WHERE clauses of a tag search over `table`'s
/// owners.
fn push_tag_filter(
    qb: &mut QueryBuilder<Db>,
    table: &TagTable,
    project_id: &str,
    filter: &TagFilter,
) {
    qb.push(table.find_from);
    qb.push_bind(project_id.to_owned());
    for (tag_key, values) in &filter.tags {
        qb.push(table.find_tag);
        qb.push_bind(tag_key.clone());
        if !values.is_empty() {
            qb.push(" AND t.tag_value IN (");
            let mut list = qb.separated(", ");
            for value in values {
                list.push_bind(value.clone());
            }
            list.push_unseparated(")");
        }
        qb.push(")");
    }
    if let Some(needle) = &filter.resource_name {
        qb.push(" AND ");
        qb.push(SqlStore::CONTAINS_FN);
        qb.push(table.find_name);
        qb.push_bind(needle.clone());
        qb.push(") > 0");
    }
}

impl SqlStore {
    pub(super) async fn owner_tags(
        &self,
        table: &TagTable,
        project_id: &str,
        owner_id: &str,
    ) -> Result<Vec<Tag>> {
        let mut tx = self.begin_read().await?;
        require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
        let rows = sqlx::query_as::<_, TagRow>(table.tags_of)
            .bind(project_id)
            .bind(owner_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(Tag::from).collect())
    }

    pub(super) async fn put_owner_tags(
        &self,
        table: &TagTable,
        project_id: &str,
        owner_id: &str,
        tags: &[Tag],
        limit: u32,
    ) -> Result<()> {
        let mut tx = self.begin_write(project_id).await?;
        require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
        // The quota applies to the tag set the owner ends with: setting an
        // existing tag key again adds nothing.
        let existing = sqlx::query_as::<_, TagRow>(table.tags_by_id)
            .bind(owner_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut final_keys: BTreeSet<&str> = existing.iter().map(|t| t.tag_key.as_str()).collect();
        final_keys.extend(tags.iter().map(|t| t.key.as_str()));
        if final_keys.len() > quota(limit) {
            return Err(StoreError::Quota(table.quota));
        }
        // In order, so a tag key given twice ends with its last value.
        for tag in tags {
            sqlx::query(table.upsert)
                .bind(owner_id)
                .bind(&tag.key)
                .bind(&tag.value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delete_owner_tags(
        &self,
        table: &TagTable,
        project_id: &str,
        owner_id: &str,
        tag_keys: &[String],
    ) -> Result<()> {
        let mut tx = self.begin_write(project_id).await?;
        require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
        for tag_key in tag_keys.iter().collect::<BTreeSet<_>>() {
            let deleted = sqlx::query(table.delete)
                .bind(owner_id)
                .bind(tag_key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                // Dropping `tx` rolls back the deletions so far.
                return Err(StoreError::NotFound);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn tags_in_project(
        &self,
        table: &TagTable,
        project_id: &str,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let rows = sqlx::query_as::<_, TagRow>(table.project_tags)
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(group_tags(rows))
    }

    /// A page of owners (decoded from rows `R`) matching `filter`, each with
    /// all its tags.
    pub(super) async fn find_by_tags<R, T>(
        &self,
        table: &TagTable,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(T, Vec<Tag>)>>
    where
        R: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin,
        T: TryFrom<R, Error = StoreError> + TagOwner,
    {
        let mut tx = self.begin_read().await?;

        let mut count = QueryBuilder::<Db>::new("SELECT COUNT(*)");
        push_tag_filter(&mut count, table, project_id, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;

        let mut select = QueryBuilder::<Db>::new(table.find_head);
        push_tag_filter(&mut select, table, project_id, filter);
        select.push(table.find_order);
        select.push_bind(int(limit));
        select.push(" OFFSET ");
        select.push_bind(int(offset));
        let owners = select
            .build_query_as::<R>()
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(T::try_from)
            .collect::<Result<Vec<_>>>()?;

        let tag_rows = if owners.is_empty() {
            Vec::new()
        } else {
            // These ids were just read from this project.
            let mut tags = QueryBuilder::<Db>::new(table.tags_of_owners);
            let mut ids = tags.separated(", ");
            for owner in &owners {
                ids.push_bind(owner.owner_id().to_owned());
            }
            ids.push_unseparated(")");
            tags.build_query_as::<OwnerTagRow>()
                .fetch_all(&mut *tx)
                .await?
        };
        tx.commit().await?;
        Ok(page(attach_tags(owners, tag_rows), offset, total))
    }
}
