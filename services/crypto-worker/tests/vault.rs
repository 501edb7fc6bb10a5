//! KeyVault against a real SoftHSM2 token, over real gRPC: customer master
//! keys wrapped under an HSM domain key, served by any worker.
//!
//! Same setup as `softhsm.rs` (`common::run_suite`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEYMESH_WORKER_VAULT_CHILD";

#[test]
fn vault_suite() {
    common::run_suite("vault_suite", CHILD_ENV, "KeyVault suite", child::run);
}

mod child {
    use super::*;

    use crate::common::{LABEL, MODULE, bool_attr, expect_err, pin, pool_token, stop};

    use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
    use cryptoki::session::Session;
    use der::Decode as _;
    use keymesh_crypto_worker::key_cache::KeyCacheOptions;
    use keymesh_crypto_worker::pool::Pool;
    use keymesh_crypto_worker::wrapped::UnwrappedKeyOptions;
    use keymesh_pkcs11::aead;
    use keymesh_pkcs11::token::{self, Hsm};
    use keymesh_pkcs11::wrap::WrappedKeyRef;
    use keymesh_pkcs11::{keys, wrap};
    use keymesh_proto::crypto::v1::key_vault_client::KeyVaultClient;
    use keymesh_proto::crypto::v1::{
        ErrorReason, GenerateDataKeyPairRequest, GenerateDataKeyRequest, GenerateKeyRequest,
        GenerateMacKeyRequest, GenerateMacRequest, GenerateRandomRequest,
        GenerateSigningKeyPairRequest, GenerateSigningKeyPairResponse, KeyPairSpec, MacAlgorithm,
        ReEncryptRequest, Sealed, SignAlgorithm, SignRequest, SigningKeySpec, VaultDecryptRequest,
        VaultEncryptRequest, VerifyMacRequest, WrappedKey,
    };
    use ring::signature::{self, KeyPair as _};
    use tonic::Code;
    use tonic::transport::Channel;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    const DOMAIN: &str = wrap::DEFAULT_DOMAIN_KEY_LABEL;
    const OTHER_DOMAIN: &str = "keymesh-domain-other";

    type Client = KeyVaultClient<Channel>;

    pub fn run(dir: &Path) {
        let ctx = token::load_module(Path::new(MODULE)).unwrap();
        token::init_token(&ctx, LABEL, &pin(), &pin(), false).unwrap();
        let admin = Hsm::open(ctx.clone(), LABEL, pin()).unwrap();
        let session = admin.open_session().unwrap();
        let domain = wrap::generate_domain_key(&session, DOMAIN).unwrap();
        wrap::generate_domain_key(&session, OTHER_DOMAIN).unwrap();
        // A customer key is no wrapping key.
        keys::generate_aes_256(&session, "customer-key", true, true).unwrap();
        domain_key_attributes(&session, domain);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (first, stop_first, first_server) = start_worker(ctx.clone(), dir, "w1").await;
            let (second, stop_second, second_server) = start_worker(ctx.clone(), dir, "w2").await;
            let mut c = KeyVaultClient::new(first.clone());
            let mut c2 = KeyVaultClient::new(second.clone());

            health(&first).await;
            round_trips(&mut c, &mut c2, &session).await;
            errors(&mut c).await;
            re_encrypt(&mut c, &mut c2).await;
            data_keys(&mut c, &mut c2).await;
            data_key_pairs(&mut c, &session).await;
            random(&mut c).await;
            macs(&mut c, &mut c2).await;
            signing(&mut c, &mut c2, &session).await;
            domain_key_checks(&mut c, &mut c2, ctx.clone(), dir).await;
            cache_bounds(&admin, &session).await;

            drop((c, c2, first, second));
            for (stop, server) in [(stop_first, first_server), (stop_second, second_server)] {
                stop.send(()).unwrap();
                tokio::time::timeout(Duration::from_secs(10), server)
                    .await
                    .expect("worker did not drain")
                    .unwrap()
                    .unwrap();
            }
        });
        // Every unwrapped key died with its worker's keeper session.
        assert!(vault_objects(&session, ObjectClass::SECRET_KEY).is_empty());
    }

    fn domain_key_attributes(s: &Session, h: ObjectHandle) {
        assert!(bool_attr(s, h, AttributeType::Token));
        assert!(bool_attr(s, h, AttributeType::Sensitive));
        assert!(!bool_attr(s, h, AttributeType::Extractable));
        assert!(bool_attr(s, h, AttributeType::Wrap));
        assert!(bool_attr(s, h, AttributeType::Unwrap));
        assert!(!bool_attr(s, h, AttributeType::Encrypt));
        assert!(!bool_attr(s, h, AttributeType::Decrypt));
        assert_eq!(wrap::find_domain_key(s, DOMAIN).unwrap(), h);
    }

    /// The workers' session objects of class `class` (unwrapped keys, or
    /// leftovers of generation), visible to every session of this process.
    fn vault_objects(s: &Session, class: ObjectClass) -> Vec<ObjectHandle> {
        s.find_objects(&[
            Attribute::Class(class),
            Attribute::Token(false),
            Attribute::Label(wrap::VAULT_KEY_LABEL.as_bytes().to_vec()),
        ])
        .unwrap()
    }

    async fn start_worker(
        ctx: cryptoki::context::Pkcs11,
        dir: &Path,
        id: &str,
    ) -> (
        Channel,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        // DOMAIN is the default --domain-key-label.
        let config = common::config(
            id,
            dir.join(format!("{id}-key-status.json")),
            Duration::ZERO,
        );
        common::start_worker(config, ctx).await
    }

    /// GetDomainKeyCheck: one stable KCV per domain key, the same from every
    /// worker on the token, another for another key; a worker whose pinned
    /// --domain-key-kcv differs from the HSM's refuses to start, naming both.
    async fn domain_key_checks(
        c: &mut Client,
        c2: &mut Client,
        ctx: cryptoki::context::Pkcs11,
        dir: &Path,
    ) {
        use keymesh_proto::crypto::v1::GetDomainKeyCheckRequest;
        let check = |label: &str| GetDomainKeyCheckRequest {
            label: label.into(),
        };
        let kcv = c
            .get_domain_key_check(check(""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kcv.label, DOMAIN);
        assert_eq!(kcv.kcv.len(), 16);
        assert!(
            kcv.kcv
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let again = c2
            .get_domain_key_check(check(DOMAIN))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.kcv, kcv.kcv);
        let other = c
            .get_domain_key_check(check(OTHER_DOMAIN))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(other.kcv, kcv.kcv);
        let missing = c
            .get_domain_key_check(check("no-such-domain-key"))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::FailedPrecondition, "{missing:?}");
        let customer = c
            .get_domain_key_check(check("customer-key"))
            .await
            .unwrap_err();
        assert_eq!(customer.code(), Code::FailedPrecondition, "{customer:?}");

        // Pinned and matching: starts. Pinned and different: refuses.
        let mut config = common::config("w-pinned", dir.join("w-pinned.json"), Duration::ZERO);
        config.domain_key_kcv = Some(kcv.kcv.clone());
        let (channel, stop, server) = common::start_worker(config, ctx.clone()).await;
        drop(channel);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let mut config = common::config("w-wrong", dir.join("w-wrong.json"), Duration::ZERO);
        config.domain_key_kcv = Some(other.kcv.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err =
            keymesh_crypto_worker::serve_with_module(config, ctx, listener, std::future::pending())
                .await
                .unwrap_err()
                .to_string();
        assert!(err.contains(&kcv.kcv) && err.contains(&other.kcv), "{err}");
    }

    async fn health(channel: &Channel) {
        let mut hc = HealthClient::new(channel.clone());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let r = hc
                .check(HealthCheckRequest {
                    service: "keymesh.crypto.v1.KeyVault".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(Instant::now() < until, "KeyVault never SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn generate(c: &mut Client, wrapping_key: &str) -> WrappedKey {
        c.generate_key(GenerateKeyRequest {
            wrapping_key: wrapping_key.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
    }

    async fn encrypt(c: &mut Client, key: &WrappedKey, pt: &[u8], aad: &[u8]) -> Sealed {
        c.encrypt(VaultEncryptRequest {
            key: Some(key.clone()),
            plaintext: pt.to_vec().into(),
            aad: aad.to_vec().into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sealed
        .unwrap()
    }

    fn decrypt_req(key: &WrappedKey, sealed: &Sealed, aad: &[u8]) -> VaultDecryptRequest {
        VaultDecryptRequest {
            key: Some(key.clone()),
            sealed: Some(sealed.clone()),
            aad: aad.to_vec().into(),
        }
    }

    async fn decrypt(c: &mut Client, key: &WrappedKey, sealed: &Sealed, aad: &[u8]) -> Vec<u8> {
        c.decrypt(decrypt_req(key, sealed, aad))
            .await
            .unwrap()
            .into_inner()
            .plaintext
            .to_vec()
    }

    /// Generate → encrypt → decrypt, on both workers; keys are distinct and
    /// independent; what the unwrapped objects look like.
    async fn round_trips(c: &mut Client, c2: &mut Client, session: &Session) {
        let k1 = generate(c, "").await;
        assert_eq!(k1.wrapping_key, DOMAIN);
        assert_eq!(k1.wrapped.len(), 40);
        let k2 = generate(c, DOMAIN).await;
        assert_ne!(k1.wrapped, k2.wrapped);
        let k3 = generate(c, OTHER_DOMAIN).await;
        assert_eq!(k3.wrapping_key, OTHER_DOMAIN);

        let sealed = encrypt(c, &k1, b"attack at dawn", b"aad").await;
        assert_eq!(sealed.iv.len(), 12);
        assert_eq!(sealed.tag.len(), 16);
        assert_eq!(sealed.ciphertext.len(), 14);
        assert_eq!(decrypt(c, &k1, &sealed, b"aad").await, b"attack at dawn");
        // Any worker serves any key: the second worker has never seen k1.
        assert_eq!(decrypt(c2, &k1, &sealed, b"aad").await, b"attack at dawn");
        let back = encrypt(c2, &k1, b"from the second", b"").await;
        assert_eq!(decrypt(c, &k1, &back, b"").await, b"from the second");
        // Empty plaintext.
        let empty = encrypt(c, &k3, b"", b"").await;
        assert!(empty.ciphertext.is_empty());
        assert!(decrypt(c, &k3, &empty, b"").await.is_empty());
        // Fresh IVs.
        let again = encrypt(c, &k1, b"attack at dawn", b"aad").await;
        assert_ne!(again.iv, sealed.iv);

        // Two keys from one domain key do not open each other's ciphertexts.
        expect_err(
            c.decrypt(decrypt_req(&k2, &sealed, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        let sealed2 = encrypt(c, &k2, b"attack at dawn", b"aad").await;
        expect_err(
            c.decrypt(decrypt_req(&k1, &sealed2, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );

        // The unwrapped keys: session objects that can encrypt and decrypt,
        // sensitive and not extractable; the generated CMKs (extractable)
        // are gone.
        let objects = vault_objects(session, ObjectClass::SECRET_KEY);
        assert!(!objects.is_empty());
        for h in objects {
            assert!(!bool_attr(session, h, AttributeType::Token));
            assert!(bool_attr(session, h, AttributeType::Sensitive));
            assert!(!bool_attr(session, h, AttributeType::Extractable));
            assert!(bool_attr(session, h, AttributeType::Encrypt));
            assert!(bool_attr(session, h, AttributeType::Decrypt));
            assert!(!bool_attr(session, h, AttributeType::Wrap));
            let value = session.get_attributes(h, &[AttributeType::Value]);
            assert!(
                !matches!(value.as_deref(), Ok([Attribute::Value(v)]) if !v.is_empty()),
                "unwrapped key value readable"
            );
        }
    }

    async fn errors(c: &mut Client) {
        let key = generate(c, "").await;
        let sealed = encrypt(c, &key, b"secret", b"aad").await;

        // Wrong AAD, tampered ciphertext, tag.
        expect_err(
            c.decrypt(decrypt_req(&key, &sealed, b"other")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        let mut tampered = sealed.clone();
        let mut ct = tampered.ciphertext.to_vec();
        ct[0] ^= 1;
        tampered.ciphertext = ct.into();
        expect_err(
            c.decrypt(decrypt_req(&key, &tampered, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        let bad_tag = Sealed {
            tag: vec![0; 12].into(),
            ..sealed.clone()
        };
        expect_err(
            c.decrypt(decrypt_req(&key, &bad_tag, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );

        // Corrupted, truncated or foreign key material.
        let mut corrupted = key.wrapped.to_vec();
        corrupted[17] ^= 0x80;
        let corrupted = WrappedKey {
            wrapped: corrupted.into(),
            ..key.clone()
        };
        expect_err(
            c.encrypt(VaultEncryptRequest {
                key: Some(corrupted.clone()),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );
        expect_err(
            c.decrypt(decrypt_req(&corrupted, &sealed, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );
        let truncated = WrappedKey {
            wrapped: key.wrapped.slice(..32),
            ..key.clone()
        };
        expect_err(
            c.encrypt(VaultEncryptRequest {
                key: Some(truncated),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );
        let under_other = WrappedKey {
            wrapping_key: OTHER_DOMAIN.into(),
            ..key.clone()
        };
        expect_err(
            c.decrypt(decrypt_req(&under_other, &sealed, b"aad")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );

        // Missing wrapping key, or a label that names no wrapping key.
        expect_err(
            c.generate_key(GenerateKeyRequest {
                wrapping_key: "no-such-domain-key".into(),
            })
            .await,
            Code::FailedPrecondition,
            ErrorReason::WrappingKeyMissing,
        );
        for label in ["no-such-domain-key", "customer-key"] {
            let missing = WrappedKey {
                wrapping_key: label.into(),
                ..key.clone()
            };
            expect_err(
                c.decrypt(decrypt_req(&missing, &sealed, b"aad")).await,
                Code::FailedPrecondition,
                ErrorReason::WrappingKeyMissing,
            );
        }

        // Malformed requests.
        expect_err(
            c.encrypt(VaultEncryptRequest::default()).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        expect_err(
            c.encrypt(VaultEncryptRequest {
                key: Some(WrappedKey {
                    wrapping_key: String::new(),
                    ..key.clone()
                }),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        expect_err(
            c.decrypt(VaultDecryptRequest {
                key: Some(key.clone()),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
    }

    async fn re_encrypt(c: &mut Client, c2: &mut Client) {
        let from = generate(c, "").await;
        let to = generate(c, OTHER_DOMAIN).await;
        let sealed = encrypt(c, &from, b"move me", b"src").await;
        let req = ReEncryptRequest {
            source: Some(from.clone()),
            sealed: Some(sealed.clone()),
            source_aad: b"src".to_vec().into(),
            destination: Some(to.clone()),
            destination_aad: b"dst".to_vec().into(),
        };
        let moved = c2
            .re_encrypt(req.clone())
            .await
            .unwrap()
            .into_inner()
            .sealed
            .unwrap();
        assert_eq!(decrypt(c, &to, &moved, b"dst").await, b"move me");
        expect_err(
            c.decrypt(decrypt_req(&from, &moved, b"dst")).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        // Same key, new AAD.
        let same = c
            .re_encrypt(ReEncryptRequest {
                destination: Some(from.clone()),
                ..req.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .sealed
            .unwrap();
        assert_eq!(decrypt(c, &from, &same, b"dst").await, b"move me");
        expect_err(
            c.re_encrypt(ReEncryptRequest {
                source_aad: b"wrong".to_vec().into(),
                ..req.clone()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        expect_err(
            c.re_encrypt(ReEncryptRequest {
                destination: None,
                ..req.clone()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        let mut bad = to.wrapped.to_vec();
        bad[3] ^= 1;
        expect_err(
            c.re_encrypt(ReEncryptRequest {
                destination: Some(WrappedKey {
                    wrapped: bad.into(),
                    ..to.clone()
                }),
                ..req
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );
    }

    async fn data_keys(c: &mut Client, c2: &mut Client) {
        let key = generate(c, "").await;
        for len in [1u32, 16, 32, 64, 1024] {
            let with = c
                .generate_data_key(GenerateDataKeyRequest {
                    key: Some(key.clone()),
                    length: len,
                    aad: b"dk".to_vec().into(),
                    return_plaintext: true,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(with.plaintext.len(), len as usize);
            let sealed = with.sealed.unwrap();
            assert_eq!(sealed.ciphertext.len(), len as usize);
            assert_eq!(
                decrypt(c2, &key, &sealed, b"dk").await,
                with.plaintext.as_ref()
            );

            let without = c
                .generate_data_key(GenerateDataKeyRequest {
                    key: Some(key.clone()),
                    length: len,
                    aad: Default::default(),
                    return_plaintext: false,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(without.plaintext.is_empty());
            let opened = decrypt(c, &key, &without.sealed.unwrap(), b"").await;
            assert_eq!(opened.len(), len as usize);
        }
        let a = c
            .generate_data_key(GenerateDataKeyRequest {
                key: Some(key.clone()),
                length: 32,
                return_plaintext: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let b = c
            .generate_data_key(GenerateDataKeyRequest {
                key: Some(key.clone()),
                length: 32,
                return_plaintext: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(a.plaintext, b.plaintext);
        for bad in [0u32, 1025, u32::MAX] {
            expect_err(
                c.generate_data_key(GenerateDataKeyRequest {
                    key: Some(key.clone()),
                    length: bad,
                    ..Default::default()
                })
                .await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
    }

    /// An independent parser (the openssl CLI) accepts the private key and
    /// derives exactly the returned public key from it.
    fn openssl_check(dir: &Path, private_der: &[u8], public_der: &[u8]) {
        let key = dir.join("key.der");
        let public = dir.join("pub.der");
        std::fs::write(&key, private_der).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-inform", "DER", "-check", "-noout", "-in"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl pkey -check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("openssl")
            .args([
                "pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(std::fs::read(&public).unwrap(), public_der);
    }

    /// Sign with the PKCS#8 key and verify with the SPKI key (ring has RSA,
    /// P-256 and P-384).
    fn ring_check(spec: KeyPairSpec, private_der: &[u8], public_key: &[u8]) {
        let rng = ring::rand::SystemRandom::new();
        let msg = b"data key pair";
        match spec {
            KeyPairSpec::Rsa2048 | KeyPairSpec::Rsa3072 | KeyPairSpec::Rsa4096 => {
                let pair = signature::RsaKeyPair::from_pkcs8(private_der).unwrap();
                assert_eq!(pair.public().as_ref(), public_key);
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .unwrap();
                signature::UnparsedPublicKey::new(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    public_key,
                )
                .verify(msg, &sig)
                .unwrap();
            }
            KeyPairSpec::EcP256 | KeyPairSpec::EcP384 => {
                let (signing, verifying) = if spec == KeyPairSpec::EcP256 {
                    (
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &signature::ECDSA_P256_SHA256_ASN1,
                    )
                } else {
                    (
                        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                        &signature::ECDSA_P384_SHA384_ASN1,
                    )
                };
                let pair = signature::EcdsaKeyPair::from_pkcs8(signing, private_der, &rng).unwrap();
                assert_eq!(pair.public_key().as_ref(), public_key);
                let sig = pair.sign(&rng, msg).unwrap();
                signature::UnparsedPublicKey::new(verifying, public_key)
                    .verify(msg, sig.as_ref())
                    .unwrap();
            }
            _ => {}
        }
    }

    async fn data_key_pairs(c: &mut Client, session: &Session) {
        let key = generate(c, "").await;
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            (KeyPairSpec::Rsa2048, "1.2.840.113549.1.1.1", None),
            (KeyPairSpec::Rsa3072, "1.2.840.113549.1.1.1", None),
            (KeyPairSpec::Rsa4096, "1.2.840.113549.1.1.1", None),
            (
                KeyPairSpec::EcP256,
                "1.2.840.10045.2.1",
                Some("1.2.840.10045.3.1.7"),
            ),
            (
                KeyPairSpec::EcP384,
                "1.2.840.10045.2.1",
                Some("1.3.132.0.34"),
            ),
            (
                KeyPairSpec::EcP521,
                "1.2.840.10045.2.1",
                Some("1.3.132.0.35"),
            ),
            (
                KeyPairSpec::EcSecp256k1,
                "1.2.840.10045.2.1",
                Some("1.3.132.0.10"),
            ),
        ];
        for (spec, algorithm, curve) in specs {
            let started = Instant::now();
            let pair = c
                .generate_data_key_pair(GenerateDataKeyPairRequest {
                    key: Some(key.clone()),
                    spec: spec as i32,
                    aad: b"pair".to_vec().into(),
                    return_plaintext: true,
                })
                .await
                .unwrap()
                .into_inner();
            eprintln!("{spec:?}: {:?}", started.elapsed());

            let spki = spki::SubjectPublicKeyInfoRef::from_der(&pair.public_key_der).unwrap();
            assert_eq!(spki.algorithm.oid.to_string(), algorithm, "{spec:?}");
            let pkcs8 = pkcs8::PrivateKeyInfoRef::from_der(&pair.private_key_der).unwrap();
            assert_eq!(pkcs8.algorithm, spki.algorithm, "{spec:?}");
            match curve {
                Some(curve) => {
                    let param = spki.algorithm.parameters_oid().unwrap();
                    assert_eq!(param.to_string(), curve, "{spec:?}");
                    let ec = sec1::EcPrivateKey::from_der(pkcs8.private_key.as_bytes()).unwrap();
                    assert_eq!(
                        ec.public_key,
                        spki.subject_public_key.as_bytes(),
                        "{spec:?}"
                    );
                }
                None => {
                    let rsa = pkcs1::RsaPrivateKey::<der::asn1::UintRef<'_>>::from_der(
                        pkcs8.private_key.as_bytes(),
                    )
                    .unwrap();
                    let bits = match spec {
                        KeyPairSpec::Rsa2048 => 2048,
                        KeyPairSpec::Rsa3072 => 3072,
                        _ => 4096,
                    };
                    assert_eq!(rsa.modulus.as_bytes().len() * 8, bits, "{spec:?}");
                }
            }
            ring_check(
                spec,
                &pair.private_key_der,
                spki.subject_public_key.raw_bytes(),
            );
            openssl_check(dir.path(), &pair.private_key_der, &pair.public_key_der);

            // The sealed copy is the same PKCS#8, under the CMK and AAD.
            let sealed = pair.private_key_sealed.unwrap();
            assert_eq!(
                decrypt(c, &key, &sealed, b"pair").await,
                pair.private_key_der.as_ref()
            );
        }

        // Without plaintext: only the sealed private key, matching the public one.
        let pair = c
            .generate_data_key_pair(GenerateDataKeyPairRequest {
                key: Some(key.clone()),
                spec: KeyPairSpec::EcP256 as i32,
                aad: Default::default(),
                return_plaintext: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(pair.private_key_der.is_empty());
        let private = decrypt(c, &key, &pair.private_key_sealed.unwrap(), b"").await;
        openssl_check(dir.path(), &private, &pair.public_key_der);

        for bad in [KeyPairSpec::Unspecified as i32, 42] {
            expect_err(
                c.generate_data_key_pair(GenerateDataKeyPairRequest {
                    key: Some(key.clone()),
                    spec: bad,
                    ..Default::default()
                })
                .await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
        let mut bad = key.wrapped.to_vec();
        bad[39] ^= 1;
        expect_err(
            c.generate_data_key_pair(GenerateDataKeyPairRequest {
                key: Some(WrappedKey {
                    wrapped: bad.into(),
                    ..key.clone()
                }),
                spec: KeyPairSpec::Rsa4096 as i32,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidKeyMaterial,
        );
        // No key pair halves are left behind on the HSM.
        assert!(vault_objects(session, ObjectClass::PRIVATE_KEY).is_empty());
        assert!(vault_objects(session, ObjectClass::PUBLIC_KEY).is_empty());
    }

    async fn generate_mac_key(c: &mut Client, bits: u32) -> WrappedKey {
        c.generate_mac_key(GenerateMacKeyRequest {
            wrapping_key: String::new(),
            bits,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
    }

    /// A wrapped key made unusable three ways: one bit flipped, cut to
    /// `truncate_to` bytes, and named under another domain key.
    fn unusable_blobs(key: &WrappedKey, truncate_to: usize) -> [WrappedKey; 3] {
        let mut corrupted = key.wrapped.to_vec();
        corrupted[17] ^= 0x80;
        [
            WrappedKey {
                wrapped: corrupted.into(),
                ..key.clone()
            },
            WrappedKey {
                wrapped: key.wrapped.slice(..truncate_to),
                ..key.clone()
            },
            WrappedKey {
                wrapping_key: OTHER_DOMAIN.into(),
                ..key.clone()
            },
        ]
    }

    fn mac_req(key: &WrappedKey, alg: MacAlgorithm, msg: &[u8]) -> GenerateMacRequest {
        GenerateMacRequest {
            key: Some(key.clone()),
            algorithm: alg as i32,
            message: msg.to_vec().into(),
        }
    }

    async fn mac(c: &mut Client, key: &WrappedKey, alg: MacAlgorithm, msg: &[u8]) -> Vec<u8> {
        c.generate_mac(mac_req(key, alg, msg))
            .await
            .unwrap()
            .into_inner()
            .mac
            .to_vec()
    }

    fn verify_req(key: &WrappedKey, alg: MacAlgorithm, msg: &[u8], tag: &[u8]) -> VerifyMacRequest {
        VerifyMacRequest {
            key: Some(key.clone()),
            algorithm: alg as i32,
            message: msg.to_vec().into(),
            mac: tag.to_vec().into(),
        }
    }

    async fn verify(
        c: &mut Client,
        key: &WrappedKey,
        alg: MacAlgorithm,
        msg: &[u8],
        tag: &[u8],
    ) -> bool {
        c.verify_mac(verify_req(key, alg, msg, tag))
            .await
            .unwrap()
            .into_inner()
            .valid
    }

    /// GenerateMacKey / GenerateMac / VerifyMac: HMAC keys generated in the
    /// HSM and kept wrapped; tags stable per key and message on any worker,
    /// distinct across keys; a tampered tag or message does not verify.
    async fn macs(c: &mut Client, c2: &mut Client) {
        use MacAlgorithm::{HmacSha256, HmacSha384, HmacSha512};

        let key = generate_mac_key(c, 256).await;
        assert_eq!(key.wrapping_key, DOMAIN);
        let other = generate_mac_key(c, 256).await;
        assert_ne!(key.wrapped, other.wrapped);

        let msg = b"the message";
        let tag = mac(c, &key, HmacSha256, msg).await;
        assert_eq!(tag.len(), 32);
        // Stable for the same key and message, on this worker and another.
        assert_eq!(mac(c, &key, HmacSha256, msg).await, tag);
        assert_eq!(mac(c2, &key, HmacSha256, msg).await, tag);
        // Different across keys, messages and algorithms.
        assert_ne!(mac(c, &other, HmacSha256, msg).await, tag);
        assert_ne!(mac(c, &key, HmacSha256, b"another message").await, tag);
        // An empty message has a MAC too.
        assert_eq!(mac(c, &key, HmacSha256, b"").await.len(), 32);

        assert!(verify(c, &key, HmacSha256, msg, &tag).await);
        assert!(verify(c2, &key, HmacSha256, msg, &tag).await);
        let mut tampered = tag.clone();
        tampered[31] ^= 1;
        assert!(!verify(c, &key, HmacSha256, msg, &tampered).await);
        assert!(!verify(c, &key, HmacSha256, b"the messagE", &tag).await);
        assert!(!verify(c, &other, HmacSha256, msg, &tag).await);
        assert!(!verify(c, &key, HmacSha256, msg, &tag[..16]).await);

        // A key serves hashes up to its own length.
        let k512 = generate_mac_key(c, 512).await;
        for (alg, len) in [(HmacSha256, 32), (HmacSha384, 48), (HmacSha512, 64)] {
            let t = mac(c, &k512, alg, msg).await;
            assert_eq!(t.len(), len);
            assert!(verify(c2, &k512, alg, msg, &t).await);
        }
        let k384 = generate_mac_key(c, 384).await;
        let t = mac(c, &k384, HmacSha384, msg).await;
        assert!(verify(c, &k384, HmacSha384, msg, &t).await);
        assert!(!verify(c, &k512, HmacSha384, msg, &t).await);
        for (k, alg) in [(&key, HmacSha384), (&key, HmacSha512), (&k384, HmacSha512)] {
            expect_err(
                c.generate_mac(mac_req(k, alg, msg)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
            expect_err(
                c.verify_mac(verify_req(k, alg, msg, &tag)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }

        // Bad sizes and algorithms.
        for bits in [0, 128, 255, 1024] {
            expect_err(
                c.generate_mac_key(GenerateMacKeyRequest {
                    wrapping_key: String::new(),
                    bits,
                })
                .await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
        for alg in [0, 99] {
            let mut req = mac_req(&key, HmacSha256, msg);
            req.algorithm = alg;
            expect_err(
                c.generate_mac(req).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
            let mut req = verify_req(&key, HmacSha256, msg, &tag);
            req.algorithm = alg;
            expect_err(
                c.verify_mac(req).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
        expect_err(
            c.generate_mac(GenerateMacRequest::default()).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );

        // Only domain keys wrap HMAC keys.
        for label in ["no-such-domain-key", "customer-key"] {
            expect_err(
                c.generate_mac_key(GenerateMacKeyRequest {
                    wrapping_key: label.into(),
                    bits: 256,
                })
                .await,
                Code::FailedPrecondition,
                ErrorReason::WrappingKeyMissing,
            );
            let missing = WrappedKey {
                wrapping_key: label.into(),
                ..key.clone()
            };
            expect_err(
                c.generate_mac(mac_req(&missing, HmacSha256, msg)).await,
                Code::FailedPrecondition,
                ErrorReason::WrappingKeyMissing,
            );
        }

        // Corrupted, truncated or foreign key material.
        for bad in &unusable_blobs(&key, 16) {
            expect_err(
                c.generate_mac(mac_req(bad, HmacSha256, msg)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidKeyMaterial,
            );
            expect_err(
                c.verify_mac(verify_req(bad, HmacSha256, msg, &tag)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidKeyMaterial,
            );
        }
    }

    async fn signing_pair(c: &mut Client, spec: SigningKeySpec) -> GenerateSigningKeyPairResponse {
        c.generate_signing_key_pair(GenerateSigningKeyPairRequest {
            wrapping_key: String::new(),
            spec: spec as i32,
        })
        .await
        .unwrap()
        .into_inner()
    }

    fn sign_req(
        key: &WrappedKey,
        spec: SigningKeySpec,
        alg: SignAlgorithm,
        digest: &[u8],
    ) -> SignRequest {
        SignRequest {
            key: Some(key.clone()),
            spec: spec as i32,
            algorithm: alg as i32,
            digest: digest.to_vec().into(),
        }
    }

    async fn sign(
        c: &mut Client,
        key: &WrappedKey,
        spec: SigningKeySpec,
        alg: SignAlgorithm,
        digest: &[u8],
    ) -> Vec<u8> {
        c.sign(sign_req(key, spec, alg, digest))
            .await
            .unwrap()
            .into_inner()
            .signature
            .to_vec()
    }

    /// The subjectPublicKey bits of a DER SPKI: what ring verifies with (an
    /// uncompressed EC point, or a PKCS#1 RSAPublicKey).
    fn public_key_bits(spki_der: &[u8]) -> Vec<u8> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).unwrap();
        spki.subject_public_key.raw_bytes().to_vec()
    }

    /// GenerateSigningKeyPair / Sign: the private key comes back only
    /// wrapped; signatures from any worker verify with ring against the
    /// returned SPKI, and not for another message or a tampered digest.
    async fn signing(c: &mut Client, c2: &mut Client, session: &Session) {
        use SignAlgorithm::{EcdsaSha256, RsassaPkcs1V15Sha256, RsassaPssSha256};
        use SigningKeySpec::{EcP256, Rsa2048};

        let msg = b"a message to sign";
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let digest = digest.as_ref();
        let mut tampered = digest.to_vec();
        tampered[0] ^= 1;

        let ec = signing_pair(c, EcP256).await;
        let key = ec.private_key.clone().unwrap();
        assert_eq!(key.wrapping_key, DOMAIN);
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&ec.public_key_spki_der).unwrap();
        assert_eq!(spki.algorithm.oid.to_string(), "1.2.840.10045.2.1");
        let public = public_key_bits(&ec.public_key_spki_der);
        let verifier =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public);
        for client in [&mut *c, &mut *c2] {
            let sig = sign(client, &key, EcP256, EcdsaSha256, digest).await;
            verifier.verify(msg, &sig).unwrap();
            assert!(verifier.verify(b"another message", &sig).is_err());
        }
        let sig = sign(c, &key, EcP256, EcdsaSha256, &tampered).await;
        assert!(verifier.verify(msg, &sig).is_err());
        // Another pair's key does not verify it.
        let other = signing_pair(c, EcP256).await;
        let other_public = public_key_bits(&other.public_key_spki_der);
        let sig = sign(c, &key, EcP256, EcdsaSha256, digest).await;
        assert!(
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &other_public)
                .verify(msg, &sig)
                .is_err()
        );

        // RSA-2048 (slow lane): PKCS#1 v1.5 and PSS.
        let rsa = signing_pair(c, Rsa2048).await;
        let rsa_key = rsa.private_key.clone().unwrap();
        let rsa_public = public_key_bits(&rsa.public_key_spki_der);
        for (alg, verifying) in [
            (
                RsassaPkcs1V15Sha256,
                &signature::RSA_PKCS1_2048_8192_SHA256 as &dyn signature::VerificationAlgorithm,
            ),
            (RsassaPssSha256, &signature::RSA_PSS_2048_8192_SHA256),
        ] {
            let verifier = signature::UnparsedPublicKey::new(verifying, &rsa_public);
            let sig = sign(c2, &rsa_key, Rsa2048, alg, digest).await;
            assert_eq!(sig.len(), 256);
            verifier.verify(msg, &sig).unwrap();
            let sig = sign(c, &rsa_key, Rsa2048, alg, &tampered).await;
            assert!(verifier.verify(msg, &sig).is_err());
        }
        // Generation leaves no key objects behind.
        assert!(vault_objects(session, ObjectClass::PRIVATE_KEY).is_empty());
        assert!(vault_objects(session, ObjectClass::PUBLIC_KEY).is_empty());

        // Bad specs, algorithms and digests.
        for spec in [0, 99] {
            expect_err(
                c.generate_signing_key_pair(GenerateSigningKeyPairRequest {
                    wrapping_key: String::new(),
                    spec,
                })
                .await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
            let mut req = sign_req(&key, EcP256, EcdsaSha256, digest);
            req.spec = spec;
            expect_err(
                c.sign(req).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
        for (k, spec, alg, d) in [
            (&key, EcP256, SignAlgorithm::Unspecified, digest),
            (&key, EcP256, RsassaPssSha256, digest),
            (&rsa_key, Rsa2048, EcdsaSha256, digest),
            (&key, EcP256, EcdsaSha256, &digest[..31]),
            (&key, EcP256, SignAlgorithm::EcdsaSha384, digest),
        ] {
            expect_err(
                c.sign(sign_req(k, spec, alg, d)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
        expect_err(
            c.sign(SignRequest::default()).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );

        // Only domain keys wrap signing keys.
        for label in ["no-such-domain-key", "customer-key"] {
            expect_err(
                c.generate_signing_key_pair(GenerateSigningKeyPairRequest {
                    wrapping_key: label.into(),
                    spec: EcP256 as i32,
                })
                .await,
                Code::FailedPrecondition,
                ErrorReason::WrappingKeyMissing,
            );
            let missing = WrappedKey {
                wrapping_key: label.into(),
                ..key.clone()
            };
            expect_err(
                c.sign(sign_req(&missing, EcP256, EcdsaSha256, digest))
                    .await,
                Code::FailedPrecondition,
                ErrorReason::WrappingKeyMissing,
            );
        }

        // Corrupted, truncated or foreign key material.
        for bad in &unusable_blobs(&key, 32) {
            expect_err(
                c.sign(sign_req(bad, EcP256, EcdsaSha256, digest)).await,
                Code::InvalidArgument,
                ErrorReason::InvalidKeyMaterial,
            );
        }
    }

    async fn random(c: &mut Client) {
        for len in [1u32, 32, 1024] {
            let r = c
                .generate_random(GenerateRandomRequest { length: len })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.random.len(), len as usize);
        }
        let a = c
            .generate_random(GenerateRandomRequest { length: 32 })
            .await
            .unwrap()
            .into_inner();
        let b = c
            .generate_random(GenerateRandomRequest { length: 32 })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(a.random, b.random);
        for bad in [0u32, 1025] {
            expect_err(
                c.generate_random(GenerateRandomRequest { length: bad })
                    .await,
                Code::InvalidArgument,
                ErrorReason::InvalidArgument,
            );
        }
    }

    /// A pool of its own (a fresh cache): bounded, idle keys destroyed, and
    /// it opens what another pool sealed.
    async fn cache_bounds(admin: &Hsm, session: &Session) {
        let hsm = pool_token(admin);
        let options = UnwrappedKeyOptions {
            capacity: 2,
            idle: Duration::from_millis(200),
        };
        let (pool, threads) =
            Pool::start_with(hsm, 2, KeyCacheOptions::default(), options).unwrap();
        let before = vault_objects(session, ObjectClass::SECRET_KEY).len();

        let mut keys = Vec::new();
        for _ in 0..3 {
            let wrapped = pool
                .run(None, |ctx| {
                    ctx.with_session(|s, _| Ok(keymesh_pkcs11::wrap::generate_wrapped(s, DOMAIN)?))
                })
                .await
                .unwrap();
            keys.push(wrapped);
        }
        for (i, wrapped) in keys.iter().enumerate() {
            let wrapped = wrapped.clone();
            let sealed = pool
                .run(None, move |ctx| {
                    let key = WrappedKeyRef {
                        wrapping_key: DOMAIN,
                        wrapped: &wrapped,
                    };
                    ctx.with_unwrapped([key], |s, rng, [k]| {
                        aead::seal(
                            s,
                            k,
                            "k",
                            rng,
                            aead::SealRequest {
                                plaintext: b"bounded",
                                aad: b"",
                                integrity_prefix: None,
                                verify: true,
                            },
                        )
                        .map_err(keymesh_crypto_worker::Error::from)
                    })
                })
                .await
                .unwrap();
            assert_eq!(sealed.ciphertext.len(), 7, "key {i}");
            assert!(pool.unwrapped_keys() <= 2);
        }
        assert_eq!(pool.unwrapped_keys(), 2);
        assert_eq!(
            vault_objects(session, ObjectClass::SECRET_KEY).len(),
            before + 2,
            "the evicted key's object was not destroyed"
        );

        // Idle keys are destroyed by the sweep (the worker runs it
        // periodically; here it is called until the idle time has passed).
        let until = Instant::now() + Duration::from_secs(10);
        while pool.unwrapped_keys() > 0 {
            assert!(Instant::now() < until, "idle keys never swept");
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.sweep_unwrapped().await.unwrap();
        }
        assert_eq!(
            vault_objects(session, ObjectClass::SECRET_KEY).len(),
            before
        );

        stop(pool, threads).await;
    }
}
