//! Secret versions (add with a value, read with its value, list, expiry)
//! and version stages (show, move, delete). Adding a version that takes
//! SYSCURRENT, or moving SYSCURRENT by hand, hands SYSPREVIOUS to the
//! version that held it, in the store's one transaction.

use keymesh_store::{Keyset, SecretRecord, SecretState, SecretVersion, StageRecord};
use tokio::time::Instant;

use super::SecretValue;
use super::{SYSCURRENT, SYSPREVIOUS, SecretService, resource_missing, secret_missing, unusable};
use crate::error::Error;

/// Stages one new version may take.
pub const MAX_STAGES: usize = 12;
/// The latest accepted `expire_time`, 9999-12-31T23:59:59Z in epoch seconds.
pub const MAX_EXPIRE_SECS: i64 = 253_402_300_799;

/// An `expire_time` (epoch seconds) as stored milliseconds. Accepted from
/// the current second (a version may be made to expire at once) to the end
/// of year 9999; anything else, the far values that would overflow the
/// milliseconds included, is `InvalidExpireTime`.
pub fn expire_ms(now_ms: i64, expire_secs: i64) -> Result<i64, Error> {
    if !(now_ms.div_euclid(1000)..=MAX_EXPIRE_SECS).contains(&expire_secs) {
        return Err(Error::InvalidExpireTime);
    }
    Ok(expire_secs * 1000)
}

/// A new version: its value, the stages it takes (SYSCURRENT when none are
/// named) and its expiry in epoch seconds.
#[derive(Debug)]
pub struct NewVersion {
    pub value: SecretValue,
    pub stages: Option<Vec<String>>,
    pub expire_secs: Option<i64>,
}

impl SecretService {
    /// Add a version to the ENABLED secret `name`. Encrypt first (the HSM
    /// round trip), then one transaction adds the version and moves the
    /// stages: a failure leaves no version behind.
    pub async fn add_version(
        &self,
        project: &str,
        name: &str,
        n: NewVersion,
        deadline: Instant,
    ) -> Result<SecretVersion, Error> {
        let stages = n.stages.unwrap_or_else(|| vec![SYSCURRENT.to_owned()]);
        let now = self.clock.now_ms();
        let expire_ms = n.expire_secs.map(|e| expire_ms(now, e)).transpose()?;
        let s = self.enabled(project, name).await?;
        let ciphertext = self
            .seal_value(project, &s.secret_id, &s.kms_key_id, &n.value, deadline)
            .await?;
        let v = SecretVersion {
            secret_id: s.secret_id.clone(),
            version_id: String::new(),
            kms_key_id: s.kms_key_id.clone(),
            ciphertext,
            created_ms: now,
            expire_ms,
            stages: Vec::new(),
        };
        self.versions
            .add_version(project, name, &v, &stages, &self.quotas, now)
            .await
            .map_err(secret_missing)
    }

    /// A version (`None`: the latest) with its value in clear. The checks
    /// keep their order: a missing secret, then its state, then the version.
    pub async fn read_version(
        &self,
        project: &str,
        name: &str,
        version_id: Option<&str>,
        deadline: Instant,
    ) -> Result<(SecretRecord, SecretVersion, SecretValue), Error> {
        // The hot read: secret and version in one store statement.
        let (s, v) = self
            .versions
            .read_secret_version(project, name, version_id)
            .await
            .map_err(secret_missing)?
            .ok_or(Error::SecretNotFound)?;
        if s.state != SecretState::Enabled {
            return Err(unusable(s.state));
        }
        let v = v.ok_or(Error::ResourceNotFound)?;
        let value = self
            .open_value(project, &s.secret_id, &v.ciphertext, deadline)
            .await?;
        Ok((s, v, value))
    }

    /// A page of the secret's versions, newest first, after `marker`.
    pub async fn list_versions(
        &self,
        project: &str,
        name: &str,
        marker: Option<&str>,
        limit: u64,
    ) -> Result<Keyset<SecretVersion>, Error> {
        self.get(project, name).await?;
        self.versions
            .list_versions(project, name, marker, limit)
            .await
            .map_err(secret_missing)
    }

    /// Set a version's expiry (epoch seconds) on an ENABLED secret.
    pub async fn update_version_expiry(
        &self,
        project: &str,
        name: &str,
        version_id: &str,
        expire_secs: i64,
    ) -> Result<SecretVersion, Error> {
        let expire = expire_ms(self.clock.now_ms(), expire_secs)?;
        self.enabled(project, name).await?;
        self.versions
            .update_version_expiry(project, name, version_id, Some(expire))
            .await
            .map_err(resource_missing)
    }

    /// The stage `stage` of the secret `name`.
    pub async fn get_stage(
        &self,
        project: &str,
        name: &str,
        stage: &str,
    ) -> Result<StageRecord, Error> {
        self.get(project, name).await?;
        self.versions
            .get_stage(project, name, stage)
            .await
            .map_err(secret_missing)?
            .ok_or(Error::ResourceNotFound)
    }

    /// Point `stage` at `version_id`. Moving SYSCURRENT by hand keeps the
    /// rotation contract: the store hands SYSPREVIOUS to the version that
    /// held it, in the same transaction, so a move the stage quota refuses
    /// moves nothing.
    pub async fn put_stage(
        &self,
        project: &str,
        name: &str,
        stage: &str,
        version_id: &str,
    ) -> Result<StageRecord, Error> {
        self.enabled(project, name).await?;
        let now = self.clock.now_ms();
        self.versions
            .put_stage(project, name, stage, version_id, now, &self.quotas)
            .await
            .map_err(resource_missing)
    }

    /// Remove a stage; SYSCURRENT and SYSPREVIOUS are the service's and
    /// cannot be removed.
    pub async fn delete_stage(&self, project: &str, name: &str, stage: &str) -> Result<(), Error> {
        if stage == SYSCURRENT || stage == SYSPREVIOUS {
            return Err(Error::ProtectedStage);
        }
        self.get(project, name).await?;
        self.versions
            .delete_stage(project, name, stage)
            .await
            .map_err(resource_missing)
    }
}
