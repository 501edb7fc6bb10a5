//! keymesh limiter client: the edge's quota checks against the
//! rate-limiter (`keymesh.ratelimit.v1.RateLimiter`), leased so most
//! requests pay no round trip.
//!
//! [`LimiterClient::check`] answers one request with a [`Decision`]; the
//! lease cap is the rate-limiter's own ([`keymesh_contracts::limits`]), the
//! bucket owner among several replicas is picked by rendezvous hashing
//! ([`hrw`]), and the host (the edge) passes in how its mesh classifies
//! transport failures and probes health ([`Transport`]). Metrics:
//! `keymesh_edge_limiter_serving{replica}` (1 while a replica answers its
//! probe) and `keymesh_limiter_unavailable_total` (requests allowed by the
//! open failure policy).
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

pub mod hrw;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use keymesh_contracts::limits::MAX_PERMITS as LIMITER_MAX_PERMITS;
use keymesh_proto::ratelimit::v1::AcquireRequest;
use keymesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Longest a limiter round trip may take: past this the replica is treated as
/// unavailable, so a slow replica costs a request at most 50 ms (and a refill
/// that falls through to the next replica at most `REFILL_BUDGET`).
pub const RPC_TIMEOUT: Duration = Duration::from_millis(50);

/// After a limiter failure, how long a bucket answers by policy without
/// asking again.
pub const FAILURE_BACKOFF: Duration = Duration::from_millis(250);

/// Default largest lease (permits per round trip).
pub const DEFAULT_MAX_LEASE: u32 = 64;

/// At most one "limiter unavailable" warning per bucket per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Total limiter time of one refill across replicas: a black-holed owner
/// costs one [`RPC_TIMEOUT`], then the next replica still gets one (the
/// failed owner is marked down, so later refills skip it at once).
const REFILL_BUDGET: Duration = RPC_TIMEOUT.saturating_mul(2);

/// Most replicas accepted (bucket replica orders are stored as `u16`).
pub const MAX_REPLICAS: usize = 64;

/// The gRPC plumbing the client shares with its host's mesh (the edge's
/// worker pool), passed in so a limiter RPC and a worker RPC are judged and
/// probed alike, by one implementation.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// The RPC failed in transport (the peer died or could not be reached),
    /// as opposed to a status the peer itself sent.
    pub is_transport_failure: fn(&tonic::Status) -> bool,
    /// One `grpc.health.v1` Check of the overall service: SERVING within
    /// the timeout.
    pub serving: fn(Channel, Duration) -> BoxFuture<'static, bool>,
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
    fn replica_failed(&self, transport: &Transport) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::DeadlinePassed => false,
            Self::Rpc(status) => (transport.is_transport_failure)(status),
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
    transport: Transport,
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
    /// limiter's largest lease, [`keymesh_contracts::limits::MAX_PERMITS`]).
    pub fn new(
        replicas: Vec<(String, Channel)>,
        policy: FailurePolicy,
        max_lease: u32,
        transport: Transport,
    ) -> Self {
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
                transport,
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
            .map(|r| (self.inner.transport.serving)(r.channel.clone(), timeout));
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
    /// or `REFILL_BUDGET` / the request deadline runs out. A replica that
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
                Err(e) if e.replica_failed(&self.inner.transport) => {
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
mod tests;
