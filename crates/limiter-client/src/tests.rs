//! Unit tests: an in-process fake limiter, leases, refills, failure
//! policy, rendezvous hashing and replica failover.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

/// The edge passes its mesh's classification and probe; for the fake a
/// refused connection (UNAVAILABLE) is the transport failure there is.
const TRANSPORT: Transport = Transport {
    is_transport_failure: |s| s.code() == tonic::Code::Unavailable,
    serving: |channel, timeout| Box::pin(serving(channel, timeout)),
};

async fn serving(channel: Channel, timeout: Duration) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    matches!(
        tokio::time::timeout(timeout, client.check(HealthCheckRequest::default())).await,
        Ok(Ok(resp)) if resp.get_ref().status() == ServingStatus::Serving
    )
}

fn client(
    replicas: Vec<(String, Channel)>,
    policy: FailurePolicy,
    max_lease: u32,
) -> LimiterClient {
    LimiterClient::new(replicas, policy, max_lease, TRANSPORT)
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
    let c = client(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 8);
    for _ in 0..(1 + 2 + 4 + 8 + 8) {
        assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
    }
    assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4, 8, 8]);
}

#[tokio::test]
async fn partial_grant_resets_and_throttle_is_remembered() {
    let f = fake(5, 60_000);
    let c = client(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
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
    let c = client(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
    for _ in 0..3 {
        assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
    }
    assert_eq!(*f.asked.lock().unwrap(), vec![1, 2, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refill_in_flight_per_bucket() {
    let f = fake(1_000_000, 60_000);
    let c = client(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
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
    let c = client(one(nothing_listening().await), FailurePolicy::Open, 64);
    for _ in 0..3 {
        assert_eq!(c.check("/t", "Encrypt", later()).await, Decision::Allow);
    }
}

#[tokio::test]
async fn fail_closed_is_unavailable() {
    let c = client(one(nothing_listening().await), FailurePolicy::Closed, 64);
    assert_eq!(
        c.check("/t", "Encrypt", later()).await,
        Decision::Unavailable
    );
}

#[tokio::test]
async fn passed_deadline_applies_policy_without_rpc() {
    let f = fake(10, 60_000);
    let c = client(one(start(Arc::clone(&f)).await), FailurePolicy::Closed, 64);
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
    let c = client(
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
    let dead = client(
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
    // A generous bound: a answers at once and b refuses at once, so the probe
    // returns long before it; a tight one failed on a busy 2-core box.
    dead.probe(Duration::from_secs(10)).await;
    assert!(dead.ready(), "a is serving");

    // No replica answers: the policy decides.
    let none = client(
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
