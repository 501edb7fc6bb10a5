//! Edge configuration: TOML, typed, validated once with every problem reported
//! together. `deploy/edge.toml` documents every field with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::http::tls::TlsConfig;
use crate::limiter::FailurePolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address (default 127.0.0.1:8000).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Write the bound address here once listening (default: none).
    pub addr_file: Option<PathBuf>,
    /// A second, plain-HTTP listener serving only /ping, /livez, /readyz and
    /// /metrics (default: none). With mTLS on `listen`, kubelet probes and
    /// Prometheus have no KMS client certificate and need this one.
    pub admin_listen: Option<SocketAddr>,
    /// Total budget per request in ms (default 200).
    #[serde(default = "defaults::deadline_ms")]
    pub deadline_ms: u64,
    /// crypto-worker gRPC endpoints (at least one): `http://host:port`, or
    /// `dns+http://name:port` = every A/AAAA record of `name` (headless Service).
    pub workers: Vec<String>,
    /// How often `dns+http://` worker names are re-resolved, in ms (default 2000).
    #[serde(default = "defaults::resolve_ms")]
    pub worker_resolve_interval_ms: u64,
    /// A request with less budget than this left before its worker call is
    /// refused with 429 instead of becoming a 503, in ms (default 5).
    #[serde(default = "defaults::shed_floor_ms")]
    pub shed_floor_ms: u64,
    /// rate-limiter gRPC endpoint (a single replica). Exactly one of
    /// `limiter` and `limiters` must be set.
    pub limiter: Option<String>,
    /// rate-limiter replicas (default: none); each bucket key is owned by one
    /// of them (rendezvous hashing over these URLs, so every edge must list
    /// the same URLs, in any order).
    #[serde(default)]
    pub limiters: Vec<String>,
    /// Limiter unreachable: "open" (default) or "closed".
    #[serde(default)]
    pub limiter_failure_policy: FailurePolicy,
    /// Largest quota lease per limiter round trip (default 64).
    #[serde(default = "defaults::max_lease")]
    pub limiter_max_lease: u32,
    /// Key stores and credentials (JSON, hot-reloaded).
    pub keystores_file: PathBuf,
    /// Migration opt-in: let a catch-all `key_ids` pattern (`"*"`, written by
    /// keymeshctl before key stores were isolated) match every non-internal
    /// key (default false: such a pattern matches nothing). Warned at every load.
    #[serde(default)]
    pub allow_wildcard_keystores: bool,
    /// Secondary-authorization policy (TOML, hot-reloaded; default: none = allow).
    pub policy_file: Option<PathBuf>,
    /// Poll interval for the two files above (default 1000 ms).
    #[serde(default = "defaults::reload_ms")]
    pub reload_interval_ms: u64,
    /// Bodies above this are refused before authentication (default 65536).
    #[serde(default = "defaults::max_body")]
    pub max_body_bytes: usize,
    /// Largest plaintext/ciphertext (default 32768; spec minimum 4300).
    #[serde(default = "defaults::max_plaintext")]
    pub max_plaintext_bytes: usize,
    /// Largest AAD (default 8192, the spec minimum; at most 65535).
    #[serde(default = "defaults::max_aad")]
    pub max_aad_bytes: usize,
    /// Accepted X-Amz-Date skew in seconds (default 300).
    #[serde(default = "defaults::max_skew")]
    pub max_skew_secs: u64,
    /// Accepted SigV4 regions (default: any).
    #[serde(default)]
    pub regions: Vec<String>,
    /// `xksProxyVendor` (default "keymesh").
    #[serde(default = "defaults::vendor")]
    pub xks_proxy_vendor: String,
    /// `ekmVendor` (default: the HSM's manufacturer id).
    #[serde(default)]
    pub ekm_vendor: String,
    /// TLS; absent = plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Mutual TLS to workers and limiters; required unless
    /// `insecure_plaintext_grpc = true`.
    pub grpc_tls: Option<GrpcTlsConfig>,
    /// Dial workers and limiters in PLAINTEXT, unauthenticated, instead of
    /// `[grpc_tls]`: development only (default false).
    #[serde(default)]
    pub insecure_plaintext_grpc: bool,
    /// The Huawei-compatible KMS dialect; absent = XKS only.
    pub huawei: Option<crate::huawei::config::HuaweiConfig>,
    /// Budgets for callers not yet authenticated and per-connection HTTP
    /// limits (default: see `keymesh_http_server::abuse`).
    #[serde(default)]
    pub abuse: crate::http::abuse::AbuseConfig,
}

/// The edge's mesh identity for gRPC to workers and limiters (all files
/// PEM, hot-reloaded).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// Client certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA bundle the workers' and limiters' certificates must chain to.
    pub ca_file: PathBuf,
    /// Identities (SAN URI or DNS name) a worker's certificate must carry
    /// one of; the dialled host is not matched (workers are dialled by IP)
    /// (default ["spiffe://keymesh/crypto-worker"]).
    #[serde(default = "defaults::worker_identities")]
    pub worker_identities: Vec<String>,
    /// The same for rate-limiters (default ["spiffe://keymesh/rate-limiter"]).
    #[serde(default = "defaults::limiter_identities")]
    pub limiter_identities: Vec<String>,
}

mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    pub fn listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8000))
    }
    pub fn deadline_ms() -> u64 {
        200
    }
    pub fn max_lease() -> u32 {
        64
    }
    pub fn resolve_ms() -> u64 {
        2000
    }
    pub fn shed_floor_ms() -> u64 {
        5
    }
    pub fn reload_ms() -> u64 {
        1000
    }
    pub fn max_body() -> usize {
        65536
    }
    pub fn max_plaintext() -> usize {
        32768
    }
    pub fn max_aad() -> usize {
        8192
    }
    pub fn max_skew() -> u64 {
        300
    }
    pub fn vendor() -> String {
        "keymesh".into()
    }
    pub fn worker_identities() -> Vec<String> {
        vec![keymesh_common::mesh_identity::WORKER_IDENTITY.into()]
    }
    pub fn limiter_identities() -> Vec<String> {
        vec![keymesh_common::mesh_identity::LIMITER_IDENTITY.into()]
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut cfg: Self =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Relative file names are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut cfg.keystores_file);
        if let Some(p) = cfg.policy_file.as_mut() {
            rebase(p);
        }
        if let Some(p) = cfg.addr_file.as_mut() {
            rebase(p);
        }
        if let Some(tls) = cfg.tls.as_mut() {
            rebase(&mut tls.cert_file);
            rebase(&mut tls.key_file);
            if let Some(p) = tls.client_ca_file.as_mut() {
                rebase(p);
            }
        }
        if let Some(h) = cfg.huawei.as_mut() {
            for p in [&mut h.token_public_key_file, &mut h.store_url_file]
                .into_iter()
                .flatten()
            {
                rebase(p);
            }
        }
        if let Some(g) = cfg.grpc_tls.as_mut() {
            rebase(&mut g.cert_file);
            rebase(&mut g.key_file);
            rebase(&mut g.ca_file);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if let Some(h) = &self.huawei {
            errors.extend(h.problems());
        }
        errors.extend(self.abuse.problems());
        if self.workers.is_empty() {
            errors.push("workers: at least one crypto-worker endpoint is required".to_owned());
        }
        if self.workers.len() > 10 {
            errors.push("workers: at most 10 (ekmFleetDetails holds 1 to 10 entries)".to_owned());
        }
        if !(10..=60_000).contains(&self.deadline_ms) {
            errors.push("deadline_ms: must be 10..=60000".to_owned());
        }
        if self.max_plaintext_bytes < 4300 {
            errors.push("max_plaintext_bytes: the XKS spec requires at least 4300".to_owned());
        }
        if !(8192..=65535).contains(&self.max_aad_bytes) {
            errors.push("max_aad_bytes: must be 8192..=65535".to_owned());
        }
        // Base64 grows 4/3; plus AAD, ARNs and JSON framing.
        let needed = (self.max_plaintext_bytes + self.max_aad_bytes) * 4 / 3 + 8192;
        if self.max_body_bytes < needed {
            errors.push(format!(
                "max_body_bytes: must be at least {needed} to carry the largest plaintext and AAD"
            ));
        }
        for w in &self.workers {
            if let Err(e) = crate::mesh::Source::parse(w) {
                errors.push(format!("workers: {e}"));
            }
        }
        if !(100..=60_000).contains(&self.worker_resolve_interval_ms) {
            errors.push("worker_resolve_interval_ms: must be 100..=60000".to_owned());
        }
        if self.shed_floor_ms >= self.deadline_ms {
            errors.push("shed_floor_ms: must be below deadline_ms".to_owned());
        }
        if self
            .admin_listen
            .is_some_and(|a| a == self.listen && a.port() != 0)
        {
            errors.push("admin_listen: must differ from listen".to_owned());
        }
        match (&self.limiter, self.limiters.is_empty()) {
            (Some(_), false) => {
                errors.push("limiter, limiters: set exactly one of the two, not both".to_owned())
            }
            (None, true) => errors.push(
                "limiter, limiters: a rate-limiter endpoint is required (limiter = \"http://...\" or limiters = [...])"
                    .to_owned(),
            ),
            _ => {}
        }
        if self.limiters.len() > crate::limiter::MAX_REPLICAS {
            errors.push(format!(
                "limiters: at most {} replicas",
                crate::limiter::MAX_REPLICAS
            ));
        }
        let endpoints = self.limiter_endpoints();
        for (i, url) in endpoints.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!("limiters: {url:?}: expected http://host:port"));
            } else if let Err(e) = tonic::transport::Endpoint::from_shared(url.clone()) {
                errors.push(format!("limiters: {url:?}: {e}"));
            }
            if endpoints[..i].contains(url) {
                errors.push(format!("limiters: {url:?} listed more than once"));
            }
        }
        if self.limiter_max_lease == 0 {
            errors.push("limiter_max_lease: must be at least 1".to_owned());
        }
        if let Some(tls) = &self.tls
            && tls.client_ca_file.is_some() != tls.client_subject_cn.is_some()
        {
            errors.push(
                "tls: client_ca_file and client_subject_cn must be set together (XKS-71)"
                    .to_owned(),
            );
        }
        match (&self.grpc_tls, self.insecure_plaintext_grpc) {
            (Some(g), false) => {
                use keymesh_common::mesh_identity::AllowedPeers;
                if let Err(e) = AllowedPeers::parse(&g.worker_identities) {
                    errors.push(format!("grpc_tls: worker_identities: {e}"));
                }
                if let Err(e) = AllowedPeers::parse(&g.limiter_identities) {
                    errors.push(format!("grpc_tls: limiter_identities: {e}"));
                }
            }
            (None, true) => {}
            (Some(_), true) => errors
                .push("insecure_plaintext_grpc: contradicts [grpc_tls]; choose one".to_owned()),
            (None, false) => errors.push(
                "grpc_tls: required (mutual TLS to workers and limiters); set \
                 insecure_plaintext_grpc = true to run without it, development only"
                    .to_owned(),
            ),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  {}", errors.join("\n  "))
        }
    }

    /// The limiter replicas: `limiters`, or the single `limiter`.
    pub fn limiter_endpoints(&self) -> Vec<String> {
        match &self.limiter {
            Some(one) if self.limiters.is_empty() => vec![one.clone()],
            _ => self.limiters.clone(),
        }
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    pub fn shed_floor(&self) -> Duration {
        Duration::from_millis(self.shed_floor_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_together() {
        let cfg: Config = match toml::from_str(
            r#"workers = []
               limiter = "http://x"
               keystores_file = "k.json"
               deadline_ms = 1
               max_plaintext_bytes = 10
               worker_resolve_interval_ms = 1
               [tls]
               cert_file = "c"
               key_file = "k"
               client_ca_file = "ca""#,
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let msg = cfg
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for field in [
            "workers",
            "deadline_ms",
            "max_plaintext_bytes",
            "tls",
            "worker_resolve_interval_ms",
        ] {
            assert!(msg.contains(field), "{field} missing in {msg}");
        }
    }

    fn parse(text: &str) -> Config {
        match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn problems(cfg: &Config) -> String {
        cfg.validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn grpc_tls_required_unless_insecure() {
        let base = "workers = [\"http://w:1\"]\nkeystores_file = \"k.json\"\nlimiter = \"http://a:7200\"\n";
        let files =
            "[grpc_tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nca_file = \"ca.pem\"\n";
        let plain = parse(base);
        assert!(
            problems(&plain).contains("grpc_tls: required"),
            "{}",
            problems(&plain)
        );
        let insecure = parse(&format!("{base}insecure_plaintext_grpc = true\n"));
        assert_eq!(problems(&insecure), "");
        let both = parse(&format!("{base}insecure_plaintext_grpc = true\n{files}"));
        assert!(
            problems(&both).contains("contradicts"),
            "{}",
            problems(&both)
        );

        let tls = parse(&format!("{base}{files}"));
        assert_eq!(problems(&tls), "");
        let g = tls.grpc_tls.as_ref().unwrap();
        assert_eq!(g.ca_file, PathBuf::from("ca.pem"));
        assert_eq!(g.worker_identities, ["spiffe://keymesh/crypto-worker"]);
        assert_eq!(g.limiter_identities, ["spiffe://keymesh/rate-limiter"]);
        let pinned = parse(&format!(
            "{base}{files}worker_identities = [\"worker.keymesh.svc\", \"spiffe://x/w\"]\n"
        ));
        assert_eq!(problems(&pinned), "");
        let bad = parse(&format!(
            "{base}{files}worker_identities = []\nlimiter_identities = [\"not a name\"]\n"
        ));
        let msg = problems(&bad);
        assert!(msg.contains("grpc_tls: worker_identities"), "{msg}");
        assert!(msg.contains("grpc_tls: limiter_identities"), "{msg}");
        // All three files are required; the old server_name is gone.
        for extra in ["", "server_name = \"w\"\n"] {
            let text = if extra.is_empty() {
                format!("{base}[grpc_tls]\ncert_file = \"c\"\nkey_file = \"k\"\n")
            } else {
                format!("{base}{files}{extra}")
            };
            assert!(toml::from_str::<Config>(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn limiter_or_limiters_exactly_one() {
        let base = "workers = [\"http://w:1\"]\nkeystores_file = \"k.json\"\ninsecure_plaintext_grpc = true\n";
        let one = parse(&format!("{base}limiter = \"http://a:7200\""));
        assert_eq!(problems(&one), "");
        assert_eq!(one.limiter_endpoints(), vec!["http://a:7200".to_owned()]);
        let many = parse(&format!(
            "{base}limiters = [\"http://a:7200\", \"http://b:7200\"]"
        ));
        assert_eq!(problems(&many), "");
        assert_eq!(many.limiter_endpoints().len(), 2);
        let both = parse(&format!(
            "{base}limiter = \"http://a:7200\"\nlimiters = [\"http://b:7200\"]"
        ));
        assert!(problems(&both).contains("not both"), "{}", problems(&both));
        // Reported together with the other problems.
        let neither = parse(&format!("{base}deadline_ms = 1"));
        let msg = problems(&neither);
        assert!(msg.contains("rate-limiter endpoint is required"), "{msg}");
        assert!(msg.contains("deadline_ms"), "{msg}");
        let bad = parse(&format!(
            "{base}limiters = [\"http://a:7200\", \"tcp://b\", \"http://a:7200\"]"
        ));
        let msg = problems(&bad);
        assert!(msg.contains("expected http://"), "{msg}");
        assert!(msg.contains("more than once"), "{msg}");
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../../../deploy/edge.toml");
        let cfg: Result<Config, _> = toml::from_str(text);
        assert!(cfg.is_ok_and(|c| c.validate().is_ok()));
    }
}
