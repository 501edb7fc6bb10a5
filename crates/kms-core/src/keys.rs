//! Keys: the lifecycle state machine (create, enable, disable, schedule and
//! cancel deletion), `key_alias`/`key_description` updates, service default
//! keys, listing and usage, and addressing a key for a crypto operation
//! through the read-through [`Cache`].
//!
//! States: a `kms` key is born Enabled, an `external` one PendingImport.
//! Enabled ⇄ Disabled; Enabled/Disabled/PendingImport/PendingActivation →
//! PendingDeletion (7..=1096 days); cancelling returns to Disabled (or
//! PendingImport for an external key that never had material). Default
//! keys cannot be disabled, deleted, renamed or re-described. Transitions
//! are compare-and-set in the store, so concurrent requests lose no update.

use std::ops::RangeInclusive;
use std::sync::Arc;

use keymesh_store::{
    KeyFilter, KeyRecord, KeyRepo, KeyState, Material, Page, Quotas, StoreError, Usage,
};
use tokio::time::Instant;

use crate::cache::{Cache, KeyEntry};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids;
use crate::vault::Vault;

/// Days a key may wait for deletion.
pub const PENDING_DAYS: RangeInclusive<i64> = 7..=1096;
const DAY_MS: i64 = 86_400_000;

/// A `key_alias` or alias resource name: `^[a-zA-Z0-9:/_-]{1,255}$`, and
/// not ending in `/default` (those name service default keys; callers
/// cannot create or rename to them).
pub fn check_alias(a: &str) -> Result<()> {
    let ok = (1..=255).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
        && !a.ends_with("/default");
    if ok { Ok(()) } else { Err(Error::InvalidAlias) }
}

/// A `key_description`: at most 255 characters, no control characters.
pub fn check_description(d: &str) -> Result<()> {
    if d.chars().count() <= 255 && !d.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::InvalidDescription)
    }
}

/// Where a new key's material comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Generated in the HSM at creation.
    Kms,
    /// Imported later: the key waits in PendingImport.
    External,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::External => "external",
        }
    }
}

/// A customer key to create (already validated by the caller's grammar).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub alias: String,
    pub description: String,
    pub origin: Origin,
    pub enterprise_project_id: String,
}

/// Keys pending deletion accept no new aliases, tags or grants.
pub fn not_pending(k: &KeyRecord) -> Result<()> {
    if k.state == KeyState::PendingDeletion {
        Err(Error::KeyPendingDeletion)
    } else {
        Ok(())
    }
}

/// One compare-and-set step of the state machine.
#[derive(Debug, Clone, Copy)]
struct Transition<'a> {
    from: &'a [KeyState],
    to: KeyState,
    /// Set with PendingDeletion, cleared otherwise.
    deletion_ms: Option<i64>,
    /// Default keys may not take this step.
    forbid_default: bool,
}

/// The key aggregate's service.
#[derive(Debug, Clone)]
pub struct KeyService {
    store: Arc<dyn KeyRepo>,
    vault: Arc<dyn Vault>,
    clock: Arc<dyn Clock>,
    cache: Arc<Cache>,
    quotas: Quotas,
}

impl KeyService {
    pub(crate) fn new(
        store: Arc<dyn KeyRepo>,
        vault: Arc<dyn Vault>,
        clock: Arc<dyn Clock>,
        cache: Arc<Cache>,
        quotas: Quotas,
    ) -> Self {
        Self {
            store,
            vault,
            clock,
            cache,
            quotas,
        }
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The read-through cache (shared with account lookups).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The key in the caller's project, from the store (not the cache: a
    /// state that decides whether a write may proceed is read fresh).
    pub async fn get(&self, project: &str, key_id: &str) -> Result<KeyRecord> {
        self.store
            .get_key(project, key_id)
            .await?
            .ok_or(Error::KeyNotFound)
    }

    /// The key, which must not be pending deletion (aliases, tags, grants).
    pub async fn get_writable(&self, project: &str, key_id: &str) -> Result<KeyRecord> {
        let k = self.get(project, key_id).await?;
        not_pending(&k)?;
        Ok(k)
    }

    /// The key and its current material: cache, then store.
    pub async fn load(&self, project: &str, key_id: &str) -> Result<KeyEntry> {
        if let Some(e) = self.cache.key(project, key_id) {
            return Ok(e);
        }
        let Some((key, material)) = self.store.get_key_with_material(project, key_id).await? else {
            return Err(Error::KeyNotFound);
        };
        let e = Arc::new((key, material.map(Arc::new)));
        self.cache.put_key(project, key_id, Arc::clone(&e));
        Ok(e)
    }

    /// The key, enabled, with material: what every crypto operation needs.
    /// Both halves are shared with the cache, not copied.
    pub async fn usable(&self, project: &str, key_id: &str) -> Result<(KeyEntry, Arc<Material>)> {
        let e = self.load(project, key_id).await?;
        if e.0.state != KeyState::Enabled {
            return Err(Error::unusable(e.0.state));
        }
        let m = e.1.clone().ok_or(Error::KeyNotEnabled)?;
        Ok((e, m))
    }

    /// Material of another version of a usable key (older ciphertexts).
    pub async fn material(&self, k: &KeyRecord, version: u32) -> Result<Option<Material>> {
        Ok(self
            .store
            .get_material(&k.project_id, &k.key_id, version)
            .await?)
    }

    /// The record of a customer key about to be created: a fresh id, now,
    /// Enabled (`kms`) or PendingImport (`external`). Nothing is stored.
    pub fn new_key(&self, project: &str, n: NewKey) -> KeyRecord {
        KeyRecord {
            key_id: ids::new_uuid(),
            project_id: project.to_owned(),
            alias: n.alias,
            description: n.description,
            spec: "AES_256".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            origin: n.origin.as_str().into(),
            state: match n.origin {
                Origin::Kms => KeyState::Enabled,
                Origin::External => KeyState::PendingImport,
            },
            default_key: false,
            created_ms: self.clock.now_ms(),
            deletion_ms: None,
            material_version: 0,
            enterprise_project_id: n.enterprise_project_id,
            keystore_id: "0".into(),
        }
    }

    /// Generate material in the vault (for a `kms` key) and insert the key
    /// with its first material version in one transaction, within the
    /// project's key quota.
    pub async fn insert(&self, mut key: KeyRecord, deadline: Instant) -> Result<KeyRecord> {
        let material = if key.origin == Origin::Kms.as_str() {
            let w = self.vault.generate_key(deadline).await?;
            key.material_version = 1;
            Some(Material {
                key_id: key.key_id.clone(),
                version: 1,
                wrapping_key: w.wrapping_key,
                wrapped: w.wrapped,
                created_ms: key.created_ms,
            })
        } else {
            None
        };
        self.store
            .create_key(&key, material.as_ref(), &self.quotas)
            .await?;
        Ok(key)
    }

    /// The project's service default key named `alias` (e.g.
    /// `csms/default`), created on first use; a concurrent creator wins
    /// and its key is used.
    pub async fn default_key(
        &self,
        project: &str,
        alias: &str,
        description: &str,
        deadline: Instant,
    ) -> Result<String> {
        if let Some(k) = self.store.find_key_by_alias(project, alias).await? {
            return Ok(k.key_id);
        }
        let key = KeyRecord {
            default_key: true,
            enterprise_project_id: "0".into(),
            ..self.new_key(
                project,
                NewKey {
                    alias: alias.to_owned(),
                    description: description.to_owned(),
                    origin: Origin::Kms,
                    enterprise_project_id: "0".into(),
                },
            )
        };
        match self.insert(key, deadline).await {
            Ok(k) => Ok(k.key_id),
            Err(Error::DuplicateAlias) => self
                .store
                .find_key_by_alias(project, alias)
                .await?
                .map(|k| k.key_id)
                .ok_or(Error::Invariant("default key vanished after a conflict")),
            Err(e) => Err(e),
        }
    }

    pub async fn list(
        &self,
        project: &str,
        filter: &KeyFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<KeyRecord>> {
        Ok(self.store.list_keys(project, filter, offset, limit).await?)
    }

    pub async fn usage(&self, project: &str) -> Result<Usage> {
        Ok(self.store.usage(project).await?)
    }

    /// A compare-and-set state change; `wrong` names the error for a key
    /// found in another state.
    async fn transition(
        &self,
        project: &str,
        id: &str,
        t: Transition<'_>,
        wrong: impl Fn(KeyState) -> Error,
    ) -> Result<KeyRecord> {
        let current = self.get(project, id).await?;
        if t.forbid_default && current.default_key {
            return Err(Error::DefaultKey);
        }
        if !t.from.contains(&current.state) {
            return Err(wrong(current.state));
        }
        let r = self
            .store
            .transition(project, id, t.from, t.to, t.deletion_ms)
            .await
            .map_err(|e| match e {
                StoreError::WrongState { current } => wrong(current),
                e => e.into(),
            });
        self.cache.forget_key(project, id);
        r
    }

    /// Disabled → Enabled.
    pub async fn enable(&self, project: &str, id: &str) -> Result<KeyRecord> {
        self.transition(
            project,
            id,
            Transition {
                from: &[KeyState::Disabled],
                to: KeyState::Enabled,
                deletion_ms: None,
                forbid_default: false,
            },
            |s| match s {
                KeyState::PendingDeletion => Error::KeyPendingDeletion,
                _ => Error::KeyNotDisabled,
            },
        )
        .await
    }

    /// Enabled → Disabled (not for default keys).
    pub async fn disable(&self, project: &str, id: &str) -> Result<KeyRecord> {
        self.transition(
            project,
            id,
            Transition {
                from: &[KeyState::Enabled],
                to: KeyState::Disabled,
                deletion_ms: None,
                forbid_default: true,
            },
            |s| match s {
                KeyState::PendingDeletion => Error::KeyPendingDeletion,
                _ => Error::KeyNotEnabled,
            },
        )
        .await
    }

    /// → PendingDeletion, destroyed `days` ([`PENDING_DAYS`]) from now.
    pub async fn schedule_deletion(&self, project: &str, id: &str, days: i64) -> Result<KeyRecord> {
        if !PENDING_DAYS.contains(&days) {
            return Err(Error::InvalidPendingDays);
        }
        let at = self.clock.now_ms() + days * DAY_MS;
        self.transition(
            project,
            id,
            Transition {
                from: &[
                    KeyState::Enabled,
                    KeyState::Disabled,
                    KeyState::PendingImport,
                    KeyState::PendingActivation,
                ],
                to: KeyState::PendingDeletion,
                deletion_ms: Some(at),
                forbid_default: true,
            },
            |s| match s {
                KeyState::PendingDeletion => Error::AlreadyPendingDeletion,
                s => Error::unusable(s),
            },
        )
        .await
    }

    /// PendingDeletion → Disabled (Huawei's behaviour), or PendingImport
    /// for an external key that never had material.
    pub async fn cancel_deletion(&self, project: &str, id: &str) -> Result<KeyRecord> {
        let current = self.get(project, id).await?;
        let to = if current.material_version == 0 && current.origin == Origin::External.as_str() {
            KeyState::PendingImport
        } else {
            KeyState::Disabled
        };
        self.transition(
            project,
            id,
            Transition {
                from: &[KeyState::PendingDeletion],
                to,
                deletion_ms: None,
                forbid_default: false,
            },
            |_| Error::NotPendingDeletion,
        )
        .await
    }

    /// Refuse renames/re-descriptions of default keys and keys pending deletion.
    async fn modifiable(&self, project: &str, id: &str) -> Result<()> {
        let k = self.get(project, id).await?;
        if k.default_key {
            return Err(Error::DefaultKey);
        }
        not_pending(&k)
    }

    pub async fn update_alias(&self, project: &str, id: &str, alias: &str) -> Result<KeyRecord> {
        check_alias(alias)?;
        self.modifiable(project, id).await?;
        let k = self.store.update_key_alias(project, id, alias).await;
        self.cache.forget_key(project, id);
        Ok(k?)
    }

    pub async fn update_description(
        &self,
        project: &str,
        id: &str,
        description: &str,
    ) -> Result<KeyRecord> {
        check_description(description)?;
        self.modifiable(project, id).await?;
        let k = self
            .store
            .update_key_description(project, id, description)
            .await;
        self.cache.forget_key(project, id);
        Ok(k?)
    }
}
