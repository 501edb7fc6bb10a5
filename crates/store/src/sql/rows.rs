//! The rows the statements select, and their conversion into the records
//! of [`crate::model`]: the one place that knows how a column is stored.
//!
//! Column types every backend decodes alike: TEXT -> `String`, 64-bit
//! INTEGER/BIGINT -> `i64`, BLOB/BYTEA -> `Vec<u8>`, INTEGER 0/1 or BOOLEAN
//! -> `bool`. A value no valid write could have produced is a [`CorruptRow`].

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::StoreError;
use crate::domain_keys::DomainKeyCheck;
use crate::model::{
    Account, AccountSecret, AliasRecord, GrantRecord, KeyRecord, KeyState, Material, Role, SealKey,
    SecretRecord, SecretState, SecretVersion, StageRecord, Tag,
};

/// A row that no valid write could have produced (edited by hand, or a
/// newer schema). Reported as [`StoreError::Backend`] wrapping
/// `sqlx::Error::Decode`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CorruptRow {
    #[error("unknown key state code {0}")]
    KeyState(i64),
    #[error("unknown account role {0:?}")]
    Role(String),
    #[error("integer column out of range")]
    OutOfRange,
    #[error("grant operations are not a JSON array of strings")]
    Operations(#[source] serde_json::Error),
    #[error("unknown secret state {0:?}")]
    SecretState(String),
    #[error("event subscriptions are not a JSON array of strings")]
    EventSubscriptions(#[source] serde_json::Error),
}

impl From<CorruptRow> for StoreError {
    fn from(e: CorruptRow) -> Self {
        Self::Backend(sqlx::Error::Decode(Box::new(e)))
    }
}

/// Lets infallible row conversions (`From`) share code with fallible ones.
impl From<std::convert::Infallible> for StoreError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

pub(crate) fn key_state(code: i64) -> Result<KeyState, CorruptRow> {
    i32::try_from(code)
        .ok()
        .and_then(KeyState::from_code)
        .ok_or(CorruptRow::KeyState(code))
}

pub(crate) fn u32_column(v: i64) -> Result<u32, CorruptRow> {
    u32::try_from(v).map_err(|_| CorruptRow::OutOfRange)
}

pub(crate) fn secret_state(s: &str) -> Result<SecretState, CorruptRow> {
    SecretState::parse(s).ok_or_else(|| CorruptRow::SecretState(s.to_owned()))
}

// ---- accounts and seal keys -------------------------------------------------

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    access_key: String,
    secret_key: String,
    sealed_secret: Option<Vec<u8>>,
    project_id: String,
    user_id: String,
    role: String,
    created_ms: i64,
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;
    fn try_from(row: AccountRow) -> Result<Self, StoreError> {
        // Moved, not copied, into the zeroizing buffer.
        let clear = Zeroizing::new(row.secret_key);
        Ok(Self {
            role: Role::parse(&row.role).ok_or(CorruptRow::Role(row.role))?,
            access_key: row.access_key,
            secret: match row.sealed_secret {
                Some(sealed) => AccountSecret::Sealed(sealed),
                None => AccountSecret::Clear(clear),
            },
            project_id: row.project_id,
            user_id: row.user_id,
            created_ms: row.created_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SealKeyRow {
    name: String,
    wrapping_key: String,
    wrapped: Vec<u8>,
    created_ms: i64,
}

impl From<SealKeyRow> for SealKey {
    fn from(row: SealKeyRow) -> Self {
        Self {
            name: row.name,
            wrapping_key: row.wrapping_key,
            wrapped: row.wrapped,
            created_ms: row.created_ms,
        }
    }
}

// ---- keys -------------------------------------------------------------------

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    key_id: String,
    project_id: String,
    alias: String,
    description: String,
    spec: String,
    key_usage: String,
    origin: String,
    state: i64,
    default_key: bool,
    created_ms: i64,
    deletion_ms: Option<i64>,
    material_version: i64,
    enterprise_project_id: String,
    keystore_id: String,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;
    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            state: key_state(row.state)?,
            material_version: u32_column(row.material_version)?,
            key_id: row.key_id,
            project_id: row.project_id,
            alias: row.alias,
            description: row.description,
            spec: row.spec,
            usage: row.key_usage,
            origin: row.origin,
            default_key: row.default_key,
            created_ms: row.created_ms,
            deletion_ms: row.deletion_ms,
            enterprise_project_id: row.enterprise_project_id,
            keystore_id: row.keystore_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MaterialRow {
    key_id: String,
    version: i64,
    wrapping_key: String,
    wrapped: Vec<u8>,
    created_ms: i64,
}

impl TryFrom<MaterialRow> for Material {
    type Error = StoreError;
    fn try_from(row: MaterialRow) -> Result<Self, StoreError> {
        Ok(Self {
            version: u32_column(row.version)?,
            key_id: row.key_id,
            wrapping_key: row.wrapping_key,
            wrapped: row.wrapped,
            created_ms: row.created_ms,
        })
    }
}

/// A key LEFT JOINed with its current material version.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyMaterialRow {
    #[sqlx(flatten)]
    key: KeyRow,
    m_version: Option<i64>,
    m_wrapping_key: Option<String>,
    m_wrapped: Option<Vec<u8>>,
    m_created_ms: Option<i64>,
}

impl TryFrom<KeyMaterialRow> for (KeyRecord, Option<Material>) {
    type Error = StoreError;
    fn try_from(row: KeyMaterialRow) -> Result<Self, StoreError> {
        let key = KeyRecord::try_from(row.key)?;
        let material = match (
            row.m_version,
            row.m_wrapping_key,
            row.m_wrapped,
            row.m_created_ms,
        ) {
            (Some(version), Some(wrapping_key), Some(wrapped), Some(created_ms)) => {
                Some(Material {
                    key_id: key.key_id.clone(),
                    version: u32_column(version)?,
                    wrapping_key,
                    wrapped,
                    created_ms,
                })
            }
            _ => None,
        };
        Ok((key, material))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AliasRow {
    project_id: String,
    alias: String,
    key_id: String,
    created_ms: i64,
    updated_ms: i64,
}

impl From<AliasRow> for AliasRecord {
    fn from(row: AliasRow) -> Self {
        Self {
            project_id: row.project_id,
            alias: row.alias,
            key_id: row.key_id,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
        }
    }
}

// ---- purge of keys and secrets ----------------------------------------------

/// A purge scan's result: a key or secret past its deletion time, its id
/// selected `AS id`.
#[derive(sqlx::FromRow)]
pub(crate) struct DueRow {
    pub(crate) id: String,
    pub(crate) project_id: String,
}

// ---- tags of keys and secrets -----------------------------------------------

#[derive(sqlx::FromRow)]
pub(crate) struct TagRow {
    pub(crate) tag_key: String,
    pub(crate) tag_value: String,
}

impl From<TagRow> for Tag {
    fn from(row: TagRow) -> Self {
        Self {
            key: row.tag_key,
            value: row.tag_value,
        }
    }
}

/// A tag of a key or secret, the owner's id selected `AS owner_id`.
#[derive(sqlx::FromRow)]
pub(crate) struct OwnerTagRow {
    owner_id: String,
    tag_key: String,
    tag_value: String,
}

/// What owns tags: a key or a secret.
pub(crate) trait TagOwner {
    /// The id that the owner's tag rows carry.
    fn owner_id(&self) -> &str;
}

impl TagOwner for KeyRecord {
    fn owner_id(&self) -> &str {
        &self.key_id
    }
}

impl TagOwner for SecretRecord {
    fn owner_id(&self) -> &str {
        &self.secret_id
    }
}

/// Attaches tag rows (any order) to their owners, keeping the owners' order.
pub(crate) fn attach_tags<T: TagOwner>(
    owners: Vec<T>,
    rows: Vec<OwnerTagRow>,
) -> Vec<(T, Vec<Tag>)> {
    let mut by_owner: BTreeMap<String, Vec<Tag>> = BTreeMap::new();
    for row in rows {
        by_owner.entry(row.owner_id).or_default().push(Tag {
            key: row.tag_key,
            value: row.tag_value,
        });
    }
    owners
        .into_iter()
        .map(|owner| {
            let mut tags = by_owner.remove(owner.owner_id()).unwrap_or_default();
            tags.sort();
            (owner, tags)
        })
        .collect()
}

/// Groups `(tag_key, tag_value)` rows sorted by key then value.
pub(crate) fn group_tags(rows: Vec<TagRow>) -> Vec<(String, Vec<String>)> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        match grouped.last_mut() {
            Some((key, values)) if *key == row.tag_key => values.push(row.tag_value),
            _ => grouped.push((row.tag_key, vec![row.tag_value])),
        }
    }
    grouped
}

// ---- grants -----------------------------------------------------------------

#[derive(sqlx::FromRow)]
pub(crate) struct GrantRow {
    grant_id: String,
    project_id: String,
    key_id: String,
    name: String,
    grantee_principal: String,
    grantee_principal_type: String,
    operations: String,
    issuing_principal: String,
    retiring_principal: String,
    created_ms: i64,
}

impl TryFrom<GrantRow> for GrantRecord {
    type Error = StoreError;
    fn try_from(row: GrantRow) -> Result<Self, StoreError> {
        Ok(Self {
            operations: serde_json::from_str(&row.operations).map_err(CorruptRow::Operations)?,
            grant_id: row.grant_id,
            project_id: row.project_id,
            key_id: row.key_id,
            name: row.name,
            grantee_principal: row.grantee_principal,
            grantee_principal_type: row.grantee_principal_type,
            issuing_principal: row.issuing_principal,
            retiring_principal: row.retiring_principal,
            created_ms: row.created_ms,
        })
    }
}

// ---- CSMS -------------------------------------------------------------------

#[derive(sqlx::FromRow)]
pub(crate) struct SecretRow {
    secret_id: String,
    project_id: String,
    name: String,
    state: String,
    kms_key_id: String,
    description: String,
    secret_type: String,
    auto_rotation: bool,
    rotation_period: String,
    rotation_config: String,
    event_subscriptions: String,
    enterprise_project_id: String,
    rotation_func_urn: String,
    created_ms: i64,
    updated_ms: i64,
    scheduled_delete_ms: Option<i64>,
}

impl TryFrom<SecretRow> for SecretRecord {
    type Error = StoreError;
    fn try_from(row: SecretRow) -> Result<Self, StoreError> {
        Ok(Self {
            state: secret_state(&row.state)?,
            event_subscriptions: serde_json::from_str(&row.event_subscriptions)
                .map_err(CorruptRow::EventSubscriptions)?,
            secret_id: row.secret_id,
            project_id: row.project_id,
            name: row.name,
            kms_key_id: row.kms_key_id,
            description: row.description,
            secret_type: row.secret_type,
            auto_rotation: row.auto_rotation,
            rotation_period: row.rotation_period,
            rotation_config: row.rotation_config,
            enterprise_project_id: row.enterprise_project_id,
            rotation_func_urn: row.rotation_func_urn,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            scheduled_delete_ms: row.scheduled_delete_ms,
        })
    }
}

/// A version without its stages (filled by [`attach_stages`]).
#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    secret_id: String,
    version_id: String,
    kms_key_id: String,
    ciphertext: Vec<u8>,
    created_ms: i64,
    expire_ms: Option<i64>,
}

impl From<VersionRow> for SecretVersion {
    fn from(row: VersionRow) -> Self {
        Self {
            secret_id: row.secret_id,
            version_id: row.version_id,
            kms_key_id: row.kms_key_id,
            ciphertext: row.ciphertext,
            created_ms: row.created_ms,
            expire_ms: row.expire_ms,
            stages: Vec::new(),
        }
    }
}

/// A secret LEFT JOINed with one of its versions, whose stage names come
/// comma-separated in `v_stages` (see `read_secret_version_sql` in the versions repository).
#[derive(sqlx::FromRow)]
pub(crate) struct SecretVersionRow {
    #[sqlx(flatten)]
    secret: SecretRow,
    v_version_id: Option<String>,
    v_kms_key_id: Option<String>,
    v_ciphertext: Option<Vec<u8>>,
    v_created_ms: Option<i64>,
    v_expire_ms: Option<i64>,
    v_stages: Option<String>,
}

impl TryFrom<SecretVersionRow> for (SecretRecord, Option<SecretVersion>) {
    type Error = StoreError;
    fn try_from(row: SecretVersionRow) -> Result<Self, StoreError> {
        let secret = SecretRecord::try_from(row.secret)?;
        let version = match (
            row.v_version_id,
            row.v_kms_key_id,
            row.v_ciphertext,
            row.v_created_ms,
        ) {
            (Some(version_id), Some(kms_key_id), Some(ciphertext), Some(created_ms)) => {
                // Stage names are `[A-Za-z0-9_-]` (the API checks them), so
                // the comma cannot occur inside one. Sorted here, with the
                // sort `attach_stages` uses, rather than inside the aggregate:
                // the same order on both backends whatever their
                // aggregate-ordering support.
                let mut stages: Vec<String> = row
                    .v_stages
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                stages.sort();
                Some(SecretVersion {
                    secret_id: secret.secret_id.clone(),
                    version_id,
                    kms_key_id,
                    ciphertext,
                    created_ms,
                    expire_ms: row.v_expire_ms,
                    stages,
                })
            }
            _ => None,
        };
        Ok((secret, version))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StageRow {
    pub(crate) secret_id: String,
    pub(crate) name: String,
    pub(crate) version_id: String,
    pub(crate) updated_ms: i64,
}

impl From<StageRow> for StageRecord {
    fn from(row: StageRow) -> Self {
        Self {
            secret_id: row.secret_id,
            name: row.name,
            version_id: row.version_id,
            updated_ms: row.updated_ms,
        }
    }
}

/// `add_version`'s claim of the next version number.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedVersion {
    pub(crate) secret_id: String,
    /// The counter after the increment: the claimed n is one less.
    pub(crate) next_version: i64,
}

/// Attaches stage rows (any order) to their versions, sorted by name.
pub(crate) fn attach_stages(versions: &mut [SecretVersion], stages: &[StageRow]) {
    for version in versions.iter_mut() {
        version.stages = stages
            .iter()
            .filter(|s| s.version_id == version.version_id)
            .map(|s| s.name.clone())
            .collect();
        version.stages.sort();
    }
}

// ---- domain keys ------------------------------------------------------------

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
