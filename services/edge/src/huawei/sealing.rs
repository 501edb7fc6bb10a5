//! Account secret keys sealed by the HSM.
//!
//! The store holds an account's SK only sealed ([`keymesh_store::sealed`]):
//! AES-256-GCM under the account seal key, a keymesh-internal AES-256 key
//! generated in the HSM and stored wrapped under the domain key exactly like
//! a CMK's material, with the row's identity (purpose, project, access key,
//! user) as AAD. The edge unseals an account on a cache miss and keeps the
//! clear SK only in its account cache (zeroized on eviction), for the cache
//! TTL.
//!
//! Why the existing KeyVault Encrypt/Decrypt rather than dedicated
//! Seal/Unseal RPCs: the seal key *is* a wrapped AES key, so the worker
//! already does exactly the right thing with it (unwrap into a
//! non-extractable session object, cache it, GCM with a fresh IV, plaintext
//! in zeroizing buffers), retries and balancing come with the shared worker
//! pool, and keymeshctl can produce the same bytes through PKCS#11 with the
//! worker's own `aead::seal`. A new RPC would duplicate that path and change
//! the proto every helper compiles against, for no added protection: the
//! AAD's purpose tag already keeps a sealed SK and a customer ciphertext
//! from ever opening as one another.
//!
//! Rows written before sealing existed are sealed in place by
//! [`spawn_migration`] on start (and verified in clear until then).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keymesh_kms_core::vault::Sealed;
use keymesh_store::sealed::{ACCOUNT_SEAL_KEY, SealedSecret, account_aad};
use keymesh_store::{Account, AccountSecret, Material, SealKey};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::Huawei;
use super::error::ApiError;

/// The account seal key as the vault calls take it, read (or created) once
/// per process: it never changes once stored.
#[derive(Debug, Default)]
pub struct SealKeyCell(tokio::sync::OnceCell<Material>);

impl SealKeyCell {
    async fn get(&self, h: &Huawei, deadline: Instant) -> Result<&Material, ApiError> {
        self.0
            .get_or_try_init(|| async {
                let stored = match h.store.get_seal_key(ACCOUNT_SEAL_KEY).await? {
                    Some(k) => k,
                    None => {
                        let key = h.kms.vault().generate_key(deadline).await?;
                        let fresh = SealKey {
                            name: ACCOUNT_SEAL_KEY.to_owned(),
                            wrapping_key: key.wrapping_key,
                            wrapped: key.wrapped,
                            created_ms: h.now_ms(),
                        };
                        // Another edge or keymeshctl may have stored one
                        // meanwhile: theirs wins and ours is dropped unused.
                        h.store.put_seal_key_if_missing(&fresh).await?
                    }
                };
                Ok(Material {
                    key_id: stored.name,
                    version: 0,
                    wrapping_key: stored.wrapping_key,
                    wrapped: stored.wrapped,
                    created_ms: stored.created_ms,
                })
            })
            .await
    }
}

/// `account` with its SK in clear: unsealed through a worker, or as read
/// from a row not yet migrated.
pub async fn unseal(h: &Huawei, deadline: Instant, account: Account) -> Result<Account, ApiError> {
    let AccountSecret::Sealed(envelope) = &account.secret else {
        return Ok(account);
    };
    let sealed = SealedSecret::decode(envelope).map_err(|e| {
        tracing::error!(access_key = %account.access_key, error = %e, "unreadable sealed account secret");
        ApiError::Internal
    })?;
    let key = h.seal_key.get(h, deadline).await?;
    if sealed.seal_key != key.key_id {
        tracing::error!(access_key = %account.access_key, "account secret sealed under an unknown seal key");
        return Err(ApiError::Internal);
    }
    let aad = account_aad(&account.project_id, &account.access_key, &account.user_id);
    let wire = Sealed {
        iv: Bytes::from(sealed.iv),
        ciphertext: Bytes::from(sealed.ciphertext),
        tag: Bytes::from(sealed.tag),
    };
    let mut clear = h.kms.vault().decrypt(deadline, key, wire, aad).await?;
    // Moved, not copied, into the string; a non-UTF-8 value is wiped too.
    let sk = String::from_utf8(std::mem::take(&mut *clear)).map_err(|e| {
        drop(Zeroizing::new(e.into_bytes()));
        ApiError::Internal
    })?;
    Ok(Account {
        secret: AccountSecret::Clear(Zeroizing::new(sk)),
        ..account
    })
}

/// The stored envelope of `account`'s clear SK.
pub async fn seal(h: &Huawei, deadline: Instant, account: &Account) -> Result<Vec<u8>, ApiError> {
    let Some(sk) = account.secret.clear() else {
        return Err(ApiError::Internal);
    };
    let key = h.seal_key.get(h, deadline).await?;
    let aad = account_aad(&account.project_id, &account.access_key, &account.user_id);
    let plaintext = Bytes::copy_from_slice(sk.as_bytes());
    let out = h
        .kms
        .vault()
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
    .map_err(|_| ApiError::Internal)
}

/// The account of `access_key`, unsealed (`None`: no such account).
pub async fn load_account(
    h: &Huawei,
    deadline: Instant,
    access_key: &str,
) -> Result<Option<Arc<Account>>, ApiError> {
    match h.store.get_account(access_key).await? {
        Some(a) => Ok(Some(Arc::new(unseal(h, deadline, a).await?))),
        None => Ok(None),
    }
}

/// Seal every account row still holding a clear SK (written before sealing
/// existed). Returns how many rows this call sealed.
pub async fn migrate_clear_accounts(h: &Huawei) -> Result<usize, ApiError> {
    let mut sealed = 0;
    for account in h.store.list_accounts().await? {
        if account.secret.clear().is_none() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_millis(h.config.deadline_ms);
        let envelope = seal(h, deadline, &account).await?;
        // Compare-and-set: another edge may have sealed it meanwhile.
        if h.store
            .seal_account_secret(&account.access_key, &envelope)
            .await?
        {
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// Run [`migrate_clear_accounts`] until one pass succeeds: the workers may
/// not be reachable yet when the edge starts. Clear rows keep verifying in
/// the meantime.
pub fn spawn_migration(h: Arc<Huawei>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        loop {
            match migrate_clear_accounts(&h).await {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(accounts = n, "sealed clear account secret keys");
                    return;
                }
                Err(e) => {
                    let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(error = %e, retry_in_ms, "cannot seal clear account secret keys yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    })
}
