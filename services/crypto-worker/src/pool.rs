//! The HSM session pool: N logged-in PKCS#11 sessions, each owned by a
//! dedicated OS thread, fed from one bounded job queue (plus an optional
//! slow lane; queues and threads in [`crate::lane`]).
//!
//! PKCS#11 calls block (and SoftHSM2 serialises on file locks), so they never
//! run on tokio executor threads. A gRPC handler hands a closure to
//! [`Pool::run`]; a session thread runs it with exclusive use of its session
//! ([`SessionCtx`]: the session, the key caches, the CSPRNG) and answers
//! over a oneshot. The queue is bounded so overload turns into an
//! immediate HSM_BUSY instead of unbounded latency. A failed call is
//! retried at most once, after [`crate::session::SessionSlot::after_failure`]
//! acted on [`keymesh_pkcs11::recovery`]'s decision (fresh session, or
//! forget a stale handle and find the key again).

use std::sync::Arc;
use std::time::Instant;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use ring::rand::SystemRandom;

use crate::error::Error;
use crate::key_cache::{CachedKey, CryptoKey, KeyCache, KeyCacheOptions};
use crate::lane::{self, Lane, SessionThread};
use crate::session::SessionSlot;
use crate::wrapped::{Fingerprint, UnwrappedKeyOptions, UnwrappedKeys};
use keymesh_pkcs11::keys::{self, KeyInfo};
use keymesh_pkcs11::wrap::WrappedKeyRef;
use keymesh_pkcs11::{Error as HsmError, Hsm, Recovery};

/// Jobs queued per session before callers get HSM_BUSY. At ~20 µs per AES-GCM
/// call this bounds queueing delay to a few milliseconds.
pub const QUEUE_PER_SESSION: usize = 128;

/// What a session thread lends to a job: its session (opened on demand), the
/// shared key cache and unwrapped-key cache, the CSPRNG and the session's
/// health-check key.
pub struct SessionCtx {
    /// The health-check key is a session object: it lives in the slot and
    /// goes with the session.
    slot: SessionSlot<Hsm, Option<ObjectHandle>>,
    keys: Arc<KeyCache>,
    unwrapped: Arc<UnwrappedKeys>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// After a session thread lost its session: whatever took it (token
/// removed, login gone) may have taken the key-copy and unwrapped-key keeper
/// sessions too. Check, and replace them, before this thread creates session
/// objects whose handles could collide with those of dead copies.
fn check_keepers(keys: &KeyCache, unwrapped: &UnwrappedKeys) {
    if let Some(keeper) = keys.keeper() {
        keeper.check_alive();
    }
    unwrapped.keeper().check_alive();
}

impl SessionCtx {
    fn new(hsm: Arc<Hsm>, keys: Arc<KeyCache>, unwrapped: Arc<UnwrappedKeys>) -> Self {
        Self {
            slot: SessionSlot::new(hsm),
            keys,
            unwrapped,
            rng: SystemRandom::new(),
        }
    }

    pub fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    /// Act on a failure of a call on this thread's session
    /// ([`SessionSlot::after_failure`], the one place that drops a session).
    fn recover(&mut self, err: &Error) -> Recovery {
        let (keys, unwrapped) = (&self.keys, &self.unwrapped);
        self.slot
            .after_failure(err, || check_keepers(keys, unwrapped))
    }

    fn attempt<T>(
        &mut self,
        op: &mut impl FnMut(&Session, &SystemRandom, &mut Option<ObjectHandle>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let rng = &self.rng;
        self.slot
            .attempt(&mut |s: &Session, health_key: &mut Option<ObjectHandle>| {
                op(s, rng, health_key)
            })
    }

    /// Run `op` on the session; if the failure says the session or the
    /// login is gone, open a fresh logged-in session and run `op` once more
    /// ([`SessionSlot::run`]). `op` also gets the slot for this session's
    /// health-check key, which a re-open empties.
    fn with_session_state<T>(
        &mut self,
        mut op: impl FnMut(&Session, &SystemRandom, &mut Option<ObjectHandle>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (keys, unwrapped, rng) = (&self.keys, &self.unwrapped, &self.rng);
        self.slot.run(
            |s, health_key| op(s, rng, health_key),
            || check_keepers(keys, unwrapped),
        )
    }

    /// Run `op` on this thread's logged-in session (re-opened if lost).
    pub fn with_session<T>(
        &mut self,
        mut op: impl FnMut(&Session, &SystemRandom) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.with_session_state(|s, rng, _| op(s, rng))
    }

    /// The cached key labelled `key_id` (the token object), looked up on a
    /// miss and re-validated against the token when older than
    /// `--key-revalidate-secs`.
    pub fn key(&mut self, key_id: &str) -> Result<KeyInfo, Error> {
        Ok(self.entry(key_id)?.token.clone())
    }

    /// The cache entry for `key_id`. A fresh entry costs no HSM call; an old
    /// one (or none) is re-found by label: gone → KEY_NOT_FOUND and the entry
    /// (with its copy) dropped; changed → a new entry with a new copy.
    pub fn entry(&mut self, key_id: &str) -> Result<Arc<CachedKey>, Error> {
        let now = Instant::now();
        let old = match self.keys.fresh(key_id, now) {
            Ok(entry) => return Ok(entry),
            Err(old) => old,
        };
        let found = self.with_session(|s, _| {
            let info = keys::find_key(s, key_id)?;
            let protection =
                keys::key_protection(s, info.handle).map_err(|e| Error::from_pkcs11(e, key_id))?;
            Ok((info, protection))
        });
        match found {
            Ok((info, protection)) => {
                self.keys
                    .store(key_id, info, protection, old.as_deref(), now)
            }
            Err(e) => {
                if old.is_some()
                    && matches!(
                        e,
                        Error::Pkcs11(HsmError::KeyNotFound { .. } | HsmError::AmbiguousKey { .. })
                    )
                {
                    tracing::info!(
                        key_id,
                        "key no longer resolves on the token; dropping its cache entry"
                    );
                    drop(old);
                    self.keys.remove(key_id);
                }
                Err(e)
            }
        }
    }

    /// Run `op` once with `key`.
    fn run_with_key<T>(
        &mut self,
        key: &CachedKey,
        op: &mut impl FnMut(&Session, &SystemRandom, &KeyInfo) -> Result<T, Error>,
    ) -> Attempt<T> {
        let result = match key.crypto_key() {
            CryptoKey::Token(info) => {
                return Attempt::Done(self.with_session(|s, rng| op(s, rng, info)));
            }
            CryptoKey::Dead => return Attempt::CopyDead,
            // The guard inside `copy` pins the keeper generation: the copy
            // handle cannot die and be reused while `op` runs. Nothing here
            // may touch the keeper (replacing it needs the write lock), so
            // no re-open inside; that happens below, with the guard gone.
            CryptoKey::Copy(copy) => self.attempt(&mut |s, rng, _| op(s, rng, &copy.info)),
        };
        match result {
            Err(e) if self.recover(&e) == Recovery::Reopen => Attempt::SessionLost(e),
            other => Attempt::Done(other),
        }
    }

    /// Run `op` with the key labelled `key_id`. `key.handle` is the object to
    /// run crypto on: the session copy when there is one, else the token
    /// object; every other field describes the token object. A stale handle
    /// (the key was deleted or re-created elsewhere, or its copy is gone) is
    /// dropped, the key found (and copied) again and `op` retried once; so is
    /// a lost session (re-opened first).
    pub fn with_key<T>(
        &mut self,
        key_id: &str,
        mut op: impl FnMut(&Session, &SystemRandom, &KeyInfo) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let first = self
            .entry(key_id)
            .map(|key| self.run_with_key(&key, &mut op));
        match first {
            Ok(Attempt::Done(Err(e))) | Err(e) if e.recovery() == Recovery::Refind => {
                tracing::info!(
                    key_id,
                    "cached key handle is stale; looking the key up again"
                );
                self.keys.remove(key_id);
            }
            Ok(Attempt::CopyDead) => {
                tracing::debug!(
                    key_id,
                    "key copy died with the keeper session; copying again"
                );
                self.keys.remove(key_id);
            }
            // The entry is still good; only this thread's session was renewed.
            Ok(Attempt::SessionLost(_)) => {}
            Ok(Attempt::Done(result)) => return result,
            Err(e) => return Err(e),
        }
        let key = self.entry(key_id)?;
        match self.run_with_key(&key, &mut op) {
            Attempt::Done(result) => result,
            Attempt::SessionLost(e) => Err(e),
            // The keeper was replaced twice within one request: serve this
            // one from the token object just found.
            Attempt::CopyDead => self.with_session(|s, rng| op(s, rng, &key.token)),
        }
    }

    /// Run `op` on this thread's session with the unwrapped objects of the
    /// wrapped customer master keys `keys` (in order), unwrapping on a cache
    /// miss. A handle that turns out stale or dead (its keeper session was
    /// replaced) is forgotten, the key unwrapped again and `op` retried once;
    /// so is a lost session (re-opened first). Labels are checked where the
    /// request arrives ([`keymesh_pkcs11::wrap::check_label`]), not here: one that
    /// names no domain key fails the unwrap.
    pub fn with_unwrapped<T, const N: usize>(
        &mut self,
        keys: [WrappedKeyRef<'_>; N],
        mut op: impl FnMut(&Session, &SystemRandom, [ObjectHandle; N]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let keeper = Arc::clone(self.unwrapped.keeper());
        // Hashed once per call, not again on a retry or a forget.
        let fingerprints = keys.map(Fingerprint::of);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let objects = keys
                .iter()
                .zip(fingerprints)
                .map(|(k, f)| self.unwrapped.get(*k, f))
                .collect::<Result<Vec<_>, _>>()?;
            let result = {
                // Held while `op` uses the handles: the keeper session (and
                // with it the objects) cannot be replaced meanwhile. Nothing
                // here may touch the keeper; a re-open happens below.
                let held = keeper.hold();
                let handles = objects
                    .iter()
                    .map(|o| o.alive_under(&held))
                    .collect::<Option<Vec<_>>>()
                    .and_then(|h| <[ObjectHandle; N]>::try_from(h).ok());
                match handles {
                    Some(handles) => Some(self.attempt(&mut |s, rng, _| op(s, rng, handles))),
                    None => None,
                }
            };
            let retry = match &result {
                None => true,
                Some(Err(e)) => self.recover(e) != Recovery::None,
                Some(Ok(_)) => false,
            };
            if retry && attempt < 2 {
                for (fingerprint, object) in fingerprints.into_iter().zip(&objects) {
                    self.unwrapped.forget(fingerprint, object);
                }
                continue;
            }
            return result.unwrap_or(Err(Error::SessionUnavailable));
        }
    }

    /// Destroy the unwrapped keys idle for longer than the cache allows.
    pub fn sweep_unwrapped(&mut self) -> usize {
        self.unwrapped.sweep(Instant::now())
    }

    /// Run `op` with this session's health-check key (created on first use
    /// and again after every session re-open).
    pub fn with_health_key<T>(
        &mut self,
        mut op: impl FnMut(&Session, &SystemRandom, ObjectHandle) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.with_session_state(|s, rng, slot| {
            let key = match *slot {
                Some(h) => h,
                None => {
                    let h = keys::generate_health_key(s).map_err(Error::hsm)?;
                    *slot = Some(h);
                    h
                }
            };
            op(s, rng, key)
        })
    }
}

impl SessionThread for SessionCtx {
    fn open(&mut self) -> Result<(), Error> {
        self.slot.ensure_open()
    }

    fn close(&mut self) {
        self.slot.close();
    }
}

/// One try of a job's crypto with a cached key.
enum Attempt<T> {
    Done(Result<T, Error>),
    /// The key's copy died with a replaced keeper session.
    CopyDead,
    /// This thread's session was lost (and has been re-opened).
    SessionLost(Error),
}

/// The slow lane: sessions and queue of their own for jobs that hold a
/// session for a long time (RSA key-pair generation: ~2 s for 4096 bits on
/// SoftHSM2), so they never take the sessions the millisecond operations
/// (XKS and KMS AES-GCM, unwraps, random) need. Measured before building it
/// (bench/REPORT.md, "HSM fairness"): SoftHSM2 does not hold a
/// process-wide lock for the whole of a C_GenerateKeyPair, so another
/// session of the same process keeps its AES-GCM latency while one
/// generates; a lane in this process isolates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowLane {
    /// Dedicated session threads; 0 = no slow lane: slow jobs share the one
    /// pool, as before the lane existed.
    pub sessions: usize,
    /// Slow jobs queued before callers get HSM_BUSY.
    pub queue: usize,
}

impl SlowLane {
    /// No slow lane: everything shares the fast lane.
    pub const NONE: SlowLane = SlowLane {
        sessions: 0,
        queue: 0,
    };
}

/// Handle to the session pool; cheap to clone. The threads stop once every
/// clone is dropped and the queues are drained.
#[derive(Clone)]
pub struct Pool {
    /// Every job not marked slow.
    fast: Lane<SessionCtx>,
    /// Jobs marked slow ([`Pool::run_slow`]); `None` = they use `fast`.
    slow: Option<Lane<SessionCtx>>,
    /// For the metrics sampler; jobs reach it through their [`SessionCtx`].
    unwrapped: Arc<UnwrappedKeys>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("sessions", &self.fast.sessions())
            .field("queued", &self.fast.queued())
            .field("slow_sessions", &self.slow_sessions())
            .field("slow_queued", &self.slow_queued())
            .finish()
    }
}

/// The session threads, to be joined after the last [`Pool`] is dropped.
#[derive(Debug)]
pub struct PoolThreads(Vec<std::thread::JoinHandle<()>>);

impl PoolThreads {
    /// Wait for every session thread to close its session and exit.
    pub fn join(self) {
        for t in self.0 {
            if t.join().is_err() {
                tracing::error!("an HSM session thread panicked");
            }
        }
    }
}

impl Pool {
    /// Start `sessions` threads and open (and log in) one session on each.
    /// Blocks until every session is open; fails if any cannot be, so a wrong
    /// PIN stops the worker at start instead of at the first request.
    /// With session key copies on, also opens the keeper session that owns
    /// the copies (see [`crate::key_cache`]).
    pub fn start(
        hsm: Arc<Hsm>,
        sessions: usize,
        keys: KeyCacheOptions,
    ) -> Result<(Self, PoolThreads), Error> {
        Self::start_with(hsm, sessions, keys, UnwrappedKeyOptions::default())
    }

    /// [`Pool::start`] with explicit bounds for the unwrapped-key cache
    /// (whose keeper session is opened now too).
    pub fn start_with(
        hsm: Arc<Hsm>,
        sessions: usize,
        keys: KeyCacheOptions,
        unwrapped: UnwrappedKeyOptions,
    ) -> Result<(Self, PoolThreads), Error> {
        Self::start_lanes(hsm, sessions, SlowLane::NONE, keys, unwrapped)
    }

    /// [`Pool::start_with`] plus a slow lane of `slow.sessions` threads of
    /// its own (none when 0).
    pub fn start_lanes(
        hsm: Arc<Hsm>,
        sessions: usize,
        slow: SlowLane,
        keys: KeyCacheOptions,
        unwrapped: UnwrappedKeyOptions,
    ) -> Result<(Self, PoolThreads), Error> {
        let keys = Arc::new(KeyCache::new(&hsm, keys)?);
        let unwrapped = Arc::new(UnwrappedKeys::new(&hsm, unwrapped)?);
        let make = || SessionCtx::new(Arc::clone(&hsm), Arc::clone(&keys), Arc::clone(&unwrapped));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(sessions + slow.sessions);
        let fast = Lane::spawn(
            "hsm-session",
            sessions,
            sessions.max(1) * QUEUE_PER_SESSION,
            make,
            &ready_tx,
            &mut threads,
        )?;
        let slow = if slow.sessions > 0 {
            Some(Lane::spawn(
                "hsm-slow",
                slow.sessions,
                slow.queue.max(1),
                make,
                &ready_tx,
                &mut threads,
            )?)
        } else {
            None
        };
        drop(ready_tx);
        let pool = Self {
            fast,
            slow,
            unwrapped,
        };
        // On failure, dropping `pool` closes the queues and stops the other
        // threads.
        lane::await_ready(&ready_rx, threads.len())?;
        Ok((pool, PoolThreads(threads)))
    }

    /// Sessions of the fast lane (`--sessions`).
    pub fn sessions(&self) -> usize {
        self.fast.sessions()
    }

    /// Jobs waiting for a fast-lane session.
    pub fn queued(&self) -> usize {
        self.fast.queued()
    }

    /// Jobs the fast queue holds before [`Pool::run`] answers HSM_BUSY.
    pub fn capacity(&self) -> usize {
        self.fast.capacity()
    }

    /// Fast-lane sessions running a job.
    pub fn busy(&self) -> usize {
        self.fast.busy()
    }

    /// Sessions of the slow lane (0: none).
    pub fn slow_sessions(&self) -> usize {
        self.slow.as_ref().map_or(0, Lane::sessions)
    }

    /// Jobs waiting for a slow-lane session.
    pub fn slow_queued(&self) -> usize {
        self.slow.as_ref().map_or(0, Lane::queued)
    }

    /// Jobs the slow queue holds before [`Pool::run_slow`] answers HSM_BUSY.
    pub fn slow_capacity(&self) -> usize {
        self.slow.as_ref().map_or(0, Lane::capacity)
    }

    /// Slow-lane sessions running a job.
    pub fn slow_busy(&self) -> usize {
        self.slow.as_ref().map_or(0, Lane::busy)
    }

    /// Unwrapped customer master keys held by this process.
    pub fn unwrapped_keys(&self) -> usize {
        self.unwrapped.len()
    }

    /// Destroy the unwrapped keys idle for too long, on a session thread
    /// (HSM calls); returns how many.
    pub async fn sweep_unwrapped(&self) -> Result<usize, Error> {
        self.run(None, |ctx| Ok(ctx.sweep_unwrapped())).await
    }

    /// Queue `op` for a fast-lane session thread; HSM_BUSY at once if the
    /// queue is full (load shedding: a request would rather fail fast than
    /// wait behind a backlog it cannot see).
    pub async fn run<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        self.fast.run(deadline, op).await
    }

    /// [`Pool::run`] for a job that holds its session for long (key-pair
    /// generation): on the slow lane when there is one, so it never delays
    /// the fast lane; HSM_BUSY at once when the slow queue is full.
    pub async fn run_slow<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        self.slow
            .as_ref()
            .unwrap_or(&self.fast)
            .run(deadline, op)
            .await
    }

    /// Like [`Pool::run`] but waits for room in the queue (async send): for
    /// the health check, which must measure the queue rather than be shed by it.
    pub async fn run_waiting<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        self.fast.run_waiting(deadline, op).await
    }
}
