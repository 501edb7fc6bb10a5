//! The worker against a real SoftHSM2 token, over real gRPC.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised, and a
//! process may call `C_Initialize` only once. Tests must not mutate their own
//! environment, so the test re-runs its own binary as a child process with
//! `SOFTHSM2_CONF` pointing at a fresh temporary token directory; the child
//! runs the whole suite against one initialised module.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEYMESH_WORKER_SOFTHSM_CHILD";
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn softhsm_suite() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child::run();
        return;
    }
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "softhsm_suite",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "SoftHSM2 suite failed in the child process"
    );
}

mod child {
    use super::*;

    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use keymesh_common::Secret;
    use keymesh_crypto_worker::error::Error;
    use keymesh_crypto_worker::hsm::{self, Hsm};
    use keymesh_crypto_worker::pool::Pool;
    use keymesh_crypto_worker::{Config, key_status};
    use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
    use keymesh_proto::crypto::v1::{
        DecryptRequest, EncryptRequest, ErrorInfo, ErrorReason, GetHealthRequest,
        GetKeyMetadataRequest, HealthStatus, KeyStatus,
    };
    use prost::Message as _;
    use std::sync::Arc;
    use tonic::Code;
    use tonic::transport::Channel;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    const LABEL: &str = "keymesh";

    fn pin() -> Secret {
        Secret::new("1234".into())
    }

    fn reason(status: &tonic::Status) -> ErrorReason {
        let info = ErrorInfo::decode(status.details()).unwrap();
        ErrorReason::try_from(info.reason).unwrap()
    }

    fn expect_err(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, why: ErrorReason) {
        let status = r.expect_err("expected an error");
        assert_eq!((status.code(), reason(&status)), (code, why), "{status:?}");
    }

    pub fn run() {
        let dir = std::path::PathBuf::from(std::env::var_os(CHILD_ENV).unwrap());
        let ctx = hsm::load_module(Path::new(MODULE)).unwrap();
        assert_eq!(
            hsm::init_token(&ctx, LABEL, &pin(), &pin(), false).unwrap(),
            hsm::TokenInit::Created
        );
        assert_eq!(
            hsm::init_token(&ctx, LABEL, &pin(), &pin(), true).unwrap(),
            hsm::TokenInit::AlreadyExists
        );
        let admin = Hsm::open(ctx.clone(), LABEL, pin()).unwrap();
        let session = admin.open_session().unwrap();
        hsm::generate_aes_256(&session, "k-aes", true, true).unwrap();
        hsm::generate_aes_256(&session, "k-enc", true, false).unwrap();
        hsm::generate_aes_256(&session, "k-dec", false, true).unwrap();
        hsm::generate_aes_256(&session, "k-dup", true, true).unwrap();
        hsm::generate_aes_256(&session, "k-dup", true, true).unwrap();
        let mut aes128 = hsm::aes_256_template("k-128", true, true, true);
        for a in &mut aes128 {
            if let Attribute::ValueLen(_) = a {
                *a = Attribute::ValueLen(16.into());
            }
        }
        session
            .generate_key(&Mechanism::AesKeyGen, &aes128)
            .unwrap();
        let listed: Vec<String> = hsm::list_keys(&session)
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
            grpc_suite(ctx.clone(), &session, &dir).await;
        });
    }

    /// A job whose deadline has passed is answered without touching the HSM.
    async fn pool_deadline(admin: &Hsm) {
        let hsm = Arc::new(Hsm::open(admin.context().clone(), LABEL, pin()).unwrap());
        let (pool, threads) = Pool::start(hsm, 1).unwrap();
        let r = pool
            .run(Some(Instant::now()), |_ctx| -> Result<(), Error> {
                panic!("ran a job after its deadline")
            })
            .await;
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        let ok = pool.run(None, |ctx| ctx.key("k-aes")).await.unwrap();
        assert!(ok.is_aes_256());
        drop(pool);
        tokio::task::spawn_blocking(move || threads.join())
            .await
            .unwrap();
    }

    async fn grpc_suite(
        ctx: cryptoki::context::Pkcs11,
        admin: &cryptoki::session::Session,
        dir: &Path,
    ) {
        let status_file = dir.join("key-status.json");
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            addr_file: None,
            worker_id: "test-worker".into(),
            pkcs11_module: MODULE.into(),
            token_label: LABEL.into(),
            pin: pin(),
            sessions: 2,
            key_status_file: Some(status_file.clone()),
            health_interval: Duration::from_secs(1),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(keymesh_crypto_worker::serve_with_module(
            config,
            ctx,
            listener,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let channel = connect(addr).await;
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

        // A key deleted and re-created elsewhere: the stale cached handle is
        // dropped and the key found again.
        let old = hsm::find_key(admin, "k-enc").unwrap();
        admin.destroy_object(old.handle).unwrap();
        hsm::generate_aes_256(admin, "k-enc", true, true).unwrap();
        c.encrypt(EncryptRequest {
            key_id: "k-enc".into(),
            plaintext: pt.clone().into(),
            ..Default::default()
        })
        .await
        .unwrap();

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
        for service in ["", "keymesh.crypto.v1.CryptoWorker"] {
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
                key_id: hsm::HEALTH_KEY_LABEL.into(),
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

        drop(c);
        drop(hc);
        drop(channel);
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server did not drain")
            .unwrap()
            .unwrap();
    }

    async fn connect(addr: std::net::SocketAddr) -> Channel {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(ch) => return ch,
                Err(e) => {
                    assert!(Instant::now() < until, "cannot connect: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
