//! One lane of the session pool: a bounded job queue feeding dedicated OS
//! threads, each owning one session context.
//!
//! Generic over the context ([`SessionThread`]) so the scheduling rules
//! (shed at once when full, skip a job whose deadline passed, skip one whose
//! caller gave up, close every session once drained) are tested below with
//! a fake session; the pool runs lanes of [`crate::pool::SessionCtx`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::Error;

/// What a session thread owns: a session opened before it takes jobs and
/// closed once its queue is drained.
pub trait SessionThread: Send + 'static {
    /// Open (and log in) the session; a failure stops the pool's start.
    fn open(&mut self) -> Result<(), Error>;
    /// Close the session: the queue is drained and closed.
    fn close(&mut self);
}

type JobFn<C> = Box<dyn FnOnce(Result<&mut C, Error>) + Send>;

/// One unit of HSM work plus the caller's deadline.
pub struct Job<C> {
    deadline: Option<Instant>,
    run: JobFn<C>,
}

/// Session threads with their own bounded queue; cheap to clone. The
/// threads stop once every clone is dropped and the queue is drained.
pub struct Lane<C> {
    tx: flume::Sender<Job<C>>,
    sessions: usize,
    /// Sessions running a job now (for the metrics sampler; two relaxed
    /// atomic ops per job).
    busy: Arc<AtomicUsize>,
}

impl<C> Clone for Lane<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            sessions: self.sessions,
            busy: Arc::clone(&self.busy),
        }
    }
}

/// Where the threads of a starting pool report whether their session opened.
pub type Ready = std::sync::mpsc::Sender<Result<(), Error>>;

impl<C: SessionThread> Lane<C> {
    /// Spawn `sessions` threads named `{name}-{i}`, each owning a context
    /// from `make`, behind a queue of `queue` jobs. Each thread reports on
    /// `ready` whether its session opened ([`await_ready`]) and is pushed
    /// to `threads`.
    pub fn spawn(
        name: &str,
        sessions: usize,
        queue: usize,
        mut make: impl FnMut() -> C,
        ready: &Ready,
        threads: &mut Vec<std::thread::JoinHandle<()>>,
    ) -> Result<Self, Error> {
        let (tx, rx) = flume::bounded::<Job<C>>(queue);
        let lane = Self {
            tx,
            sessions,
            busy: Arc::new(AtomicUsize::new(0)),
        };
        for i in 0..sessions {
            let rx = rx.clone();
            let busy = Arc::clone(&lane.busy);
            let ready = ready.clone();
            let mut ctx = make();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let opened = ctx.open();
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
        Ok(lane)
    }

    /// Queue `op` for a session thread; HSM_BUSY at once if the queue is
    /// full (load shedding: a request would rather fail fast than wait
    /// behind a backlog it cannot see).
    pub async fn run<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut C) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = job(deadline, op);
        self.tx.try_send(job).map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }

    /// Like [`Lane::run`] but waits for room in the queue: for the health
    /// check, which must measure the queue rather than be shed by it.
    pub async fn run_waiting<T, F>(&self, deadline: Option<Instant>, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut C) -> Result<T, Error> + Send + 'static,
    {
        let (job, rx) = job(deadline, op);
        self.tx.send_async(job).await.map_err(|_| Error::Busy)?;
        rx.await.map_err(|_| Error::WorkerLost)?
    }
}

impl<C> Lane<C> {
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    pub fn capacity(&self) -> usize {
        self.tx.capacity().unwrap_or(0)
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }
}

/// Wait until each of `threads` session threads reported its session open;
/// the first failure is the answer.
pub fn await_ready(
    ready: &std::sync::mpsc::Receiver<Result<(), Error>>,
    threads: usize,
) -> Result<(), Error> {
    for _ in 0..threads {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::WorkerLost),
        }
    }
    Ok(())
}

fn job<C, T, F>(deadline: Option<Instant>, op: F) -> (Job<C>, oneshot::Receiver<Result<T, Error>>)
where
    T: Send + 'static,
    F: FnOnce(&mut C) -> Result<T, Error> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let run: JobFn<C> = Box::new(move |ctx| {
        // The caller gave up (cancelled or timed out): skip the HSM.
        if reply.is_closed() {
            return;
        }
        let _ = reply.send(ctx.and_then(op));
    });
    (Job { deadline, run }, rx)
}

fn session_loop<C: SessionThread>(ctx: &mut C, rx: &flume::Receiver<Job<C>>, busy: &AtomicUsize) {
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
    ctx.close();
    tracing::debug!("HSM session thread stopped");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;
    use crate::session::SessionSlot;
    use crate::session::tests::FakeBackend;

    type Fake = SessionSlot<FakeBackend>;

    fn start(
        backend: &Arc<FakeBackend>,
        sessions: usize,
        queue: usize,
    ) -> Result<(Lane<Fake>, Vec<std::thread::JoinHandle<()>>), Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let lane = Lane::spawn(
            "fake",
            sessions,
            queue,
            || SessionSlot::new(Arc::clone(backend)),
            &ready_tx,
            &mut threads,
        )?;
        drop(ready_tx);
        await_ready(&ready_rx, threads.len())?;
        Ok((lane, threads))
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once_and_the_backlog_still_runs() {
        let backend = Arc::new(FakeBackend::default());
        let (lane, threads) = start(&backend, 1, 1).unwrap();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        // Holds the only session until the gate opens.
        let blocker = tokio::spawn({
            let lane = lane.clone();
            async move {
                lane.run(None, move |_| {
                    gate_rx.recv().map_err(|_| Error::WorkerLost)?;
                    Ok("first")
                })
                .await
            }
        });
        until("the session to be busy", || lane.busy() == 1).await;
        // Fills the queue.
        let queued = tokio::spawn({
            let lane = lane.clone();
            async move { lane.run(None, |_| Ok("second")).await }
        });
        until("the job to be queued", || lane.queued() == 1).await;
        let shed = lane.run(None, |_| Ok("third")).await;
        assert!(matches!(shed, Err(Error::Busy)), "{shed:?}");
        gate_tx.send(()).unwrap();
        assert_eq!(blocker.await.unwrap().unwrap(), "first");
        assert_eq!(queued.await.unwrap().unwrap(), "second");
        drop(lane);
        for t in threads {
            t.join().unwrap();
        }
        // Drained: the one session was closed.
        assert_eq!(backend.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_job_past_its_deadline_never_reaches_the_session() {
        let backend = Arc::new(FakeBackend::default());
        let (lane, _threads) = start(&backend, 1, 4).unwrap();
        let ran = Arc::new(AtomicU32::new(0));
        let r = lane
            .run(Some(Instant::now() - Duration::from_millis(1)), {
                let ran = Arc::clone(&ran);
                move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .await;
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        // A job with time left runs on the session opened at start.
        let s = lane
            .run(None, |slot| slot.attempt(&mut |s, _| Ok(*s)))
            .await;
        assert_eq!(s.unwrap(), 1);
    }

    #[test]
    fn a_session_that_cannot_open_fails_the_start() {
        let backend = Arc::new(FakeBackend::default());
        backend.fail_opens.store(1, Ordering::SeqCst);
        assert!(start(&backend, 2, 4).is_err());
    }
}
