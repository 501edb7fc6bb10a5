//! The SQLite backend: one file that several processes (edges, keymeshctl)
//! may open at once.
//!
//! Durability and sharing come from the connection settings: WAL (readers
//! never block the writer), `synchronous=FULL` (a commit is on disk before
//! it returns, even in WAL mode), foreign keys on, and a 5 s busy timeout so
//! that a writer waits for another process's transaction instead of failing.
//!
//! SQLite has one writer at a time per file. A read-check-write transaction
//! therefore starts with `BEGIN IMMEDIATE`, which takes the write lock up
//! front (waiting through the busy timeout): a deferred `BEGIN` would take a
//! read snapshot first and then fail with `SQLITE_BUSY` on its first write
//! if another writer committed in between, and the busy handler cannot help
//! there. Holding the file's write lock also makes the lock per project that
//! [`crate::sql`] asks for.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::{Result, StoreError};

/// How long a statement waits for another connection's (or process's)
/// write lock before it reports `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes are serialised by the file lock anyway; a few connections let
/// reads proceed beside a writer.
const MAX_CONNECTIONS: u32 = 8;

/// How often `open` runs the migrations before giving up, beyond one try
/// per migration. Two processes opening a fresh file at once both see it
/// unmigrated; the loser's migration transaction fails and its retry finds
/// that migration in place (each migration is one transaction, so nothing is
/// half applied). Each lost race means another opener applied the migration
/// this one tried, so an opener loses at most once per migration: one attempt
/// per migration plus these always reach the end.
const MIGRATE_SPARE_ATTEMPTS: usize = 2;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A [`Store`](crate::Store) in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its directory when missing) and migrate
    /// the database at `url`: `sqlite://relative/path`, `sqlite:///abs/path`
    /// or `sqlite:path`.
    pub async fn open(url: &str) -> Result<Self> {
        let options = connect_options(url)?;
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Backend(sqlx::Error::Io(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        let attempts = MIGRATOR.migrations.len() + MIGRATE_SPARE_ATTEMPTS;
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&pool).await {
                Ok(()) => break,
                Err(e) if attempt < attempts => {
                    tracing::warn!(error = %e, attempt, "sqlite migration failed, retrying");
                    attempt += 1;
                }
                Err(e) => return Err(StoreError::Migrate(e)),
            }
        }
        Ok(Self { pool })
    }

    /// Close every connection (waiting for those in use), checkpointing the
    /// WAL when this is the last one open on the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction holding the file's write lock from its first statement.
    async fn begin_write(&self, _project_id: &str) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A deferred transaction: its reads share one WAL snapshot.
    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin().await?)
    }

    /// `instr(haystack, needle)`: 1-based position, 0 when absent; unlike
    /// SQLite's `LIKE` it is case-sensitive, as PostgreSQL's `strpos` is.
    const CONTAINS_FN: &'static str = "instr";

    /// `group_concat(text, separator)`: the stage names of a version in one
    /// column (NULL over no rows, as PostgreSQL's `string_agg`).
    const STAGES_AGG_FN: &'static str = "group_concat";
}

/// Parse `url` and apply the settings described in the module doc.
fn connect_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Overwrite deleted content, so that a purged key's wrapped material
        // does not linger in free pages of the file (older WAL frames hold
        // it until the next checkpoint reuses them).
        .pragma("secure_delete", "ON"))
}

/// The store type and sqlx database that `sql/repos/` is compiled against
/// here.
type SqlStore = SqliteStore;
type Db = Sqlite;

/// Every store trait implemented for [`SqliteStore`]: the files of
/// `sql/repos/`, compiled once per backend (see [`crate::sql`]).
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose: each copy is checked against its own sqlx database"
)]
#[path = "sql/repos/mod.rs"]
mod repos;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::path::Path;

    use super::connect_options;

    #[test]
    fn url_forms() {
        for (url, path) in [
            ("sqlite://data/keymesh.db", "data/keymesh.db"),
            (
                "sqlite:///var/lib/keymesh/keymesh.db",
                "/var/lib/keymesh/keymesh.db",
            ),
            ("sqlite:keymesh.db", "keymesh.db"),
        ] {
            let options = connect_options(url).unwrap();
            assert_eq!(options.get_filename(), Path::new(path), "{url}");
        }
    }
}
