//! `keystores.json`: the edge's logical XKS key stores, one per URI path,
//! each with its own SigV4 credentials and key namespace.
//!
//! Written by `keymeshctl credential ...` and `keymeshctl key
//! create|assign|unassign` ([`write()`]: validated, atomic, mode 0600), and
//! hot-reloaded by the edge (file watch or SIGHUP), which builds its lookup
//! view from [`KeystoresFile`], so credentials rotate and keys move without a
//! restart:
//!
//! ```json
//! { "keystores": [ {
//!     "uri_path": "/demo/kms/xks/v1",
//!     "key_ids": ["demo-encrypt-decrypt", "ledger-*"],
//!     "credentials": [ { "access_key_id": "…", "secret_access_key": "…",
//!                        "created_at": "2026-11-22T10:00:00Z" } ] } ] }
//! ```
//!
//! A key store serves only the keys its `key_ids` name (ids or `*`/`?`
//! patterns; none by default), and never a keymesh-internal label
//! ([`keymesh_common::labels`]): such patterns are refused here. A catch-all
//! pattern (`"*"`, written by keymeshctl before key stores were isolated) is
//! valid in the file; whether it matches is the edge's decision
//! (`allow_wildcard_keystores`).
//!
//! [`Keystores`] is the lookup view the edge serves from: by URI path, then
//! by access key id, and which keys a store serves ([`Keystore::allows_key`]:
//! its patterns, as [`crate::glob`] reads them, and never an internal label,
//! whatever the patterns say; anything else is answered exactly like a
//! missing key).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use keymesh_common::Secret;
use keymesh_common::labels;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::glob::glob_match;

/// Unix mode of files holding secrets (the key-stores file, a console
/// configuration): readable by their owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;

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
    /// External key ids this key store serves (ids, or patterns with `*`
    /// and `?`). Default: none. Reserved (keymesh-internal) labels never
    /// match; a catch-all pattern matches only with
    /// `allow_wildcard_keystores`.
    #[serde(default)]
    pub key_ids: Vec<String>,
    /// Accepted SigV4 credentials (at least two during a rotation).
    #[serde(default)]
    pub credentials: Vec<Credential>,
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

/// Whether `pattern` has no literal character: it matches every key id (of
/// some length), the legacy "all keys" entry.
pub fn is_catch_all(pattern: &str) -> bool {
    pattern.contains('*') && pattern.chars().all(|c| c == '*' || c == '?')
}

/// A `key_ids` entry: 1–128 characters of the XKS key-id grammar
/// (`A-Za-z0-9-._`) or the wildcards `*` and `?`, and not in the reserved
/// label space (such a pattern could only name internal objects).
pub fn check_key_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 128 {
        return Err(format!("{pattern:?} must be 1-128 characters"));
    }
    if !pattern
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*' | b'?'))
    {
        return Err(format!(
            "{pattern:?} may only contain A-Z a-z 0-9 - . _ and the wildcards * ?"
        ));
    }
    if labels::is_reserved(pattern) {
        return Err(format!(
            "{pattern:?} is in the reserved prefix {:?} of keymesh-internal objects",
            labels::RESERVED_PREFIX
        ));
    }
    Ok(())
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
            for k in &ks.key_ids {
                if let Err(e) = check_key_pattern(k) {
                    errors.push(format!("{}: key_ids: {e}", ks.uri_path));
                }
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

    /// Add `key_id` (an id or a pattern) to the key store at `uri_path`.
    /// `Ok(false)`: it was already there (assigning is idempotent).
    pub fn assign(&mut self, uri_path: &str, key_id: &str) -> anyhow::Result<bool> {
        check_key_pattern(key_id).map_err(|e| anyhow::anyhow!("{e}"))?;
        if is_catch_all(key_id) {
            anyhow::bail!(
                "{key_id:?} would serve every key on the token; assign key ids or a pattern with a fixed part (e.g. \"ledger-*\")"
            );
        }
        let ks = self.keystore_mut(uri_path).ok_or_else(|| {
            anyhow::anyhow!("no key store {uri_path:?} (create it with `credential create`)")
        })?;
        if ks.key_ids.iter().any(|k| k == key_id) {
            return Ok(false);
        }
        ks.key_ids.push(key_id.to_owned());
        Ok(true)
    }

    /// Remove `key_id` (exactly as assigned) from the key store at
    /// `uri_path`. `Ok(false)`: it was not there.
    pub fn unassign(&mut self, uri_path: &str, key_id: &str) -> anyhow::Result<bool> {
        let ks = self
            .keystore_mut(uri_path)
            .ok_or_else(|| anyhow::anyhow!("no key store {uri_path:?}"))?;
        let before = ks.key_ids.len();
        ks.key_ids.retain(|k| k != key_id);
        Ok(ks.key_ids.len() != before)
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

/// Read the file; a missing file is an empty one (no key store yet).
pub fn read(path: &Path) -> anyhow::Result<KeystoresFile> {
    match std::fs::read(path) {
        Ok(bytes) => {
            KeystoresFile::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeystoresFile::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Replace the file atomically with mode [`SECRET_FILE_MODE`] (it holds
/// SigV4 secrets). Never writes a file the edge would refuse to load.
pub fn write(path: &Path, file: &KeystoresFile) -> anyhow::Result<()> {
    file.validate()?;
    write_atomic(path, &file.to_json()?, Some(SECRET_FILE_MODE))
}

/// The lookup view of the file: by URI path, then by access key id.
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
        Self::parse_with(bytes, false, |_, _| {})
    }

    /// The file; catch-all patterns (`"*"`) match only when
    /// `allow_wildcard` (edge.toml `allow_wildcard_keystores`). Either way
    /// `on_catch_all(uri_path, pattern)` hears of the first one in each
    /// store that has one, so the edge can name it in a warning at start and
    /// every reload.
    pub fn parse_with(
        bytes: &[u8],
        allow_wildcard: bool,
        mut on_catch_all: impl FnMut(&str, &str),
    ) -> anyhow::Result<Self> {
        let mut file = KeystoresFile::parse(bytes)?;
        for ks in &mut file.keystores {
            let Some(p) = ks.key_ids.iter().find(|p| is_catch_all(p)) else {
                continue;
            };
            on_catch_all(&ks.uri_path, p);
            if !allow_wildcard {
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
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

    fn store(key_ids: &str) -> String {
        format!(
            r#"{{"keystores":[{{"uri_path":"/a/kms/xks/v1","key_ids":{key_ids}}},{{"uri_path":"/b/kms/xks/v1"}}]}}"#
        )
    }

    #[test]
    fn catch_alls_are_recognised() {
        for p in ["*", "**", "?*"] {
            assert!(is_catch_all(p), "{p}");
            // Valid in the file: the edge decides whether it matches.
            KeystoresFile::parse(store(&format!("[{p:?}]")).as_bytes()).unwrap();
        }
        for p in ["*-v1", "k*", "?", "k1"] {
            assert!(!is_catch_all(p), "{p}");
        }
    }

    #[test]
    fn reserved_or_malformed_patterns_are_refused() {
        for bad in [
            r#"["keymesh-domain-v1"]"#,
            r#"["keymesh-*"]"#,
            r#"[""]"#,
            r#"["a/b"]"#,
        ] {
            let e = KeystoresFile::parse(store(bad).as_bytes()).unwrap_err();
            assert!(e.to_string().contains("key_ids"), "{bad}: {e}");
        }
    }

    #[test]
    fn assign_and_unassign_are_idempotent() {
        let mut f = KeystoresFile::parse(store("[]").as_bytes()).unwrap();
        assert!(f.assign("/a/kms/xks/v1", "k1").unwrap());
        assert!(!f.assign("/a/kms/xks/v1", "k1").unwrap());
        assert!(f.assign("/a/kms/xks/v1", "ledger-*").unwrap());
        assert!(f.assign("/a/kms/xks/v1", "*").is_err());
        assert!(f.assign("/a/kms/xks/v1", "keymesh-domain-v1").is_err());
        assert!(f.assign("/nope/kms/xks/v1", "k1").is_err());
        assert_eq!(f.keystores[0].key_ids, ["k1", "ledger-*"]);
        assert!(f.unassign("/a/kms/xks/v1", "k1").unwrap());
        assert!(!f.unassign("/a/kms/xks/v1", "k1").unwrap());
        assert_eq!(f.keystores[0].key_ids, ["ledger-*"]);
        f.validate().unwrap();
    }

    #[test]
    fn read_write_round_trip_private_and_valid_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystores.json");
        assert!(read(&path).unwrap().keystores.is_empty(), "missing = empty");
        let mut f = KeystoresFile::parse(store(r#"["k1"]"#).as_bytes()).unwrap();
        f.keystores[0]
            .credentials
            .push(Credential::generate().unwrap());
        write(&path, &f).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SECRET_FILE_MODE);
        let back = read(&path).unwrap();
        assert_eq!(back.keystores[0].key_ids, ["k1"]);
        assert_eq!(
            back.keystores[0].credentials[0].secret_access_key,
            f.keystores[0].credentials[0].secret_access_key
        );
        // An invalid file is never written.
        f.keystores[0].uri_path = "/bad".into();
        assert!(write(&path, &f).is_err());
        assert_eq!(read(&path).unwrap().keystores[0].uri_path, "/a/kms/xks/v1");
    }

    #[test]
    fn console_config_has_the_console_field_names() {
        let c = Credential::generate().unwrap();
        let v = console_config("/a/kms/xks/v1", &c);
        assert_eq!(v["XksProxyUriPath"], "/a/kms/xks/v1");
        assert_eq!(
            v["XksProxyAuthenticationCredential"]["AccessKeyId"],
            c.access_key_id.as_str()
        );
        assert_eq!(
            v["XksProxyAuthenticationCredential"]["RawSecretAccessKey"],
            c.secret_access_key.expose()
        );
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
            let mut heard = Vec::new();
            let on = Keystores::parse_with(store(p).as_bytes(), true, |ks, pat| {
                heard.push((ks.to_owned(), pat.to_owned()));
            })
            .unwrap();
            assert_eq!(heard.len(), 1, "{p}");
            assert_eq!(heard[0].0, "/a/kms/xks/v1");
            let a = on.get("/a/kms/xks/v1").unwrap();
            assert!(a.allows_key("k1"), "{p}");
            for internal in ["keymesh-domain-v1", "keymesh-health-check", "keymesh-x"] {
                assert!(!a.allows_key(internal), "{p} {internal}");
            }
        }
        // Patterns with a literal part are not catch-alls and need no opt-in,
        // but still never match internal labels.
        let k = Keystores::parse_with(store(r#"["*-v1","k*"]"#).as_bytes(), false, |ks, _| {
            panic!("{ks} has no catch-all")
        })
        .unwrap();
        let a = k.get("/a/kms/xks/v1").unwrap();
        assert!(a.allows_key("x-v1") && a.allows_key("k2"));
        assert!(!a.allows_key("keymesh-domain-v1"));
    }
}
