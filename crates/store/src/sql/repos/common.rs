//! What several repositories do alike: the lookups by which one aggregate
//! checks a reference to another's rows, quota checks, offset pages read
//! in one snapshot, and the purge of keys and secrets past their deletion
//! time.

use super::{Db, SqlStore};
use crate::model::{Millis, Page, QuotaKind};
use crate::sql::page;
use crate::sql::rows::{DueRow, secret_state};
use crate::{Result, StoreError};

/// Key `$2` of project `$1`, if it is there.
pub(super) const KEY_EXISTS: &str = "SELECT key_id FROM keys WHERE project_id = $1 AND key_id = $2";
/// The id of the secret named `$2` in project `$1`, if it is there.
pub(super) const SECRET_ID_BY_NAME: &str =
    "SELECT secret_id FROM secrets WHERE project_id = $1 AND name = $2";
/// Secret `$2` of project `$1`, if it is there.
pub(super) const SECRET_EXISTS: &str =
    "SELECT secret_id FROM secrets WHERE project_id = $1 AND secret_id = $2";
const SECRET_STATE: &str = "SELECT state FROM secrets WHERE project_id = $1 AND name = $2";

/// Bind arguments of this backend's statements.
pub(super) type Args = <Db as sqlx::Database>::Arguments;

/// The id that `statement` selects for `($1, $2)`, if any: whether a
/// key or secret exists in a project, or a name is taken.
pub(super) async fn select_id(
    conn: &mut <Db as sqlx::Database>::Connection,
    statement: &'static str,
    project_id: &str,
    lookup: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(statement)
        .bind(project_id)
        .bind(lookup)
        .fetch_optional(conn)
        .await?)
}

/// `select_id`, `NotFound` when there is none.
pub(super) async fn require_id(
    conn: &mut <Db as sqlx::Database>::Connection,
    statement: &'static str,
    project_id: &str,
    lookup: &str,
) -> Result<String> {
    select_id(conn, statement, project_id, lookup)
        .await?
        .ok_or(StoreError::NotFound)
}

/// `Quota(kind)` when the rows that `count` counts already fill
/// `limit` (one more would exceed it).
pub(super) async fn check_quota(
    conn: &mut <Db as sqlx::Database>::Connection,
    count: sqlx::query::QueryScalar<'_, Db, i64, Args>,
    limit: u32,
    kind: QuotaKind,
) -> Result<()> {
    if count.fetch_one(conn).await? >= i64::from(limit) {
        return Err(StoreError::Quota(kind));
    }
    Ok(())
}

/// The error of a secret compare-and-set that matched no row:
/// `WrongSecretState` with the state found, or `NotFound`.
pub(super) async fn secret_state_error<'c, E>(conn: E, project_id: &str, name: &str) -> StoreError
where
    E: sqlx::Executor<'c, Database = Db>,
{
    let current: std::result::Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar(SECRET_STATE)
            .bind(project_id)
            .bind(name)
            .fetch_optional(conn)
            .await;
    match current {
        Ok(Some(state)) => match secret_state(&state) {
            Ok(current) => StoreError::WrongSecretState { current },
            Err(e) => e.into(),
        },
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

/// Quotas as counts comparable with `len()`.
pub(super) fn quota(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The statements of one purge (keys or secrets): one implementation
/// ([`SqlStore::purge_due`]) purges both.
pub(super) struct Purge {
    /// `DueRow`s in state `$1` whose deletion time is at or before `$2`.
    pub(super) due: &'static str,
    /// Re-checks `(id $1, project $2, state $3, time $4)` under the project's
    /// write lock: 0 rows when there is nothing (left) to purge.
    pub(super) claim: &'static str,
    /// Then each of these, bound to the id.
    pub(super) rows: &'static [&'static str],
}

impl SqlStore {
    /// An offset page in one snapshot: `count` gives the total over all pages,
    /// `list` the rows (decoded from `R`) at `offset`.
    pub(super) async fn fetch_page<R, T>(
        &self,
        count: sqlx::query::QueryScalar<'_, Db, i64, Args>,
        list: sqlx::query::QueryAs<'_, Db, R, Args>,
        offset: u64,
    ) -> Result<Page<T>>
    where
        R: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row> + Send + Unpin,
        T: TryFrom<R>,
        StoreError: From<T::Error>,
    {
        let mut tx = self.begin_read().await?;
        let total = count.fetch_one(&mut *tx).await?;
        let rows = list.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let items = rows
            .into_iter()
            .map(|row| T::try_from(row).map_err(StoreError::from))
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, offset, total))
    }

    /// Deletes each row of `purge.due` for `(pending, now)` with its children,
    /// one transaction each; returns the ids this call deleted.
    pub(super) async fn purge_due<P>(
        &self,
        purge: &Purge,
        pending: P,
        now: Millis,
    ) -> Result<Vec<String>>
    where
        P: for<'q> sqlx::Encode<'q, Db> + sqlx::Type<Db> + Copy + Send + Sync,
    {
        let due = sqlx::query_as::<_, DueRow>(purge.due)
            .bind(pending)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let mut purged = Vec::with_capacity(due.len());
        for row in due {
            let mut tx = self.begin_write(&row.project_id).await?;
            // Another edge may have purged it, or the deletion may have been
            // cancelled, since the scan: the claim re-checks under the lock,
            // and only the caller that claimed the row reports it.
            let claimed = sqlx::query(purge.claim)
                .bind(&row.id)
                .bind(&row.project_id)
                .bind(pending)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if claimed == 0 {
                continue;
            }
            for &statement in purge.rows {
                sqlx::query(statement)
                    .bind(&row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            purged.push(row.id);
        }
        Ok(purged)
    }
}
