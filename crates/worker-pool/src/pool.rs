//! The pool itself: its members (a lock-free snapshot), the admitted
//! subset, readiness, and the fleet report for XKS health.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use keymesh_proto::crypto::v1::{GetHealthRequest, GetHealthResponse, HealthStatus};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::channel::GrpcClientTls;
use super::source::Source;
use super::worker::Worker;

/// What the pool is told (the edge builds it from `edge.toml`).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `workers` entries: static URLs or `dns+http://name:port`.
    pub workers: Vec<String>,
    /// How often every member is probed with a health Check.
    pub probe_interval: Duration,
    /// How often the DNS sources are re-resolved (and a lookup's timeout).
    pub resolve_interval: Duration,
    /// Service mTLS for every worker channel; `None` dials in plaintext.
    pub tls: Option<GrpcClientTls>,
}

pub struct WorkerPool {
    pub(super) sources: Vec<Source>,
    /// Every known worker, in configuration then resolution order.
    pub(super) members: ArcSwap<Vec<Arc<Worker>>>,
    /// The members currently admitted (rebuilt when membership or health changes).
    pub(super) admitted: ArcSwap<Vec<Arc<Worker>>>,
    /// Serialises rebuilds of `admitted` (never held across an await).
    pub(super) rebuild: Mutex<()>,
    /// Membership bookkeeping for the resolver: the last good answer per DNS
    /// source and the health Watch task of each member.
    pub(super) book: Mutex<Book>,
    pub(super) rng: AtomicU64,
    pub(super) epoch: Instant,
    pub(super) probe_interval: Duration,
    pub(super) resolve_interval: Duration,
    /// Service mTLS for every worker channel, discovered ones included.
    pub(super) tls: Option<GrpcClientTls>,
}

#[derive(Default)]
pub(super) struct Book {
    pub(super) last_good: HashMap<usize, Vec<SocketAddr>>,
    pub(super) watches: HashMap<String, AbortHandle>,
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

impl WorkerPool {
    /// The pool with its static workers (admitted optimistically, so a fresh
    /// edge does not refuse traffic for a probe interval); DNS sources are
    /// resolved by the task [`WorkerPool::start`] spawns. Every worker is
    /// dialled over mutual TLS when `config.tls` is given.
    pub fn new(config: PoolConfig) -> anyhow::Result<Self> {
        let PoolConfig {
            workers,
            probe_interval,
            resolve_interval,
            tls,
        } = config;
        let sources = workers
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
            probe_interval,
            resolve_interval,
            tls,
        })
    }

    pub(super) fn now_us(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Every worker currently known (admitted or not).
    pub fn members(&self) -> Arc<Vec<Arc<Worker>>> {
        self.members.load_full()
    }

    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Every update is a plain insert/remove: never half-written.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At least one worker admitted (the pool's half of readiness,
    /// combined with the limiter's in `AppState::ready`).
    pub fn any_admitted(&self) -> bool {
        !self.admitted.load().is_empty()
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
