//! `keymesh.crypto.v1.KeyVault`: customer master keys that live outside the
//! HSM, wrapped under the domain key ([`crate::wrapped`]), and the data keys,
//! data key pairs and random bytes made with them; HMAC keys and signing key
//! pairs (`signing`) kept wrapped the same way.
//!
//! Like [`crate::service`]: requests are validated here, every HSM call runs
//! as one job on a session thread of the pool under the caller's deadline,
//! HSM time is recorded per operation and outcome, and failures become a
//! status with an `ErrorInfo` reason in one place ([`crate::error`]).
//! Plaintext is zeroized where the worker owns it: request buffers (best
//! effort, `wipe`), intermediate plaintext (ReEncrypt), generated data
//! keys and private keys.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use keymesh_pkcs11::Error as HsmError;
use keymesh_pkcs11::aead;
use keymesh_pkcs11::mac::{self, MacAlg};
use keymesh_pkcs11::wrap::{self, VAULT_KEY_ID, WrappedKeyRef};
use keymesh_proto::crypto::v1::key_vault_server::KeyVault;
use keymesh_proto::crypto::v1::{
    GenerateDataKeyPairRequest, GenerateDataKeyPairResponse, GenerateDataKeyRequest,
    GenerateDataKeyResponse, GenerateKeyRequest, GenerateKeyResponse, GenerateMacKeyRequest,
    GenerateMacKeyResponse, GenerateMacRequest, GenerateMacResponse, GenerateRandomRequest,
    GenerateRandomResponse, GenerateSigningKeyPairRequest, GenerateSigningKeyPairResponse,
    GetDomainKeyCheckRequest, GetDomainKeyCheckResponse, MacAlgorithm, ReEncryptRequest,
    ReEncryptResponse, Sealed, SignRequest, SignResponse, VaultDecryptRequest,
    VaultDecryptResponse, VaultEncryptRequest, VaultEncryptResponse, VerifyMacRequest,
    VerifyMacResponse, WrappedKey,
};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::keypair::{self, PairSpec};
use crate::metrics;
use crate::pool::Pool;
use crate::service::{deadline_of, reply, wipe};

mod signing;

/// Longest data key and random string, in bytes.
pub const MAX_GENERATED_LEN: u32 = 1024;

/// Everything the KeyVault handlers share.
#[derive(Debug, Clone)]
pub struct VaultService {
    pool: Pool,
    /// `--domain-key-label`: the wrapping key of GenerateKey requests that
    /// name none.
    domain_key: Arc<str>,
}

impl VaultService {
    pub fn new(pool: Pool, domain_key: &str) -> Self {
        Self {
            pool,
            domain_key: Arc::from(domain_key),
        }
    }
}

/// A request's wrapped key, checked for shape (whether the bytes unwrap is
/// the HSM's call).
struct Wrapped {
    label: String,
    wrapped: Bytes,
}

/// A wrapping key label this service accepts: well-formed, and in the
/// domain-key class. KeyVault callers name wrapping keys, never XKS keys or
/// other internal objects, so any other label answers exactly like a missing
/// wrapping key.
fn check_wrapping_key(label: &str) -> Result<(), Error> {
    wrap::check_label(label).map_err(Error::InvalidArgument)?;
    if !keymesh_common::labels::is_wrapping_key(label) {
        return Err(HsmError::WrappingKeyMissing {
            label: label.to_owned(),
            problem: "is not on the token",
        }
        .into());
    }
    Ok(())
}

impl Wrapped {
    fn from_proto(key: Option<WrappedKey>, missing: &'static str) -> Result<Self, Error> {
        let key = key.ok_or(Error::InvalidArgument(missing))?;
        check_wrapping_key(&key.wrapping_key)?;
        Ok(Self {
            label: key.wrapping_key,
            wrapped: key.wrapped,
        })
    }

    fn as_ref(&self) -> WrappedKeyRef<'_> {
        WrappedKeyRef {
            wrapping_key: &self.label,
            wrapped: &self.wrapped,
        }
    }
}

/// A ciphertext to open: present, with IV and tag lengths AES-GCM accepts.
fn sealed_in(sealed: Option<Sealed>) -> Result<Sealed, Error> {
    let sealed = sealed.ok_or(Error::InvalidArgument("sealed is missing"))?;
    aead::check_lengths(&sealed.iv, &sealed.tag)?;
    Ok(sealed)
}

fn sealed_out(sealed: aead::Sealed) -> Sealed {
    Sealed {
        iv: sealed.iv.into(),
        ciphertext: sealed.ciphertext.into(),
        tag: sealed.tag.into(),
    }
}

/// A requested data key or random length, 1..=[`MAX_GENERATED_LEN`].
fn generated_len(length: u32) -> Result<usize, Error> {
    if length == 0 || length > MAX_GENERATED_LEN {
        return Err(Error::InvalidArgument("length must be 1..=1024 bytes"));
    }
    usize::try_from(length).map_err(|_| Error::InvalidArgument("length must be 1..=1024 bytes"))
}

/// The HMAC algorithm of a request; UNSPECIFIED and unknown values are
/// refused.
fn mac_alg(algorithm: i32) -> Result<MacAlg, Error> {
    match MacAlgorithm::try_from(algorithm) {
        Ok(MacAlgorithm::HmacSha256) => Ok(MacAlg::HmacSha256),
        Ok(MacAlgorithm::HmacSha384) => Ok(MacAlg::HmacSha384),
        Ok(MacAlgorithm::HmacSha512) => Ok(MacAlg::HmacSha512),
        Ok(MacAlgorithm::Unspecified) | Err(_) => {
            Err(Error::InvalidArgument("unsupported MAC algorithm"))
        }
    }
}

/// An HMAC key size of GenerateMacKey, checked before the pool is asked
/// (the pkcs11 crate checks again).
fn mac_key_bits(bits: u32) -> Result<u32, Error> {
    if mac::HMAC_KEY_BITS.contains(&bits) {
        Ok(bits)
    } else {
        Err(Error::InvalidArgument(
            "HMAC key size must be 256, 384 or 512 bits",
        ))
    }
}

/// Refuse an algorithm whose hash is longer than the key in `wrapped`.
///
/// Why here: SoftHSM2 (and the HMAC_256/384/512 key specs) want a key at
/// least as long as the hash output, and the HSM says so only as
/// CKR_KEY_SIZE_RANGE from C_SignInit, which would reach the caller as an
/// HSM failure. RFC 5649 output is 8 bytes longer than the key padded to 8
/// bytes, so the blob length tells the key length. Blobs shorter than the
/// smallest HMAC key's (256 bits: 40 bytes) are left to the HSM, which
/// rejects them as invalid key material.
fn check_mac_key_len(wrapped: &Wrapped, alg: MacAlg) -> Result<(), Error> {
    const MIN_BLOB: usize = 8 + 32;
    let len = wrapped.wrapped.len();
    if len >= MIN_BLOB && len - 8 < alg.tag_len() {
        return Err(Error::InvalidArgument(
            "the MAC algorithm needs a longer key (HMAC_256 keys: HMAC-SHA-256 only)",
        ));
    }
    Ok(())
}

/// Seal `plaintext` under the unwrapped key `key`. `verify`: decrypt the
/// result before answering, for results that may be the only copy of a
/// secret (a data key returned without plaintext, a re-encrypted blob
/// whose source may be discarded).
fn seal(
    session: &cryptoki::session::Session,
    rng: &ring::rand::SystemRandom,
    key: cryptoki::object::ObjectHandle,
    plaintext: &[u8],
    aad: &[u8],
    verify: bool,
) -> Result<aead::Sealed, Error> {
    aead::seal(
        session,
        key,
        VAULT_KEY_ID,
        rng,
        aead::SealRequest {
            plaintext,
            aad,
            integrity_prefix: None,
            verify,
        },
    )
    .map_err(Error::from)
}

#[tonic::async_trait]
impl KeyVault for VaultService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_key(
        &self,
        request: Request<GenerateKeyRequest>,
    ) -> Result<Response<GenerateKeyResponse>, Status> {
        let deadline = deadline_of(&request);
        let mut label = request.into_inner().wrapping_key;
        if label.is_empty() {
            label = self.domain_key.to_string();
        }
        let result = async {
            check_wrapping_key(&label)?;
            let job_label = label.clone();
            let wrapped = self
                .pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let wrapped = ctx
                        .with_session(|s, _| Ok(wrap::generate_wrapped(s, &job_label)?))
                        .and_then(|wrapped| {
                            // Unwrap at once: a blob that does not unwrap is
                            // never handed out to be stored, and this worker's
                            // cache is warm for the first Encrypt.
                            let key = WrappedKeyRef {
                                wrapping_key: &job_label,
                                wrapped: &wrapped,
                            };
                            ctx.with_unwrapped([key], |_, _, _| Ok(()))?;
                            Ok(wrapped)
                        });
                    metrics::record_hsm("vault_generate_key", started, &wrapped);
                    wrapped
                })
                .await?;
            Ok(GenerateKeyResponse {
                key: Some(WrappedKey {
                    wrapping_key: label,
                    wrapped: wrapped.into(),
                }),
            })
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn encrypt(
        &self,
        request: Request<VaultEncryptRequest>,
    ) -> Result<Response<VaultEncryptResponse>, Status> {
        let deadline = deadline_of(&request);
        let VaultEncryptRequest {
            key,
            plaintext,
            aad,
        } = request.into_inner();
        let key = match Wrapped::from_proto(key, "key is missing") {
            Ok(k) => k,
            Err(e) => {
                wipe(plaintext);
                return reply(Err(e));
            }
        };
        let job_plaintext = plaintext.clone();
        let result = self
            .pool
            .run(deadline, move |ctx| {
                let started = Instant::now();
                let sealed = ctx.with_unwrapped([key.as_ref()], |s, rng, [k]| {
                    seal(s, rng, k, &job_plaintext, &aad, false)
                });
                metrics::record_hsm("vault_encrypt", started, &sealed);
                sealed
            })
            .await;
        // The job (and its clone of the plaintext) is gone by now.
        wipe(plaintext);
        reply(result.map(|sealed| VaultEncryptResponse {
            sealed: Some(sealed_out(sealed)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn decrypt(
        &self,
        request: Request<VaultDecryptRequest>,
    ) -> Result<Response<VaultDecryptResponse>, Status> {
        let deadline = deadline_of(&request);
        let VaultDecryptRequest { key, sealed, aad } = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(key, "key is missing")?;
            let sealed = sealed_in(sealed)?;
            self.pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let plaintext = ctx.with_unwrapped([key.as_ref()], |s, _, [k]| {
                        let plaintext = aead::open(
                            s,
                            k,
                            VAULT_KEY_ID,
                            &sealed.iv,
                            &sealed.ciphertext,
                            &sealed.tag,
                            &aad,
                        )?;
                        // The wire copy cannot be wiped once handed to tonic;
                        // the HSM's buffer is (Zeroizing drop).
                        Ok(Bytes::copy_from_slice(&plaintext))
                    });
                    metrics::record_hsm("vault_decrypt", started, &plaintext);
                    plaintext
                })
                .await
        }
        .await;
        reply(result.map(|plaintext| VaultDecryptResponse { plaintext }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn re_encrypt(
        &self,
        request: Request<ReEncryptRequest>,
    ) -> Result<Response<ReEncryptResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let result = async {
            let source = Wrapped::from_proto(req.source, "source is missing")?;
            let destination = Wrapped::from_proto(req.destination, "destination is missing")?;
            let sealed = sealed_in(req.sealed)?;
            let (source_aad, destination_aad) = (req.source_aad, req.destination_aad);
            self.pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let resealed = ctx.with_unwrapped(
                        [source.as_ref(), destination.as_ref()],
                        |s, rng, [from, to]| {
                            // Zeroized on drop; never leaves this closure.
                            let plaintext = aead::open(
                                s,
                                from,
                                VAULT_KEY_ID,
                                &sealed.iv,
                                &sealed.ciphertext,
                                &sealed.tag,
                                &source_aad,
                            )?;
                            seal(s, rng, to, &plaintext, &destination_aad, true)
                        },
                    );
                    metrics::record_hsm("vault_re_encrypt", started, &resealed);
                    resealed
                })
                .await
        }
        .await;
        reply(result.map(|sealed| ReEncryptResponse {
            sealed: Some(sealed_out(sealed)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_data_key(
        &self,
        request: Request<GenerateDataKeyRequest>,
    ) -> Result<Response<GenerateDataKeyResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(req.key, "key is missing")?;
            let len = generated_len(req.length)?;
            let (aad, return_plaintext) = (req.aad, req.return_plaintext);
            self.pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let made = ctx.with_unwrapped([key.as_ref()], |s, rng, [k]| {
                        let mut data_key = Zeroizing::new(vec![0u8; len]);
                        s.generate_random_slice(&mut data_key).map_err(Error::hsm)?;
                        let sealed = seal(s, rng, k, &data_key, &aad, true)?;
                        let plaintext = if return_plaintext {
                            Bytes::copy_from_slice(&data_key)
                        } else {
                            Bytes::new()
                        };
                        Ok(GenerateDataKeyResponse {
                            plaintext,
                            sealed: Some(sealed_out(sealed)),
                        })
                    });
                    metrics::record_hsm("vault_generate_data_key", started, &made);
                    made
                })
                .await
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_data_key_pair(
        &self,
        request: Request<GenerateDataKeyPairRequest>,
    ) -> Result<Response<GenerateDataKeyPairResponse>, Status> {
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(req.key, "key is missing")?;
            let spec = PairSpec::from_proto(req.spec)
                .ok_or(Error::InvalidArgument("unsupported key pair spec"))?;
            let (aad, return_plaintext) = (req.aad, req.return_plaintext);
            let job = move |ctx: &mut crate::pool::SessionCtx| {
                let started = Instant::now();
                let made = (|| {
                    // The key first: a bad CMK fails before seconds of
                    // RSA generation.
                    ctx.with_unwrapped([key.as_ref()], |_, _, _| Ok(()))?;
                    let pair = ctx.with_session(|s, _| Ok(keypair::generate(s, spec)?))?;
                    let sealed = ctx.with_unwrapped([key.as_ref()], |s, rng, [k]| {
                        seal(s, rng, k, &pair.private_key_der, &aad, true)
                    })?;
                    let private_key_der = if return_plaintext {
                        Bytes::copy_from_slice(&pair.private_key_der)
                    } else {
                        Bytes::new()
                    };
                    Ok(GenerateDataKeyPairResponse {
                        public_key_der: pair.public_key_der.into(),
                        private_key_der,
                        private_key_sealed: Some(sealed_out(sealed)),
                    })
                })();
                metrics::record_hsm("vault_generate_data_key_pair", started, &made);
                made
            };
            // RSA generation holds its session for up to seconds: the slow
            // lane, so XKS and encrypt-data keep theirs. EC pairs take about
            // a millisecond, like an unwrap: the fast lane.
            if spec.slow() {
                self.pool.run_slow(deadline, job).await
            } else {
                self.pool.run(deadline, job).await
            }
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_random(
        &self,
        request: Request<GenerateRandomRequest>,
    ) -> Result<Response<GenerateRandomResponse>, Status> {
        let deadline = deadline_of(&request);
        let result = async {
            let len = generated_len(request.get_ref().length)?;
            self.pool
                .run(deadline, move |ctx| {
                    metrics::timed("vault_generate_random", || {
                        ctx.with_session(|s, _| {
                            let mut random = vec![0u8; len];
                            s.generate_random_slice(&mut random).map_err(Error::hsm)?;
                            Ok(Bytes::from(random))
                        })
                    })
                })
                .await
        }
        .await;
        reply(result.map(|random| GenerateRandomResponse { random }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_domain_key_check(
        &self,
        request: Request<GetDomainKeyCheckRequest>,
    ) -> Result<Response<GetDomainKeyCheckResponse>, Status> {
        let deadline = deadline_of(&request);
        let mut label = request.into_inner().label;
        if label.is_empty() {
            label = self.domain_key.to_string();
        }
        let result = async {
            wrap::check_label(&label).map_err(Error::InvalidArgument)?;
            let job_label = label.clone();
            let kcv = self
                .pool
                .run(deadline, move |ctx| {
                    metrics::timed("vault_domain_key_check", || {
                        ctx.with_session(|s, _| Ok(wrap::domain_key_check(s, &job_label)?))
                    })
                })
                .await?;
            Ok(GetDomainKeyCheckResponse { label, kcv })
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_mac_key(
        &self,
        request: Request<GenerateMacKeyRequest>,
    ) -> Result<Response<GenerateMacKeyResponse>, Status> {
        let deadline = deadline_of(&request);
        let GenerateMacKeyRequest {
            mut wrapping_key,
            bits,
        } = request.into_inner();
        if wrapping_key.is_empty() {
            wrapping_key = self.domain_key.to_string();
        }
        let result = async {
            check_wrapping_key(&wrapping_key)?;
            let bits = mac_key_bits(bits)?;
            let job_label = wrapping_key.clone();
            let wrapped = self
                .pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    // HMAC keys are not cached by the AES key cache (its
                    // unwrap template is AES): each use unwraps into a
                    // session object destroyed after the call.
                    let wrapped = ctx.with_session(|s, _| {
                        Ok(mac::generate_wrapped_secret(s, &job_label, bits)?)
                    });
                    metrics::record_hsm("vault_generate_mac_key", started, &wrapped);
                    wrapped
                })
                .await?;
            Ok(GenerateMacKeyResponse {
                key: Some(WrappedKey {
                    wrapping_key,
                    wrapped: wrapped.into(),
                }),
            })
        }
        .await;
        reply(result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_mac(
        &self,
        request: Request<GenerateMacRequest>,
    ) -> Result<Response<GenerateMacResponse>, Status> {
        let deadline = deadline_of(&request);
        let GenerateMacRequest {
            key,
            algorithm,
            message,
        } = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(key, "key is missing")?;
            let alg = mac_alg(algorithm)?;
            check_mac_key_len(&key, alg)?;
            self.pool
                .run(deadline, move |ctx| {
                    metrics::timed("vault_generate_mac", || {
                        ctx.with_session(|s, _| Ok(mac::mac(s, key.as_ref(), alg, &message)?))
                    })
                })
                .await
        }
        .await;
        reply(result.map(|tag| GenerateMacResponse { mac: tag.into() }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn verify_mac(
        &self,
        request: Request<VerifyMacRequest>,
    ) -> Result<Response<VerifyMacResponse>, Status> {
        let deadline = deadline_of(&request);
        let VerifyMacRequest {
            key,
            algorithm,
            message,
            mac: tag,
        } = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(key, "key is missing")?;
            let alg = mac_alg(algorithm)?;
            check_mac_key_len(&key, alg)?;
            self.pool
                .run(deadline, move |ctx| {
                    metrics::timed("vault_verify_mac", || {
                        ctx.with_session(|s, _| {
                            Ok(mac::verify_mac(s, key.as_ref(), alg, &message, &tag)?)
                        })
                    })
                })
                .await
        }
        .await;
        reply(result.map(|valid| VerifyMacResponse { valid }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn generate_signing_key_pair(
        &self,
        request: Request<GenerateSigningKeyPairRequest>,
    ) -> Result<Response<GenerateSigningKeyPairResponse>, Status> {
        self.generate_signing_key_pair_rpc(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        self.sign_rpc(request).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(generated_len(1).unwrap(), 1);
        assert_eq!(generated_len(1024).unwrap(), 1024);
        assert!(matches!(generated_len(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            generated_len(1025),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn mac_arguments() {
        assert_eq!(
            mac_alg(MacAlgorithm::HmacSha384 as i32).unwrap(),
            MacAlg::HmacSha384
        );
        assert!(matches!(mac_alg(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(mac_alg(99), Err(Error::InvalidArgument(_))));
        assert_eq!(mac_key_bits(512).unwrap(), 512);
        assert!(matches!(mac_key_bits(128), Err(Error::InvalidArgument(_))));
        let blob = |len: usize| Wrapped {
            label: "keymesh-domain-test".into(),
            wrapped: vec![0; len].into(),
        };
        // HMAC_256 (40-byte blob): SHA-256 only; HMAC_512: every hash.
        assert!(check_mac_key_len(&blob(40), MacAlg::HmacSha256).is_ok());
        assert!(matches!(
            check_mac_key_len(&blob(40), MacAlg::HmacSha384),
            Err(Error::InvalidArgument(_))
        ));
        assert!(check_mac_key_len(&blob(72), MacAlg::HmacSha384).is_ok());
        // Too short to be any HMAC key: the HSM's call (invalid key material).
        assert!(check_mac_key_len(&blob(16), MacAlg::HmacSha512).is_ok());
    }

    #[test]
    fn request_shapes() {
        assert!(matches!(
            Wrapped::from_proto(None, "key is missing"),
            Err(Error::InvalidArgument("key is missing"))
        ));
        assert!(matches!(
            Wrapped::from_proto(Some(WrappedKey::default()), "key is missing"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(sealed_in(None), Err(Error::InvalidArgument(_))));
        let bad_iv = Sealed {
            iv: vec![0; 8].into(),
            tag: vec![0; 16].into(),
            ..Default::default()
        };
        assert!(matches!(
            sealed_in(Some(bad_iv)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
