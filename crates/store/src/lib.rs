//! keymesh durable store.
//!
//! One [`Store`] trait, two backends chosen by URL: SQLite (`sqlite://path`,
//! the embedded default: one file, WAL, `synchronous=FULL` so that a commit
//! survives a crash) and PostgreSQL (`postgres://...`). Both run the same
//! migrations and pass the same conformance suite (`tests/conformance.rs`).
//!
//! Rules every backend keeps:
//! * every call is scoped by `project_id`: a key, alias, tag or grant of
//!   another project is reported exactly like a missing one;
//! * multi-row changes run in one transaction; state transitions are
//!   compare-and-set (no lost updates under concurrent requests);
//! * quotas and unique names are enforced inside the writing transaction;
//! * the clock is an argument (`now: Millis`), never read inside.

pub mod model;
mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
pub use model::*;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key, alias or grant does not exist in this project.
    #[error("not found")]
    NotFound,
    /// A unique name is taken.
    #[error("conflict: {0:?}")]
    Conflict(Conflict),
    /// A compare-and-set transition found the key in another state.
    #[error("key is in state {current:?}")]
    WrongState { current: KeyState },
    /// A quota would be exceeded.
    #[error("quota exceeded: {0:?}")]
    Quota(QuotaKind),
    /// A grant exists but belongs to another key.
    #[error("grant belongs to another key")]
    GrantKeyMismatch,
    /// The database failed or is unreachable.
    #[error("database error")]
    Backend(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A URL that is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported store URL scheme (use sqlite:// or postgres://)")]
    UnsupportedUrl,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The durable store. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---- accounts -------------------------------------------------------
    /// `Conflict(AccessKey)` when the access key exists.
    async fn create_account(&self, account: &Account) -> Result<()>;
    async fn get_account(&self, access_key: &str) -> Result<Option<Account>>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// `NotFound` when absent.
    async fn delete_account(&self, access_key: &str) -> Result<()>;

    // ---- keys -----------------------------------------------------------
    /// Insert a key and (when given) its first material version, in one
    /// transaction. `Quota(Keys)` past `quotas.keys_per_project` (default
    /// keys not counted), `Conflict(KeyAlias)` when the alias is taken.
    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&Material>,
        quotas: &Quotas,
    ) -> Result<()>;
    async fn get_key(&self, project_id: &str, key_id: &str) -> Result<Option<KeyRecord>>;
    /// The key and its current material (`material_version`), one query:
    /// the encrypt hot path.
    async fn get_key_with_material(
        &self,
        project_id: &str,
        key_id: &str,
    ) -> Result<Option<(KeyRecord, Option<Material>)>>;
    /// A specific material version (decrypt of an older ciphertext).
    async fn get_material(
        &self,
        project_id: &str,
        key_id: &str,
        version: u32,
    ) -> Result<Option<Material>>;
    /// The key whose `key_alias` attribute is `alias`.
    async fn find_key_by_alias(&self, project_id: &str, alias: &str) -> Result<Option<KeyRecord>>;
    /// Ordered by creation time then key id; offset pagination.
    async fn list_keys(
        &self,
        project_id: &str,
        filter: &KeyFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<KeyRecord>>;
    /// Compare-and-set: move the key to `to` only if its state is one of
    /// `from`; sets `deletion_ms` (cleared when `None`). Returns the updated
    /// record; `WrongState { current }` otherwise; `NotFound`.
    async fn transition(
        &self,
        project_id: &str,
        key_id: &str,
        from: &[KeyState],
        to: KeyState,
        deletion_ms: Option<Millis>,
    ) -> Result<KeyRecord>;
    /// `Conflict(KeyAlias)`, `NotFound`. Returns the updated record.
    async fn update_key_alias(
        &self,
        project_id: &str,
        key_id: &str,
        alias: &str,
    ) -> Result<KeyRecord>;
    async fn update_key_description(
        &self,
        project_id: &str,
        key_id: &str,
        description: &str,
    ) -> Result<KeyRecord>;
    /// Destroy every key pending deletion whose `deletion_ms <= now`: its
    /// materials, aliases, tags and grants go with it, in one transaction
    /// per key. Returns the destroyed key ids. Safe to run concurrently from
    /// several edges.
    async fn purge_due_keys(&self, now: Millis) -> Result<Vec<String>>;
    async fn usage(&self, project_id: &str) -> Result<Usage>;

    // ---- alias resources -------------------------------------------------
    /// `NotFound` (key), `Conflict(Alias)`, `Quota(AliasesPerKey)`.
    async fn create_alias(&self, alias: &AliasRecord, quotas: &Quotas) -> Result<()>;
    /// Ordered by alias name; offset pagination; `key_id` filters.
    async fn list_aliases(
        &self,
        project_id: &str,
        key_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AliasRecord>>;
    /// Delete all of `aliases` of `key_id` or none (`NotFound` if one is not
    /// an alias of that key).
    async fn delete_aliases(
        &self,
        project_id: &str,
        key_id: &str,
        aliases: &[String],
    ) -> Result<()>;
    /// Re-point an alias; `NotFound` (alias or target key),
    /// `Quota(AliasesPerKey)` on the target.
    async fn associate_alias(
        &self,
        project_id: &str,
        alias: &str,
        target_key_id: &str,
        now: Millis,
        quotas: &Quotas,
    ) -> Result<AliasRecord>;

    // ---- tags -------------------------------------------------------------
    /// Sorted by tag key. `NotFound` (key).
    async fn key_tags(&self, project_id: &str, key_id: &str) -> Result<Vec<Tag>>;
    /// Upsert (a tag key set again takes the new value), all or nothing;
    /// `Quota(TagsPerKey)` when the key would end with too many; `NotFound`.
    async fn put_tags(
        &self,
        project_id: &str,
        key_id: &str,
        tags: &[Tag],
        quotas: &Quotas,
    ) -> Result<()>;
    /// Delete these tag keys, all or nothing: `NotFound` if the key or any
    /// tag key is missing.
    async fn delete_tags(&self, project_id: &str, key_id: &str, tag_keys: &[String]) -> Result<()>;
    /// Every tag key used in the project with its distinct values, sorted.
    async fn project_tags(&self, project_id: &str) -> Result<Vec<(String, Vec<String>)>>;
    /// Keys matching `filter` (see [`TagFilter`]) with their tags, ordered by
    /// creation then key id, and the total count.
    async fn find_keys_by_tags(
        &self,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(KeyRecord, Vec<Tag>)>>;

    // ---- grants -------------------------------------------------------------
    /// `NotFound` (key), `Quota(GrantsPerKey | GrantsPerProject)`.
    async fn create_grant(&self, grant: &GrantRecord, quotas: &Quotas) -> Result<()>;
    /// Grants of one key, ordered by creation then id.
    async fn list_grants(
        &self,
        project_id: &str,
        key_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>>;
    async fn get_grant(&self, project_id: &str, grant_id: &str) -> Result<Option<GrantRecord>>;
    /// `NotFound`, `GrantKeyMismatch` when the grant is another key's.
    async fn delete_grant(&self, project_id: &str, key_id: &str, grant_id: &str) -> Result<()>;
    /// Grants whose `retiring_principal` is `principal`, across the project.
    async fn list_retirable_grants(
        &self,
        project_id: &str,
        principal: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>>;
}

/// Open (and migrate) the store named by `url`: `sqlite://<path>` (created
/// when missing) or `postgres://...`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}
