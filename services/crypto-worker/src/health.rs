//! Deep health: a real AES-GCM round trip through the job queue, on a
//! session-only key, every `--health-interval-secs`.
//!
//! GetHealth and `grpc.health.v1` answer from the last result instead of
//! touching the HSM per probe, so probes cost nothing and cannot pile onto a
//! struggling HSM. Going through the queue (not a side door) means a wedged
//! pool shows up as unhealthy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymesh_pkcs11::Error as HsmError;
use keymesh_pkcs11::aead;
use keymesh_proto::crypto::v1::HealthStatus;
use ring::rand::SecureRandom as _;
use subtle::ConstantTimeEq as _;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::Error;
use crate::pool::Pool;

/// A check slower than this reports DEGRADED.
pub const DEGRADED_AFTER: Duration = Duration::from_millis(100);
/// A result older than this is no evidence: UNAVAILABLE.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// How long one check may wait for the queue and the HSM.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Name under which `grpc.health.v1` reports the crypto service.
pub const SERVICE_NAME: &str = "keymesh.crypto.v1.CryptoWorker";
/// Name under which `grpc.health.v1` reports the KeyVault service: the same
/// sessions, so the same status.
pub const VAULT_SERVICE_NAME: &str = "keymesh.crypto.v1.KeyVault";

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ok: bool,
    pub at: Instant,
    pub latency: Duration,
}

/// The last check result plus whether the process is draining.
#[derive(Debug, Default)]
pub struct HealthState {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Sample>,
    draining: bool,
}

/// Status implied by `sample` at `now`.
pub fn classify(sample: Option<Sample>, now: Instant) -> HealthStatus {
    match sample {
        Some(s) if s.ok && now.saturating_duration_since(s.at) <= STALE_AFTER => {
            if s.latency > DEGRADED_AFTER {
                HealthStatus::Degraded
            } else {
                HealthStatus::Active
            }
        }
        _ => HealthStatus::Unavailable,
    }
}

impl HealthState {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, sample: Sample) {
        self.lock().last = Some(sample);
    }

    /// Current status and the age of the result it rests on.
    pub fn status(&self, now: Instant) -> (HealthStatus, Option<Duration>) {
        let last = self.lock().last;
        (
            classify(last, now),
            last.map(|s| now.saturating_duration_since(s.at)),
        )
    }

    fn serving(&self, now: Instant) -> ServingStatus {
        let state = self.lock();
        if !state.draining && classify(state.last, now) != HealthStatus::Unavailable {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    /// From now on `grpc.health.v1` says NOT_SERVING whatever the checks say.
    pub async fn start_draining(&self, reporter: &HealthReporter) {
        self.lock().draining = true;
        publish(reporter, ServingStatus::NotServing).await;
    }
}

async fn publish(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
    reporter
        .set_service_status(VAULT_SERVICE_NAME, status)
        .await;
}

/// One encrypt+decrypt round trip of 32 random bytes through the queue.
pub async fn check_once(pool: &Pool) -> Result<(), Error> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let job = pool.run_waiting(Some(deadline), |ctx| {
        ctx.with_health_key(|session, rng, key| {
            let mut probe = [0u8; 32];
            rng.fill(&mut probe).map_err(|_| HsmError::Rng)?;
            let sealed = aead::seal(
                session,
                key,
                keymesh_pkcs11::keys::HEALTH_KEY_LABEL,
                rng,
                aead::SealRequest {
                    plaintext: &probe,
                    aad: b"keymesh-health",
                    integrity_prefix: None,
                    verify: false,
                },
            )?;
            let back = aead::open(
                session,
                key,
                keymesh_pkcs11::keys::HEALTH_KEY_LABEL,
                &sealed.iv,
                &sealed.ciphertext,
                &sealed.tag,
                b"keymesh-health",
            )?;
            if bool::from(back.as_slice().ct_eq(&probe)) {
                Ok(())
            } else {
                Err(HsmError::VerifyFailed.into())
            }
        })
    });
    match tokio::time::timeout(CHECK_TIMEOUT, job).await {
        Ok(r) => r,
        Err(_) => Err(Error::DeadlineExceeded),
    }
}

/// Run one check, record it, and publish the serving status.
pub async fn check_and_publish(pool: &Pool, state: &HealthState, reporter: &HealthReporter) {
    let started = Instant::now();
    let result = check_once(pool).await;
    let latency = started.elapsed();
    match &result {
        Ok(()) => tracing::debug!(
            latency_us = latency.as_micros() as u64,
            "deep health check ok"
        ),
        Err(e) => tracing::error!(error = %e, "deep health check failed"),
    }
    state.record(Sample {
        ok: result.is_ok(),
        at: Instant::now(),
        latency,
    });
    publish(reporter, state.serving(Instant::now())).await;
}

/// Check every `interval` until the task is aborted.
pub fn spawn_checker(
    pool: Pool,
    state: Arc<HealthState>,
    reporter: HealthReporter,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // `serve` already ran the first check before accepting traffic.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            check_and_publish(&pool, &state, &reporter).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sample(ok: bool, age: Duration, latency: Duration, now: Instant) -> Option<Sample> {
        Some(Sample {
            ok,
            at: now - age,
            latency,
        })
    }

    #[test]
    fn classification() {
        let now = Instant::now() + Duration::from_secs(120);
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(classify(None, now), HealthStatus::Unavailable);
        assert_eq!(
            classify(sample(true, s(1), ms(1), now), now),
            HealthStatus::Active
        );
        assert_eq!(
            classify(sample(true, s(1), ms(150), now), now),
            HealthStatus::Degraded
        );
        assert_eq!(
            classify(sample(false, s(1), ms(1), now), now),
            HealthStatus::Unavailable
        );
        assert_eq!(
            classify(sample(true, s(61), ms(1), now), now),
            HealthStatus::Unavailable
        );
    }
}
