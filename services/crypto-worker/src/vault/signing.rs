//! GenerateSigningKeyPair and Sign: RSA/EC signing keys whose private half
//! lives outside the HSM only wrapped under the domain key
//! ([`keymesh_pkcs11::pair`]).
//!
//! Same shape as the other KeyVault RPCs (requests checked here, one job on
//! the session pool under the caller's deadline, HSM time recorded per
//! operation and outcome, errors through [`crate::error`]); a module of its
//! own only to keep `vault.rs` short. Unlike GenerateDataKeyPair the private
//! key never comes back in clear.

use std::time::Instant;

use keymesh_pkcs11::pair::{self, Curve, Hash, PairSpec, SignAlg};
use keymesh_proto::crypto::v1::{
    GenerateSigningKeyPairRequest, GenerateSigningKeyPairResponse, SignAlgorithm, SignRequest,
    SignResponse, SigningKeySpec, WrappedKey,
};
use tonic::{Request, Response, Status};

use super::{VaultService, Wrapped, check_wrapping_key};
use crate::error::Error;
use crate::metrics;
use crate::service::{deadline_of, reply};

/// The key spec of a request; UNSPECIFIED and unknown values are refused.
fn signing_spec(spec: i32) -> Result<PairSpec, Error> {
    Ok(match SigningKeySpec::try_from(spec) {
        Ok(SigningKeySpec::Rsa2048) => PairSpec::Rsa { bits: 2048 },
        Ok(SigningKeySpec::Rsa3072) => PairSpec::Rsa { bits: 3072 },
        Ok(SigningKeySpec::Rsa4096) => PairSpec::Rsa { bits: 4096 },
        Ok(SigningKeySpec::EcP256) => PairSpec::Ec(Curve::P256),
        Ok(SigningKeySpec::EcP384) => PairSpec::Ec(Curve::P384),
        Ok(SigningKeySpec::EcSecp256k1) => PairSpec::Ec(Curve::Secp256k1),
        Ok(SigningKeySpec::Unspecified) | Err(_) => {
            return Err(Error::InvalidArgument("unsupported signing key spec"));
        }
    })
}

/// The signing algorithm of a request; UNSPECIFIED and unknown values are
/// refused. Whether it fits the key's type is checked by
/// [`signing_alg_fits`].
fn sign_alg(algorithm: i32) -> Result<SignAlg, Error> {
    use SignAlgorithm as A;
    Ok(match A::try_from(algorithm) {
        Ok(A::EcdsaSha256) => SignAlg::Ecdsa(Hash::Sha256),
        Ok(A::EcdsaSha384) => SignAlg::Ecdsa(Hash::Sha384),
        Ok(A::EcdsaSha512) => SignAlg::Ecdsa(Hash::Sha512),
        Ok(A::RsassaPkcs1V15Sha256) => SignAlg::RsaPkcs1(Hash::Sha256),
        Ok(A::RsassaPkcs1V15Sha384) => SignAlg::RsaPkcs1(Hash::Sha384),
        Ok(A::RsassaPkcs1V15Sha512) => SignAlg::RsaPkcs1(Hash::Sha512),
        Ok(A::RsassaPssSha256) => SignAlg::RsaPss(Hash::Sha256),
        Ok(A::RsassaPssSha384) => SignAlg::RsaPss(Hash::Sha384),
        Ok(A::RsassaPssSha512) => SignAlg::RsaPss(Hash::Sha512),
        Ok(A::Unspecified) | Err(_) => {
            return Err(Error::InvalidArgument("unsupported signing algorithm"));
        }
    })
}

/// ECDSA for EC keys, PKCS#1 v1.5 or PSS for RSA keys; the digest as long
/// as the algorithm's hash. Checked before the pool is asked (the pkcs11
/// crate checks again), so a malformed request costs no unwrap.
fn check_sign_request(spec: PairSpec, alg: SignAlg, digest: &[u8]) -> Result<(), Error> {
    let fits = matches!(
        (spec, alg),
        (PairSpec::Ec(_), SignAlg::Ecdsa(_))
            | (
                PairSpec::Rsa { .. },
                SignAlg::RsaPkcs1(_) | SignAlg::RsaPss(_)
            )
    );
    if !fits {
        return Err(Error::InvalidArgument(
            "signing algorithm does not fit the key spec",
        ));
    }
    if digest.len() != alg.hash().digest_len() {
        return Err(Error::InvalidArgument(
            "digest length does not match the signing algorithm",
        ));
    }
    Ok(())
}

impl VaultService {
    pub(super) async fn generate_signing_key_pair_rpc(
        &self,
        request: Request<GenerateSigningKeyPairRequest>,
    ) -> Result<Response<GenerateSigningKeyPairResponse>, Status> {
        let deadline = deadline_of(&request);
        let GenerateSigningKeyPairRequest {
            mut wrapping_key,
            spec,
        } = request.into_inner();
        if wrapping_key.is_empty() {
            wrapping_key = self.domain_key.to_string();
        }
        let result = async {
            check_wrapping_key(&wrapping_key)?;
            let spec = signing_spec(spec)?;
            let job_label = wrapping_key.clone();
            let job = move |ctx: &mut crate::pool::SessionCtx| {
                metrics::timed("vault_generate_signing_key_pair", || {
                    ctx.with_session(|s, _| Ok(pair::generate_wrapped_pair(s, &job_label, spec)?))
                })
            };
            // RSA generation holds its session for up to seconds: the slow
            // lane, as for GenerateDataKeyPair. EC pairs take about a
            // millisecond: the fast lane.
            let pair = if matches!(spec, PairSpec::Rsa { .. }) {
                self.pool.run_slow(deadline, job).await?
            } else {
                self.pool.run(deadline, job).await?
            };
            let pair::WrappedPair {
                wrapped_private,
                public_spki_der,
            } = pair;
            Ok(GenerateSigningKeyPairResponse {
                private_key: Some(WrappedKey {
                    wrapping_key,
                    wrapped: wrapped_private.into(),
                }),
                public_key_spki_der: public_spki_der.into(),
            })
        }
        .await;
        reply(result)
    }

    pub(super) async fn sign_rpc(
        &self,
        request: Request<SignRequest>,
    ) -> Result<Response<SignResponse>, Status> {
        let deadline = deadline_of(&request);
        let SignRequest {
            key,
            spec,
            algorithm,
            digest,
        } = request.into_inner();
        let result = async {
            let key = Wrapped::from_proto(key, "key is missing")?;
            let spec = signing_spec(spec)?;
            let alg = sign_alg(algorithm)?;
            check_sign_request(spec, alg, &digest)?;
            // One private-key operation (RSA-4096 a few ms in SoftHSM2),
            // like a decrypt: the fast lane.
            self.pool
                .run(deadline, move |ctx| {
                    let started = Instant::now();
                    let signature = ctx
                        .with_session(|s, _| Ok(pair::sign(s, key.as_ref(), spec, alg, &digest)?));
                    metrics::record_hsm("vault_sign", started, &signature);
                    signature
                })
                .await
        }
        .await;
        reply(result.map(|signature| SignResponse {
            signature: signature.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn arguments() {
        assert_eq!(
            signing_spec(SigningKeySpec::EcP256 as i32).unwrap(),
            PairSpec::Ec(Curve::P256)
        );
        assert!(matches!(signing_spec(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(signing_spec(42), Err(Error::InvalidArgument(_))));
        assert_eq!(
            sign_alg(SignAlgorithm::RsassaPssSha384 as i32).unwrap(),
            SignAlg::RsaPss(Hash::Sha384)
        );
        assert!(matches!(sign_alg(0), Err(Error::InvalidArgument(_))));

        let ec = PairSpec::Ec(Curve::P256);
        let rsa = PairSpec::Rsa { bits: 2048 };
        let ecdsa = SignAlg::Ecdsa(Hash::Sha256);
        assert!(check_sign_request(ec, ecdsa, &[0; 32]).is_ok());
        assert!(check_sign_request(rsa, SignAlg::RsaPkcs1(Hash::Sha512), &[0; 64]).is_ok());
        for (spec, alg, len) in [
            (ec, ecdsa, 31),
            (ec, ecdsa, 48),
            (ec, SignAlg::RsaPss(Hash::Sha256), 32),
            (rsa, ecdsa, 32),
        ] {
            assert!(matches!(
                check_sign_request(spec, alg, &vec![0; len]),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}
