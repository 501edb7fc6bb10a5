//! The worker against a real SoftHSM2 token, over real gRPC.
//!
//! The suite runs in a child process with its own token directory (see
//! `common::run_suite` for why).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEYMESH_WORKER_SOFTHSM_CHILD";

#[test]
fn softhsm_suite() {
    common::run_suite("softhsm_suite", CHILD_ENV, "SoftHSM2 suite", child::run);
}

mod child {
    use super::*;

    use crate::common::{LABEL, MODULE, bool_attr, expect_err, pin, pool_token, reason, stop};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
    use keymesh_contracts::key_status;
    use keymesh_crypto_worker::error::Error;
    use keymesh_crypto_worker::key_cache::KeyCacheOptions;
    use keymesh_crypto_worker::pool::{Pool, SlowLane};
    use keymesh_pkcs11::aead;
    use keymesh_pkcs11::keys;
    use keymesh_pkcs11::token::{self, Hsm};
    use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
    use keymesh_proto::crypto::v1::{
        DecryptRequest, EncryptRequest, ErrorReason, GetHealthRequest, GetKeyMetadataRequest,
        HealthStatus, KeyStatus,
    };
    use tonic::Code;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    pub fn run(dir: &Path) {
        let ctx = token::load_module(Path::new(MODULE)).unwrap();
        assert_eq!(
            token::init_token(&ctx, LABEL, &pin(), &pin(), false).unwrap(),
            token::TokenInit::Created
        );
        assert_eq!(
            token::init_token(&ctx, LABEL, &pin(), &pin(), true).unwrap(),
            token::TokenInit::AlreadyExists
        );
        let admin = Hsm::open(ctx.clone(), LABEL, pin()).unwrap();
        let session = admin.open_session().unwrap();
        keys::generate_aes_256(&session, "k-aes", true, true).unwrap();
        keys::generate_aes_256(&session, "k-enc", true, false).unwrap();
        keys::generate_aes_256(&session, "k-dec", false, true).unwrap();
        keys::generate_aes_256(&session, "k-dup", true, true).unwrap();
        keys::generate_aes_256(&session, "k-dup", true, true).unwrap();
        let mut aes128 = keys::aes_256_template("k-128", true, true, true);
        for a in &mut aes128 {
            if let Attribute::ValueLen(_) = a {
                *a = Attribute::ValueLen(16.into());
            }
        }
        session
            .generate_key(&Mechanism::AesKeyGen, &aes128)
            .unwrap();
        let listed: Vec<String> = keys::list_keys(&session)
            .unwrap()
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(
            listed,
            ["k-128", "k-aes", "k-dec", "k-dup", "k-dup", "k-enc"]
        );

        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            pool_deadline(&admin).await;
            pool_lanes(&admin).await;
            key_copies(&admin, &session).await;
            key_copies_refused(&admin, &session).await;
            key_copies_off(&admin, &session).await;
            grpc_suite(ctx.clone(), &session, dir).await;
        });
    }

    /// A job whose deadline has passed is answered without touching the HSM.
    async fn pool_deadline(admin: &Hsm) {
        let hsm = pool_token(admin);
        let (pool, threads) = Pool::start(hsm, 1, KeyCacheOptions::default()).unwrap();
        let r = pool
            .run(Some(Instant::now()), |_ctx| -> Result<(), Error> {
                panic!("ran a job after its deadline")
            })
            .await;
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        let ok = pool.run(None, |ctx| ctx.key("k-aes")).await.unwrap();
        assert!(ok.is_aes_256());
        stop(pool, threads).await;
    }

    /// Wait (with a deadline) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The slow lane has sessions and a bounded queue of its own: with its
    /// one session held and its queue full, a slow job gets HSM_BUSY at
    /// once while the fast lane still serves; without a slow lane, slow
    /// jobs run on the fast lane.
    async fn pool_lanes(admin: &Hsm) {
        let slow = SlowLane {
            sessions: 1,
            queue: 1,
        };
        let (pool, threads) = Pool::start_lanes(
            pool_token(admin),
            1,
            slow,
            KeyCacheOptions::default(),
            Default::default(),
        )
        .unwrap();
        assert_eq!((pool.slow_sessions(), pool.slow_capacity()), (1, 1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run_slow(None, move |_ctx| {
                    gate.recv().map_err(|_| Error::WorkerLost)?;
                    Ok(std::thread::current().name().map(str::to_owned))
                })
                .await
            }
        });
        until("the slow session to be busy", || pool.slow_busy() == 1).await;
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run_slow(None, |ctx| ctx.key("k-aes")).await }
        });
        until("the slow queue to fill", || pool.slow_queued() == 1).await;
        let shed = pool.run_slow(None, |_ctx| Ok(())).await;
        assert!(matches!(shed, Err(Error::Busy)), "{shed:?}");
        // The fast lane is untouched by the slow lane's backlog.
        assert_eq!(pool.busy(), 0);
        let key = pool.run(None, |ctx| ctx.key("k-aes")).await.unwrap();
        assert!(key.is_aes_256());
        release.send(()).unwrap();
        let thread = held.await.unwrap().unwrap();
        assert_eq!(thread.as_deref(), Some("hsm-slow-0"));
        assert!(queued.await.unwrap().unwrap().is_aes_256());
        stop(pool, threads).await;

        // No slow lane: slow jobs share the one pool (the old behaviour).
        let (pool, threads) =
            Pool::start(pool_token(admin), 1, KeyCacheOptions::default()).unwrap();
        assert_eq!((pool.slow_sessions(), pool.slow_capacity()), (0, 0));
        let thread = pool
            .run_slow(None, |_ctx| {
                Ok(std::thread::current().name().map(str::to_owned))
            })
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("hsm-session-0"));
        stop(pool, threads).await;
    }

    /// Session-object (CKA_TOKEN=false) secret keys labelled `label`: the
    /// worker's key copies. Session objects are visible to every session of
    /// the process, so the test's admin session sees the pool's copies.
    fn session_copies(admin: &cryptoki::session::Session, label: &str) -> Vec<ObjectHandle> {
        admin
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(false),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()
    }

    /// Encrypt `pt` with `key_id` through the pool; returns whether the
    /// pool used a session copy, and iv, ciphertext, tag.
    async fn pool_seal(
        pool: &Pool,
        key_id: &'static str,
        pt: &'static [u8],
    ) -> Result<(bool, aead::Sealed), Error> {
        pool.run(None, move |ctx| {
            let sealed = ctx.with_key(key_id, |s, rng, key| {
                aead::seal(
                    s,
                    key.handle,
                    key_id,
                    rng,
                    aead::SealRequest {
                        plaintext: pt,
                        aad: b"aad",
                        integrity_prefix: None,
                        verify: true,
                    },
                )
                .map_err(Error::from)
            })?;
            Ok((ctx.entry(key_id)?.uses_copy(), sealed))
        })
        .await
    }

    fn token_open(
        admin: &cryptoki::session::Session,
        key_id: &str,
        sealed: &aead::Sealed,
    ) -> Vec<u8> {
        let key = keys::find_key(admin, key_id).unwrap();
        aead::open(
            admin,
            key.handle,
            key_id,
            &sealed.iv,
            &sealed.ciphertext,
            &sealed.tag,
            b"aad",
        )
        .unwrap()
        .to_vec()
    }

    /// Crypto runs on a session copy that carries the token key's protection;
    /// revalidation drops the copy when the token key is deleted and
    /// refreshes it when the key is re-created.
    async fn key_copies(admin: &Hsm, session: &cryptoki::session::Session) {
        let token = keys::generate_aes_256(session, "k-copy", true, true).unwrap();
        let hsm = pool_token(admin);
        let options = KeyCacheOptions {
            session_copies: true,
            revalidate: Duration::from_secs(1),
        };
        let (pool, threads) = Pool::start(hsm, 2, options).unwrap();

        let (copied, sealed) = pool_seal(&pool, "k-copy", b"copy me").await.unwrap();
        assert!(copied, "crypto did not use a session copy");
        // Same key material: the token object opens what the copy sealed.
        assert_eq!(token_open(session, "k-copy", &sealed), b"copy me");
        let copies = session_copies(session, "k-copy");
        assert_eq!(copies.len(), 1, "one copy per process, shared by sessions");
        let copy = copies[0];
        assert_ne!(copy, token);
        assert!(!bool_attr(session, copy, AttributeType::Token));
        assert!(bool_attr(session, copy, AttributeType::Sensitive));
        assert!(!bool_attr(session, copy, AttributeType::Extractable));
        assert!(bool_attr(session, copy, AttributeType::Encrypt));
        assert!(bool_attr(session, copy, AttributeType::Decrypt));
        assert!(!bool_attr(session, copy, AttributeType::Wrap));
        // Sensitive: the value cannot be read from the copy either.
        let value = session.get_attributes(copy, &[AttributeType::Value]);
        assert!(
            !matches!(value.as_deref(), Ok([Attribute::Value(v)]) if !v.is_empty()),
            "key value readable from the copy"
        );
        // Both session threads share the copy.
        for _ in 0..8 {
            assert!(pool_seal(&pool, "k-copy", b"x").await.unwrap().0);
        }
        assert_eq!(session_copies(session, "k-copy"), [copy]);

        // Deleted on the token: KEY_NOT_FOUND within the revalidation
        // interval, and the copy is destroyed.
        session.destroy_object(token).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match pool_seal(&pool, "k-copy", b"x").await {
                Err(Error::Pkcs11(keymesh_pkcs11::Error::KeyNotFound { .. })) => break,
                Ok(_) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
            assert!(Instant::now() < until, "deleted key still served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            session_copies(session, "k-copy").is_empty(),
            "copy outlived its key"
        );

        // Deleted and re-created behind the cache (now encrypt-only) with no
        // request in between: the entry and the copy are refreshed within
        // the interval.
        let second = keys::generate_aes_256(session, "k-copy", true, true).unwrap();
        assert!(pool_seal(&pool, "k-copy", b"x").await.unwrap().0);
        let first = session_copies(session, "k-copy");
        assert_eq!(first.len(), 1);
        session.destroy_object(second).unwrap();
        let recreated = keys::generate_aes_256(session, "k-copy", true, false).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let key = pool.run(None, |ctx| ctx.key("k-copy")).await.unwrap();
            if key.handle == recreated {
                assert!(key.usage.encrypt && !key.usage.decrypt);
                break;
            }
            assert!(Instant::now() < until, "re-created key never picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (copied, _) = pool_seal_no_verify(&pool, "k-copy", b"new key").await;
        assert!(copied);
        let now = session_copies(session, "k-copy");
        assert_eq!(now.len(), 1, "old copy not destroyed");
        assert_ne!(now, first);
        assert!(!bool_attr(session, now[0], AttributeType::Decrypt));

        // Shutting the pool down destroys the copies with the keeper session.
        stop(pool, threads).await;
        assert!(session_copies(session, "k-copy").is_empty());
        session.destroy_object(recreated).unwrap();
    }

    /// `verify` needs decrypt; for an encrypt-only key seal without it.
    async fn pool_seal_no_verify(
        pool: &Pool,
        key_id: &'static str,
        pt: &'static [u8],
    ) -> (bool, aead::Sealed) {
        // (The key under test is encrypt-only, so nothing can open the
        // result; the copy's usage flags are checked instead.)
        pool.run(None, move |ctx| {
            let sealed = ctx.with_key(key_id, |s, rng, key| {
                aead::seal(
                    s,
                    key.handle,
                    key_id,
                    rng,
                    aead::SealRequest {
                        plaintext: pt,
                        aad: b"aad",
                        integrity_prefix: None,
                        verify: false,
                    },
                )
                .map_err(Error::from)
            })?;
            Ok((ctx.entry(key_id)?.uses_copy(), sealed))
        })
        .await
        .unwrap()
    }

    /// A key the HSM will not copy (CKA_COPYABLE=false) is served from the
    /// token object.
    async fn key_copies_refused(admin: &Hsm, session: &cryptoki::session::Session) {
        let mut template = keys::aes_256_template("k-nocopy", true, true, true);
        template.push(Attribute::Copyable(false));
        let token = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .unwrap();
        let hsm = pool_token(admin);
        let (pool, threads) = Pool::start(hsm, 1, KeyCacheOptions::default()).unwrap();
        for _ in 0..3 {
            let (copied, sealed) = pool_seal(&pool, "k-nocopy", b"plain").await.unwrap();
            assert!(!copied, "a non-copyable key was copied");
            assert_eq!(token_open(session, "k-nocopy", &sealed), b"plain");
        }
        assert!(session_copies(session, "k-nocopy").is_empty());
        stop(pool, threads).await;
        session.destroy_object(token).unwrap();
    }

    /// `--session-key-copies=false`: crypto on the token object, no copies.
    async fn key_copies_off(admin: &Hsm, session: &cryptoki::session::Session) {
        let hsm = pool_token(admin);
        let options = KeyCacheOptions {
            session_copies: false,
            revalidate: Duration::from_secs(1),
        };
        let (pool, threads) = Pool::start(hsm, 2, options).unwrap();
        let (copied, sealed) = pool_seal(&pool, "k-aes", b"no copy").await.unwrap();
        assert!(!copied);
        assert_eq!(token_open(session, "k-aes", &sealed), b"no copy");
        assert!(session_copies(session, "k-aes").is_empty());
        // Revalidation applies without copies too: a deleted key is noticed.
        let token = keys::generate_aes_256(session, "k-gone", true, true).unwrap();
        assert!(!pool_seal(&pool, "k-gone", b"x").await.unwrap().0);
        session.destroy_object(token).unwrap();
        assert!(matches!(
            pool_seal(&pool, "k-gone", b"x").await,
            Err(Error::Pkcs11(keymesh_pkcs11::Error::KeyNotFound { .. }))
        ));
        stop(pool, threads).await;
    }

    async fn grpc_suite(
        ctx: cryptoki::context::Pkcs11,
        admin: &cryptoki::session::Session,
        dir: &Path,
    ) {
        let status_file = dir.join("key-status.json");
        let config = common::config("test-worker", status_file.clone(), Duration::from_secs(2));
        let (channel, stop_tx, server) = common::start_worker(config, ctx).await;
        let mut c = CryptoWorkerClient::new(channel.clone());

        // Round trip with integrity value and verify.
        let pt = b"attack at dawn".to_vec();
        let enc = c
            .encrypt(EncryptRequest {
                key_id: "k-aes".into(),
                plaintext: pt.clone().into(),
                aad: b"aad".to_vec().into(),
                verify: true,
                integrity_prefix: Some(b"prefix".to_vec().into()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(enc.ciphertext.len(), pt.len());
        assert_eq!(enc.iv.len(), 12);
        assert_eq!(enc.tag.len(), 16);
        let mut d = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&b"prefix"[..], &enc.iv, &enc.ciphertext, &enc.tag] {
            d.update(part);
        }
        assert_eq!(enc.integrity_value.as_ref(), d.finish().as_ref());
        let dec_req = DecryptRequest {
            key_id: "k-aes".into(),
            ciphertext: enc.ciphertext.clone(),
            iv: enc.iv.clone(),
            tag: enc.tag.clone(),
            aad: b"aad".to_vec().into(),
        };
        let dec = c.decrypt(dec_req.clone()).await.unwrap().into_inner();
        assert_eq!(dec.plaintext.as_ref(), pt.as_slice());

        // Empty plaintext, no integrity prefix.
        let empty = c
            .encrypt(EncryptRequest {
                key_id: "k-aes".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(empty.ciphertext.is_empty() && empty.integrity_value.is_empty());

        // Error contract rows.
        let wrong_aad = DecryptRequest {
            aad: b"other".to_vec().into(),
            ..dec_req.clone()
        };
        expect_err(
            c.decrypt(wrong_aad).await,
            Code::InvalidArgument,
            ErrorReason::InvalidCiphertext,
        );
        let bad_iv = DecryptRequest {
            iv: vec![0; 8].into(),
            ..dec_req.clone()
        };
        expect_err(
            c.decrypt(bad_iv).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        let bad_tag = DecryptRequest {
            tag: vec![0; 12].into(),
            ..dec_req.clone()
        };
        expect_err(
            c.decrypt(bad_tag).await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: "".into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            ErrorReason::InvalidArgument,
        );
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: "nope".into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            ErrorReason::KeyNotFound,
        );
        expect_err(
            c.get_key_metadata(GetKeyMetadataRequest {
                key_id: "nope".into(),
            })
            .await,
            Code::NotFound,
            ErrorReason::KeyNotFound,
        );
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: "k-dup".into(),
                ..Default::default()
            })
            .await,
            Code::FailedPrecondition,
            ErrorReason::AmbiguousKey,
        );
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: "k-128".into(),
                ..Default::default()
            })
            .await,
            Code::FailedPrecondition,
            ErrorReason::UnsupportedKey,
        );
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: "k-dec".into(),
                ..Default::default()
            })
            .await,
            Code::FailedPrecondition,
            ErrorReason::KeyUsageNotPermitted,
        );
        let enc_only = c
            .encrypt(EncryptRequest {
                key_id: "k-enc".into(),
                plaintext: pt.clone().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        expect_err(
            c.decrypt(DecryptRequest {
                key_id: "k-enc".into(),
                ciphertext: enc_only.ciphertext,
                iv: enc_only.iv,
                tag: enc_only.tag,
                aad: Default::default(),
            })
            .await,
            Code::FailedPrecondition,
            ErrorReason::KeyUsageNotPermitted,
        );

        // Metadata tells the truth.
        let m = c
            .get_key_metadata(GetKeyMetadataRequest {
                key_id: "k-128".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.key_spec, "AES_128");
        let m = c
            .get_key_metadata(GetKeyMetadataRequest {
                key_id: "k-enc".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (m.key_spec.as_str(), m.key_usage.clone()),
            ("AES_256", vec!["ENCRYPT".to_owned()])
        );
        assert_eq!(m.status, KeyStatus::Enabled as i32);

        // Disable through the key-status file: picked up within a second.
        key_status::modify(&status_file, |f| f.disabled.insert("k-aes".into())).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let r = c.decrypt(dec_req.clone()).await;
            if let Err(s) = &r {
                assert_eq!(
                    (s.code(), reason(s)),
                    (Code::FailedPrecondition, ErrorReason::KeyDisabled)
                );
                break;
            }
            assert!(Instant::now() < until, "key never became disabled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = c
            .get_key_metadata(GetKeyMetadataRequest {
                key_id: "k-aes".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.status, KeyStatus::Disabled as i32);
        key_status::modify(&status_file, |f| f.disabled.clear()).unwrap();
        while c.decrypt(dec_req.clone()).await.is_err() {
            assert!(Instant::now() < until, "key never became enabled again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A key deleted and re-created elsewhere (now also for decrypt): the
        // worker keeps serving, and within --key-revalidate-secs (1 s here)
        // it has dropped the old handle and copy and uses the new key.
        let old = keys::find_key(admin, "k-enc").unwrap();
        admin.destroy_object(old.handle).unwrap();
        keys::generate_aes_256(admin, "k-enc", true, true).unwrap();
        c.encrypt(EncryptRequest {
            key_id: "k-enc".into(),
            plaintext: pt.clone().into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let m = c
                .get_key_metadata(GetKeyMetadataRequest {
                    key_id: "k-enc".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if m.key_usage.iter().any(|u| u == "DECRYPT") {
                break;
            }
            assert!(Instant::now() < until, "re-created key never picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = c
            .encrypt(EncryptRequest {
                key_id: "k-enc".into(),
                plaintext: pt.clone().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let d = c
            .decrypt(DecryptRequest {
                key_id: "k-enc".into(),
                ciphertext: e.ciphertext,
                iv: e.iv,
                tag: e.tag,
                aad: Default::default(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.plaintext.as_ref(), pt.as_slice());
        // One live copy of the new key, none of the old.
        assert_eq!(session_copies(admin, "k-enc").len(), 1);

        // Deep health.
        let h = c
            .get_health(GetHealthRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.worker_id, "test-worker");
        assert!(h.model.contains("sessions=2"), "{}", h.model);
        assert!(!h.vendor.is_empty());
        assert!(
            h.status == HealthStatus::Active as i32 || h.status == HealthStatus::Degraded as i32,
            "{h:?}"
        );
        assert!(h.checked_age_ms < 5_000, "{h:?}");
        let mut hc = HealthClient::new(channel.clone());
        for service in [
            "",
            "keymesh.crypto.v1.CryptoWorker",
            "keymesh.crypto.v1.KeyVault",
        ] {
            let r = hc
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
        }
        // The health key is a session object: never visible as a customer key.
        expect_err(
            c.encrypt(EncryptRequest {
                key_id: keys::HEALTH_KEY_LABEL.into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            ErrorReason::KeyNotFound,
        );

        // Concurrency across both sessions.
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let pt = i.to_be_bytes().to_vec();
                let e = c
                    .encrypt(EncryptRequest {
                        key_id: "k-aes".into(),
                        plaintext: pt.clone().into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let d = c
                    .decrypt(DecryptRequest {
                        key_id: "k-aes".into(),
                        ciphertext: e.ciphertext,
                        iv: e.iv,
                        tag: e.tag,
                        aad: Default::default(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(d.plaintext.as_ref(), pt.as_slice());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        stop_tx.send(()).unwrap();
        // Drain delay: NOT_SERVING at once, yet requests are still served.
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let r = hc
                .check(HealthCheckRequest {
                    service: "keymesh.crypto.v1.CryptoWorker".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.status == ServingStatus::NotServing as i32 {
                break;
            }
            assert!(Instant::now() < until, "still SERVING after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.encrypt(EncryptRequest {
            key_id: "k-aes".into(),
            ..Default::default()
        })
        .await
        .expect("served during the drain delay");
        drop(c);
        drop(hc);
        drop(channel);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server did not drain")
            .unwrap()
            .unwrap();
    }
}
