//! Secret tags. Unlike the secret paths, the tag paths address a secret by
//! its id, so a missing secret or tag is `ResourceNotFound`. Secrets pending
//! deletion take no tag changes but can still be read.

use keymesh_store::{Page, SecretRecord, SecretState, Tag, TagFilter};

use super::{SecretService, resource_missing, secret_missing};
use crate::error::Error;

/// A tag change: add (or overwrite) some tags, or delete some by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    Put(Vec<Tag>),
    /// All or nothing: a key the secret lacks is `ResourceNotFound`.
    Delete(Vec<String>),
}

impl SecretService {
    /// The secret `secret_id` exists in the project and may change.
    async fn writable(&self, project: &str, secret_id: &str) -> Result<SecretRecord, Error> {
        let s = self
            .secrets
            .get_secret_by_id(project, secret_id)
            .await
            .map_err(resource_missing)?
            .ok_or(Error::ResourceNotFound)?;
        if s.state == SecretState::PendingDelete {
            return Err(Error::SecretPendingDeletion);
        }
        Ok(s)
    }

    /// Apply `change` to the tags of the secret `secret_id` (tag quota:
    /// `Quota(SecretTags)`).
    pub async fn change_tags(
        &self,
        project: &str,
        secret_id: &str,
        change: TagChange,
    ) -> Result<(), Error> {
        self.writable(project, secret_id).await?;
        match change {
            TagChange::Put(tags) => {
                self.tags
                    .put_secret_tags(project, secret_id, &tags, &self.quotas)
                    .await
            }
            TagChange::Delete(keys) => {
                self.tags
                    .delete_secret_tags(project, secret_id, &keys)
                    .await
            }
        }
        .map_err(resource_missing)
    }

    /// The tags of the secret `secret_id`.
    pub async fn tags(&self, project: &str, secret_id: &str) -> Result<Vec<Tag>, Error> {
        self.tags
            .secret_tags(project, secret_id)
            .await
            .map_err(resource_missing)
    }

    /// Every tag key of the project's secrets with its values.
    pub async fn project_tags(&self, project: &str) -> Result<Vec<(String, Vec<String>)>, Error> {
        self.tags
            .project_secret_tags(project)
            .await
            .map_err(secret_missing)
    }

    /// The project's secrets matching `filter`, with their tags.
    pub async fn find_by_tags(
        &self,
        project: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(SecretRecord, Vec<Tag>)>, Error> {
        self.tags
            .find_secrets_by_tags(project, filter, offset, limit)
            .await
            .map_err(secret_missing)
    }
}
