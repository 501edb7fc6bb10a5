//! keymesh worker pool: the edge's client of the crypto-workers, as the
//! edge sees them. It knows nothing of the edge: its settings come as a
//! [`PoolConfig`] (built from `edge.toml`), and each REST dialect names its
//! failures through [`PoolError`]. Its readiness
//! ([`WorkerPool::any_admitted`]) is its own; the edge combines it with
//! its other dependencies'.
//!
//! * **Membership.** `workers` entries are static URLs or
//!   `dns+http://name:port`: every A/AAAA record of `name` is a worker (a
//!   Kubernetes headless Service), re-resolved every
//!   `worker_resolve_interval_ms`. The members live in an `ArcSwap`
//!   snapshot, so the request path never takes a lock.
//! * **Health.** Every member is probed with `grpc.health.v1` Check each
//!   second (catches a hung worker) and watched with Watch (a SIGTERMed
//!   worker's NOT_SERVING arrives within a round trip, before it closes its
//!   connections); a transport error ejects at once. Only admitted members
//!   take traffic, unless none is admitted (then any is tried: the probe may
//!   lag a restart and the caller has a deadline anyway).
//! * **Balancing.** Power of two choices on in-flight requests: two random
//!   members, the one with fewer requests in flight wins. One atomic counter
//!   per worker, no queue, no task per request.
//! * **Shedding** ([`Worker::queue_wait`]): a request whose expected wait
//!   exceeds its remaining budget is refused at once (429) instead of timing
//!   out later (503).
//! * **Retries** ([`WorkerPool::call`]): once, on another worker, within the
//!   remaining deadline, when the failure says the worker died, was
//!   unreachable or is unavailable. Every RPC the edge sends today is free
//!   of HSM-side effects and is retried on any such failure; a
//!   state-changing one would be retried only when it provably never left
//!   the edge ([`WorkerRpc::retry`] decides, in one place).
//!
//! Why not tower's `balance::p2c` + `discover` + `retry` + `load_shed`: the
//! pool's decisions need what those layers do not carry — shedding compares
//! a worker's expected queue wait with *this request's* remaining deadline
//! (tower's load-shed only sees `poll_ready`), the retry must know whether
//! the RPC may have reached the HSM ([`WorkerRpc::retry`]), and health
//! Watch streams eject members between requests. Wrapping them in tower
//! services would still need these three pieces hand-written, plus a boxed
//! service per call on the hot path; a measured comparison of the two is
//! not part of this change (see bench/REPORT.md for the pool's own cost).
//!
//! One file per seam, with no cycles: [`channel`](mod@channel) dials,
//! [`source`] says where workers come from, [`worker`] keeps one worker's
//! load, [`pool`] holds the members, [`discovery`] finds and probes them,
//! [`balance`] picks one and ejects the dead, [`call`] sends with shedding
//! and one retry, [`rpc`] classifies what may be retried, and [`failure`]
//! types what went wrong ([`WorkerFailure`]).

pub mod balance;
pub mod call;
pub mod channel;
pub mod discovery;
pub mod failure;
pub mod pool;
pub mod rpc;
pub mod source;
pub mod worker;

pub use call::{PoolError, grpc};
pub use channel::{GrpcClientTls, channel, channel_with};
pub use discovery::PROBE_TIMEOUT;
pub use failure::WorkerFailure;
pub use pool::{FleetMember, PoolConfig, WorkerPool};
pub use rpc::{Retry, WorkerRpc, is_transport_failure, never_sent};
pub use source::Source;
pub use source::serving;
pub use worker::Worker;

#[cfg(test)]
mod tests;
