//! [`KeyRepo`] over `keys` and `key_materials`: a key with its wrapped
//! material versions, compare-and-set state transitions, the purge of keys
//! past their deletion time (with their materials, aliases, tags and
//! grants) and a project's usage.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::common::{Purge, check_quota, select_id};
use super::grants::COUNT_GRANTS_OF_PROJECT;
use super::{Db, SqlStore};
use crate::model::{
    KeyFilter, KeyRecord, KeyState, Material, Millis, Page, QuotaKind, Quotas, Usage,
};
use crate::sql::rows::{KeyMaterialRow, KeyRow, MaterialRow, key_state};
use crate::sql::{self, int, key_columns, on_unique};
use crate::{Conflict, KeyRepo, Result, StoreError};

const KEY_ALIAS_TAKEN: &str = "SELECT key_id FROM keys WHERE project_id = $1 AND alias = $2";
const COUNT_CUSTOMER_KEYS: &str =
    "SELECT COUNT(*) FROM keys WHERE project_id = $1 AND NOT default_key";
const INSERT_KEY: &str = concat!(
    "INSERT INTO keys (",
    key_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
const INSERT_MATERIAL: &str = "INSERT INTO key_materials \
     (key_id, version, wrapping_key, wrapped, created_ms) VALUES ($1, $2, $3, $4, $5)";
const SELECT_KEY: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM keys WHERE project_id = $1 AND key_id = $2"
);
const SELECT_KEY_BY_ALIAS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM keys WHERE project_id = $1 AND alias = $2"
);
const SELECT_KEY_WITH_MATERIAL: &str = concat!(
    "SELECT ",
    key_columns!("k."),
    ", m.version AS m_version, m.wrapping_key AS m_wrapping_key, m.wrapped AS m_wrapped, \
     m.created_ms AS m_created_ms \
     FROM keys k LEFT JOIN key_materials m \
     ON m.key_id = k.key_id AND m.version = k.material_version \
     WHERE k.project_id = $1 AND k.key_id = $2"
);
const SELECT_MATERIAL: &str = "SELECT m.key_id, m.version, m.wrapping_key, \
     m.wrapped, m.created_ms FROM key_materials m JOIN keys k ON k.key_id = m.key_id \
     WHERE k.project_id = $1 AND m.key_id = $2 AND m.version = $3";
/// `$2..$4` are optional filters: NULL matches every row.
macro_rules! key_filter {
    () => {
        " FROM keys WHERE project_id = $1 AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR spec = $3) AND ($4 IS NULL OR enterprise_project_id = $4)"
    };
}
const COUNT_KEYS: &str = concat!("SELECT COUNT(*)", key_filter!());
const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    key_filter!(),
    " ORDER BY created_ms, key_id LIMIT $5 OFFSET $6"
);
const KEY_STATE: &str = "SELECT state FROM keys WHERE project_id = $1 AND key_id = $2";
/// Prefix of the compare-and-set; the caller appends `state IN (...)`.
const TRANSITION_HEAD: &str = "UPDATE keys SET state = ";
const RETURNING_KEY: &str = concat!(" RETURNING ", key_columns!());
const UPDATE_KEY_ALIAS: &str = concat!(
    "UPDATE keys SET alias = $3 WHERE project_id = $1 AND key_id = $2 RETURNING ",
    key_columns!()
);
const UPDATE_KEY_DESCRIPTION: &str = concat!(
    "UPDATE keys SET description = $3 WHERE project_id = $1 AND key_id = $2 RETURNING ",
    key_columns!()
);
const DUE_KEYS: &str = "SELECT key_id AS id, project_id FROM keys \
     WHERE state = $1 AND deletion_ms <= $2 ORDER BY deletion_ms, key_id";
/// Re-checks the condition under the lock: a concurrent purge or a cancelled
/// deletion leaves nothing to delete.
const PURGE_KEY: &str =
    "DELETE FROM keys WHERE key_id = $1 AND project_id = $2 AND state = $3 AND deletion_ms <= $4";
/// Run after `PURGE_KEY` in the same transaction. The foreign keys cascade
/// already; these make the destruction of the material independent of the
/// connection's `foreign_keys` setting.
const PURGE_CHILDREN: [&str; 4] = [
    "DELETE FROM key_materials WHERE key_id = $1",
    "DELETE FROM key_tags WHERE key_id = $1",
    "DELETE FROM aliases WHERE key_id = $1",
    "DELETE FROM grants WHERE key_id = $1",
];

const PURGE_KEYS: Purge = Purge {
    due: DUE_KEYS,
    claim: PURGE_KEY,
    rows: &PURGE_CHILDREN,
};

#[async_trait]
impl KeyRepo for SqlStore {
    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&Material>,
        quotas: &Quotas,
    ) -> Result<()> {
        let mut tx = self.begin_write(&key.project_id).await?;
        let taken = select_id(&mut tx, KEY_ALIAS_TAKEN, &key.project_id, &key.alias).await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(Conflict::KeyAlias));
        }
        if !key.default_key {
            check_quota(
                &mut tx,
                sqlx::query_scalar(COUNT_CUSTOMER_KEYS).bind(&key.project_id),
                quotas.keys_per_project,
                QuotaKind::Keys,
            )
            .await?;
        }
        // Every writer of `keys.alias` in this project holds the write lock,
        // so the alias check above still holds: a unique violation here can
        // only be the global key id.
        sqlx::query(INSERT_KEY)
            .bind(&key.key_id)
            .bind(&key.project_id)
            .bind(&key.alias)
            .bind(&key.description)
            .bind(&key.spec)
            .bind(&key.usage)
            .bind(&key.origin)
            .bind(i64::from(key.state.code()))
            .bind(key.default_key)
            .bind(key.created_ms)
            .bind(key.deletion_ms)
            .bind(sql::version(key.material_version))
            .bind(&key.enterprise_project_id)
            .bind(&key.keystore_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_unique(e, Conflict::KeyId))?;
        if let Some(material) = material {
            // Filed under `key.key_id` whatever `material.key_id` says: it can
            // belong to no other key.
            sqlx::query(INSERT_MATERIAL)
                .bind(&key.key_id)
                .bind(sql::version(material.version))
                .bind(&material.wrapping_key)
                .bind(material.wrapped.as_slice())
                .bind(material.created_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_key(&self, project_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        sqlx::query_as::<_, KeyRow>(SELECT_KEY)
            .bind(project_id)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?
            .map(KeyRecord::try_from)
            .transpose()
    }

    async fn get_key_with_material(
        &self,
        project_id: &str,
        key_id: &str,
    ) -> Result<Option<(KeyRecord, Option<Material>)>> {
        sqlx::query_as::<_, KeyMaterialRow>(SELECT_KEY_WITH_MATERIAL)
            .bind(project_id)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?
            .map(<(KeyRecord, Option<Material>)>::try_from)
            .transpose()
    }

    async fn get_material(
        &self,
        project_id: &str,
        key_id: &str,
        version: u32,
    ) -> Result<Option<Material>> {
        sqlx::query_as::<_, MaterialRow>(SELECT_MATERIAL)
            .bind(project_id)
            .bind(key_id)
            .bind(sql::version(version))
            .fetch_optional(&self.pool)
            .await?
            .map(Material::try_from)
            .transpose()
    }

    async fn find_key_by_alias(&self, project_id: &str, alias: &str) -> Result<Option<KeyRecord>> {
        sqlx::query_as::<_, KeyRow>(SELECT_KEY_BY_ALIAS)
            .bind(project_id)
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?
            .map(KeyRecord::try_from)
            .transpose()
    }

    async fn list_keys(
        &self,
        project_id: &str,
        filter: &KeyFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<KeyRecord>> {
        let state = filter.state.map(|s| i64::from(s.code()));
        let spec = filter.spec.as_deref();
        let eps = filter.enterprise_project_id.as_deref();
        let count = sqlx::query_scalar(COUNT_KEYS)
            .bind(project_id)
            .bind(state)
            .bind(spec)
            .bind(eps);
        let list = sqlx::query_as::<_, KeyRow>(LIST_KEYS)
            .bind(project_id)
            .bind(state)
            .bind(spec)
            .bind(eps)
            .bind(int(limit))
            .bind(int(offset));
        self.fetch_page::<_, KeyRecord>(count, list, offset).await
    }

    async fn transition(
        &self,
        project_id: &str,
        key_id: &str,
        from: &[KeyState],
        to: KeyState,
        deletion_ms: Option<Millis>,
    ) -> Result<KeyRecord> {
        // One UPDATE whose WHERE holds the expected states: the database
        // applies it atomically (PostgreSQL re-checks the WHERE after waiting
        // for a concurrent writer's row lock), so of N racing callers exactly
        // one sees its `from`.
        if !from.is_empty() {
            let mut qb = QueryBuilder::<Db>::new(TRANSITION_HEAD);
            qb.push_bind(i64::from(to.code()));
            qb.push(", deletion_ms = ");
            qb.push_bind(deletion_ms);
            qb.push(" WHERE project_id = ");
            qb.push_bind(project_id.to_owned());
            qb.push(" AND key_id = ");
            qb.push_bind(key_id.to_owned());
            qb.push(" AND state IN (");
            let mut states = qb.separated(", ");
            for state in from {
                states.push_bind(i64::from(state.code()));
            }
            states.push_unseparated(")");
            qb.push(RETURNING_KEY);
            let updated = qb
                .build_query_as::<KeyRow>()
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = updated {
                return KeyRecord::try_from(row);
            }
        }
        let current: Option<i64> = sqlx::query_scalar(KEY_STATE)
            .bind(project_id)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        match current {
            Some(code) => Err(StoreError::WrongState {
                current: key_state(code)?,
            }),
            None => Err(StoreError::NotFound),
        }
    }

    async fn update_key_alias(
        &self,
        project_id: &str,
        key_id: &str,
        alias: &str,
    ) -> Result<KeyRecord> {
        // Under the write lock: see `create_key`.
        let mut tx = self.begin_write(project_id).await?;
        let row = sqlx::query_as::<_, KeyRow>(UPDATE_KEY_ALIAS)
            .bind(project_id)
            .bind(key_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| on_unique(e, Conflict::KeyAlias))?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        KeyRecord::try_from(row)
    }

    async fn update_key_description(
        &self,
        project_id: &str,
        key_id: &str,
        description: &str,
    ) -> Result<KeyRecord> {
        let row = sqlx::query_as::<_, KeyRow>(UPDATE_KEY_DESCRIPTION)
            .bind(project_id)
            .bind(key_id)
            .bind(description)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        KeyRecord::try_from(row)
    }

    async fn purge_due_keys(&self, now: Millis) -> Result<Vec<String>> {
        let pending = i64::from(KeyState::PendingDeletion.code());
        self.purge_due(&PURGE_KEYS, pending, now).await
    }

    async fn usage(&self, project_id: &str) -> Result<Usage> {
        let mut tx = self.begin_read().await?;
        let keys: i64 = sqlx::query_scalar(COUNT_CUSTOMER_KEYS)
            .bind(project_id)
            .fetch_one(&mut *tx)
            .await?;
        let grants: i64 = sqlx::query_scalar(COUNT_GRANTS_OF_PROJECT)
            .bind(project_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Usage {
            keys: u64::try_from(keys).unwrap_or(0),
            grants: u64::try_from(grants).unwrap_or(0),
        })
    }
}
