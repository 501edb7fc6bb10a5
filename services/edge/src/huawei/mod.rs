//! The Huawei-Cloud-compatible dialects: KMS (`/v1.0/{project_id}/kms/...`)
//! and CSMS secrets (`/v1/{project_id}/secrets...`, `/v1/{project_id}/csms/...`).
//!
//! The edge authenticates (SDK-HMAC-SHA256 or `X-Auth-Token`), validates and
//! translates; key state lives in the durable store (`keymesh-store`) and
//! every operation on key material is one `KeyVault` call to a
//! crypto-worker, where CMKs exist in clear only inside the HSM. The request
//! pipeline ([`layers::service`]) mirrors the XKS one: observe → deadline → body
//! limit → route → authenticate → rate limit → handler.

pub mod auth;
pub mod blob;
pub mod cache;
pub mod codes;
pub mod config;
pub mod csms;
pub mod domain_check;
pub mod error;
pub mod json;
pub mod kms;
pub mod layers;
pub mod purge;
pub mod route;
pub mod sealing;
pub mod tagging;
pub mod vault;

use std::sync::Arc;
use std::time::Duration;

use keymesh_common::reload::Reloadable;
use keymesh_store::{Quotas, SecretQuotas, Store};

use crate::state::AppState;
pub use config::HuaweiConfig;

/// `N` bytes from the OS CSPRNG: request ids, UUIDs and grant ids all come
/// from here. `SystemRandom::new()` is a zero-sized handle onto
/// getrandom(2), so making one per call costs nothing.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut b)?;
    Ok(b)
}

/// Milliseconds since the Unix epoch, from a clock tests can drive.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Everything a Huawei-dialect request needs, built once in `main`.
pub struct Huawei {
    /// Workers, limiter and metrics, shared with the XKS dialect.
    pub app: Arc<AppState>,
    pub config: HuaweiConfig,
    pub quotas: Quotas,
    pub secret_quotas: SecretQuotas,
    pub store: Arc<dyn Store>,
    /// X-Auth-Token public keys, reloaded when the file changes.
    pub tokens: Option<Arc<Reloadable<keymesh_huawei_auth::token::TokenVerifier>>>,
    /// Issuer and maximum TTL every token is checked against.
    pub token_policy: keymesh_huawei_auth::token::Policy,
    pub signatures: keymesh_huawei_auth::sdk_hmac::Verifier,
    pub cache: cache::Cache,
    pub clock: Arc<dyn Clock>,
    /// The account seal key, read or created on first need.
    pub seal_key: sealing::SealKeyCell,
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
        domain_check::verify(
            &app.workers,
            &config.domain_key_label,
            store.as_ref(),
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
        let cache = cache::Cache::new(Duration::from_millis(config.cache_ttl_ms));
        let token_policy = keymesh_huawei_auth::token::Policy {
            issuer: config.token_issuer.clone(),
            max_ttl: Duration::from_secs(config.token_max_ttl_secs),
        };
        Ok(Arc::new(Self {
            app,
            quotas: config.quotas.into(),
            secret_quotas: config.quotas.into(),
            config,
            store,
            tokens,
            token_policy,
            signatures,
            cache,
            clock,
            seal_key: sealing::SealKeyCell::default(),
        }))
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
