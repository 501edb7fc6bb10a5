//! The [`Vault`]: every operation on key material the KMS and CSMS need,
//! behind one trait so the domain never sees how material is protected.
//! In production crate `keymesh-keyvault-client` implements it over the
//! crypto-worker pool (one `KeyVault` RPC per call, CMKs in clear only
//! inside the HSM); tests use
//! the in-process `crate::fake::FakeVault`.
//!
//! Material travels wrapped ([`Material`]: the key wrapped under an
//! HSM-resident domain key); every call takes the request deadline so the
//! implementation can shed or time out. The account seal key is a wrapped
//! AES key like a CMK's material, so sealing and unsealing an account's
//! secret are [`Vault::encrypt`] and [`Vault::decrypt`] with it.

use bytes::Bytes;
use keymesh_store::Material;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// A fresh key, wrapped under the domain key: the store's [`Material`]
/// without its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Label of the HSM wrapping key.
    pub wrapping_key: String,
    pub wrapped: Vec<u8>,
}

/// AES-GCM output: what a blob carries besides its header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sealed {
    pub iv: Bytes,
    pub ciphertext: Bytes,
    pub tag: Bytes,
}

/// The key pair kinds a data key pair can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPairSpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
    EcP521,
    EcSecp256k1,
}

/// A data key: in clear (empty unless asked for) and sealed.
#[derive(Debug)]
pub struct DataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub sealed: Sealed,
}

/// A data key pair: SPKI DER, PKCS#8 DER in clear (empty unless asked for)
/// and the PKCS#8 sealed.
#[derive(Debug)]
pub struct DataKeyPair {
    pub public_key_der: Bytes,
    pub private_key_der: Zeroizing<Vec<u8>>,
    pub sealed: Sealed,
}

/// Why a vault call failed: exactly the categories the wire tables tell
/// apart (a timeout, back-pressure, a ciphertext that is not authentic, an
/// argument the vault refused, any other failure).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The deadline passed before the vault answered.
    #[error("dependency timeout")]
    Timeout,
    /// The vault is saturated (shed, or the HSM is busy): back off.
    #[error("vault busy")]
    Throttled,
    /// The ciphertext does not open under the key and AAD.
    #[error("ciphertext not authentic")]
    Ciphertext,
    /// The vault refused an argument (e.g. a length it does not serve).
    #[error("argument refused by the vault")]
    InvalidArgument,
    /// The vault failed (HSM error, worker unreachable, none available);
    /// the source says how, for the log.
    #[error("vault failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The vault's answer lacked a part it must carry.
    #[error("incomplete vault answer")]
    Incomplete,
}

/// What one member of the vault (a crypto-worker) says about the domain
/// key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Its key check value (lower-case hex).
    Kcv(String),
    /// No usable key under the label on its HSM.
    Missing,
}

/// Operations on key material. Plaintext handed back is in zeroizing
/// buffers.
#[async_trait::async_trait]
pub trait Vault: Send + Sync + std::fmt::Debug {
    /// A fresh AES-256 key generated inside the vault, wrapped under the
    /// domain key.
    async fn generate_key(&self, deadline: Instant) -> Result<WrappedKey, VaultError>;

    /// AES-GCM under `key` with `aad`.
    async fn encrypt(
        &self,
        deadline: Instant,
        key: &Material,
        plaintext: Bytes,
        aad: Vec<u8>,
    ) -> Result<Sealed, VaultError>;

    async fn decrypt(
        &self,
        deadline: Instant,
        key: &Material,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError>;

    /// Decrypt under the source key and encrypt under the destination key
    /// in one step: the plaintext never leaves the vault.
    async fn re_encrypt(
        &self,
        deadline: Instant,
        source: (&Material, Sealed, Vec<u8>),
        destination: (&Material, Vec<u8>),
    ) -> Result<Sealed, VaultError>;

    /// A data key of `len` bytes sealed under `key`, and in clear when asked.
    async fn data_key(
        &self,
        deadline: Instant,
        key: &Material,
        len: u32,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKey, VaultError>;

    /// A key pair whose private key is sealed under `key`.
    async fn data_key_pair(
        &self,
        deadline: Instant,
        key: &Material,
        spec: KeyPairSpec,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKeyPair, VaultError>;

    /// `len` random bytes from the vault's generator.
    async fn random(&self, deadline: Instant, len: u32) -> Result<Zeroizing<Vec<u8>>, VaultError>;

    /// Ask every member of the vault, once, for the check value of the
    /// domain key `label`: the answers that came, by member (members that
    /// did not answer in time are left out).
    async fn domain_key_checks(&self, label: &str) -> Vec<(String, KeyCheck)>;
}
