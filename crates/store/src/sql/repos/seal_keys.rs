//! [`SealKeyRepo`] over the `seal_keys` table: the wrapped keys that seal
//! secrets stored at rest. The first key stored under a name wins.

use async_trait::async_trait;

use super::SqlStore;
use crate::model::SealKey;
use crate::sql::rows::SealKeyRow;
use crate::{Result, SealKeyRepo, StoreError};

const SELECT_SEAL_KEY: &str =
    "SELECT name, wrapping_key, wrapped, created_ms FROM seal_keys WHERE name = $1";
const INSERT_SEAL_KEY: &str = "INSERT INTO seal_keys (name, wrapping_key, wrapped, created_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING";

#[async_trait]
impl SealKeyRepo for SqlStore {
    async fn get_seal_key(&self, name: &str) -> Result<Option<SealKey>> {
        Ok(sqlx::query_as::<_, SealKeyRow>(SELECT_SEAL_KEY)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(SealKey::from))
    }

    async fn put_seal_key_if_missing(&self, key: &SealKey) -> Result<SealKey> {
        sqlx::query(INSERT_SEAL_KEY)
            .bind(&key.name)
            .bind(&key.wrapping_key)
            .bind(key.wrapped.as_slice())
            .bind(key.created_ms)
            .execute(&self.pool)
            .await?;
        // The first key stored wins; read back whichever it is.
        sqlx::query_as::<_, SealKeyRow>(SELECT_SEAL_KEY)
            .bind(&key.name)
            .fetch_one(&self.pool)
            .await
            .map(SealKey::from)
            .map_err(StoreError::from)
    }
}
