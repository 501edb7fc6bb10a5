//! TLS 1.2/1.3, ALPN (h2, http/1.1) and mTLS, with certificates generated
//! at test time by rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use keymesh_tests::pki::{Ca, KMS_CLIENT_CN};
use keymesh_tests::xks::model::*;
use keymesh_tests::xks::{ClientConfig, HttpVersion, TlsConfig, TlsVersion, XksClient};
use keymesh_tests::*;
use time::{Duration, OffsetDateTime};

fn tls_mesh() -> &'static Mesh {
    static M: OnceLock<Mesh> = OnceLock::new();
    shared_mesh(&M, || MeshOptions {
        tls: TlsMode::Tls,
        ..MeshOptions::default()
    })
}

fn mtls_mesh() -> &'static Mesh {
    static M: OnceLock<Mesh> = OnceLock::new();
    shared_mesh(&M, || MeshOptions {
        tls: TlsMode::Mtls,
        ..MeshOptions::default()
    })
}

async fn all_ops(c: &XksClient) {
    let r = c
        .get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.body);
    let pt = plaintext(4300);
    let enc = c
        .encrypt(
            KEY_ED,
            &EncryptRequest::new(pt.clone())
                .with_aad(b"tls".to_vec())
                .with_cdiv(),
        )
        .await
        .unwrap()
        .parse::<EncryptResponse>()
        .unwrap();
    let d = c
        .decrypt(
            KEY_ED,
            &DecryptRequest::from_encrypt(&enc, Some(b"tls".to_vec())),
        )
        .await
        .unwrap();
    assert!(d.parse::<DecryptResponse>().unwrap().plaintext == pt);
    assert_eq!(
        c.health(&HealthRequest::default()).await.unwrap().status(),
        200
    );
}

fn with(mut cfg: ClientConfig, http: HttpVersion, v: TlsVersion) -> XksClient {
    cfg.http = http;
    cfg.tls = Some(cfg.tls.take().unwrap().with_versions(v));
    XksClient::new(cfg).unwrap()
}

#[tokio::test]
async fn tls12_and_tls13_over_http1_and_h2() {
    let m = tls_mesh();
    for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
        for http in [HttpVersion::Http1, HttpVersion::Http2] {
            let c = with(m.client_config(TENANT_A), http, v);
            all_ops(&c).await;
            let info = c.tls_info().unwrap();
            let want_v = if v == TlsVersion::Tls12 {
                "TLSv1_2"
            } else {
                "TLSv1_3"
            };
            assert_eq!(info.protocol_version, want_v);
            let want_alpn = if http == HttpVersion::Http2 {
                "h2"
            } else {
                "http/1.1"
            };
            assert_eq!(info.alpn.as_deref(), Some(want_alpn), "ALPN");
            // XKS-9: one of the required forward-secret AES-256/ChaCha suites when offered.
            assert!(
                matches!(
                    info.cipher_suite.as_str(),
                    "TLS13_AES_256_GCM_SHA384"
                        | "TLS13_CHACHA20_POLY1305_SHA256"
                        | "TLS13_AES_128_GCM_SHA256"
                        | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
                        | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
                        | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
                        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
                ),
                "{info:?}"
            );
        }
    }
    m.assert_no_plaintext_in_logs();
}

#[tokio::test]
async fn plain_http_to_tls_port_is_refused() {
    let m = tls_mesh();
    let mut cfg = m.client_config(TENANT_A);
    cfg.tls = None;
    cfg.timeout = std::time::Duration::from_secs(3);
    let c = XksClient::new(cfg).unwrap();
    let r = c.health(&HealthRequest::default()).await;
    assert!(
        !matches!(&r, Ok(r) if r.status() == 200),
        "plaintext HTTP served on the TLS port"
    );
}

#[test]
fn curl_over_https() {
    let m = tls_mesh();
    let creds = m.credentials(TENANT_A);
    for extra in [
        &["--http1.1", "--tlsv1.2", "--tls-max", "1.2"][..],
        &["--http2", "--tlsv1.3"][..],
    ] {
        let (code, out) = m
            .curl(
                &Operation::Encrypt.path(TENANT_A, KEY_ED),
                &serde_json::to_vec(&EncryptRequest::new(plaintext(32)).with_cdiv().to_json())
                    .unwrap(),
                &creds,
                extra,
            )
            .unwrap();
        assert_eq!(code, 200, "curl {extra:?}: {out}");
    }
}

#[tokio::test]
async fn mtls_accepts_the_configured_client() {
    let m = mtls_mesh();
    for http in [HttpVersion::Http1, HttpVersion::Http2] {
        let c = with(m.client_config(TENANT_A), http, TlsVersion::Any);
        all_ops(&c).await;
    }
    let (code, out) = m
        .curl(
            &Operation::GetHealthStatus.path(TENANT_A, ""),
            &serde_json::to_vec(&HealthRequest::default().to_json()).unwrap(),
            &m.credentials(TENANT_A),
            &[],
        )
        .unwrap();
    assert_eq!(code, 200, "curl with client cert: {out}");
}

async fn refused(m: &Mesh, identity: Option<(String, String)>, what: &str) {
    for v in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let mut cfg = m.client_config(TENANT_A);
        let p = m.pki.as_ref().unwrap();
        let mut t =
            TlsConfig::new(p.server_ca_pem.clone().into_bytes(), "localhost").with_versions(v);
        if let Some((c, k)) = &identity {
            t = t.with_client_identity(c.clone().into_bytes(), k.clone().into_bytes());
        }
        cfg.tls = Some(t);
        cfg.timeout = std::time::Duration::from_secs(5);
        let c = XksClient::new(cfg).unwrap();
        let r = c.health(&HealthRequest::default()).await;
        match r {
            Err(_) => {}
            Ok(r) => panic!(
                "{what} ({v:?}): handshake must be refused, got HTTP {} {:?}",
                r.status(),
                r.body
            ),
        }
    }
}

#[tokio::test]
async fn mtls_refuses_bad_clients() {
    let m = mtls_mesh();
    let p = m.pki.as_ref().unwrap();
    refused(m, None, "no client certificate").await;
    let now = OffsetDateTime::now_utc();
    let expired = p
        .client_ca
        .issue(
            KMS_CLIENT_CN,
            &[KMS_CLIENT_CN],
            true,
            now - Duration::days(30),
            now - Duration::days(1),
        )
        .unwrap();
    refused(
        m,
        Some((expired.cert_pem, expired.key_pem)),
        "expired client certificate",
    )
    .await;
    let not_yet = p
        .client_ca
        .issue(
            KMS_CLIENT_CN,
            &[KMS_CLIENT_CN],
            true,
            now + Duration::days(1),
            now + Duration::days(30),
        )
        .unwrap();
    refused(
        m,
        Some((not_yet.cert_pem, not_yet.key_pem)),
        "not-yet-valid client certificate",
    )
    .await;
    let other_ca = Ca::new("some other CA").unwrap();
    let wrong_ca = other_ca
        .issue_valid(KMS_CLIENT_CN, &[KMS_CLIENT_CN], true)
        .unwrap();
    refused(
        m,
        Some((wrong_ca.cert_pem, wrong_ca.key_pem)),
        "client certificate from another CA",
    )
    .await;
    let wrong_cn = p
        .client_ca
        .issue_valid(
            "cks.kms.eu-west-1.amazonaws.com",
            &["cks.kms.eu-west-1.amazonaws.com"],
            true,
        )
        .unwrap();
    refused(
        m,
        Some((wrong_cn.cert_pem, wrong_cn.key_pem)),
        "client certificate with another CN",
    )
    .await;
    // Right CN only in the SAN, wrong subject CN: the spec checks the subject CN.
    let san_only = p
        .client_ca
        .issue_valid("someone-else", &[KMS_CLIENT_CN], true)
        .unwrap();
    refused(
        m,
        Some((san_only.cert_pem, san_only.key_pem)),
        "KMS name only in SAN, other CN",
    )
    .await;
    // The configured client still works afterwards.
    all_ops(&m.client(TENANT_A)).await;
}
