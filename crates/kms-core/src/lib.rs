//! keymesh KMS domain layer: the business rules of the Huawei-compatible
//! KMS (and, beside it, CSMS), free of HTTP. The edge's handlers parse a
//! request, make one call here and render the answer through their wire
//! table; everything that decides *what happens* lives in this crate.
//!
//! [`Kms`] is built once from the store, a [`Vault`], a [`Clock`] and the
//! quotas, and holds one service per aggregate: [`keys::KeyService`] (the
//! key state machine, default keys, the read-through [`cache`]),
//! [`aliases::AliasService`], [`grants::GrantService`],
//! [`tags::TagService`] (with the tag request rules both dialects share)
//! and [`crypto::CryptoService`] (encrypt, decrypt,
//! re-encrypt, data keys and key pairs, sealed into the self-describing
//! ciphertexts of [`blob`]). Every operation on key material goes through
//! the [`vault::Vault`] trait, a port this crate owns (its production
//! adapter is crate `keymesh-keyvault-client`, over the crypto-worker
//! pool; `fake::FakeVault` serves tests); time comes from
//! the injected [`clock::Clock`]. Failures are one [`error::Error`], whose
//! `From<StoreError>` is the only place store outcomes get a meaning; ids
//! are minted in [`ids`].
//!
//! Beside the keys: [`csms::SecretService`] (CSMS secrets, versions and
//! stages, secret tags, values sealed under a CMK through the crypto
//! service, backups, random passwords), [`accounts::AccountService`]
//! (access keys and token subjects, account secret keys sealed by the
//! vault), [`purge`] (destroying keys and secrets whose waiting period has
//! ended, [`Kms::purge_due`]) and [`domain_check`] (the domain key's check
//! value held against the store's record at start).
//!
//! The store records the edge renders are re-exported here, so the edge's
//! handlers name this crate only.

pub mod accounts;
pub mod aliases;
pub mod blob;
pub mod cache;
pub mod clock;
pub mod crypto;
pub mod csms;
pub mod domain_check;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod grants;
pub mod ids;
pub mod keys;
pub mod purge;
pub mod tags;
#[cfg(test)]
mod tests;
pub mod vault;
#[cfg(test)]
mod world;

use std::sync::Arc;
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use vault::{Vault, VaultError};

/// The CSMS and account records the edge renders or passes through.
pub use keymesh_store::{
    Account, AccountSecret, Keyset, Role, SecretQuotas, SecretRecord, SecretState, SecretVersion,
    StageRecord,
};
/// Store records and types the edge renders or passes through.
pub use keymesh_store::{
    AliasRecord, Conflict, GrantRecord, KeyFilter, KeyRecord, KeyState, Material, Page, QuotaKind,
    Quotas, StoreError, Tag, TagFilter, Usage,
};

/// Domain settings.
#[derive(Debug, Clone, Copy)]
pub struct KmsConfig {
    pub quotas: Quotas,
    /// How long the read-through cache keeps an entry (zero: no caching).
    pub cache_ttl: Duration,
    /// CSMS limits: secrets per project, versions, stages and tags per
    /// secret.
    pub secret_quotas: SecretQuotas,
}

/// The KMS domain: one service per aggregate, each over the narrow store
/// trait of its aggregate (upcast from the whole store once, here).
#[derive(Debug)]
pub struct Kms {
    pub keys: keys::KeyService,
    pub aliases: aliases::AliasService,
    pub grants: grants::GrantService,
    pub tags: tags::TagService,
    pub crypto: crypto::CryptoService,
    /// CSMS secrets, versions, stages and secret tags.
    pub secrets: csms::SecretService,
    /// Accounts, token subjects' roles and sealed account secret keys.
    pub accounts: accounts::AccountService,
    purger: purge::Purger,
    vault: Arc<dyn Vault>,
    clock: Arc<dyn Clock>,
    cache: Arc<cache::Cache>,
    quotas: Quotas,
}

impl Kms {
    pub fn new(
        store: Arc<dyn keymesh_store::Store>,
        vault: Arc<dyn Vault>,
        clock: Arc<dyn Clock>,
        config: KmsConfig,
    ) -> Self {
        let cache = Arc::new(cache::Cache::new(config.cache_ttl));
        let quotas = config.quotas;
        let keys = keys::KeyService::new(
            store.clone(),
            Arc::clone(&vault),
            Arc::clone(&clock),
            Arc::clone(&cache),
            quotas,
        );
        let crypto = crypto::CryptoService::new(Arc::clone(&vault), keys.clone());
        Self {
            aliases: aliases::AliasService::new(
                store.clone(),
                Arc::clone(&clock),
                quotas,
                keys.clone(),
            ),
            grants: grants::GrantService::new(
                store.clone(),
                Arc::clone(&clock),
                quotas,
                keys.clone(),
            ),
            tags: tags::TagService::new(store.clone(), quotas, keys.clone()),
            secrets: csms::SecretService::new(
                &store,
                keys.clone(),
                crypto.clone(),
                Arc::clone(&clock),
                config.secret_quotas,
            ),
            accounts: accounts::AccountService::new(&store, Arc::clone(&vault), Arc::clone(&clock)),
            purger: purge::Purger::new(&store),
            crypto,
            keys,
            vault,
            clock,
            cache,
            quotas,
        }
    }

    /// Destroy every key and secret whose waiting period ended by `now_ms`
    /// ([`purge`]).
    pub async fn purge_due(&self, now_ms: i64) -> Result<purge::Purged> {
        self.purger.purge_due(now_ms).await
    }

    /// Milliseconds since the epoch, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn vault(&self) -> &Arc<dyn Vault> {
        &self.vault
    }

    /// The read-through cache (keys, accounts, token subjects).
    pub fn cache(&self) -> &Arc<cache::Cache> {
        &self.cache
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }
}
