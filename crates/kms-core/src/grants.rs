//! Grants: records of intent for Huawei-compatible tooling. keymesh
//! callers are bound to one project, so a grant does not widen anyone's
//! access. Any full-access caller of the project may create, list and
//! revoke them; only the grantee, the retiring principal or the issuer may
//! retire one. Grants are refused on default keys and keys pending
//! deletion (disabled keys take them, as on Huawei); quotas per key and per
//! project are enforced in the store's transaction.

use std::sync::Arc;

use keymesh_store::{GrantRecord, GrantRepo, Page, Quotas, StoreError};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids;
use crate::keys::KeyService;

/// The operations a grant may name (the wire names of §9).
pub const OPERATIONS: &[&str] = &[
    "create-datakey",
    "create-datakey-without-plaintext",
    "encrypt-datakey",
    "decrypt-datakey",
    "describe-key",
    "create-grant",
    "retire-grant",
    "encrypt-data",
    "decrypt-data",
];

/// A principal id: `^[a-zA-Z0-9]{1,64}$` (grantee and retiring principal).
pub fn is_principal(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A grant name: `^[a-zA-Z0-9:/_-]{1,255}$`.
pub fn is_grant_name(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
}

/// Whether `user` may retire `g`: its grantee, retiring or issuing
/// principal. An empty id (no principal) never matches, so a grant without
/// a retiring principal is not retirable by an anonymous caller.
pub fn may_retire(g: &GrantRecord, user: &str) -> bool {
    !user.is_empty()
        && (g.grantee_principal == user
            || g.retiring_principal == user
            || g.issuing_principal == user)
}

/// A grant to create (fields already in their grammar).
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub key_id: String,
    pub grantee_principal: String,
    /// `user` or `domain`.
    pub grantee_principal_type: String,
    pub operations: Vec<String>,
    /// Empty when none was given.
    pub name: String,
    /// Empty when none was given.
    pub retiring_principal: String,
}

#[derive(Debug, Clone)]
pub struct GrantService {
    store: Arc<dyn GrantRepo>,
    clock: Arc<dyn Clock>,
    quotas: Quotas,
    keys: KeyService,
}

impl GrantService {
    pub(crate) fn new(
        store: Arc<dyn GrantRepo>,
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

    /// Record a grant issued by `issuer`.
    pub async fn create(&self, project: &str, issuer: &str, n: NewGrant) -> Result<GrantRecord> {
        let key = self.keys.get(project, &n.key_id).await?;
        if key.default_key {
            return Err(Error::DefaultKey);
        }
        crate::keys::not_pending(&key)?;
        let grant = GrantRecord {
            grant_id: ids::new_grant_id()?,
            project_id: project.to_owned(),
            key_id: n.key_id,
            name: n.name,
            grantee_principal: n.grantee_principal,
            grantee_principal_type: n.grantee_principal_type,
            operations: n.operations,
            issuing_principal: issuer.to_owned(),
            retiring_principal: n.retiring_principal,
            created_ms: self.clock.now_ms(),
        };
        self.store.create_grant(&grant, &self.quotas).await?;
        Ok(grant)
    }

    /// A key's grants (a missing key is [`Error::KeyNotFound`], not an
    /// empty list).
    pub async fn list(
        &self,
        project: &str,
        key_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>> {
        self.keys.get(project, key_id).await?;
        Ok(self
            .store
            .list_grants(project, key_id, offset, limit)
            .await?)
    }

    async fn remove(&self, project: &str, key_id: &str, grant_id: &str) -> Result<()> {
        self.store
            .delete_grant(project, key_id, grant_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::GrantNotFound,
                e => e.into(),
            })
    }

    /// Delete the grant: not in the project → [`Error::GrantNotFound`], on
    /// another key → [`Error::GrantKeyMismatch`].
    pub async fn revoke(&self, project: &str, key_id: &str, grant_id: &str) -> Result<()> {
        // The key first: a missing key is KeyNotFound, not a grant mismatch.
        self.keys.get(project, key_id).await?;
        self.remove(project, key_id, grant_id).await
    }

    /// Revoke as `user`, who must be one of the grant's principals.
    pub async fn retire(
        &self,
        project: &str,
        user: &str,
        key_id: &str,
        grant_id: &str,
    ) -> Result<()> {
        self.keys.get(project, key_id).await?;
        let g = self
            .store
            .get_grant(project, grant_id)
            .await?
            .ok_or(Error::GrantNotFound)?;
        if g.key_id != key_id {
            return Err(Error::GrantKeyMismatch);
        }
        if !may_retire(&g, user) {
            return Err(Error::NotRetiringPrincipal);
        }
        self.remove(project, key_id, grant_id).await
    }

    /// The grants `user` may retire.
    pub async fn list_retirable(
        &self,
        project: &str,
        user: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>> {
        // Grants without a retiring principal store it as "": a caller
        // without an id must not see them all.
        if user.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_offset: None,
                total: 0,
            });
        }
        Ok(self
            .store
            .list_retirable_grants(project, user, offset, limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn principals_and_names() {
        assert!(is_principal("a"));
        assert!(is_principal(&"Z9".repeat(32)));
        for bad in ["", "a-b", "a b", "é", &"a".repeat(65)] {
            assert!(!is_principal(bad), "{bad:?}");
        }
        assert!(is_grant_name("svc:grant/one_2-x"));
        assert!(is_grant_name(&"n".repeat(255)));
        for bad in ["", "a b", "a.b", &"n".repeat(256)] {
            assert!(!is_grant_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn who_may_retire() {
        let g = GrantRecord {
            grant_id: "ab".repeat(32),
            project_id: "p".into(),
            key_id: "k".into(),
            name: String::new(),
            grantee_principal: "grantee".into(),
            grantee_principal_type: "user".into(),
            operations: vec!["encrypt-data".into()],
            issuing_principal: "issuer".into(),
            retiring_principal: String::new(),
            created_ms: 0,
        };
        assert!(may_retire(&g, "grantee"));
        assert!(may_retire(&g, "issuer"));
        assert!(!may_retire(&g, "someone"));
        assert!(!may_retire(&g, ""));
        let g = GrantRecord {
            retiring_principal: "retirer".into(),
            ..g
        };
        assert!(may_retire(&g, "retirer"));
    }
}
