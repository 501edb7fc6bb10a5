//! The test world both domain suites (`tests.rs`, `csms/tests.rs`) run in: a
//! real SQLite store in a temporary file (every pooled connection must see
//! the same database), the [`FakeVault`] and a [`ManualClock`] at [`NOW`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::ManualClock;
use crate::fake::FakeVault;
use crate::{Kms, KmsConfig};

/// The project every test works in.
pub const P: &str = "project1";
/// The manual clock's start.
pub const NOW: i64 = 1_700_000_000_000;
pub const DAY_MS: i64 = 86_400_000;

pub struct World {
    pub kms: Kms,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// A fresh store, vault and clock under `config`.
pub async fn world_with(config: KmsConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/kms.db", dir.path().display());
    let store = keymesh_store::open(&url).await.unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let kms = Kms::new(
        store,
        Arc::new(FakeVault::new().unwrap()),
        clock.clone(),
        config,
    );
    World {
        kms,
        clock,
        _dir: dir,
    }
}

/// Default quotas, no cache.
pub fn config() -> KmsConfig {
    KmsConfig {
        quotas: keymesh_store::Quotas::default(),
        cache_ttl: Duration::ZERO,
        secret_quotas: keymesh_store::SecretQuotas::default(),
    }
}

pub async fn world() -> World {
    world_with(config()).await
}

/// A deadline no vault call here comes near.
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}
