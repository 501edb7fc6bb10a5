//! The key-status file: which keys an operator has disabled.
//!
//! JSON `{"disabled": ["key-id", ...]}`, written atomically by `keymeshctl key
//! enable|disable` and polled by every worker (its live view is the worker's
//! `KeyStatusWatch`), so a key is disabled across the fleet within a second
//! without touching the HSM (PKCS#11 has no portable "disabled" attribute).
//! A missing file means every key is enabled.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStatusFile {
    /// Key ids (labels) that must not encrypt or decrypt.
    #[serde(default)]
    pub disabled: BTreeSet<String>,
}

impl KeyStatusFile {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn is_disabled(&self, key_id: &str) -> bool {
        self.disabled.contains(key_id)
    }

    pub fn to_json(&self) -> anyhow::Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

/// Read the file; a missing file is the empty (all enabled) state.
pub fn read(path: &Path) -> anyhow::Result<KeyStatusFile> {
    match std::fs::read(path) {
        Ok(bytes) => {
            KeyStatusFile::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyStatusFile::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Replace the file atomically: readers see the old or the new content,
/// never a torn write (they poll it every 500 ms).
pub fn write(path: &Path, file: &KeyStatusFile) -> anyhow::Result<()> {
    write_atomic(path, &file.to_json()?, None)
}

/// Read, apply `change`, write back. Returns what `change` returned.
/// Concurrent editors are not locked against each other: key status is an
/// operator action, run by one admin at a time.
pub fn modify<R>(path: &Path, change: impl FnOnce(&mut KeyStatusFile) -> R) -> anyhow::Result<R> {
    let mut file = read(path)?;
    let out = change(&mut file);
    write(path, &file)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn missing_file_means_all_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let f = read(&dir.path().join("status.json")).unwrap();
        assert!(!f.is_disabled("anything"));
    }

    #[test]
    fn modify_round_trips_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        modify(&path, |f| f.disabled.insert("k1".into())).unwrap();
        modify(&path, |f| f.disabled.insert("k2".into())).unwrap();
        let f = read(&path).unwrap();
        assert!(f.is_disabled("k1") && f.is_disabled("k2") && !f.is_disabled("k3"));
        let removed = modify(&path, |f| f.disabled.remove("k1")).unwrap();
        assert!(removed);
        assert_eq!(
            KeyStatusFile::parse(&std::fs::read(&path).unwrap()).unwrap(),
            KeyStatusFile {
                disabled: ["k2".to_owned()].into()
            }
        );
        // Only the target file is left behind: no temp files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn parses_the_documented_format() {
        let f = KeyStatusFile::parse(br#"{"disabled": ["a", "b"]}"#).unwrap();
        assert!(f.is_disabled("a"));
        assert!(KeyStatusFile::parse(b"{}").unwrap().disabled.is_empty());
        assert!(KeyStatusFile::parse(br#"{"disabled": "a"}"#).is_err());
        assert!(KeyStatusFile::parse(br#"{"enabled": []}"#).is_err());
    }

    #[test]
    fn unreadable_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(&path, b"not json").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("status.json"), "{e}");
    }
}
