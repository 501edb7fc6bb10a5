//! Cryptographic operations on a key's material: encrypt, decrypt,
//! re-encrypt, data keys and data key pairs, random bytes. Ciphertexts are
//! the self-describing blobs of [`crate::blob`]: the header (key id,
//! material version) and what the blob protects ([`Kind`]) are bound into
//! the AES-GCM AAD with the caller's project and AAD, so a ciphertext opens
//! only as what it was sealed as, in the project it was sealed in.
//!
//! Only an enabled key with material seals or opens; older material
//! versions stay readable while the key is enabled.

use std::sync::Arc;

use bytes::Bytes;
use keymesh_store::Material;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::blob::{self, Blob, Kind};
use crate::error::{Error, Result};
use crate::keys::KeyService;
use crate::vault::{KeyPairSpec, Sealed, Vault};

/// A blob from the vault's output under `key_id`'s material `version`.
pub fn to_blob(key_id: &str, version: u32, s: Sealed) -> Blob {
    Blob {
        key_id: key_id.to_owned(),
        version,
        iv: s.iv.to_vec(),
        ciphertext: s.ciphertext.to_vec(),
        tag: s.tag.to_vec(),
    }
}

fn sealed(b: &Blob) -> Sealed {
    Sealed {
        iv: Bytes::from(b.iv.clone()),
        ciphertext: Bytes::from(b.ciphertext.clone()),
        tag: Bytes::from(b.tag.clone()),
    }
}

/// A data key pair: the public key (SPKI DER), the private key (PKCS#8
/// DER, empty unless asked for) and the private key sealed as a blob.
#[derive(Debug)]
pub struct KeyPair {
    pub public_key_der: Bytes,
    pub private_key_der: Zeroizing<Vec<u8>>,
    pub sealed_blob: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct CryptoService {
    vault: Arc<dyn Vault>,
    keys: KeyService,
}

impl CryptoService {
    pub(crate) fn new(vault: Arc<dyn Vault>, keys: KeyService) -> Self {
        Self { vault, keys }
    }

    /// Seal `plaintext` under the key's current material as an encoded
    /// blob of `kind`.
    pub async fn encrypt(
        &self,
        project: &str,
        key_id: &str,
        kind: Kind,
        plaintext: Bytes,
        user_aad: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        let (e, m) = self.keys.usable(project, key_id).await?;
        let k = &e.0;
        let aad = blob::aad(&k.project_id, &k.key_id, m.version, kind, user_aad);
        let s = self.vault.encrypt(deadline, &m, plaintext, aad).await?;
        Ok(to_blob(&k.key_id, m.version, s).encode())
    }

    /// The material a blob was sealed with, the sealed parts and the AAD:
    /// the key must be in the caller's project and enabled.
    async fn opener(
        &self,
        project: &str,
        b: &Blob,
        kind: Kind,
        user_aad: &[u8],
    ) -> Result<(Arc<Material>, Sealed, Vec<u8>)> {
        let (e, current) = self.keys.usable(project, &b.key_id).await?;
        let k = &e.0;
        let m = if current.version == b.version {
            current
        } else {
            self.keys
                .material(k, b.version)
                .await?
                .map(Arc::new)
                .ok_or(Error::Ciphertext)?
        };
        let aad = blob::aad(&k.project_id, &k.key_id, b.version, kind, user_aad);
        Ok((m, sealed(b), aad))
    }

    /// Open a blob of `kind` for the caller.
    pub async fn decrypt(
        &self,
        project: &str,
        b: &Blob,
        kind: Kind,
        user_aad: &[u8],
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (m, s, aad) = self.opener(project, b, kind, user_aad).await?;
        Ok(self.vault.decrypt(deadline, &m, s, aad).await?)
    }

    /// Re-seal a blob of `kind` under `dest_key_id` without the plaintext
    /// leaving the vault. Returns the destination key id and the new blob.
    #[allow(clippy::too_many_arguments)]
    pub async fn re_encrypt(
        &self,
        project: &str,
        b: &Blob,
        kind: Kind,
        source_aad: &[u8],
        dest_key_id: &str,
        dest_aad: &[u8],
        deadline: Instant,
    ) -> Result<(String, Vec<u8>)> {
        let (src_m, s, src_full) = self.opener(project, b, kind, source_aad).await?;
        let (de, dm) = self.keys.usable(project, dest_key_id).await?;
        let dk = &de.0;
        let dst_full = blob::aad(&dk.project_id, &dk.key_id, dm.version, kind, dest_aad);
        let out = self
            .vault
            .re_encrypt(deadline, (&src_m, s, src_full), (&dm, dst_full))
            .await?;
        Ok((
            dk.key_id.clone(),
            to_blob(&dk.key_id, dm.version, out).encode(),
        ))
    }

    /// A data key of `len` bytes: in clear (empty unless `with_plaintext`)
    /// and sealed as a [`Kind::DataKey`] blob.
    pub async fn data_key(
        &self,
        project: &str,
        key_id: &str,
        len: u32,
        user_aad: &[u8],
        with_plaintext: bool,
        deadline: Instant,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        let (e, m) = self.keys.usable(project, key_id).await?;
        let k = &e.0;
        let aad = blob::aad(&k.project_id, &k.key_id, m.version, Kind::DataKey, user_aad);
        let dk = self
            .vault
            .data_key(deadline, &m, len, aad, with_plaintext)
            .await?;
        Ok((
            dk.plaintext,
            to_blob(&k.key_id, m.version, dk.sealed).encode(),
        ))
    }

    /// A data key pair whose private key is sealed as a
    /// [`Kind::PrivateKey`] blob (`user_aad` should bind the pair's spec).
    pub async fn data_key_pair(
        &self,
        project: &str,
        key_id: &str,
        spec: KeyPairSpec,
        user_aad: &[u8],
        with_plaintext: bool,
        deadline: Instant,
    ) -> Result<KeyPair> {
        let (e, m) = self.keys.usable(project, key_id).await?;
        let k = &e.0;
        let aad = blob::aad(
            &k.project_id,
            &k.key_id,
            m.version,
            Kind::PrivateKey,
            user_aad,
        );
        let p = self
            .vault
            .data_key_pair(deadline, &m, spec, aad, with_plaintext)
            .await?;
        Ok(KeyPair {
            public_key_der: p.public_key_der,
            private_key_der: p.private_key_der,
            sealed_blob: to_blob(&k.key_id, m.version, p.sealed).encode(),
        })
    }

    /// `len` random bytes from the vault.
    pub async fn random(&self, len: u32, deadline: Instant) -> Result<Zeroizing<Vec<u8>>> {
        Ok(self.vault.random(deadline, len).await?)
    }
}
