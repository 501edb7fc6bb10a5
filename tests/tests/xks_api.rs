//! XKS API conformance against one shared mesh (plain HTTP, one worker).
//!
//! Tests that change shared state use their own key store or key:
//! `/rot/...` for credential rotation, `/pol/...` for policy, `/thr/...` for
//! throttling, `key-toggle` for enable/disable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::Duration;

use keymesh_tests::errors::{assert_error_shape, assert_xks_error};
use keymesh_tests::xks::model::*;
use keymesh_tests::xks::{Credentials, RawRequest, XksClient, XksResponse};
use keymesh_tests::*;
use serde_json::{Value, json};

const ROT: &str = "/rot/kms/xks/v1";
const POL: &str = "/pol/kms/xks/v1";
const THR: &str = "/thr/kms/xks/v1";
const SPEC_KEY: &str = "key-spec-vector";
const DUP_KEY: &str = "key-dup";
const AES128_KEY: &str = "key-aes128";

const POL_ALLOW: &str = "[[keystore]]\nuri_path = \"/pol/kms/xks/v1\"\ndefault = \"allow\"\n";

fn mesh() -> &'static Mesh {
    static M: OnceLock<Mesh> = OnceLock::new();
    shared_mesh(&M, || MeshOptions {
        keystores: vec![
            TENANT_A.into(),
            TENANT_B.into(),
            ROT.into(),
            POL.into(),
            THR.into(),
        ],
        limiter_toml: Some(format!(
            "{LIMITER_DEFAULT_TOML}\n[[tenants]]\ntenant = \"{THR}\"\nrate_per_second = 1\nburst = 3\n"
        )),
        policy_toml: POL_ALLOW.into(),
        ..MeshOptions::default()
    })
}

fn a() -> XksClient {
    mesh().client(TENANT_A)
}

async fn encrypt_ok(c: &XksClient, key: &str, req: &EncryptRequest) -> EncryptResponse {
    let r = c.encrypt(key, req).await.unwrap();
    r.parse::<EncryptResponse>()
        .unwrap_or_else(|e| panic!("Encrypt {key}: {e}"))
}

async fn decrypt(c: &XksClient, key: &str, req: &DecryptRequest) -> XksResponse {
    c.decrypt(key, req).await.unwrap()
}

fn signed(c: &XksClient, op: Operation, key: &str, body: &Value) -> RawRequest {
    RawRequest::post_json(
        op.path(&c.config().uri_path, key),
        serde_json::to_vec(body).unwrap(),
        c.signing(),
    )
}

fn body_for(op: Operation) -> Value {
    match op {
        Operation::GetKeyMetadata => GetKeyMetadataRequest::default().to_json(),
        Operation::Encrypt => EncryptRequest::new(plaintext(32)).to_json(),
        Operation::Decrypt => DecryptRequest {
            metadata: RequestMetadata::for_operation(Operation::Decrypt),
            ciphertext: vec![0; 32],
            encryption_algorithm: "AES_GCM".into(),
            iv: vec![0; 12],
            tag: vec![0; 16],
            aad: None,
            ciphertext_metadata: None,
        }
        .to_json(),
        Operation::GetHealthStatus => HealthRequest::default().to_json(),
    }
}

// ---------------------------------------------------------------- probes

#[test]
fn probes_answer_without_auth() {
    let m = mesh();
    for p in ["/ping", "/livez", "/readyz", "/metrics"] {
        assert_eq!(http_get_status(m.edge_addr, p), 200, "GET {p}");
    }
}

// ---------------------------------------------------------------- positive

#[tokio::test]
async fn get_key_metadata_reports_usage_and_status() {
    let c = a();
    for (key, enc, dec) in [
        (KEY_ED, true, true),
        (KEY_ENC, true, false),
        (KEY_DEC, false, true),
        (KEY_NONE, false, false),
    ] {
        let r = c
            .get_key_metadata(key, &GetKeyMetadataRequest::default())
            .await
            .unwrap();
        assert_eq!(r.content_type().unwrap_or(""), "application/json", "{key}");
        let md = r
            .parse::<KeyMetadata>()
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(md.key_spec, "AES_256", "{key}");
        assert_eq!(md.key_status, "ENABLED", "{key}");
        assert_eq!(
            md.key_usage.contains(&"ENCRYPT".to_string()),
            enc,
            "{key}: {:?}",
            md.key_usage
        );
        assert_eq!(
            md.key_usage.contains(&"DECRYPT".to_string()),
            dec,
            "{key}: {:?}",
            md.key_usage
        );
        assert!(md.key_usage.len() <= 10);
        assert!(
            md.key_usage
                .iter()
                .all(|u| u.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        );
    }
}

#[tokio::test]
async fn encrypt_decrypt_round_trip_with_aad_and_cdiv() {
    let c = a();
    for n in [32usize, 4300] {
        let pt = plaintext(n);
        let aad = b"tenant=blue;app=ledger".to_vec();
        let req = EncryptRequest::new(pt.clone())
            .with_aad(aad.clone())
            .with_cdiv();
        let r = c.encrypt(KEY_ED, &req).await.unwrap();
        assert_eq!(r.content_type().unwrap_or(""), "application/json");
        let enc = r.parse::<EncryptResponse>().unwrap();
        assert_eq!(
            enc.ciphertext.len(),
            n,
            "ciphertext length = plaintext length"
        );
        assert!(
            enc.iv.len() == 12 || enc.iv.len() == 16,
            "IV {} bytes",
            enc.iv.len()
        );
        assert_eq!(enc.tag.len(), 16);
        assert_ne!(enc.ciphertext, pt);
        let cm = enc.ciphertext_metadata.clone().unwrap_or_default();
        assert!(cm.len() <= 20, "ciphertextMetadata {} bytes", cm.len());
        let want = cdiv(&aad, &cm, &enc.iv, &enc.ciphertext, &enc.tag);
        assert_eq!(
            enc.cdiv.as_deref(),
            Some(&want[..]),
            "CDIV = SHA-256(AAD||CM||IV||CT||TAG)"
        );
        let d = decrypt(&c, KEY_ED, &DecryptRequest::from_encrypt(&enc, Some(aad))).await;
        let d = d.parse::<DecryptResponse>().unwrap();
        assert!(d.plaintext == pt, "round trip of {n} bytes");
    }
    mesh().assert_no_plaintext_in_logs();
}

#[tokio::test]
async fn encrypt_without_aad_or_cdiv() {
    let c = a();
    let pt = plaintext(100);
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(pt.clone())).await;
    assert!(enc.cdiv.is_none(), "no CDIV unless requested");
    let d = decrypt(&c, KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .parse::<DecryptResponse>()
        .unwrap();
    assert!(d.plaintext == pt);
    // Fresh IV per encryption.
    let enc2 = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(pt.clone())).await;
    assert_ne!(enc.iv, enc2.iv, "IVs must not repeat");
    assert_ne!(enc.ciphertext, enc2.ciphertext);
}

#[tokio::test]
async fn cdiv_with_empty_aad_and_spec_sized_inputs() {
    let c = a();
    // CDIV without AAD: SHA-256(CM||IV||CT||TAG).
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(48)).with_cdiv()).await;
    let cm = enc.ciphertext_metadata.clone().unwrap_or_default();
    assert_eq!(
        enc.cdiv.unwrap(),
        cdiv(b"", &cm, &enc.iv, &enc.ciphertext, &enc.tag).to_vec()
    );
    // Spec maxima: 8192-byte AAD must be accepted (XKS-26).
    let aad = vec![b'a'; 8192];
    let enc = encrypt_ok(
        &c,
        KEY_ED,
        &EncryptRequest::new(plaintext(64))
            .with_aad(aad.clone())
            .with_cdiv(),
    )
    .await;
    let cm = enc.ciphertext_metadata.clone().unwrap_or_default();
    assert_eq!(
        enc.cdiv.clone().unwrap(),
        cdiv(&aad, &cm, &enc.iv, &enc.ciphertext, &enc.tag).to_vec()
    );
    let d = decrypt(&c, KEY_ED, &DecryptRequest::from_encrypt(&enc, Some(aad))).await;
    assert_eq!(d.status(), 200, "{:?}", d.body);
}

#[tokio::test]
async fn health_status_reports_fleet() {
    let c = a();
    let r = c.health(&HealthRequest::default()).await.unwrap();
    assert_eq!(r.content_type().unwrap_or(""), "application/json");
    let h = r.parse::<HealthStatus>().unwrap();
    assert!(h.fleet_size > 0);
    assert!(
        !h.proxy_vendor.is_empty() && !h.proxy_model.is_empty() && !h.ekm_vendor.is_empty(),
        "{h:?}"
    );
    assert_eq!(
        h.ekm_fleet_details.len(),
        mesh().opts.workers,
        "one ekmFleetDetails entry per worker: {h:?}"
    );
    assert!((1..=10).contains(&h.ekm_fleet_details.len()));
    for d in &h.ekm_fleet_details {
        assert!(!d.id.is_empty() && !d.model.is_empty());
        assert_eq!(d.health_status, "ACTIVE", "{d:?}");
    }
    let mut ids: Vec<_> = h.ekm_fleet_details.iter().map(|d| &d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), h.ekm_fleet_details.len(), "ids unique");
    // Every accepted kmsOperation for health.
    for op in [
        "CreateCustomKeyStore",
        "UpdateCustomKeyStore",
        "ConnectCustomKeyStore",
        "KmsHealthCheck",
        "SomeFutureOp",
    ] {
        let mut req = HealthRequest::default();
        req.metadata.kms_operation = op.into();
        assert_eq!(c.health(&req).await.unwrap().status(), 200, "{op}");
    }
}

#[tokio::test]
async fn lenient_request_metadata() {
    // XKS-16..19: long ARNs, opaque request ids, unknown kmsOperation, unknown members.
    let c = a();
    let prefix = "arn:aws:iam::111122223333:role/";
    let arn = format!("{prefix}{}", "r".repeat(2048 - prefix.len()));
    assert_eq!(arn.len(), 2048);
    let mut req = EncryptRequest::new(plaintext(16));
    req.metadata.aws_principal_arn = Some(arn.clone());
    req.metadata.kms_key_arn = Some(format!(
        "arn:aws:kms:us-east-1:111122223333:key/{}",
        "k".repeat(1990)
    ));
    req.metadata.kms_request_id = "not a uuid at all!".into();
    req.metadata.kms_operation = "BulkEncryptFuture".into();
    req.metadata.kms_via_service = Some("ebs".into());
    req.metadata.aws_source_vpc = Some("vpc-12345678".into());
    req.metadata.aws_source_vpce = Some("vpce-12345678".into());
    let mut body = req.to_json();
    body["requestMetadata"]["kmsRecipientAttestationPCR0"] = json!("abcd");
    body["requestMetadata"]["principalTags"] = json!({"team": "x"});
    body["someFutureMember"] = json!([1, 2, 3]);
    let r = c
        .post_json(Operation::Encrypt, KEY_ED, &body)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.body);
    // GetKeyMetadata with kmsKeyArn / kmsViaService (older revisions sent them).
    let mut g = GetKeyMetadataRequest::default();
    g.metadata.kms_key_arn = Some(EXAMPLE_KEY_ARN.into());
    g.metadata.kms_via_service = Some("ebs".into());
    g.metadata.kms_operation = "DescribeKey".into();
    assert_eq!(c.get_key_metadata(KEY_ED, &g).await.unwrap().status(), 200);
}

#[tokio::test]
async fn key_ids_of_the_full_grammar_are_routed() {
    // XKS-4: 128 chars of A-Za-z0-9-._ reach key lookup (404 KeyNotFound, not InvalidUriPath).
    let c = a();
    let id = format!("Ab9-._{}", "x".repeat(122));
    assert_eq!(id.len(), 128);
    let r = c
        .get_key_metadata(&id, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetKeyMetadata, 404, "KeyNotFoundException");
}

// ---------------------------------------------------------------- spec vectors

/// §6.2 end-to-end vector, key imported into the HSM: decrypting the spec's
/// ciphertext proves the proxy frames AAD and metadata exactly as §6.1 says.
#[tokio::test]
async fn spec_vector_decrypts_and_confusables_do_not() {
    let m = mesh();
    static IMPORT: OnceLock<()> = OnceLock::new();
    IMPORT.get_or_init(|| {
        let key: Vec<u8> = (0u8..32).collect();
        m.import_aes_key(SPEC_KEY, &key, "5e01").unwrap();
    });
    m.wait_key_served(TENANT_A, SPEC_KEY).await.unwrap();
    let c = a();
    let iv = unb64("AAECAwQFBgcICQoL").unwrap();
    let ct = unb64("D2e6d6rFmlDeYA==").unwrap();
    let tag_with = unb64("xFDqNpJZJtrAIIz8JcT7Aw==").unwrap();
    let tag_none = unb64("mJhlsXlHTS24iNH/Fpd19w==").unwrap();
    let req = |tag: &[u8], aad: Option<&[u8]>, cm: Option<&[u8]>| DecryptRequest {
        metadata: RequestMetadata::for_operation(Operation::Decrypt),
        ciphertext: ct.clone(),
        encryption_algorithm: "AES_GCM".into(),
        iv: iv.clone(),
        tag: tag.to_vec(),
        aad: aad.map(<[u8]>::to_vec),
        ciphertext_metadata: cm.map(<[u8]>::to_vec),
    };
    let r = decrypt(
        &c,
        SPEC_KEY,
        &req(&tag_with, Some(b"tenant=blue;app=ledger"), Some(b"kv=7")),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "§6.2 vector (AAD + metadata) must decrypt: {:?}",
        r.body
    );
    assert_eq!(
        r.parse::<DecryptResponse>().unwrap().plaintext,
        b"Hello XKS!"
    );
    let r = decrypt(&c, SPEC_KEY, &req(&tag_none, None, None)).await;
    assert_eq!(
        r.status(),
        200,
        "§6.2 vector (no AAD, no metadata) must decrypt: {:?}",
        r.body
    );
    assert_eq!(
        r.parse::<DecryptResponse>().unwrap().plaintext,
        b"Hello XKS!"
    );
    // Confusables of §6.2: each is a different framed AAD.
    for (aad, cm, why) in [
        (Some(&b"kv=7"[..]), None, "AAD kv=7, no metadata"),
        (None, Some(&b"kv=7"[..]), "no AAD, metadata kv=7"),
        (
            Some(&b"tenant=blue;app=ledgerkv=7"[..]),
            None,
            "AAD||CM as AAD",
        ),
        (
            Some(&b"tenant=blue;app=ledger"[..]),
            None,
            "metadata dropped",
        ),
    ] {
        let r = decrypt(&c, SPEC_KEY, &req(&tag_with, aad, cm)).await;
        assert_xks_error(&r, Operation::Decrypt, 400, "InvalidCiphertextException");
        let _ = why;
    }
    // The no-AAD tag must not verify with the "kv=7" AAD or metadata either.
    for (aad, cm) in [(Some(&b"kv=7"[..]), None), (None, Some(&b"kv=7"[..]))] {
        let r = decrypt(&c, SPEC_KEY, &req(&tag_none, aad, cm)).await;
        assert_xks_error(&r, Operation::Decrypt, 400, "InvalidCiphertextException");
    }
    // Empty AAD ("") is the same as absent under the §6 layout.
    let r = decrypt(&c, SPEC_KEY, &req(&tag_none, Some(b""), None)).await;
    assert_eq!(
        r.status(),
        200,
        "AAD \"\" must equal absent AAD under §6.1: {:?}",
        r.body
    );
}

#[tokio::test]
async fn aad_framing_confusables_on_proxy_ciphertexts() {
    let c = a();
    let pt = plaintext(40);
    // Encrypt with AAD "kv=7" and no metadata must not decrypt as no-AAD, or with
    // the AAD moved into ciphertextMetadata.
    let enc = encrypt_ok(
        &c,
        KEY_ED,
        &EncryptRequest::new(pt.clone()).with_aad(b"kv=7".to_vec()),
    )
    .await;
    let cm = enc.ciphertext_metadata.clone();
    let mut r = DecryptRequest::from_encrypt(&enc, None);
    assert_xks_error(
        &decrypt(&c, KEY_ED, &r).await,
        Operation::Decrypt,
        400,
        "InvalidCiphertextException",
    );
    r.ciphertext_metadata = Some([cm.clone().unwrap_or_default(), b"kv=7".to_vec()].concat());
    let resp = decrypt(&c, KEY_ED, &r).await;
    assert_eq!(
        resp.status(),
        400,
        "moving AAD into metadata must fail: {:?}",
        resp.body
    );
    // Encrypt without AAD: if the proxy returns metadata M, Decrypt with AAD = M
    // and no metadata must fail (the §6 example).
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(pt.clone())).await;
    if let Some(m) = enc.ciphertext_metadata.clone() {
        let mut r = DecryptRequest::from_encrypt(&enc, Some(m));
        r.ciphertext_metadata = None;
        assert_xks_error(
            &decrypt(&c, KEY_ED, &r).await,
            Operation::Decrypt,
            400,
            "InvalidCiphertextException",
        );
    }
    // Any AAD where none was used fails.
    let r = DecryptRequest::from_encrypt(&enc, Some(b"x".to_vec()));
    assert_xks_error(
        &decrypt(&c, KEY_ED, &r).await,
        Operation::Decrypt,
        400,
        "InvalidCiphertextException",
    );
}

// ---------------------------------------------------------------- tampering and lengths

#[tokio::test]
async fn tampered_inputs_are_invalid_ciphertext() {
    let c = a();
    let aad = b"ctx=tamper".to_vec();
    let enc = encrypt_ok(
        &c,
        KEY_ED,
        &EncryptRequest::new(plaintext(64)).with_aad(aad.clone()),
    )
    .await;
    let good = DecryptRequest::from_encrypt(&enc, Some(aad.clone()));
    assert_eq!(decrypt(&c, KEY_ED, &good).await.status(), 200);
    let mut cases: Vec<(&str, DecryptRequest)> = Vec::new();
    let mut r = good.clone();
    r.ciphertext[3] ^= 1;
    cases.push(("ciphertext bit flip", r));
    let mut r = good.clone();
    r.ciphertext.push(0);
    cases.push(("ciphertext extended", r));
    let mut r = good.clone();
    r.iv[0] ^= 0x80;
    cases.push(("iv bit flip", r));
    let mut r = good.clone();
    r.tag[15] ^= 1;
    cases.push(("tag bit flip", r));
    let mut r = good.clone();
    r.aad = Some(b"ctx=tamperX".to_vec());
    cases.push(("aad changed", r));
    let mut r = good.clone();
    r.aad = None;
    cases.push(("aad missing", r));
    let mut r = good.clone();
    r.ciphertext_metadata = Some(match &enc.ciphertext_metadata {
        Some(m) if !m.is_empty() => {
            let mut m = m.clone();
            m[0] ^= 1;
            m
        }
        _ => b"x".to_vec(),
    });
    cases.push(("metadata changed/added", r));
    if enc.ciphertext_metadata.is_some() {
        let mut r = good.clone();
        r.ciphertext_metadata = None;
        cases.push(("metadata dropped", r));
    }
    for (what, r) in cases {
        let resp = decrypt(&c, KEY_ED, &r).await;
        assert_eq!(
            (resp.status(), resp.error_name()),
            (400, Some("InvalidCiphertextException".to_string())),
            "{what}: {:?}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_error_shape(&resp, Operation::Decrypt);
    }
}

#[tokio::test]
async fn iv_and_tag_lengths() {
    let c = a();
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(32))).await;
    let good = DecryptRequest::from_encrypt(&enc, None);
    for n in [0usize, 1, 8, 11, 13, 15, 17, 24, 32] {
        let mut r = good.clone();
        r.iv = vec![7; n];
        let resp = decrypt(&c, KEY_ED, &r).await;
        if n == 0 {
            // An empty IV is also a missing-input case; either 400 is defensible.
            assert_eq!(resp.status(), 400, "IV of 0 bytes: {:?}", resp.body);
            assert_error_shape(&resp, Operation::Decrypt);
        } else {
            assert_xks_error(&resp, Operation::Decrypt, 400, "InvalidCiphertextException");
        }
    }
    // A 16-byte IV is a valid length: wrong value → InvalidCiphertext (tag mismatch).
    let mut r = good.clone();
    r.iv = vec![7; 16];
    assert_xks_error(
        &decrypt(&c, KEY_ED, &r).await,
        Operation::Decrypt,
        400,
        "InvalidCiphertextException",
    );
    for n in [0usize, 4, 12, 15, 17, 32] {
        let mut r = good.clone();
        r.tag = vec![1; n];
        let resp = decrypt(&c, KEY_ED, &r).await;
        if n == 0 {
            assert_eq!(resp.status(), 400, "tag of 0 bytes: {:?}", resp.body);
            assert_error_shape(&resp, Operation::Decrypt);
        } else {
            assert_xks_error(&resp, Operation::Decrypt, 400, "InvalidCiphertextException");
        }
    }
}

#[tokio::test]
async fn ciphertext_metadata_over_20_bytes_is_validation() {
    let c = a();
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(32))).await;
    let mut r = DecryptRequest::from_encrypt(&enc, None);
    r.ciphertext_metadata = Some(vec![b'm'; 21]);
    assert_xks_error(
        &decrypt(&c, KEY_ED, &r).await,
        Operation::Decrypt,
        400,
        "ValidationException",
    );
    // 20 bytes is a legal length (but wrong value): InvalidCiphertext, not Validation.
    r.ciphertext_metadata = Some(vec![b'm'; 20]);
    assert_xks_error(
        &decrypt(&c, KEY_ED, &r).await,
        Operation::Decrypt,
        400,
        "InvalidCiphertextException",
    );
}

#[tokio::test]
async fn size_limits_are_501() {
    let m = mesh();
    let c = a();
    let max = m.opts.max_plaintext_bytes;
    // At the limit: accepted. Above: 501 UnsupportedOperationException (XKS-57).
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(max))).await;
    assert_eq!(enc.ciphertext.len(), max);
    let r = c
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(max + 1)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 501, "UnsupportedOperationException");
    let mut d = DecryptRequest::from_encrypt(&enc, None);
    d.ciphertext = vec![0; max + 1];
    assert_xks_error(
        &decrypt(&c, KEY_ED, &d).await,
        Operation::Decrypt,
        501,
        "UnsupportedOperationException",
    );
    // AAD above max_aad_bytes.
    let r = c
        .encrypt(
            KEY_ED,
            &EncryptRequest::new(plaintext(8)).with_aad(vec![1; m.opts.max_aad_bytes + 1]),
        )
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 501, "UnsupportedOperationException");
    let mut d = DecryptRequest::from_encrypt(&enc, Some(vec![1; m.opts.max_aad_bytes + 1]));
    d.ciphertext.truncate(8);
    assert_xks_error(
        &decrypt(&c, KEY_ED, &d).await,
        Operation::Decrypt,
        501,
        "UnsupportedOperationException",
    );
}

#[tokio::test]
async fn oversized_body_is_refused_and_connection_recovers() {
    let m = mesh();
    let mut h1_transport_errors = Vec::new();
    for op in Operation::ALL {
        let mut body = body_for(op);
        body["padding"] = json!("p".repeat(m.opts.max_body_bytes));
        // HTTP/2: the 501 must arrive, and the connection keeps working.
        let c = m.client_h2(TENANT_A);
        assert_eq!(
            c.health(&HealthRequest::default()).await.unwrap().status(),
            200
        );
        let r = c.post_json(op, KEY_ED, &body).await.unwrap();
        assert_xks_error(&r, op, 501, "UnsupportedOperationException");
        assert_eq!(
            c.health(&HealthRequest::default()).await.unwrap().status(),
            200,
            "h2 request after an oversized body"
        );
        // HTTP/1.1: the edge answers before reading the body; if it closes the
        // connection without draining, a client still writing gets EPIPE/RST
        // instead of the 501. Recorded (and reported) but not fatal.
        let c = a();
        assert_eq!(
            c.health(&HealthRequest::default()).await.unwrap().status(),
            200
        );
        match c.post_json(op, KEY_ED, &body).await {
            Ok(r) => assert_xks_error(&r, op, 501, "UnsupportedOperationException"),
            Err(e) => h1_transport_errors.push(format!("{op:?}: {e}")),
        }
        // The same client (reconnecting if the edge closed the connection) still works.
        let r = c.health(&HealthRequest::default()).await.unwrap();
        assert_eq!(r.status(), 200, "request after an oversized body");
    }
    if !h1_transport_errors.is_empty() {
        eprintln!(
            "WARNING: HTTP/1.1 oversized body got a transport error instead of 501: {h1_transport_errors:?}"
        );
    }
}

// ---------------------------------------------------------------- validation

#[tokio::test]
async fn malformed_bodies_are_validation_errors() {
    let c = a();
    let enc_ok = EncryptRequest::new(plaintext(16)).to_json();
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(16))).await;
    let dec_ok = DecryptRequest::from_encrypt(&enc, None).to_json();
    let gkm_ok = GetKeyMetadataRequest::default().to_json();
    let edit = |v: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        v
    };
    let mut cases: Vec<(Operation, &str, Vec<u8>)> = vec![
        (
            Operation::Encrypt,
            "not JSON",
            b"{\"requestMetadata\":".to_vec(),
        ),
        (Operation::Encrypt, "empty body", b"".to_vec()),
        (Operation::Encrypt, "JSON array", b"[]".to_vec()),
        (Operation::Decrypt, "not JSON", b"garbage".to_vec()),
        (Operation::GetKeyMetadata, "not JSON", b"}{".to_vec()),
        (Operation::GetKeyMetadata, "empty object", b"{}".to_vec()),
    ];
    let json_cases: Vec<(Operation, &str, Value)> = vec![
        (
            Operation::Encrypt,
            "plaintext missing",
            edit(&enc_ok, &|v| {
                v.as_object_mut().unwrap().remove("plaintext");
            }),
        ),
        (
            Operation::Encrypt,
            "plaintext is a number",
            edit(&enc_ok, &|v| v["plaintext"] = json!(123)),
        ),
        (
            Operation::Encrypt,
            "plaintext bad base64",
            edit(&enc_ok, &|v| v["plaintext"] = json!("!!!not base64!!!")),
        ),
        (
            Operation::Encrypt,
            "plaintext url-safe base64",
            edit(&enc_ok, &|v| v["plaintext"] = json!("-_-_")),
        ),
        (
            Operation::Encrypt,
            "plaintext unpadded base64",
            edit(&enc_ok, &|v| v["plaintext"] = json!("YWJjZA")),
        ),
        (
            Operation::Encrypt,
            "requestMetadata missing",
            edit(&enc_ok, &|v| {
                v.as_object_mut().unwrap().remove("requestMetadata");
            }),
        ),
        (
            Operation::Encrypt,
            "requestMetadata is a string",
            edit(&enc_ok, &|v| v["requestMetadata"] = json!("x")),
        ),
        (
            Operation::Encrypt,
            "encryptionAlgorithm missing",
            edit(&enc_ok, &|v| {
                v.as_object_mut().unwrap().remove("encryptionAlgorithm");
            }),
        ),
        (
            Operation::Encrypt,
            "AAD bad base64",
            edit(&enc_ok, &|v| {
                v["additionalAuthenticatedData"] = json!("%%%")
            }),
        ),
        (
            Operation::Encrypt,
            "AAD is an object",
            edit(&enc_ok, &|v| v["additionalAuthenticatedData"] = json!({})),
        ),
        (
            Operation::Decrypt,
            "ciphertext missing",
            edit(&dec_ok, &|v| {
                v.as_object_mut().unwrap().remove("ciphertext");
            }),
        ),
        (
            Operation::Decrypt,
            "iv missing",
            edit(&dec_ok, &|v| {
                v.as_object_mut().unwrap().remove("initializationVector");
            }),
        ),
        (
            Operation::Decrypt,
            "tag missing",
            edit(&dec_ok, &|v| {
                v.as_object_mut().unwrap().remove("authenticationTag");
            }),
        ),
        (
            Operation::Decrypt,
            "encryptionAlgorithm missing",
            edit(&dec_ok, &|v| {
                v.as_object_mut().unwrap().remove("encryptionAlgorithm");
            }),
        ),
        (
            Operation::Decrypt,
            "ciphertext bad base64",
            edit(&dec_ok, &|v| v["ciphertext"] = json!("a")),
        ),
        (
            Operation::Decrypt,
            "iv is an array",
            edit(&dec_ok, &|v| v["initializationVector"] = json!([1, 2])),
        ),
        (
            Operation::Decrypt,
            "metadata bad base64",
            edit(&dec_ok, &|v| v["ciphertextMetadata"] = json!("*")),
        ),
        (
            Operation::Decrypt,
            "requestMetadata missing",
            edit(&dec_ok, &|v| {
                v.as_object_mut().unwrap().remove("requestMetadata");
            }),
        ),
        (
            Operation::GetKeyMetadata,
            "requestMetadata is null",
            edit(&gkm_ok, &|v| v["requestMetadata"] = Value::Null),
        ),
    ];
    for (op, what, v) in json_cases {
        cases.push((op, what, serde_json::to_vec(&v).unwrap()));
    }
    for (op, what, body) in cases {
        let r = c.post(op, KEY_ED, body).await.unwrap();
        assert_eq!(
            (r.status(), r.error_name()),
            (400, Some("ValidationException".to_string())),
            "{op:?} {what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_error_shape(&r, op);
    }
    // Unsupported algorithm values: Validation (reference) or UnsupportedOperation (§15.3).
    for (op, body) in [
        (
            Operation::Encrypt,
            edit(&enc_ok, &|v| v["encryptionAlgorithm"] = json!("AES_CBC")),
        ),
        (
            Operation::Encrypt,
            edit(&enc_ok, &|v| {
                v["ciphertextDataIntegrityValueAlgorithm"] = json!("MD5")
            }),
        ),
        (
            Operation::Decrypt,
            edit(&dec_ok, &|v| {
                v["encryptionAlgorithm"] = json!("RSAES_OAEP_SHA_256")
            }),
        ),
    ] {
        let r = c.post_json(op, KEY_ED, &body).await.unwrap();
        assert!(
            matches!(
                r.error_name().as_deref(),
                Some("ValidationException" | "UnsupportedOperationException")
            ),
            "{op:?} bad enum: {} {}",
            r.status(),
            String::from_utf8_lossy(&r.body)
        );
        assert_error_shape(&r, op);
    }
    // GetHealthStatus without requestMetadata: 400 ValidationException (§15.1, AWS test client).
    let r = c
        .post(Operation::GetHealthStatus, "", b"{}".to_vec())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetHealthStatus, 400, "ValidationException");
}

// ---------------------------------------------------------------- key usage / state

#[tokio::test]
async fn key_usage_is_enforced() {
    let c = a();
    // Encrypt-only key: plain Encrypt works; with CDIV it needs decrypt → InvalidKeyUsage.
    let enc = encrypt_ok(&c, KEY_ENC, &EncryptRequest::new(plaintext(32))).await;
    let r = c
        .encrypt(KEY_ENC, &EncryptRequest::new(plaintext(32)).with_cdiv())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 400, "InvalidKeyUsageException");
    // Decrypt with the encrypt-only key.
    let r = decrypt(&c, KEY_ENC, &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_xks_error(&r, Operation::Decrypt, 400, "InvalidKeyUsageException");
    // Decrypt-only key cannot encrypt.
    let r = c
        .encrypt(KEY_DEC, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 400, "InvalidKeyUsageException");
    // Decrypt-only key may decrypt (its own ciphertext cannot exist; a bogus one is InvalidCiphertext).
    let r = decrypt(&c, KEY_DEC, &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_xks_error(&r, Operation::Decrypt, 400, "InvalidCiphertextException");
    // No usage at all.
    let r = c
        .encrypt(KEY_NONE, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 400, "InvalidKeyUsageException");
    let r = decrypt(&c, KEY_NONE, &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_xks_error(&r, Operation::Decrypt, 400, "InvalidKeyUsageException");
}

#[tokio::test]
async fn unknown_key_is_key_not_found() {
    let c = a();
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(32))).await;
    let r = c
        .get_key_metadata("no-such-key", &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetKeyMetadata, 404, "KeyNotFoundException");
    let r = c
        .encrypt("no-such-key", &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 404, "KeyNotFoundException");
    let r = decrypt(&c, "no-such-key", &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_xks_error(&r, Operation::Decrypt, 404, "KeyNotFoundException");
}

#[tokio::test]
async fn disabled_key_is_invalid_state_and_reenable_works() {
    let m = mesh();
    let c = a();
    let enc = encrypt_ok(&c, KEY_TOGGLE, &EncryptRequest::new(plaintext(32))).await;
    m.ctl(&["key", "disable", KEY_TOGGLE]).unwrap();
    // Workers pick the status file up within a second.
    let md = poll_async(
        "GetKeyMetadata to say DISABLED",
        Duration::from_secs(5),
        || async {
            let md = c
                .get_key_metadata(KEY_TOGGLE, &GetKeyMetadataRequest::default())
                .await
                .ok()?
                .parse::<KeyMetadata>()
                .ok()?;
            (md.key_status == "DISABLED").then_some(md)
        },
    )
    .await
    .unwrap();
    assert_eq!(md.key_spec, "AES_256");
    let r = c
        .encrypt(KEY_TOGGLE, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 400, "InvalidStateException");
    let r = decrypt(&c, KEY_TOGGLE, &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_xks_error(&r, Operation::Decrypt, 400, "InvalidStateException");
    // Other keys are unaffected.
    encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(32))).await;
    m.ctl(&["key", "enable", KEY_TOGGLE]).unwrap();
    wait_for_encrypt_status(
        &c,
        KEY_TOGGLE,
        200,
        "Encrypt to work after enable",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let r = decrypt(&c, KEY_TOGGLE, &DecryptRequest::from_encrypt(&enc, None)).await;
    assert_eq!(r.status(), 200, "old ciphertext decrypts after re-enable");
    let md = c
        .get_key_metadata(KEY_TOGGLE, &GetKeyMetadataRequest::default())
        .await
        .unwrap()
        .parse::<KeyMetadata>()
        .unwrap();
    assert_eq!(md.key_status, "ENABLED");
}

#[tokio::test]
async fn imported_odd_keys() {
    let m = mesh();
    static IMPORT: OnceLock<()> = OnceLock::new();
    IMPORT.get_or_init(|| {
        m.import_aes_key(DUP_KEY, &[1u8; 32], "d001").unwrap();
        m.import_aes_key(DUP_KEY, &[2u8; 32], "d002").unwrap();
        m.import_aes_key(AES128_KEY, &[3u8; 16], "a128").unwrap();
    });
    m.wait_key_served(TENANT_A, DUP_KEY).await.unwrap();
    m.wait_key_served(TENANT_A, AES128_KEY).await.unwrap();
    let c = a();
    // Two keys with one label: AMBIGUOUS_KEY → 500 InternalException (XKS-5).
    let r = c
        .get_key_metadata(DUP_KEY, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetKeyMetadata, 500, "InternalException");
    let r = c
        .encrypt(DUP_KEY, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 500, "InternalException");
    let r = c
        .decrypt(
            DUP_KEY,
            &DecryptRequest::from_encrypt(
                &EncryptResponse {
                    ciphertext: vec![0; 4],
                    iv: vec![0; 12],
                    tag: vec![0; 16],
                    ciphertext_metadata: None,
                    cdiv: None,
                },
                None,
            ),
        )
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Decrypt, 500, "InternalException");
    // AES-128: metadata tells the truth, Encrypt is InvalidKeyUsage.
    let r = c
        .get_key_metadata(AES128_KEY, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    if r.status() == 200 {
        let md = r.parse::<KeyMetadata>().unwrap();
        assert_ne!(
            md.key_spec, "AES_256",
            "a 128-bit key must not be reported as AES_256"
        );
    } else {
        assert_error_shape(&r, Operation::GetKeyMetadata);
    }
    let r = c
        .encrypt(AES128_KEY, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 400, "InvalidKeyUsageException");
}

// ---------------------------------------------------------------- routing

#[tokio::test]
async fn unknown_paths_are_invalid_uri_path() {
    let c = a();
    let body = serde_json::to_vec(&HealthRequest::default().to_json()).unwrap();
    for (op, path) in [
        (Operation::GetHealthStatus, "/nope/kms/xks/v1/health"),
        (Operation::GetHealthStatus, "/tenant-a/kms/xks/v2/health"),
        (Operation::GetHealthStatus, "/tenant-a/kms/xks/v1/healthz"),
        (
            Operation::GetHealthStatus,
            "/tenant-a/kms/xks/v1/health/extra",
        ),
        (
            Operation::GetKeyMetadata,
            "/tenant-a/kms/xks/v1/keys/key-ed/rotate",
        ),
        (
            Operation::GetKeyMetadata,
            "/tenant-a/kms/xks/v1/keys/key-ed",
        ),
        (Operation::Encrypt, "/nope/kms/xks/v1/keys/key-ed/encrypt"),
        (
            Operation::Encrypt,
            "/tenant-a/kms/xks/v0/keys/key-ed/encrypt",
        ),
        (Operation::Decrypt, "/tenant-a/kms/xks/v1/keys//decrypt"),
        (Operation::Decrypt, "/kms/xks/v1/keys/key-ed/decrypt"),
    ] {
        let r = c
            .send(RawRequest::post_json(path, body.clone(), c.signing()))
            .await
            .unwrap();
        assert_xks_error(&r, op, 404, "InvalidUriPathException");
        // Unsigned as well.
        let mut raw = RawRequest::post_json(path, body.clone(), c.signing());
        raw.signing = None;
        let r = c.send(raw).await.unwrap();
        assert_eq!(
            (r.status(), r.error_name().as_deref()),
            (404, Some("InvalidUriPathException")),
            "unsigned {path}"
        );
    }
}

#[tokio::test]
async fn get_on_api_uris_is_405() {
    let c = a();
    for op in Operation::ALL {
        let path = op.path(TENANT_A, KEY_ED);
        for signed_req in [false, true] {
            let mut raw = RawRequest::post_json(path.clone(), bytes::Bytes::new(), c.signing());
            raw.method = http::Method::GET;
            raw.content_type = None;
            if !signed_req {
                raw.signing = None;
            }
            let r = c.send(raw).await.unwrap();
            assert_eq!(
                r.status(),
                405,
                "GET {path} (signed={signed_req}): {:?}",
                String::from_utf8_lossy(&r.body)
            );
        }
        for m in [http::Method::PUT, http::Method::DELETE] {
            let mut raw = RawRequest::post_json(path.clone(), bytes::Bytes::new(), c.signing());
            raw.method = m.clone();
            let r = c.send(raw).await.unwrap();
            assert_eq!(r.status(), 405, "{m} {path}");
        }
    }
}

// ---------------------------------------------------------------- SigV4

/// Sign `r` now (headers fixed), so later edits to it break the signature.
fn presign(c: &XksClient, r: &mut RawRequest) {
    let sig = xks::sign::sign_request(
        r.signing.as_ref().unwrap(),
        r.method.as_str(),
        &c.config().authority,
        &r.path,
        &[("content-type", "application/json")],
        &r.body,
    )
    .unwrap();
    r.signing = None;
    r.extra_headers.extend(sig.headers);
}

async fn expect_401_all_ops(c: &XksClient, what: &str, mutate: impl Fn(&mut RawRequest)) {
    for op in Operation::ALL {
        let mut raw = signed(c, op, KEY_ED, &body_for(op));
        mutate(&mut raw);
        let r = c.send(raw).await.unwrap();
        assert_eq!(
            (r.status(), r.error_name().as_deref()),
            (401, Some("AuthenticationFailedException")),
            "{what} on {op:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_error_shape(&r, op);
    }
}

#[tokio::test]
async fn sigv4_failures_are_401() {
    let m = mesh();
    let c = a();
    let good = c.signing();
    expect_401_all_ops(&c, "unsigned", |r| r.signing = None).await;
    expect_401_all_ops(&c, "stale (-6 min)", |r| {
        r.signing = Some(good.clone().skewed(-360))
    })
    .await;
    expect_401_all_ops(&c, "future (+6 min)", |r| {
        r.signing = Some(good.clone().skewed(360))
    })
    .await;
    expect_401_all_ops(&c, "wrong secret", |r| {
        r.signing = Some(xks::SigningOptions::new(
            Credentials::new(good.credentials.access_key_id.clone(), "A".repeat(44)),
            "us-east-1",
        ))
    })
    .await;
    expect_401_all_ops(&c, "unknown access key", |r| {
        r.signing = Some(xks::SigningOptions::new(
            Credentials::new("ABCDEFGHIJKLMNOPQRSTUVWXYZ", good.credentials.secret()),
            "us-east-1",
        ))
    })
    .await;
    let other = m.credentials(TENANT_B);
    expect_401_all_ops(&c, "credential of another key store", |r| {
        r.signing = Some(xks::SigningOptions::new(other.clone(), "us-east-1"))
    })
    .await;
    expect_401_all_ops(&c, "body changed after signing", |r| {
        presign(&c, r);
        let mut b = r.body.to_vec();
        b.push(b' ');
        r.body = b.into();
    })
    .await;
    expect_401_all_ops(&c, "path changed after signing", |r| {
        presign(&c, r);
        r.path = r.path.replace("/tenant-a/", "/tenant-b/");
    })
    .await;
    expect_401_all_ops(&c, "junk Authorization", |r| {
        r.remove_headers.push("authorization".into());
        r.extra_headers
            .push(("authorization".into(), "AWS4-HMAC-SHA256 garbage".into()));
    })
    .await;
    expect_401_all_ops(&c, "Authorization of another scheme", |r| {
        r.signing = None;
        r.extra_headers
            .push(("authorization".into(), "Basic dXNlcjpwYXNz".into()));
    })
    .await;
    expect_401_all_ops(&c, "duplicate Authorization (valid + junk)", |r| {
        r.extra_headers.push((
            "authorization".into(),
            "AWS4-HMAC-SHA256 Credential=X".into(),
        ));
    })
    .await;
    expect_401_all_ops(&c, "X-Amz-Date removed", |r| {
        r.remove_headers.push("x-amz-date".into())
    })
    .await;
    expect_401_all_ops(&c, "X-Amz-Date changed", |r| {
        r.remove_headers.push("x-amz-date".into());
        r.extra_headers
            .push(("x-amz-date".into(), "20200101T000000Z".into()));
    })
    .await;
    // Duplicate identical valid Authorization headers: ambiguous → 401.
    for op in Operation::ALL {
        let mut raw = signed(&c, op, KEY_ED, &body_for(op));
        let sig = xks::sign::sign_request(
            raw.signing.as_ref().unwrap(),
            "POST",
            &c.config().authority,
            &raw.path,
            &[("content-type", "application/json")],
            &raw.body,
        )
        .unwrap();
        raw.signing = None;
        for (n, v) in &sig.headers {
            raw.extra_headers.push((n.clone(), v.clone()));
            if n == "authorization" {
                raw.extra_headers.push((n.clone(), v.clone()));
            }
        }
        let r = c.send(raw).await.unwrap();
        assert_xks_error(&r, op, 401, "AuthenticationFailedException");
    }
}

#[tokio::test]
async fn sigv4_accepted_variants() {
    let c = a();
    // Within the 5-minute window.
    for skew in [-240i64, 240] {
        let raw = {
            let mut r = signed(
                &c,
                Operation::GetHealthStatus,
                "",
                &body_for(Operation::GetHealthStatus),
            );
            r.signing = Some(c.signing().skewed(skew));
            r
        };
        assert_eq!(c.send(raw).await.unwrap().status(), 200, "skew {skew}s");
    }
    // Any region (regions = []), and a signer that signs only host;x-amz-date (no content-type).
    let mut raw = signed(
        &c,
        Operation::Encrypt,
        KEY_ED,
        &body_for(Operation::Encrypt),
    );
    raw.signing.as_mut().unwrap().region = "eu-west-3".into();
    assert_eq!(c.send(raw).await.unwrap().status(), 200, "region eu-west-3");
    let mut raw = signed(
        &c,
        Operation::Encrypt,
        KEY_ED,
        &body_for(Operation::Encrypt),
    );
    raw.content_type = None;
    raw.extra_headers
        .push(("content-type".into(), "application/json".into()));
    let r = c.send(raw).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "SignedHeaders=host;x-amz-date: {:?}",
        r.body
    );
    // Extra signed header (user-agent) must still verify.
    let mut raw = signed(
        &c,
        Operation::GetKeyMetadata,
        KEY_ED,
        &body_for(Operation::GetKeyMetadata),
    );
    let sig = xks::sign::sign_request(
        raw.signing.as_ref().unwrap(),
        "POST",
        &c.config().authority,
        &raw.path,
        &[("content-type", "application/json"), ("x-custom", "1")],
        &raw.body,
    )
    .unwrap();
    raw.signing = None;
    raw.extra_headers.push(("x-custom".into(), "1".into()));
    raw.extra_headers.extend(sig.headers);
    let r = c.send(raw).await.unwrap();
    assert_eq!(r.status(), 200, "extra signed header: {:?}", r.body);
}

#[test]
fn curl_aws_sigv4_signer_works_for_every_operation() {
    let m = mesh();
    let creds = m.credentials(TENANT_A);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let enc = rt.block_on(async {
        encrypt_ok(
            &a(),
            KEY_ED,
            &EncryptRequest::new(plaintext(32)).with_aad(b"a".to_vec()),
        )
        .await
    });
    let bodies = [
        (
            Operation::GetKeyMetadata,
            GetKeyMetadataRequest::default().to_json(),
        ),
        (
            Operation::Encrypt,
            EncryptRequest::new(plaintext(32))
                .with_aad(b"a".to_vec())
                .with_cdiv()
                .to_json(),
        ),
        (
            Operation::Decrypt,
            DecryptRequest::from_encrypt(&enc, Some(b"a".to_vec())).to_json(),
        ),
        (
            Operation::GetHealthStatus,
            HealthRequest::default().to_json(),
        ),
    ];
    for http in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        for (op, body) in &bodies {
            let path = op.path(TENANT_A, KEY_ED);
            let (code, out) = m
                .curl(&path, &serde_json::to_vec(body).unwrap(), &creds, http)
                .unwrap();
            assert_eq!(code, 200, "curl {http:?} {op:?}: {out}");
            let v: Value = serde_json::from_str(&out).unwrap();
            if *op == Operation::Decrypt {
                assert_eq!(v["plaintext"], b64(&plaintext(32)));
            }
        }
    }
    // And curl with a wrong secret is refused.
    let bad = Credentials::new(creds.access_key_id.clone(), "B".repeat(44));
    let (code, out) = m
        .curl(
            &Operation::GetHealthStatus.path(TENANT_A, ""),
            b"{\"requestMetadata\":{\"kmsRequestId\":\"1\",\"kmsOperation\":\"KmsHealthCheck\"}}",
            &bad,
            &[],
        )
        .unwrap();
    assert_eq!(code, 401, "{out}");
    m.assert_no_plaintext_in_logs();
}

#[tokio::test]
async fn credential_rotation_without_restart() {
    let m = mesh();
    let old = m.credentials(ROT);
    let client_with = |cr: &Credentials| {
        let mut cfg = m.client_config(ROT);
        cfg.signing.credentials = cr.clone();
        XksClient::new(cfg).unwrap()
    };
    let old_c = client_with(&old);
    // Keep one connection open throughout: hot reload must not need reconnects.
    assert_eq!(
        old_c
            .health(&HealthRequest::default())
            .await
            .unwrap()
            .status(),
        200
    );
    let new = m.rotate_credential(ROT).unwrap();
    assert_ne!(new.access_key_id, old.access_key_id);
    let new_c = client_with(&new);
    poll_async(
        "new credential accepted",
        Duration::from_secs(5),
        || async {
            (new_c.health(&HealthRequest::default()).await.ok()?.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    // Both work at once.
    assert_eq!(
        old_c
            .health(&HealthRequest::default())
            .await
            .unwrap()
            .status(),
        200,
        "old credential during rotation"
    );
    assert_eq!(
        new_c
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(16)))
            .await
            .unwrap()
            .status(),
        200
    );
    // Revoke the old one.
    m.ctl(&[
        "credential",
        "revoke",
        "--uri-path",
        ROT,
        "--access-key-id",
        &old.access_key_id,
    ])
    .unwrap();
    let r = poll_async("old credential refused", Duration::from_secs(5), || async {
        let r = old_c.health(&HealthRequest::default()).await.ok()?;
        (r.status() == 401).then_some(r)
    })
    .await
    .unwrap();
    assert_xks_error(
        &r,
        Operation::GetHealthStatus,
        401,
        "AuthenticationFailedException",
    );
    assert_eq!(
        new_c
            .health(&HealthRequest::default())
            .await
            .unwrap()
            .status(),
        200
    );
    // credential list shows ids and never secrets.
    let list = m.ctl(&["credential", "list", "--uri-path", ROT]).unwrap();
    assert!(list.contains(&new.access_key_id), "{list}");
    assert!(
        !list.contains(&old.access_key_id),
        "revoked id still listed: {list}"
    );
    assert!(
        !list.contains(new.secret()),
        "credential list printed a secret"
    );
}

// ---------------------------------------------------------------- HTTP/2

#[tokio::test]
async fn http2_prior_knowledge_all_operations() {
    let c = mesh().client_h2(TENANT_A);
    let r = c
        .get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status(), 200, "{:?}", r.body);
    let pt = plaintext(4300);
    let enc = c
        .encrypt(
            KEY_ED,
            &EncryptRequest::new(pt.clone())
                .with_aad(b"h2".to_vec())
                .with_cdiv(),
        )
        .await
        .unwrap();
    let enc = enc.parse::<EncryptResponse>().unwrap();
    let d = c
        .decrypt(
            KEY_ED,
            &DecryptRequest::from_encrypt(&enc, Some(b"h2".to_vec())),
        )
        .await
        .unwrap();
    assert!(d.parse::<DecryptResponse>().unwrap().plaintext == pt);
    assert_eq!(
        c.health(&HealthRequest::default()).await.unwrap().status(),
        200
    );
    // Errors over HTTP/2 too.
    let mut raw = signed(
        &c,
        Operation::Encrypt,
        KEY_ED,
        &body_for(Operation::Encrypt),
    );
    raw.signing = Some(c.signing().skewed(-600));
    assert_xks_error(
        &c.send(raw).await.unwrap(),
        Operation::Encrypt,
        401,
        "AuthenticationFailedException",
    );
    // Concurrent streams on one connection.
    let reqs: Vec<_> = (0..16)
        .map(|_| EncryptRequest::new(plaintext(32)))
        .collect();
    let futs: Vec<_> = reqs.iter().map(|r| c.encrypt(KEY_ED, r)).collect();
    for r in futures_join(futs).await {
        assert_eq!(r.unwrap().status(), 200);
    }
}

async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    // Poll all concurrently via a JoinSet-free approach: tokio::join! needs a fixed
    // count, so drive them with select over pinned boxes.
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for r in results {
        out.push(r.unwrap());
    }
    out
}

// ---------------------------------------------------------------- policy

/// How many times the edge has logged that it rejected the policy file (the
/// reloader's "reload failed; keeping previous version", naming the file).
fn policy_reload_failures(m: &Mesh) -> usize {
    let policy = m.policy_file.display().to_string();
    m.log_files()
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("edge"))
        })
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|log| {
            log.lines()
                .filter(|l| l.contains("reload failed") && l.contains(&policy))
                .count()
        })
        .sum()
}

#[tokio::test]
async fn policy_allow_deny_and_hot_reload() {
    let m = mesh();
    let c = m.client(POL);
    let evil = "arn:aws:iam::999999999999:role/Intruder";
    let enc = encrypt_ok(&c, KEY_ED, &EncryptRequest::new(plaintext(32))).await;
    let mut dec_evil = DecryptRequest::from_encrypt(&enc, None);
    dec_evil.metadata = dec_evil.metadata.with_principal(evil);
    assert_eq!(
        c.decrypt(KEY_ED, &dec_evil).await.unwrap().status(),
        200,
        "allowed before the policy changes"
    );

    m.write_policy(&format!(
        "{POL_ALLOW}\n[[keystore.rules]]\nname = \"no-foreign-decrypt\"\neffect = \"deny\"\noperation = \"Decrypt\"\naws_principal_arn = \"arn:aws:iam::999999999999:*\"\n"
    ))
    .unwrap();
    let r = poll_async("policy reload to deny", Duration::from_secs(5), || async {
        let r = c.decrypt(KEY_ED, &dec_evil).await.ok()?;
        (r.status() == 403).then_some(r)
    })
    .await
    .unwrap();
    assert_xks_error(&r, Operation::Decrypt, 403, "AccessDeniedException");
    // Our own principal, and the evil one on other operations, still pass.
    assert_eq!(
        c.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
            .await
            .unwrap()
            .status(),
        200
    );
    let mut e = EncryptRequest::new(plaintext(8));
    e.metadata = e.metadata.with_principal(evil);
    assert_eq!(c.encrypt(KEY_ED, &e).await.unwrap().status(), 200);
    // Other key stores are not subject to /pol's rules.
    let mut d_a = DecryptRequest::from_encrypt(
        &encrypt_ok(&a(), KEY_ED, &EncryptRequest::new(plaintext(8))).await,
        None,
    );
    d_a.metadata = d_a.metadata.with_principal(evil);
    assert_eq!(a().decrypt(KEY_ED, &d_a).await.unwrap().status(), 200);

    // Default deny: every operation but GetHealthStatus is refused.
    m.write_policy("[[keystore]]\nuri_path = \"/pol/kms/xks/v1\"\ndefault = \"deny\"\n")
        .unwrap();
    let r = poll_async("default deny", Duration::from_secs(5), || async {
        let r = c
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(8)))
            .await
            .ok()?;
        (r.status() == 403).then_some(r)
    })
    .await
    .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 403, "AccessDeniedException");
    let r = c
        .get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetKeyMetadata, 403, "AccessDeniedException");
    let r = c
        .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .unwrap();
    assert_xks_error(&r, Operation::Decrypt, 403, "AccessDeniedException");
    let h = c.health(&HealthRequest::default()).await.unwrap();
    assert_eq!(
        h.status(),
        200,
        "GetHealthStatus is never subject to policy (XKS-53): {:?}",
        h.body
    );

    // A rule matching on key id / kmsOperation with wildcards.
    m.write_policy(&format!(
        "{POL_ALLOW}\n[[keystore.rules]]\nname = \"no-toggle\"\neffect = \"deny\"\nkey_id = \"key-t*\"\n\n[[keystore.rules]]\nname = \"no-reencrypt\"\neffect = \"deny\"\nkms_operation = \"ReEncrypt\"\n"
    ))
    .unwrap();
    wait_for_encrypt_status(&c, KEY_ED, 200, "allow again", Duration::from_secs(5))
        .await
        .unwrap();
    let r = c
        .get_key_metadata(KEY_TOGGLE, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_xks_error(&r, Operation::GetKeyMetadata, 403, "AccessDeniedException");
    let mut e = EncryptRequest::new(plaintext(8));
    e.metadata.kms_operation = "ReEncrypt".into();
    assert_xks_error(
        &c.encrypt(KEY_ED, &e).await.unwrap(),
        Operation::Encrypt,
        403,
        "AccessDeniedException",
    );

    // A broken policy file must not open the gates or crash the edge. First
    // wait for proof that the watcher read it (its rejection in the edge's
    // log), so the check below cannot pass against a watcher that never ran.
    let before = policy_reload_failures(m);
    m.write_policy("this is [not toml").unwrap();
    poll_async(
        "the broken policy read and rejected",
        Duration::from_secs(10),
        || async { (policy_reload_failures(m) > before).then_some(()) },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let r = c
            .get_key_metadata(KEY_TOGGLE, &GetKeyMetadataRequest::default())
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            403,
            "a broken policy file must keep the last good policy"
        );
    }
    assert!(m.edge_alive());
    m.write_policy(POL_ALLOW).unwrap();
    poll_async("allow restored", Duration::from_secs(5), || async {
        (c.get_key_metadata(KEY_TOGGLE, &GetKeyMetadataRequest::default())
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------- throttling

#[tokio::test]
async fn throttling_per_tenant() {
    let m = mesh();
    let thr = m.client(THR);
    let other = a();
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..40 {
        let r = thr
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(16)))
            .await
            .unwrap();
        if r.status() == 429 && throttled.is_none() {
            throttled = Some(r.clone());
        }
        statuses.push(r.status());
        // The other tenant is not affected.
        let o = other
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(16)))
            .await
            .unwrap();
        assert_eq!(
            o.status(),
            200,
            "tenant-a must not be throttled by /thr's quota"
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let n429 = statuses.iter().filter(|s| **s == 429).count();
    assert!(ok >= 1, "some /thr requests must pass: {statuses:?}");
    assert!(
        n429 >= 1,
        "a burst of 40 against rate 1/s burst 3 must see 429: {statuses:?}"
    );
    assert_eq!(ok + n429, statuses.len(), "{statuses:?}");
    assert_xks_error(
        &throttled.unwrap(),
        Operation::Encrypt,
        429,
        "ThrottlingException",
    );
    // Other operations on the throttled tenant get 429 too (same bucket or their own).
    let mut seen = std::collections::BTreeSet::new();
    for op in [
        Operation::GetKeyMetadata,
        Operation::Decrypt,
        Operation::GetHealthStatus,
    ] {
        for _ in 0..10 {
            let r = thr.post_json(op, KEY_ED, &body_for(op)).await.unwrap();
            if r.status() == 429 {
                assert_xks_error(&r, op, 429, "ThrottlingException");
                seen.insert(op);
                break;
            }
        }
    }
    eprintln!("operations throttled on /thr: {seen:?}");
}

// ---------------------------------------------------------------- logs

#[tokio::test]
async fn request_ids_are_logged_and_plaintext_is_not() {
    let m = mesh();
    let c = a();
    let mut req = EncryptRequest::new(plaintext(64)).with_cdiv();
    let rid = format!("req-{}", random_hex(8));
    req.metadata.kms_request_id = rid.clone();
    let enc = encrypt_ok(&c, KEY_ED, &req).await;
    let d = c
        .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    // XKS-78 (SHOULD): the kmsRequestId reaches the edge log.
    let found = poll("kmsRequestId in a log", Duration::from_secs(5), || {
        m.log_files()
            .iter()
            .any(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .contains(&rid)
            })
            .then_some(())
    });
    assert!(
        found.is_ok(),
        "kmsRequestId {rid} not found in any log (XKS-78 SHOULD)"
    );
    m.assert_no_plaintext_in_logs();
}
