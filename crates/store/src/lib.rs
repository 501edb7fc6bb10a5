//! keymesh durable store.
//!
//! One [`Store`] trait, the sum of one trait per aggregate ([`repos`]:
//! [`AccountRepo`], [`SealKeyRepo`], [`KeyRepo`], [`AliasRepo`],
//! [`KeyTagRepo`], [`GrantRepo`], [`SecretRepo`], [`SecretVersionRepo`],
//! [`SecretTagRepo`] and [`DomainKeys`]), so that a caller depends only on
//! the part it uses (an `Arc<dyn Store>` upcasts to `Arc<dyn KeyRepo>`);
//! [`prelude`] brings them all into scope. Two backends, chosen by URL:
//! SQLite ([`SqliteStore`], `sqlite://path`, the embedded default: one file,
//! WAL, `synchronous=FULL` so that a commit survives a crash) and PostgreSQL
//! ([`PostgresStore`], `postgres://...`). Both run the same migrations and
//! the same statements (the private `sql` module, one file per aggregate)
//! and pass the same conformance suite (`tests/conformance.rs`). The records
//! are in [`model`]; [`sealed`] is the format of a secret sealed by the HSM.
//!
//! Rules every backend keeps:
//! * every call is scoped by `project_id`: a key, alias, tag or grant of
//!   another project is reported exactly like a missing one;
//! * multi-row changes run in one transaction; state transitions are
//!   compare-and-set (no lost updates under concurrent requests);
//! * quotas and unique names are enforced inside the writing transaction;
//! * the clock is an argument (`now: Millis`), never read inside.

mod domain_keys;
pub mod model;
mod postgres;
pub mod repos;
pub mod sealed;
mod sql;
mod sqlite;

pub use domain_keys::{DomainKeyCheck, DomainKeys};
pub use model::*;
pub use repos::{
    AccountRepo, AliasRepo, GrantRepo, KeyRepo, KeyTagRepo, SealKeyRepo, SecretRepo, SecretTagRepo,
    SecretVersionRepo,
};

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
    /// A compare-and-set secret transition found another state.
    #[error("secret is in state {current:?}")]
    WrongSecretState { current: SecretState },
    /// A grant exists but belongs to another key.
    #[error("grant belongs to another key")]
    GrantKeyMismatch,
    /// The database failed or is unreachable.
    #[error("database error")]
    Backend(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// `create_account` was given a clear SK: the store writes SKs only sealed.
    #[error("account secret keys are stored only sealed")]
    ClearSecret,
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

/// The whole durable store: every aggregate's repository (see [`repos`]).
/// Implemented for every type that implements them all, so a backend only
/// implements the per-aggregate traits. Implementations are cheap to share
/// (`Arc<dyn Store>`), and an `Arc<dyn Store>` upcasts to the one
/// repository a caller needs (`Arc<dyn KeyRepo>`).
pub trait Store:
    AccountRepo
    + SealKeyRepo
    + KeyRepo
    + AliasRepo
    + KeyTagRepo
    + GrantRepo
    + SecretRepo
    + SecretVersionRepo
    + SecretTagRepo
    + DomainKeys
    + Send
    + Sync
    + std::fmt::Debug
{
}

impl<T> Store for T where
    T: AccountRepo
        + SealKeyRepo
        + KeyRepo
        + AliasRepo
        + KeyTagRepo
        + GrantRepo
        + SecretRepo
        + SecretVersionRepo
        + SecretTagRepo
        + DomainKeys
        + Send
        + Sync
        + std::fmt::Debug
{
}

/// Every store trait, for `use keymesh_store::prelude::*`: calling a
/// repository method on a concrete store (or a generic `S: Store`) needs the
/// trait that declares it in scope.
pub mod prelude {
    pub use crate::{
        AccountRepo, AliasRepo, DomainKeys, GrantRepo, KeyRepo, KeyTagRepo, SealKeyRepo,
        SecretRepo, SecretTagRepo, SecretVersionRepo, Store,
    };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use super::prelude::*;

    /// A caller that holds the whole store hands each part to the code
    /// that needs only that part (trait upcasting), and calls through it.
    #[tokio::test]
    async fn store_upcasts_to_each_repository() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("upcast.db").display());
        let store: Arc<dyn Store> = super::open(&url).await.unwrap();

        let keys: Arc<dyn KeyRepo> = store.clone();
        assert!(keys.get_key("p", "k").await.unwrap().is_none());
        let accounts: Arc<dyn AccountRepo> = store.clone();
        assert!(accounts.list_accounts().await.unwrap().is_empty());
        let seal_keys: Arc<dyn SealKeyRepo> = store.clone();
        assert!(seal_keys.get_seal_key("s").await.unwrap().is_none());
        let aliases: Arc<dyn AliasRepo> = store.clone();
        assert_eq!(
            aliases.list_aliases("p", None, 0, 10).await.unwrap().total,
            0
        );
        let key_tags: Arc<dyn KeyTagRepo> = store.clone();
        assert!(key_tags.project_tags("p").await.unwrap().is_empty());
        let grants: Arc<dyn GrantRepo> = store.clone();
        assert!(grants.get_grant("p", "g").await.unwrap().is_none());
        let secrets: Arc<dyn SecretRepo> = store.clone();
        assert!(secrets.get_secret("p", "s").await.unwrap().is_none());
        let versions: Arc<dyn SecretVersionRepo> = store.clone();
        assert!(
            versions
                .get_version("p", "s", None)
                .await
                .unwrap()
                .is_none()
        );
        let secret_tags: Arc<dyn SecretTagRepo> = store.clone();
        assert!(
            secret_tags
                .project_secret_tags("p")
                .await
                .unwrap()
                .is_empty()
        );
        let domain_keys: Arc<dyn DomainKeys> = store;
        assert!(domain_keys.domain_key_check("d").await.unwrap().is_none());
    }
}
