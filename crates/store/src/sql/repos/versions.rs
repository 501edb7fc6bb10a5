//! [`SecretVersionRepo`] over `secret_versions` and `secret_stages`: the
//! versions of a secret (ids assigned by the store, the oldest stage-less
//! ones dropped past the quota), the stages pointing at them, and the CSMS
//! hot read of a secret with one version in one statement.

use std::collections::BTreeSet;

use async_trait::async_trait;

use super::common::{SECRET_ID_BY_NAME, quota, require_id, secret_state_error, select_id};
use super::{Db, SqlStore};
use crate::model::{
    Keyset, Millis, QuotaKind, STAGE_CURRENT, STAGE_PREVIOUS, SecretQuotas, SecretRecord,
    SecretState, SecretVersion, StageRecord,
};
use crate::sql::rows::{self, ClaimedVersion, SecretVersionRow, StageRow, VersionRow};
use crate::sql::{keyset, on_unique, prefixed, secret_columns};
use crate::{Conflict, Result, SecretVersionRepo, StoreError};

/// Version columns, `v` being `secret_versions` unless a prefix is given.
macro_rules! version_columns {
    () => {
        version_columns!("v.")
    };
    ($p:literal) => {
        prefixed!($p; secret_id, version_id, kms_key_id, ciphertext, created_ms, expire_ms)
    };
}
macro_rules! stage_columns {
    ($p:literal) => {
        prefixed!($p; secret_id, name, version_id, updated_ms)
    };
}

/// Claims the next version number of an ENABLED secret. Being an UPDATE,
/// it also write-locks the secret's row until the transaction ends, so a
/// concurrent state change cannot slip between this check and the insert.
const CLAIM_VERSION: &str = "UPDATE secrets SET next_version = next_version + 1 \
     WHERE project_id = $1 AND name = $2 AND state = $3 RETURNING secret_id, next_version";
const INSERT_VERSION: &str = "INSERT INTO secret_versions \
     (secret_id, version_id, seq, kms_key_id, ciphertext, created_ms, expire_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// `read_secret_version`, the CSMS hot read, is one statement (no
/// transaction, one round trip): the secret (`$1`, `$2`) LEFT JOINed with
/// one version, whose stage names a correlated subquery aggregates into
/// one comma-separated column (NULL when it has none). The aggregate
/// function differs by backend, so [`read_secret_version_sql`] assembles
/// the statement from these pieces around the backend's function name:
/// `HEAD`, the function, `FROM`, one of the version conditions, `WHERE`.
const READ_SECRET_VERSION_HEAD: &str = concat!(
    "SELECT ",
    secret_columns!("s."),
    ", v.version_id AS v_version_id, v.kms_key_id AS v_kms_key_id, \
     v.ciphertext AS v_ciphertext, v.created_ms AS v_created_ms, v.expire_ms AS v_expire_ms, \
     (SELECT "
);
const READ_SECRET_VERSION_FROM: &str = "(st.name, ',') FROM secret_stages st \
     WHERE st.secret_id = v.secret_id AND st.version_id = v.version_id) AS v_stages \
     FROM secrets s LEFT JOIN secret_versions v ON v.secret_id = s.secret_id AND ";
/// The newest version (highest `seq`): a lookup in the `(secret_id, seq)`
/// unique index.
const READ_LATEST_VERSION_ON: &str =
    "v.seq = (SELECT MAX(m.seq) FROM secret_versions m WHERE m.secret_id = s.secret_id)";
/// The version named `$3`.
const READ_VERSION_BY_ID_ON: &str = "v.version_id = $3";
const READ_SECRET_VERSION_WHERE: &str = " WHERE s.project_id = $1 AND s.name = $2";

/// The `read_secret_version` statement with `stages_agg_fn` (an aggregate
/// `f(text, separator)`) and `version_on` (one of the conditions above).
/// Built once per backend and condition (the callers keep it in a static).
fn read_secret_version_sql(stages_agg_fn: &str, version_on: &str) -> String {
    [
        READ_SECRET_VERSION_HEAD,
        stages_agg_fn,
        READ_SECRET_VERSION_FROM,
        version_on,
        READ_SECRET_VERSION_WHERE,
    ]
    .concat()
}

/// `read_secret_version`'s two statements with this backend's
/// stage aggregate, built on first use.
static READ_LATEST_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    read_secret_version_sql(SqlStore::STAGES_AGG_FN, READ_LATEST_VERSION_ON)
});
static READ_VERSION_BY_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    read_secret_version_sql(SqlStore::STAGES_AGG_FN, READ_VERSION_BY_ID_ON)
});

/// Newest first, strictly before `seq` `$3`.
const LIST_VERSIONS: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM secret_versions v WHERE v.secret_id = $1 AND v.seq < $2 \
     ORDER BY v.seq DESC LIMIT $3"
);
const ALL_VERSIONS: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM secret_versions v WHERE v.secret_id = $1 ORDER BY v.seq"
);
const VERSION_SEQ: &str =
    "SELECT seq FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
const COUNT_VERSIONS: &str = "SELECT COUNT(*) FROM secret_versions WHERE secret_id = $1";
/// The oldest versions holding no stage, except `$2` (the one being added).
const DROPPABLE_VERSIONS: &str = "SELECT v.version_id FROM secret_versions v \
     WHERE v.secret_id = $1 AND v.version_id <> $2 AND NOT EXISTS \
     (SELECT 1 FROM secret_stages st WHERE st.secret_id = v.secret_id \
     AND st.version_id = v.version_id) ORDER BY v.seq LIMIT $3";
const DELETE_VERSION: &str = "DELETE FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
const UPDATE_VERSION_EXPIRY: &str = concat!(
    "UPDATE secret_versions SET expire_ms = $3 WHERE secret_id = $1 AND version_id = $2 \
     RETURNING ",
    version_columns!("")
);
const STAGES_OF_SECRET: &str = concat!(
    "SELECT ",
    stage_columns!(""),
    " FROM secret_stages WHERE secret_id = $1 ORDER BY name"
);
const SELECT_STAGE: &str = concat!(
    "SELECT ",
    stage_columns!("st."),
    " FROM secret_stages st JOIN secrets s ON s.secret_id = st.secret_id \
     WHERE s.project_id = $1 AND s.name = $2 AND st.name = $3"
);
const UPSERT_STAGE: &str = "INSERT INTO secret_stages \
     (secret_id, name, version_id, updated_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (secret_id, name) DO UPDATE \
     SET version_id = excluded.version_id, updated_ms = excluded.updated_ms";
const DELETE_STAGE: &str = "DELETE FROM secret_stages WHERE secret_id = $1 AND name = $2";

/// Fills in the stages of `versions`, all of secret `secret_id`
/// (read from the project by the same transaction).
async fn attach_stages(
    conn: &mut <Db as sqlx::Database>::Connection,
    secret_id: &str,
    versions: &mut [SecretVersion],
) -> Result<()> {
    let stages = sqlx::query_as::<_, StageRow>(STAGES_OF_SECRET)
        .bind(secret_id)
        .fetch_all(conn)
        .await?;
    rows::attach_stages(versions, &stages);
    Ok(())
}

/// Point `stage` of `secret_id` at `version_id` (insert or move).
pub(super) async fn upsert_stage(
    conn: &mut <Db as sqlx::Database>::Connection,
    secret_id: &str,
    stage: &str,
    version_id: &str,
    updated_ms: i64,
) -> Result<()> {
    sqlx::query(UPSERT_STAGE)
        .bind(secret_id)
        .bind(stage)
        .bind(version_id)
        .bind(updated_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes `version` as `version_id`, number `seq`, of secret
/// `secret_id` (whatever the ids `version` carries).
pub(super) async fn insert_version(
    conn: &mut <Db as sqlx::Database>::Connection,
    secret_id: &str,
    version_id: &str,
    seq: i64,
    version: &SecretVersion,
) -> Result<()> {
    sqlx::query(INSERT_VERSION)
        .bind(secret_id)
        .bind(version_id)
        .bind(seq)
        .bind(&version.kms_key_id)
        .bind(version.ciphertext.as_slice())
        .bind(version.created_ms)
        .bind(version.expire_ms)
        .execute(conn)
        .await
        .map_err(|e| on_unique(e, Conflict::VersionId))?;
    Ok(())
}

#[async_trait]
impl SecretVersionRepo for SqlStore {
    async fn add_version(
        &self,
        project_id: &str,
        name: &str,
        version: &SecretVersion,
        stages: &[String],
        quotas: &SecretQuotas,
        now: Millis,
    ) -> Result<SecretVersion> {
        // The project lock orders concurrent adds (distinct ids, SYSCURRENT on
        // the last one); the claim below also locks the secret's row against
        // state changes.
        let mut tx = self.begin_write(project_id).await?;
        let claimed = sqlx::query_as::<_, ClaimedVersion>(CLAIM_VERSION)
            .bind(project_id)
            .bind(name)
            .bind(SecretState::Enabled.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(claimed) = claimed else {
            return Err(secret_state_error(&mut *tx, project_id, name).await);
        };
        let secret_id = claimed.secret_id;
        let n = claimed.next_version - 1;
        let version_id = format!("v{n}");

        let existing = sqlx::query_as::<_, StageRow>(STAGES_OF_SECRET)
            .bind(&secret_id)
            .fetch_all(&mut *tx)
            .await?;
        let requested: BTreeSet<&str> = stages.iter().map(String::as_str).collect();
        // The version losing SYSCURRENT becomes SYSPREVIOUS.
        let former_current = existing
            .iter()
            .find(|st| st.name == STAGE_CURRENT)
            .map(|st| st.version_id.clone())
            .filter(|_| requested.contains(STAGE_CURRENT));
        let mut names: BTreeSet<&str> = existing.iter().map(|st| st.name.as_str()).collect();
        names.extend(requested.iter().copied());
        if former_current.is_some() {
            names.insert(STAGE_PREVIOUS);
        }
        if names.len() > quota(quotas.stages_per_secret) {
            return Err(StoreError::Quota(QuotaKind::Stages));
        }

        insert_version(&mut tx, &secret_id, &version_id, n, version).await?;
        if let Some(former) = &former_current {
            upsert_stage(&mut tx, &secret_id, STAGE_PREVIOUS, former, now).await?;
        }
        // After the implicit SYSPREVIOUS, so that an explicit one wins.
        for stage in &requested {
            upsert_stage(&mut tx, &secret_id, stage, &version_id, now).await?;
        }

        // Versions that just lost their last stage count as stage-less; the
        // new version is never the one dropped.
        let count: i64 = sqlx::query_scalar(COUNT_VERSIONS)
            .bind(&secret_id)
            .fetch_one(&mut *tx)
            .await?;
        let excess = count.saturating_sub(i64::from(quotas.versions_per_secret));
        if excess > 0 {
            let droppable: Vec<String> = sqlx::query_scalar(DROPPABLE_VERSIONS)
                .bind(&secret_id)
                .bind(&version_id)
                .bind(excess)
                .fetch_all(&mut *tx)
                .await?;
            if i64::try_from(droppable.len()).unwrap_or(i64::MAX) < excess {
                return Err(StoreError::Quota(QuotaKind::Versions));
            }
            for dropped in &droppable {
                sqlx::query(DELETE_VERSION)
                    .bind(&secret_id)
                    .bind(dropped)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(SecretVersion {
            secret_id,
            version_id,
            kms_key_id: version.kms_key_id.clone(),
            ciphertext: version.ciphertext.clone(),
            created_ms: version.created_ms,
            expire_ms: version.expire_ms,
            stages: requested.into_iter().map(str::to_owned).collect(),
        })
    }

    async fn get_version(
        &self,
        project_id: &str,
        name: &str,
        version_id: Option<&str>,
    ) -> Result<Option<SecretVersion>> {
        // The hot read's one statement; the secret comes along.
        Ok(self
            .read_secret_version(project_id, name, version_id)
            .await?
            .and_then(|(_, version)| version))
    }

    async fn read_secret_version(
        &self,
        project_id: &str,
        name: &str,
        version_id: Option<&str>,
    ) -> Result<Option<(SecretRecord, Option<SecretVersion>)>> {
        // One statement: it sees one snapshot without a transaction, and costs
        // one round trip.
        let row = match version_id {
            Some(version_id) => {
                sqlx::query_as::<_, SecretVersionRow>(READ_VERSION_BY_ID.as_str())
                    .bind(project_id)
                    .bind(name)
                    .bind(version_id)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_as::<_, SecretVersionRow>(READ_LATEST_VERSION.as_str())
                    .bind(project_id)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.map(<(SecretRecord, Option<SecretVersion>)>::try_from)
            .transpose()
    }

    async fn list_versions(
        &self,
        project_id: &str,
        name: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Keyset<SecretVersion>> {
        let none = Keyset {
            items: Vec::new(),
            more: false,
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut tx = self.begin_read().await?;
        let secret_id = select_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        let Some(secret_id) = secret_id else {
            return Ok(none);
        };
        let before = match after {
            None => i64::MAX,
            Some(after) => {
                let seq: Option<i64> = sqlx::query_scalar(VERSION_SEQ)
                    .bind(&secret_id)
                    .bind(after)
                    .fetch_optional(&mut *tx)
                    .await?;
                // A marker that names no version (never did, or dropped since)
                // has no place in the order.
                match seq {
                    Some(seq) => seq,
                    None => return Ok(none),
                }
            }
        };
        let mut items: Vec<SecretVersion> = sqlx::query_as::<_, VersionRow>(LIST_VERSIONS)
            .bind(&secret_id)
            .bind(before)
            .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(SecretVersion::from)
            .collect();
        attach_stages(&mut tx, &secret_id, &mut items).await?;
        tx.commit().await?;
        Ok(keyset(items, limit))
    }

    async fn update_version_expiry(
        &self,
        project_id: &str,
        name: &str,
        version_id: &str,
        expire_ms: Option<Millis>,
    ) -> Result<SecretVersion> {
        let mut tx = self.begin_write(project_id).await?;
        let secret_id = require_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        let row = sqlx::query_as::<_, VersionRow>(UPDATE_VERSION_EXPIRY)
            .bind(&secret_id)
            .bind(version_id)
            .bind(expire_ms)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut versions = [SecretVersion::from(row)];
        attach_stages(&mut tx, &secret_id, &mut versions).await?;
        tx.commit().await?;
        let [version] = versions;
        Ok(version)
    }

    async fn all_versions(&self, project_id: &str, name: &str) -> Result<Vec<SecretVersion>> {
        let mut tx = self.begin_read().await?;
        let secret_id = select_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        let Some(secret_id) = secret_id else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<SecretVersion> = sqlx::query_as::<_, VersionRow>(ALL_VERSIONS)
            .bind(&secret_id)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(SecretVersion::from)
            .collect();
        attach_stages(&mut tx, &secret_id, &mut versions).await?;
        tx.commit().await?;
        Ok(versions)
    }

    async fn get_stage(
        &self,
        project_id: &str,
        name: &str,
        stage: &str,
    ) -> Result<Option<StageRecord>> {
        Ok(sqlx::query_as::<_, StageRow>(SELECT_STAGE)
            .bind(project_id)
            .bind(name)
            .bind(stage)
            .fetch_optional(&self.pool)
            .await?
            .map(StageRecord::from))
    }

    async fn put_stage(
        &self,
        project_id: &str,
        name: &str,
        stage: &str,
        version_id: &str,
        now: Millis,
        quotas: &SecretQuotas,
    ) -> Result<StageRecord> {
        let mut tx = self.begin_write(project_id).await?;
        let secret_id = require_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        let version: Option<i64> = sqlx::query_scalar(VERSION_SEQ)
            .bind(&secret_id)
            .bind(version_id)
            .fetch_optional(&mut *tx)
            .await?;
        if version.is_none() {
            return Err(StoreError::NotFound);
        }
        let existing = sqlx::query_as::<_, StageRow>(STAGES_OF_SECRET)
            .bind(&secret_id)
            .fetch_all(&mut *tx)
            .await?;
        // The version losing SYSCURRENT becomes SYSPREVIOUS, as in
        // add_version. Both moves are counted against the quota before either
        // is written, so a refusal moves nothing.
        let former_current = existing
            .iter()
            .find(|st| st.name == STAGE_CURRENT && st.version_id != version_id)
            .map(|st| st.version_id.clone())
            .filter(|_| stage == STAGE_CURRENT);
        let mut names: BTreeSet<&str> = existing.iter().map(|st| st.name.as_str()).collect();
        names.insert(stage);
        if former_current.is_some() {
            names.insert(STAGE_PREVIOUS);
        }
        if names.len() > quota(quotas.stages_per_secret) {
            return Err(StoreError::Quota(QuotaKind::Stages));
        }
        if let Some(former) = &former_current {
            upsert_stage(&mut tx, &secret_id, STAGE_PREVIOUS, former, now).await?;
        }
        upsert_stage(&mut tx, &secret_id, stage, version_id, now).await?;
        tx.commit().await?;
        Ok(StageRecord {
            secret_id,
            name: stage.to_owned(),
            version_id: version_id.to_owned(),
            updated_ms: now,
        })
    }

    async fn delete_stage(&self, project_id: &str, name: &str, stage: &str) -> Result<()> {
        let mut tx = self.begin_write(project_id).await?;
        let secret_id = require_id(&mut tx, SECRET_ID_BY_NAME, project_id, name).await?;
        let deleted = sqlx::query(DELETE_STAGE)
            .bind(&secret_id)
            .bind(stage)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}
