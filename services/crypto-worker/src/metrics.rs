//! The worker's Prometheus metrics.
//!
//! Recorded through the `metrics` facade: without `--metrics-listen` no
//! recorder is installed and every call here is a no-op. HSM latency is
//! recorded per job on the session thread (queue wait excluded, so it
//! measures the HSM); the pool and health gauges are sampled by a background
//! task rather than updated per job, keeping the request path to one
//! histogram record.

use std::time::{Duration, Instant};

use keymesh_proto::crypto::v1::HealthStatus;

use crate::error::Error;

/// Histogram: seconds a job held its session, by `op` and `outcome`.
pub const HSM_SECONDS: &str = "keymesh_worker_hsm_seconds";
/// Gauge: jobs waiting in the session-pool queue.
pub const POOL_QUEUE: &str = "keymesh_worker_pool_queue";
/// Gauge: queue capacity (beyond it requests get HSM_BUSY).
pub const POOL_QUEUE_CAPACITY: &str = "keymesh_worker_pool_queue_capacity";
/// Gauge: sessions running a job right now.
pub const SESSIONS_BUSY: &str = "keymesh_worker_sessions_busy";
/// Gauge: sessions in the pool (`--sessions`).
pub const SESSIONS: &str = "keymesh_worker_sessions";
/// Gauge: jobs waiting in the slow lane's queue (key-pair generation).
pub const SLOW_LANE_QUEUE: &str = "keymesh_worker_slow_lane_queue";
/// Gauge: slow-lane queue capacity (`--slow-lane-queue`; 0 = no slow lane).
pub const SLOW_LANE_QUEUE_CAPACITY: &str = "keymesh_worker_slow_lane_queue_capacity";
/// Gauge: slow-lane sessions running a job right now.
pub const SLOW_LANE_SESSIONS_BUSY: &str = "keymesh_worker_slow_lane_sessions_busy";
/// Gauge: sessions of the slow lane (`--slow-lane-sessions`).
pub const SLOW_LANE_SESSIONS: &str = "keymesh_worker_slow_lane_sessions";
/// Gauge: unwrapped customer master keys (KeyVault) held as session objects.
pub const UNWRAPPED_KEYS: &str = "keymesh_worker_unwrapped_keys";
/// Gauge: 1 for the current deep-health status (`status` = active, degraded,
/// unavailable), 0 for the others.
pub const HEALTH_STATUS: &str = "keymesh_worker_health_status";

/// How often the gauges are refreshed: finer than any scrape interval.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// HELP lines for the scrape output.
pub fn describe() {
    metrics::describe_histogram!(
        HSM_SECONDS,
        metrics::Unit::Seconds,
        "Time an HSM job held its PKCS#11 session, by operation and outcome"
    );
    metrics::describe_gauge!(POOL_QUEUE, "Jobs waiting for an HSM session");
    metrics::describe_gauge!(POOL_QUEUE_CAPACITY, "Job queue capacity");
    metrics::describe_gauge!(SESSIONS_BUSY, "HSM sessions running a job");
    metrics::describe_gauge!(SESSIONS, "HSM sessions in the pool");
    metrics::describe_gauge!(SLOW_LANE_QUEUE, "Jobs waiting for a slow-lane HSM session");
    metrics::describe_gauge!(SLOW_LANE_QUEUE_CAPACITY, "Slow-lane job queue capacity");
    metrics::describe_gauge!(
        SLOW_LANE_SESSIONS_BUSY,
        "Slow-lane HSM sessions running a job"
    );
    metrics::describe_gauge!(SLOW_LANE_SESSIONS, "HSM sessions in the slow lane");
    metrics::describe_gauge!(
        UNWRAPPED_KEYS,
        "Unwrapped customer master keys held as HSM session objects"
    );
    metrics::describe_gauge!(
        HEALTH_STATUS,
        "Deep health check status (1 = current status)"
    );
}

/// The `outcome` label: `ok`, or the contract's error reason
/// (`KEY_NOT_FOUND`, `HSM_FAILURE`, ...), or `DEADLINE_EXCEEDED`.
pub fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => match e.code_and_reason().1 {
            Some(reason) => {
                let name = reason.as_str_name();
                name.strip_prefix("ERROR_REASON_").unwrap_or(name)
            }
            None => "DEADLINE_EXCEEDED",
        },
    }
}

/// Record one HSM job of kind `op` that started at `started`.
pub fn record_hsm<T>(op: &'static str, started: Instant, result: &Result<T, Error>) {
    metrics::histogram!(HSM_SECONDS, "op" => op, "outcome" => outcome(result))
        .record(started.elapsed().as_secs_f64());
}

/// Run `f` (one operation's HSM work) and record it as `op`.
pub fn timed<T>(op: &'static str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let started = Instant::now();
    let result = f();
    record_hsm(op, started, &result);
    result
}

/// The sizes of the session pool, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    pub sessions: usize,
    pub capacity: usize,
    pub slow_sessions: usize,
    pub slow_capacity: usize,
}

/// One reading of the gauges that move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub queued: usize,
    pub busy: usize,
    pub slow_queued: usize,
    pub slow_busy: usize,
    pub unwrapped_keys: usize,
    pub health: HealthStatus,
}

/// Set the fixed gauges once, then refresh the others from `sample` every
/// [`SAMPLE_INTERVAL`] until aborted. The caller says how to read the pool
/// and the health state, so this module depends on neither.
pub fn spawn_sampler(
    sizes: PoolSizes,
    sample: impl Fn() -> Sample + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        metrics::gauge!(SESSIONS).set(sizes.sessions as f64);
        metrics::gauge!(POOL_QUEUE_CAPACITY).set(sizes.capacity as f64);
        metrics::gauge!(SLOW_LANE_SESSIONS).set(sizes.slow_sessions as f64);
        metrics::gauge!(SLOW_LANE_QUEUE_CAPACITY).set(sizes.slow_capacity as f64);
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = sample();
            metrics::gauge!(POOL_QUEUE).set(now.queued as f64);
            metrics::gauge!(SESSIONS_BUSY).set(now.busy as f64);
            metrics::gauge!(SLOW_LANE_QUEUE).set(now.slow_queued as f64);
            metrics::gauge!(SLOW_LANE_SESSIONS_BUSY).set(now.slow_busy as f64);
            metrics::gauge!(UNWRAPPED_KEYS).set(now.unwrapped_keys as f64);
            for (s, name) in [
                (HealthStatus::Active, "active"),
                (HealthStatus::Degraded, "degraded"),
                (HealthStatus::Unavailable, "unavailable"),
            ] {
                let v = if s == now.health { 1.0 } else { 0.0 };
                metrics::gauge!(HEALTH_STATUS, "status" => name).set(v);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn outcome_labels() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        assert_eq!(
            outcome::<()>(&Err(keymesh_pkcs11::Error::KeyNotFound {
                key_id: "k".into()
            }
            .into())),
            "KEY_NOT_FOUND"
        );
        assert_eq!(outcome::<()>(&Err(Error::Busy)), "HSM_BUSY");
        assert_eq!(
            outcome::<()>(&Err(Error::DeadlineExceeded)),
            "DEADLINE_EXCEEDED"
        );
    }
}
