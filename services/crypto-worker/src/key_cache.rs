//! Customer keys cached by label, optionally with a per-process session-object
//! copy of each key that the crypto runs on.
//!
//! Why copies: SoftHSM2 re-checks its file store on every operation that uses
//! a token object (~60k AES-GCM ops/s for 32 B); the same key held as a
//! session object (CKA_TOKEN=false) does ~178k (FIELD-NOTES). `C_CopyObject`
//! with a template of only CKA_TOKEN=false inherits every other attribute, and
//! each copy is checked after creation: same CKA_SENSITIVE, CKA_EXTRACTABLE,
//! usage flags, type, length and (when reported) check value as its source.
//! A copy that does not match is destroyed and the key served from the token.
//!
//! Lifecycle, which copies must not weaken:
//! * Session objects die with the session that created them. Copies are made
//!   on one long-lived [`Keeper`] session that the pool owns and never uses
//!   for crypto. Session objects are visible to every session of the process,
//!   so all session threads share one copy per key.
//! * A copy is an independent object: deleting the token key does not
//!   invalidate it. So every cached key is re-found by label at most every
//!   `revalidate` (min 1 s): gone → KEY_NOT_FOUND and the copy is destroyed;
//!   a different object, usage or check value → a fresh copy. A key deleted or
//!   re-created elsewhere therefore stops being served from the old copy
//!   within `revalidate`.
//! * A copy is destroyed when the last cache entry or in-flight job holding
//!   it lets go (`Drop`), never under a job still using it.
//! * If the keeper session is lost, its copies are gone and the HSM may hand
//!   their handles out again (real HSMs reuse handles). The keeper carries a
//!   generation, bumped on replacement; a job holds the generation read lock
//!   while it uses a copy handle and checks the copy is of the current
//!   generation, so a handle of a dead copy is never used.
//! * If the token refuses to copy a key (CKA_COPYABLE=false,
//!   CKR_ACTION_PROHIBITED, ...), that key object is served from the token
//!   handle, and the refusal is remembered until the object changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use cryptoki::error::Error as Pkcs11Error;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use crate::error::Error;
use keymesh_pkcs11::keys::{self, KeyInfo, KeyProtection};
use keymesh_pkcs11::{Hsm, Recovery};

/// Default for `--key-revalidate-secs`.
pub const DEFAULT_REVALIDATE: Duration = Duration::from_secs(5);

/// How the pool caches keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheOptions {
    /// Run the crypto on session-object copies of the token keys.
    pub session_copies: bool,
    /// Longest time a cached key is used without re-finding it on the token.
    pub revalidate: Duration,
}

impl Default for KeyCacheOptions {
    fn default() -> Self {
        Self {
            session_copies: true,
            revalidate: DEFAULT_REVALIDATE,
        }
    }
}

fn lost(err: &Pkcs11Error) -> bool {
    keymesh_pkcs11::recovery(err) == Recovery::Reopen
}

fn stale(err: &Pkcs11Error) -> bool {
    keymesh_pkcs11::recovery(err) == Recovery::Refind
}

/// The long-lived session that owns the key copies. It is only used to
/// create, check and destroy copies, never for crypto.
pub struct Keeper {
    hsm: Arc<Hsm>,
    /// Bumped whenever the keeper session is replaced. Read-locked while a job
    /// uses a copy handle; write-locked only to replace the session. Lock
    /// order: `generation`, then `session`.
    generation: RwLock<u64>,
    /// `None` after a replacement failed to open a session; retried on the
    /// next copy.
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("generation", &*self.generation())
            .finish_non_exhaustive()
    }
}

/// What a copy attempt produced.
enum Copied {
    Copy(Arc<KeeperObject>),
    /// The token will not copy this object (or the copy did not match it).
    Refused,
    /// No keeper session could be opened; try again at the next revalidation.
    Unavailable,
}

impl Keeper {
    /// Open the keeper session now, so a broken setup fails at start.
    pub fn open(hsm: Arc<Hsm>) -> Result<Arc<Self>, Error> {
        let session = hsm.open_ro_session().map_err(Error::hsm)?;
        Ok(Arc::new(Self {
            hsm,
            generation: RwLock::new(0),
            session: Mutex::new(Some(session)),
        }))
    }

    fn generation(&self) -> RwLockReadGuard<'_, u64> {
        // The lock guards a counter that is only ever incremented whole: a
        // poisoned lock still holds a meaningful value.
        self.generation.read().unwrap_or_else(|e| e.into_inner())
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the keeper session, unless someone already did since
    /// generation `observed`. Every copy dies with the old session.
    fn replace(&self, observed: u64) {
        let mut generation = self.generation.write().unwrap_or_else(|e| e.into_inner());
        if *generation != observed {
            return;
        }
        *generation += 1;
        let mut session = self.session();
        if let Some(old) = session.take() {
            // Usually already dead; closing makes sure its copies are gone.
            let _ = old.close();
        }
        match self.hsm.open_ro_session() {
            Ok(s) => {
                tracing::warn!("key-copy keeper session lost; opened a new one");
                *session = Some(s);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-open the key-copy keeper session");
            }
        }
    }

    /// Called after a session thread lost its session (token removed, login
    /// gone, ...): if the keeper went with it, replace it now, before that
    /// thread creates any object whose handle could collide with a dead copy.
    pub(crate) fn check_alive(&self) {
        let observed = *self.generation();
        let alive = match self.session().as_ref() {
            Some(s) => match s.get_session_info() {
                Ok(_) => true,
                Err(e) => !lost(&e),
            },
            None => false,
        };
        if !alive {
            self.replace(observed);
        }
    }

    /// Run `op` on the keeper session, so that the session objects it
    /// creates belong to the keeper. A lost keeper session is replaced once
    /// and `op` run again. `Ok(None)`: no keeper session could be opened.
    /// Otherwise `op`'s value and the generation it ran under (the one to
    /// give the [`KeeperObject`]s it created).
    pub(crate) fn on_session<T>(
        &self,
        mut op: impl FnMut(&Session) -> Result<T, Error>,
    ) -> Result<Option<(T, u64)>, Error> {
        for attempt in 0..2 {
            let generation = self.generation();
            let observed = *generation;
            let session = self.session();
            let result = match session.as_ref() {
                Some(s) => op(s),
                None => Err(Error::SessionUnavailable),
            };
            match result {
                Err(e)
                    if e.recovery() == Recovery::Reopen
                        || matches!(e, Error::SessionUnavailable) =>
                {
                    drop(session);
                    drop(generation);
                    if attempt == 0 {
                        self.replace(observed);
                        continue;
                    }
                    return match e {
                        Error::SessionUnavailable => Ok(None),
                        e => Err(e),
                    };
                }
                other => return other.map(|value| Some((value, observed))),
            }
        }
        Ok(None)
    }

    /// Hold the keeper generation: while the guard lives the keeper session
    /// cannot be replaced, so a [`KeeperObject`] found alive under it
    /// ([`KeeperObject::alive_under`]) stays alive.
    pub(crate) fn hold(&self) -> RwLockReadGuard<'_, u64> {
        self.generation()
    }

    /// Copy the token key `source` into a session object of the keeper and
    /// check that the copy is the same key with the same protection.
    /// `Err` only for a stale source handle (the key is gone: the caller
    /// re-finds it) or a keeper that stays lost after one replacement.
    fn copy(
        self: &Arc<Self>,
        key_id: &str,
        source: &KeyInfo,
        protection: &KeyProtection,
    ) -> Result<Copied, Error> {
        let made = self.on_session(|s| {
            let handle = match keys::copy_to_session_object(s, source.handle) {
                Ok(h) => h,
                Err(e) if lost(&e) || stale(&e) => return Err(Error::hsm(e)),
                Err(e) => {
                    tracing::info!(
                        key_id,
                        error = %e,
                        "the HSM will not copy this key to a session object; using the token object"
                    );
                    return Ok(None);
                }
            };
            if let Err(why) = check_copy(s, handle, source, protection) {
                // Never run crypto on an object that differs from the key the
                // operator created.
                tracing::warn!(
                    key_id,
                    why,
                    "session copy of the key does not match the token object; using the token object"
                );
                if let Err(e) = s.destroy_object(handle) {
                    tracing::warn!(key_id, error = %e, "cannot destroy a mismatching key copy");
                }
                return Ok(None);
            }
            tracing::debug!(key_id, "key copied to a session object");
            Ok(Some(handle))
        })?;
        Ok(match made {
            Some((Some(handle), generation)) => {
                Copied::Copy(KeeperObject::new(self, handle, generation))
            }
            Some((None, _)) => Copied::Refused,
            None => Copied::Unavailable,
        })
    }
}

/// Whether `copy` is a session object holding the same key, with the same
/// protection and usage, as `source`.
fn check_copy(
    session: &Session,
    copy: ObjectHandle,
    source: &KeyInfo,
    protection: &KeyProtection,
) -> Result<(), &'static str> {
    let info = keys::key_info(session, copy).map_err(|_| "cannot read the copy's attributes")?;
    let copied =
        keys::key_protection(session, copy).map_err(|_| "cannot read the copy's protection")?;
    if copied.token {
        return Err("the copy is a token object");
    }
    if !copied.same_key_as(protection) {
        return Err("CKA_SENSITIVE, CKA_EXTRACTABLE or CKA_CHECK_VALUE differ");
    }
    if (info.key_type, info.value_len, info.usage)
        != (source.key_type, source.value_len, source.usage)
    {
        return Err("key type, length or usage flags differ");
    }
    Ok(())
}

/// A session object owned by the keeper session: a key copy, or an
/// unwrapped customer master key ([`crate::wrapped`]). Destroyed on drop,
/// i.e. once no cache entry and no in-flight job holds it.
pub struct KeeperObject {
    handle: ObjectHandle,
    generation: u64,
    keeper: Arc<Keeper>,
}

impl std::fmt::Debug for KeeperObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperObject")
            .field("handle", &self.handle)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl KeeperObject {
    /// Take ownership of `handle`, created on `keeper`'s session under
    /// `generation` (from [`Keeper::on_session`]).
    pub(crate) fn new(keeper: &Arc<Keeper>, handle: ObjectHandle, generation: u64) -> Arc<Self> {
        Arc::new(Self {
            handle,
            generation,
            keeper: Arc::clone(keeper),
        })
    }

    /// The object's handle if it is still alive under `held` (a guard from
    /// [`Keeper::hold`] on the same keeper); `None` if it died with an
    /// earlier keeper session, whose handles the HSM may have reused.
    pub(crate) fn alive_under(&self, held: &RwLockReadGuard<'_, u64>) -> Option<ObjectHandle> {
        (**held == self.generation).then_some(self.handle)
    }
}

impl Drop for KeeperObject {
    fn drop(&mut self) {
        let generation = match self.keeper.generation.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // A replacement is under way (or queued): closing the old
            // session destroys this copy. Never block here: a drop may run
            // on a thread that already holds a read guard.
            Err(TryLockError::WouldBlock) => return,
        };
        if *generation != self.generation {
            // Died with an earlier keeper session; the handle may already
            // name another object.
            return;
        }
        if let Some(s) = self.keeper.session().as_ref()
            && let Err(e) = s.destroy_object(self.handle)
        {
            tracing::debug!(error = %e, "cannot destroy a key copy");
        }
    }
}

/// How crypto reaches a cached key.
#[derive(Debug, Clone)]
enum CopyState {
    /// Crypto uses this session copy.
    Copy(Arc<KeeperObject>),
    /// `--session-key-copies=false`: the token object.
    Off,
    /// The token refused to copy this object: the token object, and no new
    /// attempt until the object changes.
    Refused,
    /// No keeper session: the token object, copy again at revalidation.
    Unavailable,
}

/// One cached key.
#[derive(Debug)]
pub struct CachedKey {
    /// The token object, as found by label. Metadata and usage checks use it.
    pub token: KeyInfo,
    protection: KeyProtection,
    copy: CopyState,
    validated: Instant,
}

/// A copy handle checked to be alive, plus the guard that keeps it so: while
/// this exists the keeper session cannot be replaced.
pub struct CopyInUse<'a> {
    pub info: KeyInfo,
    _generation: RwLockReadGuard<'a, u64>,
}

/// What a job should run its crypto with.
pub enum CryptoKey<'a> {
    /// The token object (copies off, refused or unavailable).
    Token(&'a KeyInfo),
    /// The session copy, guarded.
    Copy(CopyInUse<'a>),
    /// The copy died with a replaced keeper session: refresh the entry.
    Dead,
}

impl CachedKey {
    /// Whether crypto runs on a session copy of this key.
    pub fn uses_copy(&self) -> bool {
        matches!(self.copy, CopyState::Copy(_))
    }

    /// The handle crypto should use: the copy when there is a live one (with
    /// `handle` swapped, everything else as on the token), else the token
    /// object.
    pub fn crypto_key(&self) -> CryptoKey<'_> {
        let CopyState::Copy(copy) = &self.copy else {
            return CryptoKey::Token(&self.token);
        };
        let generation = copy.keeper.generation();
        if *generation != copy.generation {
            return CryptoKey::Dead;
        }
        CryptoKey::Copy(CopyInUse {
            info: KeyInfo {
                handle: copy.handle,
                ..self.token.clone()
            },
            _generation: generation,
        })
    }
}

/// Keys by label, shared by every session thread: token-object handles and
/// session-object handles are valid in every session of the process. Misses
/// are not cached, so a key created after start is found on the next request.
#[derive(Debug)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
    options: KeyCacheOptions,
    /// Present when copies are on.
    keeper: Option<Arc<Keeper>>,
}

impl KeyCache {
    /// With copies on, opens the keeper session now.
    pub fn new(hsm: &Arc<Hsm>, options: KeyCacheOptions) -> Result<Self, Error> {
        let keeper = if options.session_copies {
            Some(Keeper::open(Arc::clone(hsm))?)
        } else {
            None
        };
        Ok(Self {
            keys: RwLock::new(HashMap::new()),
            options,
            keeper,
        })
    }

    pub fn options(&self) -> KeyCacheOptions {
        self.options
    }

    pub(crate) fn keeper(&self) -> Option<&Arc<Keeper>> {
        self.keeper.as_ref()
    }

    /// The cached entry if it was validated less than `revalidate` ago.
    pub(crate) fn fresh(
        &self,
        key_id: &str,
        now: Instant,
    ) -> Result<Arc<CachedKey>, Option<Arc<CachedKey>>> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // complete value; the map itself is still consistent.
        let map = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match map.get(key_id) {
            Some(e) if now.saturating_duration_since(e.validated) < self.options.revalidate => {
                Ok(Arc::clone(e))
            }
            other => Err(other.cloned()),
        }
    }

    /// Build (or renew) the entry for the token key just found as `token`
    /// with `protection`, reusing what `old` already has when it is the same
    /// object, and cache it.
    pub(crate) fn store(
        &self,
        key_id: &str,
        token: KeyInfo,
        protection: KeyProtection,
        old: Option<&CachedKey>,
        now: Instant,
    ) -> Result<Arc<CachedKey>, Error> {
        let same_object = old.filter(|o| o.token == token && o.protection == protection);
        let copy = match (&self.keeper, same_object.map(|o| &o.copy)) {
            (None, _) => CopyState::Off,
            (Some(_), Some(CopyState::Refused)) => CopyState::Refused,
            (Some(keeper), Some(CopyState::Copy(c))) if *keeper.generation() == c.generation => {
                CopyState::Copy(Arc::clone(c))
            }
            (Some(keeper), _) => {
                if let Some(o) = old.filter(|_| same_object.is_none()) {
                    tracing::info!(
                        key_id,
                        handle_changed = o.token.handle != token.handle,
                        "key changed on the token; refreshing its cache entry"
                    );
                }
                match keeper.copy(key_id, &token, &protection)? {
                    Copied::Copy(c) => CopyState::Copy(c),
                    Copied::Refused => CopyState::Refused,
                    Copied::Unavailable => CopyState::Unavailable,
                }
            }
        };
        let entry = Arc::new(CachedKey {
            token,
            protection,
            copy,
            validated: now,
        });
        let replaced = {
            let mut map = self.keys.write().unwrap_or_else(|e| e.into_inner());
            map.insert(key_id.to_owned(), Arc::clone(&entry))
        };
        // Dropped outside the map lock: the last reference to an old copy
        // destroys it on the keeper session.
        drop(replaced);
        Ok(entry)
    }

    /// Forget `key_id` (its copy is destroyed once no job uses it).
    pub(crate) fn remove(&self, key_id: &str) {
        let removed = {
            let mut map = self.keys.write().unwrap_or_else(|e| e.into_inner());
            map.remove(key_id)
        };
        drop(removed);
    }
}
