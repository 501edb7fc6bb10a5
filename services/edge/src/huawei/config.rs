//! `[huawei]` in edge.toml: the Huawei-compatible KMS dialect. Absent = the
//! edge serves XKS only. `deploy/edge.toml` documents every field.

use std::path::PathBuf;

use keymesh_kms_core::{Quotas, SecretQuotas};
use serde::Deserialize;
use zeroize::Zeroizing;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiConfig {
    /// Durable store: `sqlite:///abs/path.db` (created when missing) or
    /// `postgres://user@host:port/db`. Exactly one of this and
    /// `store_url_file`.
    pub store_url: Option<String>,
    /// File whose trimmed content is the store URL, read once at start, so a
    /// PostgreSQL password can live in a secret (a mounted Kubernetes Secret)
    /// rather than in edge.toml. Relative to the config file.
    pub store_url_file: Option<PathBuf>,
    /// PEM Ed25519 public key(s) verifying `X-Auth-Token` (default: none,
    /// so token requests are refused with KMS.0302). Several `PUBLIC KEY`
    /// blocks may be listed (a signing-key rotation); each token names its
    /// key by `kid`. Reloaded on change (`reload_interval_ms`) or SIGHUP.
    pub token_public_key_file: Option<PathBuf>,
    /// The only `iss` accepted in an X-Auth-Token (default "keymesh", what
    /// `keymeshctl auth-token issue` writes).
    #[serde(default = "d::token_issuer")]
    pub token_issuer: String,
    /// Longest X-Auth-Token lifetime (`exp - iat`) accepted, in seconds
    /// (default 86400).
    #[serde(default = "d::token_max_ttl")]
    pub token_max_ttl_secs: u64,
    /// Total budget per request in ms (default 5000): store writes fsync.
    #[serde(default = "d::deadline_ms")]
    pub deadline_ms: u64,
    /// KMS bodies above this are refused with KMS.0203 before
    /// authentication (default 65536; the largest legitimate one is ~25 KiB).
    #[serde(default = "d::max_body")]
    pub max_body_bytes: usize,
    /// CSMS bodies above this are refused with CSMS.0004 (default 1 MiB: a
    /// 32 KiB value may be JSON-escaped 6x, and a backup blob carries every
    /// version).
    #[serde(default = "d::csms_max_body")]
    pub csms_max_body_bytes: usize,
    /// Accepted `X-Sdk-Date` skew in seconds (default 900).
    #[serde(default = "d::max_skew")]
    pub max_skew_secs: u64,
    /// `region_id` / `realm` reported for keys (default "keymesh-local").
    #[serde(default = "d::region")]
    pub region_id: String,
    /// How often keys past their pending-deletion date are destroyed, in ms
    /// (default 60000).
    #[serde(default = "d::purge_ms")]
    pub purge_interval_ms: u64,
    /// How long an edge serves a key's state and an account from memory
    /// before re-reading the store, in ms (default 1000). A change made
    /// through this edge is seen at once; one made through another edge
    /// within this window.
    #[serde(default = "d::cache_ms")]
    pub cache_ttl_ms: u64,
    /// HSM wrapping key that new keys are wrapped under (default
    /// "keymesh-domain-v1", created by `keymeshctl domain-key init`; must
    /// start with "keymesh-domain-").
    #[serde(default = "d::domain_key")]
    pub domain_key_label: String,
    /// Quotas (defaults: 100 keys per project, 100 grants per key, 1000 per
    /// project, 20 tags and 10 alias resources per key).
    #[serde(default)]
    pub quotas: QuotaConfig,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub keys_per_project: u32,
    pub grants_per_key: u32,
    pub grants_per_project: u32,
    pub tags_per_key: u32,
    pub aliases_per_key: u32,
    pub secrets_per_project: u32,
    pub versions_per_secret: u32,
    pub stages_per_secret: u32,
    pub tags_per_secret: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        let q = Quotas::default();
        let sq = SecretQuotas::default();
        Self {
            secrets_per_project: sq.secrets_per_project,
            versions_per_secret: sq.versions_per_secret,
            stages_per_secret: sq.stages_per_secret,
            tags_per_secret: sq.tags_per_secret,
            keys_per_project: q.keys_per_project,
            grants_per_key: q.grants_per_key,
            grants_per_project: q.grants_per_project,
            tags_per_key: q.tags_per_key,
            aliases_per_key: q.aliases_per_key,
        }
    }
}

impl From<QuotaConfig> for Quotas {
    fn from(q: QuotaConfig) -> Self {
        Self {
            keys_per_project: q.keys_per_project,
            grants_per_key: q.grants_per_key,
            grants_per_project: q.grants_per_project,
            tags_per_key: q.tags_per_key,
            aliases_per_key: q.aliases_per_key,
        }
    }
}

impl From<QuotaConfig> for SecretQuotas {
    fn from(q: QuotaConfig) -> Self {
        Self {
            secrets_per_project: q.secrets_per_project,
            versions_per_secret: q.versions_per_secret,
            stages_per_secret: q.stages_per_secret,
            tags_per_secret: q.tags_per_secret,
        }
    }
}

/// Debug without the store URL, which may carry a database password.
impl std::fmt::Debug for HuaweiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuaweiConfig")
            .field("store_url", &self.store_url.as_ref().map(|_| "<redacted>"))
            .field("store_url_file", &self.store_url_file)
            .field("token_public_key_file", &self.token_public_key_file)
            .field("deadline_ms", &self.deadline_ms)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl HuaweiConfig {
    /// Every problem, for `Config::validate` to report together.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match (&self.store_url, &self.store_url_file) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push(StoreUrlError::NotExactlyOne.to_string());
            }
            (Some(url), None) if !store_scheme_ok(url) => {
                errors.push("huawei.store_url: must start with sqlite: or postgres://".to_owned());
            }
            _ => {}
        }
        if !(100..=120_000).contains(&self.deadline_ms) {
            errors.push("huawei.deadline_ms: must be 100..=120000".to_owned());
        }
        // The workers' KeyVault accepts no other wrapping key label.
        if !keymesh_common::labels::is_wrapping_key(&self.domain_key_label) {
            errors.push(format!(
                "huawei.domain_key_label: must start with {:?}",
                keymesh_common::labels::WRAPPING_KEY_PREFIX
            ));
        }
        if self.csms_max_body_bytes < 256 * 1024 {
            errors.push("huawei.csms_max_body_bytes: must be at least 262144".to_owned());
        }
        if self.max_body_bytes < 32 * 1024 {
            errors.push("huawei.max_body_bytes: must be at least 32768".to_owned());
        }
        if !(1..=3600).contains(&self.max_skew_secs) {
            errors.push("huawei.max_skew_secs: must be 1..=3600".to_owned());
        }
        if self.cache_ttl_ms > 60_000 {
            errors.push("huawei.cache_ttl_ms: must be at most 60000".to_owned());
        }
        if !(60..=30 * 86_400).contains(&self.token_max_ttl_secs) {
            errors.push("huawei.token_max_ttl_secs: must be 60..=2592000".to_owned());
        }
        if self.token_issuer.is_empty() {
            errors.push("huawei.token_issuer: must not be empty".to_owned());
        }
        if self.purge_interval_ms < 100 {
            errors.push("huawei.purge_interval_ms: must be at least 100".to_owned());
        }
        errors
    }

    /// The store URL: `store_url`, or the trimmed content of
    /// `store_url_file`, read now (once, at start). Zeroized on drop because
    /// it may carry the database password.
    pub fn resolve_store_url(&self) -> Result<Zeroizing<String>, StoreUrlError> {
        match (&self.store_url, &self.store_url_file) {
            (Some(url), None) => Ok(Zeroizing::new(url.clone())),
            (None, Some(path)) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    StoreUrlError::Read {
                        path: path.clone(),
                        source,
                    }
                })?);
                let url = Zeroizing::new(text.trim().to_owned());
                // The content is never echoed: it may be a mistyped secret.
                if !store_scheme_ok(&url) {
                    return Err(StoreUrlError::BadFileContent { path: path.clone() });
                }
                Ok(url)
            }
            _ => Err(StoreUrlError::NotExactlyOne),
        }
    }
}

/// A PostgreSQL URL whose server is not verified (no `sslmode=verify-full`
/// or `verify-ca`): the link may be plaintext or TLS to anyone. Warned
/// about at start, not refused, so a database on a private network or a
/// Unix socket still works.
pub fn postgres_unverified(url: &str) -> bool {
    let is_postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
    let verified = url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|kv| {
            matches!(
                kv.split_once('='),
                Some(("sslmode" | "ssl-mode", "verify-full" | "verify-ca"))
            )
        })
    });
    is_postgres && !verified
}

/// Why the store URL could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("huawei: set exactly one of store_url and store_url_file")]
    NotExactlyOne,
    #[error("huawei.store_url_file: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "huawei.store_url_file: {} must hold a URL starting with sqlite: or postgres://",
        path.display()
    )]
    BadFileContent { path: PathBuf },
}

/// The schemes the store's `open` accepts (checked early so a typo is a
/// configuration error, not a failed start).
fn store_scheme_ok(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres")
}

mod d {
    pub fn token_issuer() -> String {
        keymesh_huawei_auth::token::DEFAULT_ISSUER.to_owned()
    }
    pub fn token_max_ttl() -> u64 {
        keymesh_huawei_auth::token::DEFAULT_MAX_TTL.as_secs()
    }
    pub fn deadline_ms() -> u64 {
        5000
    }
    pub fn max_body() -> usize {
        65536
    }
    pub fn csms_max_body() -> usize {
        1 << 20
    }
    pub fn max_skew() -> u64 {
        900
    }
    pub fn region() -> String {
        "keymesh-local".into()
    }
    pub fn purge_ms() -> u64 {
        60_000
    }
    pub fn cache_ms() -> u64 {
        1000
    }
    pub fn domain_key() -> String {
        "keymesh-domain-v1".into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(text: &str) -> HuaweiConfig {
        toml::from_str(text).unwrap()
    }

    fn one_of_problem(c: &HuaweiConfig) -> bool {
        c.problems()
            .iter()
            .any(|p| p.contains("exactly one of store_url and store_url_file"))
    }

    #[test]
    fn unverified_postgres_urls_are_spotted() {
        assert!(postgres_unverified("postgres://k@db/k"));
        assert!(postgres_unverified("postgresql://k@db/k?sslmode=require"));
        assert!(!postgres_unverified(
            "postgres://k@db/k?application_name=x&sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(!postgres_unverified("postgres://k@db/k?sslmode=verify-ca"));
        assert!(!postgres_unverified("sqlite:///x.db"));
    }

    #[test]
    fn token_policy_defaults_and_bounds() {
        let c = parse("store_url = \"sqlite:///x.db\"");
        assert_eq!(c.token_issuer, "keymesh");
        assert_eq!(c.token_max_ttl_secs, 86_400);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c =
            parse("store_url = \"sqlite:///x.db\"\ntoken_max_ttl_secs = 59\ntoken_issuer = \"\"");
        let problems = c.problems();
        assert!(problems.iter().any(|p| p.contains("token_max_ttl_secs")));
        assert!(problems.iter().any(|p| p.contains("token_issuer")));
        // A PostgreSQL URL with server verification is accepted as given.
        let c = parse(
            "store_url = \"postgres://k@db.example/k?sslmode=verify-full&sslrootcert=/etc/keymesh/ca.pem\"",
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn store_url_and_store_url_file_are_exclusive() {
        let both = parse("store_url = \"sqlite:///x.db\"\nstore_url_file = \"url\"\n");
        assert!(one_of_problem(&both), "{:?}", both.problems());
        assert!(matches!(
            both.resolve_store_url(),
            Err(StoreUrlError::NotExactlyOne)
        ));
        let neither = parse("deadline_ms = 5000\n");
        assert!(one_of_problem(&neither), "{:?}", neither.problems());
        assert!(matches!(
            neither.resolve_store_url(),
            Err(StoreUrlError::NotExactlyOne)
        ));
        assert!(
            parse("store_url = \"sqlite:///x.db\"\n")
                .problems()
                .is_empty()
        );
        assert!(
            parse("store_url_file = \"/run/url\"\n")
                .problems()
                .is_empty()
        );
        let bad = parse("store_url = \"mysql://x\"\n").problems();
        assert!(
            bad.iter().any(|p| p.contains("huawei.store_url:")),
            "{bad:?}"
        );
    }

    #[test]
    fn domain_key_label_is_a_wrapping_key_label() {
        let ok =
            parse("store_url = \"sqlite:///x.db\"\ndomain_key_label = \"keymesh-domain-v2\"\n");
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let bad = parse("store_url = \"sqlite:///x.db\"\ndomain_key_label = \"demo-key\"\n");
        assert!(
            bad.problems()
                .iter()
                .any(|p| p.contains("huawei.domain_key_label")),
            "{:?}",
            bad.problems()
        );
    }

    #[test]
    fn store_url_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!(
            "keymesh-huawei-url-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("url");
        let config = |p: &std::path::Path| parse(&format!("store_url_file = {:?}\n", p));

        // A Secret written with a trailing newline (echo, kubectl from-file).
        std::fs::write(&path, "  postgres://keymesh:s3cret@db:5432/keymesh\n").unwrap();
        let url = config(&path).resolve_store_url().unwrap();
        assert_eq!(url.as_str(), "postgres://keymesh:s3cret@db:5432/keymesh");

        std::fs::write(&path, "s3cret\n").unwrap();
        let e = config(&path).resolve_store_url().unwrap_err();
        assert!(matches!(e, StoreUrlError::BadFileContent { .. }));
        assert!(!e.to_string().contains("s3cret"), "content echoed: {e}");

        let missing = dir.join("missing");
        let e = config(&missing).resolve_store_url().unwrap_err();
        assert!(matches!(e, StoreUrlError::Read { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Config::load rebases a relative store_url_file on the config's directory.
        std::fs::create_dir_all(&dir).unwrap();
        let edge_toml = dir.join("edge.toml");
        std::fs::write(
            &edge_toml,
            "workers = [\"http://127.0.0.1:1\"]\nlimiter = \"http://127.0.0.1:2\"\n\
             keystores_file = \"k.json\"\ninsecure_plaintext_grpc = true\n\
             [huawei]\nstore_url_file = \"store-url\"\n",
        )
        .unwrap();
        let loaded = crate::config::Config::load(&edge_toml).unwrap();
        let h = loaded.huawei.unwrap();
        assert_eq!(h.store_url_file.unwrap(), dir.join("store-url"));
        std::fs::remove_dir_all(&dir).unwrap();

        let inline = parse("store_url = \"sqlite:///x.db\"\n");
        assert_eq!(
            inline.resolve_store_url().unwrap().as_str(),
            "sqlite:///x.db"
        );
    }
}
