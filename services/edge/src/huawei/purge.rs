//! The scheduled-deletion loop: every `purge_interval_ms`, the domain's
//! `Kms::purge_due` destroys the keys and secrets whose waiting period has
//! ended (it logs and counts each). Runs on every edge; the store makes
//! concurrent runs safe.

use std::sync::Arc;
use std::time::Duration;

use keymesh_kms_core::purge::Purged;

use super::Huawei;

/// Destroy what is due now.
pub async fn run_once(h: &Huawei) -> Result<Purged, keymesh_kms_core::Error> {
    h.kms.purge_due(h.now_ms()).await
}

/// Run [`run_once`] every `purge_interval_ms` until the runtime stops.
pub fn spawn(h: Arc<Huawei>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(h.config.purge_interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&h).await {
                tracing::warn!(error = %e, "scheduled key deletion failed; retrying next interval");
            }
        }
    })
}
