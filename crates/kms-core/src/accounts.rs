//! Accounts: who an access key or a token subject is, and account secret
//! keys sealed by the HSM.
//!
//! The store holds an account's SK only sealed ([`keymesh_store::sealed`]):
//! AES-256-GCM under the account seal key, a keymesh-internal AES-256 key
//! generated in the vault and stored wrapped under the domain key exactly
//! like a CMK's material, with the row's identity (purpose, project, access
//! key, user) as AAD. An account is unsealed on a cache miss; the caller
//! keeps the clear SK only in its account cache (zeroized on eviction).
//!
//! Why the vault's Encrypt/Decrypt rather than dedicated Seal/Unseal calls:
//! the seal key *is* a wrapped AES key, so the vault already does exactly
//! the right thing with it (unwrap into a non-extractable session object,
//! GCM with a fresh IV, plaintext in zeroizing buffers), and keymeshctl can
//! produce the same bytes through PKCS#11. The AAD's purpose tag keeps a
//! sealed SK and a customer ciphertext from ever opening as one another.
//!
//! Rows written before sealing existed are sealed in place by
//! [`AccountService::migrate_clear_accounts`] (verified in clear until then).

use std::sync::Arc;

use bytes::Bytes;
use keymesh_store::sealed::{ACCOUNT_SEAL_KEY, SealedSecret, account_aad};
use keymesh_store::{
    Account, AccountRepo, AccountSecret, Material, Role, SealKey, SealKeyRepo, Store,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::vault::{Sealed, Vault};

/// The account aggregate's service.
#[derive(Debug)]
pub struct AccountService {
    accounts: Arc<dyn AccountRepo>,
    seal_keys: Arc<dyn SealKeyRepo>,
    vault: Arc<dyn Vault>,
    clock: Arc<dyn Clock>,
    /// The account seal key as the vault takes it, read (or created) once
    /// per process: it never changes once stored.
    seal_key: OnceCell<Material>,
}

impl AccountService {
    pub(crate) fn new(
        store: &Arc<dyn Store>,
        vault: Arc<dyn Vault>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            accounts: Arc::clone(store) as Arc<dyn AccountRepo>,
            seal_keys: Arc::clone(store) as Arc<dyn SealKeyRepo>,
            vault,
            clock,
            seal_key: OnceCell::new(),
        }
    }

    async fn seal_key(&self, deadline: Instant) -> Result<&Material> {
        self.seal_key
            .get_or_try_init(|| async {
                let stored = match self.seal_keys.get_seal_key(ACCOUNT_SEAL_KEY).await? {
                    Some(k) => k,
                    None => {
                        let key = self.vault.generate_key(deadline).await?;
                        let fresh = SealKey {
                            name: ACCOUNT_SEAL_KEY.to_owned(),
                            wrapping_key: key.wrapping_key,
                            wrapped: key.wrapped,
                            created_ms: self.clock.now_ms(),
                        };
                        // Another edge or keymeshctl may have stored one
                        // meanwhile: theirs wins and ours is dropped unused.
                        self.seal_keys.put_seal_key_if_missing(&fresh).await?
                    }
                };
                Ok::<_, Error>(Material {
                    key_id: stored.name,
                    version: 0,
                    wrapping_key: stored.wrapping_key,
                    wrapped: stored.wrapped,
                    created_ms: stored.created_ms,
                })
            })
            .await
    }

    /// The account of `access_key` with its SK in clear (`None`: no such
    /// account).
    pub async fn load(&self, access_key: &str, deadline: Instant) -> Result<Option<Account>> {
        match self.accounts.get_account(access_key).await? {
            Some(a) => Ok(Some(self.unseal(a, deadline).await?)),
            None => Ok(None),
        }
    }

    /// The role of the user `user_id` in `project` (`None`: no account;
    /// the lowest role when the user has several).
    pub async fn user_role(&self, project: &str, user_id: &str) -> Result<Option<Role>> {
        Ok(self.accounts.user_role(project, user_id).await?)
    }

    /// `account` with its SK in clear: unsealed through the vault, or as
    /// read from a row not yet migrated.
    pub async fn unseal(&self, account: Account, deadline: Instant) -> Result<Account> {
        let AccountSecret::Sealed(envelope) = &account.secret else {
            return Ok(account);
        };
        let sealed = SealedSecret::decode(envelope).map_err(|e| {
            tracing::error!(access_key = %account.access_key, error = %e, "unreadable sealed account secret");
            Error::Invariant("unreadable sealed account secret")
        })?;
        let key = self.seal_key(deadline).await?;
        if sealed.seal_key != key.key_id {
            tracing::error!(access_key = %account.access_key, "account secret sealed under an unknown seal key");
            return Err(Error::Invariant(
                "account secret sealed under an unknown seal key",
            ));
        }
        let aad = account_aad(&account.project_id, &account.access_key, &account.user_id);
        let parts = Sealed {
            iv: Bytes::from(sealed.iv),
            ciphertext: Bytes::from(sealed.ciphertext),
            tag: Bytes::from(sealed.tag),
        };
        let mut clear = self.vault.decrypt(deadline, key, parts, aad).await?;
        // Moved, not copied, into the string; a non-UTF-8 value is wiped too.
        let sk = String::from_utf8(std::mem::take(&mut *clear)).map_err(|e| {
            drop(Zeroizing::new(e.into_bytes()));
            Error::Invariant("account secret is not UTF-8")
        })?;
        Ok(Account {
            secret: AccountSecret::Clear(Zeroizing::new(sk)),
            ..account
        })
    }

    /// The stored envelope of `account`'s clear SK.
    pub async fn seal(&self, account: &Account, deadline: Instant) -> Result<Vec<u8>> {
        let Some(sk) = account.secret.clear() else {
            return Err(Error::Invariant(
                "sealing an account without a clear secret",
            ));
        };
        let key = self.seal_key(deadline).await?;
        let aad = account_aad(&account.project_id, &account.access_key, &account.user_id);
        let plaintext = Bytes::copy_from_slice(sk.as_bytes());
        let out = self
            .vault
            .encrypt(deadline, key, plaintext.clone(), aad)
            .await;
        // `plaintext` is the only copy left here; wipe it if nobody shares it.
        if let Ok(v) = plaintext.try_into_mut() {
            drop(Zeroizing::new(Vec::from(v)));
        }
        let out = out?;
        SealedSecret {
            seal_key: key.key_id.clone(),
            iv: out.iv.into(),
            tag: out.tag.into(),
            ciphertext: out.ciphertext.into(),
        }
        .encode()
        .map_err(|_| Error::Invariant("sealed account secret envelope"))
    }

    /// Seal every account row still holding a clear SK (written before
    /// sealing existed), each within `budget` of vault time. Returns how
    /// many rows this call sealed.
    pub async fn migrate_clear_accounts(&self, budget: std::time::Duration) -> Result<usize> {
        let mut sealed = 0;
        for account in self.accounts.list_accounts().await? {
            if account.secret.clear().is_none() {
                continue;
            }
            let envelope = self.seal(&account, Instant::now() + budget).await?;
            // Compare-and-set: another edge may have sealed it meanwhile.
            if self
                .accounts
                .seal_account_secret(&account.access_key, &envelope)
                .await?
            {
                sealed += 1;
            }
        }
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use keymesh_store::{AccountRepo, Quotas, SecretQuotas};

    use super::*;
    use crate::clock::ManualClock;
    use crate::fake::FakeVault;
    use crate::{Kms, KmsConfig};

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn seal_unseal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/accounts.db", dir.path().display());
        let store = keymesh_store::open(&url).await.unwrap();
        let kms = Kms::new(
            Arc::clone(&store),
            Arc::new(FakeVault::new().unwrap()),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            KmsConfig {
                quotas: Quotas::default(),
                cache_ttl: Duration::ZERO,
                secret_quotas: SecretQuotas::default(),
            },
        );
        let accounts = &kms.accounts;
        let clear = Account {
            access_key: "AK1".into(),
            secret: AccountSecret::Clear(Zeroizing::new("sk-secret".into())),
            project_id: "p1".into(),
            user_id: "u1".into(),
            role: Role::Full,
            created_ms: 1,
        };
        let envelope = accounts.seal(&clear, deadline()).await.unwrap();
        assert!(!envelope.windows(9).any(|w| w == b"sk-secret"));
        let stored = Account {
            secret: AccountSecret::Sealed(envelope.clone()),
            ..clear.clone()
        };
        AccountRepo::create_account(&*store, &stored).await.unwrap();

        let loaded = accounts.load("AK1", deadline()).await.unwrap().unwrap();
        assert_eq!(loaded.secret.clear(), Some("sk-secret"));
        assert!(accounts.load("AK2", deadline()).await.unwrap().is_none());
        assert_eq!(
            accounts.user_role("p1", "u1").await.unwrap(),
            Some(Role::Full)
        );
        assert_eq!(accounts.user_role("p2", "u1").await.unwrap(), None);

        // The AAD binds the row: the same envelope on another account does
        // not open.
        let moved = Account {
            access_key: "AK3".into(),
            secret: AccountSecret::Sealed(envelope),
            ..clear
        };
        assert!(accounts.unseal(moved, deadline()).await.is_err());
        // Nothing left to migrate: every row is sealed.
        assert_eq!(
            accounts
                .migrate_clear_accounts(Duration::from_secs(5))
                .await
                .unwrap(),
            0
        );
    }
}
