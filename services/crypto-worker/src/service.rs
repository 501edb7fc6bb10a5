//! `keymesh.crypto.v1.CryptoWorker`: request validation, key-status checks,
//! and the hand-off of HSM work to the session pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keymesh_pkcs11::Error as HsmError;
use keymesh_pkcs11::aead;
use keymesh_pkcs11::keys::KeyInfo;
use keymesh_proto::crypto::v1::crypto_worker_server::CryptoWorker;
use keymesh_proto::crypto::v1::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GetHealthRequest,
    GetHealthResponse, GetKeyMetadataRequest, GetKeyMetadataResponse, KeyStatus,
};
use tonic::{Request, Response, Status};
use zeroize::Zeroize as _;

use crate::error::Error;
use crate::health::HealthState;
use crate::key_status::KeyStatusWatch;
use crate::metrics;
use crate::pool::Pool;
use keymesh_contracts::key_status::KeyStatusFile;

/// Longest accepted key id (labels longer than this cannot have been created
/// by keymeshctl).
const MAX_KEY_ID_LEN: usize = 128;

/// Everything the RPC handlers share.
#[derive(Debug, Clone)]
pub struct CryptoService {
    pool: Pool,
    key_status: Arc<KeyStatusWatch>,
    health: Arc<HealthState>,
    worker_id: String,
    model: String,
    vendor: String,
}

impl CryptoService {
    pub fn new(
        pool: Pool,
        key_status: Arc<KeyStatusWatch>,
        health: Arc<HealthState>,
        worker_id: String,
        token: &keymesh_pkcs11::token::TokenDescription,
    ) -> Self {
        let model = format!(
            "{} firmware={} hardware={} sessions={}",
            token.model,
            token.firmware_version,
            token.hardware_version,
            pool.sessions()
        );
        Self {
            pool,
            key_status,
            health,
            worker_id,
            model,
            vendor: token.manufacturer.clone(),
        }
    }
}

/// Parse gRPC's `grpc-timeout` header (`<1-8 digits><H|M|S|m|u|n>`).
/// tonic enforces it around the handler but does not expose it, and the
/// session threads need it to skip jobs nobody waits for any more.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub(crate) fn deadline_of<T>(req: &Request<T>) -> Option<Instant> {
    let timeout = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)?;
    Instant::now().checked_add(timeout)
}

/// A key id the XKS service may use. Labels in the reserved prefix (domain
/// keys, the health-check key, session objects) are keymesh's own: they
/// answer exactly like a missing key whatever the caller (the edge already
/// refuses them; this holds even for a caller that bypasses it).
fn check_key_id(key_id: &str) -> Result<(), Error> {
    if key_id.is_empty() {
        return Err(Error::InvalidArgument("key_id is empty"));
    }
    if key_id.len() > MAX_KEY_ID_LEN {
        return Err(Error::InvalidArgument("key_id is longer than 128 bytes"));
    }
    if keymesh_common::labels::is_reserved(key_id) {
        return Err(HsmError::KeyNotFound {
            key_id: key_id.to_owned(),
        }
        .into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Encrypt,
    Decrypt,
}

/// Checks that need no HSM call, in contract order: disabled, not AES-256,
/// usage not permitted.
fn check_key_for(
    key_id: &str,
    key: &KeyInfo,
    status: &KeyStatusFile,
    operation: Operation,
) -> Result<(), Error> {
    if status.is_disabled(key_id) {
        return Err(Error::KeyDisabled {
            key_id: key_id.to_owned(),
        });
    }
    if !key.is_aes_256() {
        return Err(HsmError::UnsupportedKey {
            key_id: key_id.to_owned(),
            key_spec: key.key_spec(),
        }
        .into());
    }
    let (permitted, name) = match operation {
        Operation::Encrypt => (key.usage.encrypt, "ENCRYPT"),
        Operation::Decrypt => (key.usage.decrypt, "DECRYPT"),
    };
    if !permitted {
        return Err(HsmError::UsageNotPermitted {
            key_id: key_id.to_owned(),
            operation: name,
        }
        .into());
    }
    Ok(())
}

/// Log the failure once (here) and turn it into the wire status.
pub(crate) fn reply<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            if e.is_internal() {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "request failed");
            } else {
                tracing::info!(error = %e, "request rejected");
            }
            Err(e.into())
        }
    }
}

/// Best-effort wipe of a request buffer we hold the only reference to. prost
/// may slice request fields out of a shared receive buffer, in which case the
/// wipe is skipped (the buffer is freed, not kept).
pub(crate) fn wipe(buf: Bytes) {
    if let Ok(mut owned) = buf.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

#[tonic::async_trait]
impl CryptoWorker for CryptoService {
    #[tracing::instrument(level = "debug", skip_all, fields(key_id = %request.get_ref().key_id))]
    async fn get_key_metadata(
        &self,
        request: Request<GetKeyMetadataRequest>,
    ) -> Result<Response<GetKeyMetadataResponse>, Status> {
        let deadline = deadline_of(&request);
        let key_id = request.into_inner().key_id;
        let result = async {
            check_key_id(&key_id)?;
            let id = key_id.clone();
            let key = self
                .pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let key = ctx.key(&id);
                    metrics::record_hsm("get_key_metadata", started, &key);
                    key
                })
                .await?;
            // Disabled is a status to report here, not an error.
            let status = if self.key_status.get().is_disabled(&key_id) {
                KeyStatus::Disabled
            } else {
                KeyStatus::Enabled
            };
            Ok(GetKeyMetadataResponse {
                key_spec: key.key_spec(),
                key_usage: key.usage.names().into_iter().map(str::to_owned).collect(),
                status: status as i32,
            })
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_id = %request.get_ref().key_id))]
    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        if let Err(e) = check_key_id(&req.key_id) {
            wipe(req.plaintext);
            return reply(Err(e));
        }
        let status = self.key_status.get();
        let EncryptRequest {
            key_id,
            plaintext,
            aad,
            verify,
            integrity_prefix,
        } = req;
        let job_plaintext = plaintext.clone();
        let result = self
            .pool
            .run(deadline, move |ctx| {
                let started = Instant::now();
                let sealed = ctx.with_key(&key_id, |session, rng, key| {
                    check_key_for(&key_id, key, &status, Operation::Encrypt)?;
                    aead::seal(
                        session,
                        key.handle,
                        &key_id,
                        rng,
                        aead::SealRequest {
                            plaintext: &job_plaintext,
                            aad: &aad,
                            integrity_prefix: integrity_prefix.as_deref(),
                            verify,
                        },
                    )
                    .map_err(Error::from)
                });
                metrics::record_hsm("encrypt", started, &sealed);
                sealed
            })
            .await;
        // The job (and its clone of the plaintext) is gone by now.
        wipe(plaintext);
        reply(result.map(|sealed| EncryptResponse {
            ciphertext: sealed.ciphertext.into(),
            iv: sealed.iv.into(),
            tag: sealed.tag.into(),
            integrity_value: sealed.integrity_value.unwrap_or_default().into(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key_id = %request.get_ref().key_id))]
    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        if let Err(e) =
            check_key_id(&req.key_id).and_then(|()| Ok(aead::check_lengths(&req.iv, &req.tag)?))
        {
            return reply(Err(e));
        }
        let status = self.key_status.get();
        let result = self
            .pool
            .run(deadline, move |ctx| {
                let started = Instant::now();
                let plaintext = ctx.with_key(&req.key_id, |session, _, key| {
                    check_key_for(&req.key_id, key, &status, Operation::Decrypt)?;
                    let plaintext = aead::open(
                        session,
                        key.handle,
                        &req.key_id,
                        &req.iv,
                        &req.ciphertext,
                        &req.tag,
                        &req.aad,
                    )?;
                    // The wire copy cannot be wiped once handed to tonic; the
                    // HSM's buffer is (Zeroizing drop).
                    Ok(Bytes::copy_from_slice(&plaintext))
                });
                metrics::record_hsm("decrypt", started, &plaintext);
                plaintext
            })
            .await;
        reply(result.map(|plaintext| DecryptResponse { plaintext }))
    }

    async fn get_health(
        &self,
        _request: Request<GetHealthRequest>,
    ) -> Result<Response<GetHealthResponse>, Status> {
        let (status, age) = self.health.status(Instant::now());
        Ok(Response::new(GetHealthResponse {
            worker_id: self.worker_id.clone(),
            model: self.model.clone(),
            vendor: self.vendor.clone(),
            status: status as i32,
            checked_age_ms: age.map_or(u64::MAX, |a| {
                u64::try_from(a.as_millis()).unwrap_or(u64::MAX)
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn grpc_timeout_header() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("1x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
    }

    #[test]
    fn key_ids() {
        assert!(check_key_id("k").is_ok());
        assert!(matches!(check_key_id(""), Err(Error::InvalidArgument(_))));
        assert!(check_key_id(&"a".repeat(129)).is_err());
        for internal in [
            keymesh_pkcs11::keys::HEALTH_KEY_LABEL,
            keymesh_pkcs11::wrap::DEFAULT_DOMAIN_KEY_LABEL,
            keymesh_pkcs11::wrap::VAULT_KEY_LABEL,
        ] {
            assert!(
                matches!(
                    check_key_id(internal),
                    Err(Error::Pkcs11(HsmError::KeyNotFound { .. }))
                ),
                "{internal}"
            );
        }
    }
}
