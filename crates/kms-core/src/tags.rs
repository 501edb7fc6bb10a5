//! Key tags: free-form labels on a key, at most `tags_per_key` (enforced in
//! the store's transaction). Keys pending deletion take no tag changes but
//! can still be read. The tag grammar is the dialect's request parsing
//! (the edge's `huawei/tagging.rs`); this service owns who may change what.

use std::sync::Arc;

use keymesh_store::{KeyRecord, KeyTagRepo, Page, Quotas, StoreError, Tag, TagFilter};

use crate::error::{Error, Result};
use crate::keys::KeyService;

#[derive(Debug, Clone)]
pub struct TagService {
    store: Arc<dyn KeyTagRepo>,
    quotas: Quotas,
    keys: KeyService,
}

impl TagService {
    pub(crate) fn new(store: Arc<dyn KeyTagRepo>, quotas: Quotas, keys: KeyService) -> Self {
        Self {
            store,
            quotas,
            keys,
        }
    }

    /// Set `tags` on the key (upsert; over quota: [`Error::Quota`]).
    pub async fn put(&self, project: &str, key_id: &str, tags: &[Tag]) -> Result<()> {
        self.keys.get_writable(project, key_id).await?;
        Ok(self
            .store
            .put_tags(project, key_id, tags, &self.quotas)
            .await?)
    }

    /// Delete tag `keys` (all or none) from the key: a missing tag is
    /// [`Error::TagNotFound`].
    pub async fn delete(&self, project: &str, key_id: &str, keys: &[String]) -> Result<()> {
        self.keys.get_writable(project, key_id).await?;
        self.store
            .delete_tags(project, key_id, keys)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::TagNotFound,
                e => e.into(),
            })
    }

    /// A key's tags (a missing key is [`Error::KeyNotFound`]).
    pub async fn show(&self, project: &str, key_id: &str) -> Result<Vec<Tag>> {
        Ok(self.store.key_tags(project, key_id).await?)
    }

    /// The project's tag keys with their values.
    pub async fn project_tags(&self, project: &str) -> Result<Vec<(String, Vec<String>)>> {
        Ok(self.store.project_tags(project).await?)
    }

    /// Keys matching `filter`, with their tags.
    pub async fn find(
        &self,
        project: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(KeyRecord, Vec<Tag>)>> {
        Ok(self
            .store
            .find_keys_by_tags(project, filter, offset, limit)
            .await?)
    }
}
