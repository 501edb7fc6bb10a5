//! The worker side of every KMS operation on key material: one `KeyVault`
//! RPC through the shared worker pool (P2C balancing, deadline as
//! grpc-timeout, shedding, one retry on another worker as
//! [`WorkerRpc::retry`] allows). Plaintext handed back by a worker is kept
//! in zeroizing buffers.

use bytes::Bytes;
use keymesh_proto::crypto::v1::key_vault_client::KeyVaultClient;
use keymesh_proto::crypto::v1::{
    GenerateDataKeyPairRequest, GenerateDataKeyRequest, GenerateKeyRequest, GenerateRandomRequest,
    KeyPairSpec, ReEncryptRequest, Sealed, VaultDecryptRequest, VaultEncryptRequest, WrappedKey,
};
use keymesh_store::Material;
use tokio::time::Instant;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::Huawei;
use super::error::ApiError;
use crate::mesh::WorkerRpc;

fn wrapped(m: &Material) -> WrappedKey {
    WrappedKey {
        wrapping_key: m.wrapping_key.clone(),
        wrapped: Bytes::from(m.wrapped.clone()),
    }
}

fn sealed_of(s: Option<Sealed>) -> Result<Sealed, ApiError> {
    s.ok_or(ApiError::Internal)
}

/// One `KeyVault` RPC through the worker pool: `send` makes the call on a
/// client over the channel the pool picked.
async fn rpc<M, T, F, Fut>(
    h: &Huawei,
    op: WorkerRpc,
    deadline: Instant,
    msg: M,
    mut send: F,
) -> Result<T, ApiError>
where
    M: Clone,
    F: FnMut(KeyVaultClient<Channel>, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    h.app
        .workers
        .call(op, deadline, msg, |ch, r| send(KeyVaultClient::new(ch), r))
        .await
}

/// Zeroize a buffer the worker sent if nobody else holds it.
fn wipe(b: Bytes) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b.into())
}

/// A fresh AES-256 key generated in the HSM, wrapped under the domain key.
pub async fn generate_key(h: &Huawei, deadline: Instant) -> Result<WrappedKey, ApiError> {
    let msg = GenerateKeyRequest {
        wrapping_key: h.config.domain_key_label.clone(),
    };
    let r = rpc(
        h,
        WorkerRpc::VaultGenerateKey,
        deadline,
        msg,
        |mut c, r| async move { c.generate_key(r).await },
    )
    .await?;
    r.key.ok_or(ApiError::Internal)
}

pub async fn encrypt(
    h: &Huawei,
    deadline: Instant,
    key: &Material,
    plaintext: Bytes,
    aad: Vec<u8>,
) -> Result<Sealed, ApiError> {
    let msg = VaultEncryptRequest {
        key: Some(wrapped(key)),
        plaintext,
        aad: Bytes::from(aad),
    };
    let r = rpc(
        h,
        WorkerRpc::VaultEncrypt,
        deadline,
        msg,
        |mut c, r| async move { c.encrypt(r).await },
    )
    .await?;
    sealed_of(r.sealed)
}

pub async fn decrypt(
    h: &Huawei,
    deadline: Instant,
    key: &Material,
    sealed: Sealed,
    aad: Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let msg = VaultDecryptRequest {
        key: Some(wrapped(key)),
        sealed: Some(sealed),
        aad: Bytes::from(aad),
    };
    let r = rpc(
        h,
        WorkerRpc::VaultDecrypt,
        deadline,
        msg,
        |mut c, r| async move { c.decrypt(r).await },
    )
    .await?;
    Ok(wipe(r.plaintext))
}

/// Decrypt under `source` and encrypt under `dest` inside one worker.
pub async fn re_encrypt(
    h: &Huawei,
    deadline: Instant,
    source: (&Material, Sealed, Vec<u8>),
    dest: (&Material, Vec<u8>),
) -> Result<Sealed, ApiError> {
    let msg = ReEncryptRequest {
        source: Some(wrapped(source.0)),
        sealed: Some(source.1),
        source_aad: Bytes::from(source.2),
        destination: Some(wrapped(dest.0)),
        destination_aad: Bytes::from(dest.1),
    };
    let r = rpc(
        h,
        WorkerRpc::VaultReEncrypt,
        deadline,
        msg,
        |mut c, r| async move { c.re_encrypt(r).await },
    )
    .await?;
    sealed_of(r.sealed)
}

/// A data key of `len` bytes sealed under `key`, and in clear when asked.
pub async fn data_key(
    h: &Huawei,
    deadline: Instant,
    key: &Material,
    len: u32,
    aad: Vec<u8>,
    return_plaintext: bool,
) -> Result<(Zeroizing<Vec<u8>>, Sealed), ApiError> {
    let msg = GenerateDataKeyRequest {
        key: Some(wrapped(key)),
        length: len,
        aad: Bytes::from(aad),
        return_plaintext,
    };
    let r = rpc(
        h,
        WorkerRpc::VaultDataKey,
        deadline,
        msg,
        |mut c, r| async move { c.generate_data_key(r).await },
    )
    .await?;
    Ok((wipe(r.plaintext), sealed_of(r.sealed)?))
}

/// A key pair: (SPKI DER, PKCS#8 DER in clear when asked, PKCS#8 sealed).
pub async fn key_pair(
    h: &Huawei,
    deadline: Instant,
    key: &Material,
    spec: KeyPairSpec,
    aad: Vec<u8>,
    return_plaintext: bool,
) -> Result<(Bytes, Zeroizing<Vec<u8>>, Sealed), ApiError> {
    let msg = GenerateDataKeyPairRequest {
        key: Some(wrapped(key)),
        spec: spec.into(),
        aad: Bytes::from(aad),
        return_plaintext,
    };
    let r = rpc(
        h,
        WorkerRpc::VaultDataKeyPair,
        deadline,
        msg,
        |mut c, r| async move { c.generate_data_key_pair(r).await },
    )
    .await?;
    Ok((
        r.public_key_der,
        wipe(r.private_key_der),
        sealed_of(r.private_key_sealed)?,
    ))
}

/// `len` random bytes from the HSM.
pub async fn random(
    h: &Huawei,
    deadline: Instant,
    len: u32,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let msg = GenerateRandomRequest { length: len };
    let r = rpc(
        h,
        WorkerRpc::VaultRandom,
        deadline,
        msg,
        |mut c, r| async move { c.generate_random(r).await },
    )
    .await?;
    Ok(wipe(r.random))
}
