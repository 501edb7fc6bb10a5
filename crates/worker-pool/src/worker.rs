//! One worker as the balancer sees it: its channel, whether it is
//! admitted, and its load (in flight, answer rate, expected queue wait).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use tonic::transport::Channel;

use super::channel::{GrpcClientTls, channel_with};

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
