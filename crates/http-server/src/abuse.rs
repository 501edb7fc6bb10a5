//! Abuse budgets: what a caller whose signature or token is not yet verified
//! may cost the edge. Each bound refuses with the dialect's 429 (XKS
//! `ThrottlingException`, Huawei `APIGW.0308`) instead of reaching the store
//! or growing memory:
//!
//! - [`SourceLimiter`]: a token bucket per client address (IPv6 by /64),
//!   charged for every store lookup made for a caller not yet authenticated
//!   (an access key missing from the account cache) and for every failed
//!   authentication. Authenticated traffic never spends it, so a busy tenant
//!   behind one address is not slowed by it.
//! - [`PreAuthBudget`]: one semaphore of bytes across all connections for
//!   request bodies buffered before authentication, taken as the bytes arrive
//!   (a client that declares a body and never sends it holds nothing) and
//!   given back once the request is authenticated or answered.
//! - Per-connection HTTP/1.1 and HTTP/2 limits ([`AbuseConfig`] fields,
//!   applied in `server.rs`): what one connection may make the edge hold
//!   (streams, flow-control windows, header lists).
//!
//! 429 rather than 503 for an exhausted byte budget: like the worker-pool
//! load shedding, it tells the caller to back off and retry, and AWS KMS
//! treats an XKS 503 as a dependency failure of the key store.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The `[abuse]` section of the edge configuration.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// Unauthenticated attempts (store lookups for unknown callers, failed
    /// authentications) refilled per second per source address (default 50).
    pub unauthenticated_per_source_per_sec: u32,
    /// Burst of such attempts per source address (default 200).
    pub unauthenticated_per_source_burst: u32,
    /// Bytes of request bodies buffered before authentication, across all
    /// connections (default 32 MiB). Measured with 200 concurrent 1 MiB
    /// unauthenticated bodies: peak RSS 113..150 MiB from a ~40 MiB baseline
    /// (the rest is per-connection buffers and what the allocator keeps of
    /// freed ones), well under the edge's 256 Mi Kubernetes limit.
    pub preauth_buffer_bytes: usize,
    /// Concurrent HTTP/2 streams per connection (default 100, RFC 9113's
    /// recommended minimum; hyper's own default is 200).
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 initial stream window: bytes a client may send on one stream
    /// before the edge reads them (default 256 KiB).
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 initial connection window (default 1 MiB).
    pub http2_connection_window_bytes: u32,
    /// Largest HTTP/2 header list (default 64 KiB).
    pub http2_max_header_list_bytes: u32,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            unauthenticated_per_source_per_sec: 50,
            unauthenticated_per_source_burst: 200,
            preauth_buffer_bytes: 32 << 20,
            http2_max_concurrent_streams: 100,
            http2_stream_window_bytes: 256 << 10,
            http2_connection_window_bytes: 1 << 20,
            http2_max_header_list_bytes: 64 << 10,
        }
    }
}

/// HTTP/2's smallest legal window and frame (RFC 9113 §6.5.2).
const H2_MIN_WINDOW: u32 = 65_535;
/// HTTP/2's largest legal window.
const H2_MAX_WINDOW: u32 = (1 << 31) - 1;

impl AbuseConfig {
    /// Every problem, for `Config::validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.unauthenticated_per_source_per_sec == 0 {
            out.push("abuse.unauthenticated_per_source_per_sec: must be at least 1".to_owned());
        }
        if self.unauthenticated_per_source_burst == 0 {
            out.push("abuse.unauthenticated_per_source_burst: must be at least 1".to_owned());
        }
        // tokio semaphores take at most u32::MAX permits at once.
        if !(1 << 20..=1 << 32).contains(&self.preauth_buffer_bytes) {
            out.push("abuse.preauth_buffer_bytes: must be 1 MiB..=4 GiB".to_owned());
        }
        if self.http2_max_concurrent_streams == 0 {
            out.push("abuse.http2_max_concurrent_streams: must be at least 1".to_owned());
        }
        for (name, v) in [
            ("http2_stream_window_bytes", self.http2_stream_window_bytes),
            (
                "http2_connection_window_bytes",
                self.http2_connection_window_bytes,
            ),
        ] {
            if !(H2_MIN_WINDOW..=H2_MAX_WINDOW).contains(&v) {
                out.push(format!("abuse.{name}: must be 65535..=2147483647"));
            }
        }
        if self.http2_max_header_list_bytes < 8192 {
            out.push("abuse.http2_max_header_list_bytes: must be at least 8192".to_owned());
        }
        out
    }
}

/// The client address of a connection, a request extension set by the
/// listener (`server.rs`); the per-source budget keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Peer {
    pub fn of(ext: &http::Extensions) -> Option<SocketAddr> {
        ext.get::<Peer>().map(|p| p.0)
    }
}

/// Sources remembered at most; past it, buckets back at full are dropped,
/// and if every one is still draining, new sources are refused until some
/// refill (a flood from this many addresses is refused, not remembered).
const MAX_SOURCES: usize = 100_000;

type Keyed<C> = governor::RateLimiter<
    IpAddr,
    HashMapStateStore<IpAddr>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Per-source budget of unauthenticated attempts, generic over governor's
/// clock so tests drive it without sleeping.
pub struct SourceLimiter<C: Clock = DefaultClock> {
    buckets: Keyed<C>,
}

impl<C: Clock> std::fmt::Debug for SourceLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter").finish_non_exhaustive()
    }
}

/// The bucket key of a peer: its address, IPv6 cut to its /64 (one host
/// commonly holds a whole /64, so per-address keys would not bound it).
pub fn source_key(peer: Option<SocketAddr>) -> IpAddr {
    match peer.map(|p| p.ip().to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(v4) => v4,
        // No peer (in-process tests): one shared bucket.
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl<C: Clock> SourceLimiter<C> {
    pub fn with_clock(config: &AbuseConfig, clock: C) -> Self {
        let per_sec =
            NonZeroU32::new(config.unauthenticated_per_source_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst =
            NonZeroU32::new(config.unauthenticated_per_source_burst).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_sec).allow_burst(burst);
        Self {
            buckets: governor::RateLimiter::hashmap_with_clock(quota, clock),
        }
    }

    /// Spend one unauthenticated attempt for `peer`; false = over budget
    /// (answer 429).
    pub fn admit(&self, peer: Option<SocketAddr>) -> bool {
        if self.buckets.len() >= MAX_SOURCES {
            self.buckets.retain_recent();
            if self.buckets.len() >= MAX_SOURCES {
                metrics::counter!("keymesh_edge_unauthenticated_refused_total", "reason" => "sources")
                    .increment(1);
                return false;
            }
        }
        let ok = self.buckets.check_key(&source_key(peer)).is_ok();
        if !ok {
            metrics::counter!("keymesh_edge_unauthenticated_refused_total", "reason" => "source")
                .increment(1);
        }
        ok
    }
}

impl SourceLimiter {
    pub fn new(config: &AbuseConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

/// The global budget of bytes buffered before authentication.
#[derive(Debug, Clone)]
pub struct PreAuthBudget {
    bytes: Arc<Semaphore>,
}

impl PreAuthBudget {
    pub fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Bytes still available (metrics, tests).
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// `n` more bytes for `held` (a fresh hold when `None`); false = the
    /// budget is exhausted and nothing was taken.
    pub fn take(&self, held: &mut Option<OwnedSemaphorePermit>, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match Arc::clone(&self.bytes).try_acquire_many_owned(n) {
            Ok(p) => {
                match held {
                    Some(h) => h.merge(p),
                    None => *held = Some(p),
                }
                true
            }
            Err(_) => {
                metrics::counter!("keymesh_edge_unauthenticated_refused_total", "reason" => "buffer")
                    .increment(1);
                false
            }
        }
    }
}

/// Bytes of one request's body counted against the [`PreAuthBudget`]; a
/// request extension from the body-limit layer until authentication, which
/// removes it (dropping the last clone gives the bytes back).
#[derive(Debug, Clone)]
pub struct PreAuthBytes(pub Arc<OwnedSemaphorePermit>);

/// The abuse budgets shared by both dialects (one per edge).
#[derive(Debug)]
pub struct Abuse {
    pub config: AbuseConfig,
    pub sources: SourceLimiter,
    pub preauth: PreAuthBudget,
}

impl Abuse {
    pub fn new(config: AbuseConfig) -> Self {
        Self {
            sources: SourceLimiter::new(&config),
            preauth: PreAuthBudget::new(config.preauth_buffer_bytes),
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_source_burst_then_refill() {
        let config = AbuseConfig {
            unauthenticated_per_source_per_sec: 2,
            unauthenticated_per_source_burst: 3,
            ..AbuseConfig::default()
        };
        let clock = FakeRelativeClock::default();
        let l = SourceLimiter::with_clock(&config, clock.clone());
        let a = peer("192.0.2.1:1000");
        for _ in 0..3 {
            assert!(l.admit(a));
        }
        assert!(!l.admit(a));
        // Another source, and the same source on another port, are apart / together.
        assert!(l.admit(peer("192.0.2.2:1000")));
        assert!(!l.admit(peer("192.0.2.1:2000")));
        // Two per second.
        clock.advance(Duration::from_millis(500));
        assert!(l.admit(a));
        assert!(!l.admit(a));
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64() {
        assert_eq!(
            source_key(peer("[2001:db8:1:2:aaaa::1]:1")),
            source_key(peer("[2001:db8:1:2:bbbb::2]:1"))
        );
        assert_ne!(
            source_key(peer("[2001:db8:1:2::1]:1")),
            source_key(peer("[2001:db8:1:3::1]:1"))
        );
        // IPv4-mapped addresses are the IPv4 source.
        assert_eq!(
            source_key(peer("[::ffff:192.0.2.1]:1")),
            source_key(peer("192.0.2.1:9"))
        );
    }

    #[test]
    fn byte_budget_is_shared_and_given_back() {
        let b = PreAuthBudget::new(1000);
        let mut one = None;
        assert!(b.take(&mut one, 600));
        assert!(b.take(&mut one, 300));
        let mut two = None;
        assert!(!b.take(&mut two, 200));
        assert!(two.is_none());
        assert!(b.take(&mut two, 100));
        assert_eq!(b.available(), 0);
        drop(one);
        assert_eq!(b.available(), 900);
        drop(two);
        assert_eq!(b.available(), 1000);
    }

    #[test]
    fn config_defaults_are_valid_and_checked() {
        assert!(AbuseConfig::default().problems().is_empty());
        let bad = AbuseConfig {
            unauthenticated_per_source_per_sec: 0,
            preauth_buffer_bytes: 10,
            http2_stream_window_bytes: 10,
            http2_max_header_list_bytes: 10,
            ..AbuseConfig::default()
        };
        assert_eq!(bad.problems().len(), 4);
    }
}
