//! Customer master keys (CMKs) kept outside the HSM, wrapped under an
//! HSM-resident domain key, and the per-process cache of their unwrapped
//! session objects.
//!
//! A CMK is generated inside the HSM as a session object, wrapped once with
//! CKM_AES_KEY_WRAP_PAD (RFC 5649) under the domain key, and destroyed: the
//! wrapped bytes go to the caller's database. Any worker whose token holds
//! the domain key can therefore serve any CMK, by unwrapping it into a session
//! object (sensitive, non-extractable, encrypt/decrypt only) and running
//! AES-GCM on that. CMK plaintext never leaves the HSM.
//!
//! Unwrapped keys are cached per process, keyed by SHA-256(length of the
//! wrapping key label ‖ label ‖ wrapped bytes). The key is the content, so an entry can never be
//! stale: a different key is a different entry. The objects belong to a
//! [`Keeper`] session of their own (see [`crate::key_cache`] for the handle
//! lifecycle this gives: shared by every session thread, never used after the
//! keeper session dies, destroyed once no job holds them). The cache is
//! bounded (least recently used evicted) and entries idle for
//! [`UnwrappedKeyOptions::idle`] are dropped by a periodic sweep
//! ([`spawn_sweeper`]), destroying their objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{KeyType, ObjectHandle};
use cryptoki::session::Session;

use crate::error::Error;
use crate::hsm::{self, Hsm};
use crate::key_cache::{Keeper, KeeperObject};
use crate::metrics;
use crate::pool::Pool;

/// Default bound on cached unwrapped keys.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Default idle time after which an unwrapped key is destroyed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);
/// RFC 5649 output for a 32-byte key: one 8-byte integrity block plus the key.
pub const WRAPPED_LEN: usize = 40;
/// Longest accepted wrapping-key label.
pub const MAX_LABEL_LEN: usize = 128;
/// What the AES-GCM helpers print for a vault key in their errors: the CMK
/// has no name the worker knows.
pub const VAULT_KEY_ID: &str = "(wrapped key)";

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

/// A wrapped CMK as a request names it.
#[derive(Clone, Copy)]
pub struct WrappedKeyRef<'a> {
    /// CKA_LABEL of the domain key it is wrapped under.
    pub wrapping_key: &'a str,
    pub wrapped: &'a [u8],
}

impl std::fmt::Debug for WrappedKeyRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKeyRef")
            .field("wrapping_key", &self.wrapping_key)
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

/// Whether `label` can name a domain key: 1-128 bytes, no NUL (C tools
/// would cut the label there).
pub fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("wrapping key label is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return Err("wrapping key label is longer than 128 bytes");
    }
    if label.contains('\0') {
        return Err("wrapping key label contains a NUL byte");
    }
    Ok(())
}

/// A label a domain key may be created or configured under: well-formed and
/// in the wrapping-key class ([`keymesh_common::labels::is_wrapping_key`]),
/// the only labels the KeyVault service accepts.
pub fn check_domain_key_label(label: &str) -> Result<(), String> {
    check_label(label).map_err(str::to_owned)?;
    if !keymesh_common::labels::is_wrapping_key(label) {
        return Err(format!(
            "{label:?} must start with {:?} (the wrapping-key label class)",
            keymesh_common::labels::WRAPPING_KEY_PREFIX
        ));
    }
    Ok(())
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

/// A session object destroyed when dropped: the temporary CMK of
/// [`generate_wrapped`] and the halves of a data key pair.
pub(crate) struct SessionObject<'a> {
    session: &'a Session,
    pub handle: ObjectHandle,
}

impl<'a> SessionObject<'a> {
    pub(crate) fn new(session: &'a Session, handle: ObjectHandle) -> Self {
        Self { session, handle }
    }
}

impl Drop for SessionObject<'_> {
    fn drop(&mut self) {
        // A failure leaves a session object that dies with the session.
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::debug!(error = %e, "cannot destroy a temporary session object");
        }
    }
}

/// GenerateKey: a new AES-256 CMK generated in the HSM, returned wrapped
/// under the domain key `wrapping_key`. The CMK exists unwrapped only as a
/// session object for the length of this call.
pub fn generate_wrapped(session: &Session, wrapping_key: &str) -> Result<Vec<u8>, Error> {
    let domain = hsm::find_domain_key(session, wrapping_key)?;
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &hsm::new_vault_key_template())
        .map_err(Error::Hsm)?;
    let key = SessionObject::new(session, key);
    let wrapped = session
        .wrap_key(&hsm::WRAP_MECHANISM, domain, key.handle)
        .map_err(|e| Error::from_pkcs11(e, wrapping_key))?;
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::HsmOutput("AES key wrap output is not 40 bytes"));
    }
    Ok(wrapped)
}

/// Bytes of the domain key check value (16 hex digits).
pub const KCV_LEN: usize = 8;

/// The key check value (KCV) of the domain key labelled `label`: lower-case
/// hex of the first [`KCV_LEN`] bytes of the AES Key Wrap with Padding
/// (RFC 5649, deterministic) of a fixed 32-byte all-zero AES key under it,
/// computed in the HSM. The domain key may only wrap and unwrap, so the
/// classic KCV (ECB-encrypt a zero block) is not allowed on it; wrapping a
/// known key is, and works on every domain key ever created, with no new
/// attribute. Two keys share a KCV only by a 2^-64 accident; the known-key
/// wrap tells nothing useful about the key (AES under a known plaintext).
pub fn domain_key_check(session: &Session, label: &str) -> Result<String, Error> {
    let domain = hsm::find_domain_key(session, label)?;
    let template = vec![
        cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
        cryptoki::object::Attribute::KeyType(KeyType::AES),
        cryptoki::object::Attribute::Token(false),
        cryptoki::object::Attribute::Private(true),
        cryptoki::object::Attribute::Sensitive(false),
        cryptoki::object::Attribute::Extractable(true),
        cryptoki::object::Attribute::Label(b"keymesh-kcv".to_vec()),
        cryptoki::object::Attribute::Encrypt(false),
        cryptoki::object::Attribute::Decrypt(false),
        cryptoki::object::Attribute::Wrap(false),
        cryptoki::object::Attribute::Unwrap(false),
        cryptoki::object::Attribute::Sign(false),
        cryptoki::object::Attribute::Verify(false),
        cryptoki::object::Attribute::Derive(false),
        cryptoki::object::Attribute::Value(vec![0u8; 32]),
    ];
    let known = session.create_object(&template).map_err(Error::Hsm)?;
    let known = SessionObject::new(session, known);
    let wrapped = session
        .wrap_key(&hsm::WRAP_MECHANISM, domain, known.handle)
        .map_err(|e| Error::from_pkcs11(e, label))?;
    let kcv = wrapped
        .get(..KCV_LEN)
        .ok_or(Error::HsmOutput("AES key wrap output is too short"))?;
    Ok(kcv.iter().map(|b| format!("{b:02x}")).collect())
}

/// Unwrap `key` on `session` into a session object that can encrypt and
/// decrypt, checking it is an AES-256 key.
fn unwrap_on(session: &Session, key: WrappedKeyRef<'_>) -> Result<ObjectHandle, Error> {
    let domain = hsm::find_domain_key(session, key.wrapping_key)?;
    let handle = session
        .unwrap_key(
            &hsm::WRAP_MECHANISM,
            domain,
            key.wrapped,
            &hsm::unwrapped_vault_key_template(),
        )
        .map_err(|e| Error::from_pkcs11(e, key.wrapping_key))?;
    // SoftHSM2 reports CKA_VALUE_LEN 0 for unwrapped keys (measured), so the
    // length is checked where the HSM reports one; otherwise the 40-byte
    // blob (RFC 5649 authenticates the length too) bounds it to 25..=32
    // bytes, of which only 32 is an AES key the HSM will use.
    let checked = match hsm::key_info(session, handle) {
        Ok(info)
            if info.key_type == Some(KeyType::AES)
                && matches!(info.value_len, None | Some(0) | Some(32)) =>
        {
            return Ok(handle);
        }
        Ok(_) => Error::InvalidKeyMaterial {
            label: key.wrapping_key.to_owned(),
            problem: "it is not an AES-256 key",
            source: None,
        },
        Err(e) => Error::from_pkcs11(e, key.wrapping_key),
    };
    if let Err(e) = session.destroy_object(handle) {
        tracing::warn!(error = %e, "cannot destroy a rejected unwrapped key");
    }
    Err(checked)
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
            return Err(Error::InvalidKeyMaterial {
                label: key.wrapping_key.to_owned(),
                problem: "a wrapped AES-256 key is 40 bytes",
                source: None,
            });
        }
        let started = Instant::now();
        let made = self
            .keeper
            .on_session(|s| unwrap_on(s, key))
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
    /// session thread, see [`spawn_sweeper`]).
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

/// Sweep idle unwrapped keys every `every` until aborted. The sweep runs as
/// a pool job, since destroying objects calls the HSM; a full queue skips a
/// round.
pub fn spawn_sweeper(pool: Pool, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = pool.sweep_unwrapped().await {
                tracing::debug!(error = %e, "unwrapped-key sweep skipped");
            }
        }
    })
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
    fn labels() {
        assert!(check_label("keymesh-domain-v1").is_ok());
        assert!(check_label("").is_err());
        assert!(check_label("a\0b").is_err());
        assert!(check_label(&"a".repeat(129)).is_err());
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

    #[test]
    fn debug_hides_wrapped_bytes() {
        let d = format!("{:?}", key("dk", &[7; 40]));
        assert!(d.contains("wrapped_len: 40") && !d.contains("7, 7"), "{d}");
    }
}
