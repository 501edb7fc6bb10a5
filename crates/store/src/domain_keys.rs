//! Domain-key binding: the key check value (KCV) of each HSM domain key the
//! stored material is wrapped under (`domain_keys`, migration 0004).
//!
//! A narrow trait of its own ([`DomainKeys`], a supertrait of
//! [`Store`](crate::Store)), implemented for both backends in
//! `sql/repos/domain_keys.rs` with the same statements on each (`INSERT ..
//! ON CONFLICT`, which both speak).

use async_trait::async_trait;

use crate::Result;
use crate::model::Millis;

/// A recorded domain key check value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainKeyCheck {
    /// CKA_LABEL of the domain key.
    pub label: String,
    /// Its KCV (lower-case hex, as the crypto-worker computes it).
    pub kcv: String,
    pub recorded_ms: Millis,
}

/// The domain keys' check values and what depends on them.
#[async_trait]
pub trait DomainKeys: Send + Sync + std::fmt::Debug {
    /// The KCV on record for the domain key `label`, if any.
    async fn domain_key_check(&self, label: &str) -> Result<Option<DomainKeyCheck>>;
    /// Record `kcv` for `label` unless a KCV is already on record; returns
    /// the record that holds afterwards (the earlier one when there was one:
    /// the caller compares). Atomic: of two concurrent first starts, both
    /// see the same record.
    async fn record_domain_key_check(
        &self,
        label: &str,
        kcv: &str,
        now: Millis,
    ) -> Result<DomainKeyCheck>;
    /// Overwrite the KCV of `label`: only after an operator explicitly
    /// replaced the domain key and accepted that the material wrapped under
    /// the old one is lost.
    async fn replace_domain_key_check(&self, label: &str, kcv: &str, now: Millis) -> Result<()>;
    /// How many wrapped key materials name `label` as their wrapping key
    /// (every CMK version; CSMS values are sealed under CMKs, so they hang
    /// on these too).
    async fn wrapped_under(&self, label: &str) -> Result<u64>;
}
