//! Files that change while the service runs (credentials, policies, key status).
//!
//! A `Reloadable<T>` holds the last good parse of a file behind an `ArcSwap`
//! (readers never block) and reloads it when the file's modification time or
//! size changes (checked every `interval`) or on SIGHUP. A file that fails to
//! parse is logged and the previous version stays in force: a typo in a
//! credentials file must not lock every caller out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

/// Parses the file's bytes into `T`. A closure, so a parse can depend on
/// the service's own configuration (e.g. an opt-in flag).
pub type Parser<T> = Box<dyn Fn(&[u8]) -> anyhow::Result<T> + Send + Sync>;

pub struct Reloadable<T> {
    current: ArcSwap<T>,
    path: PathBuf,
    parse: Parser<T>,
}

impl<T> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("path", &self.path)
            .finish()
    }
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Load `path` now (an error here is fatal: the service must not start
    /// without its configuration) and keep it fresh in the background.
    pub fn load(
        path: impl Into<PathBuf>,
        parse: impl Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let path = path.into();
        let parse: Parser<T> = Box::new(parse);
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let value = parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(value),
            path,
            parse,
        }))
    }

    /// A fixed value that never reloads (tests, optional files left unset).
    pub fn fixed(value: T) -> Arc<Self> {
        fn never<T>(_: &[u8]) -> anyhow::Result<T> {
            anyhow::bail!("fixed value")
        }
        Arc::new(Self {
            current: ArcSwap::from_pointee(value),
            path: PathBuf::new(),
            parse: Box::new(never::<T>),
        })
    }

    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Re-read the file now; keeps the old value when it does not parse.
    pub fn reload(&self) -> bool {
        match std::fs::read(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|b| (self.parse)(&b))
        {
            Ok(v) => {
                self.current.store(Arc::new(v));
                tracing::info!(file = %self.path.display(), "reloaded");
                true
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "reload failed; keeping previous version");
                false
            }
        }
    }

    /// Watch the file until the returned task is dropped/aborted.
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        if self.path.as_os_str().is_empty() {
            return tokio::spawn(async {});
        }
        let this = Arc::clone(self);
        spawn_poll(vec![self.path.clone()], interval, move || {
            this.reload();
        })
    }
}

/// Call `on_change` whenever the modification time or size of any of `paths`
/// changes (checked every `interval`) or on SIGHUP, until the returned task is
/// dropped/aborted. The one polling loop behind every reloaded file, so a
/// multi-file value (a certificate, its key and its CA) reloads the same way
/// a single file does.
pub fn spawn_poll(
    paths: Vec<PathBuf>,
    interval: Duration,
    on_change: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let stamps = || paths.iter().map(|p| stamp(p)).collect::<Vec<_>>();
        let mut last = stamps();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = stamps();
            if forced || now != last {
                last = now;
                on_change();
            }
        }
    })
}
