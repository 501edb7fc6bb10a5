//! Isolated XKS key stores: a key store serves only the keys assigned to it;
//! a key of another store, of no store, or any keymesh-internal object
//! answers exactly like a missing key, over XKS and over raw gRPC to a
//! worker that bypasses the edge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use keymesh_proto::crypto::v1::key_vault_client::KeyVaultClient;
use keymesh_proto::crypto::v1::{
    DecryptRequest as GrpcDecrypt, EncryptRequest as GrpcEncrypt, GenerateKeyRequest,
    GetKeyMetadataRequest as GrpcMetadata, VaultEncryptRequest, WrappedKey,
};
use keymesh_tests::xks::model::*;
use keymesh_tests::xks::{XksClient, XksResponse};
use keymesh_tests::*;

const ISO_A: &str = "/iso-a/kms/xks/v1";
const ISO_B: &str = "/iso-b/kms/xks/v1";
const DEMO: &str = "/demo/kms/xks/v1";
const LEGACY: &str = "/legacy/kms/xks/v1";
const KEY_A: &str = "iso-a-key";
const KEY_B: &str = "iso-b-key";
const ORPHAN: &str = "iso-orphan";
const DEMO_KEY: &str = "demo-encrypt-decrypt";
const MISSING: &str = "no-such-key-anywhere";
/// keymesh's own objects: the domain key (token object), the workers'
/// health-check key (a session object of each worker), the session label
/// of unwrapped CMKs, and an unused name in the reserved prefix.
const INTERNAL: [&str; 4] = [
    "keymesh-domain-v1",
    "keymesh-health-check",
    "keymesh-vault-key",
    "keymesh-anything",
];
const OPS: [Operation; 3] = [
    Operation::GetKeyMetadata,
    Operation::Encrypt,
    Operation::Decrypt,
];

async fn call(c: &XksClient, op: Operation, key_id: &str) -> XksResponse {
    let fake = EncryptResponse {
        ciphertext: vec![1; 16],
        iv: vec![2; 12],
        tag: vec![3; 16],
        ciphertext_metadata: None,
        cdiv: None,
    };
    match op {
        Operation::GetKeyMetadata => {
            c.get_key_metadata(key_id, &GetKeyMetadataRequest::default())
                .await
        }
        Operation::Encrypt => c.encrypt(key_id, &EncryptRequest::new(plaintext(32))).await,
        _ => {
            c.decrypt(key_id, &DecryptRequest::from_encrypt(&fake, None))
                .await
        }
    }
    .unwrap()
}

/// What a caller can observe of an answer: status, content type, body.
fn observable(r: &XksResponse) -> (u16, Option<String>, Vec<u8>) {
    (
        r.status(),
        r.content_type().map(str::to_owned),
        r.body.to_vec(),
    )
}

/// `key_id` through `c` answers every operation exactly as a missing key does.
async fn assert_like_missing(c: &XksClient, key_id: &str, why: &str) {
    for op in OPS {
        let missing = call(c, op, MISSING).await;
        assert_eq!(missing.status(), 404, "{op:?} on a missing key");
        assert_eq!(
            missing.error_name().as_deref(),
            Some("KeyNotFoundException")
        );
        let r = call(c, op, key_id).await;
        assert_eq!(
            observable(&r),
            observable(&missing),
            "{why}: {op:?} on {key_id} must look exactly like a missing key: {} {}",
            r.status(),
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Poll until `c` answers 404 on `key_id` (a hot reload took it away).
async fn wait_not_served(c: &XksClient, key_id: &str) {
    poll_async(&format!("{key_id} to stop being served"), WAIT, || async {
        let r = c
            .get_key_metadata(key_id, &GetKeyMetadataRequest::default())
            .await
            .ok()?;
        (r.status() == 404).then_some(())
    })
    .await
    .unwrap();
}

/// Poll until the new key store's credential is accepted.
async fn wait_store(m: &Mesh, uri_path: &str) -> XksClient {
    let c = m.client(uri_path);
    poll_async(&format!("{uri_path} loaded"), WAIT, || async {
        (c.health(&HealthRequest::default()).await.ok()?.status() == 200).then_some(())
    })
    .await
    .unwrap();
    c
}

fn edge_log(m: &Mesh) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(m.root().join("logs")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("edge") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// Add a catch-all `"*"` to a key store, as keymeshctl wrote before key
/// stores were isolated.
fn add_legacy_wildcard(m: &Mesh, uri_path: &str) {
    let mut f: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m.keystores_file).unwrap()).unwrap();
    for ks in f["keystores"].as_array_mut().unwrap() {
        if ks["uri_path"] == uri_path {
            ks["key_ids"] = serde_json::json!(["*"]);
        }
    }
    atomic_write(
        &m.keystores_file,
        serde_json::to_vec_pretty(&f).unwrap().as_slice(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_stores_serve_only_their_keys() {
    let m = Mesh::start(MeshOptions {
        keystores: vec![TENANT_A.into()],
        ..MeshOptions::default()
    })
    .unwrap();
    m.ctl(&["domain-key", "init", "--if-missing"]).unwrap();
    for ks in [ISO_A, ISO_B, DEMO, LEGACY] {
        m.create_credential(ks).unwrap();
    }
    m.ctl(&["key", "create", KEY_A, "--keystore", ISO_A])
        .unwrap();
    m.ctl(&["key", "create", KEY_B, "--keystore", ISO_B])
        .unwrap();
    m.ctl(&["key", "create", DEMO_KEY, "--keystore", DEMO])
        .unwrap();
    m.ctl(&["key", "create", ORPHAN]).unwrap();
    add_legacy_wildcard(&m, LEGACY);
    let a = wait_store(&m, ISO_A).await;
    let b = wait_store(&m, ISO_B).await;
    assert_eq!(m.wait_key_served(ISO_A, KEY_A).await.unwrap(), 200);
    assert_eq!(m.wait_key_served(ISO_B, KEY_B).await.unwrap(), 200);
    for op in OPS.into_iter().take(2) {
        assert_eq!(call(&a, op, KEY_A).await.status(), 200, "{op:?}");
    }

    // Cross-use: another store's key, the demo store's key, a key of no
    // store, the harness keys (assigned to TENANT_A only), internal objects.
    assert_like_missing(&a, KEY_B, "B's key with A's credential").await;
    assert_like_missing(&b, KEY_A, "A's key with B's credential").await;
    assert_like_missing(&a, DEMO_KEY, "the demo key with A's credential").await;
    assert_like_missing(&a, ORPHAN, "a key of no store").await;
    assert_like_missing(&a, KEY_ED, "a key of another store").await;
    for internal in INTERNAL {
        assert_like_missing(&a, internal, "an internal object").await;
    }

    // The legacy "*" matches nothing without the opt-in, and says why.
    let legacy = wait_store(&m, LEGACY).await;
    poll("the catch-all warning", WAIT, || {
        edge_log(&m)
            .lines()
            .any(|l| l.contains("catch-all key pattern ignored") && l.contains(LEGACY))
            .then_some(())
    })
    .unwrap();
    assert_like_missing(&legacy, KEY_A, "\"*\" without the opt-in").await;
    assert_like_missing(&legacy, "keymesh-domain-v1", "\"*\" without the opt-in").await;

    // Assign B's key to A: served (hot reload); unassign: 404 again.
    m.assign_keys(&[KEY_B], &[ISO_A.to_owned()]).unwrap();
    assert_eq!(m.wait_key_served(ISO_A, KEY_B).await.unwrap(), 200);
    let enc = a
        .encrypt(KEY_B, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_eq!(enc.status(), 200);
    let enc = enc.parse::<EncryptResponse>().unwrap();
    // Same key, so B decrypts what A encrypted under it.
    let d = b
        .decrypt(KEY_B, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    m.unassign_keys(&[KEY_B], &[ISO_A.to_owned()]).unwrap();
    wait_not_served(&a, KEY_B).await;
    assert_like_missing(&a, KEY_B, "after unassign").await;
    // B is unaffected.
    assert_eq!(call(&b, Operation::Encrypt, KEY_B).await.status(), 200);
    m.assert_no_plaintext_in_logs();
}

/// `allow_wildcard_keystores = true`: a legacy `"*"` store serves every
/// customer key again, with a warning naming it, and still no internal one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_wildcard_needs_the_opt_in_and_never_reaches_internal_objects() {
    let m = Mesh::start(MeshOptions {
        keystores: vec![TENANT_A.into()],
        edge_extra: "allow_wildcard_keystores = true".into(),
        ..MeshOptions::default()
    })
    .unwrap();
    m.ctl(&["domain-key", "init", "--if-missing"]).unwrap();
    m.create_credential(LEGACY).unwrap();
    add_legacy_wildcard(&m, LEGACY);
    let legacy = wait_store(&m, LEGACY).await;
    assert_eq!(m.wait_key_served(LEGACY, KEY_ED).await.unwrap(), 200);
    poll("the wildcard warning", WAIT, || {
        edge_log(&m)
            .lines()
            .any(|l| l.contains("allow_wildcard_keystores = true") && l.contains(LEGACY))
            .then_some(())
    })
    .unwrap();
    for internal in INTERNAL {
        assert_like_missing(&legacy, internal, "\"*\" with the opt-in").await;
    }
}

/// A caller that reaches a worker directly gets no internal object either:
/// CryptoWorker refuses reserved labels as missing keys, KeyVault accepts
/// only domain-key labels as wrapping keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_refuse_labels_outside_their_callers_class() {
    // Plaintext hops so that this test can dial the worker itself: the label
    // classes are checked by the worker whatever the transport (who may call
    // at all is grpc_mtls.rs's subject).
    let m = Mesh::start(MeshOptions {
        keystores: vec![TENANT_A.into()],
        grpc_mtls: false,
        ..MeshOptions::default()
    })
    .unwrap();
    m.ctl(&["domain-key", "init", "--if-missing"]).unwrap();
    let url = format!("http://{}", m.worker_addrs[0]);
    let mut xks = CryptoWorkerClient::connect(url.clone()).await.unwrap();

    // The control: a customer key works over raw gRPC.
    let ok = xks
        .get_key_metadata(GrpcMetadata {
            key_id: KEY_ED.into(),
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let missing = xks
        .get_key_metadata(GrpcMetadata {
            key_id: MISSING.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for label in INTERNAL {
        let md = xks
            .get_key_metadata(GrpcMetadata {
                key_id: label.into(),
            })
            .await
            .unwrap_err();
        let enc = xks
            .encrypt(GrpcEncrypt {
                key_id: label.into(),
                plaintext: plaintext(16).into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let dec = xks
            .decrypt(GrpcDecrypt {
                key_id: label.into(),
                ciphertext: vec![1; 16].into(),
                iv: vec![2; 12].into(),
                tag: vec![3; 16].into(),
                aad: Default::default(),
            })
            .await
            .unwrap_err();
        for (op, s) in [("metadata", md), ("encrypt", enc), ("decrypt", dec)] {
            assert_eq!(
                (s.code(), s.details()),
                (missing.code(), missing.details()),
                "{op} on {label}: {s:?}"
            );
        }
    }

    let mut vault = KeyVaultClient::connect(url).await.unwrap();
    let good = vault
        .generate_key(GenerateKeyRequest {
            wrapping_key: "keymesh-domain-v1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let absent = vault
        .generate_key(GenerateKeyRequest {
            wrapping_key: "keymesh-domain-absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(absent.code(), tonic::Code::FailedPrecondition);
    for label in [
        KEY_ED,
        "keymesh-health-check",
        "keymesh-vault-key",
        "anything",
    ] {
        let g = vault
            .generate_key(GenerateKeyRequest {
                wrapping_key: label.into(),
            })
            .await
            .unwrap_err();
        let e = vault
            .encrypt(VaultEncryptRequest {
                key: Some(WrappedKey {
                    wrapping_key: label.into(),
                    wrapped: good.wrapped.clone(),
                }),
                plaintext: plaintext(16).into(),
                aad: Default::default(),
            })
            .await
            .unwrap_err();
        for (op, s) in [("GenerateKey", g), ("Encrypt", e)] {
            assert_eq!(
                (s.code(), s.details()),
                (absent.code(), absent.details()),
                "KeyVault {op} under {label}: {s:?}"
            );
        }
    }
    // The worker is still fine.
    let r = m
        .client(TENANT_A)
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
