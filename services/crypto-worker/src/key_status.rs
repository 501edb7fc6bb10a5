//! The key-status file: which keys an operator has disabled.
//!
//! JSON `{"disabled": ["key-id", ...]}`, written atomically by `keymeshctl key
//! enable|disable` and polled by every worker, so a key is disabled across the
//! fleet within a second without touching the HSM (PKCS#11 has no portable
//! "disabled" attribute). A missing file means every key is enabled.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keymesh_common::reload::Reloadable;
use serde::{Deserialize, Serialize};

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

/// Write `bytes` to `path` via a temporary file in the same directory (so the
/// rename cannot cross file systems), fsync, then rename. `mode` sets Unix
/// permissions on the temporary file before any content is written.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} is not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        if let Some(mode) = mode {
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        if let Some(mode) = mode {
            // `mode` on open is filtered by the umask and ignored for an
            // existing leftover temp file: set it explicitly.
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// The worker's live view of the key-status file.
///
/// `Reloadable` needs the file to exist when it starts watching, but a
/// missing file is a valid state here ("all enabled", the file appears with
/// the first `keymeshctl key disable`). So until the file exists this polls
/// for it, then hands over to a `Reloadable` for good.
#[derive(Debug)]
pub struct KeyStatusWatch {
    path: Option<PathBuf>,
    live: OnceLock<Arc<Reloadable<KeyStatusFile>>>,
    empty: Arc<KeyStatusFile>,
}

impl KeyStatusWatch {
    /// Load `path` if present. A present but unparsable file is an error:
    /// the worker must not start with a status it cannot read.
    pub fn new(path: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let live = OnceLock::new();
        if let Some(p) = path.as_ref().filter(|p| p.exists()) {
            let _ = live.set(Reloadable::load(p.clone(), KeyStatusFile::parse)?);
        }
        Ok(Arc::new(Self {
            path,
            live,
            empty: Arc::new(KeyStatusFile::default()),
        }))
    }

    /// A fixed status (tests).
    pub fn fixed(status: KeyStatusFile) -> Arc<Self> {
        let live = OnceLock::new();
        let _ = live.set(Reloadable::fixed(status));
        Arc::new(Self {
            path: None,
            live,
            empty: Arc::new(KeyStatusFile::default()),
        })
    }

    pub fn get(&self) -> Arc<KeyStatusFile> {
        match self.live.get() {
            Some(r) => r.get(),
            None => Arc::clone(&self.empty),
        }
    }

    /// Keep the status fresh (polling every `interval`) until the returned
    /// task is aborted.
    pub fn spawn(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Some(path) = this.path.clone() else {
                return;
            };
            let mut tick = tokio::time::interval(interval);
            loop {
                if let Some(live) = this.live.get() {
                    // Aborting this task drops the guard, which stops the watch.
                    let mut watch = AbortOnDrop(live.spawn_watch(interval));
                    let _ = (&mut watch.0).await;
                    return;
                }
                tick.tick().await;
                if path.exists() {
                    match Reloadable::load(path.clone(), KeyStatusFile::parse) {
                        Ok(r) => {
                            tracing::info!(file = %path.display(), "key-status file appeared");
                            let _ = this.live.set(r);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "key-status file unreadable; all keys stay enabled")
                        }
                    }
                }
            }
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

    #[tokio::test]
    async fn watch_picks_up_a_file_created_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let watch = KeyStatusWatch::new(Some(path.clone())).unwrap();
        let task = watch.spawn(Duration::from_millis(20));
        assert!(!watch.get().is_disabled("k1"));
        modify(&path, |f| f.disabled.insert("k1".into())).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !watch.get().is_disabled("k1") {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // And later edits through the Reloadable.
        std::thread::sleep(Duration::from_millis(20)); // distinct mtime
        modify(&path, |f| f.disabled.clear()).unwrap();
        while watch.get().is_disabled("k1") {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    }

    #[test]
    fn broken_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(&path, b"not json").unwrap();
        assert!(KeyStatusWatch::new(Some(path)).is_err());
    }

    #[test]
    fn write_atomic_sets_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        write_atomic(&path, b"{}", Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
