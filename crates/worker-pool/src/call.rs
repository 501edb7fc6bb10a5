//! The call path: pick, shed when the queue outlasts the budget, send with
//! the remaining deadline, and retry once on another worker.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use super::pool::WorkerPool;
use super::rpc::{WorkerRpc, is_transport_failure};
use super::worker::Worker;

/// A retry needs at least this much budget left to be worth sending.
const RETRY_FLOOR: Duration = Duration::from_millis(5);

/// How a REST dialect names the failures of [`WorkerPool::call`]: each
/// dialect has its own wire table, the pool only knows the causes.
pub trait PoolError {
    /// No worker is known at all.
    fn no_worker() -> Self;
    /// Shed: the chosen worker's queue outlasts the remaining budget.
    fn shed() -> Self;
    /// The worker answered with (or the transport produced) this status.
    fn from_status(status: &tonic::Status) -> Self;
}

/// A gRPC request with the remaining budget as its deadline and the trace context.
pub fn grpc<T>(msg: T, deadline: Instant) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
    keymesh_common::propagation::inject(req.metadata_mut());
    req
}

impl WorkerPool {
    /// One crypto call: pick a worker (P2C), shed if it cannot answer within
    /// the budget, send, and retry once on another worker as
    /// [`WorkerRpc::may_retry`] allows. `send` issues the RPC on a client;
    /// `msg` is cloned only when a retry is possible.
    pub async fn call<M, T, F, Fut, E>(
        &self,
        rpc: WorkerRpc,
        deadline: Instant,
        msg: M,
        mut send: F,
    ) -> Result<T, E>
    where
        M: Clone,
        F: FnMut(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        E: PoolError,
    {
        let operation = rpc.as_str();
        let Some(w) = self.pick(None) else {
            metrics::counter!("keymesh_edge_no_workers_total", "operation" => operation)
                .increment(1);
            tracing::warn!(operation, "no crypto-worker known");
            return Err(E::no_worker());
        };
        let now = Instant::now();
        // Shed rule: the chosen worker (the less loaded of two) is expected to
        // make this request queue longer than the budget it has left, so it
        // would become a 503 anyway; a 429 now tells the caller to back off
        // without spending HSM capacity on an answer nobody will read.
        let now_us = self.now_us(now);
        if w.queue_wait(now_us) >= deadline.saturating_duration_since(now) {
            metrics::counter!("keymesh_edge_shed_total", "operation" => operation, "reason" => "queue")
                .increment(1);
            return Err(E::shed());
        }
        let can_retry = self.members.load().len() > 1;
        let mut spare = Some(msg);
        let first = if can_retry {
            spare.clone()
        } else {
            spare.take()
        };
        let Some(first) = first else {
            return Err(E::no_worker());
        };
        let status = match self
            .attempt(&w, now_us, send(w.channel.clone(), grpc(first, deadline)))
            .await
        {
            Ok(r) => return Ok(r),
            Err(s) => s,
        };
        let allowed = rpc.may_retry(&status);
        let budget = deadline.saturating_duration_since(Instant::now());
        let (true, Some(msg), true) = (allowed, spare, budget > RETRY_FLOOR) else {
            return Err(E::from_status(&status));
        };
        let Some(w2) = self.pick(Some(&w)) else {
            return Err(E::from_status(&status));
        };
        metrics::counter!("keymesh_edge_worker_retries_total", "operation" => operation)
            .increment(1);
        tracing::debug!(operation, from = %w.endpoint, to = %w2.endpoint, "retrying on another worker");
        let now_us = self.now_us(Instant::now());
        self.attempt(&w2, now_us, send(w2.channel.clone(), grpc(msg, deadline)))
            .await
            .map_err(|s| E::from_status(&s))
    }

    /// Run one RPC on `w`, keeping its in-flight count and answer rate, and
    /// ejecting it on a transport failure (the probe re-admits it).
    pub(super) async fn attempt<T>(
        &self,
        w: &Worker,
        now_us: u64,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let _in_flight = w.begin(now_us);
        let result = rpc.await;
        match &result {
            Err(s) if is_transport_failure(s) => {
                tracing::warn!(worker = %w.endpoint, code = ?s.code(), error = %s.message(), "worker transport failure");
                self.set_serving(w, false, "transport error");
            }
            Err(s) => {
                tracing::debug!(worker = %w.endpoint, code = ?s.code(), error = %s.message(), "worker error");
                w.answered(self.now_us(Instant::now()));
            }
            Ok(_) => w.answered(self.now_us(Instant::now())),
        }
        result.map(tonic::Response::into_inner)
    }
}
