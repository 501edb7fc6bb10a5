//! [`DomainKeys`] over the `domain_keys` table (migration 0004): the check
//! value of each HSM domain key the stored material is wrapped under, and
//! how much material hangs on it.

use async_trait::async_trait;

use super::SqlStore;
use crate::domain_keys::{DomainKeyCheck, DomainKeys};
use crate::model::Millis;
use crate::sql::rows::{CorruptRow, DomainKeyRow};
use crate::{Result, StoreError};

const SELECT_DOMAIN_KEY: &str = "SELECT label, kcv, recorded_ms FROM domain_keys WHERE label = $1";
const INSERT_DOMAIN_KEY: &str = "INSERT INTO domain_keys (label, kcv, recorded_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (label) DO NOTHING";
const UPSERT_DOMAIN_KEY: &str = "INSERT INTO domain_keys (label, kcv, recorded_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (label) DO UPDATE SET kcv = $2, recorded_ms = $3";
const COUNT_WRAPPED_UNDER: &str = "SELECT COUNT(*) FROM key_materials WHERE wrapping_key = $1";

#[async_trait]
impl DomainKeys for SqlStore {
    async fn domain_key_check(&self, label: &str) -> Result<Option<DomainKeyCheck>> {
        Ok(sqlx::query_as::<_, DomainKeyRow>(SELECT_DOMAIN_KEY)
            .bind(label)
            .fetch_optional(&self.pool)
            .await?
            .map(Into::into))
    }

    async fn record_domain_key_check(
        &self,
        label: &str,
        kcv: &str,
        now: Millis,
    ) -> Result<DomainKeyCheck> {
        sqlx::query(INSERT_DOMAIN_KEY)
            .bind(label)
            .bind(kcv)
            .bind(now)
            .execute(&self.pool)
            .await?;
        // Rows are never deleted: the insert or an earlier one holds.
        Ok(sqlx::query_as::<_, DomainKeyRow>(SELECT_DOMAIN_KEY)
            .bind(label)
            .fetch_one(&self.pool)
            .await?
            .into())
    }

    async fn replace_domain_key_check(&self, label: &str, kcv: &str, now: Millis) -> Result<()> {
        sqlx::query(UPSERT_DOMAIN_KEY)
            .bind(label)
            .bind(kcv)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn wrapped_under(&self, label: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(COUNT_WRAPPED_UNDER)
            .bind(label)
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(n)
            .map_err(|_| StoreError::Backend(sqlx::Error::Decode(Box::new(CorruptRow::OutOfRange))))
    }
}
