//! Quota checks against the rate-limiter, leased so most requests pay no
//! round trip.
//!
//! Per (tenant, operation) the edge keeps a small lease: permits granted by
//! the limiter that are still valid. A request takes one under a short std
//! mutex (never held across an await). When the lease is empty or expired, one
//! request per bucket refills it (a tokio mutex serialises refills; the others
//! wait on it and then usually find permits). The lease size starts at 1 and
//! doubles after every fully granted lease up to `max_lease`, dropping back to
//! 1 after a partial or zero grant: a low quota stays exact (permits are never
//! hoarded by one edge), a hot tenant amortises the round trip over up to
//! `max_lease` requests.
//!
//! Two outcomes are remembered so a burst of requests does not turn into a
//! burst of RPCs: a throttle until its `retry_after` (the limiter said no
//! permit exists before then), and a limiter failure for [`FAILURE_BACKOFF`]
//! (otherwise, with the limiter black-holed, every request would wait out its
//! own RPC timeout behind the refill lock).
//!
//! **Replicas.** The limiter may run as several replicas that share nothing:
//! each bucket key is routed to one replica by rendezvous (highest random
//! weight) hashing over the configured replica URLs ([`hrw`]), so every edge
//! sends a key to the same replica and its quota is enforced once. The
//! replica order of a bucket is computed when the bucket is created, so the
//! request path does no hashing. A replica that is down (its
//! `grpc.health.v1` probe is not SERVING, or an RPC to it failed in
//! transport) is skipped and the key falls to the next replica in its HRW
//! order: losing a replica resets only the buckets it owned. The failure
//! policy applies only when no replica answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keymesh_proto::ratelimit::v1::AcquireRequest;
use keymesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Longest a limiter round trip may take: past this the replica is treated as
/// unavailable, so a slow replica costs a request at most 50 ms (and a refill
/// that falls through to the next replica at most [`REFILL_BUDGET`]).
pub const RPC_TIMEOUT: Duration = Duration::from_millis(50);

/// After a limiter failure, how long a bucket answers by policy without
/// asking again.
pub const FAILURE_BACKOFF: Duration = Duration::from_millis(250);

/// Default largest lease (permits per round trip).
pub const DEFAULT_MAX_LEASE: u32 = 64;

/// The limiter's upper bound on one lease (`MAX_PERMITS` in the service).
const LIMITER_MAX_PERMITS: u32 = 10_000;

/// At most one "limiter unavailable" warning per bucket per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Total limiter time of one refill across replicas: a black-holed owner
/// costs one [`RPC_TIMEOUT`], then the next replica still gets one (the
/// failed owner is marked down, so later refills skip it at once).
const REFILL_BUDGET: Duration = RPC_TIMEOUT.saturating_mul(2);

/// Most replicas accepted (bucket replica orders are stored as `u16`).
pub const MAX_REPLICAS: usize = 64;

/// Rendezvous (highest random weight) hashing of bucket keys over replicas.
///
/// The hash must be stable across processes and builds (every edge has to
/// pick the same owner for a key), so it is FNV-1a (`fnv` crate, fixed by its
/// spec) rather than std's `DefaultHasher` (unspecified, may change between
/// Rust releases), finished with splitmix64 because FNV alone mixes its high
/// bits poorly and HRW compares whole 64-bit weights.
pub mod hrw {
    use std::hash::Hasher;

    /// splitmix64's finaliser: a bijection with full avalanche.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The hash of a replica's identity (its configured URL).
    pub fn replica_seed(endpoint: &str) -> u64 {
        let mut h = fnv::FnvHasher::default();
        h.write(endpoint.as_bytes());
        mix(h.finish())
    }

    /// The hash of a bucket key. The 0xff separator cannot occur in UTF-8,
    /// so ("a", "bc") and ("ab", "c") differ.
    pub fn key_hash(tenant: &str, operation: &str) -> u64 {
        let mut h = fnv::FnvHasher::default();
        h.write(tenant.as_bytes());
        h.write_u8(0xff);
        h.write(operation.as_bytes());
        h.finish()
    }

    /// Replica indices, best first: the key's owner, then where the key goes
    /// if the owner is down, and so on. Removing a replica leaves the
    /// relative order of the others unchanged, so only its own keys move.
    pub fn order(key: u64, seeds: &[u64]) -> Box<[u16]> {
        let mut weighted: Vec<(u64, u16)> = seeds
            .iter()
            .zip(0u16..)
            .map(|(&seed, i)| (mix(key ^ seed), i))
            .collect();
        // Highest weight first; the index breaks (astronomically unlikely) ties.
        weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        weighted.into_iter().map(|(_, i)| i).collect()
    }
}

/// What to do when the limiter cannot be asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Allow the request (availability over quota enforcement). Default.
    #[default]
    Open,
    /// Refuse the request as unavailable.
    Closed,
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Over quota; one permit is expected after `retry_after`.
    Throttle {
        retry_after: Duration,
    },
    /// The limiter could not be asked and the policy is `Closed`.
    Unavailable,
}

/// Why a limiter round trip failed (logged, never shown to clients).
#[derive(Debug, thiserror::Error)]
enum LimiterError {
    #[error("limiter did not answer within {0:?}")]
    Timeout(Duration),
    #[error("request deadline passed before the limiter was asked")]
    DeadlinePassed,
    #[error("limiter RPC failed: {0}")]
    Rpc(#[from] tonic::Status),
}

impl LimiterError {
    /// Evidence that the replica (not the request) is the problem, so the
    /// next replica may answer: it did not answer in time, or the call failed
    /// in transport. A status the replica itself sent (e.g. INVALID_ARGUMENT)
    /// would be the same on every replica.
    fn replica_failed(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::DeadlinePassed => false,
            Self::Rpc(status) => crate::mesh::is_transport_failure(status),
        }
    }
}

/// Local state of one (tenant, operation) bucket.
#[derive(Debug)]
struct Lease {
    remaining: u32,
    expires: Instant,
    next_size: u32,
    throttled_until: Option<Instant>,
    failed_until: Option<Instant>,
    last_warn: Option<Instant>,
}

/// What the local state alone can answer.
enum Local {
    Allow,
    Throttle(Duration),
    Failed,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Self {
            remaining: 0,
            expires: now,
            next_size: 1,
            throttled_until: None,
            failed_until: None,
            last_warn: None,
        }
    }

    fn local(&mut self, now: Instant) -> Option<Local> {
        if self.remaining > 0 && now < self.expires {
            self.remaining -= 1;
            return Some(Local::Allow);
        }
        if let Some(until) = self.throttled_until {
            if now < until {
                return Some(Local::Throttle(until - now));
            }
            self.throttled_until = None;
        }
        if let Some(until) = self.failed_until {
            if now < until {
                return Some(Local::Failed);
            }
            self.failed_until = None;
        }
        None
    }
}

struct Bucket {
    lease: Mutex<Lease>,
    /// Held for the duration of one refill RPC: one refill in flight.
    refill: tokio::sync::Mutex<()>,
    /// Replica indices in this key's HRW order (owner first), computed once.
    order: Box<[u16]>,
}

impl Bucket {
    /// The lease, even if a panicking thread poisoned the lock: every update
    /// to it is a plain field store, so it is never half-written.
    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Health of one replica as the edge sees it.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// One limiter replica.
struct Replica {
    /// The configured URL: the replica's identity for hashing and logs.
    endpoint: String,
    channel: Channel,
    client: RateLimiterClient<Channel>,
    /// [`hrw::replica_seed`] of `endpoint`.
    seed: u64,
    /// UNKNOWN until the first probe, then UP/DOWN. UNKNOWN routes (so a
    /// fresh edge does not fail open for a probe interval) but does not
    /// count towards readiness.
    state: AtomicU8,
}

impl Replica {
    fn routable(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DOWN
    }
}

struct Inner {
    replicas: Box<[Replica]>,
    policy: FailurePolicy,
    max_lease: u32,
    /// operation → tenant → bucket (nested so lookups need no allocation).
    buckets: RwLock<HashMap<&'static str, HashMap<String, Arc<Bucket>>>>,
}

/// Leasing client of `keymesh.ratelimit.v1.RateLimiter`. Cheap to clone.
#[derive(Clone)]
pub struct LimiterClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LimiterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterClient")
            .field(
                "replicas",
                &self
                    .inner
                    .replicas
                    .iter()
                    .map(|r| r.endpoint.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("policy", &self.inner.policy)
            .field("max_lease", &self.inner.max_lease)
            .finish_non_exhaustive()
    }
}

impl LimiterClient {
    /// One client over `replicas` (configured URL, channel), at least one and
    /// at most [`MAX_REPLICAS`] (config validation enforces both; extra
    /// entries are ignored). `max_lease` is clamped to 1..=10000 (the
    /// limiter's largest lease).
    pub fn new(replicas: Vec<(String, Channel)>, policy: FailurePolicy, max_lease: u32) -> Self {
        let replicas = replicas
            .into_iter()
            .take(MAX_REPLICAS)
            .map(|(endpoint, channel)| Replica {
                seed: hrw::replica_seed(&endpoint),
                endpoint,
                client: RateLimiterClient::new(channel.clone()),
                channel,
                state: AtomicU8::new(UNKNOWN),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                replicas,
                policy,
                max_lease: max_lease.clamp(1, LIMITER_MAX_PERMITS),
                buckets: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Ready when at least one replica's last probe said SERVING.
    pub fn ready(&self) -> bool {
        self.inner
            .replicas
            .iter()
            .any(|r| r.state.load(Ordering::Relaxed) == UP)
    }

    /// Probe every replica's `grpc.health.v1` once (the edge's 1 s prober).
    pub async fn probe(&self, timeout: Duration) {
        let checks = self
            .inner
            .replicas
            .iter()
            .map(|r| crate::mesh::serving(r.channel.clone(), timeout));
        let results = futures_util::future::join_all(checks).await;
        for (r, ok) in self.inner.replicas.iter().zip(results) {
            self.set_state(r, if ok { UP } else { DOWN }, "health check");
        }
    }

    fn set_state(&self, r: &Replica, state: u8, why: &'static str) {
        let old = r.state.swap(state, Ordering::Relaxed);
        if old == state {
            return;
        }
        let up = state == UP;
        metrics::gauge!("keymesh_edge_limiter_serving", "replica" => r.endpoint.clone())
            .set(if up { 1.0 } else { 0.0 });
        // UNKNOWN → UP is the normal start, not news.
        if up && old == UNKNOWN {
            tracing::debug!(replica = %r.endpoint, why, "rate-limiter replica serving");
        } else if up {
            tracing::info!(replica = %r.endpoint, why, "rate-limiter replica back");
        } else {
            tracing::warn!(replica = %r.endpoint, why, "rate-limiter replica down; its keys move to the next replica");
        }
    }

    /// Take one permit for (tenant, operation), refilling the lease from the
    /// limiter when needed; never waits past `deadline` for the limiter.
    pub async fn check(
        &self,
        tenant: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Decision {
        let bucket = self.bucket(tenant, operation);
        if let Some(local) = bucket.lease().local(Instant::now()) {
            return self.decide(local);
        }

        let Ok(_refill) = tokio::time::timeout_at(deadline, bucket.refill.lock()).await else {
            return self.failed(&bucket, tenant, operation, LimiterError::DeadlinePassed);
        };
        // The refill we waited for may have answered for us.
        if let Some(local) = bucket.lease().local(Instant::now()) {
            return self.decide(local);
        }
        let size = bucket.lease().next_size;
        let response = match self
            .acquire_routed(&bucket, tenant, operation, size, deadline)
            .await
        {
            Ok(r) => r,
            Err(e) => return self.failed(&bucket, tenant, operation, e),
        };

        let now = Instant::now();
        let granted = response.granted.min(size);
        let mut lease = bucket.lease();
        lease.failed_until = None;
        if granted == 0 {
            let retry_after = Duration::from_millis(u64::from(response.retry_after_ms.max(1)));
            lease.remaining = 0;
            lease.next_size = 1;
            lease.throttled_until = Some(now + retry_after);
            return Decision::Throttle { retry_after };
        }
        lease.remaining = granted - 1;
        lease.expires = now + Duration::from_millis(u64::from(response.lease_ttl_ms));
        lease.next_size = if granted == size {
            size.saturating_mul(2).min(self.inner.max_lease)
        } else {
            1
        };
        Decision::Allow
    }

    fn decide(&self, local: Local) -> Decision {
        match local {
            Local::Allow => Decision::Allow,
            Local::Throttle(retry_after) => Decision::Throttle { retry_after },
            Local::Failed => self.by_policy(),
        }
    }

    fn by_policy(&self) -> Decision {
        match self.inner.policy {
            FailurePolicy::Open => {
                metrics::counter!("keymesh_limiter_unavailable_total").increment(1);
                Decision::Allow
            }
            FailurePolicy::Closed => Decision::Unavailable,
        }
    }

    fn failed(
        &self,
        bucket: &Bucket,
        tenant: &str,
        operation: &'static str,
        error: LimiterError,
    ) -> Decision {
        let now = Instant::now();
        let warn = {
            let mut lease = bucket.lease();
            lease.failed_until = Some(now + FAILURE_BACKOFF);
            let due = lease
                .last_warn
                .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL);
            if due {
                lease.last_warn = Some(now);
            }
            due
        };
        if warn {
            tracing::warn!(
                tenant,
                operation,
                policy = ?self.inner.policy,
                %error,
                "rate-limiter unavailable"
            );
        }
        self.by_policy()
    }

    /// Ask the bucket's replicas in HRW order, skipping those known to be
    /// down (unless all are: the probe may lag a restart), until one answers
    /// or [`REFILL_BUDGET`] / the request deadline runs out. A replica that
    /// fails in transport is marked down at once; the prober re-admits it.
    async fn acquire_routed(
        &self,
        bucket: &Bucket,
        tenant: &str,
        operation: &'static str,
        permits: u32,
        deadline: Instant,
    ) -> Result<keymesh_proto::ratelimit::v1::AcquireResponse, LimiterError> {
        let replicas = &self.inner.replicas;
        let deadline = deadline.min(Instant::now() + REFILL_BUDGET);
        let any_routable = replicas.iter().any(Replica::routable);
        let mut last = LimiterError::DeadlinePassed;
        for &i in &bucket.order {
            let Some(r) = replicas.get(usize::from(i)) else {
                continue;
            };
            if any_routable && !r.routable() {
                continue;
            }
            match self.acquire(r, tenant, operation, permits, deadline).await {
                Ok(response) => return Ok(response),
                Err(e) if e.replica_failed() => {
                    self.set_state(r, DOWN, "rpc failure");
                    tracing::debug!(replica = %r.endpoint, tenant, operation, error = %e, "limiter replica failed; trying the next");
                    last = e;
                }
                // The refill budget ran out: report the replica failure that
                // used it up, if any.
                Err(LimiterError::DeadlinePassed) => break,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn acquire(
        &self,
        replica: &Replica,
        tenant: &str,
        operation: &'static str,
        permits: u32,
        deadline: Instant,
    ) -> Result<keymesh_proto::ratelimit::v1::AcquireResponse, LimiterError> {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(RPC_TIMEOUT);
        if timeout.is_zero() {
            return Err(LimiterError::DeadlinePassed);
        }
        let mut request = tonic::Request::new(AcquireRequest {
            tenant: tenant.to_owned(),
            operation: operation.to_owned(),
            permits,
        });
        // grpc-timeout lets the limiter drop work nobody waits for; the local
        // timeout also covers connecting, which grpc-timeout does not.
        request.set_timeout(timeout);
        keymesh_common::propagation::inject(request.metadata_mut());
        let mut client = replica.client.clone();
        match tokio::time::timeout(timeout, client.acquire(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(LimiterError::Timeout(timeout)),
        }
    }

    fn bucket(&self, tenant: &str, operation: &'static str) -> Arc<Bucket> {
        {
            let map = self.inner.buckets.read().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = map.get(operation).and_then(|t| t.get(tenant)) {
                return Arc::clone(b);
            }
        }
        let mut map = self
            .inner
            .buckets
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let bucket = map
            .entry(operation)
            .or_default()
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                let seeds: Vec<u64> = self.inner.replicas.iter().map(|r| r.seed).collect();
                Arc::new(Bucket {
                    lease: Mutex::new(Lease::new(Instant::now())),
                    refill: tokio::sync::Mutex::new(()),
                    order: hrw::order(hrw::key_hash(tenant, operation), &seeds),
                })
            });
        Arc::clone(bucket)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use keymesh_proto::ratelimit::v1::AcquireResponse;
    use keymesh_proto::ratelimit::v1::rate_limiter_server::{RateLimiter, RateLimiterServer};
    use tonic::{Request, Response, Status};

    /// An in-process limiter with a fixed budget (no refill), recording the
    /// lease sizes asked for and the most RPCs it saw in flight at once.
    #[derive(Default)]
    struct Fake {
        budget: AtomicU32,
        ttl_ms: u32,
        asked: Mutex<Vec<u32>>,
        in_flight: AtomicU32,
        max_in_flight: AtomicU32,
    }

    /// Newtype so the server can share the `Fake` with the test body.
    struct FakeService(Arc<Fake>);

    #[tonic::async_trait]
    impl RateLimiter for FakeService {
        async fn acquire(
            &self,
            request: Request<AcquireRequest>,
        ) -> Result<Response<AcquireResponse>, Status> {
            let fake = &self.0;
            let n = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            fake.max_in_flight.fetch_max(n, Ordering::SeqCst);
            // Give concurrent callers a chance to pile up behind this RPC.
            tokio::task::yield_now().await;
            let want = request.get_ref().permits;
            fake.asked.lock().unwrap().push(want);
            let mut granted = 0;
            let _ = fake
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    granted = b.min(want);
                    Some(b - granted)
                });
            fake.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(Response::new(AcquireResponse {
                granted,
                retry_after_ms: if granted == 0 { 100 } else { 0 },
                lease_ttl_ms: fake.ttl_ms,
            }))
        }
    }

    async fn start(fake: Arc<Fake>) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // tonic-health reports the overall service ("") SERVING.
        let (_, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(RateLimiterServer::new(FakeService(fake)))
                .serve_with_incoming(keymesh_common::net::nodelay_incoming(listener)),
        );
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
    }

    /// A single-replica configuration.
    fn one(channel: Channel) -> Vec<(String, Channel)> {
        vec![("http://limiter".to_owned(), channel)]
    }

    fn fake(budget: u32, ttl_ms: u32) -> Arc<Fake> {
        Arc::new(Fake {
            budget: AtomicU32::new(budget),
            ttl_ms,
            ..Fake::default()
        })
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn lease_doubles_up_to_max() {
        let f = fake(1_000_000, 60_000);
        let c = LimiterClient::new(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 8);
        for _ in 0..(1 + 2 + 4 + 8 + 8) {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4, 8, 8]);
    }

    #[tokio::test]
    async fn partial_grant_resets_and_throttle_is_remembered() {
        let f = fake(5, 60_000);
        let c = LimiterClient::new(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
        // 1 (full) → 2 (full) → ask 4, get the last 2 (partial) → ask 1, get 0.
        for _ in 0..5 {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(
            c.check("/t", "Encrypt", later()).await,
            Decision::Throttle {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4, 1]);
        // Within retry_after the throttle is answered locally.
        assert!(matches!(
            c.check("/t", "Encrypt", later()).await,
            Decision::Throttle { .. }
        ));
        assert_eq!(f.asked.lock().unwrap().len(), 4);
        // Buckets are per (tenant, operation).
        let before = f.asked.lock().unwrap().len();
        assert!(matches!(
            c.check("/t", "Decrypt", later()).await,
            Decision::Throttle { .. }
        ));
        assert_eq!(f.asked.lock().unwrap().len(), before + 1);
    }

    #[tokio::test]
    async fn expired_lease_is_not_used() {
        // ttl 0: every granted lease expires at once, so each request asks.
        let f = fake(1_000, 0);
        let c = LimiterClient::new(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
        for _ in 0..3 {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_refill_in_flight_per_bucket() {
        let f = fake(1_000_000, 60_000);
        let c = LimiterClient::new(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.check("/t", "Encrypt", later()).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Decision::Allow);
        }
        assert_eq!(f.max_in_flight.load(Ordering::SeqCst), 1);
        // Leases doubled: far fewer RPCs than requests.
        assert!(f.asked.lock().unwrap().len() <= 8);
    }

    async fn nothing_listening() -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
    }

    #[tokio::test]
    async fn fail_open_allows() {
        let c = LimiterClient::new(one(nothing_listening().await), FailurePolicy::Open, 64);
        for _ in 0..3 {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
    }

    #[tokio::test]
    async fn fail_closed_is_unavailable() {
        let c = LimiterClient::new(one(nothing_listening().await), FailurePolicy::Closed, 64);
        assert_eq!(
            c.check("/t", "Encrypt", later()).await,
            Decision::Unavailable
        );
    }

    #[tokio::test]
    async fn passed_deadline_applies_policy_without_rpc() {
        let f = fake(10, 60_000);
        let c = LimiterClient::new(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
        assert_eq!(
            c.check("/t", "Encrypt", Instant::now()).await,
            Decision::Unavailable
        );
        assert!(f.asked.lock().unwrap().is_empty());
    }

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hrw::key_hash(&format!("/tenant-{i}/kms/xks/v1"), "Encrypt"))
            .collect()
    }

    fn seeds(urls: &[&str]) -> Vec<u64> {
        urls.iter().map(|u| hrw::replica_seed(u)).collect()
    }

    #[test]
    fn hrw_is_stable_and_order_independent() {
        let urls = ["http://a:7200", "http://b:7200", "http://c:7200"];
        let fwd = seeds(&urls);
        let rev: Vec<u64> = fwd.iter().rev().copied().collect();
        for k in keys(200) {
            let a = hrw::order(k, &fwd);
            assert_eq!(a, hrw::order(k, &fwd), "deterministic");
            // Listing the replicas in another order picks the same owner.
            let b = hrw::order(k, &rev);
            assert_eq!(urls[usize::from(a[0])], urls[2 - usize::from(b[0])]);
            let mut sorted = a.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2], "every replica once");
        }
        // Pinned values (from an independent Python FNV-1a + splitmix64): the
        // hash is part of the contract between edges (all must route a key to
        // the same replica, across versions), so a change must be loud.
        assert_eq!(
            hrw::key_hash("/demo/kms/xks/v1", "Encrypt"),
            0x02de_fae2_a0eb_5060
        );
        for (tenant, want) in [
            ("/demo/kms/xks/v1", [0, 2, 1]),
            ("/tenant-a/kms/xks/v1", [2, 1, 0]),
            ("/tenant-b/kms/xks/v1", [2, 0, 1]),
        ] {
            let got = hrw::order(hrw::key_hash(tenant, "Encrypt"), &fwd);
            assert_eq!(*got, want, "{tenant}");
        }
    }

    #[test]
    fn hrw_is_balanced() {
        for n in [2usize, 3] {
            let urls: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:7200")).collect();
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            let seeds = seeds(&urls);
            let mut owned = vec![0usize; n];
            for k in keys(1000) {
                owned[usize::from(hrw::order(k, &seeds)[0])] += 1;
            }
            let fair = 1000 / n;
            for c in &owned {
                // Binomial spread is about ±3 sigma ≈ ±50 keys; allow ±25 %.
                assert!(c.abs_diff(fair) < fair / 4, "{n} replicas: {owned:?}");
            }
        }
    }

    #[test]
    fn hrw_removing_a_replica_moves_only_its_keys() {
        let all = seeds(&["http://a:7200", "http://b:7200", "http://c:7200"]);
        // Without b (index 1): a keeps 0, c becomes 1.
        let without_b = vec![all[0], all[2]];
        let mut moved = 0;
        for k in keys(1000) {
            let before = hrw::order(k, &all);
            let after = hrw::order(k, &without_b)[0];
            let after = [0u16, 2][usize::from(after)];
            if before[0] == 1 {
                // b's keys go to their second choice.
                assert_eq!(after, before[1]);
                moved += 1;
            } else {
                assert_eq!(after, before[0], "a key b did not own moved");
            }
        }
        assert!(moved > 200, "{moved}");
    }

    #[tokio::test]
    async fn a_down_replica_moves_only_its_keys() {
        let (fa, fb) = (fake(1_000_000, 60_000), fake(1_000_000, 60_000));
        let (ca, cb) = (start(Arc::clone(&fa)).await, start(Arc::clone(&fb)).await);
        let urls = ["http://a", "http://b"];
        let c = LimiterClient::new(
            vec![(urls[0].into(), ca), (urls[1].into(), cb)],
            FailurePolicy::Closed,
            1,
        );
        let tenants: Vec<String> = (0..40).map(|i| format!("/t{i}")).collect();
        let owner = |t: &str| {
            let s = seeds(&urls);
            hrw::order(hrw::key_hash(t, "Encrypt"), &s)[0]
        };
        for t in &tenants {
            assert_eq!(c.check(t, "Encrypt", later()).await, Decision::Allow);
        }
        let on_a = tenants.iter().filter(|t| owner(t) == 0).count();
        assert_eq!(fa.asked.lock().unwrap().len(), on_a);
        assert_eq!(fb.asked.lock().unwrap().len(), tenants.len() - on_a);
        assert!(on_a > 0 && on_a < tenants.len(), "{on_a}");

        // b stops answering in transport: its keys go to a, a's stay on a,
        // nothing fails (policy Closed would say Unavailable).
        let dead = LimiterClient::new(
            vec![
                (urls[0].into(), start(Arc::clone(&fa)).await),
                (urls[1].into(), nothing_listening().await),
            ],
            FailurePolicy::Closed,
            1,
        );
        let before = fa.asked.lock().unwrap().len();
        for t in &tenants {
            assert_eq!(dead.check(t, "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(fa.asked.lock().unwrap().len(), before + tenants.len());
        // The failure marked b down: its keys go straight to a next time.
        assert!(dead.inner.replicas[1].state.load(Ordering::Relaxed) == DOWN);
        assert!(!dead.ready(), "no probe has said SERVING yet");
        dead.probe(Duration::from_millis(500)).await;
        assert!(dead.ready(), "a is serving");

        // No replica answers: the policy decides.
        let none = LimiterClient::new(
            vec![
                (urls[0].into(), nothing_listening().await),
                (urls[1].into(), nothing_listening().await),
            ],
            FailurePolicy::Closed,
            1,
        );
        assert_eq!(
            none.check("/t0", "Encrypt", later()).await,
            Decision::Unavailable
        );
    }

    #[test]
    fn policy_serde() {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            p: FailurePolicy,
        }
        let p = |s: &str| toml::from_str::<W>(s).unwrap().p;
        assert_eq!(p(""), FailurePolicy::Open);
        assert_eq!(p("p = \"open\""), FailurePolicy::Open);
        assert_eq!(p("p = \"closed\""), FailurePolicy::Closed);
        assert!(toml::from_str::<W>("p = \"Closed\"").is_err());
    }
}
