//! Backup and restore of a whole secret. The backup document holds the
//! secret's metadata, every version's ciphertext (still under its CMK) and
//! the stages; the whole document is then sealed under the secret's CMK
//! (blob kind `Backup`), so it is confidential, tamper-evident and
//! restorable only in a project that holds that key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_store::{Conflict, SecretRecord, SecretVersion, StageRecord};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::secrets::record;
use super::{SecretService, is_name, secret_missing};
use crate::blob::{Blob, Kind};
use crate::error::Error;

/// The document a backup blob seals. Its JSON field names are a stored
/// format: blobs made before this change must keep restoring.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    pub name: String,
    description: String,
    kms_key_id: String,
    secret_id: String,
    enterprise_project_id: String,
    created_ms: i64,
    versions: Vec<BackupVersion>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BackupVersion {
    id: String,
    kms_key_id: String,
    ciphertext: String,
    created_ms: i64,
    expire_ms: Option<i64>,
    stages: Vec<String>,
}

impl SecretService {
    /// The sealed backup blob of the ENABLED secret `name`.
    pub async fn backup(
        &self,
        project: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<u8>, Error> {
        let s = self.enabled(project, name).await?;
        let versions = self
            .versions
            .all_versions(project, name)
            .await
            .map_err(secret_missing)?;
        let doc = Backup {
            name: s.name.clone(),
            description: s.description.clone(),
            kms_key_id: s.kms_key_id.clone(),
            secret_id: s.secret_id.clone(),
            enterprise_project_id: s.enterprise_project_id.clone(),
            created_ms: s.created_ms,
            versions: versions
                .into_iter()
                .map(|v| BackupVersion {
                    id: v.version_id,
                    kms_key_id: v.kms_key_id,
                    ciphertext: B64.encode(v.ciphertext),
                    created_ms: v.created_ms,
                    expire_ms: v.expire_ms,
                    stages: v.stages,
                })
                .collect(),
        };
        let json = serde_json::to_vec(&doc).map_err(|_| Error::Invariant("backup document"))?;
        self.crypto
            .encrypt(
                project,
                &s.kms_key_id,
                Kind::Backup,
                Bytes::from(json),
                b"",
                deadline,
            )
            .await
    }

    /// Open a backup blob made in a project holding its CMK. Anything that
    /// is not an authentic backup (or names an invalid secret) is
    /// `InvalidBackup`.
    pub async fn open_backup(
        &self,
        project: &str,
        raw: &[u8],
        deadline: Instant,
    ) -> Result<Backup, Error> {
        let invalid = || Error::InvalidBackup;
        let blob = Blob::decode(raw).ok_or_else(invalid)?;
        let doc = self
            .crypto
            .decrypt(project, &blob, Kind::Backup, b"", deadline)
            .await
            .map_err(|e| match e {
                Error::Ciphertext => invalid(),
                e => e,
            })?;
        let doc: Backup = serde_json::from_slice(&doc).map_err(|_| invalid())?;
        if !is_name(&doc.name) {
            return Err(invalid());
        }
        Ok(doc)
    }

    /// Restore an opened backup: the secret keeps its id (the values' AAD
    /// binds it) and its versions, and is ENABLED. `Conflict(SecretName)` when a
    /// secret of that name, or the same secret under another name, exists.
    pub async fn restore_backup(&self, project: &str, doc: Backup) -> Result<SecretRecord, Error> {
        let invalid = || Error::InvalidBackup;
        let now = self.clock.now_ms();
        let secret = SecretRecord {
            description: doc.description,
            enterprise_project_id: doc.enterprise_project_id,
            ..record(
                project,
                doc.secret_id,
                doc.name,
                doc.kms_key_id,
                doc.created_ms,
                now,
            )
        };
        let mut versions = Vec::new();
        let mut stages = Vec::new();
        for v in doc.versions {
            for st in &v.stages {
                stages.push(StageRecord {
                    secret_id: secret.secret_id.clone(),
                    name: st.clone(),
                    version_id: v.id.clone(),
                    updated_ms: now,
                });
            }
            versions.push(SecretVersion {
                secret_id: secret.secret_id.clone(),
                version_id: v.id,
                kms_key_id: v.kms_key_id,
                ciphertext: B64.decode(&v.ciphertext).map_err(|_| invalid())?,
                created_ms: v.created_ms,
                expire_ms: v.expire_ms,
                stages: v.stages,
            });
        }
        // The same secret (by id) may still exist under another name.
        if self
            .secrets
            .get_secret_by_id(project, &secret.secret_id)
            .await
            .map_err(secret_missing)?
            .is_some()
        {
            return Err(Error::Conflict(Conflict::SecretName));
        }
        self.secrets
            .create_secret(&secret, &versions, &stages, &self.quotas)
            .await
            .map_err(secret_missing)?;
        Ok(secret)
    }
}
