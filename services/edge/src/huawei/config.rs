//! `[huawei]` in edge.toml: the Huawei-compatible KMS dialect. Absent = the
//! edge serves XKS only. `deploy/edge.toml` documents every field.

use std::path::PathBuf;

use keymesh_store::{Quotas, SecretQuotas};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiConfig {
    /// Durable store: `sqlite:///abs/path.db` (created when missing) or
    /// `postgres://user@host:port/db` (required).
    pub store_url: String,
    /// PEM Ed25519 public key verifying `X-Auth-Token` (default: none, so
    /// token requests are refused with KMS.0302).
    pub token_public_key_file: Option<PathBuf>,
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
    /// "keymesh-domain-v1", created by `keymeshctl domain-key init`).
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

impl HuaweiConfig {
    /// Every problem, for `Config::validate` to report together.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(self.store_url.starts_with("sqlite:") || self.store_url.starts_with("postgres")) {
            errors.push("huawei.store_url: must start with sqlite: or postgres://".to_owned());
        }
        if !(100..=120_000).contains(&self.deadline_ms) {
            errors.push("huawei.deadline_ms: must be 100..=120000".to_owned());
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
        if self.purge_interval_ms < 100 {
            errors.push("huawei.purge_interval_ms: must be at least 100".to_owned());
        }
        errors
    }
}

mod d {
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
