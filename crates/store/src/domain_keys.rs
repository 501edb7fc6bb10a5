//! Domain-key binding: the key check value (KCV) of each HSM domain key the
//! stored material is wrapped under (`domain_keys`, migration 0004).
//!
//! A narrow trait of its own ([`DomainKeys`], a supertrait of
//! [`Store`](crate::Store)) implemented once for both backends by
//! [`impl_domain_keys!`], with the same statements on each (`INSERT .. ON
//! CONFLICT`, which both speak).

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

pub(crate) const SELECT_DOMAIN_KEY: &str =
    "SELECT label, kcv, recorded_ms FROM domain_keys WHERE label = $1";
pub(crate) const INSERT_DOMAIN_KEY: &str = "INSERT INTO domain_keys (label, kcv, recorded_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (label) DO NOTHING";
pub(crate) const UPSERT_DOMAIN_KEY: &str = "INSERT INTO domain_keys (label, kcv, recorded_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (label) DO UPDATE SET kcv = $2, recorded_ms = $3";
pub(crate) const COUNT_WRAPPED_UNDER: &str =
    "SELECT COUNT(*) FROM key_materials WHERE wrapping_key = $1";

#[derive(sqlx::FromRow)]
pub(crate) struct DomainKeyRow {
    pub(crate) label: String,
    pub(crate) kcv: String,
    pub(crate) recorded_ms: i64,
}

impl From<DomainKeyRow> for DomainKeyCheck {
    fn from(r: DomainKeyRow) -> Self {
        Self {
            label: r.label,
            kcv: r.kcv,
            recorded_ms: r.recorded_ms,
        }
    }
}

/// `impl DomainKeys for $store` over its `pool`.
macro_rules! impl_domain_keys {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::domain_keys::DomainKeys for $store {
            async fn domain_key_check(
                &self,
                label: &str,
            ) -> $crate::Result<Option<$crate::domain_keys::DomainKeyCheck>> {
                Ok(sqlx::query_as::<_, $crate::domain_keys::DomainKeyRow>(
                    $crate::domain_keys::SELECT_DOMAIN_KEY,
                )
                .bind(label)
                .fetch_optional(&self.pool)
                .await?
                .map(Into::into))
            }

            async fn record_domain_key_check(
                &self,
                label: &str,
                kcv: &str,
                now: $crate::model::Millis,
            ) -> $crate::Result<$crate::domain_keys::DomainKeyCheck> {
                sqlx::query($crate::domain_keys::INSERT_DOMAIN_KEY)
                    .bind(label)
                    .bind(kcv)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                // Rows are never deleted: the insert or an earlier one holds.
                Ok(sqlx::query_as::<_, $crate::domain_keys::DomainKeyRow>(
                    $crate::domain_keys::SELECT_DOMAIN_KEY,
                )
                .bind(label)
                .fetch_one(&self.pool)
                .await?
                .into())
            }

            async fn replace_domain_key_check(
                &self,
                label: &str,
                kcv: &str,
                now: $crate::model::Millis,
            ) -> $crate::Result<()> {
                sqlx::query($crate::domain_keys::UPSERT_DOMAIN_KEY)
                    .bind(label)
                    .bind(kcv)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn wrapped_under(&self, label: &str) -> $crate::Result<u64> {
                let n: i64 = sqlx::query_scalar($crate::domain_keys::COUNT_WRAPPED_UNDER)
                    .bind(label)
                    .fetch_one(&self.pool)
                    .await?;
                u64::try_from(n).map_err(|_| {
                    $crate::StoreError::Backend(sqlx::Error::Decode(Box::new(
                        $crate::sql::CorruptRow::OutOfRange,
                    )))
                })
            }
        }
    };
}
pub(crate) use impl_domain_keys;
