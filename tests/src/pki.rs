//! Test PKI generated at run time with rcgen: a server CA and server
//! certificate (SANs `localhost`, `127.0.0.1`), a client CA and the KMS-like
//! client certificate, plus helpers for bad client certificates; and the
//! service-mTLS identities of the workers, limiters and edge ([`GrpcPki`],
//! from `keymeshctl pki init`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The subject CN KMS presents in us-east-1.
pub const KMS_CLIENT_CN: &str = "cks.kms.us-east-1.amazonaws.com";

/// A certificate authority that can issue leaves.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// A leaf certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, "keymesh e2e");
    d
}

impl Ca {
    /// A self-signed CA valid from yesterday for a year.
    pub fn new(cn: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    /// Issue a leaf for `cn` with `sans`, valid in [not_before, not_after].
    pub fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        client: bool,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Leaf> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(cn);
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A currently valid leaf.
    pub fn issue_valid(&self, cn: &str, sans: &[&str], client: bool) -> Result<Leaf> {
        let now = OffsetDateTime::now_utc();
        self.issue(
            cn,
            sans,
            client,
            now - Duration::days(1),
            now + Duration::days(30),
        )
    }
}

/// The mesh's TLS material, written to files for the edge.
#[derive(Debug)]
pub struct Pki {
    pub server_ca: Ca,
    pub client_ca: Ca,
    pub server_ca_pem: String,
    pub server_ca_cert: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
    pub client_ca_cert: PathBuf,
    pub client_chain_pem: String,
    pub client_key_pem: String,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Generate everything under `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let server_ca = Ca::new("keymesh e2e server CA")?;
        let client_ca = Ca::new("keymesh e2e client CA")?;
        let server = server_ca.issue_valid("localhost", &["localhost", "127.0.0.1"], false)?;
        let client = client_ca.issue_valid(KMS_CLIENT_CN, &[KMS_CLIENT_CN], true)?;
        let w = |name: &str, data: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            fs::write(&p, data)?;
            Ok(p)
        };
        Ok(Self {
            server_ca_cert: w("server-ca.pem", &server_ca.cert_pem)?,
            server_chain: w("server.pem", &server.cert_pem)?,
            server_key: w("server.key", &server.key_pem)?,
            client_ca_cert: w("client-ca.pem", &client_ca.cert_pem)?,
            client_cert: w("client.pem", &client.cert_pem)?,
            client_key: w("client.key", &client.key_pem)?,
            server_ca_pem: server_ca.cert_pem.clone(),
            client_chain_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            server_ca,
            client_ca,
        })
    }
}

/// Service-mTLS material, made by `keymeshctl pki init` (so every e2e test
/// runs on the certificates run-local uses): one mesh CA and a certificate
/// per service carrying its identity (`spiffe://keymesh/edge`,
/// `.../crypto-worker`, `.../rate-limiter`), for `--grpc-tls-*` and
/// `[grpc_tls]`.
#[derive(Debug)]
pub struct GrpcPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
}

impl GrpcPki {
    pub fn generate(ctl: &Path, dir: &Path) -> Result<Self> {
        let out = std::process::Command::new(ctl)
            .args(["pki", "init", "--dir"])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "keymeshctl pki init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
        })
    }

    /// (certificate, key) of `service`: `edge`, `crypto-worker` or `rate-limiter`.
    pub fn identity(&self, service: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{service}.pem")),
            self.dir.join(format!("{service}.key")),
        )
    }
}

impl Ca {
    /// A mesh-style leaf (SAN URI `uri`, serverAuth + clientAuth) from this CA.
    pub fn issue_mesh(&self, uri: &str) -> Result<Leaf> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
        params.distinguished_name = dn(uri);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(30);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
