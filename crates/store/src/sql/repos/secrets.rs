//! [`SecretRepo`] over the `secrets` table: a secret's metadata and state,
//! its creation with all its versions and stages (a restore brings many),
//! and the purge of secrets past their scheduled deletion.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::common::{
    Purge, SECRET_ID_BY_NAME, check_quota, require_id, secret_state_error, select_id,
};
use super::versions::{insert_version, upsert_stage};
use super::{Db, SqlStore};
use crate::model::{
    Keyset, Millis, QuotaKind, SecretQuotas, SecretRecord, SecretState, SecretVersion, StageRecord,
};
use crate::sql::rows::SecretRow;
use crate::sql::{first_free_version, keyset, secret_columns, string_json, strings_json};
use crate::{Conflict, Result, SecretRepo, StoreError};

const COUNT_SECRETS: &str = "SELECT COUNT(*) FROM secrets WHERE project_id = $1";
const INSERT_SECRET: &str = concat!(
    "INSERT INTO secrets (",
    secret_columns!(),
    ", next_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17)"
);
const SELECT_SECRET: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = $1 AND name = $2"
);
const SELECT_SECRET_BY_ID: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = $1 AND secret_id = $2"
);
/// The caller appends the optional `name > marker` and event filters, then
/// [`LIST_SECRETS_ORDER`] and the limit.
const LIST_SECRETS_HEAD: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = "
);
const LIST_SECRETS_ORDER: &str = " ORDER BY name LIMIT ";
const UPDATE_SECRET: &str = concat!(
    "UPDATE secrets SET kms_key_id = $3, description = $4, auto_rotation = $5, \
     rotation_period = $6, rotation_config = $7, event_subscriptions = $8, \
     rotation_func_urn = $9, updated_ms = $10 WHERE project_id = $1 AND name = $2 RETURNING ",
    secret_columns!()
);
/// Prefix of the compare-and-set; the caller appends the rest.
const SECRET_TRANSITION_HEAD: &str = "UPDATE secrets SET state = ";
const RETURNING_SECRET: &str = concat!(" RETURNING ", secret_columns!());
/// Children first, then the secret: correct whatever the connection's
/// foreign-key setting (stages before the versions they reference).
const DELETE_SECRET_ROWS: [&str; 4] = [
    "DELETE FROM secret_stages WHERE secret_id = $1",
    "DELETE FROM secret_tags WHERE secret_id = $1",
    "DELETE FROM secret_versions WHERE secret_id = $1",
    "DELETE FROM secrets WHERE secret_id = $1",
];
const DUE_SECRETS: &str = "SELECT secret_id AS id, project_id FROM secrets \
     WHERE state = $1 AND scheduled_delete_ms <= $2 ORDER BY scheduled_delete_ms, secret_id";
/// Re-checks the purge condition under the row lock (a no-op write, which
/// PostgreSQL re-evaluates after a concurrent writer commits): a concurrent
/// purge or a cancelled deletion leaves nothing to purge.
const CLAIM_PURGE: &str = "UPDATE secrets SET next_version = next_version \
     WHERE secret_id = $1 AND project_id = $2 AND state = $3 AND scheduled_delete_ms <= $4";

const PURGE_SECRETS: Purge = Purge {
    due: DUE_SECRETS,
    claim: CLAIM_PURGE,
    rows: &DELETE_SECRET_ROWS,
};

#[async_trait]
impl SecretRepo for SqlStore {
    async fn create_secret(
        &self,
        secret: &SecretRecord,
        versions: &[SecretVersion],
        stages: &[StageRecord],
        quotas: &SecretQuotas,
    ) -> Result<()> {
        let events = strings_json(&secret.event_subscriptions)?;
        // A stage must name one of the versions being written; the foreign key
        // would refuse it too, as an untyped `Backend` error.
        if stages
            .iter()
            .any(|st| !versions.iter().any(|v| v.version_id == st.version_id))
        {
            return Err(StoreError::NotFound);
        }
        let mut tx = self.begin_write(&secret.project_id).await?;
        let taken = select_id(&mut tx, SECRET_ID_BY_NAME, &secret.project_id, &secret.name).await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(Conflict::SecretName));
        }
        check_quota(
            &mut tx,
            sqlx::query_scalar(COUNT_SECRETS).bind(&secret.project_id),
            quotas.secrets_per_project,
            QuotaKind::Secrets,
        )
        .await?;
        // The name was checked under the write lock: a unique violation here
        // is the global secret id (random UUID), which has no `Conflict` kind
        // and surfaces as `Backend`.
        sqlx::query(INSERT_SECRET)
            .bind(&secret.secret_id)
            .bind(&secret.project_id)
            .bind(&secret.name)
            .bind(secret.state.as_str())
            .bind(&secret.kms_key_id)
            .bind(&secret.description)
            .bind(&secret.secret_type)
            .bind(secret.auto_rotation)
            .bind(&secret.rotation_period)
            .bind(&secret.rotation_config)
            .bind(events)
            .bind(&secret.enterprise_project_id)
            .bind(&secret.rotation_func_urn)
            .bind(secret.created_ms)
            .bind(secret.updated_ms)
            .bind(secret.scheduled_delete_ms)
            .bind(first_free_version(versions))
            .execute(&mut *tx)
            .await?;
        // Children are filed under `secret.secret_id` whatever their own
        // `secret_id` says.
        for (seq, version) in (1i64..).zip(versions) {
            insert_version(
                &mut tx,
                &secret.secret_id,
                &version.version_id,
                seq,
                version,
            )
            .await?;
        }
        for stage in stages {
            upsert_stage(
                &mut tx,
                &secret.secret_id,
                &stage.name,
                &stage.version_id,
                stage.updated_ms,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_secret(&self, project_id: &str, name: &str) -> Result<Option<SecretRecord>> {
        sqlx::query_as::<_, SecretRow>(SELECT_SECRET)
            .bind(project_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(SecretRecord::try_from)
            .transpose()
    }

    async fn get_secret_by_id(
        &self,
        project_id: &str,
        secret_id: &str,
    ) -> Result<Option<SecretRecord>> {
        sqlx::query_as::<_, SecretRow>(SELECT_SECRET_BY_ID)
            .bind(project_id)
            .bind(secret_id)
            .fetch_optional(&self.pool)
            .await?
            .map(SecretRecord::try_from)
            .transpose()
    }

    async fn list_secrets(
        &self,
        project_id: &str,
        after: Option<&str>,
        limit: u64,
        event_name: Option<&str>,
    ) -> Result<Keyset<SecretRecord>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        // One row past the page tells whether more follow.
        let batch = limit.saturating_add(1);
        // The event filter runs in SQL as a substring test on the JSON text
        // (the quoted name: a superset of the matches), then exactly on the
        // decoded list; rows the exact test drops are made up by fetching
        // further batches.
        let needle = event_name.map(string_json).transpose()?;
        let mut cursor = after.map(str::to_owned);
        let mut items = Vec::new();
        let mut tx = self.begin_read().await?;
        loop {
            let mut qb = QueryBuilder::<Db>::new(LIST_SECRETS_HEAD);
            qb.push_bind(project_id.to_owned());
            if let Some(cursor) = &cursor {
                qb.push(" AND name > ");
                qb.push_bind(cursor.clone());
            }
            if let Some(needle) = &needle {
                qb.push(" AND ");
                qb.push(SqlStore::CONTAINS_FN);
                qb.push("(event_subscriptions, ");
                qb.push_bind(needle.clone());
                qb.push(") > 0");
            }
            qb.push(LIST_SECRETS_ORDER);
            qb.push_bind(i64::try_from(batch).unwrap_or(i64::MAX));
            let rows = qb.build_query_as::<SecretRow>().fetch_all(&mut *tx).await?;
            let fetched = rows.len();
            for row in rows {
                let secret = SecretRecord::try_from(row)?;
                cursor = Some(secret.name.clone());
                let wanted = event_name
                    .is_none_or(|event| secret.event_subscriptions.iter().any(|e| e == event));
                if wanted {
                    items.push(secret);
                }
            }
            if items.len() > limit || fetched < batch {
                break;
            }
        }
        tx.commit().await?;
        Ok(keyset(items, limit))
    }

    async fn update_secret(&self, secret: &SecretRecord) -> Result<SecretRecord> {
        let events = strings_json(&secret.event_subscriptions)?;
        let row = sqlx::query_as::<_, SecretRow>(UPDATE_SECRET)
            .bind(&secret.project_id)
            .bind(&secret.name)
            .bind(&secret.kms_key_id)
            .bind(&secret.description)
            .bind(secret.auto_rotation)
            .bind(&secret.rotation_period)
            .bind(&secret.rotation_config)
            .bind(events)
            .bind(&secret.rotation_func_urn)
            .bind(secret.updated_ms)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        SecretRecord::try_from(row)
    }

    async fn set_secret_state(
        &self,
        project_id: &str,
        name: &str,
        from: &[SecretState],
        to: SecretState,
        scheduled_delete_ms: Option<Millis>,
        now: Millis,
    ) -> Result<SecretRecord> {
        // One UPDATE with the expected states in its WHERE, as `transition`
        // does for keys.
        if !from.is_empty() {
            let mut qb = QueryBuilder::<Db>::new(SECRET_TRANSITION_HEAD);
            qb.push_bind(to.as_str());
            qb.push(", scheduled_delete_ms = ");
            qb.push_bind(scheduled_delete_ms);
            qb.push(", updated_ms = ");
            qb.push_bind(now);
            qb.push(" WHERE project_id = ");
            qb.push_bind(project_id.to_owned());
            qb.push(" AND name = ");
            qb.push_bind(name.to_owned());
            qb.push(" AND state IN (");
            let mut states = qb.separated(", ");
            for state in from {
                states.push_bind(state.as_str());
            }
            states.push_unseparated(")");
            qb.push(RETURNING_SECRET);
            let updated = qb
                .build_query_as::<SecretRow>()
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = updated {
                return SecretRecord::try_from(row);
            }
        }
        Err(secret_state_error(&self.pool, project_id, name).await)
    }

    async fn delete_secret(&self, project_id: &str, name: &str) -> Result<()> {
        let mut tx = self.begin_write(project_id).await?;
        let secret_id = require_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        for statement in DELETE_SECRET_ROWS {
            sqlx::query(statement)
                .bind(&secret_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_due_secrets(&self, now: Millis) -> Result<Vec<String>> {
        let pending = SecretState::PendingDelete.as_str();
        self.purge_due(&PURGE_SECRETS, pending, now).await
    }
}
