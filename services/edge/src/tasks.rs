//! The edge's background tasks (file watchers, the worker prober and
//! resolver, health watches, the purge loop, the seal migration), owned in
//! one place so that [`crate::serve`] stops them all when it returns instead
//! of leaving them running until the runtime ends.

use std::sync::Mutex;

use tokio::task::{AbortHandle, JoinHandle};

/// A set of running tasks, aborted together by [`Tasks::stop`] or on drop.
#[derive(Debug, Default)]
pub struct Tasks(Mutex<Vec<AbortHandle>>);

impl Tasks {
    /// Take ownership of `task`: it stops with the set.
    pub fn own<T>(&self, task: JoinHandle<T>) {
        let abort = task.abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A set lives as long as its server; drop the finished ones (the
        // seal migration, a one-shot) so it does not grow.
        tasks.retain(|t| !t.is_finished());
        tasks.push(abort);
    }

    /// Abort every owned task. Idempotent.
    pub fn stop(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    /// How many owned tasks are still running.
    pub fn running(&self) -> usize {
        let tasks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tasks.iter().filter(|t| !t.is_finished()).count()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn stop_aborts_every_owned_task() {
        let tasks = Tasks::default();
        let a = tokio::spawn(std::future::pending::<()>());
        let probe = a.abort_handle();
        tasks.own(a);
        tasks.own(tokio::spawn(std::future::pending::<()>()));
        assert_eq!(tasks.running(), 2);
        tasks.stop();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !probe.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "task still running");
            tokio::task::yield_now().await;
        }
        assert_eq!(tasks.running(), 0);
    }
}
