//! [`GrantRepo`] over the `grants` table: permissions on a key given to
//! another principal, counted per key and per project.

use async_trait::async_trait;

use super::SqlStore;
use super::common::{KEY_EXISTS, check_quota, require_id};
use crate::model::{GrantRecord, Page, QuotaKind, Quotas};
use crate::sql::rows::GrantRow;
use crate::sql::{int, page, strings_json};
use crate::{GrantRepo, Result, StoreError};

macro_rules! grant_columns {
    () => {
        "grant_id, project_id, key_id, name, grantee_principal, grantee_principal_type, \
         operations, issuing_principal, retiring_principal, created_ms"
    };
}

const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants (",
    grant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);
const COUNT_GRANTS_OF_KEY: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1 AND key_id = $2";
pub(super) const COUNT_GRANTS_OF_PROJECT: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1";
const LIST_GRANTS_OF_KEY: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND key_id = $2 \
     ORDER BY created_ms, grant_id LIMIT $3 OFFSET $4"
);
const SELECT_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND grant_id = $2"
);
const DELETE_GRANT: &str =
    "DELETE FROM grants WHERE project_id = $1 AND key_id = $2 AND grant_id = $3";
const GRANT_EXISTS: &str = "SELECT grant_id FROM grants WHERE project_id = $1 AND grant_id = $2";
const COUNT_RETIRABLE: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1 AND retiring_principal = $2";
const LIST_RETIRABLE: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND retiring_principal = $2 \
     ORDER BY created_ms, grant_id LIMIT $3 OFFSET $4"
);

#[async_trait]
impl GrantRepo for SqlStore {
    async fn create_grant(&self, grant: &GrantRecord, quotas: &Quotas) -> Result<()> {
        let operations = strings_json(&grant.operations)?;
        let mut tx = self.begin_write(&grant.project_id).await?;
        require_id(&mut tx, KEY_EXISTS, &grant.project_id, &grant.key_id).await?;
        check_quota(
            &mut tx,
            sqlx::query_scalar(COUNT_GRANTS_OF_KEY)
                .bind(&grant.project_id)
                .bind(&grant.key_id),
            quotas.grants_per_key,
            QuotaKind::GrantsPerKey,
        )
        .await?;
        check_quota(
            &mut tx,
            sqlx::query_scalar(COUNT_GRANTS_OF_PROJECT).bind(&grant.project_id),
            quotas.grants_per_project,
            QuotaKind::GrantsPerProject,
        )
        .await?;
        // A duplicate grant id (random 256 bits) has no `Conflict` kind: it
        // surfaces as `Backend`.
        sqlx::query(INSERT_GRANT)
            .bind(&grant.grant_id)
            .bind(&grant.project_id)
            .bind(&grant.key_id)
            .bind(&grant.name)
            .bind(&grant.grantee_principal)
            .bind(&grant.grantee_principal_type)
            .bind(operations)
            .bind(&grant.issuing_principal)
            .bind(&grant.retiring_principal)
            .bind(grant.created_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_grants(
        &self,
        project_id: &str,
        key_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>> {
        let count = sqlx::query_scalar(COUNT_GRANTS_OF_KEY)
            .bind(project_id)
            .bind(key_id);
        let list = sqlx::query_as::<_, GrantRow>(LIST_GRANTS_OF_KEY)
            .bind(project_id)
            .bind(key_id)
            .bind(int(limit))
            .bind(int(offset));
        self.fetch_page::<_, GrantRecord>(count, list, offset).await
    }

    async fn get_grant(&self, project_id: &str, grant_id: &str) -> Result<Option<GrantRecord>> {
        sqlx::query_as::<_, GrantRow>(SELECT_GRANT)
            .bind(project_id)
            .bind(grant_id)
            .fetch_optional(&self.pool)
            .await?
            .map(GrantRecord::try_from)
            .transpose()
    }

    async fn delete_grant(&self, project_id: &str, key_id: &str, grant_id: &str) -> Result<()> {
        let deleted = sqlx::query(DELETE_GRANT)
            .bind(project_id)
            .bind(key_id)
            .bind(grant_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted > 0 {
            return Ok(());
        }
        let exists = sqlx::query(GRANT_EXISTS)
            .bind(project_id)
            .bind(grant_id)
            .fetch_optional(&self.pool)
            .await?;
        match exists {
            Some(_) => Err(StoreError::GrantKeyMismatch),
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_retirable_grants(
        &self,
        project_id: &str,
        principal: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>> {
        // "" marks grants without a retiring principal: nobody may retire
        // those by naming the empty principal.
        if principal.is_empty() {
            return Ok(page(Vec::new(), offset, 0));
        }
        let count = sqlx::query_scalar(COUNT_RETIRABLE)
            .bind(project_id)
            .bind(principal);
        let list = sqlx::query_as::<_, GrantRow>(LIST_RETIRABLE)
            .bind(project_id)
            .bind(principal)
            .bind(int(limit))
            .bind(int(offset));
        self.fetch_page::<_, GrantRecord>(count, list, offset).await
    }
}
