//! The worker's live view of the key-status file (`key-status.json`: which
//! keys an operator has disabled).
//!
//! The format and its writer are [`keymesh_contracts::key_status`]
//! (`keymeshctl key enable|disable` writes it atomically); every worker polls
//! it, so a key is disabled across the fleet within a second without
//! touching the HSM. A missing file means every key is enabled.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keymesh_common::reload::Reloadable;
use keymesh_contracts::key_status::KeyStatusFile;

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
    use keymesh_contracts::key_status::modify;

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
}
