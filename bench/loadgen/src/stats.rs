//! Latency histograms and error counts, per worker then merged.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency tracked: one minute, in µs (anything slower is clamped).
const MAX_US: u64 = 60_000_000;

/// One worker's measurements (merged into one at the end, so workers never
/// contend on a shared histogram).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful requests (open loop: from the intended send time).
    pub latency: Histogram<u64>,
    /// Open loop only: from the actual send time (what the server saw).
    pub service: Histogram<u64>,
    pub ok: u64,
    /// Failures by HTTP status ("429") or transport cause ("io", "timeout").
    pub errors: BTreeMap<String, u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_US, 3)?)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(MAX_US)
        .clamp(1, MAX_US)
}

impl Stats {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: histogram()?,
            service: histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
        })
    }

    pub fn record_ok(&mut self, latency: Duration, service: Duration) {
        self.ok += 1;
        // Values are clamped into the histogram's range, so recording cannot fail.
        let _ = self.latency.record(us(latency));
        let _ = self.service.record(us(service));
    }

    pub fn record_error(&mut self, cause: impl Into<String>) {
        *self.errors.entry(cause.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.service.add(&other.service)?;
        self.ok += other.ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        Ok(())
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Percentiles in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_summarise() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        for i in 1..=99 {
            a.record_ok(Duration::from_micros(i), Duration::from_micros(i));
        }
        b.record_ok(Duration::from_millis(10), Duration::from_micros(1));
        b.record_error("429");
        b.record_error("429");
        a.merge(&b).unwrap();
        assert_eq!(a.ok, 100);
        assert_eq!(a.errors.get("429"), Some(&2));
        let s = Summary::of(&a.latency);
        assert_eq!(s.p50, 50);
        assert!(s.max >= 9_990 && s.max <= 10_010, "{}", s.max);
    }
}
