//! The startup sealing migration of account secret keys. Sealing and
//! unsealing themselves are the domain's
//! (`keymesh_kms_core::accounts::AccountService`: AES-256-GCM under the
//! account seal key through the vault); this module only keeps retrying
//! the migration of rows written before sealing existed until the workers
//! answer. Clear rows keep verifying in the meantime.

use std::sync::Arc;
use std::time::Duration;

use super::Huawei;

/// Run the domain's `migrate_clear_accounts` until one pass succeeds: the
/// workers may not be reachable yet when the edge starts.
pub fn spawn_migration(h: Arc<Huawei>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let budget = Duration::from_millis(h.config.deadline_ms);
        let mut wait = Duration::from_millis(200);
        loop {
            match h.kms.accounts.migrate_clear_accounts(budget).await {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(accounts = n, "sealed clear account secret keys");
                    return;
                }
                Err(e) => {
                    let e = super::error::ApiError::from(e);
                    let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(error = %e, retry_in_ms, "cannot seal clear account secret keys yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    })
}
