//! The edge's [`Vault`]: every KMS operation on key material as one
//! `KeyVault` RPC through the shared worker pool (P2C balancing, deadline
//! as grpc-timeout, shedding, one retry on another worker as
//! [`WorkerRpc::retry`] allows). Plaintext handed back by a worker is kept
//! in zeroizing buffers. Worker failures become [`VaultError`]s here, by
//! their machine-readable reason; the wire table maps those.

use std::sync::Arc;

use bytes::Bytes;
use keymesh_kms_core::Material;
use keymesh_kms_core::vault::{
    DataKey, DataKeyPair, KeyCheck, KeyPairSpec, Sealed, Vault, VaultError, WrappedKey,
};
use keymesh_proto::crypto::v1 as pb;
use keymesh_proto::crypto::v1::key_vault_client::KeyVaultClient;
use keymesh_proto::crypto::v1::{
    ErrorInfo, ErrorReason, GenerateDataKeyPairRequest, GenerateDataKeyRequest, GenerateKeyRequest,
    GenerateRandomRequest, ReEncryptRequest, VaultDecryptRequest, VaultEncryptRequest,
};
use prost::Message as _;
use tokio::time::Instant;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::http::cause::WorkerFailure;
use crate::mesh::{PoolError, WorkerPool, WorkerRpc};

/// The crypto-worker pool as the domain's vault.
#[derive(Debug)]
pub struct WorkerVault {
    workers: Arc<WorkerPool>,
    /// Label of the HSM key new material is wrapped under.
    domain_key_label: String,
}

impl WorkerVault {
    pub fn new(workers: Arc<WorkerPool>, domain_key_label: String) -> Self {
        Self {
            workers,
            domain_key_label,
        }
    }

    /// One `KeyVault` RPC through the worker pool: `send` makes the call on
    /// a client over the channel the pool picked.
    async fn rpc<M, T, F, Fut>(
        &self,
        op: WorkerRpc,
        deadline: Instant,
        msg: M,
        mut send: F,
    ) -> Result<T, VaultError>
    where
        M: Clone,
        F: FnMut(KeyVaultClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.workers
            .call(op, deadline, msg, |ch, r| send(KeyVaultClient::new(ch), r))
            .await
            .map_err(|PoolFailure(e)| e)
    }
}

/// A [`VaultError`] as the pool builds it (the pool's error trait and the
/// domain's error type both live in other crates, hence the wrapper).
struct PoolFailure(VaultError);

impl PoolError for PoolFailure {
    fn no_worker() -> Self {
        Self(VaultError::Failed(Box::new(WorkerFailure::NoWorker)))
    }
    fn shed() -> Self {
        Self(VaultError::Throttled)
    }
    /// A crypto-worker failure by its machine-readable reason.
    fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code as G;
        match status.code() {
            G::DeadlineExceeded | G::Cancelled => return Self(VaultError::Timeout),
            G::Unavailable | G::Unknown => {
                return Self(VaultError::Failed(Box::new(WorkerFailure::from(status))));
            }
            _ => {}
        }
        Self(
            match ErrorInfo::decode(status.details())
                .map(|i| i.reason())
                .unwrap_or(ErrorReason::Unspecified)
            {
                ErrorReason::InvalidCiphertext => VaultError::Ciphertext,
                ErrorReason::HsmBusy => VaultError::Throttled,
                ErrorReason::InvalidArgument => VaultError::InvalidArgument,
                _ => VaultError::Failed(Box::new(WorkerFailure::from(status))),
            },
        )
    }
}

fn wrapped(m: &Material) -> pb::WrappedKey {
    pb::WrappedKey {
        wrapping_key: m.wrapping_key.clone(),
        wrapped: Bytes::from(m.wrapped.clone()),
    }
}

fn to_wire(s: Sealed) -> pb::Sealed {
    pb::Sealed {
        iv: s.iv,
        ciphertext: s.ciphertext,
        tag: s.tag,
    }
}

fn from_wire(s: Option<pb::Sealed>) -> Result<Sealed, VaultError> {
    let s = s.ok_or(VaultError::Incomplete)?;
    Ok(Sealed {
        iv: s.iv,
        ciphertext: s.ciphertext,
        tag: s.tag,
    })
}

fn spec_to_wire(s: KeyPairSpec) -> pb::KeyPairSpec {
    match s {
        KeyPairSpec::Rsa2048 => pb::KeyPairSpec::Rsa2048,
        KeyPairSpec::Rsa3072 => pb::KeyPairSpec::Rsa3072,
        KeyPairSpec::Rsa4096 => pb::KeyPairSpec::Rsa4096,
        KeyPairSpec::EcP256 => pb::KeyPairSpec::EcP256,
        KeyPairSpec::EcP384 => pb::KeyPairSpec::EcP384,
        KeyPairSpec::EcP521 => pb::KeyPairSpec::EcP521,
        KeyPairSpec::EcSecp256k1 => pb::KeyPairSpec::EcSecp256k1,
    }
}

/// Zeroize a buffer the worker sent if nobody else holds it.
fn wipe(b: Bytes) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b.into())
}

#[async_trait::async_trait]
impl Vault for WorkerVault {
    async fn generate_key(&self, deadline: Instant) -> Result<WrappedKey, VaultError> {
        let msg = GenerateKeyRequest {
            wrapping_key: self.domain_key_label.clone(),
        };
        let r = self
            .rpc(
                WorkerRpc::VaultGenerateKey,
                deadline,
                msg,
                |mut c, r| async move { c.generate_key(r).await },
            )
            .await?;
        let k = r.key.ok_or(VaultError::Incomplete)?;
        Ok(WrappedKey {
            wrapping_key: k.wrapping_key,
            wrapped: k.wrapped.to_vec(),
        })
    }

    async fn encrypt(
        &self,
        deadline: Instant,
        key: &Material,
        plaintext: Bytes,
        aad: Vec<u8>,
    ) -> Result<Sealed, VaultError> {
        let msg = VaultEncryptRequest {
            key: Some(wrapped(key)),
            plaintext,
            aad: Bytes::from(aad),
        };
        let r = self
            .rpc(
                WorkerRpc::VaultEncrypt,
                deadline,
                msg,
                |mut c, r| async move { c.encrypt(r).await },
            )
            .await?;
        from_wire(r.sealed)
    }

    async fn decrypt(
        &self,
        deadline: Instant,
        key: &Material,
        sealed: Sealed,
        aad: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let msg = VaultDecryptRequest {
            key: Some(wrapped(key)),
            sealed: Some(to_wire(sealed)),
            aad: Bytes::from(aad),
        };
        let r = self
            .rpc(
                WorkerRpc::VaultDecrypt,
                deadline,
                msg,
                |mut c, r| async move { c.decrypt(r).await },
            )
            .await?;
        Ok(wipe(r.plaintext))
    }

    async fn re_encrypt(
        &self,
        deadline: Instant,
        source: (&Material, Sealed, Vec<u8>),
        destination: (&Material, Vec<u8>),
    ) -> Result<Sealed, VaultError> {
        let msg = ReEncryptRequest {
            source: Some(wrapped(source.0)),
            sealed: Some(to_wire(source.1)),
            source_aad: Bytes::from(source.2),
            destination: Some(wrapped(destination.0)),
            destination_aad: Bytes::from(destination.1),
        };
        let r = self
            .rpc(
                WorkerRpc::VaultReEncrypt,
                deadline,
                msg,
                |mut c, r| async move { c.re_encrypt(r).await },
            )
            .await?;
        from_wire(r.sealed)
    }

    async fn data_key(
        &self,
        deadline: Instant,
        key: &Material,
        len: u32,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKey, VaultError> {
        let msg = GenerateDataKeyRequest {
            key: Some(wrapped(key)),
            length: len,
            aad: Bytes::from(aad),
            return_plaintext,
        };
        let r = self
            .rpc(
                WorkerRpc::VaultDataKey,
                deadline,
                msg,
                |mut c, r| async move { c.generate_data_key(r).await },
            )
            .await?;
        Ok(DataKey {
            plaintext: wipe(r.plaintext),
            sealed: from_wire(r.sealed)?,
        })
    }

    async fn data_key_pair(
        &self,
        deadline: Instant,
        key: &Material,
        spec: KeyPairSpec,
        aad: Vec<u8>,
        return_plaintext: bool,
    ) -> Result<DataKeyPair, VaultError> {
        let msg = GenerateDataKeyPairRequest {
            key: Some(wrapped(key)),
            spec: spec_to_wire(spec).into(),
            aad: Bytes::from(aad),
            return_plaintext,
        };
        let r = self
            .rpc(
                WorkerRpc::VaultDataKeyPair,
                deadline,
                msg,
                |mut c, r| async move { c.generate_data_key_pair(r).await },
            )
            .await?;
        Ok(DataKeyPair {
            public_key_der: r.public_key_der,
            private_key_der: wipe(r.private_key_der),
            sealed: from_wire(r.private_key_sealed)?,
        })
    }

    async fn random(&self, deadline: Instant, len: u32) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let msg = GenerateRandomRequest { length: len };
        let r = self
            .rpc(
                WorkerRpc::VaultRandom,
                deadline,
                msg,
                |mut c, r| async move { c.generate_random(r).await },
            )
            .await?;
        Ok(wipe(r.random))
    }

    async fn domain_key_checks(&self, label: &str) -> Vec<(String, KeyCheck)> {
        let members = self.workers.members();
        let asked = futures_util::future::join_all(members.iter().map(|w| async {
            ask(w.channel(), label)
                .await
                .map(|a| (w.endpoint.clone(), a))
        }))
        .await;
        asked.into_iter().flatten().collect()
    }
}

/// One worker's answer budget for the domain key check.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What one worker says about the domain key (`None`: no answer in time).
async fn ask(channel: Channel, label: &str) -> Option<KeyCheck> {
    let mut req = tonic::Request::new(pb::GetDomainKeyCheckRequest {
        label: label.to_owned(),
    });
    req.set_timeout(ASK_TIMEOUT);
    let answer = tokio::time::timeout(
        ASK_TIMEOUT,
        KeyVaultClient::new(channel).get_domain_key_check(req),
    )
    .await;
    match answer {
        Ok(Ok(r)) => Some(KeyCheck::Kcv(r.into_inner().kcv)),
        Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => Some(KeyCheck::Missing),
        Ok(Err(s)) => {
            tracing::debug!(code = ?s.code(), error = %s.message(), "domain key check failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::huawei::error::{ApiError, Dialect};

    fn status(code: tonic::Code, reason: ErrorReason) -> tonic::Status {
        let info = ErrorInfo {
            reason: reason as i32,
        };
        tonic::Status::with_details(code, "x", info.encode_to_vec().into())
    }

    /// A worker failure reaches the wire through the vault exactly as it
    /// did when handlers called the pool themselves (`ApiError::from_worker`).
    #[test]
    fn worker_failures_keep_their_wire_codes() {
        use tonic::Code as G;
        let cases = [
            status(G::DeadlineExceeded, ErrorReason::Unspecified),
            status(G::Cancelled, ErrorReason::Unspecified),
            status(G::Unavailable, ErrorReason::Unspecified),
            status(G::Unknown, ErrorReason::Unspecified),
            status(G::InvalidArgument, ErrorReason::InvalidCiphertext),
            status(G::ResourceExhausted, ErrorReason::HsmBusy),
            status(G::InvalidArgument, ErrorReason::InvalidArgument),
            status(G::Internal, ErrorReason::HsmFailure),
        ];
        for s in cases {
            let via_vault = ApiError::from(<PoolFailure as PoolError>::from_status(&s).0);
            let direct = ApiError::from_worker(&s);
            for d in [Dialect::Kms, Dialect::Csms] {
                assert_eq!(via_vault.wire(d), direct.wire(d), "{s:?}");
            }
            // The 5xx cause (the source chain) is the same too.
            assert_eq!(
                crate::http::cause::Cause::of(&via_vault).0,
                crate::http::cause::Cause::of(&direct).0
            );
        }
        let shed = ApiError::from(<PoolFailure as PoolError>::shed().0);
        assert_eq!(shed.wire(Dialect::Kms).code, "APIGW.0308");
        let none = ApiError::from(<PoolFailure as PoolError>::no_worker().0);
        assert!(matches!(none, ApiError::Worker(WorkerFailure::NoWorker)));
    }
}
