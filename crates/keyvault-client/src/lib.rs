//! keymesh KeyVault client: the adapter that gives the KMS domain its
//! key-material port. In hexagonal terms `keymesh-kms-core` owns the port
//! ([`keymesh_kms_core::Vault`], with its [`VaultError`]) and this crate is
//! one adapter for it: [`WorkerVault`] sends every operation as one
//! `KeyVault` RPC through the crypto-worker pool
//! ([`keymesh_worker_pool::WorkerPool`]: P2C balancing, deadline as
//! grpc-timeout, shedding, one retry on another worker as
//! [`WorkerRpc::retry`] allows). Plaintext handed back by a worker is kept
//! in zeroizing buffers. Worker failures become [`VaultError`]s here
//! ([`PoolFailure`]), by their machine-readable reason; the edge's wire
//! table maps those, so neither the domain nor this crate knows a wire code.
//! The proto conversions are private to this one file: the crate is a
//! single seam.

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

use keymesh_worker_pool::{PoolError, WorkerFailure, WorkerPool, WorkerRpc};

/// The crypto-worker pool as the domain's vault.
#[derive(Debug)]
pub struct WorkerVault {
    workers: Arc<WorkerPool>,
    /// Label of the HSM key new material is wrapped under.
    domain_key_label: String,
}

impl WorkerVault {
    /// The vault over `workers`, wrapping new material under the HSM key
    /// labelled `domain_key_label`.
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
/// Public so the edge can prove a worker failure reaches its wire table
/// with the codes it had when handlers called the pool themselves.
#[derive(Debug)]
pub struct PoolFailure(pub VaultError);

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

    fn status(code: tonic::Code, reason: ErrorReason) -> tonic::Status {
        let info = ErrorInfo {
            reason: reason as i32,
        };
        tonic::Status::with_details(code, "x", info.encode_to_vec().into())
    }

    fn vault_error(s: &tonic::Status) -> VaultError {
        <PoolFailure as PoolError>::from_status(s).0
    }

    fn worker_failure(e: VaultError) -> WorkerFailure {
        match e {
            VaultError::Failed(src) => *src.downcast::<WorkerFailure>().unwrap(),
            other => panic!("not a worker failure: {other:?}"),
        }
    }

    /// Timeouts, HSM pressure and the caller's own mistakes keep their
    /// domain meaning; everything else is a typed worker failure.
    #[test]
    fn statuses_become_vault_errors_by_reason() {
        use tonic::Code as G;
        let s = status(G::DeadlineExceeded, ErrorReason::Unspecified);
        assert!(matches!(vault_error(&s), VaultError::Timeout));
        let s = status(G::Cancelled, ErrorReason::HsmBusy);
        assert!(matches!(vault_error(&s), VaultError::Timeout));
        let s = status(G::InvalidArgument, ErrorReason::InvalidCiphertext);
        assert!(matches!(vault_error(&s), VaultError::Ciphertext));
        let s = status(G::ResourceExhausted, ErrorReason::HsmBusy);
        assert!(matches!(vault_error(&s), VaultError::Throttled));
        let s = status(G::InvalidArgument, ErrorReason::InvalidArgument);
        assert!(matches!(vault_error(&s), VaultError::InvalidArgument));
        // Unavailable/Unknown are transport trouble whatever the reason says.
        let s = status(G::Unavailable, ErrorReason::InvalidCiphertext);
        assert!(matches!(
            worker_failure(vault_error(&s)),
            WorkerFailure::Status {
                code: G::Unavailable,
                reason: ErrorReason::InvalidCiphertext,
                ..
            }
        ));
        let s = status(G::Internal, ErrorReason::HsmFailure);
        assert!(matches!(
            worker_failure(vault_error(&s)),
            WorkerFailure::Status {
                code: G::Internal,
                reason: ErrorReason::HsmFailure,
                ..
            }
        ));
        // No details at all: unspecified reason, still a worker failure.
        let s = tonic::Status::internal("boom");
        assert!(matches!(
            worker_failure(vault_error(&s)),
            WorkerFailure::Status {
                reason: ErrorReason::Unspecified,
                ..
            }
        ));
    }

    #[test]
    fn shed_and_no_worker() {
        assert!(matches!(
            <PoolFailure as PoolError>::shed().0,
            VaultError::Throttled
        ));
        assert!(matches!(
            worker_failure(<PoolFailure as PoolError>::no_worker().0),
            WorkerFailure::NoWorker
        ));
    }

    #[test]
    fn proto_conversions() {
        assert!(matches!(from_wire(None), Err(VaultError::Incomplete)));
        let s = Sealed {
            iv: Bytes::from_static(b"iv"),
            ciphertext: Bytes::from_static(b"ct"),
            tag: Bytes::from_static(b"tag"),
        };
        let back = from_wire(Some(to_wire(s))).unwrap();
        assert_eq!(
            (&back.iv[..], &back.ciphertext[..], &back.tag[..]),
            (&b"iv"[..], &b"ct"[..], &b"tag"[..])
        );
        assert_eq!(
            spec_to_wire(KeyPairSpec::EcSecp256k1),
            pb::KeyPairSpec::EcSecp256k1
        );
        assert_eq!(spec_to_wire(KeyPairSpec::Rsa3072), pb::KeyPairSpec::Rsa3072);
        let m = Material {
            key_id: "k".into(),
            version: 1,
            wrapping_key: "dk".into(),
            wrapped: vec![1, 2, 3],
            created_ms: 0,
        };
        let w = wrapped(&m);
        assert_eq!(
            (w.wrapping_key.as_str(), &w.wrapped[..]),
            ("dk", &[1u8, 2, 3][..])
        );
    }
}
