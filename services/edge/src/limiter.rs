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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keymesh_proto::ratelimit::v1::AcquireRequest;
use keymesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Longest a limiter round trip may take: past this the limiter is treated as
/// unavailable, so a slow limiter costs a request at most 50 ms.
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
}

impl Bucket {
    /// The lease, even if a panicking thread poisoned the lock: every update
    /// to it is a plain field store, so it is never half-written.
    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    client: RateLimiterClient<Channel>,
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
            .field("policy", &self.inner.policy)
            .field("max_lease", &self.inner.max_lease)
            .finish_non_exhaustive()
    }
}

impl LimiterClient {
    /// `max_lease` is clamped to 1..=10000 (the limiter's largest lease).
    pub fn new(channel: Channel, policy: FailurePolicy, max_lease: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: RateLimiterClient::new(channel),
                policy,
                max_lease: max_lease.clamp(1, LIMITER_MAX_PERMITS),
                buckets: RwLock::new(HashMap::new()),
            }),
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
        let response = match self.acquire(tenant, operation, size, deadline).await {
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

    async fn acquire(
        &self,
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
        let mut client = self.inner.client.clone();
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
                Arc::new(Bucket {
                    lease: Mutex::new(Lease::new(Instant::now())),
                    refill: tokio::sync::Mutex::new(()),
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
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RateLimiterServer::new(FakeService(fake)))
                .serve_with_incoming(keymesh_common::net::nodelay_incoming(listener)),
        );
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
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
        let c = LimiterClient::new(start(Arc::clone(&f)).await, FailurePolicy::Closed, 8);
        for _ in 0..(1 + 2 + 4 + 8 + 8) {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4, 8, 8]);
    }

    #[tokio::test]
    async fn partial_grant_resets_and_throttle_is_remembered() {
        let f = fake(5, 60_000);
        let c = LimiterClient::new(start(Arc::clone(&f)).await, FailurePolicy::Closed, 64);
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
        let c = LimiterClient::new(start(Arc::clone(&f)).await, FailurePolicy::Closed, 64);
        for _ in 0..3 {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
        assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_refill_in_flight_per_bucket() {
        let f = fake(1_000_000, 60_000);
        let c = LimiterClient::new(start(Arc::clone(&f)).await, FailurePolicy::Closed, 64);
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
        let c = LimiterClient::new(nothing_listening().await, FailurePolicy::Open, 64);
        for _ in 0..3 {
            assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
        }
    }

    #[tokio::test]
    async fn fail_closed_is_unavailable() {
        let c = LimiterClient::new(nothing_listening().await, FailurePolicy::Closed, 64);
        assert_eq!(
            c.check("/t", "Encrypt", later()).await,
            Decision::Unavailable
        );
    }

    #[tokio::test]
    async fn passed_deadline_applies_policy_without_rpc() {
        let f = fake(10, 60_000);
        let c = LimiterClient::new(start(Arc::clone(&f)).await, FailurePolicy::Closed, 64);
        assert_eq!(
            c.check("/t", "Encrypt", Instant::now()).await,
            Decision::Unavailable
        );
        assert!(f.asked.lock().unwrap().is_empty());
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
