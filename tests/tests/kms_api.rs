//! Huawei KMS dialect end to end, through the real binaries, on both store
//! backends (one shared mesh per backend): key lifecycle, data keys, AAD
//! binding and tenant isolation, and the error table for malformed,
//! unauthenticated and unauthorised requests. Plaintexts carry the harness
//! MARKER, and every test ends by checking that no service log holds it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderValue};
use keymesh_tests::huawei::{HuaweiStore, TokenSpec};
use keymesh_tests::kms::{KmsClient, KmsResponse};
use keymesh_tests::{MARKER, Mesh, marker_text, random_hex};
use ring::digest::{SHA256, digest};
use serde_json::json;

fn a(m: &Mesh) -> KmsClient {
    KmsClient::aksk(m, &m.huawei().full_a)
}

fn b(m: &Mesh) -> KmsClient {
    KmsClient::aksk(m, &m.huawei().full_b)
}

async fn create_key(c: &KmsClient) -> String {
    c.create_key(&format!("e2e-{}", random_hex(6))).await
}

async fn key_state(c: &KmsClient, key_id: &str) -> String {
    let r = c
        .post("describe-key", &json!({ "key_id": key_id }))
        .await
        .ok();
    r.json["key_info"]["key_state"]
        .as_str()
        .unwrap_or_else(|| panic!("no key_state: {}", r.text()))
        .to_owned()
}

async fn encrypt(c: &KmsClient, key_id: &str, text: &str, aad: Option<&str>) -> KmsResponse {
    let mut body = json!({ "key_id": key_id, "plain_text": text });
    if let Some(aad) = aad {
        body["additional_authenticated_data"] = json!(aad);
    }
    c.post("encrypt-data", &body).await
}

async fn decrypt(c: &KmsClient, cipher: &str, aad: Option<&str>) -> KmsResponse {
    let mut body = json!({ "cipher_text": cipher });
    if let Some(aad) = aad {
        body["additional_authenticated_data"] = json!(aad);
    }
    c.post("decrypt-data", &body).await
}

async fn lifecycle(m: &Mesh) {
    let c = a(m);
    let id = create_key(&c).await;
    assert_eq!(key_state(&c, &id).await, "2");

    let text = marker_text(100);
    let r = encrypt(&c, &id, &text, Some("ctx-1")).await.ok();
    assert_eq!(r.str("key_id"), id);
    let ct = r.str("cipher_text");
    assert!(!ct.contains(std::str::from_utf8(MARKER).unwrap()));
    let r = decrypt(&c, &ct, Some("ctx-1")).await.ok();
    assert_eq!(r.str("plain_text"), text);

    c.post("disable-key", &json!({ "key_id": id })).await.ok();
    assert_eq!(key_state(&c, &id).await, "3");
    encrypt(&c, &id, &text, None)
        .await
        .assert_kms_error("KMS.0209");
    c.post("enable-key", &json!({ "key_id": id })).await.ok();
    assert_eq!(key_state(&c, &id).await, "2");

    c.post(
        "schedule-key-deletion",
        &json!({ "key_id": id, "pending_days": "7" }),
    )
    .await
    .ok();
    assert_eq!(key_state(&c, &id).await, "4");
    encrypt(&c, &id, &text, None)
        .await
        .assert_kms_error("KMS.0210");
    c.post("cancel-key-deletion", &json!({ "key_id": id }))
        .await
        .ok();
    assert_eq!(key_state(&c, &id).await, "3");
    m.assert_no_plaintext_in_logs();
}

async fn data_keys(m: &Mesh) {
    let c = a(m);
    let k1 = create_key(&c).await;
    let k2 = create_key(&c).await;

    let r = c
        .post(
            "create-datakey",
            &json!({ "key_id": k1, "datakey_length": "512" }),
        )
        .await
        .ok();
    let dek_hex = r.str("plain_text");
    let dek = hex::decode(&dek_hex).unwrap();
    assert_eq!(dek.len(), 64);
    let ct = r.str("cipher_text");

    let r = c
        .post(
            "decrypt-datakey",
            &json!({ "key_id": k1, "cipher_text": ct, "datakey_cipher_length": "64" }),
        )
        .await
        .ok();
    assert_eq!(hex::decode(r.str("data_key")).unwrap(), dek);
    assert_eq!(
        hex::decode(r.str("datakey_dgst")).unwrap(),
        digest(&SHA256, &dek).as_ref()
    );

    // encrypt-datakey: plain_text = hex(DEK ‖ SHA-256(DEK)).
    let mut good = dek.clone();
    good.extend_from_slice(digest(&SHA256, &dek).as_ref());
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    c.post(
        "encrypt-datakey",
        &json!({ "key_id": k1, "plain_text": hex::encode(&bad), "datakey_plain_length": "64" }),
    )
    .await
    .assert_kms_error("KMS.2103");
    let r = c
        .post(
            "encrypt-datakey",
            &json!({ "key_id": k1, "plain_text": hex::encode(&good), "datakey_plain_length": "64" }),
        )
        .await
        .ok();
    let ct2 = r.str("cipher_text");

    // Re-encrypt to the second key, then decrypt there.
    let r = c
        .post(
            "re-encrypt",
            &json!({
                "cipher_text": ct2,
                "datakey_cipher_length": "64",
                "destination_key_id": k2,
            }),
        )
        .await
        .ok();
    assert_eq!(r.str("key_id"), k2);
    let ct3 = r.str("cipher_text");
    let r = c
        .post(
            "decrypt-datakey",
            &json!({ "key_id": k2, "cipher_text": ct3, "datakey_cipher_length": "64" }),
        )
        .await
        .ok();
    assert_eq!(hex::decode(r.str("data_key")).unwrap(), dek);
    m.assert_no_plaintext_in_logs();
}

async fn aad_and_isolation(m: &Mesh) {
    let c = a(m);
    let id = create_key(&c).await;
    let text = marker_text(40);
    let ct = encrypt(&c, &id, &text, Some("aad-one"))
        .await
        .ok()
        .str("cipher_text");
    decrypt(&c, &ct, Some("aad-two"))
        .await
        .assert_kms_error("KMS.2201");
    decrypt(&c, &ct, None).await.assert_kms_error("KMS.2201");

    // One flipped byte (in the tag, then in the middle) is refused.
    let raw = B64.decode(&ct).unwrap();
    for i in [raw.len() - 1, raw.len() / 2] {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        let r = decrypt(&c, &B64.encode(&bad), Some("aad-one")).await;
        assert!(
            r.status == 400 || r.status == 404,
            "flipped byte {i}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json.get("plain_text").is_none());
    }
    decrypt(&c, &ct, Some("aad-one")).await.ok();

    // Project B sees neither the key nor the plaintext.
    let other = b(m);
    other
        .post("describe-key", &json!({ "key_id": id }))
        .await
        .assert_kms_error("KMS.0207");
    let r = decrypt(&other, &ct, Some("aad-one")).await;
    assert!(
        r.status == 400 || r.status == 404,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(r.json.get("plain_text").is_none(), "{}", r.text());
    encrypt(&other, &id, "x", None)
        .await
        .assert_kms_error("KMS.0207");
    m.assert_no_plaintext_in_logs();
}

async fn errors(m: &Mesh) {
    let h = m.huawei();
    let c = a(m);
    let id = create_key(&c).await;

    c.post_raw("no-such-op", "{}")
        .await
        .assert_kms_error("KMS.0201");
    c.send("GET", &c.path("create-key"), Vec::new(), |_| {}, |_| {})
        .await
        .unwrap()
        .assert_kms_error("KMS.0215");
    c.post_raw("describe-key", "{")
        .await
        .assert_kms_error("KMS.0202");
    c.post("describe-key", &json!({ "key_id": id, "bogus": 1 }))
        .await
        .assert_kms_error("KMS.0202");
    c.post("describe-key", &json!({}))
        .await
        .assert_kms_error("KMS.0204");
    c.post("describe-key", &json!({ "key_id": "not-a-key-id" }))
        .await
        .assert_kms_error("KMS.0205");
    let big = json!({ "key_id": id, "plain_text": "A".repeat(100 * 1024) });
    c.post("encrypt-data", &big)
        .await
        .assert_kms_error("KMS.0203");

    // Signature failures: a spoiled signature and a stale X-Sdk-Date.
    let spoil = |h: &mut HeaderMap| {
        let v = h.get("authorization").unwrap().to_str().unwrap().to_owned();
        let last = v.chars().last().unwrap();
        let flipped = if last == '0' { '1' } else { '0' };
        let v = format!("{}{flipped}", &v[..v.len() - 1]);
        h.insert("authorization", HeaderValue::from_str(&v).unwrap());
    };
    let body = serde_json::to_vec(&json!({ "key_id": id })).unwrap();
    let r = c
        .send("POST", &c.path("describe-key"), body.clone(), |_| {}, spoil)
        .await
        .unwrap();
    r.assert_error(
        401,
        "APIGW.0301",
        "Incorrect IAM authentication information.",
    );
    let stale = |h: &mut HeaderMap| {
        h.insert("x-sdk-date", HeaderValue::from_static("20200101T000000Z"));
    };
    let r = c
        .send("POST", &c.path("describe-key"), body.clone(), stale, |_| {})
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.request_id().is_some());

    // Read-only account: may read, may not create.
    let ro = KmsClient::aksk(m, &h.readonly_a);
    ro.post("describe-key", &json!({ "key_id": id })).await.ok();
    ro.post("create-key", &json!({ "key_alias": "ro-attempt" }))
        .await
        .assert_kms_error("KMS.0307");

    // X-Auth-Token failures.
    let spec = TokenSpec::for_account(&h.full_a);
    let pa = h.full_a.project_id.clone();
    let token = |s: TokenSpec| m.huawei_token(&s).unwrap();
    let cases: Vec<(&str, KmsClient)> = vec![
        ("KMS.0301", KmsClient::token(m, &pa, "not-a-token")),
        (
            "KMS.0302",
            KmsClient::token(
                m,
                &pa,
                &token(TokenSpec {
                    private_key: Some(h.rogue_private_key.clone()),
                    ..spec.clone()
                }),
            ),
        ),
        (
            "KMS.0303",
            KmsClient::token(
                m,
                &pa,
                &token(TokenSpec {
                    ttl_secs: Some(0),
                    ..spec.clone()
                }),
            ),
        ),
        (
            "KMS.0304",
            KmsClient::token(
                m,
                &pa,
                &token(TokenSpec {
                    obt: true,
                    ..spec.clone()
                }),
            ),
        ),
        (
            "KMS.0305",
            KmsClient::token(
                m,
                &pa,
                &token(TokenSpec {
                    no_project: true,
                    ..spec.clone()
                }),
            ),
        ),
        (
            "KMS.0321",
            KmsClient::token(m, &h.full_b.project_id, &token(spec.clone())),
        ),
    ];
    for (code, client) in cases {
        client
            .post("describe-key", &json!({ "key_id": id }))
            .await
            .assert_kms_error(code);
    }
    // A good token works.
    KmsClient::token(m, &pa, &token(spec))
        .post("describe-key", &json!({ "key_id": id }))
        .await
        .ok();

    // After all that, the service still serves.
    let text = marker_text(33);
    let ct = encrypt(&c, &id, &text, None).await.ok().str("cipher_text");
    assert_eq!(decrypt(&c, &ct, None).await.ok().str("plain_text"), text);
    m.assert_no_plaintext_in_logs();
}

macro_rules! suite {
    ($name:ident, $store:expr) => {
        mod $name {
            use super::*;

            fn mesh() -> &'static Mesh {
                $store.shared_mesh()
            }

            #[tokio::test]
            async fn key_lifecycle() {
                lifecycle(mesh()).await;
            }

            #[tokio::test]
            async fn data_keys_round_trip() {
                data_keys(mesh()).await;
            }

            #[tokio::test]
            async fn aad_binding_and_isolation() {
                aad_and_isolation(mesh()).await;
            }

            #[tokio::test]
            async fn errors_and_robustness() {
                errors(mesh()).await;
            }
        }
    };
}

suite!(sqlite, HuaweiStore::Sqlite);
suite!(postgres, HuaweiStore::Postgres);
