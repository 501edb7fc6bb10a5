//! Alias resources: named pointers to keys, separate from a key's
//! `key_alias` attribute, unique per project and at most
//! `aliases_per_key` per key (both enforced in the store's transaction).
//! Names follow the `key_alias` grammar ([`crate::keys::check_alias`]).
//! Keys pending deletion take no new aliases.

use std::sync::Arc;

use keymesh_store::{AliasRecord, AliasRepo, Page, Quotas, StoreError};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::{KeyService, check_alias};

#[derive(Debug, Clone)]
pub struct AliasService {
    store: Arc<dyn AliasRepo>,
    clock: Arc<dyn Clock>,
    quotas: Quotas,
    keys: KeyService,
}

impl AliasService {
    pub(crate) fn new(
        store: Arc<dyn AliasRepo>,
        clock: Arc<dyn Clock>,
        quotas: Quotas,
        keys: KeyService,
    ) -> Self {
        Self {
            store,
            clock,
            quotas,
            keys,
        }
    }

    /// Name `key_id` `alias` (taken: [`Error::DuplicateAlias`]; over the
    /// per-key quota: [`Error::Quota`]).
    pub async fn create(&self, project: &str, key_id: &str, alias: &str) -> Result<AliasRecord> {
        check_alias(alias)?;
        self.keys.get_writable(project, key_id).await?;
        let now = self.clock.now_ms();
        let rec = AliasRecord {
            project_id: project.to_owned(),
            alias: alias.to_owned(),
            key_id: key_id.to_owned(),
            created_ms: now,
            updated_ms: now,
        };
        self.store.create_alias(&rec, &self.quotas).await?;
        Ok(rec)
    }

    /// The project's aliases, or one key's (another project's key is
    /// reported like a missing one, not as an empty list).
    pub async fn list(
        &self,
        project: &str,
        key_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AliasRecord>> {
        if let Some(id) = key_id {
            self.keys.get(project, id).await?;
        }
        Ok(self
            .store
            .list_aliases(project, key_id, offset, limit)
            .await?)
    }

    /// Delete `names` (distinct, each valid) from `key_id`: all or none; a
    /// name that is not the key's alias is [`Error::AliasNotFound`].
    pub async fn delete(&self, project: &str, key_id: &str, names: &[String]) -> Result<()> {
        for n in names {
            check_alias(n)?;
        }
        // More names than a key can hold cannot all be that key's aliases:
        // the store would refuse them anyway (and this bounds the statement).
        if names.len() > self.quotas.aliases_per_key as usize {
            return Err(Error::InvalidAlias);
        }
        self.keys.get(project, key_id).await?;
        self.store
            .delete_aliases(project, key_id, names)
            .await
            .map_err(|e| match e {
                // The key exists (checked above): a name is not its alias.
                StoreError::NotFound => Error::AliasNotFound,
                e => e.into(),
            })
    }

    /// Point the existing `alias` at `key_id`.
    pub async fn associate(&self, project: &str, alias: &str, key_id: &str) -> Result<AliasRecord> {
        check_alias(alias)?;
        self.keys.get_writable(project, key_id).await?;
        self.store
            .associate_alias(project, alias, key_id, self.clock.now_ms(), &self.quotas)
            .await
            .map_err(|e| match e {
                // The target exists (checked above): the alias does not.
                StoreError::NotFound => Error::AliasNotFound,
                e => e.into(),
            })
    }
}
