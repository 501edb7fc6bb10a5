//! [`AliasRepo`] over the `aliases` table: names pointing at a key of the
//! same project, counted against the per-key quota.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::SqlStore;
use super::common::{KEY_EXISTS, check_quota, require_id};
use crate::model::{AliasRecord, Millis, Page, QuotaKind, Quotas};
use crate::sql::rows::AliasRow;
use crate::sql::{int, on_unique};
use crate::{AliasRepo, Conflict, Result, StoreError};

macro_rules! alias_columns {
    () => {
        "project_id, alias, key_id, created_ms, updated_ms"
    };
}

const SELECT_ALIAS: &str = concat!(
    "SELECT ",
    alias_columns!(),
    " FROM aliases WHERE project_id = $1 AND alias = $2"
);
const COUNT_ALIASES_OF_KEY: &str =
    "SELECT COUNT(*) FROM aliases WHERE project_id = $1 AND key_id = $2";
const INSERT_ALIAS: &str = concat!(
    "INSERT INTO aliases (",
    alias_columns!(),
    ") VALUES ($1, $2, $3, $4, $5)"
);
const COUNT_ALIASES: &str =
    "SELECT COUNT(*) FROM aliases WHERE project_id = $1 AND ($2 IS NULL OR key_id = $2)";
const LIST_ALIASES: &str = concat!(
    "SELECT ",
    alias_columns!(),
    " FROM aliases WHERE project_id = $1 AND ($2 IS NULL OR key_id = $2) \
     ORDER BY alias LIMIT $3 OFFSET $4"
);
const DELETE_ALIAS: &str =
    "DELETE FROM aliases WHERE project_id = $1 AND key_id = $2 AND alias = $3";
const REPOINT_ALIAS: &str = concat!(
    "UPDATE aliases SET key_id = $3, updated_ms = $4 WHERE project_id = $1 AND alias = $2 \
     RETURNING ",
    alias_columns!()
);

#[async_trait]
impl AliasRepo for SqlStore {
    async fn create_alias(&self, alias: &AliasRecord, quotas: &Quotas) -> Result<()> {
        let mut tx = self.begin_write(&alias.project_id).await?;
        require_id(&mut tx, KEY_EXISTS, &alias.project_id, &alias.key_id).await?;
        let taken = sqlx::query(SELECT_ALIAS)
            .bind(&alias.project_id)
            .bind(&alias.alias)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(Conflict::Alias));
        }
        check_quota(
            &mut tx,
            sqlx::query_scalar(COUNT_ALIASES_OF_KEY)
                .bind(&alias.project_id)
                .bind(&alias.key_id),
            quotas.aliases_per_key,
            QuotaKind::AliasesPerKey,
        )
        .await?;
        sqlx::query(INSERT_ALIAS)
            .bind(&alias.project_id)
            .bind(&alias.alias)
            .bind(&alias.key_id)
            .bind(alias.created_ms)
            .bind(alias.updated_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_unique(e, Conflict::Alias))?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_aliases(
        &self,
        project_id: &str,
        key_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AliasRecord>> {
        let count = sqlx::query_scalar(COUNT_ALIASES)
            .bind(project_id)
            .bind(key_id);
        let list = sqlx::query_as::<_, AliasRow>(LIST_ALIASES)
            .bind(project_id)
            .bind(key_id)
            .bind(int(limit))
            .bind(int(offset));
        self.fetch_page::<_, AliasRecord>(count, list, offset).await
    }

    async fn delete_aliases(
        &self,
        project_id: &str,
        key_id: &str,
        aliases: &[String],
    ) -> Result<()> {
        let mut tx = self.begin_write(project_id).await?;
        require_id(&mut tx, KEY_EXISTS, project_id, key_id).await?;
        // A name listed twice is deleted once, not reported missing.
        for alias in aliases.iter().collect::<BTreeSet<_>>() {
            let deleted = sqlx::query(DELETE_ALIAS)
                .bind(project_id)
                .bind(key_id)
                .bind(alias)
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

    async fn associate_alias(
        &self,
        project_id: &str,
        alias: &str,
        target_key_id: &str,
        now: Millis,
        quotas: &Quotas,
    ) -> Result<AliasRecord> {
        let mut tx = self.begin_write(project_id).await?;
        let current = sqlx::query_as::<_, AliasRow>(SELECT_ALIAS)
            .bind(project_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?
            .map(AliasRecord::from)
            .ok_or(StoreError::NotFound)?;
        require_id(&mut tx, KEY_EXISTS, project_id, target_key_id).await?;
        // Re-pointing an alias at the key it already names adds nothing to
        // that key's count.
        if current.key_id != target_key_id {
            check_quota(
                &mut tx,
                sqlx::query_scalar(COUNT_ALIASES_OF_KEY)
                    .bind(project_id)
                    .bind(target_key_id),
                quotas.aliases_per_key,
                QuotaKind::AliasesPerKey,
            )
            .await?;
        }
        let row = sqlx::query_as::<_, AliasRow>(REPOINT_ALIAS)
            .bind(project_id)
            .bind(alias)
            .bind(target_key_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AliasRecord::from(row))
    }
}
