//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over the same
//! buckets and quota file as `keymesh.ratelimit.v1`, so an Envoy or Istio
//! ingress in front of the edge enforces the same quotas.
//!
//! Mapping (one bucket per descriptor):
//! * **tenant** = the descriptor's `tenant` entry if it has one, else the
//!   request `domain`. The entry wins so one Envoy domain can carry many
//!   keymesh tenants (e.g. `tenant` from the request path), while the simple
//!   setup (one domain per key store) needs no descriptor action for it.
//! * **operation** = the descriptor's `operation` entry if it has one, else
//!   the remaining entries joined as `key=value` pairs with `,` in request
//!   order (so arbitrary Envoy descriptors still map to a stable bucket, whose
//!   limit is the tenant's, or the default).
//! * Each descriptor takes `hits_addend` permits (0 = 1) all-or-nothing;
//!   every descriptor is charged (Envoy's reference service does the same)
//!   and `overall_code` is OVER_LIMIT if any one is over.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use keymesh_proto::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use keymesh_proto::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use keymesh_proto::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use keymesh_proto::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_service_server,
};
use tonic::{Request, Response, Status};

use crate::buckets::Buckets;
use crate::service::{MAX_NAME_LEN, MAX_PERMITS};

/// Most descriptors one request may carry: Envoy sends one per matching rate
/// limit action (a handful); the bound keeps one request's cost small.
pub const MAX_DESCRIPTORS: usize = 64;

/// Why a ShouldRateLimit was refused. Every variant is INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    /// INVALID_ARGUMENT: no `tenant` entry and no domain.
    #[error("descriptor {index}: no tenant (empty domain and no `tenant` entry)")]
    NoTenant { index: usize },
    /// INVALID_ARGUMENT: no `operation` entry and no other entry.
    #[error("descriptor {index}: no operation (no entries besides `tenant`)")]
    NoOperation { index: usize },
    /// INVALID_ARGUMENT: tenant or operation longer than MAX_NAME_LEN.
    #[error("descriptor {index}: {field} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong { index: usize, field: &'static str },
    /// INVALID_ARGUMENT: more than MAX_DESCRIPTORS descriptors.
    #[error("at most {MAX_DESCRIPTORS} descriptors per request, got {count}")]
    TooManyDescriptors { count: usize },
    /// INVALID_ARGUMENT: hits_addend above MAX_PERMITS.
    #[error("hits_addend must be at most {MAX_PERMITS}, got {hits}")]
    HitsOutOfRange { hits: u32 },
}

impl From<EnvoyError> for Status {
    fn from(e: EnvoyError) -> Self {
        match e {
            EnvoyError::NoTenant { .. }
            | EnvoyError::NoOperation { .. }
            | EnvoyError::NameTooLong { .. }
            | EnvoyError::TooManyDescriptors { .. }
            | EnvoyError::HitsOutOfRange { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

/// The keymesh bucket key of one descriptor: (tenant, operation).
pub fn bucket_key(
    domain: &str,
    d: &RateLimitDescriptor,
    index: usize,
) -> Result<(String, String), EnvoyError> {
    let mut tenant = None;
    let mut operation = None;
    let mut joined = String::new();
    for e in &d.entries {
        match e.key.as_str() {
            "tenant" if tenant.is_none() => tenant = Some(e.value.as_str()),
            "operation" if operation.is_none() => operation = Some(e.value.as_str()),
            _ => {
                if !joined.is_empty() {
                    joined.push(',');
                }
                // Writing to a String cannot fail.
                let _ = write!(joined, "{}={}", e.key, e.value);
            }
        }
    }
    let tenant = tenant.unwrap_or(domain);
    let operation = match operation {
        Some(op) => op.to_owned(),
        None => joined,
    };
    if tenant.is_empty() {
        return Err(EnvoyError::NoTenant { index });
    }
    if operation.is_empty() {
        return Err(EnvoyError::NoOperation { index });
    }
    if tenant.len() > MAX_NAME_LEN {
        return Err(EnvoyError::NameTooLong {
            index,
            field: "tenant",
        });
    }
    if operation.len() > MAX_NAME_LEN {
        return Err(EnvoyError::NameTooLong {
            index,
            field: "operation",
        });
    }
    Ok((tenant.to_owned(), operation))
}

/// The Envoy rate limit service over the bucket table.
pub struct EnvoyService<C: Clock> {
    buckets: Arc<Buckets<C>>,
}

impl<C: Clock> EnvoyService<C> {
    pub fn new(buckets: Arc<Buckets<C>>) -> Self {
        Self { buckets }
    }
}

impl<C: Clock> std::fmt::Debug for EnvoyService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyService").finish_non_exhaustive()
    }
}

fn count(decision: &'static str) {
    metrics::counter!("keymesh_limiter_envoy_decisions_total", "decision" => decision).increment(1);
}

impl<C> EnvoyService<C>
where
    C: Clock + Clone,
{
    /// Decide a whole request: validated first, so an invalid descriptor
    /// charges no bucket.
    pub fn decide(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, EnvoyError> {
        if req.descriptors.len() > MAX_DESCRIPTORS {
            return Err(EnvoyError::TooManyDescriptors {
                count: req.descriptors.len(),
            });
        }
        let hits = match NonZeroU32::new(req.hits_addend) {
            None => NonZeroU32::MIN,
            Some(h) if h.get() <= MAX_PERMITS => h,
            Some(h) => return Err(EnvoyError::HitsOutOfRange { hits: h.get() }),
        };
        let keys = req
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| bucket_key(&req.domain, d, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut overall = Code::Ok;
        let statuses = keys
            .iter()
            .map(|(tenant, operation)| {
                let (limit, outcome) = self.buckets.take(tenant, operation, hits);
                let code = if outcome.is_ok() {
                    Code::Ok
                } else {
                    overall = Code::OverLimit;
                    Code::OverLimit
                };
                DescriptorStatus {
                    code: code.into(),
                    current_limit: Some(RateLimit {
                        name: format!("{tenant}/{operation}"),
                        requests_per_unit: limit.rate_per_second.get(),
                        unit: Unit::Second.into(),
                    }),
                }
            })
            .collect();
        Ok(RateLimitResponse {
            overall_code: overall.into(),
            statuses,
        })
    }
}

#[tonic::async_trait]
impl<C> rate_limit_service_server::RateLimitService for EnvoyService<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        match self.decide(request.get_ref()) {
            Ok(resp) => {
                count(if resp.overall_code == i32::from(Code::Ok) {
                    "ok"
                } else {
                    "over_limit"
                });
                Ok(Response::new(resp))
            }
            Err(e) => {
                count("invalid");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use keymesh_proto::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn d(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn descriptor_mapping() {
        let key = |domain, entries: &[(&str, &str)]| bucket_key(domain, &d(entries), 0);
        assert_eq!(
            key("/t", &[("operation", "Encrypt")]).unwrap(),
            ("/t".into(), "Encrypt".into())
        );
        // A tenant entry overrides the domain; entry order does not matter.
        assert_eq!(
            key("ingress", &[("operation", "Decrypt"), ("tenant", "/u")]).unwrap(),
            ("/u".into(), "Decrypt".into())
        );
        // No operation entry: the other entries, joined in order.
        assert_eq!(
            key("/t", &[("remote_address", "10.0.0.1"), ("path", "/x")]).unwrap(),
            ("/t".into(), "remote_address=10.0.0.1,path=/x".into())
        );
        assert!(matches!(
            key("", &[("operation", "Encrypt")]),
            Err(EnvoyError::NoTenant { .. })
        ));
        assert!(matches!(
            key("/t", &[("tenant", "/u")]),
            Err(EnvoyError::NoOperation { .. })
        ));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            key(&long, &[("operation", "Encrypt")]),
            Err(EnvoyError::NameTooLong {
                field: "tenant",
                ..
            })
        ));
        let status: Status = EnvoyError::NoTenant { index: 0 }.into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
