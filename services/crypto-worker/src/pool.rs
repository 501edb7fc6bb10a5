//! The HSM session pool: N logged-in PKCS#11 sessions, each owned by a
//! dedicated OS thread, fed from one bounded job queue.
//!
//! PKCS#11 calls block (and SoftHSM2 serialises on file locks), so they never
//! run on tokio executor threads. A gRPC handler hands a closure to
//! [`Pool::run`]; a session thread runs it with exclusive use of its session
//! and answers over a oneshot. The queue is bounded so overload turns into an
//! immediate HSM_BUSY instead of unbounded latency.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use cryptoki::error::Error as Pkcs11Error;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use ring::rand::SystemRandom;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::hsm::{self, Hsm, KeyInfo};

/// Jobs queued per session before callers get HSM_BUSY. At ~20 µs per AES-GCM
/// call this bounds queueing delay to a few milliseconds.
pub const QUEUE_PER_SESSION: usize = 128;

/// Key handles by label, shared by every session thread: a token object's
/// handle is valid in every session of the process. Misses are not cached,
/// so a key created after start is found on the next request.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, KeyInfo>>,
}

impl KeyCache {
    fn get(&self, key_id: &str) -> Option<KeyInfo> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // complete value; the map itself is still consistent.
        let map = self.keys.read().unwrap_or_else(|e| e.into_inner());
        map.get(key_id).cloned()
    }

    fn insert(&self, key_id: &str, info: KeyInfo) {
        let mut map = self.keys.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key_id.to_owned(), info);
    }

    fn remove(&self, key_id: &str) {
        let mut map = self.keys.write().unwrap_or_else(|e| e.into_inner());
        map.remove(key_id);
    }
}

/// What a session thread lends to a job: its session (opened on demand), the
/// shared key cache, the CSPRNG and the session's health-check key.
pub struct SessionCtx {
    hsm: Arc<Hsm>,
    keys: Arc<KeyCache>,
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

fn lost(err: &Error) -> bool {
    matches!(err, Error::Hsm(Pkcs11Error::Pkcs11(rv, _)) if hsm::session_lost(*rv))
}

fn stale(err: &Error) -> bool {
    matches!(err, Error::Hsm(Pkcs11Error::Pkcs11(rv, _)) if hsm::handle_stale(*rv))
}

impl SessionCtx {
    fn new(hsm: Arc<Hsm>, keys: Arc<KeyCache>) -> Self {
        Self {
            hsm,
            keys,
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
            Err(e) if lost(&e) => {
                tracing::warn!(error = %e, "HSM session lost; re-opening and logging in");
                self.reset();
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

    /// The cached key labelled `key_id`, looked up on a miss.
    pub fn key(&mut self, key_id: &str) -> Result<KeyInfo, Error> {
        if let Some(info) = self.keys.get(key_id) {
            return Ok(info);
        }
        let info = self.with_session(|s, _| hsm::find_key(s, key_id))?;
        self.keys.insert(key_id, info.clone());
        Ok(info)
    }

    /// Run `op` with the key labelled `key_id`. A stale cached handle (the key
    /// was deleted or re-created elsewhere) is dropped, the key found again
    /// and `op` retried once.
    pub fn with_key<T>(
        &mut self,
        key_id: &str,
        mut op: impl FnMut(&Session, &SystemRandom, &KeyInfo) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let key = self.key(key_id)?;
        match self.with_session(|s, rng| op(s, rng, &key)) {
            Err(e) if stale(&e) => {
                tracing::info!(
                    key_id,
                    "cached key handle is stale; looking the key up again"
                );
                self.keys.remove(key_id);
                let key = self.key(key_id)?;
                self.with_session(|s, rng| op(s, rng, &key))
            }
            other => other,
        }
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

type JobFn = Box<dyn FnOnce(Result<&mut SessionCtx, Error>) + Send>;

/// One unit of HSM work plus the caller's deadline.
struct Job {
    deadline: Option<Instant>,
    run: JobFn,
}

/// Handle to the session pool; cheap to clone. The threads stop once every
/// clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct Pool {
    tx: flume::Sender<Job>,
    sessions: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("sessions", &self.sessions)
            .field("queued", &self.tx.len())
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
    pub fn start(hsm: Arc<Hsm>, sessions: usize) -> Result<(Self, PoolThreads), Error> {
        let (tx, rx) = flume::bounded::<Job>(sessions.max(1) * QUEUE_PER_SESSION);
        let keys = Arc::new(KeyCache::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
        let mut threads = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let rx = rx.clone();
            let ready = ready_tx.clone();
            let mut ctx = SessionCtx::new(Arc::clone(&hsm), Arc::clone(&keys));
            let spawned = std::thread::Builder::new()
                .name(format!("hsm-session-{i}"))
                .spawn(move || {
                    let opened = ctx.ensure_open();
                    let ok = opened.is_ok();
                    let _ = ready.send(opened);
                    drop(ready);
                    if ok {
                        session_loop(&mut ctx, &rx);
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
        drop(ready_tx);
        let pool = Self { tx, sessions };
        for _ in 0..sessions {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `pool` closes the queue and stops the other threads.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::WorkerLost),
            }
        }
        Ok((pool, PoolThreads(threads)))
    }

    pub fn sessions(&self) -> usize {
        self.sessions
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

    /// Queue `op` for a session thread; HSM_BUSY at once if the queue is full
    /// (load shedding: a request would rather fail fast than wait behind a
    /// backlog it cannot see).
    pub async fn run<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = Self::job(deadline, op);
        self.tx.try_send(job).map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }

    /// Like [`Pool::run`] but waits for room in the queue (async send): for
    /// the health check, which must measure the queue rather than be shed by it.
    pub async fn run_waiting<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut SessionCtx) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = Self::job(deadline, op);
        self.tx.send_async(job).await.map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }
}

fn session_loop(ctx: &mut SessionCtx, rx: &flume::Receiver<Job>) {
    // `recv` fails once every sender is gone and the queue is empty: drained.
    while let Ok(job) = rx.recv() {
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            (job.run)(Err(Error::DeadlineExceeded));
        } else {
            (job.run)(Ok(ctx));
        }
    }
    ctx.reset();
    tracing::debug!("HSM session thread stopped");
}
