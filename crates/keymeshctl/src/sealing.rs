//! Sealing account secret keys in the HSM, straight through PKCS#11.
//!
//! keymeshctl already logs in to the token for `key` and `domain-key`, so it
//! seals here rather than through a crypto-worker: an operator can create
//! accounts before any worker runs (first install, run-local), and the CLI
//! needs no mesh client certificate. The result is byte-for-byte what a
//! worker's KeyVault Encrypt makes (the same [`keymesh_pkcs11::aead::seal`]
//! under the seal key unwrapped from the store, [`keymesh_store::sealed`]
//! envelope and AAD), so the edge unseals it through any worker.
//!
//! The seal key is made on first need, like a CMK: generated in the HSM,
//! wrapped under the domain key, stored with `put_seal_key_if_missing` (the
//! first stored wins when an edge or another keymeshctl races us). It exists
//! unwrapped only as a sensitive, non-extractable session object of this
//! process's session.

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use keymesh_pkcs11::args::HsmArgs;
use keymesh_pkcs11::{aead, wrap};
use keymesh_store::sealed::{self, SealedSecret};
use keymesh_store::{SealKey, Store};

/// Only labels errors ("key ... not found" and the like).
const KEY_ID: &str = "(account seal key)";

/// A logged-in session holding the unwrapped seal key.
pub struct Sealer {
    session: Session,
    key: ObjectHandle,
    name: String,
    rng: ring::rand::SystemRandom,
}

impl Sealer {
    /// Log in and unwrap the account seal key, creating it first if the store
    /// has none (wrapped under `domain_key`).
    pub async fn open(args: &HsmArgs, store: &dyn Store, domain_key: &str) -> anyhow::Result<Self> {
        let session = crate::keys::user_session(args)?;
        let stored = match store.get_seal_key(sealed::ACCOUNT_SEAL_KEY).await? {
            Some(k) => k,
            None => {
                let wrapped = wrap::generate_wrapped(&session, domain_key)
                    .map_err(|e| anyhow::anyhow!("cannot generate the account seal key: {e}"))?;
                let fresh = SealKey {
                    name: sealed::ACCOUNT_SEAL_KEY.to_owned(),
                    wrapping_key: domain_key.to_owned(),
                    wrapped,
                    created_ms: crate::clock::now_ms(),
                };
                store.put_seal_key_if_missing(&fresh).await?
            }
        };
        let domain = wrap::find_domain_key(&session, &stored.wrapping_key)
            .map_err(|e| anyhow::anyhow!("account seal key: {e}"))?;
        let key = session
            .unwrap_key(
                &wrap::WRAP_MECHANISM,
                domain,
                &stored.wrapped,
                &wrap::unwrapped_vault_key_template(),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "the account seal key does not unwrap under {:?} (another domain key?): {e}",
                    stored.wrapping_key
                )
            })?;
        Ok(Self {
            session,
            key,
            name: stored.name,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The stored envelope of `secret` sealed with `aad`. The result is
    /// decrypted and compared before it is returned (it is the only copy
    /// the store will hold).
    pub fn seal(&self, secret: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let out = aead::seal(
            &self.session,
            self.key,
            KEY_ID,
            &self.rng,
            aead::SealRequest {
                plaintext: secret,
                aad,
                integrity_prefix: None,
                verify: true,
            },
        )
        .map_err(|e| anyhow::anyhow!("sealing failed: {e}"))?;
        Ok(SealedSecret {
            seal_key: self.name.clone(),
            iv: out.iv,
            tag: out.tag,
            ciphertext: out.ciphertext,
        }
        .encode()?)
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        // A session object dies with the session anyway; destroy it now.
        let _ = self.session.destroy_object(self.key);
    }
}
