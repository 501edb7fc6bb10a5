//! Closed- and open-loop drivers.
//!
//! Closed loop: N workers, each sends its next request when the previous one
//! answers — measures capacity, but a stall silently lowers the offered load.
//! Open loop: requests are due on a fixed schedule (`rate`/s) whatever the
//! server does; latency is measured from each request's *intended* send time,
//! so queueing behind a stall shows up in the percentiles instead of being
//! hidden (coordinated omission). Service time (from the actual send) is
//! reported next to it so the two can be compared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::huawei::Kms;
use crate::stats::Stats;
use crate::xks::{Plan, Target};

/// Open loop: how long past the end of the schedule requests still due may be
/// sent before the run stops (bounds the run when the server cannot keep up).
pub const OPEN_DRAIN: Duration = Duration::from_secs(5);

/// Pause after a failed connect so a dead target does not become a spin loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

/// What every request of a run is: one operation in one API dialect.
pub enum Load {
    /// AWS XKS proxy API, SigV4.
    Xks { target: Target, plan: Plan },
    /// Huawei-compatible KMS API, SDK-HMAC-SHA256.
    Kms(Kms),
}

pub struct Shared {
    pub load: Load,
    pub timeout: Duration,
    pub seq: AtomicU64,
}

impl Shared {
    pub fn addr(&self) -> SocketAddr {
        match &self.load {
            Load::Xks { target, .. } => target.endpoint.addr,
            Load::Kms(kms) => kms.endpoint.addr,
        }
    }

    /// The next request, built and signed now (its cost is the client's, and
    /// is inside the measured latency, as for a real client).
    pub fn request(&self) -> anyhow::Result<http::Request<Full<Bytes>>> {
        match &self.load {
            Load::Xks { target, plan } => target.build(plan, &self.seq),
            Load::Kms(kms) => kms.build(),
        }
    }
}

/// Outcome of one attempt; on transport failure the connection is dropped.
async fn attempt(shared: &Shared, conn: &mut Option<Conn>, stats: &mut Stats) -> bool {
    if conn.is_none() {
        match Conn::connect(shared.addr()).await {
            Ok(c) => *conn = Some(c),
            Err(_) => {
                stats.record_error("connect");
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                return false;
            }
        }
    }
    let Some(c) = conn.as_mut() else {
        return false;
    };
    let req = match shared.request() {
        Ok(req) => req,
        Err(_) => {
            stats.record_error("build");
            return false;
        }
    };
    match tokio::time::timeout(shared.timeout, c.send(req)).await {
        Ok(Ok(answer)) if answer.status.is_success() => true,
        Ok(Ok(answer)) => {
            stats.record_error(answer.status.as_str());
            false
        }
        Ok(Err(_)) => {
            *conn = None;
            stats.record_error("io");
            false
        }
        Err(_) => {
            // The connection may still deliver the late answer: start afresh.
            *conn = None;
            stats.record_error("timeout");
            false
        }
    }
}

/// Run `concurrency` closed-loop workers for `duration`.
pub async fn closed(
    shared: Arc<Shared>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Stats, Duration)> {
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut stats = Stats::new()?;
                let mut conn = Conn::connect(shared.addr()).await.ok();
                while Instant::now() < end {
                    let t0 = Instant::now();
                    if attempt(&shared, &mut conn, &mut stats).await {
                        let d = t0.elapsed();
                        stats.record_ok(d, d);
                    }
                }
                anyhow::Ok(stats)
            })
        })
        .collect();
    let total = join(workers).await?;
    Ok((total, start.elapsed()))
}

/// Open-loop result extras.
#[derive(Debug, Clone, Copy)]
pub struct OpenOutcome {
    /// Requests the schedule called for.
    pub scheduled: u64,
    /// Requests never sent because the drain window ran out.
    pub unsent: u64,
}

/// Offer `rate` requests/s for `duration` over at most `concurrency`
/// connections (a request due while all are busy waits, and that wait counts).
pub async fn open(
    shared: Arc<Shared>,
    rate: f64,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Stats, Duration, OpenOutcome)> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let scheduled = (duration.as_secs_f64() * rate).floor() as u64;
    let start = Instant::now();
    let hard_stop = start + duration + OPEN_DRAIN;
    // tokio's timer wheel has 1 ms granularity: a worker sleeping until its
    // slot would send up to 1 ms late and charge that to the server. One OS
    // thread paces the schedule with nanosleep (tens of µs) and hands each
    // due slot to whichever worker is free.
    let (due_tx, due_rx) = flume::unbounded::<Instant>();
    let pacer_start = start.into_std();
    let pacer = std::thread::spawn(move || {
        for i in 0..scheduled {
            let intended = pacer_start + interval.mul_f64(i as f64);
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if due_tx.send(Instant::from_std(intended)).is_err() {
                break;
            }
        }
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let due = due_rx.clone();
            tokio::spawn(async move {
                let mut stats = Stats::new()?;
                let mut conn = Conn::connect(shared.addr()).await.ok();
                while let Ok(intended) = due.recv_async().await {
                    let sent = Instant::now();
                    if sent >= hard_stop {
                        break;
                    }
                    if attempt(&shared, &mut conn, &mut stats).await {
                        let done = Instant::now();
                        stats.record_ok(done - intended, done - sent);
                    }
                }
                anyhow::Ok(stats)
            })
        })
        .collect();
    drop(due_rx);
    let total = join(workers).await?;
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    let elapsed = start.elapsed();
    // Every paced slot ends as one success or one error (a failed connect
    // included), unless the drain window closed first.
    let attempted = total.ok + total.error_count();
    let unsent = scheduled.saturating_sub(attempted);
    Ok((total, elapsed, OpenOutcome { scheduled, unsent }))
}

async fn join(
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<Stats>>>,
) -> anyhow::Result<Stats> {
    let mut total = Stats::new()?;
    for w in workers {
        total.merge(&w.await??)?;
    }
    Ok(total)
}
