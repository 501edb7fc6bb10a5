//! The PostgreSQL backend, for deployments where several edges on several
//! hosts share one store.
//!
//! Read-check-write transactions (quota counts, unique-name checks) must not
//! interleave within a project, or two requests could both count one free
//! slot and both insert. We lock the project's row in `projects`
//! (`SELECT ... FOR UPDATE`, the row created on first use) at the start of
//! every such transaction, in READ COMMITTED. Chosen over SERIALIZABLE with
//! retries because a quota check is a `COUNT(*)`, and counting under
//! SERIALIZABLE turns every concurrent insert in the project into a
//! serialization failure that the caller must retry; the row lock makes the
//! writers of one project queue instead, never fail, and leaves other
//! projects untouched. Each transaction takes exactly one project lock and
//! takes it first, so these transactions cannot deadlock one another.
//!
//! Compare-and-set transitions need no lock: they are one `UPDATE` whose
//! `WHERE` PostgreSQL re-evaluates after waiting for a concurrent writer of
//! the same row.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::{Result, StoreError};

/// Per process; PostgreSQL's default server limit is 100 for all clients.
const MAX_CONNECTIONS: u32 = 10;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const LOCK_PROJECT: &str = "SELECT project_id FROM projects WHERE project_id = $1 FOR UPDATE";
const INSERT_PROJECT: &str =
    "INSERT INTO projects (project_id) VALUES ($1) ON CONFLICT (project_id) DO NOTHING";

/// A [`Store`](crate::Store) in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connect to and migrate the database at `url`
    /// (`postgres://user[:password]@host[:port]/database`). Concurrent
    /// openers are serialised by sqlx's migration advisory lock.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// Close every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A READ COMMITTED transaction holding `project_id`'s row lock.
    async fn begin_write(&self, project_id: &str) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query(LOCK_PROJECT)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            // First write of this project. A concurrent first writer makes
            // the INSERT wait for its commit and then do nothing; either way
            // the row exists for the lock that follows.
            sqlx::query(INSERT_PROJECT)
                .bind(project_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(LOCK_PROJECT)
                .bind(project_id)
                .fetch_one(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// One snapshot for all statements, so that a page and its total agree.
    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?)
    }

    /// `strpos(haystack, needle)`: 1-based position, 0 when absent.
    const CONTAINS_FN: &'static str = "strpos";

    /// `string_agg(text, separator)`: the stage names of a version in one
    /// column (NULL over no rows).
    const STAGES_AGG_FN: &'static str = "string_agg";
}

/// The store type and sqlx database that `sql/repos/` is compiled against
/// here.
type SqlStore = PostgresStore;
type Db = Postgres;

/// Every store trait implemented for [`PostgresStore`]: the files of
/// `sql/repos/`, compiled once per backend (see [`crate::sql`]).
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose: each copy is checked against its own sqlx database"
)]
#[path = "sql/repos/mod.rs"]
mod repos;
