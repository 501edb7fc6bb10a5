//! Scheduled deletion: keys whose pending-deletion period has ended lose
//! their wrapped material (the only copy outside the HSM), aliases, tags
//! and grants; secrets whose recovery window has ended lose their versions,
//! stages and tags. Every edge runs it on a timer; the store makes
//! concurrent runs safe.

use std::sync::Arc;

use keymesh_store::{KeyRepo, SecretRepo, Store};

use crate::error::Result;

/// The two aggregates a purge destroys from.
#[derive(Debug, Clone)]
pub(crate) struct Purger {
    keys: Arc<dyn KeyRepo>,
    secrets: Arc<dyn SecretRepo>,
}

impl Purger {
    pub(crate) fn new(store: &Arc<dyn Store>) -> Self {
        Self {
            keys: Arc::clone(store) as Arc<dyn KeyRepo>,
            secrets: Arc::clone(store) as Arc<dyn SecretRepo>,
        }
    }
}

/// What one [`Kms::purge_due`](crate::Kms::purge_due) destroyed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub keys: Vec<String>,
    pub secrets: Vec<String>,
}

impl Purger {
    /// Destroy every key and secret due at `now_ms`. Each destruction is
    /// logged on the audit target and counted as it happens (keys first: a
    /// failure purging secrets leaves the keys' record intact).
    pub(crate) async fn purge_due(&self, now_ms: i64) -> Result<Purged> {
        let destroyed = self.keys.purge_due_keys(now_ms).await?;
        for id in &destroyed {
            tracing::info!(target: "keymesh::audit", key_id = %id, "key material destroyed (pending deletion period ended)");
        }
        if !destroyed.is_empty() {
            metrics::counter!("keymesh_kms_keys_destroyed_total").increment(destroyed.len() as u64);
        }
        let gone = self.secrets.purge_due_secrets(now_ms).await?;
        for id in &gone {
            tracing::info!(target: "keymesh::audit", secret_id = %id, "secret destroyed (recovery window ended)");
        }
        if !gone.is_empty() {
            metrics::counter!("keymesh_csms_secrets_destroyed_total").increment(gone.len() as u64);
        }
        Ok(Purged {
            keys: destroyed,
            secrets: gone,
        })
    }
}
