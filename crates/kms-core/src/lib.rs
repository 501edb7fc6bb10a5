//! keymesh KMS domain layer: the business rules of the Huawei-compatible
//! KMS (and, beside it, CSMS), free of HTTP. The edge's handlers parse a
//! request, make one call here and render the answer through their wire
//! table; everything that decides *what happens* lives in this crate.
//!
//! [`Kms`] is built once from the store, a [`Vault`], a [`Clock`] and the
//! quotas, and holds one service per aggregate: [`keys::KeyService`] (the
//! key state machine, default keys, the read-through [`cache`]),
//! [`aliases::AliasService`], [`grants::GrantService`],
//! [`tags::TagService`] and [`crypto::CryptoService`] (encrypt, decrypt,
//! re-encrypt, data keys and key pairs, sealed into the self-describing
//! ciphertexts of [`blob`]). Every operation on key material goes through
//! the [`vault::Vault`] trait (the edge implements it over its
//! crypto-worker pool; [`fake::FakeVault`] serves tests); time comes from
//! the injected [`clock::Clock`]. Failures are one [`error::Error`], whose
//! `From<StoreError>` is the only place store outcomes get a meaning; ids
//! are minted in [`ids`].
//!
//! The store records the edge renders are re-exported here, so the edge's
//! handlers name this crate only.

pub mod aliases;
pub mod blob;
pub mod cache;
pub mod clock;
pub mod crypto;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod grants;
pub mod ids;
pub mod keys;
pub mod tags;
#[cfg(test)]
mod tests;
pub mod vault;

use std::sync::Arc;
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use vault::{Vault, VaultError};

/// Store records and types the edge renders or passes through.
pub use keymesh_store::{
    AliasRecord, Conflict, GrantRecord, KeyFilter, KeyRecord, KeyState, Material, Page, QuotaKind,
    Quotas, StoreError, Tag, TagFilter, Usage,
};

/// What every service shares: built once in [`Kms::new`].
#[derive(Debug, Clone)]
pub(crate) struct Deps {
    pub store: Arc<dyn keymesh_store::Store>,
    pub vault: Arc<dyn Vault>,
    pub clock: Arc<dyn Clock>,
    pub cache: Arc<cache::Cache>,
    pub quotas: Quotas,
}

/// Domain settings.
#[derive(Debug, Clone, Copy)]
pub struct KmsConfig {
    pub quotas: Quotas,
    /// How long the read-through cache keeps an entry (zero: no caching).
    pub cache_ttl: Duration,
}

/// The KMS domain: one service per aggregate over shared dependencies.
#[derive(Debug)]
pub struct Kms {
    pub keys: keys::KeyService,
    pub aliases: aliases::AliasService,
    pub grants: grants::GrantService,
    pub tags: tags::TagService,
    pub crypto: crypto::CryptoService,
    deps: Deps,
}

impl Kms {
    pub fn new(
        store: Arc<dyn keymesh_store::Store>,
        vault: Arc<dyn Vault>,
        clock: Arc<dyn Clock>,
        config: KmsConfig,
    ) -> Self {
        let deps = Deps {
            store,
            vault,
            clock,
            cache: Arc::new(cache::Cache::new(config.cache_ttl)),
            quotas: config.quotas,
        };
        let keys = keys::KeyService::new(deps.clone());
        Self {
            aliases: aliases::AliasService::new(deps.clone(), keys.clone()),
            grants: grants::GrantService::new(deps.clone(), keys.clone()),
            tags: tags::TagService::new(deps.clone(), keys.clone()),
            crypto: crypto::CryptoService::new(deps.clone(), keys.clone()),
            keys,
            deps,
        }
    }

    /// Milliseconds since the epoch, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.deps.clock.now_ms()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.deps.clock
    }

    pub fn vault(&self) -> &Arc<dyn Vault> {
        &self.deps.vault
    }

    /// The read-through cache (keys, accounts, token subjects).
    pub fn cache(&self) -> &Arc<cache::Cache> {
        &self.deps.cache
    }

    pub fn quotas(&self) -> &Quotas {
        &self.deps.quotas
    }
}
