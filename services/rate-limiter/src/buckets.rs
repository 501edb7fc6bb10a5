//! Token buckets keyed by (tenant, operation).
//!
//! Quotas differ per key, so governor's keyed limiter (one quota for all keys)
//! does not fit: each key gets its own direct limiter built from the limit the
//! quota file assigns it. The table remembers which version of the quota file
//! (the `Arc` the `Reloadable` handed out) it was built from; when a reload
//! swaps the file, the next request re-resolves every bucket and replaces
//! those whose limit changed, while unchanged buckets keep their state — so a
//! reload neither refills nor empties tenants it did not touch.
//!
//! The limiters are generic over governor's `Clock`, so tests drive them with
//! `FakeRelativeClock` and need no sleeps.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use keymesh_common::reload::Reloadable;

use crate::quota::{Limit, Quotas};

/// One (tenant, operation) bucket.
pub type DirectLimiter<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The outcome of one acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `permits`, 1 or 0.
    pub granted: u32,
    /// When `granted == 0`: how long until one permit is available.
    pub retry_after: Duration,
}

struct Entry<C: Clock> {
    limit: Limit,
    limiter: Arc<DirectLimiter<C>>,
}

struct Table<C: Clock> {
    /// The quota-file version these buckets were resolved against.
    quotas: Arc<Quotas>,
    buckets: HashMap<String, HashMap<String, Entry<C>>>,
}

impl<C: Clock> Table<C> {
    /// Adopt a reloaded quota file: drop buckets whose limit changed (they are
    /// rebuilt full on next use), keep the rest untouched.
    fn resync(&mut self, quotas: Arc<Quotas>) {
        for (tenant, ops) in &mut self.buckets {
            ops.retain(|op, e| quotas.limit(tenant, op) == e.limit);
        }
        self.buckets.retain(|_, ops| !ops.is_empty());
        self.quotas = quotas;
    }
}

/// Every bucket of the service.
pub struct Buckets<C: Clock> {
    quotas: Arc<Reloadable<Quotas>>,
    clock: C,
    table: RwLock<Table<C>>,
}

impl<C: Clock> std::fmt::Debug for Buckets<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets")
            .field("quotas", &self.quotas)
            .finish()
    }
}

impl<C> Buckets<C>
where
    C: Clock + Clone,
{
    pub fn new(quotas: Arc<Reloadable<Quotas>>, clock: C) -> Self {
        let table = Table {
            quotas: quotas.get(),
            buckets: HashMap::new(),
        };
        Self {
            quotas,
            clock,
            table: RwLock::new(table),
        }
    }

    /// Take `permits` at once if the bucket holds them, else one, else none.
    ///
    /// Granting one when the lease does not fit keeps low quotas usable:
    /// a caller asking for 64 from a bucket of 10 still makes progress.
    pub fn acquire(&self, tenant: &str, operation: &str, permits: NonZeroU32) -> Grant {
        let (_, limiter) = self.limiter(tenant, operation);
        if let Ok(Ok(())) = limiter.check_n(permits) {
            return Grant {
                granted: permits.get(),
                retry_after: Duration::ZERO,
            };
        }
        match limiter.check() {
            Ok(()) => Grant {
                granted: 1,
                retry_after: Duration::ZERO,
            },
            Err(not_until) => Grant {
                granted: 0,
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            },
        }
    }

    /// Take exactly `permits` or nothing (Envoy's `hits_addend` semantics:
    /// a request weighing n must not pass on a partial grant). `Err` carries
    /// the wait until `permits` would fit, or `None` when they never fit
    /// (more than the burst). Returns the limit that applied either way.
    pub fn take(
        &self,
        tenant: &str,
        operation: &str,
        permits: NonZeroU32,
    ) -> (Limit, Result<(), Option<Duration>>) {
        let (limit, limiter) = self.limiter(tenant, operation);
        let outcome = match limiter.check_n(permits) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Some(not_until.wait_time_from(limiter.clock().now()))),
            Err(_insufficient) => Err(None),
        };
        (limit, outcome)
    }

    /// The bucket for (tenant, operation), created (or rebuilt after a quota
    /// change) on demand.
    fn limiter(&self, tenant: &str, operation: &str) -> (Limit, Arc<DirectLimiter<C>>) {
        let current = self.quotas.get();
        {
            // A poisoned lock only means another request panicked mid-lookup;
            // the map itself is always consistent, so keep serving.
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&table.quotas, &current)
                && let Some(e) = table.buckets.get(tenant).and_then(|ops| ops.get(operation))
            {
                return (e.limit, Arc::clone(&e.limiter));
            }
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&table.quotas, &current) {
            table.resync(current);
        }
        let limit = table.quotas.limit(tenant, operation);
        let entry = table
            .buckets
            .entry(tenant.to_owned())
            .or_default()
            .entry(operation.to_owned())
            .or_insert_with(|| Entry {
                limit,
                limiter: Arc::new(governor::RateLimiter::direct_with_clock(
                    limit.quota(),
                    self.clock.clone(),
                )),
            });
        (entry.limit, Arc::clone(&entry.limiter))
    }

    /// Number of live buckets (for tests and debugging).
    pub fn len(&self) -> usize {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.buckets.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn quotas(toml: &str) -> Quotas {
        Quotas::from_toml(toml.as_bytes()).unwrap()
    }

    const TEN_PER_SEC: &str = r#"
[default]
rate_per_second = 1000
burst = 1000
[[tenants]]
tenant = "/t"
rate_per_second = 10
burst = 10
[tenants.operations.Encrypt]
rate_per_second = 1
burst = 2
"#;

    #[test]
    fn full_lease_then_single_then_none() {
        let clock = FakeRelativeClock::default();
        let b = Buckets::new(Reloadable::fixed(quotas(TEN_PER_SEC)), clock.clone());
        assert_eq!(b.acquire("/t", "Decrypt", nz(8)).granted, 8);
        // 2 left: a lease of 8 does not fit, one permit does.
        assert_eq!(b.acquire("/t", "Decrypt", nz(8)).granted, 1);
        assert_eq!(b.acquire("/t", "Decrypt", nz(1)).granted, 1);
        let g = b.acquire("/t", "Decrypt", nz(1));
        assert_eq!(g.granted, 0);
        assert_eq!(g.retry_after, Duration::from_millis(100));
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.acquire("/t", "Decrypt", nz(1)).granted, 1);
    }

    #[test]
    fn lease_larger_than_burst_still_grants_one() {
        let b = Buckets::new(
            Reloadable::fixed(quotas(TEN_PER_SEC)),
            FakeRelativeClock::default(),
        );
        // Encrypt burst is 2: check_n(64) can never succeed.
        assert_eq!(b.acquire("/t", "Encrypt", nz(64)).granted, 1);
        assert_eq!(b.acquire("/t", "Encrypt", nz(64)).granted, 1);
        let g = b.acquire("/t", "Encrypt", nz(64));
        assert_eq!(g.granted, 0);
        assert_eq!(g.retry_after, Duration::from_secs(1));
    }

    #[test]
    fn keys_are_independent() {
        let b = Buckets::new(
            Reloadable::fixed(quotas(TEN_PER_SEC)),
            FakeRelativeClock::default(),
        );
        assert_eq!(b.acquire("/t", "Encrypt", nz(2)).granted, 2);
        assert_eq!(b.acquire("/t", "Encrypt", nz(1)).granted, 0);
        assert_eq!(b.acquire("/t", "Decrypt", nz(10)).granted, 10);
        assert_eq!(b.acquire("/u", "Encrypt", nz(1000)).granted, 1000);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn reload_rebuilds_only_changed_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.toml");
        std::fs::write(&path, TEN_PER_SEC).unwrap();
        let file = Reloadable::load(&path, Quotas::from_toml).unwrap();
        let b = Buckets::new(Arc::clone(&file), FakeRelativeClock::default());

        assert_eq!(b.acquire("/t", "Encrypt", nz(2)).granted, 2);
        assert_eq!(b.acquire("/t", "Decrypt", nz(10)).granted, 10);
        assert_eq!(b.acquire("/t", "Encrypt", nz(1)).granted, 0);

        // Raise only the Encrypt override.
        std::fs::write(&path, TEN_PER_SEC.replace("burst = 2", "burst = 5")).unwrap();
        assert!(file.reload());

        // Encrypt is rebuilt with the new burst; Decrypt keeps its empty bucket.
        assert_eq!(b.acquire("/t", "Encrypt", nz(5)).granted, 5);
        assert_eq!(b.acquire("/t", "Decrypt", nz(1)).granted, 0);
    }

    #[test]
    fn take_is_all_or_nothing() {
        let clock = FakeRelativeClock::default();
        let b = Buckets::new(Reloadable::fixed(quotas(TEN_PER_SEC)), clock.clone());
        let (limit, ok) = b.take("/t", "Decrypt", nz(7));
        assert_eq!(ok, Ok(()));
        assert_eq!(limit.burst.get(), 10);
        // 3 left: 4 does not fit and takes nothing, 3 does.
        assert_eq!(
            b.take("/t", "Decrypt", nz(4)).1,
            Err(Some(Duration::from_millis(100)))
        );
        assert_eq!(b.take("/t", "Decrypt", nz(3)).1, Ok(()));
        // More than the burst can never fit.
        assert_eq!(b.take("/t", "Decrypt", nz(11)).1, Err(None));
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.take("/t", "Decrypt", nz(1)).1, Ok(()));
    }

    #[test]
    fn replicas_loading_one_file_enforce_the_same_limits() {
        // Each bucket lives on one replica (the edge routes by key), so two
        // replicas built from one file must agree on every bucket's limit.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.toml");
        std::fs::write(&path, TEN_PER_SEC).unwrap();
        let a = Buckets::new(
            Reloadable::load(&path, Quotas::from_toml).unwrap(),
            FakeRelativeClock::default(),
        );
        let b = Buckets::new(
            Reloadable::load(&path, Quotas::from_toml).unwrap(),
            FakeRelativeClock::default(),
        );
        for (t, op) in [("/t", "Encrypt"), ("/t", "Decrypt"), ("/u", "Encrypt")] {
            assert_eq!(b.take(t, op, nz(1)).0, a.take(t, op, nz(1)).0, "{t} {op}");
        }
    }

    #[test]
    fn bad_reload_keeps_previous_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.toml");
        std::fs::write(&path, TEN_PER_SEC).unwrap();
        let file = Reloadable::load(&path, Quotas::from_toml).unwrap();
        let b = Buckets::new(Arc::clone(&file), FakeRelativeClock::default());
        std::fs::write(&path, "[default]\nrate_per_second = 0\nburst = 0\n").unwrap();
        assert!(!file.reload());
        assert_eq!(b.acquire("/t", "Encrypt", nz(2)).granted, 2);
        assert_eq!(b.acquire("/t", "Encrypt", nz(1)).granted, 0);
    }
}
