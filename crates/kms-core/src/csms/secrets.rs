//! The secret aggregate: create (value, `v1` and SYSCURRENT in one
//! transaction), show, list, update, delete, and the deletion schedule
//! (pending deletion for 7..=30 days, restore, purge once due).

use keymesh_store::{Keyset, SecretRecord, SecretState, SecretVersion, StageRecord, StoreError};
use tokio::time::Instant;

use super::SecretValue;
use super::{SYSCURRENT, SecretService, secret_missing, unusable};
use crate::error::Error;

/// Days a secret may wait for deletion.
pub const RECOVERY_DAYS: std::ops::RangeInclusive<i64> = 7..=30;
/// The recovery window when the request names none.
pub const DEFAULT_RECOVERY_DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 2048;

/// A validated create request (create-secret and batch-import items).
#[derive(Debug)]
pub struct NewSecret {
    pub name: String,
    /// The CMK the values go under; the project's `csms/default` key when
    /// absent.
    pub kms_key_id: Option<String>,
    pub description: String,
    pub enterprise_project_id: String,
    pub value: SecretValue,
}

/// The metadata an update may change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct SecretUpdate {
    pub kms_key_id: Option<String>,
    pub description: Option<String>,
}

/// A description within [`MAX_DESCRIPTION`] bytes.
pub fn check_description(d: &str) -> Result<(), Error> {
    if d.len() > MAX_DESCRIPTION {
        return Err(Error::InvalidSecretDescription);
    }
    Ok(())
}

/// A fresh ENABLED secret record of `project` (no description, enterprise
/// project "0", the unserved rotation and event settings off).
pub(super) fn record(
    project: &str,
    secret_id: String,
    name: String,
    kms_key_id: String,
    created_ms: i64,
    now: i64,
) -> SecretRecord {
    SecretRecord {
        secret_id,
        project_id: project.to_owned(),
        name,
        state: SecretState::Enabled,
        kms_key_id,
        description: String::new(),
        secret_type: "COMMON".into(),
        auto_rotation: false,
        rotation_period: String::new(),
        rotation_config: String::new(),
        event_subscriptions: Vec::new(),
        enterprise_project_id: "0".into(),
        rotation_func_urn: String::new(),
        created_ms,
        updated_ms: now,
        scheduled_delete_ms: None,
    }
}

impl SecretService {
    /// Encrypt the first value and insert the secret, `v1` and SYSCURRENT
    /// in one transaction: a failure anywhere leaves nothing behind.
    pub async fn create(
        &self,
        project: &str,
        n: NewSecret,
        deadline: Instant,
    ) -> Result<SecretRecord, Error> {
        let kms_key_id = self
            .resolve_key(project, n.kms_key_id.as_deref(), deadline)
            .await?;
        let now = self.clock.now_ms();
        let secret = SecretRecord {
            description: n.description,
            enterprise_project_id: n.enterprise_project_id,
            ..record(
                project,
                crate::ids::new_uuid(),
                n.name,
                kms_key_id.clone(),
                now,
                now,
            )
        };
        let ciphertext = self
            .seal_value(project, &secret.secret_id, &kms_key_id, &n.value, deadline)
            .await?;
        let version = SecretVersion {
            secret_id: secret.secret_id.clone(),
            version_id: "v1".into(),
            kms_key_id,
            ciphertext,
            created_ms: now,
            expire_ms: None,
            stages: vec![SYSCURRENT.into()],
        };
        let stage = StageRecord {
            secret_id: secret.secret_id.clone(),
            name: SYSCURRENT.into(),
            version_id: "v1".into(),
            updated_ms: now,
        };
        self.secrets
            .create_secret(&secret, &[version], &[stage], &self.quotas)
            .await
            .map_err(secret_missing)?;
        Ok(secret)
    }

    /// The secret `name` of `project` (SecretNotFound).
    pub async fn get(&self, project: &str, name: &str) -> Result<SecretRecord, Error> {
        self.secrets
            .get_secret(project, name)
            .await
            .map_err(secret_missing)?
            .ok_or(Error::SecretNotFound)
    }

    /// The secret, which must be ENABLED to read or add values.
    pub async fn enabled(&self, project: &str, name: &str) -> Result<SecretRecord, Error> {
        let s = self.get(project, name).await?;
        if s.state != SecretState::Enabled {
            return Err(unusable(s.state));
        }
        Ok(s)
    }

    /// A page of the project's secrets by name, after `marker`.
    pub async fn list(
        &self,
        project: &str,
        marker: Option<&str>,
        limit: u64,
        event_name: Option<&str>,
    ) -> Result<Keyset<SecretRecord>, Error> {
        self.secrets
            .list_secrets(project, marker, limit, event_name)
            .await
            .map_err(secret_missing)
    }

    /// Change an ENABLED secret's CMK (for later values) or description.
    pub async fn update(
        &self,
        project: &str,
        name: &str,
        u: SecretUpdate,
        deadline: Instant,
    ) -> Result<SecretRecord, Error> {
        let mut s = self.enabled(project, name).await?;
        if let Some(k) = u.kms_key_id.as_deref() {
            s.kms_key_id = self.resolve_key(project, Some(k), deadline).await?;
        }
        if let Some(d) = u.description {
            check_description(&d)?;
            s.description = d;
        }
        s.updated_ms = self.clock.now_ms();
        self.secrets.update_secret(&s).await.map_err(secret_missing)
    }

    /// Delete the secret at once, with its versions, stages and tags.
    pub async fn delete(&self, project: &str, name: &str) -> Result<(), Error> {
        self.secrets
            .delete_secret(project, name)
            .await
            .map_err(secret_missing)
    }

    /// Schedule deletion in `days` (7..=30) days: the secret is PENDING_DELETE
    /// until then and purged by [`crate::Kms::purge_due`] after.
    pub async fn schedule_deletion(
        &self,
        project: &str,
        name: &str,
        days: i64,
    ) -> Result<SecretRecord, Error> {
        if !RECOVERY_DAYS.contains(&days) {
            return Err(Error::InvalidRecoveryWindow);
        }
        let now = self.clock.now_ms();
        self.secrets
            .set_secret_state(
                project,
                name,
                &[SecretState::Enabled, SecretState::Disabled],
                SecretState::PendingDelete,
                Some(now + days * DAY_MS),
                now,
            )
            .await
            .map_err(|e| match e {
                StoreError::WrongSecretState {
                    current: SecretState::PendingDelete,
                } => Error::SecretAlreadyPendingDeletion,
                e => secret_missing(e),
            })
    }

    /// Cancel a scheduled deletion: the secret is ENABLED again.
    pub async fn restore(&self, project: &str, name: &str) -> Result<SecretRecord, Error> {
        self.secrets
            .set_secret_state(
                project,
                name,
                &[SecretState::PendingDelete],
                SecretState::Enabled,
                None,
                self.clock.now_ms(),
            )
            .await
            .map_err(|e| match e {
                StoreError::WrongSecretState { .. } => Error::SecretNotPendingDeletion,
                e => secret_missing(e),
            })
    }
}
