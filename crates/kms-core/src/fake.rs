//! An in-process [`Vault`] for tests: AES-256-GCM (ring) under a random
//! domain key that lives only in this value. Keys are "wrapped" by sealing
//! them under the domain key, so the shapes match the real vault's; nothing
//! here is meant to protect anything.

use bytes::Bytes;
use keymesh_store::Material;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::vault::{
    DataKey, DataKeyPair, KeyCheck, KeyPairSpec, Sealed, Vault, VaultError, WrappedKey,
};

/// Label the fake domain key answers to.
pub const FAKE_DOMAIN_KEY: &str = "fake-domain-key";
/// The check value the fake domain key reports (it is not a real KCV).
pub const FAKE_KCV: &str = "fa4ec0de00000000";
const TAG_LEN: usize = 16;

/// The fake vault. `Debug` shows nothing of the key.
pub struct FakeVault {
    domain: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for FakeVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeVault")
    }
}

fn failed(what: &'static str) -> VaultError {
    VaultError::Failed(what.into())
}

impl FakeVault {
    pub fn new() -> Result<Self, VaultError> {
        let rng = SystemRandom::new();
        let k = Zeroizing::new(random(&rng, 32)?);
        let domain =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).map_err(|_| failed("domain key"))?);
        Ok(Self { domain, rng })
    }

    fn seal_with(&self, key: &LessSafeKey, plain: &[u8], aad: &[u8]) -> Result<Sealed, VaultError> {
        let iv = random(&self.rng, NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(|_| failed("nonce"))?;
        let mut buf = plain.to_vec();
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| failed("seal"))?;
        Ok(Sealed {
            iv: Bytes::from(iv),
            ciphertext: Bytes::from(buf),
            tag: Bytes::copy_from_slice(tag.as_ref()),
        })
    }

    fn open_with(
        key: &LessSafeKey,
        s: &Sealed,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let nonce = Nonce::try_assume_unique_for_key(&s.iv).map_err(|_| VaultError::Ciphertext)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(s.ciphertext.len() + TAG_LEN));
        buf.extend_from_slice(&s.ciphertext);
        buf.extend_from_slice(&s.tag);
        let n = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| VaultError::Ciphertext)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// The CMK inside `m`, unwrapped.
    fn unwrap_key(&self, m: &Material) -> Result<LessSafeKey, VaultError> {
        if m.wrapping_key != FAKE_DOMAIN_KEY || m.wrapped.len() < NONCE_LEN + TAG_LEN {
            return Err(failed("unknown wrapping key"));
        }
        let (iv, rest) = m.wrapped.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let s = Sealed {
            iv: Bytes::copy_from_slice(iv),
            ciphertext: Bytes::copy_from_slice(ct),
            tag: Bytes::copy_from_slice(tag),
        };
        let k = Self::open_with(&self.domain, &s, b"wrap").map_err(|_| failed("unwrap"))?;
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &k).map_err(|_| failed("unwrap"))?,
        ))
    }
}

fn random(rng: &SystemRandom, n: usize) -> Result<Vec<u8>, VaultError> {
    let mut b = vec![0u8; n];
    rng.fill(&mut b).map_err(|_| failed("rng"))?;
    Ok(b)
}

#[async_trait::async_trait]
impl Vault for FakeVault {
    async fn generate_key(&self, _deadline: Instant) -> Result<WrappedKey, VaultError> {
        let k = Zeroizing::new(random(&self.rng, 32)?);
        let s = self.seal_with(&self.domain, &k, b"wrap")?;
        let mut wrapped = s.iv.to_vec();
        wrapped.extend_from_slice(&s.ciphertext);
        wrapped.extend_from_slice(&s.tag);
        Ok(WrappedKey {
            wrapping_key: FAKE_DOMAIN_KEY.to_owned(),
            wrapped,
        })
    }

    async fn encrypt(
        &self,
        _deadline: Instant,
        key: &Material,
        plaintext: Bytes,
        aad: Vec<u8>,
    ) -> Result<Sealed, VaultError> {
        self.seal_with(&self.unwrap_key(key)?, &plaintext, &aad)
    }

    async fn decrypt(
        &self,
        _deadline: Instant,
        key: &Material,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        Self::open_with(&self.unwrap_key(key)?, &sealed, &aad)
    }

    async fn re_encrypt(
        &self,
        _deadline: Instant,
        source: (&Material, Sealed, Vec<u8>),
        destination: (&Material, Vec<u8>),
    ) -> Result<Sealed, VaultError> {
        let plain = Self::open_with(&self.unwrap_key(source.0)?, &source.1, &source.2)?;
        self.seal_with(&self.unwrap_key(destination.0)?, &plain, &destination.1)
    }

    async fn data_key(
        &self,
        _deadline: Instant,
        key: &Material,
        len: u32,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKey, VaultError> {
        let dek = Zeroizing::new(random(&self.rng, len as usize)?);
        let sealed = self.seal_with(&self.unwrap_key(key)?, &dek, &aad)?;
        let plaintext = if return_plaintext {
            dek
        } else {
            Zeroizing::new(Vec::new())
        };
        Ok(DataKey { plaintext, sealed })
    }

    /// Not a real key pair: random bytes stand in for the DER, which is
    /// all the domain's orchestration can observe.
    async fn data_key_pair(
        &self,
        _deadline: Instant,
        key: &Material,
        _spec: KeyPairSpec,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKeyPair, VaultError> {
        let private = Zeroizing::new(random(&self.rng, 48)?);
        let sealed = self.seal_with(&self.unwrap_key(key)?, &private, &aad)?;
        let public = ring::digest::digest(&ring::digest::SHA256, &private);
        Ok(DataKeyPair {
            public_key_der: Bytes::copy_from_slice(public.as_ref()),
            private_key_der: if return_plaintext {
                private
            } else {
                Zeroizing::new(Vec::new())
            },
            sealed,
        })
    }

    async fn random(&self, _deadline: Instant, len: u32) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        Ok(Zeroizing::new(random(&self.rng, len as usize)?))
    }

    async fn domain_key_checks(&self, label: &str) -> Vec<(String, KeyCheck)> {
        let answer = if label == FAKE_DOMAIN_KEY {
            KeyCheck::Kcv(FAKE_KCV.to_owned())
        } else {
            KeyCheck::Missing
        };
        vec![("fake".to_owned(), answer)]
    }
}
