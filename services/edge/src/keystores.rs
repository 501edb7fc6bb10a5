//! The edge's live view of the key-stores file (`keystores.json`, whose
//! format, validation and writer are [`keymesh_contracts::keystores`]):
//! lookup by XKS URI path, then by access key id, and which keys a store
//! serves.
//!
//! The file is hot-reloaded (file watch or SIGHUP), so credentials rotate
//! and keys move without a restart.
//!
//! Isolation: a key store serves only the keys its `key_ids` name (ids or
//! `*`/`?` patterns; none by default). Anything else, and every
//! keymesh-internal label ([`keymesh_common::labels`]) whatever the patterns
//! say, is answered exactly like a missing key. A catch-all pattern (`"*"`,
//! written by keymeshctl before key stores were isolated) matches only with
//! the edge's `allow_wildcard_keystores = true`, and a warning names the
//! store at every load.

use std::collections::HashMap;

use keymesh_common::Secret;
use keymesh_common::labels;
use keymesh_contracts::keystores::{KeystoresFile, is_catch_all};

use crate::xks::glob::glob_match;

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

    /// Whether this key store serves `key_id`. Internal labels never match,
    /// whatever the patterns say: isolation must not rest on every pattern
    /// being written carefully.
    pub fn allows_key(&self, key_id: &str) -> bool {
        !labels::is_reserved(key_id) && self.key_ids.iter().any(|p| glob_match(p, key_id))
    }
}

impl Keystores {
    /// The file with catch-all patterns inert (the default).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        Self::parse_with(bytes, false)
    }

    /// The file; catch-all patterns (`"*"`) match only when
    /// `allow_wildcard` (edge.toml `allow_wildcard_keystores`). Either way a
    /// warning names each store that has one, at start and every reload.
    pub fn parse_with(bytes: &[u8], allow_wildcard: bool) -> anyhow::Result<Self> {
        let mut file = KeystoresFile::parse(bytes)?;
        for ks in &mut file.keystores {
            let Some(p) = ks.key_ids.iter().find(|p| is_catch_all(p)) else {
                continue;
            };
            if allow_wildcard {
                tracing::warn!(
                    keystore = %ks.uri_path, pattern = %p,
                    "key store serves every non-internal key on the token (allow_wildcard_keystores = true); assign its keys with `keymeshctl key assign` and remove the pattern"
                );
            } else {
                tracing::warn!(
                    keystore = %ks.uri_path, pattern = %p,
                    "catch-all key pattern ignored: key stores serve only assigned keys unless allow_wildcard_keystores = true; assign keys with `keymeshctl key assign`"
                );
                ks.key_ids.retain(|p| !is_catch_all(p));
            }
        }
        Ok(Self::from(file))
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

    fn store(key_ids: &str) -> String {
        format!(
            r#"{{"keystores":[{{"uri_path":"/a/kms/xks/v1","key_ids":{key_ids}}},{{"uri_path":"/b/kms/xks/v1"}}]}}"#
        )
    }

    #[test]
    fn a_store_serves_only_its_keys() {
        let k = Keystores::parse(store(r#"["k1","ledger-*"]"#).as_bytes()).unwrap();
        let a = k.get("/a/kms/xks/v1").unwrap();
        assert!(a.allows_key("k1"));
        assert!(a.allows_key("ledger-7"));
        assert!(!a.allows_key("k2"));
        // No key_ids: no key.
        let b = k.get("/b/kms/xks/v1").unwrap();
        assert!(!b.allows_key("k1"));
    }

    #[test]
    fn catch_all_needs_the_opt_in_and_never_reaches_internal_labels() {
        for p in [r#"["*"]"#, r#"["**"]"#, r#"["?*"]"#] {
            let off = Keystores::parse(store(p).as_bytes()).unwrap();
            assert!(!off.get("/a/kms/xks/v1").unwrap().allows_key("k1"), "{p}");
            let on = Keystores::parse_with(store(p).as_bytes(), true).unwrap();
            let a = on.get("/a/kms/xks/v1").unwrap();
            assert!(a.allows_key("k1"), "{p}");
            for internal in ["keymesh-domain-v1", "keymesh-health-check", "keymesh-x"] {
                assert!(!a.allows_key(internal), "{p} {internal}");
            }
        }
        // Patterns with a literal part are not catch-alls and need no opt-in,
        // but still never match internal labels.
        let k = Keystores::parse(store(r#"["*-v1","k*"]"#).as_bytes()).unwrap();
        let a = k.get("/a/kms/xks/v1").unwrap();
        assert!(a.allows_key("x-v1") && a.allows_key("k2"));
        assert!(!a.allows_key("keymesh-domain-v1"));
    }
}
