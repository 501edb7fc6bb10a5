//! The Huawei-Cloud-compatible dialects: KMS (`/v1.0/{project_id}/kms/...`)
//! and CSMS secrets (`/v1/{project_id}/secrets...`, `/v1/{project_id}/csms/...`).
//!
//! The edge authenticates (SDK-HMAC-SHA256 or `X-Auth-Token`), validates and
//! translates; the business rules live in the KMS domain layer
//! (`keymesh-kms-core`, held as [`Huawei::kms`]) over the durable store,
//! and every operation on key material is one `KeyVault` call to a
//! crypto-worker ([`WorkerVault`], the domain's vault, from crate
//! `keymesh-keyvault-client`), where CMKs
//! exist in clear only inside the HSM. The request pipeline ([`layers::service`])
//! mirrors the XKS one: observe → deadline → body limit → route →
//! authenticate → rate limit → handler.

pub mod auth;
pub mod codes;
pub mod config;
pub mod csms;
pub mod error;
pub mod json;
pub mod kms;
pub mod layers;
pub mod purge;
pub mod route;
pub mod sealing;
pub mod tagging;

pub use keymesh_keyvault_client::WorkerVault;
pub use keymesh_kms_core::{Clock, SystemClock};
/// The ciphertext format and the read-through cache are the domain's.
pub use keymesh_kms_core::{blob, cache};

use std::sync::Arc;
use std::time::Duration;

use keymesh_common::reload::Reloadable;
use keymesh_kms_core::{Kms, KmsConfig, domain_check};
use keymesh_store::Store;

use crate::state::AppState;
pub use config::HuaweiConfig;

/// Request ids come from the same CSPRNG helper as the domain's ids.
pub use keymesh_kms_core::ids::random_bytes;

/// Everything a Huawei-dialect request needs, built once in `main`.
pub struct Huawei {
    /// Workers, limiter and metrics, shared with the XKS dialect.
    pub app: Arc<AppState>,
    pub config: HuaweiConfig,
    /// The KMS domain: keys, aliases, grants, tags, crypto, CSMS secrets,
    /// accounts and the purge; it owns the store, the clock, the quotas and
    /// the read-through cache.
    pub kms: Kms,
    /// X-Auth-Token public keys, reloaded when the file changes.
    pub tokens: Option<Arc<Reloadable<keymesh_huawei_auth::token::TokenVerifier>>>,
    /// Issuer and maximum TTL every token is checked against.
    pub token_policy: keymesh_huawei_auth::token::Policy,
    pub signatures: keymesh_huawei_auth::sdk_hmac::Verifier,
}

impl std::fmt::Debug for Huawei {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Huawei")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Huawei {
    /// Open the store (running its migrations) and load the token key.
    pub async fn open(app: Arc<AppState>, config: HuaweiConfig) -> anyhow::Result<Arc<Self>> {
        // Read once: a rotated password in store_url_file takes a restart.
        let url = config.resolve_store_url()?;
        if config::postgres_unverified(&url) {
            // The URL itself is never logged: it may carry the password.
            tracing::warn!(
                "huawei store: PostgreSQL without sslmode=verify-full; the database link is not authenticated"
            );
        }
        let store = keymesh_store::open(&url)
            .await
            .map_err(|e| anyhow::anyhow!("huawei store: {e}"))?;
        // The domain key the workers hold must be the one the store's
        // material is wrapped under (the domain's check, asked of every
        // worker through the vault).
        let workers = WorkerVault::new(Arc::clone(&app.workers), config.domain_key_label.clone());
        domain_check::verify(
            &workers,
            store.as_ref(),
            &SystemClock,
            &config.domain_key_label,
            domain_check::START_WAIT,
        )
        .await?;
        let h = Self::with_store(app, config, store, Arc::new(SystemClock))?;
        if let Some(t) = &h.tokens {
            // A rotation (a key added or removed) applies without a restart.
            let watch = t.spawn_watch(Duration::from_millis(h.app.config.reload_interval_ms));
            h.app.tasks.own(watch);
        }
        // Rows written before sealing existed: sealed once workers answer.
        h.app.tasks.own(sealing::spawn_migration(Arc::clone(&h)));
        Ok(h)
    }

    /// State over an already open store and a given clock (tests).
    pub fn with_store(
        app: Arc<AppState>,
        config: HuaweiConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let tokens = match &config.token_public_key_file {
            Some(p) => Some(
                Reloadable::load(p, auth::parse_token_keys)
                    .map_err(|e| anyhow::anyhow!("huawei.token_public_key_file: {e:#}"))?,
            ),
            None => None,
        };
        let signatures = keymesh_huawei_auth::sdk_hmac::Verifier {
            max_skew: Duration::from_secs(config.max_skew_secs),
        };
        let vault = Arc::new(WorkerVault::new(
            Arc::clone(&app.workers),
            config.domain_key_label.clone(),
        ));
        let kms = Kms::new(
            store,
            vault,
            clock,
            KmsConfig {
                quotas: config.quotas.into(),
                cache_ttl: Duration::from_millis(config.cache_ttl_ms),
                secret_quotas: config.quotas.into(),
            },
        );
        let token_policy = keymesh_huawei_auth::token::Policy {
            issuer: config.token_issuer.clone(),
            max_ttl: Duration::from_secs(config.token_max_ttl_secs),
        };
        Ok(Arc::new(Self {
            app,
            kms,
            config,
            tokens,
            token_policy,
            signatures,
        }))
    }

    pub fn now_ms(&self) -> i64 {
        self.kms.now_ms()
    }
}
