//! Scheduled deletion: keys whose pending-deletion period has ended lose
//! their wrapped material (the only copy outside the HSM, where it exists
//! only as short-lived session objects), aliases, tags and grants; secrets
//! whose recovery window has ended lose their versions, stages and tags.
//! Runs on every edge; the store makes concurrent runs safe.

use std::sync::Arc;
use std::time::Duration;

use super::Huawei;

/// Destroy what is due now; returns the destroyed key ids (secrets are
/// logged and counted).
pub async fn run_once(h: &Huawei) -> Result<Vec<String>, keymesh_store::StoreError> {
    let destroyed = h.store.purge_due_keys(h.now_ms()).await?;
    for id in &destroyed {
        tracing::info!(target: "keymesh::audit", key_id = %id, "key material destroyed (pending deletion period ended)");
    }
    if !destroyed.is_empty() {
        metrics::counter!("keymesh_kms_keys_destroyed_total").increment(destroyed.len() as u64);
    }
    let secrets = h.store.purge_due_secrets(h.now_ms()).await?;
    for id in &secrets {
        tracing::info!(target: "keymesh::audit", secret_id = %id, "secret destroyed (recovery window ended)");
    }
    if !secrets.is_empty() {
        metrics::counter!("keymesh_csms_secrets_destroyed_total").increment(secrets.len() as u64);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicI64, Ordering};

    use keymesh_store::{
        KeyRecord, KeyState, Material, SecretRecord, SecretState, SecretVersion, StageRecord,
    };

    use super::*;
    use crate::huawei::Clock;

    /// A clock the test moves by hand.
    #[derive(Debug)]
    struct Manual(AtomicI64);

    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// The background task's step, on a real SQLite store, driven by a
    /// controllable clock: nothing is destroyed a millisecond early, and at
    /// the deadline the key and its wrapped material are gone.
    #[tokio::test]
    async fn destroys_keys_and_secrets_exactly_when_their_period_ends() {
        let dir = std::env::temp_dir().join(format!("keymesh-purge-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keystores = dir.join("keystores.json");
        std::fs::write(&keystores, br#"{"keystores": []}"#).unwrap();
        let config: crate::config::Config = toml::from_str(&format!(
            "workers = [\"http://127.0.0.1:9\"]\nlimiter = \"http://127.0.0.1:9\"\nkeystores_file = {:?}\n",
            keystores.display().to_string()
        ))
        .unwrap();
        let app = crate::state::AppState::start(config, None).unwrap();
        let url = format!("sqlite://{}/kms.db", dir.display());
        let store = keymesh_store::open(&url).await.unwrap();
        let hw: crate::huawei::HuaweiConfig =
            toml::from_str(&format!("store_url = {url:?}\n")).unwrap();
        let due = 1_700_000_000_000;
        let clock = Arc::new(Manual(AtomicI64::new(due - 1)));
        let h = Huawei::with_store(app, hw, Arc::clone(&store), clock.clone()).unwrap();

        let key = KeyRecord {
            key_id: "0d0466b0-e727-4d9c-b35d-f84bb474a37f".into(),
            project_id: "p1".into(),
            alias: "doomed".into(),
            description: String::new(),
            spec: "AES_256".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            origin: "kms".into(),
            state: KeyState::PendingDeletion,
            default_key: false,
            created_ms: due - 7 * 86_400_000,
            deletion_ms: Some(due),
            material_version: 1,
            enterprise_project_id: "0".into(),
            keystore_id: "0".into(),
        };
        let material = Material {
            key_id: key.key_id.clone(),
            version: 1,
            wrapping_key: "keymesh-domain-v1".into(),
            wrapped: vec![7; 40],
            created_ms: key.created_ms,
        };
        store
            .create_key(&key, Some(&material), h.kms.quotas())
            .await
            .unwrap();

        let secret = SecretRecord {
            secret_id: "5f0e8c1a-1111-4222-8333-944455556666".into(),
            project_id: "p1".into(),
            name: "doomed-secret".into(),
            state: SecretState::PendingDelete,
            kms_key_id: key.key_id.clone(),
            description: String::new(),
            secret_type: "COMMON".into(),
            auto_rotation: false,
            rotation_period: String::new(),
            rotation_config: String::new(),
            event_subscriptions: Vec::new(),
            enterprise_project_id: "0".into(),
            rotation_func_urn: String::new(),
            created_ms: key.created_ms,
            updated_ms: key.created_ms,
            scheduled_delete_ms: Some(due),
        };
        let version = SecretVersion {
            secret_id: secret.secret_id.clone(),
            version_id: "v1".into(),
            kms_key_id: key.key_id.clone(),
            ciphertext: vec![1; 96],
            created_ms: key.created_ms,
            expire_ms: None,
            stages: vec!["SYSCURRENT".into()],
        };
        let stage = StageRecord {
            secret_id: secret.secret_id.clone(),
            name: "SYSCURRENT".into(),
            version_id: "v1".into(),
            updated_ms: key.created_ms,
        };
        store
            .create_secret(&secret, &[version], &[stage], &h.secret_quotas)
            .await
            .unwrap();

        assert!(run_once(&h).await.unwrap().is_empty());
        assert!(
            store
                .get_secret("p1", "doomed-secret")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .get_material("p1", &key.key_id, 1)
                .await
                .unwrap()
                .is_some()
        );

        clock.0.store(due, Ordering::SeqCst);
        assert_eq!(run_once(&h).await.unwrap(), vec![key.key_id.clone()]);
        assert!(store.get_key("p1", &key.key_id).await.unwrap().is_none());
        assert!(
            store
                .get_secret("p1", "doomed-secret")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .all_versions("p1", "doomed-secret")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .get_material("p1", &key.key_id, 1)
                .await
                .unwrap()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
