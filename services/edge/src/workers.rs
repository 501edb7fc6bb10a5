//! The crypto-worker pool as the edge sees it.
//!
//! * **Membership.** `workers` entries are static URLs or
//!   `dns+http://name:port`: every A/AAAA record of `name` is a worker (a
//!   Kubernetes headless Service), re-resolved every
//!   `worker_resolve_interval_ms`. The members live in an [`ArcSwap`]
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

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use keymesh_common::grpc_tls::GrpcTls;
use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use keymesh_proto::crypto::v1::{GetHealthRequest, GetHealthResponse, HealthStatus};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::XksError;
use keymesh_limiter_client::LimiterClient;

/// How the edge dials one kind of peer (workers, or limiters) under
/// `[grpc_tls]`: its mesh identity (reloaded in place) and the identities
/// that kind's certificates must carry (pinned inside the `GrpcTls`).
#[derive(Debug, Clone)]
pub struct GrpcClientTls {
    pub tls: Arc<GrpcTls>,
}

/// A plaintext gRPC channel to `url` with the settings every keymesh hop uses.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    channel_with(url, None)
}

/// A gRPC channel to `url`, over mutual TLS when `tls` is given. URLs stay
/// `http://`: the connector does the TLS, tonic only sees a byte stream.
pub fn channel_with(url: &str, tls: Option<&GrpcClientTls>) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())?
        // Nagle + delayed ACK would add ~40 ms to small gRPC frames (the TLS
        // connector sets TCP_NODELAY itself).
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(match tls {
        Some(t) => endpoint
            .connect_with_connector_lazy(keymesh_common::grpc_tls::connector(Arc::clone(&t.tls))),
        None => endpoint.connect_lazy(),
    })
}

/// How long a health probe may take before the worker counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before re-opening a health Watch that ended or failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// A retry needs at least this much budget left to be worth sending.
const RETRY_FLOOR: Duration = Duration::from_millis(5);

/// Where workers come from: one `workers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One worker at this URL.
    Static(String),
    /// Every address `host` resolves to, on `port`.
    Dns { host: String, port: u16 },
}

impl Source {
    /// `http(s)://...` or `dns+http://name:port`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        if let Some(rest) = entry.strip_prefix("dns+http://") {
            let authority = rest.trim_end_matches('/');
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| format!("{entry:?}: dns+http:// needs name:port"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{entry:?}: bad port {port:?}"))?;
            if host.is_empty() || host.contains(['/', '@', '[', ']']) {
                return Err(format!("{entry:?}: bad host name"));
            }
            return Ok(Self::Dns {
                host: host.to_owned(),
                port,
            });
        }
        if !(entry.starts_with("http://") || entry.starts_with("https://")) {
            return Err(format!(
                "{entry:?}: expected http://host:port or dns+http://name:port"
            ));
        }
        Endpoint::from_shared(entry.to_owned()).map_err(|e| format!("{entry:?}: {e}"))?;
        Ok(Self::Static(entry.to_owned()))
    }
}

#[derive(Debug)]
pub struct Worker {
    pub endpoint: String,
    channel: Channel,
    /// Admitted: its last probe/watch said SERVING and no transport error since.
    serving: AtomicBool,
    in_flight: AtomicUsize,
    /// µs since the pool epoch of the last answer, or of the moment the worker
    /// went from idle to busy (so idle time never counts as service time).
    progress_at_us: AtomicU64,
    /// EWMA (1/8) of the busy time between two answers, in µs: the inverse of
    /// the worker's throughput under its current load.
    interval_us: AtomicU64,
    requests: metrics::Counter,
}

impl Worker {
    fn new(endpoint: String, serving: bool, tls: Option<&GrpcClientTls>) -> anyhow::Result<Self> {
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

    fn serving(&self) -> bool {
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

    fn begin(&self, now_us: u64) -> InFlight<'_> {
        self.requests.increment(1);
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.progress_at_us.store(now_us, Ordering::Relaxed);
        }
        InFlight(self)
    }

    /// The worker answered (with a result or an application error).
    fn answered(&self, now_us: u64) {
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
struct InFlight<'a>(&'a Worker);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which failures a call may be retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No effect in the HSM: a second attempt after a first that may have
    /// run only repeats work whose answer nobody saw. Retried on any
    /// evidence that the worker died, was unreachable or is unavailable.
    SideEffectFree,
    /// Changes HSM state (would create a token object, import a key): retried
    /// only when the first attempt provably never reached a worker.
    IfNeverSent,
}

/// Every RPC the edge sends a crypto-worker: its metric label and its
/// retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRpc {
    /// `CryptoWorker.GetKeyMetadata`.
    XksGetKeyMetadata,
    /// `CryptoWorker.Encrypt`.
    XksEncrypt,
    /// `CryptoWorker.Decrypt`.
    XksDecrypt,
    /// `KeyVault.GenerateKey`.
    VaultGenerateKey,
    /// `KeyVault.Encrypt`.
    VaultEncrypt,
    /// `KeyVault.Decrypt`.
    VaultDecrypt,
    /// `KeyVault.ReEncrypt`.
    VaultReEncrypt,
    /// `KeyVault.GenerateDataKey`.
    VaultDataKey,
    /// `KeyVault.GenerateDataKeyPair`.
    VaultDataKeyPair,
    /// `KeyVault.GenerateRandom`.
    VaultRandom,
}

impl WorkerRpc {
    /// Label of the edge's per-operation worker metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XksGetKeyMetadata => "GetKeyMetadata",
            Self::XksEncrypt => "Encrypt",
            Self::XksDecrypt => "Decrypt",
            Self::VaultGenerateKey => "kms_generate_key",
            Self::VaultEncrypt => "kms_encrypt",
            Self::VaultDecrypt => "kms_decrypt",
            Self::VaultReEncrypt => "kms_re_encrypt",
            Self::VaultDataKey => "kms_data_key",
            Self::VaultDataKeyPair => "kms_key_pair",
            Self::VaultRandom => "kms_random",
        }
    }

    /// THE retry classification. None of these RPCs leaves anything behind
    /// in the HSM: encrypt, re-encrypt, data keys and key pairs draw a fresh
    /// IV or fresh key material per attempt, so an attempt whose answer was
    /// lost produced a ciphertext or key nobody ever saw; decrypt, metadata
    /// and random are reads. GenerateKey creates only a session object (the
    /// unwrapped CMK, CKA_TOKEN=false, dropped with the session or the cache
    /// entry) and returns the key wrapped: the CMK exists only once the edge
    /// stores that blob, so a lost first answer leaves no key anyone can
    /// use. A future RPC that creates token objects or imports material
    /// must answer [`Retry::IfNeverSent`].
    pub fn retry(self) -> Retry {
        match self {
            Self::XksGetKeyMetadata
            | Self::XksEncrypt
            | Self::XksDecrypt
            | Self::VaultGenerateKey
            | Self::VaultEncrypt
            | Self::VaultDecrypt
            | Self::VaultReEncrypt
            | Self::VaultDataKey
            | Self::VaultDataKeyPair
            | Self::VaultRandom => Retry::SideEffectFree,
        }
    }

    /// Whether a call that failed with `status` may be sent again to
    /// another worker.
    pub fn may_retry(self, status: &tonic::Status) -> bool {
        match self.retry() {
            // A worker that answers UNAVAILABLE itself (with an ErrorInfo)
            // did not do the work either way.
            Retry::SideEffectFree => {
                is_transport_failure(status) || status.code() == tonic::Code::Unavailable
            }
            Retry::IfNeverSent => is_transport_failure(status) && never_sent(status),
        }
    }
}

/// Whether any error in `status`'s source chain satisfies `f`.
fn in_chain(
    status: &tonic::Status,
    f: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if f(e) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// hyper's HTTP/2 client reports `canceled` only for a request it never
/// handed to the connection ("connection was not ready", or "connection
/// closed" with the request given back undelivered): e.g. one queued while
/// a draining worker's GOAWAY arrived.
fn hyper_canceled(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_canceled)
}

/// RFC 9113 §6.8/§8.7: a stream above a GOAWAY's last-stream-id, or reset
/// with REFUSED_STREAM, was not processed by the server. h2 reports a remote
/// NO_ERROR GOAWAY on a stream only in that case (or when opening a stream
/// after the GOAWAY, which sends nothing): streams the worker accepted keep
/// running through its graceful drain, and a connection lost later fails
/// them with an I/O error instead.
fn h2_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<h2::Error>().is_some_and(|h| {
        h.is_remote()
            && ((h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR))
                || (h.is_reset() && h.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// The worker died or could not be reached: the status carries no worker
/// `ErrorInfo` and says UNAVAILABLE, or was made by the edge's own transport
/// (tonic attaches the underlying error as `source`; a status received from a
/// worker has none). A deadline is not such evidence; a cancel only when
/// hyper says it never sent the request.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use tonic::Code;
    if !status.details().is_empty() {
        return false;
    }
    match status.code() {
        Code::DeadlineExceeded => false,
        Code::Cancelled => in_chain(status, hyper_canceled),
        Code::Unavailable => true,
        _ => {
            std::error::Error::source(status).is_some()
                && !in_chain(status, |e| e.is::<tonic::TimeoutExpired>())
        }
    }
}

/// The request provably never reached a worker's application: a failed
/// connection attempt (tonic: UNAVAILABLE with a `tonic::ConnectError` in the
/// source chain, the TCP connect failed before any byte of the request was
/// written), a request hyper never handed to the connection, or a stream the
/// worker refused unprocessed (see [`h2_refused`]). Anything else (a reset,
/// an I/O error, EOF) may have happened after the worker received it.
pub fn never_sent(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => {
            in_chain(status, |e| e.is::<tonic::ConnectError>() || h2_refused(e))
        }
        tonic::Code::Cancelled => in_chain(status, hyper_canceled),
        _ => in_chain(status, h2_refused),
    }
}

pub struct WorkerPool {
    sources: Vec<Source>,
    /// Every known worker, in configuration then resolution order.
    members: ArcSwap<Vec<Arc<Worker>>>,
    /// The members currently admitted (rebuilt when membership or health changes).
    admitted: ArcSwap<Vec<Arc<Worker>>>,
    /// Serialises rebuilds of `admitted` (never held across an await).
    rebuild: Mutex<()>,
    /// Membership bookkeeping for the resolver: the last good answer per DNS
    /// source and the health Watch task of each member.
    book: Mutex<Book>,
    rng: AtomicU64,
    epoch: Instant,
    /// Probed with the workers (one prober); part of readiness.
    limiter: LimiterClient,
    /// Service mTLS for every worker channel, discovered ones included.
    tls: Option<GrpcClientTls>,
}

#[derive(Default)]
struct Book {
    last_good: HashMap<usize, Vec<SocketAddr>>,
    watches: HashMap<String, AbortHandle>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("sources", &self.sources)
            .field("members", &self.members.load().len())
            .finish_non_exhaustive()
    }
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Clone)]
pub struct FleetMember {
    pub id: String,
    pub model: String,
    pub vendor: String,
    pub status: HealthStatus,
    /// The worker did not answer in time (as opposed to answering UNAVAILABLE).
    pub timed_out: bool,
}

/// One `grpc.health.v1` Check: SERVING within `timeout`.
pub(crate) async fn serving(channel: Channel, timeout: Duration) -> bool {
    let mut client = HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(timeout);
    matches!(
        tokio::time::timeout(timeout, client.check(req)).await,
        Ok(Ok(resp)) if resp.get_ref().status() == ServingStatus::Serving
    )
}

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

impl PoolError for XksError {
    fn no_worker() -> Self {
        Self::Worker(crate::cause::WorkerFailure::NoWorker)
    }
    fn shed() -> Self {
        Self::Throttled
    }
    fn from_status(status: &tonic::Status) -> Self {
        Self::from_worker(status)
    }
}

/// A gRPC request with the remaining budget as its deadline and the trace context.
pub fn grpc<T>(msg: T, deadline: Instant) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
    keymesh_common::propagation::inject(req.metadata_mut());
    req
}

/// splitmix64: a cheap, well-mixed random number per pick from one counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl WorkerPool {
    /// The pool with its static workers (admitted optimistically, so a fresh
    /// edge does not refuse traffic for a probe interval); DNS sources are
    /// resolved by the task [`WorkerPool::start`] spawns.
    pub fn new(entries: &[String], limiter: LimiterClient) -> anyhow::Result<Self> {
        Self::with_tls(entries, limiter, None)
    }

    /// [`WorkerPool::new`], dialing every worker over mutual TLS when `tls`
    /// is given.
    pub fn with_tls(
        entries: &[String],
        limiter: LimiterClient,
        tls: Option<GrpcClientTls>,
    ) -> anyhow::Result<Self> {
        let sources = entries
            .iter()
            .map(|e| Source::parse(e).map_err(|m| anyhow::anyhow!("workers: {m}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let members = sources
            .iter()
            .filter_map(|s| match s {
                Source::Static(url) => Some(url),
                Source::Dns { .. } => None,
            })
            .map(|url| Worker::new(url.clone(), true, tls.as_ref()).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admitted = members.clone();
        Ok(Self {
            sources,
            members: ArcSwap::from_pointee(members),
            admitted: ArcSwap::from_pointee(admitted),
            rebuild: Mutex::new(()),
            book: Mutex::new(Book::default()),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            epoch: Instant::now(),
            limiter,
            tls,
        })
    }

    fn now_us(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Every worker currently known (admitted or not).
    pub fn members(&self) -> Arc<Vec<Arc<Worker>>> {
        self.members.load_full()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Every update is a plain insert/remove: never half-written.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rebuild_admitted(&self) {
        let _one = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.members.load();
        let admitted: Vec<_> = members.iter().filter(|w| w.serving()).cloned().collect();
        metrics::gauge!("keymesh_edge_workers", "state" => "known").set(members.len() as f64);
        metrics::gauge!("keymesh_edge_workers", "state" => "admitted").set(admitted.len() as f64);
        self.admitted.store(Arc::new(admitted));
    }

    fn set_serving(&self, w: &Worker, ok: bool, why: &'static str) {
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
    async fn attempt<T>(
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

    /// `/readyz`: at least one limiter replica serving (a lost replica only
    /// moves its keys to another) and at least one worker admitted.
    pub fn ready(&self) -> bool {
        self.limiter.ready() && !self.admitted.load().is_empty()
    }

    /// Probe every worker and every limiter replica once.
    pub async fn probe(&self) {
        let members = self.members.load_full();
        let checks = members
            .iter()
            .map(|w| serving(w.channel.clone(), PROBE_TIMEOUT));
        let (results, ()) = tokio::join!(
            futures_util::future::join_all(checks),
            self.limiter.probe(PROBE_TIMEOUT)
        );
        for (w, ok) in members.iter().zip(results) {
            self.set_serving(w, ok, "health check");
        }
    }

    /// Start the background tasks: the prober (every `probe_every`), the DNS
    /// resolver (every `resolve_every`, only with DNS sources) and one health
    /// Watch per worker. They stop when the runtime does.
    pub fn start(self: &Arc<Self>, probe_every: Duration, resolve_every: Duration) {
        for w in self.members.load().iter() {
            self.watch(w);
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(probe_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.probe().await;
            }
        });
        if self.sources.iter().any(|s| matches!(s, Source::Dns { .. })) {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(resolve_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    this.resolve(resolve_every).await;
                }
            });
        }
    }

    /// Follow `w`'s health Watch stream. NOT_SERVING ejects it at once; the
    /// stream is then dropped, because an open stream would hold the
    /// worker's graceful drain open (it waits for every stream to finish).
    fn watch(self: &Arc<Self>, w: &Arc<Worker>) {
        let (this, w) = (Arc::clone(self), Arc::clone(w));
        let endpoint = w.endpoint.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut client = HealthClient::new(w.channel.clone());
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(resp) = client.watch(req).await {
                    let mut stream = resp.into_inner();
                    while let Ok(Some(update)) = stream.message().await {
                        let ok = update.status() == ServingStatus::Serving;
                        this.set_serving(&w, ok, "health watch");
                        if !ok {
                            break;
                        }
                    }
                }
                tokio::time::sleep(WATCH_RETRY).await;
            }
        });
        if let Some(old) = self.book().watches.insert(endpoint, task.abort_handle()) {
            old.abort();
        }
    }

    /// Re-resolve the DNS sources and update the members: new addresses
    /// become workers (admitted by their first probe or watch answer), gone
    /// ones are dropped. A lookup that fails keeps that source's last good
    /// answer (probes eject any that died); one that returns no address
    /// yields no worker from that name. Both are counted and logged.
    pub async fn resolve(self: &Arc<Self>, timeout: Duration) {
        let mut wanted: Vec<String> = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                Source::Static(url) => wanted.push(url.clone()),
                Source::Dns { host, port } => {
                    let found = tokio::time::timeout(
                        timeout,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await;
                    let addrs = match found {
                        Ok(Ok(it)) => {
                            let mut v: Vec<SocketAddr> = it.collect();
                            v.sort();
                            v.dedup();
                            if v.is_empty() {
                                metrics::counter!("keymesh_edge_worker_resolve_empty_total", "name" => host.clone())
                                    .increment(1);
                                tracing::warn!(name = %host, "worker DNS name resolved to no address");
                            }
                            self.book().last_good.insert(i, v.clone());
                            v
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("keymesh_edge_worker_resolve_failures_total", "name" => host.clone())
                                .increment(1);
                            tracing::warn!(name = %host, error = %e, "worker DNS lookup failed");
                            self.book().last_good.get(&i).cloned().unwrap_or_default()
                        }
                        Err(_) => {
                            metrics::counter!("keymesh_edge_worker_resolve_failures_total", "name" => host.clone())
                                .increment(1);
                            tracing::warn!(name = %host, "worker DNS lookup timed out");
                            self.book().last_good.get(&i).cloned().unwrap_or_default()
                        }
                    };
                    wanted.extend(addrs.iter().map(|a| format!("http://{a}")));
                }
            }
        }
        wanted.dedup();
        self.set_members(&wanted).await;
    }

    async fn set_members(self: &Arc<Self>, wanted: &[String]) {
        let current = self.members.load_full();
        if current.len() == wanted.len()
            && current.iter().zip(wanted).all(|(w, u)| &w.endpoint == u)
        {
            return;
        }
        let mut next = Vec::with_capacity(wanted.len());
        let mut fresh = Vec::new();
        for url in wanted {
            if let Some(w) = current.iter().find(|w| &w.endpoint == url) {
                next.push(Arc::clone(w));
                continue;
            }
            match Worker::new(url.clone(), false, self.tls.as_ref()) {
                Ok(w) => {
                    let w = Arc::new(w);
                    tracing::info!(worker = %url, "worker discovered");
                    fresh.push(Arc::clone(&w));
                    next.push(w);
                }
                Err(e) => tracing::warn!(worker = %url, error = %e, "unusable worker address"),
            }
        }
        {
            let mut book = self.book();
            for gone in current.iter().filter(|w| !wanted.contains(&w.endpoint)) {
                tracing::info!(worker = %gone.endpoint, "worker removed");
                if let Some(task) = book.watches.remove(&gone.endpoint) {
                    task.abort();
                }
            }
        }
        self.members.store(Arc::new(next));
        self.rebuild_admitted();
        for w in &fresh {
            self.watch(w);
        }
        // Admit new workers now rather than at the next probe tick.
        let checks = fresh
            .iter()
            .map(|w| serving(w.channel.clone(), PROBE_TIMEOUT));
        let results = futures_util::future::join_all(checks).await;
        for (w, ok) in fresh.iter().zip(results) {
            self.set_serving(w, ok, "first health check");
        }
    }

    /// Ask every worker for its cached deep-health result, within `deadline`.
    pub async fn fleet(&self, deadline: Instant) -> Vec<FleetMember> {
        let members = self.members.load_full();
        let asks = members.iter().map(|w| async move {
            let mut req = tonic::Request::new(GetHealthRequest {});
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            keymesh_common::propagation::inject(req.metadata_mut());
            let answer = tokio::time::timeout_at(deadline, w.client().get_health(req)).await;
            match answer {
                Ok(Ok(resp)) => {
                    let GetHealthResponse {
                        worker_id,
                        model,
                        vendor,
                        status,
                        ..
                    } = resp.into_inner();
                    FleetMember {
                        id: worker_id,
                        model,
                        vendor,
                        status: HealthStatus::try_from(status).unwrap_or(HealthStatus::Unavailable),
                        timed_out: false,
                    }
                }
                Ok(Err(_)) | Err(_) => FleetMember {
                    id: w.endpoint.clone(),
                    model: "unreachable".into(),
                    vendor: String::new(),
                    status: HealthStatus::Unavailable,
                    timed_out: true,
                },
            }
        });
        futures_util::future::join_all(asks).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn pool(urls: &[&str]) -> Arc<WorkerPool> {
        let urls: Vec<String> = urls.iter().map(|s| (*s).to_owned()).collect();
        let limiter = LimiterClient::new(
            vec![(
                "http://127.0.0.1:1".into(),
                channel("http://127.0.0.1:1").unwrap(),
            )],
            keymesh_limiter_client::FailurePolicy::Open,
            64,
            keymesh_limiter_client::Transport {
                is_transport_failure,
                serving: |channel, timeout| Box::pin(serving(channel, timeout)),
            },
        );
        Arc::new(WorkerPool::new(&urls, limiter).unwrap())
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("dns+http://workers.ns.svc:7100"),
            Ok(Source::Dns {
                host: "workers.ns.svc".into(),
                port: 7100
            })
        );
        assert!(matches!(
            Source::parse("http://10.0.0.1:7100"),
            Ok(Source::Static(_))
        ));
        assert!(Source::parse("dns+http://workers").is_err());
        assert!(Source::parse("dns+http://:7100").is_err());
        assert!(Source::parse("tcp://x:1").is_err());
    }

    #[tokio::test]
    async fn idle_worker_has_no_queue_and_a_stalled_one_grows() {
        let w = Worker::new("http://127.0.0.1:1".into(), true, None).unwrap();
        assert_eq!(w.queue_wait(1_000_000), Duration::ZERO);
        // Healthy: answers every 100 µs while busy.
        for k in 0..20u64 {
            let g = w.begin(k * 100);
            w.answered(k * 100 + 100);
            drop(g);
        }
        let held: Vec<_> = (0..32).map(|_| w.begin(2_000)).collect();
        // Just after the burst: 32 × ~100 µs.
        assert!(w.queue_wait(2_050) < Duration::from_millis(4));
        // A 20 ms scheduling hiccup with 32 queued is not a 640 ms queue.
        assert!(w.queue_wait(22_000) < Duration::from_millis(30));
        // The worker stops answering: 300 ms without progress.
        let stalled = w.queue_wait(302_000);
        assert!(stalled >= Duration::from_millis(300), "{stalled:?}");
        // An answer restarts the clock.
        w.answered(302_100);
        assert!(w.queue_wait(302_200) < Duration::from_millis(100));
        drop(held);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.queue_wait(400_000), Duration::ZERO);
    }

    #[tokio::test]
    async fn p2c_prefers_the_less_loaded_and_honours_exclude() {
        let p = pool(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let members = p.members();
        let (a, b) = (&members[0], &members[1]);
        let _busy: Vec<_> = (0..3).map(|_| a.begin(0)).collect();
        for _ in 0..50 {
            let w = p.pick(None).unwrap();
            assert!(Arc::ptr_eq(&w, b));
        }
        assert!(Arc::ptr_eq(&p.pick(Some(b)).unwrap(), a));
        // Ejected workers are skipped while another is admitted.
        p.set_serving(b, false, "test");
        assert!(Arc::ptr_eq(&p.pick(None).unwrap(), a));
        // None admitted: any member is tried.
        p.set_serving(a, false, "test");
        assert!(p.pick(None).is_some());
        let single = pool(&["http://127.0.0.1:1"]);
        let only = single.members()[0].clone();
        assert!(single.pick(Some(&only)).is_none());
    }

    #[tokio::test]
    async fn connect_refused_is_provably_unsent() {
        // Bind then drop a listener: the port refuses connections.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let ch = channel(&format!("http://{addr}")).unwrap();
        let mut c = CryptoWorkerClient::new(ch);
        let s = c
            .get_key_metadata(keymesh_proto::crypto::v1::GetKeyMetadataRequest {
                key_id: "k".into(),
            })
            .await
            .unwrap_err();
        assert!(is_transport_failure(&s), "{s:?}");
        assert!(never_sent(&s), "{s:?}");
        // A worker's own UNAVAILABLE-less application error is neither.
        let app = tonic::Status::with_details(tonic::Code::Internal, "x", vec![8u8, 1].into());
        assert!(!is_transport_failure(&app));
        assert!(!never_sent(&app));
        let timeout = tonic::Status::deadline_exceeded("late");
        assert!(!is_transport_failure(&timeout));
    }

    #[test]
    fn side_effect_free_rpcs_retry_on_any_worker_failure() {
        use WorkerRpc::*;
        let all = [
            XksGetKeyMetadata,
            XksEncrypt,
            XksDecrypt,
            VaultGenerateKey,
            VaultEncrypt,
            VaultDecrypt,
            VaultReEncrypt,
            VaultDataKey,
            VaultDataKeyPair,
            VaultRandom,
        ];
        // A reset after the request may have been processed: an I/O error
        // as the source, not provably unsent.
        let reset = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(is_transport_failure(&reset) && !never_sent(&reset));
        // A worker that says UNAVAILABLE itself (with an ErrorInfo).
        let unavailable =
            tonic::Status::with_details(tonic::Code::Unavailable, "x", vec![8u8, 1].into());
        let app = tonic::Status::with_details(tonic::Code::NotFound, "x", vec![8u8, 1].into());
        let late = tonic::Status::deadline_exceeded("late");
        for rpc in all {
            assert_eq!(rpc.retry(), Retry::SideEffectFree, "{rpc:?}");
            assert!(rpc.may_retry(&reset), "{rpc:?}");
            assert!(rpc.may_retry(&unavailable), "{rpc:?}");
            assert!(!rpc.may_retry(&app), "{rpc:?}: an answer is final");
            assert!(!rpc.may_retry(&late), "{rpc:?}: no budget left");
        }
    }

    #[tokio::test]
    async fn dns_name_without_address_yields_no_worker() {
        let p = pool(&["dns+http://no-such-worker.invalid:7100"]);
        p.resolve(Duration::from_secs(5)).await;
        assert!(p.members().is_empty());
        assert!(p.pick(None).is_none());
        let p = pool(&["dns+http://localhost:7100"]);
        p.resolve(Duration::from_secs(5)).await;
        assert!(
            p.members()
                .iter()
                .any(|w| w.endpoint == "http://127.0.0.1:7100"),
            "{:?}",
            p.members()
        );
    }
}
