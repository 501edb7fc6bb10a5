//! Scheduled deletion: keys whose pending-deletion period has ended lose
//! their wrapped material (the only copy outside the HSM, where it exists
//! only as short-lived session objects), aliases, tags and grants. Runs on
//! every edge; the store makes concurrent runs safe.

use std::sync::Arc;
use std::time::Duration;

use super::Huawei;

/// Destroy what is due now; returns the destroyed key ids.
pub async fn run_once(h: &Huawei) -> Result<Vec<String>, keymesh_store::StoreError> {
    let destroyed = h.store.purge_due_keys(h.now_ms()).await?;
    for id in &destroyed {
        tracing::info!(target: "keymesh::audit", key_id = %id, "key material destroyed (pending deletion period ended)");
    }
    if !destroyed.is_empty() {
        metrics::counter!("keymesh_kms_keys_destroyed_total").increment(destroyed.len() as u64);
    }
    Ok(destroyed)
}

/// Run [`run_once`] every `purge_interval_ms` until the runtime stops.
pub fn spawn(h: Arc<Huawei>) {
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
    });
}
