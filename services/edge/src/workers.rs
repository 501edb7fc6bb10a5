//! The crypto-worker pool as the edge sees it: one lazily connected gRPC
//! channel per worker, round-robin over the workers whose `grpc.health.v1`
//! answers SERVING, and a background prober that also watches the limiter
//! (readiness = at least one worker and the limiter answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use keymesh_proto::crypto::v1::{GetHealthRequest, GetHealthResponse, HealthStatus};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A gRPC channel to `url` with the settings every keymesh hop uses.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        // Nagle + delayed ACK would add ~40 ms to small gRPC frames.
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

#[derive(Debug)]
pub struct Worker {
    pub endpoint: String,
    channel: Channel,
    serving: AtomicBool,
}

impl Worker {
    pub fn client(&self) -> CryptoWorkerClient<Channel> {
        CryptoWorkerClient::new(self.channel.clone())
    }
}

#[derive(Debug)]
pub struct WorkerPool {
    workers: Vec<Worker>,
    next: AtomicUsize,
    limiter: Channel,
    limiter_serving: AtomicBool,
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

async fn serving(channel: Channel, timeout: Duration) -> bool {
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

impl WorkerPool {
    pub fn new(endpoints: &[String], limiter: Channel) -> anyhow::Result<Self> {
        let workers = endpoints
            .iter()
            .map(|e| {
                Ok(Worker {
                    endpoint: e.clone(),
                    channel: channel(e)?,
                    // Optimistic until the first probe: a fresh edge should not
                    // refuse traffic for a probe interval.
                    serving: AtomicBool::new(true),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
            limiter,
            limiter_serving: AtomicBool::new(false),
        })
    }

    /// Round-robin over serving workers; if none is known to serve, try any
    /// (the probe may lag a restart, and the caller has a deadline anyway).
    pub fn pick(&self) -> &Worker {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .find(|w| w.serving.load(Ordering::Relaxed))
            .unwrap_or(&self.workers[start % n])
    }

    pub fn ready(&self) -> bool {
        self.limiter_serving.load(Ordering::Relaxed)
            && self
                .workers
                .iter()
                .any(|w| w.serving.load(Ordering::Relaxed))
    }

    /// Probe every worker and the limiter once.
    pub async fn probe(&self) {
        let timeout = Duration::from_millis(500);
        let checks = self
            .workers
            .iter()
            .map(|w| serving(w.channel.clone(), timeout));
        let (results, limiter) = tokio::join!(
            futures_util::future::join_all(checks),
            serving(self.limiter.clone(), timeout)
        );
        for (w, ok) in self.workers.iter().zip(results) {
            if w.serving.swap(ok, Ordering::Relaxed) != ok {
                tracing::warn!(worker = %w.endpoint, serving = ok, "worker health changed");
            }
            metrics::gauge!("keymesh_edge_worker_serving", "worker" => w.endpoint.clone())
                .set(if ok { 1.0 } else { 0.0 });
        }
        if self.limiter_serving.swap(limiter, Ordering::Relaxed) != limiter {
            tracing::warn!(serving = limiter, "rate-limiter health changed");
        }
    }

    pub fn spawn_prober(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.probe().await;
            }
        })
    }

    /// Ask every worker for its cached deep-health result, within `deadline`.
    pub async fn fleet(&self, deadline: Instant) -> Vec<FleetMember> {
        let asks = self.workers.iter().map(|w| async move {
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
