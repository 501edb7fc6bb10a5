//! Balancing and ejection: one worker's load book-keeping (in flight,
//! answer rate, expected queue wait), power-of-two-choices picking, and
//! admitting or ejecting a member as its health changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use tonic::transport::Channel;

use super::channel::{GrpcClientTls, channel_with};
use super::pool::WorkerPool;

#[derive(Debug)]
pub struct Worker {
    pub endpoint: String,
    pub(super) channel: Channel,
    /// Admitted: its last probe/watch said SERVING and no transport error since.
    pub(super) serving: AtomicBool,
    pub(super) in_flight: AtomicUsize,
    /// µs since the pool epoch of the last answer, or of the moment the worker
    /// went from idle to busy (so idle time never counts as service time).
    pub(super) progress_at_us: AtomicU64,
    /// EWMA (1/8) of the busy time between two answers, in µs: the inverse of
    /// the worker's throughput under its current load.
    pub(super) interval_us: AtomicU64,
    pub(super) requests: metrics::Counter,
}

impl Worker {
    pub(super) fn new(
        endpoint: String,
        serving: bool,
        tls: Option<&GrpcClientTls>,
    ) -> anyhow::Result<Self> {
        let requests =
            metrics::counter!("keymesh_edge_worker_requests_total", "worker" => endpoint.clone());
        Ok(Self {
            channel: channel_with(&endpoint, tls)?,
            endpoint,
            serving: AtomicBool::new(serving),
            in_flight: AtomicUsize::new(0),
            progress_at_us: AtomicU64::new(0),
            interval_us: AtomicU64::new(0),
            requests,
        })
    }

    pub fn client(&self) -> CryptoWorkerClient<Channel> {
        CryptoWorkerClient::new(self.channel.clone())
    }

    /// The worker's channel, for the KeyVault start-up check.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// How long a request sent now is expected to wait for the worker:
    /// `in_flight × interval + stall`. The interval (the worker's recent busy
    /// time per answer, i.e. 1/throughput) prices the queue ahead of it; the
    /// stall (time since the worker's last answer while it had work) covers a
    /// worker that stopped answering: a pause that has lasted d is expected
    /// to last about d more before the queue moves. The stall is added, not
    /// multiplied by the queue, so a few-ms scheduling hiccup under load does
    /// not look like a long queue. An idle worker has no wait.
    pub fn queue_wait(&self, now_us: u64) -> Duration {
        let n = self.in_flight() as u64;
        if n == 0 {
            return Duration::ZERO;
        }
        let stall = now_us.saturating_sub(self.progress_at_us.load(Ordering::Relaxed));
        let queue = n.saturating_mul(self.interval_us.load(Ordering::Relaxed));
        Duration::from_micros(queue.saturating_add(stall))
    }

    pub(super) fn begin(&self, now_us: u64) -> InFlight<'_> {
        self.requests.increment(1);
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.progress_at_us.store(now_us, Ordering::Relaxed);
        }
        InFlight(self)
    }

    /// The worker answered (with a result or an application error).
    pub(super) fn answered(&self, now_us: u64) {
        let last = self.progress_at_us.swap(now_us, Ordering::Relaxed);
        let sample = now_us.saturating_sub(last);
        // A racy read-modify-write is fine: this is an estimate.
        let old = self.interval_us.load(Ordering::Relaxed);
        // One long gap (a stall, a descheduled process) is the stall term's
        // business in `queue_wait`; capping a sample at 4× the average keeps
        // it from inflating the throughput estimate for the next ~30 answers,
        // while a real slowdown is still learnt (up to 1.375× per answer).
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample.min(old.saturating_mul(4)) / 8
        };
        self.interval_us.store(new, Ordering::Relaxed);
    }
}

/// One request in flight on a worker; dropped when it ends, however it ends
/// (including cancellation when the request deadline passes).
pub(super) struct InFlight<'a>(&'a Worker);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// splitmix64: a cheap, well-mixed random number per pick from one counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl WorkerPool {
    pub(super) fn rebuild_admitted(&self) {
        let _one = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.members.load();
        let admitted: Vec<_> = members.iter().filter(|w| w.serving()).cloned().collect();
        metrics::gauge!("keymesh_edge_workers", "state" => "known").set(members.len() as f64);
        metrics::gauge!("keymesh_edge_workers", "state" => "admitted").set(admitted.len() as f64);
        self.admitted.store(Arc::new(admitted));
    }

    pub(super) fn set_serving(&self, w: &Worker, ok: bool, why: &'static str) {
        if w.serving.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(worker = %w.endpoint, why, "worker admitted");
            } else {
                tracing::warn!(worker = %w.endpoint, why, "worker ejected");
            }
            metrics::gauge!("keymesh_edge_worker_serving", "worker" => w.endpoint.clone())
                .set(if ok { 1.0 } else { 0.0 });
            self.rebuild_admitted();
        }
    }

    /// Power of two choices among the admitted workers (all members when none
    /// is admitted), never `exclude`. `None` only when there is no candidate.
    pub fn pick(&self, exclude: Option<&Worker>) -> Option<Arc<Worker>> {
        let admitted = self.admitted.load();
        let list = if admitted.is_empty() {
            self.members.load_full()
        } else {
            Arc::clone(&admitted)
        };
        let ok = |w: &Arc<Worker>| exclude.is_none_or(|x| !std::ptr::eq(Arc::as_ptr(w), x));
        let n = list.len();
        match n {
            0 => None,
            1 => list.first().filter(|w| ok(w)).cloned(),
            _ => {
                let r = mix(self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
                let i = (r as usize) % n;
                let mut j = ((r >> 32) as usize) % (n - 1);
                if j >= i {
                    j += 1; // two distinct members
                }
                let (a, b) = (&list[i], &list[j]);
                let chosen = match (ok(a), ok(b)) {
                    (true, true) if b.in_flight() < a.in_flight() => b,
                    (true, _) => a,
                    (false, true) => b,
                    (false, false) => return None,
                };
                Some(Arc::clone(chosen))
            }
        }
    }
}
