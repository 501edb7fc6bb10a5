//! The quota file: a default, per-operation defaults (expensive operations
//! such as `create_rsa_datakey_pair` get a lower quota: their cost), per-tenant
//! quotas and per-tenant per-operation overrides.
//!
//! The file is parsed into raw serde structs and then validated in one pass
//! that collects every problem, so an operator fixing a broken file sees all
//! mistakes at once instead of one per restart (or one per reload attempt).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;

use serde::Deserialize;

/// Highest accepted rate: governor keeps the replenish interval in whole
/// nanoseconds, so anything above 1e9/s would round to a zero interval.
pub const MAX_RATE_PER_SECOND: u32 = 1_000_000_000;

/// One token bucket: refills at `rate_per_second`, holds at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    pub rate_per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Limit {
    /// The governor quota for this limit.
    pub fn quota(self) -> governor::Quota {
        governor::Quota::per_second(self.rate_per_second).allow_burst(self.burst)
    }
}

/// Built-in default used when no quota file is given (same as the example in
/// ARCHITECTURE.md): generous enough never to be the bottleneck of one HSM.
pub const DEFAULT_LIMIT: Limit = Limit {
    rate_per_second: const_nz(20_000),
    burst: const_nz(40_000),
};

/// `NonZeroU32` in const context without `unwrap` (the inputs are literals).
const fn const_nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(v) => v,
        None => NonZeroU32::MIN,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct TenantQuotas {
    limit: Limit,
    operations: HashMap<String, Limit>,
}

/// Validated quotas. Lookups never fail: unknown tenants and operations fall
/// back to the tenant's limit and then to the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    default: Limit,
    /// `[operations.<op>]`: every tenant's limit for that operation unless
    /// the tenant overrides the operation itself.
    operations: HashMap<String, Limit>,
    tenants: HashMap<String, TenantQuotas>,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            default: DEFAULT_LIMIT,
            operations: HashMap::new(),
            tenants: HashMap::new(),
        }
    }
}

impl Quotas {
    /// The limit that applies to `(tenant, operation)`: the tenant's own
    /// override of the operation, else the operation's default (an
    /// expensive operation stays capped for a tenant with a high quota),
    /// else the tenant's limit, else the default.
    pub fn limit(&self, tenant: &str, operation: &str) -> Limit {
        let tenant = self.tenants.get(tenant);
        tenant
            .and_then(|t| t.operations.get(operation))
            .or_else(|| self.operations.get(operation))
            .copied()
            .unwrap_or_else(|| tenant.map_or(self.default, |t| t.limit))
    }

    /// Parse and validate a TOML quota file (the `Reloadable` parser).
    pub fn from_toml(bytes: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(bytes)?;
        let raw: RawFile = toml::from_str(text)?;
        raw.validate().map_err(anyhow::Error::from)
    }
}

/// Every problem found in a quota file, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid quota file:\n  - {}", .problems.join("\n  - "))]
pub struct QuotaFileError {
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate_per_second: u32,
    burst: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    tenant: String,
    rate_per_second: u32,
    burst: u32,
    #[serde(default)]
    operations: HashMap<String, RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<RawLimit>,
    #[serde(default)]
    operations: HashMap<String, RawLimit>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

fn check_limit(what: &str, rate: u32, burst: u32, problems: &mut Vec<String>) -> Option<Limit> {
    let rate_ok = match NonZeroU32::new(rate) {
        Some(r) if rate <= MAX_RATE_PER_SECOND => Some(r),
        Some(_) => {
            problems.push(format!(
                "{what}: rate_per_second {rate} exceeds {MAX_RATE_PER_SECOND}"
            ));
            None
        }
        None => {
            problems.push(format!("{what}: rate_per_second must be at least 1"));
            None
        }
    };
    let burst_ok = NonZeroU32::new(burst);
    if burst_ok.is_none() {
        problems.push(format!("{what}: burst must be at least 1"));
    }
    Some(Limit {
        rate_per_second: rate_ok?,
        burst: burst_ok?,
    })
}

impl RawFile {
    fn validate(self) -> Result<Quotas, QuotaFileError> {
        let mut problems = Vec::new();
        let default = match self.default {
            Some(d) => check_limit("[default]", d.rate_per_second, d.burst, &mut problems),
            None => Some(DEFAULT_LIMIT),
        };
        let mut operations = HashMap::new();
        for (op, l) in self.operations {
            if op.is_empty() {
                problems.push("[operations]: operation name must not be empty".to_owned());
            }
            let what = format!("[operations.{op}]");
            if let Some(l) = check_limit(&what, l.rate_per_second, l.burst, &mut problems) {
                operations.insert(op, l);
            }
        }
        let mut tenants = HashMap::new();
        // Tracked apart from `tenants` so a duplicate of an invalid entry is
        // still reported.
        let mut seen = HashSet::new();
        for (i, t) in self.tenants.into_iter().enumerate() {
            let what = format!("tenants[{i}] ({:?})", t.tenant);
            if t.tenant.is_empty() {
                problems.push(format!("tenants[{i}]: tenant must not be empty"));
            }
            let limit = check_limit(&what, t.rate_per_second, t.burst, &mut problems);
            let mut operations = HashMap::new();
            for (op, l) in t.operations {
                if op.is_empty() {
                    problems.push(format!("{what}: operation name must not be empty"));
                }
                let op_what = format!("{what}.operations.{op}");
                if let Some(l) = check_limit(&op_what, l.rate_per_second, l.burst, &mut problems) {
                    operations.insert(op, l);
                }
            }
            if !seen.insert(t.tenant.clone()) {
                problems.push(format!("{what}: tenant listed more than once"));
            } else if let Some(limit) = limit {
                tenants.insert(t.tenant, TenantQuotas { limit, operations });
            }
        }
        match default {
            Some(default) if problems.is_empty() => Ok(Quotas {
                default,
                operations,
                tenants,
            }),
            _ => {
                // Sorted so the message is stable (operations come from a map).
                problems.sort();
                Err(QuotaFileError { problems })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[default]
rate_per_second = 20000
burst = 40000

[[tenants]]
tenant = "/demo/kms/xks/v1"
rate_per_second = 100
burst = 200
[tenants.operations.Encrypt]
rate_per_second = 10
burst = 10
"#;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn example_resolves_default_tenant_and_operation() {
        let q = Quotas::from_toml(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(q.limit("/other", "Encrypt"), DEFAULT_LIMIT);
        assert_eq!(
            q.limit("/demo/kms/xks/v1", "Decrypt"),
            Limit {
                rate_per_second: nz(100),
                burst: nz(200)
            }
        );
        assert_eq!(
            q.limit("/demo/kms/xks/v1", "Encrypt"),
            Limit {
                rate_per_second: nz(10),
                burst: nz(10)
            }
        );
    }

    #[test]
    fn operation_defaults_apply_to_every_tenant_unless_overridden() {
        let q = Quotas::from_toml(
            br#"
[default]
rate_per_second = 20000
burst = 40000
[operations.create_rsa_datakey_pair]
rate_per_second = 2
burst = 5
[[tenants]]
tenant = "kms:p1"
rate_per_second = 5000
burst = 10000
[[tenants]]
tenant = "kms:p2"
rate_per_second = 5000
burst = 10000
[tenants.operations.create_rsa_datakey_pair]
rate_per_second = 50
burst = 50
"#,
        )
        .unwrap();
        let rsa = Limit {
            rate_per_second: nz(2),
            burst: nz(5),
        };
        assert_eq!(q.limit("kms:other", "create_rsa_datakey_pair"), rsa);
        assert_eq!(q.limit("kms:p1", "create_rsa_datakey_pair"), rsa);
        assert_eq!(q.limit("kms:p1", "encrypt_data").burst, nz(10000));
        assert_eq!(q.limit("kms:p2", "create_rsa_datakey_pair").burst, nz(50));
        assert_eq!(q.limit("kms:other", "encrypt_data"), q.default);
        let err = Quotas::from_toml(b"[operations.x]\nrate_per_second = 0\nburst = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[operations.x]: rate_per_second"), "{err}");
    }

    #[test]
    fn empty_file_is_the_builtin_default() {
        assert_eq!(Quotas::from_toml(b"").unwrap(), Quotas::default());
    }

    #[test]
    fn every_problem_is_reported_together() {
        let bad = r#"
[default]
rate_per_second = 0
burst = 0
[[tenants]]
tenant = ""
rate_per_second = 1
burst = 1
[[tenants]]
tenant = "/a"
rate_per_second = 1
burst = 1
[tenants.operations.Encrypt]
rate_per_second = 2000000000
burst = 1
[[tenants]]
tenant = "/a"
rate_per_second = 1
burst = 1
"#;
        let err = Quotas::from_toml(bad.as_bytes()).unwrap_err();
        let err = err.downcast::<QuotaFileError>().unwrap();
        assert_eq!(err.problems.len(), 5, "{err}");
        let text = err.to_string();
        for needle in [
            "[default]: rate_per_second must be at least 1",
            "[default]: burst must be at least 1",
            "tenant must not be empty",
            "exceeds",
            "listed more than once",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Quotas::from_toml(b"[default]\nrate = 1\nburst = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
