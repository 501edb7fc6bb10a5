//! `pki init`: a local mesh CA and one certificate per keymesh service, for
//! the mutual TLS between the edge, the crypto-workers and the rate-limiters
//! (`scripts/run-local`; Kubernetes uses Secrets or cert-manager instead).
//!
//! Each leaf carries its service's SPIFFE-style SAN URI
//! (`spiffe://keymesh/edge`, `.../crypto-worker`, `.../rate-limiter`), which
//! is what the peers pin, plus the v3 extensions webpki insists on (basic
//! constraints, key usage, extended key usage). Leaves get both serverAuth
//! and clientAuth, as SPIFFE X.509-SVIDs do: roles are told apart by the
//! pinned identity, not by the EKU.
//!
//! Private keys are written with mode 0600 and existing files are never
//! overwritten: `--if-missing` keeps a complete set as it is (re-runs), and
//! a partial set is an error rather than a silent re-issue under a new CA.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use keymesh_common::mesh_identity::{EDGE_IDENTITY, LIMITER_IDENTITY, WORKER_IDENTITY};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create DIR/ca.pem (+ ca.key) and DIR/{edge,crypto-worker,rate-limiter}.{pem,key}.
    Init {
        /// Directory for the files (created, mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// Succeed without changes when every file already exists.
        #[arg(long)]
        if_missing: bool,
        /// Validity of the service certificates in days (CA: ten times as long).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

/// The services and the identity each certificate carries, in file order.
pub const SERVICES: [(&str, &str); 3] = [
    ("edge", EDGE_IDENTITY),
    ("crypto-worker", WORKER_IDENTITY),
    ("rate-limiter", LIMITER_IDENTITY),
];

pub fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init {
            dir,
            if_missing,
            days,
        } => {
            if init(&dir, if_missing, days)? {
                println!("mesh PKI created in {}", dir.display());
            } else {
                println!("mesh PKI already present in {}", dir.display());
            }
            Ok(())
        }
    }
}

/// Every file `init` writes.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("ca.pem"), dir.join("ca.key")];
    for (name, _) in SERVICES {
        out.push(dir.join(format!("{name}.pem")));
        out.push(dir.join(format!("{name}.key")));
    }
    out
}

/// Create the CA and the leaves; `Ok(false)` when `if_missing` and all exist.
pub fn init(dir: &Path, if_missing: bool, days: u32) -> anyhow::Result<bool> {
    let all = files(dir);
    let present = all.iter().filter(|p| p.exists()).count();
    if present == all.len() && if_missing {
        return Ok(false);
    }
    if present > 0 {
        anyhow::bail!(
            "{} already holds mesh PKI files ({present} of {}); nothing overwritten \
             (use --if-missing to keep a complete set, or remove the directory to start over, \
             which needs every service restarted with the new certificates)",
            dir.display(),
            all.len()
        );
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;

    let now = OffsetDateTime::now_utc();
    // A little back-dating absorbs clock skew between hosts.
    let not_before = now - Duration::hours(1);
    let leaf_days = i64::from(days);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn("keymesh local mesh CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(leaf_days * 10);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    create_new(
        &dir.join("ca.key"),
        0o600,
        ca_key.serialize_pem().as_bytes(),
    )?;
    create_new(&dir.join("ca.pem"), 0o644, ca_cert.pem().as_bytes())?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    for (name, identity) in SERVICES {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = dn(&format!("keymesh {name}"));
        p.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = not_before;
        p.not_after = now + Duration::days(leaf_days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        create_new(
            &dir.join(format!("{name}.key")),
            0o600,
            key.serialize_pem().as_bytes(),
        )?;
        create_new(
            &dir.join(format!("{name}.pem")),
            0o644,
            cert.pem().as_bytes(),
        )?;
    }
    Ok(true)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, "keymesh");
    d
}

/// Write a file that must not exist yet, with `mode` from the start (a key
/// is never briefly world-readable).
fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::PermissionsExt as _;

    use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsFiles, MeshTls};
    use keymesh_common::mesh_identity::AllowedPeers;
    use rustls_pki_types::CertificateDer;

    use super::*;

    fn leaf(dir: &Path, name: &str) -> CertificateDer<'static> {
        let pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn init_issues_pinned_identities_and_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        assert!(init(&dir, false, 30).unwrap());
        for p in files(&dir) {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            if p.extension().is_some_and(|e| e == "key") {
                assert_eq!(mode, 0o600, "{}", p.display());
            } else {
                // 0644 less the umask: never writable by others.
                assert_eq!(mode & 0o022, 0, "{}", p.display());
            }
        }
        // Each certificate carries its own identity and no other.
        for (name, identity) in SERVICES {
            let cert = leaf(&dir, name);
            for (_, other) in SERVICES {
                let admitted = AllowedPeers::one(other).unwrap().admits(&cert);
                assert_eq!(admitted, other == identity, "{name} vs {other}");
            }
            // The files load as a service's mesh TLS (key matches, CA parses,
            // v3 extensions acceptable to rustls/webpki).
            GrpcTls::load(MeshTls {
                files: GrpcTlsFiles {
                    cert: dir.join(format!("{name}.pem")),
                    key: dir.join(format!("{name}.key")),
                    ca: dir.join("ca.pem"),
                },
                peers: AllowedPeers::one(EDGE_IDENTITY).unwrap(),
            })
            .unwrap();
        }

        // Re-runs keep the set untouched; without --if-missing they refuse.
        let before = std::fs::read(dir.join("ca.pem")).unwrap();
        assert!(!init(&dir, true, 30).unwrap());
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
        let err = init(&dir, false, 30).unwrap_err().to_string();
        assert!(err.contains("nothing overwritten"), "{err}");
        // A partial set is never silently completed under a new CA.
        std::fs::remove_file(dir.join("edge.key")).unwrap();
        let err = init(&dir, true, 30).unwrap_err().to_string();
        assert!(err.contains("7 of 8"), "{err}");
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), before);
    }
}
