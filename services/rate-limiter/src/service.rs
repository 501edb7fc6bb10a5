//! `keymesh.ratelimit.v1.RateLimiter`: validation, the decision, and the one
//! place that maps limiter errors to gRPC codes.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use keymesh_proto::ratelimit::v1::{AcquireRequest, AcquireResponse, rate_limiter_server};
use tonic::{Request, Response, Status};

use crate::buckets::{Buckets, Grant};

/// Largest lease one request may ask for: bigger leases would let one edge
/// hoard a tenant's whole burst for the lease TTL. Its home is the contracts
/// crate, because the edge's limiter client caps its leases by it too.
pub use keymesh_contracts::limits::MAX_PERMITS;

/// How long granted permits stay valid at the caller.
pub const LEASE_TTL_MS: u32 = 1_000;

/// Longest tenant/operation accepted: tenants are URI paths and operations
/// short names; the bound keeps a buggy caller from growing the table with
/// arbitrarily large keys.
pub const MAX_NAME_LEN: usize = 1_024;

/// Why an Acquire was refused. Every variant is INVALID_ARGUMENT: the caller
/// sent a request that can never succeed.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// INVALID_ARGUMENT: no tenant.
    #[error("tenant must not be empty")]
    EmptyTenant,
    /// INVALID_ARGUMENT: no operation.
    #[error("operation must not be empty")]
    EmptyOperation,
    /// INVALID_ARGUMENT: permits outside 1..=MAX_PERMITS.
    #[error("permits must be between 1 and {MAX_PERMITS}, got {permits}")]
    PermitsOutOfRange { permits: u32 },
    /// INVALID_ARGUMENT: tenant or operation longer than MAX_NAME_LEN.
    #[error("{field} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong { field: &'static str },
}

impl From<AcquireError> for Status {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::EmptyTenant
            | AcquireError::EmptyOperation
            | AcquireError::PermitsOutOfRange { .. }
            | AcquireError::NameTooLong { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

fn validate(req: &AcquireRequest) -> Result<NonZeroU32, AcquireError> {
    if req.tenant.is_empty() {
        return Err(AcquireError::EmptyTenant);
    }
    if req.operation.is_empty() {
        return Err(AcquireError::EmptyOperation);
    }
    if req.tenant.len() > MAX_NAME_LEN {
        return Err(AcquireError::NameTooLong { field: "tenant" });
    }
    if req.operation.len() > MAX_NAME_LEN {
        return Err(AcquireError::NameTooLong { field: "operation" });
    }
    match NonZeroU32::new(req.permits) {
        Some(p) if p.get() <= MAX_PERMITS => Ok(p),
        _ => Err(AcquireError::PermitsOutOfRange {
            permits: req.permits,
        }),
    }
}

/// Convert a grant to the wire answer. `retry_after_ms` is rounded up and at
/// least 1 so a caller never busy-loops on a zero wait.
pub fn response(grant: Grant) -> AcquireResponse {
    let retry_after_ms = if grant.granted == 0 {
        let ms = grant.retry_after.as_nanos().div_ceil(1_000_000).max(1);
        u32::try_from(ms).unwrap_or(u32::MAX)
    } else {
        0
    };
    AcquireResponse {
        granted: grant.granted,
        retry_after_ms,
        lease_ttl_ms: LEASE_TTL_MS,
    }
}

/// The gRPC service over the bucket table.
pub struct LimiterService<C: Clock> {
    buckets: Arc<Buckets<C>>,
}

impl<C: Clock> LimiterService<C> {
    pub fn new(buckets: Arc<Buckets<C>>) -> Self {
        Self { buckets }
    }
}

impl<C: Clock> std::fmt::Debug for LimiterService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterService").finish_non_exhaustive()
    }
}

fn count(decision: &'static str) {
    metrics::counter!("keymesh_limiter_decisions_total", "decision" => decision).increment(1);
}

#[tonic::async_trait]
impl<C> rate_limiter_server::RateLimiter for LimiterService<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let req = request.into_inner();
        let permits = match validate(&req) {
            Ok(p) => p,
            Err(e) => {
                count("invalid");
                return Err(e.into());
            }
        };
        let grant = self.buckets.acquire(&req.tenant, &req.operation, permits);
        count(if grant.granted == permits.get() {
            "granted"
        } else if grant.granted > 0 {
            "partial"
        } else {
            "denied"
        });
        Ok(Response::new(response(grant)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(tenant: &str, operation: &str, permits: u32) -> AcquireRequest {
        AcquireRequest {
            tenant: tenant.into(),
            operation: operation.into(),
            permits,
        }
    }

    #[test]
    fn validation() {
        assert!(matches!(
            validate(&req("", "Encrypt", 1)),
            Err(AcquireError::EmptyTenant)
        ));
        assert!(matches!(
            validate(&req("/t", "", 1)),
            Err(AcquireError::EmptyOperation)
        ));
        assert!(matches!(
            validate(&req("/t", "Encrypt", 0)),
            Err(AcquireError::PermitsOutOfRange { permits: 0 })
        ));
        assert!(matches!(
            validate(&req("/t", "Encrypt", MAX_PERMITS + 1)),
            Err(AcquireError::PermitsOutOfRange { .. })
        ));
        assert_eq!(
            validate(&req("/t", "Encrypt", MAX_PERMITS)).unwrap().get(),
            MAX_PERMITS
        );
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            validate(&req(&long, "Encrypt", 1)),
            Err(AcquireError::NameTooLong { field: "tenant" })
        ));
        let status: Status = AcquireError::EmptyTenant.into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let deny = |d| {
            response(Grant {
                granted: 0,
                retry_after: d,
            })
        };
        assert_eq!(deny(Duration::ZERO).retry_after_ms, 1);
        assert_eq!(deny(Duration::from_micros(1)).retry_after_ms, 1);
        assert_eq!(deny(Duration::from_micros(1500)).retry_after_ms, 2);
        assert_eq!(deny(Duration::from_millis(100)).retry_after_ms, 100);
        let ok = response(Grant {
            granted: 3,
            retry_after: Duration::ZERO,
        });
        assert_eq!(
            (ok.granted, ok.retry_after_ms, ok.lease_ttl_ms),
            (3, 0, 1000)
        );
    }
}
