//! The per-process cache of unwrapped customer master keys (KeyVault).
//!
//! CMKs are kept outside the HSM, wrapped under an HSM-resident domain key
//! ([`keymesh_pkcs11::wrap`]); a request carries the wrapped bytes, and the
//! worker unwraps them into a session object to run AES-GCM on.
//!
//! Unwrapped keys are cached per process, keyed by SHA-256(length of the
//! wrapping key label ‖ label ‖ wrapped bytes). The key is the content, so an entry can never be
//! stale: a different key is a different entry. The objects belong to a
//! [`Keeper`] session of their own (see [`crate::key_cache`] for the handle
//! lifecycle this gives: shared by every session thread, never used after the
//! keeper session dies, destroyed once no job holds them). The cache is
//! bounded (least recently used evicted) and entries idle for
//! [`UnwrappedKeyOptions::idle`] are dropped by a periodic sweep
//! ([`crate::tasks::spawn_sweeper`]), destroying their objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymesh_pkcs11::wrap::{self, WRAPPED_LEN, WrappedKeyRef};
use keymesh_pkcs11::{Error as HsmError, Hsm};

use crate::error::Error;
use crate::key_cache::{Keeper, KeeperObject};
use crate::metrics;

/// Default bound on cached unwrapped keys.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Default idle time after which an unwrapped key is destroyed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// Bounds of the unwrapped-key cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwrappedKeyOptions {
    /// Most unwrapped keys held at once; the least recently used goes first.
    pub capacity: usize,
    /// An unwrapped key unused this long is destroyed at the next sweep.
    pub idle: Duration,
}

impl Default for UnwrappedKeyOptions {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            idle: DEFAULT_IDLE,
        }
    }
}

/// Cache key of a wrapped CMK: SHA-256(len(label) as u64 BE ‖ label ‖
/// wrapped). The length prefix keeps label and bytes apart whatever the
/// label holds, so lookups need no label check of their own. Computed once
/// per request ([`crate::pool::SessionCtx::with_unwrapped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub(crate) fn of(key: WrappedKeyRef<'_>) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&(key.wrapping_key.len() as u64).to_be_bytes());
        ctx.update(key.wrapping_key.as_bytes());
        ctx.update(key.wrapped);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

struct Entry {
    key: Arc<KeeperObject>,
    last_used: Instant,
}

/// The unwrapped CMKs of this process, shared by every session thread.
pub struct UnwrappedKeys {
    keeper: Arc<Keeper>,
    options: UnwrappedKeyOptions,
    entries: Mutex<HashMap<Fingerprint, Entry>>,
}

impl std::fmt::Debug for UnwrappedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnwrappedKeys")
            .field("options", &self.options)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl UnwrappedKeys {
    /// Opens the keeper session that will own the unwrapped keys now, so a
    /// broken setup fails at start.
    pub fn new(hsm: &Arc<Hsm>, options: UnwrappedKeyOptions) -> Result<Self, Error> {
        Ok(Self {
            keeper: Keeper::open(Arc::clone(hsm))?,
            options,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Entry>> {
        // Entries are inserted and removed whole: a poisoned map is consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keeper(&self) -> &Arc<Keeper> {
        &self.keeper
    }

    /// Unwrapped keys held now.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unwrapped object of `key` (whose [`Fingerprint`] is
    /// `fingerprint`): cached, or unwrapped now on the keeper session
    /// (blocking: session threads only).
    pub(crate) fn get(
        &self,
        key: WrappedKeyRef<'_>,
        fingerprint: Fingerprint,
    ) -> Result<Arc<KeeperObject>, Error> {
        if let Some(entry) = self.entries().get_mut(&fingerprint) {
            entry.last_used = Instant::now();
            return Ok(Arc::clone(&entry.key));
        }
        if key.wrapped.len() != WRAPPED_LEN {
            return Err(HsmError::InvalidKeyMaterial {
                label: key.wrapping_key.to_owned(),
                problem: "a wrapped AES-256 key is 40 bytes",
                source: None,
            }
            .into());
        }
        let started = Instant::now();
        let made = self
            .keeper
            .on_session(|s| Ok(wrap::unwrap_on(s, key)?))
            .and_then(|made| made.ok_or(Error::SessionUnavailable));
        metrics::record_hsm("unwrap", started, &made);
        let (handle, generation) = made?;
        let object = KeeperObject::new(&self.keeper, handle, generation);
        let evicted = {
            let mut entries = self.entries();
            // Another thread may have unwrapped the same key meanwhile: keep
            // one (ours is destroyed on drop, outside the lock).
            if let Some(entry) = entries.get_mut(&fingerprint) {
                entry.last_used = Instant::now();
                return Ok(Arc::clone(&entry.key));
            }
            let evicted = if entries.len() >= self.options.capacity.max(1) {
                // O(n) only on a miss with a full cache, next to an unwrap
                // that costs far more.
                entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(f, _)| *f)
                    .and_then(|f| entries.remove(&f))
            } else {
                None
            };
            entries.insert(
                fingerprint,
                Entry {
                    key: Arc::clone(&object),
                    last_used: Instant::now(),
                },
            );
            evicted
        };
        // Destroyed outside the map lock (once no job holds it).
        drop(evicted);
        Ok(object)
    }

    /// Drop the entry `fingerprint` if it still holds `object` (whose handle
    /// turned out stale or dead), so the next [`Self::get`] unwraps again.
    pub(crate) fn forget(&self, fingerprint: Fingerprint, object: &Arc<KeeperObject>) {
        let removed = {
            let mut entries = self.entries();
            match entries.get(&fingerprint) {
                Some(e) if Arc::ptr_eq(&e.key, object) => entries.remove(&fingerprint),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Drop every entry unused for [`UnwrappedKeyOptions::idle`] at `now`;
    /// returns how many. Destroys their objects (blocking: run it on a
    /// session thread, see [`crate::tasks::spawn_sweeper`]).
    pub fn sweep(&self, now: Instant) -> usize {
        let idle = self.options.idle;
        let evicted: Vec<Entry> = {
            let mut entries = self.entries();
            let old: Vec<Fingerprint> = entries
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.last_used) >= idle)
                .map(|(f, _)| *f)
                .collect();
            old.iter().filter_map(|f| entries.remove(f)).collect()
        };
        let n = evicted.len();
        drop(evicted);
        if n > 0 {
            tracing::debug!(evicted = n, "destroyed idle unwrapped keys");
        }
        n
    }
}

/// How often the background sweep looks for idle unwrapped keys: a small
/// fraction of the idle time, at most a minute.
pub fn sweep_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn key<'a>(label: &'a str, wrapped: &'a [u8]) -> WrappedKeyRef<'a> {
        WrappedKeyRef {
            wrapping_key: label,
            wrapped,
        }
    }

    #[test]
    fn fingerprints_separate_label_and_bytes() {
        let a = Fingerprint::of(key("ab", b"c"));
        assert_eq!(a, Fingerprint::of(key("ab", b"c")));
        assert_ne!(a, Fingerprint::of(key("a", b"bc")));
        assert_ne!(a, Fingerprint::of(key("ab", b"d")));
        // Unchecked labels cannot collide either (no separator byte to forge).
        assert_ne!(
            Fingerprint::of(key("a\0", b"\0x")),
            Fingerprint::of(key("a", b"\0\0x"))
        );
    }

    #[test]
    fn sweep_intervals() {
        assert_eq!(sweep_interval(DEFAULT_IDLE), Duration::from_secs(60));
        assert_eq!(
            sweep_interval(Duration::from_millis(1)),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }
}
