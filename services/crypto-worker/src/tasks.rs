//! The worker's background tasks and their owner: [`crate::serve`] starts
//! them, holds them in one [`Background`], and stops them all on shutdown
//! (or on any early return, when the owner is dropped). The tasks that read
//! the session pool are wired here, so the modules they report to
//! ([`crate::metrics`]) or feed ([`crate::wrapped`]) need not know the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::health::HealthState;
use crate::metrics;
use crate::pool::Pool;

/// Running background tasks, stopped together.
#[derive(Debug, Default)]
pub struct Background {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    /// Own `task` (named for the log) from now on.
    pub fn add(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.tasks.push((name, task));
    }

    /// Abort every task and wait until each has stopped, so whatever it
    /// held (pool handles keep the session threads alive) is released.
    pub async fn stop(mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
        for (name, task) in self.tasks.drain(..) {
            if let Err(e) = task.await
                && !e.is_cancelled()
            {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Only reached with tasks left when `serve` returns early (an error
        // after they started): they must not outlive it.
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// Refresh the pool and health gauges ([`metrics::spawn_sampler`]) until
/// aborted.
pub fn spawn_sampler(pool: Pool, health: Arc<HealthState>) -> JoinHandle<()> {
    let sizes = metrics::PoolSizes {
        sessions: pool.sessions(),
        capacity: pool.capacity(),
        slow_sessions: pool.slow_sessions(),
        slow_capacity: pool.slow_capacity(),
    };
    metrics::spawn_sampler(sizes, move || metrics::Sample {
        queued: pool.queued(),
        busy: pool.busy(),
        slow_queued: pool.slow_queued(),
        slow_busy: pool.slow_busy(),
        unwrapped_keys: pool.unwrapped_keys(),
        health: health.status(Instant::now()).0,
    })
}

/// Sweep idle unwrapped keys every `every` until aborted. The sweep runs as
/// a pool job, since destroying objects calls the HSM; a full queue skips a
/// round.
pub fn spawn_sweeper(pool: Pool, every: Duration) -> JoinHandle<()> {
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

    /// A task that notes, when dropped (i.e. aborted), that it stopped.
    fn spawn_flagging(stopped: &Arc<std::sync::atomic::AtomicBool>) -> JoinHandle<()> {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Flag(Arc::clone(stopped));
        tokio::spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        })
    }

    #[tokio::test]
    async fn stop_ends_every_task() {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Background::default();
        tasks.add("a", spawn_flagging(&stopped));
        tasks.add("b", tokio::spawn(async {}));
        tasks.stop().await;
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn dropping_the_owner_aborts_the_tasks() {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Background::default();
        tasks.add("a", spawn_flagging(&stopped));
        drop(tasks);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the task outlived its owner");
            tokio::task::yield_now().await;
        }
    }
}
