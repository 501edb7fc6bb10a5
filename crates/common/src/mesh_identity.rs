//! Who may be on the other end of a mesh hop: identity pinning on top of the
//! mesh CA.
//!
//! Chaining to the mesh CA only proves "some keymesh service": a worker's
//! certificate must not let it call other workers, and a limiter's must not
//! let it pose as a worker to the edge. Each side therefore pins the peer's
//! identity — a SAN URI (`spiffe://keymesh/edge`) or a SAN DNS name — after
//! the usual webpki chain validation:
//!
//! * servers (workers, limiters) accept only clients whose leaf carries one
//!   of the allowed identities ([`PinnedClientVerifier`]);
//! * the edge accepts only servers whose leaf carries one of the identities
//!   expected for that hop ([`PinnedServerVerifier`]). The dialled name is
//!   deliberately ignored: the edge dials workers by IP from DNS discovery,
//!   and an IP SAN would tie certificates to pod addresses. The pinned
//!   identity replaces the hostname check; the chain, validity and
//!   serverAuth EKU checks stay webpki's.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::RootCertStore;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use x509_parser::extensions::GeneralName;

/// The edge's default identity (what workers and limiters accept).
pub const EDGE_IDENTITY: &str = "spiffe://keymesh/edge";
/// The crypto-workers' default identity (what the edge expects on worker hops).
pub const WORKER_IDENTITY: &str = "spiffe://keymesh/crypto-worker";
/// The rate-limiters' default identity (what the edge expects on limiter hops).
pub const LIMITER_IDENTITY: &str = "spiffe://keymesh/rate-limiter";

/// One identity a peer certificate may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A SAN URI, compared exactly (SPIFFE ids are case-sensitive).
    Uri(String),
    /// A SAN DNS name, compared ASCII case-insensitively; no wildcards.
    Dns(String),
}

impl FromStr for PeerIdentity {
    type Err = String;

    /// `scheme://...` is a URI, anything else must be a DNS name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((scheme, rest)) = s.split_once("://") {
            let scheme_ok = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if !scheme_ok || rest.is_empty() || s.chars().any(|c| c.is_whitespace()) {
                return Err(format!("{s:?} is not a URI"));
            }
            return Ok(Self::Uri(s.to_owned()));
        }
        match ServerName::try_from(s) {
            Ok(ServerName::DnsName(_)) if !s.contains('*') => Ok(Self::Dns(s.to_owned())),
            _ => Err(format!(
                "{s:?} is neither a URI (spiffe://...) nor a DNS name"
            )),
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(s) | Self::Dns(s) => f.write_str(s),
        }
    }
}

/// A non-empty set of accepted peer identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPeers(Arc<[PeerIdentity]>);

impl AllowedPeers {
    /// Parse each entry; every bad one is reported, and an empty list is an
    /// error (it would refuse every peer, which is never what was meant).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut ids = Vec::new();
        let mut bad = Vec::new();
        for e in entries {
            match e.as_ref().parse::<PeerIdentity>() {
                Ok(id) => ids.push(id),
                Err(m) => bad.push(m),
            }
        }
        if !bad.is_empty() {
            return Err(bad.join("; "));
        }
        if ids.is_empty() {
            return Err("at least one peer identity is required".to_owned());
        }
        Ok(Self(ids.into()))
    }

    /// Exactly one identity, e.g. one of the defaults above.
    pub fn one(id: &str) -> Result<Self, String> {
        Self::parse(&[id])
    }

    pub fn identities(&self) -> &[PeerIdentity] {
        &self.0
    }

    /// Does the end-entity certificate carry one of the identities?
    /// An unparsable certificate carries none.
    pub fn admits(&self, end_entity: &CertificateDer<'_>) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity.as_ref()) else {
            return false;
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value.general_names.iter().any(|name| {
            self.0.iter().any(|id| match (id, name) {
                (PeerIdentity::Uri(want), GeneralName::URI(got)) => want == got,
                (PeerIdentity::Dns(want), GeneralName::DNSName(got)) => {
                    want.eq_ignore_ascii_case(got)
                }
                _ => false,
            })
        })
    }

    fn check(&self, end_entity: &CertificateDer<'_>, side: &str) -> Result<(), rustls::Error> {
        if self.admits(end_entity) {
            return Ok(());
        }
        // The certificate chained to the mesh CA, so this is a keymesh
        // identity in the wrong place (or a mis-issued one): worth a warning.
        tracing::warn!(
            side,
            allowed = %self,
            "mesh peer refused: certificate carries none of the allowed identities"
        );
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }
}

impl fmt::Display for AllowedPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// Server side: webpki client verification (chain to the mesh CA, validity,
/// clientAuth EKU), then the identity pin.
#[derive(Debug)]
pub struct PinnedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    peers: AllowedPeers,
}

impl PinnedClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, peers: AllowedPeers) -> Self {
        Self { inner, peers }
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain first: an identity string means nothing from a stranger's CA.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.peers.check(end_entity, "client")?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client side: the server's chain must validate against the mesh roots
/// (webpki, serverAuth EKU) and its leaf must carry an expected identity;
/// the dialled name is not matched (see the module docs).
#[derive(Debug)]
pub struct PinnedServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    peers: AllowedPeers,
}

impl PinnedServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        peers: AllowedPeers,
    ) -> Self {
        Self {
            roots,
            provider,
            peers,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        self.peers.check(end_entity, "server")?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn leaf(sans: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for s in sans {
            params.subject_alt_names.push(if s.contains("://") {
                rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*s).unwrap())
            } else {
                rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(*s).unwrap())
            });
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn parses_uris_and_dns_names() {
        assert_eq!(
            "spiffe://keymesh/edge".parse::<PeerIdentity>(),
            Ok(PeerIdentity::Uri("spiffe://keymesh/edge".into()))
        );
        assert_eq!(
            "edge.keymesh.svc".parse::<PeerIdentity>(),
            Ok(PeerIdentity::Dns("edge.keymesh.svc".into()))
        );
        for bad in [
            "",
            "10.0.0.1",
            "*.keymesh.svc",
            "not a name",
            "://x",
            "1x://y",
        ] {
            assert!(bad.parse::<PeerIdentity>().is_err(), "{bad:?}");
        }
        assert!(AllowedPeers::parse::<&str>(&[]).is_err());
        let err = AllowedPeers::parse(&["spiffe://a/b", "bad name", "10.1.1.1"]).unwrap_err();
        assert!(
            err.contains("bad name") && err.contains("10.1.1.1"),
            "{err}"
        );
    }

    #[test]
    fn admits_only_listed_identities() {
        let edge = AllowedPeers::one(EDGE_IDENTITY).unwrap();
        assert!(edge.admits(&leaf(&["spiffe://keymesh/edge", "edge.local"])));
        assert!(!edge.admits(&leaf(&["spiffe://keymesh/crypto-worker"])));
        // A DNS SAN spelling the URI is not the URI.
        assert!(!edge.admits(&leaf(&["keymesh"])));
        assert!(!edge.admits(&leaf(&[])));
        assert!(!edge.admits(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])));

        let dns = AllowedPeers::parse(&["Worker.Keymesh.svc", WORKER_IDENTITY]).unwrap();
        assert!(dns.admits(&leaf(&["worker.keymesh.svc"])));
        assert!(dns.admits(&leaf(&[WORKER_IDENTITY])));
        assert!(!dns.admits(&leaf(&["other.keymesh.svc", LIMITER_IDENTITY])));
        // Prefixes and case variants of a URI do not match.
        assert!(!dns.admits(&leaf(&["spiffe://keymesh/crypto-worker/x"])));
        assert!(!dns.admits(&leaf(&["SPIFFE://keymesh/crypto-worker"])));
        assert_eq!(
            dns.to_string(),
            "Worker.Keymesh.svc,spiffe://keymesh/crypto-worker"
        );
    }
}
