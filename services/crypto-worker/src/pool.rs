//! The HSM session pool: N logged-in PKCS#11 sessions, each owned by a
//! dedicated OS thread, fed from one bounded job queue.
//!
//! PKCS#11 calls block (and SoftHSM2 serialises on file locks), so they never
//! run on tokio executor threads. A gRPC handler hands a closure to
//! [`Pool::run`]; a session thread runs it with exclusive use of its session
//! and answers over a oneshot. The queue is bounded so overload turns into an
//! immediate HSM_BUSY instead of unbounded latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use ring::rand::SystemRandom;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::hsm::{self, Hsm, KeyInfo};
use crate::key_cache::{CachedKey, CryptoKey, KeyCache, KeyCacheOptions};
use crate::wrapped::{Fingerprint, UnwrappedKeyOptions, UnwrappedKeys, WrappedKeyRef};

/// Jobs queued per session before callers get HSM_BUSY. At ~20 µs per AES-GCM
/// call this bounds queueing delay to a few milliseconds.
pub const QUEUE_PER_SESSION: usize = 128;

/// What a session thread lends to a job: its session (opened on demand), the
/// shared key cache and unwrapped-key cache, the CSPRNG and the session's
/// health-check key.
pub struct SessionCtx {
    hsm: Arc<Hsm>,
    keys: Arc<KeyCache>,
    unwrapped: Arc<UnwrappedKeys>,
    rng: SystemRandom,
    session: Option<Session>,
    health_key: Option<ObjectHandle>,
}

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("open", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionCtx {
    fn new(hsm: Arc<Hsm>, keys: Arc<KeyCache>, unwrapped: Arc<UnwrappedKeys>) -> Self {
        Self {
            hsm,
            keys,
            unwrapped,
            rng: SystemRandom::new(),
            session: None,
            health_key: None,
        }
    }

    pub fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    fn ensure_open(&mut self) -> Result<(), Error> {
        if self.session.is_none() {
            let session = self.hsm.open_session().map_err(Error::Hsm)?;
            tracing::debug!("HSM session opened and logged in");
            self.session = Some(session);
        }
        Ok(())
    }

    /// Drop the session; the next call opens and logs in a fresh one.
    fn reset(&mut self) {
        // The health key was a session object of the old session: gone with it.
        self.health_key = None;
        if let Some(session) = self.session.take() {
            // The session is already unusable; a failing close changes nothing.
            let _ = session.close();
        }
    }

    /// [`Self::reset`] after the session was lost. Whatever took it (token
    /// removed, login gone) may have taken the key-copy keeper session too:
    /// check, and replace it, before this thread creates session objects
    /// whose handles could collide with those of dead copies.
    fn reset_after_loss(&mut self) {
        self.reset();
        if let Some(keeper) = self.keys.keeper() {
            keeper.check_alive();
        }
        self.unwrapped.keeper().check_alive();
    }

    fn attempt<T>(
        &mut self,
        op: &mut impl FnMut(&Session, &SystemRandom, &mut Option<ObjectHandle>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.ensure_open()?;
        let session = self.session.as_ref().ok_or(Error::WorkerLost)?;
        op(session, &self.rng, &mut self.health_key)
    }

    /// THE place that decides re-open and re-login: run `op` on the session;
    /// if the failure says the session or the login is gone, open a fresh
    /// logged-in session and run `op` once more. `op` also gets the slot for
    /// this session's health-check key, which a re-open empties.
    fn with_session_state<T>(
        &mut self,
        mut op: impl FnMut(&Session, &SystemRandom, &mut Option<ObjectHandle>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match self.attempt(&mut op) {
            Err(e) if e.session_lost() => {
                tracing::warn!(error = %e, "HSM session lost; re-opening and logging in");
                self.reset_after_loss();
                self.attempt(&mut op)
            }
            other => other,
        }
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
            let info = hsm::find_key(s, key_id)?;
            let protection =
                hsm::key_protection(s, info.handle).map_err(|e| Error::from_pkcs11(e, key_id))?;
            Ok((info, protection))
        });
        match found {
            Ok((info, protection)) => {
                self.keys
                    .store(key_id, info, protection, old.as_deref(), now)
            }
            Err(e) => {
                if old.is_some()
                    && matches!(e, Error::KeyNotFound { .. } | Error::AmbiguousKey { .. })
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
            Err(e) if e.session_lost() => {
                tracing::warn!(error = %e, "HSM session lost; re-opening and logging in");
                self.reset_after_loss();
                Attempt::SessionLost(e)
            }
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
            Ok(Attempt::Done(Err(e))) | Err(e) if e.handle_stale() => {
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
    /// request arrives ([`crate::wrapped::check_label`]), not here: one that
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
                Some(Err(e)) if e.session_lost() => {
                    tracing::warn!(error = %e, "HSM session lost; re-opening and logging in");
                    self.reset_after_loss();
                    true
                }
                Some(Err(e)) if e.handle_stale() => true,
                Some(_) => false,
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
                    let h = hsm::generate_health_key(s).map_err(Error::Hsm)?;
                    *slot = Some(h);
                    h
                }
            };
            op(s, rng, key)
        })
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

type JobFn = Box<dyn FnOnce(Result<&mut SessionCtx, Error>) + Send>;

/// One unit of HSM work plus the caller's deadline.
struct Job {
    deadline: Option<Instant>,
    run: JobFn,
}

/// One lane of session threads: its own bounded queue and its own sessions.
#[derive(Clone)]
struct Lane {
    tx: flume::Sender<Job>,
    sessions: usize,
    /// Sessions running a job now (for the metrics sampler; two relaxed
    /// atomic ops per job).
    busy: Arc<AtomicUsize>,
}

impl Lane {
    fn queued(&self) -> usize {
        self.tx.len()
    }

    fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(0)
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }
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
    fast: Lane,
    /// Jobs marked slow ([`Pool::run_slow`]); `None` = they use `fast`.
    slow: Option<Lane>,
    /// For the metrics sampler; jobs reach it through their [`SessionCtx`].
    unwrapped: Arc<UnwrappedKeys>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("sessions", &self.fast.sessions)
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

/// What the session threads of every lane share.
struct Shared {
    hsm: Arc<Hsm>,
    keys: Arc<KeyCache>,
    unwrapped: Arc<UnwrappedKeys>,
}

/// Spawn `sessions` threads named `{name}-{i}` serving `rx`; each reports on
/// `ready` whether its session opened.
fn spawn_lane(
    shared: &Shared,
    name: &str,
    sessions: usize,
    rx: &flume::Receiver<Job>,
    busy: &Arc<AtomicUsize>,
    ready: &std::sync::mpsc::Sender<Result<(), Error>>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<(), Error> {
    for i in 0..sessions {
        let rx = rx.clone();
        let busy = Arc::clone(busy);
        let ready = ready.clone();
        let mut ctx = SessionCtx::new(
            Arc::clone(&shared.hsm),
            Arc::clone(&shared.keys),
            Arc::clone(&shared.unwrapped),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let opened = ctx.ensure_open();
                let ok = opened.is_ok();
                let _ = ready.send(opened);
                drop(ready);
                if ok {
                    session_loop(&mut ctx, &rx, &busy);
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot spawn an HSM session thread");
                return Err(Error::WorkerLost);
            }
        }
    }
    Ok(())
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
        let shared = Shared {
            keys: Arc::new(KeyCache::new(&hsm, keys)?),
            unwrapped: Arc::new(UnwrappedKeys::new(&hsm, unwrapped)?),
            hsm,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
        let mut threads = Vec::with_capacity(sessions + slow.sessions);
        let (tx, rx) = flume::bounded::<Job>(sessions.max(1) * QUEUE_PER_SESSION);
        let fast = Lane {
            tx,
            sessions,
            busy: Arc::new(AtomicUsize::new(0)),
        };
        spawn_lane(
            &shared,
            "hsm-session",
            sessions,
            &rx,
            &fast.busy,
            &ready_tx,
            &mut threads,
        )?;
        let slow = if slow.sessions > 0 {
            let (tx, rx) = flume::bounded::<Job>(slow.queue.max(1));
            let lane = Lane {
                tx,
                sessions: slow.sessions,
                busy: Arc::new(AtomicUsize::new(0)),
            };
            spawn_lane(
                &shared,
                "hsm-slow",
                slow.sessions,
                &rx,
                &lane.busy,
                &ready_tx,
                &mut threads,
            )?;
            Some(lane)
        } else {
            None
        };
        drop(ready_tx);
        let opened = threads.len();
        let pool = Self {
            fast,
            slow,
            unwrapped: shared.unwrapped,
        };
        for _ in 0..opened {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `pool` closes the queues and stops the other threads.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::WorkerLost),
            }
        }
        Ok((pool, PoolThreads(threads)))
    }

    /// Sessions of the fast lane (`--sessions`).
    pub fn sessions(&self) -> usize {
        self.fast.sessions
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
        self.slow.as_ref().map_or(0, |l| l.sessions)
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

    fn job<T, F>(deadline: Option<Instant>, op: F) -> (Job, oneshot::Receiver<Result<T, Error>>)
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let run: JobFn = Box::new(move |ctx| {
            // The caller gave up (cancelled or timed out): skip the HSM.
            if reply.is_closed() {
                return;
            }
            let _ = reply.send(ctx.and_then(op));
        });
        (Job { deadline, run }, rx)
    }

    async fn run_on<T, F>(lane: &Lane, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = Self::job(deadline, op);
        lane.tx.try_send(job).map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }

    /// Queue `op` for a fast-lane session thread; HSM_BUSY at once if the
    /// queue is full (load shedding: a request would rather fail fast than
    /// wait behind a backlog it cannot see).
    pub async fn run<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        Self::run_on(&self.fast, deadline, op).await
    }

    /// [`Pool::run`] for a job that holds its session for long (key-pair
    /// generation): on the slow lane when there is one, so it never delays
    /// the fast lane; HSM_BUSY at once when the slow queue is full.
    pub async fn run_slow<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        Self::run_on(self.slow.as_ref().unwrap_or(&self.fast), deadline, op).await
    }

    /// Like [`Pool::run`] but waits for room in the queue (async send): for
    /// the health check, which must measure the queue rather than be shed by it.
    pub async fn run_waiting<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = Self::job(deadline, op);
        self.fast
            .tx
            .send_async(job)
            .await
            .map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }
}

fn session_loop(ctx: &mut SessionCtx, rx: &flume::Receiver<Job>, busy: &AtomicUsize) {
    // `recv` fails once every sender is gone and the queue is empty: drained.
    while let Ok(job) = rx.recv() {
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            (job.run)(Err(Error::DeadlineExceeded));
        } else {
            busy.fetch_add(1, Ordering::Relaxed);
            (job.run)(Ok(ctx));
            busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
    ctx.reset();
    tracing::debug!("HSM session thread stopped");
}
