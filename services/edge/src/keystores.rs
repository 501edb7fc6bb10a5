//! Logical key stores: one per XKS URI path, each with its own SigV4
//! credentials and key namespace.
//!
//! The file is JSON, written by `keymeshctl credential ...` and hot-reloaded by
//! the edge (file watch or SIGHUP), so credentials rotate without a restart:
//!
//! ```json
//! { "keystores": [ {
//!     "uri_path": "/demo/kms/xks/v1",
//!     "key_ids": ["*"],
//!     "credentials": [ { "access_key_id": "…", "secret_access_key": "…",
//!                        "created_at": "2026-11-22T10:00:00Z" } ] } ] }
//! ```

use std::collections::HashMap;

use base64::Engine as _;
use keymesh_common::Secret;
use serde::{Deserialize, Serialize};

use crate::glob::glob_match;

/// The fixed tail of every v1 XKS URI path.
pub const XKS_SUFFIX: &str = "/kms/xks/v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoresFile {
    #[serde(default)]
    pub keystores: Vec<KeystoreEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreEntry {
    /// `XksProxyUriPath`: `[/<prefix>]/kms/xks/v1`, ≤ 128 chars of `a-zA-Z0-9/-_`.
    pub uri_path: String,
    /// External key ids this key store may use (wildcards `*`, `?`). Default: all.
    #[serde(default = "all_keys")]
    pub key_ids: Vec<String>,
    /// Accepted SigV4 credentials (at least two during a rotation).
    #[serde(default)]
    pub credentials: Vec<Credential>,
}

fn all_keys() -> Vec<String> {
    vec!["*".to_owned()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// 20–30 chars of `A-Z2-7`.
    pub access_key_id: String,
    /// 43–64 chars of `A-Za-z0-9+/=`, ≥ 256 bits of entropy.
    pub secret_access_key: Secret,
    /// RFC 3339 creation time (informational; used to pick the oldest on rotate).
    #[serde(default)]
    pub created_at: String,
}

impl Credential {
    /// A fresh credential: 16 random bytes as Base32 (26 chars) for the id,
    /// 32 random bytes as Base64 (44 chars) for the secret.
    pub fn generate() -> anyhow::Result<Self> {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut id = [0u8; 16];
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill(&mut id)
            .map_err(|_| anyhow::anyhow!("system RNG failed"))?;
        rng.fill(secret.as_mut())
            .map_err(|_| anyhow::anyhow!("system RNG failed"))?;
        let created_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?;
        Ok(Self {
            access_key_id: base32(&id),
            secret_access_key: Secret::new(
                base64::engine::general_purpose::STANDARD.encode(secret.as_ref()),
            ),
            created_at,
        })
    }
}

/// RFC 4648 Base32 without padding (the alphabet XKS access key ids use).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

pub fn valid_uri_path(p: &str) -> bool {
    p.len() <= 128
        && p.ends_with(XKS_SUFFIX)
        && p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
        && !p.contains("//")
}

pub fn valid_access_key_id(id: &str) -> bool {
    (20..=30).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

pub fn valid_secret(s: &str) -> bool {
    (43..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

impl KeystoresFile {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let file: Self = serde_json::from_slice(bytes)?;
        file.validate()?;
        Ok(file)
    }

    /// Every problem at once, so an operator fixes the file in one go.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        let mut paths = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for ks in &self.keystores {
            if !valid_uri_path(&ks.uri_path) {
                errors.push(format!("invalid uri_path {:?}", ks.uri_path));
            }
            if !paths.insert(ks.uri_path.as_str()) {
                errors.push(format!("duplicate uri_path {:?}", ks.uri_path));
            }
            for c in &ks.credentials {
                if !valid_access_key_id(&c.access_key_id) {
                    errors.push(format!(
                        "{}: invalid access_key_id {:?}",
                        ks.uri_path, c.access_key_id
                    ));
                }
                if !valid_secret(c.secret_access_key.expose()) {
                    errors.push(format!(
                        "{}: secret of {} is not 43-64 chars of A-Za-z0-9+/=",
                        ks.uri_path, c.access_key_id
                    ));
                }
                if !ids.insert(c.access_key_id.as_str()) {
                    errors.push(format!("access_key_id {} is used twice", c.access_key_id));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", errors.join("; "))
        }
    }

    pub fn to_json(&self) -> anyhow::Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    pub fn keystore_mut(&mut self, uri_path: &str) -> Option<&mut KeystoreEntry> {
        self.keystores.iter_mut().find(|k| k.uri_path == uri_path)
    }
}

/// The console configuration JSON KMS accepts for a key store.
pub fn console_config(uri_path: &str, cred: &Credential) -> serde_json::Value {
    serde_json::json!({
        "XksProxyUriPath": uri_path,
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": cred.access_key_id,
            "RawSecretAccessKey": cred.secret_access_key.expose(),
        }
    })
}

/// The edge's lookup view of the file: by URI path, then by access key id.
#[derive(Debug, Default)]
pub struct Keystores {
    by_path: HashMap<String, Keystore>,
}

#[derive(Debug)]
pub struct Keystore {
    pub uri_path: String,
    key_ids: Vec<String>,
    credentials: HashMap<String, Secret>,
}

impl Keystore {
    pub fn secret_for(&self, access_key_id: &str) -> Option<&Secret> {
        self.credentials.get(access_key_id)
    }

    pub fn allows_key(&self, key_id: &str) -> bool {
        self.key_ids.iter().any(|p| glob_match(p, key_id))
    }
}

impl Keystores {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        Ok(Self::from(KeystoresFile::parse(bytes)?))
    }

    pub fn get(&self, uri_path: &str) -> Option<&Keystore> {
        self.by_path.get(uri_path)
    }
}

impl From<KeystoresFile> for Keystores {
    fn from(file: KeystoresFile) -> Self {
        let by_path = file
            .keystores
            .into_iter()
            .map(|ks| {
                let credentials = ks
                    .credentials
                    .into_iter()
                    .map(|c| (c.access_key_id, c.secret_access_key))
                    .collect();
                (
                    ks.uri_path.clone(),
                    Keystore {
                        uri_path: ks.uri_path,
                        key_ids: ks.key_ids,
                        credentials,
                    },
                )
            })
            .collect();
        Self { by_path }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_meet_the_spec() {
        let c = Credential::generate().unwrap();
        assert!(valid_access_key_id(&c.access_key_id), "{}", c.access_key_id);
        assert!(valid_secret(c.secret_access_key.expose()));
        assert_eq!(c.access_key_id.len(), 26);
        assert_eq!(c.secret_access_key.expose().len(), 44);
    }

    #[test]
    fn base32_rfc4648_vectors() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn uri_paths() {
        assert!(valid_uri_path("/kms/xks/v1"));
        assert!(valid_uri_path("/tenant-a/kms/xks/v1"));
        assert!(!valid_uri_path("/tenant.a/kms/xks/v1"));
        assert!(!valid_uri_path("/tenant/kms/xks/v2"));
        assert!(!valid_uri_path(&format!("/{}/kms/xks/v1", "a".repeat(120))));
    }

    #[test]
    fn validation_reports_every_problem() {
        let f = KeystoresFile::parse(
            br#"{"keystores":[{"uri_path":"/x","credentials":[{"access_key_id":"lower","secret_access_key":"short"}]}]}"#,
        );
        let msg = f.unwrap_err().to_string();
        assert!(
            msg.contains("uri_path") && msg.contains("access_key_id") && msg.contains("secret of")
        );
        assert!(!msg.contains("short"), "secrets never appear in errors");
    }
}
