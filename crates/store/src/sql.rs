//! The one implementation of [`Store`](crate::Store), shared by both
//! backends.
//!
//! SQLite and PostgreSQL run the very same statements: `$n` placeholders
//! (sqlx binds them by number on SQLite too), 64-bit integers, TEXT, BLOB or
//! BYTEA, `INSERT .. ON CONFLICT` and `UPDATE .. RETURNING`, which both
//! speak, against the same tables (`migrations/*/0001_kms.sql`,
//! `migrations/*/0002_csms.sql`, `migrations/*/0003_sealed_secrets.sql`). What differs is how a read-check-write
//! transaction keeps concurrent writers out, and the names of two functions,
//! so each backend type provides four items that [`impl_store!`] calls:
//!
//! * `async fn begin_write(&self, project_id: &str) -> Result<Transaction>`:
//!   a transaction in which no other writer of that project runs until it
//!   ends, so that a count (quota) or an existence check (unique names) is
//!   still true when the write that depends on it commits;
//! * `async fn begin_read(&self) -> Result<Transaction>`: a transaction whose
//!   statements see one snapshot, so that a page and its `total` agree;
//! * `const CONTAINS_FN: &str`: the name of the "position of a substring"
//!   function (`instr` / `strpos`, same arguments, same 1-based result);
//! * `const STAGES_AGG_FN: &str`: the name of the "join text rows with a
//!   separator" aggregate (`group_concat` / `string_agg`, same arguments,
//!   NULL over no rows), for the one-statement read of a secret version.
//!
//! The trait impl is a macro rather than generic code because generic sqlx
//! code must repeat a dozen executor/encode/decode bounds on every function;
//! each expansion is type-checked against its concrete backend instead.
//!
//! Every statement that reads a key, alias, tag or grant names the
//! `project_id` (tags through a join with `keys`), so nothing of another
//! project is reachable; a write inside a transaction may address a row by
//! `key_id` alone once that transaction has checked the key's project.
//! Secrets follow the same rule: versions, stages and secret tags are
//! reached through a join with `secrets` on `project_id`, or by a
//! `secret_id` that the same transaction has just read from the project.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::model::{
    Account, AccountSecret, AliasRecord, GrantRecord, KeyRecord, KeyState, Keyset, Material, Page,
    QuotaKind, Role, SealKey, SecretRecord, SecretState, SecretVersion, StageRecord, Tag,
};
use crate::{Conflict, StoreError};

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

/// `Conflict(conflict)` when `e` is a unique/primary-key violation, else
/// `Backend(e)`. Callers pass the one constraint the statement can violate
/// (the others were checked under the same write lock).
pub(crate) fn on_unique(e: sqlx::Error, conflict: Conflict) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(conflict),
        _ => StoreError::Backend(e),
    }
}

/// Offsets, limits and quotas as bind values; a `u64` past `i64::MAX`
/// means "no limit" anyway.
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn version(v: u32) -> i64 {
    i64::from(v)
}

/// Builds a [`Page`] from the rows at `offset` and the matching total.
pub(crate) fn page<T>(items: Vec<T>, offset: u64, total: i64) -> Page<T> {
    let total = u64::try_from(total).unwrap_or(0);
    let end = offset.saturating_add(u64::try_from(items.len()).unwrap_or(u64::MAX));
    let next_offset = (!items.is_empty() && end < total).then_some(end);
    Page {
        items,
        next_offset,
        total,
    }
}

/// A list of names (grant operations, event subscriptions) as the JSON text
/// stored in a TEXT column.
pub(crate) fn strings_json(strings: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(strings).map_err(encode_error)
}

/// One string as JSON text (quoted and escaped as inside a JSON array).
pub(crate) fn string_json(string: &str) -> Result<String, StoreError> {
    serde_json::to_string(string).map_err(encode_error)
}

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend(sqlx::Error::Encode(Box::new(e)))
}

/// A keyset page from `items` fetched with a limit of `limit + 1`: the row
/// past the page only tells that more follow.
pub(crate) fn keyset<T>(mut items: Vec<T>, limit: usize) -> Keyset<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    Keyset { items, more }
}

/// `n` of a version id `v<n>` (n >= 1), `None` for any other id (a restore
/// may bring ids the store did not assign).
pub(crate) fn version_number(version_id: &str) -> Option<i64> {
    version_id
        .strip_prefix('v')
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 1)
}

/// The first `next_version` of a secret created with `versions` (oldest
/// first): past both the highest `v<n>` among them and their count, so that
/// no assigned id collides with a restored one and `seq` keeps growing.
pub(crate) fn first_free_version(versions: &[SecretVersion]) -> i64 {
    let count = i64::try_from(versions.len()).unwrap_or(i64::MAX);
    let highest = versions
        .iter()
        .filter_map(|v| version_number(&v.version_id))
        .max()
        .unwrap_or(0);
    count.max(highest).saturating_add(1)
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

// ---- rows ------------------------------------------------------------------
// Column types every backend decodes alike: TEXT -> String, 64-bit
// INTEGER/BIGINT -> i64, BLOB/BYTEA -> Vec<u8>, INTEGER 0/1 or BOOLEAN -> bool.

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

pub(crate) fn key_state(code: i64) -> Result<KeyState, CorruptRow> {
    i32::try_from(code)
        .ok()
        .and_then(KeyState::from_code)
        .ok_or(CorruptRow::KeyState(code))
}

fn u32_column(v: i64) -> Result<u32, CorruptRow> {
    u32::try_from(v).map_err(|_| CorruptRow::OutOfRange)
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

/// A purge scan's result: a key or secret past its deletion time, its id
/// selected `AS id`.
#[derive(sqlx::FromRow)]
pub(crate) struct DueRow {
    pub(crate) id: String,
    pub(crate) project_id: String,
}

// ---- CSMS rows ---------------------------------------------------------------

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

pub(crate) fn secret_state(s: &str) -> Result<SecretState, CorruptRow> {
    SecretState::parse(s).ok_or_else(|| CorruptRow::SecretState(s.to_owned()))
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
/// comma-separated in `v_stages` (see [`READ_SECRET_VERSION_HEAD`]).
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
                // sort `attach_stages` uses, rather than inside the
                // aggregate: the same order on both backends whatever their
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

// ---- statements --------------------------------------------------------------

/// `"p.a, p.b, ..."`: columns `a, b, ...` each behind the prefix `p`.
macro_rules! prefixed {
    ($p:literal; $first:ident $(, $rest:ident)* $(,)?) => {
        concat!($p, stringify!($first) $(, ", ", $p, stringify!($rest))*)
    };
}

/// The column lists below take an optional table-alias prefix (`"k."`) for
/// statements that join, so that each list is written once.
macro_rules! key_columns {
    () => {
        key_columns!("")
    };
    ($p:literal) => {
        prefixed!($p; key_id, project_id, alias, description, spec, key_usage, origin, state,
            default_key, created_ms, deletion_ms, material_version, enterprise_project_id,
            keystore_id)
    };
}
macro_rules! alias_columns {
    () => {
        "project_id, alias, key_id, created_ms, updated_ms"
    };
}
macro_rules! grant_columns {
    () => {
        "grant_id, project_id, key_id, name, grantee_principal, grantee_principal_type, \
         operations, issuing_principal, retiring_principal, created_ms"
    };
}
macro_rules! account_columns {
    () => {
        "access_key, secret_key, sealed_secret, project_id, user_id, role, created_ms"
    };
}

// accounts
pub(crate) const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO accounts (",
    account_columns!(),
    ") VALUES ($1, '', $2, $3, $4, $5, $6)"
);
pub(crate) const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE access_key = $1"
);
pub(crate) const LIST_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY created_ms, access_key"
);
pub(crate) const DELETE_ACCOUNT: &str = "DELETE FROM accounts WHERE access_key = $1";
pub(crate) const SEAL_ACCOUNT: &str = "UPDATE accounts SET sealed_secret = $2, secret_key = '' \
     WHERE access_key = $1 AND sealed_secret IS NULL";
pub(crate) const SET_ACCOUNT_ROLE: &str = "UPDATE accounts SET role = $2 WHERE access_key = $1";
pub(crate) const USER_ROLES: &str =
    "SELECT DISTINCT role FROM accounts WHERE project_id = $1 AND user_id = $2";

// seal keys
pub(crate) const SELECT_SEAL_KEY: &str =
    "SELECT name, wrapping_key, wrapped, created_ms FROM seal_keys WHERE name = $1";
pub(crate) const INSERT_SEAL_KEY: &str = "INSERT INTO seal_keys (name, wrapping_key, wrapped, created_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING";

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

// keys
pub(crate) const KEY_EXISTS: &str = "SELECT key_id FROM keys WHERE project_id = $1 AND key_id = $2";
pub(crate) const KEY_ALIAS_TAKEN: &str =
    "SELECT key_id FROM keys WHERE project_id = $1 AND alias = $2";
pub(crate) const COUNT_CUSTOMER_KEYS: &str =
    "SELECT COUNT(*) FROM keys WHERE project_id = $1 AND NOT default_key";
pub(crate) const INSERT_KEY: &str = concat!(
    "INSERT INTO keys (",
    key_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
pub(crate) const INSERT_MATERIAL: &str = "INSERT INTO key_materials \
     (key_id, version, wrapping_key, wrapped, created_ms) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_KEY: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM keys WHERE project_id = $1 AND key_id = $2"
);
pub(crate) const SELECT_KEY_BY_ALIAS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM keys WHERE project_id = $1 AND alias = $2"
);
pub(crate) const SELECT_KEY_WITH_MATERIAL: &str = concat!(
    "SELECT ",
    key_columns!("k."),
    ", m.version AS m_version, m.wrapping_key AS m_wrapping_key, m.wrapped AS m_wrapped, \
     m.created_ms AS m_created_ms \
     FROM keys k LEFT JOIN key_materials m \
     ON m.key_id = k.key_id AND m.version = k.material_version \
     WHERE k.project_id = $1 AND k.key_id = $2"
);
pub(crate) const SELECT_MATERIAL: &str = "SELECT m.key_id, m.version, m.wrapping_key, \
     m.wrapped, m.created_ms FROM key_materials m JOIN keys k ON k.key_id = m.key_id \
     WHERE k.project_id = $1 AND m.key_id = $2 AND m.version = $3";
/// `$2..$4` are optional filters: NULL matches every row.
macro_rules! key_filter {
    () => {
        " FROM keys WHERE project_id = $1 AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR spec = $3) AND ($4 IS NULL OR enterprise_project_id = $4)"
    };
}
pub(crate) const COUNT_KEYS: &str = concat!("SELECT COUNT(*)", key_filter!());
pub(crate) const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    key_filter!(),
    " ORDER BY created_ms, key_id LIMIT $5 OFFSET $6"
);
pub(crate) const KEY_STATE: &str = "SELECT state FROM keys WHERE project_id = $1 AND key_id = $2";
/// Prefix of the compare-and-set; the caller appends `state IN (...)`.
pub(crate) const TRANSITION_HEAD: &str = "UPDATE keys SET state = ";
pub(crate) const RETURNING_KEY: &str = concat!(" RETURNING ", key_columns!());
pub(crate) const UPDATE_KEY_ALIAS: &str = concat!(
    "UPDATE keys SET alias = $3 WHERE project_id = $1 AND key_id = $2 RETURNING ",
    key_columns!()
);
pub(crate) const UPDATE_KEY_DESCRIPTION: &str = concat!(
    "UPDATE keys SET description = $3 WHERE project_id = $1 AND key_id = $2 RETURNING ",
    key_columns!()
);
pub(crate) const DUE_KEYS: &str = "SELECT key_id AS id, project_id FROM keys \
     WHERE state = $1 AND deletion_ms <= $2 ORDER BY deletion_ms, key_id";
/// Re-checks the condition under the lock: a concurrent purge or a cancelled
/// deletion leaves nothing to delete.
pub(crate) const PURGE_KEY: &str =
    "DELETE FROM keys WHERE key_id = $1 AND project_id = $2 AND state = $3 AND deletion_ms <= $4";
/// Run after `PURGE_KEY` in the same transaction. The foreign keys cascade
/// already; these make the destruction of the material independent of the
/// connection's `foreign_keys` setting.
pub(crate) const PURGE_CHILDREN: [&str; 4] = [
    "DELETE FROM key_materials WHERE key_id = $1",
    "DELETE FROM key_tags WHERE key_id = $1",
    "DELETE FROM aliases WHERE key_id = $1",
    "DELETE FROM grants WHERE key_id = $1",
];

// aliases
pub(crate) const SELECT_ALIAS: &str = concat!(
    "SELECT ",
    alias_columns!(),
    " FROM aliases WHERE project_id = $1 AND alias = $2"
);
pub(crate) const COUNT_ALIASES_OF_KEY: &str =
    "SELECT COUNT(*) FROM aliases WHERE project_id = $1 AND key_id = $2";
pub(crate) const INSERT_ALIAS: &str = concat!(
    "INSERT INTO aliases (",
    alias_columns!(),
    ") VALUES ($1, $2, $3, $4, $5)"
);
pub(crate) const COUNT_ALIASES: &str =
    "SELECT COUNT(*) FROM aliases WHERE project_id = $1 AND ($2 IS NULL OR key_id = $2)";
pub(crate) const LIST_ALIASES: &str = concat!(
    "SELECT ",
    alias_columns!(),
    " FROM aliases WHERE project_id = $1 AND ($2 IS NULL OR key_id = $2) \
     ORDER BY alias LIMIT $3 OFFSET $4"
);
pub(crate) const DELETE_ALIAS: &str =
    "DELETE FROM aliases WHERE project_id = $1 AND key_id = $2 AND alias = $3";
pub(crate) const REPOINT_ALIAS: &str = concat!(
    "UPDATE aliases SET key_id = $3, updated_ms = $4 WHERE project_id = $1 AND alias = $2 \
     RETURNING ",
    alias_columns!()
);

// tags
pub(crate) const TAGS_OF_KEY: &str = "SELECT t.tag_key, t.tag_value FROM key_tags t \
     JOIN keys k ON k.key_id = t.key_id WHERE k.project_id = $1 AND t.key_id = $2 \
     ORDER BY t.tag_key";
pub(crate) const TAGS_BY_KEY_ID: &str = "SELECT tag_key, tag_value FROM key_tags WHERE key_id = $1";
pub(crate) const UPSERT_TAG: &str = "INSERT INTO key_tags (key_id, tag_key, tag_value) \
     VALUES ($1, $2, $3) ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
pub(crate) const DELETE_TAG: &str = "DELETE FROM key_tags WHERE key_id = $1 AND tag_key = $2";
pub(crate) const PROJECT_TAGS: &str = "SELECT DISTINCT t.tag_key, t.tag_value FROM key_tags t \
     JOIN keys k ON k.key_id = t.key_id WHERE k.project_id = $1 ORDER BY t.tag_key, t.tag_value";
/// Selected columns of the tag search (`k` is `keys`); the caller appends
/// the filter built by `push_tag_filter`.
pub(crate) const FIND_KEYS_HEAD: &str = concat!("SELECT ", key_columns!("k."));
pub(crate) const FIND_KEYS_ORDER: &str = " ORDER BY k.created_ms, k.key_id LIMIT ";
pub(crate) const TAGS_OF_KEYS_HEAD: &str =
    "SELECT key_id AS owner_id, tag_key, tag_value FROM key_tags WHERE key_id IN (";

// grants
pub(crate) const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants (",
    grant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);
pub(crate) const COUNT_GRANTS_OF_KEY: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1 AND key_id = $2";
pub(crate) const COUNT_GRANTS_OF_PROJECT: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1";
pub(crate) const LIST_GRANTS_OF_KEY: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND key_id = $2 \
     ORDER BY created_ms, grant_id LIMIT $3 OFFSET $4"
);
pub(crate) const SELECT_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND grant_id = $2"
);
pub(crate) const DELETE_GRANT: &str =
    "DELETE FROM grants WHERE project_id = $1 AND key_id = $2 AND grant_id = $3";
pub(crate) const GRANT_EXISTS: &str =
    "SELECT grant_id FROM grants WHERE project_id = $1 AND grant_id = $2";
pub(crate) const COUNT_RETIRABLE: &str =
    "SELECT COUNT(*) FROM grants WHERE project_id = $1 AND retiring_principal = $2";
pub(crate) const LIST_RETIRABLE: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE project_id = $1 AND retiring_principal = $2 \
     ORDER BY created_ms, grant_id LIMIT $3 OFFSET $4"
);

// ---- CSMS statements -------------------------------------------------------------

macro_rules! secret_columns {
    () => {
        secret_columns!("")
    };
    ($p:literal) => {
        prefixed!($p; secret_id, project_id, name, state, kms_key_id, description, secret_type,
            auto_rotation, rotation_period, rotation_config, event_subscriptions,
            enterprise_project_id, rotation_func_urn, created_ms, updated_ms, scheduled_delete_ms)
    };
}
/// Version columns, `v` being `secret_versions` unless a prefix is given.
macro_rules! version_columns {
    () => {
        version_columns!("v.")
    };
    ($p:literal) => {
        prefixed!($p; secret_id, version_id, kms_key_id, ciphertext, created_ms, expire_ms)
    };
}
macro_rules! stage_columns {
    ($p:literal) => {
        prefixed!($p; secret_id, name, version_id, updated_ms)
    };
}

// secrets
pub(crate) const SECRET_ID_BY_NAME: &str =
    "SELECT secret_id FROM secrets WHERE project_id = $1 AND name = $2";
pub(crate) const SECRET_EXISTS: &str =
    "SELECT secret_id FROM secrets WHERE project_id = $1 AND secret_id = $2";
pub(crate) const COUNT_SECRETS: &str = "SELECT COUNT(*) FROM secrets WHERE project_id = $1";
pub(crate) const INSERT_SECRET: &str = concat!(
    "INSERT INTO secrets (",
    secret_columns!(),
    ", next_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17)"
);
pub(crate) const SELECT_SECRET: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = $1 AND name = $2"
);
pub(crate) const SELECT_SECRET_BY_ID: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = $1 AND secret_id = $2"
);
/// The caller appends the optional `name > marker` and event filters, then
/// [`LIST_SECRETS_ORDER`] and the limit.
pub(crate) const LIST_SECRETS_HEAD: &str = concat!(
    "SELECT ",
    secret_columns!(),
    " FROM secrets WHERE project_id = "
);
pub(crate) const LIST_SECRETS_ORDER: &str = " ORDER BY name LIMIT ";
pub(crate) const UPDATE_SECRET: &str = concat!(
    "UPDATE secrets SET kms_key_id = $3, description = $4, auto_rotation = $5, \
     rotation_period = $6, rotation_config = $7, event_subscriptions = $8, \
     rotation_func_urn = $9, updated_ms = $10 WHERE project_id = $1 AND name = $2 RETURNING ",
    secret_columns!()
);
/// Prefix of the compare-and-set; the caller appends the rest.
pub(crate) const SECRET_TRANSITION_HEAD: &str = "UPDATE secrets SET state = ";
pub(crate) const RETURNING_SECRET: &str = concat!(" RETURNING ", secret_columns!());
pub(crate) const SECRET_STATE: &str =
    "SELECT state FROM secrets WHERE project_id = $1 AND name = $2";
/// Claims the next version number of an ENABLED secret. Being an UPDATE,
/// it also write-locks the secret's row until the transaction ends, so a
/// concurrent state change cannot slip between this check and the insert.
pub(crate) const CLAIM_VERSION: &str = "UPDATE secrets SET next_version = next_version + 1 \
     WHERE project_id = $1 AND name = $2 AND state = $3 RETURNING secret_id, next_version";
/// Children first, then the secret: correct whatever the connection's
/// foreign-key setting (stages before the versions they reference).
pub(crate) const DELETE_SECRET_ROWS: [&str; 4] = [
    "DELETE FROM secret_stages WHERE secret_id = $1",
    "DELETE FROM secret_tags WHERE secret_id = $1",
    "DELETE FROM secret_versions WHERE secret_id = $1",
    "DELETE FROM secrets WHERE secret_id = $1",
];
pub(crate) const DUE_SECRETS: &str = "SELECT secret_id AS id, project_id FROM secrets \
     WHERE state = $1 AND scheduled_delete_ms <= $2 ORDER BY scheduled_delete_ms, secret_id";
/// Re-checks the purge condition under the row lock (a no-op write, which
/// PostgreSQL re-evaluates after a concurrent writer commits): a concurrent
/// purge or a cancelled deletion leaves nothing to purge.
pub(crate) const CLAIM_PURGE: &str = "UPDATE secrets SET next_version = next_version \
     WHERE secret_id = $1 AND project_id = $2 AND state = $3 AND scheduled_delete_ms <= $4";

/// The statements of one purge (keys or secrets), which make both one
/// implementation in [`impl_store!`].
pub(crate) struct Purge {
    /// `DueRow`s in state `$1` whose deletion time is at or before `$2`.
    pub(crate) due: &'static str,
    /// Re-checks `(id $1, project $2, state $3, time $4)` under the
    /// project's write lock: 0 rows when there is nothing (left) to purge.
    pub(crate) claim: &'static str,
    /// Then each of these, bound to the id.
    pub(crate) rows: &'static [&'static str],
}

pub(crate) const PURGE_KEYS: Purge = Purge {
    due: DUE_KEYS,
    claim: PURGE_KEY,
    rows: &PURGE_CHILDREN,
};

pub(crate) const PURGE_SECRETS: Purge = Purge {
    due: DUE_SECRETS,
    claim: CLAIM_PURGE,
    rows: &DELETE_SECRET_ROWS,
};

// versions
pub(crate) const INSERT_VERSION: &str = "INSERT INTO secret_versions \
     (secret_id, version_id, seq, kms_key_id, ciphertext, created_ms, expire_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// `read_secret_version`, the CSMS hot read, is one statement (no
/// transaction, one round trip): the secret (`$1`, `$2`) LEFT JOINed with
/// one version, whose stage names a correlated subquery aggregates into
/// one comma-separated column (NULL when it has none). The aggregate
/// function differs by backend, so [`read_secret_version_sql`] assembles
/// the statement from these pieces around the backend's function name:
/// `HEAD`, the function, `FROM`, one of the version conditions, `WHERE`.
pub(crate) const READ_SECRET_VERSION_HEAD: &str = concat!(
    "SELECT ",
    secret_columns!("s."),
    ", v.version_id AS v_version_id, v.kms_key_id AS v_kms_key_id, \
     v.ciphertext AS v_ciphertext, v.created_ms AS v_created_ms, v.expire_ms AS v_expire_ms, \
     (SELECT "
);
pub(crate) const READ_SECRET_VERSION_FROM: &str = "(st.name, ',') FROM secret_stages st \
     WHERE st.secret_id = v.secret_id AND st.version_id = v.version_id) AS v_stages \
     FROM secrets s LEFT JOIN secret_versions v ON v.secret_id = s.secret_id AND ";
/// The newest version (highest `seq`): a lookup in the `(secret_id, seq)`
/// unique index.
pub(crate) const READ_LATEST_VERSION_ON: &str =
    "v.seq = (SELECT MAX(m.seq) FROM secret_versions m WHERE m.secret_id = s.secret_id)";
/// The version named `$3`.
pub(crate) const READ_VERSION_BY_ID_ON: &str = "v.version_id = $3";
pub(crate) const READ_SECRET_VERSION_WHERE: &str = " WHERE s.project_id = $1 AND s.name = $2";

/// The `read_secret_version` statement with `stages_agg_fn` (an aggregate
/// `f(text, separator)`) and `version_on` (one of the conditions above).
/// Built once per backend and condition (the callers keep it in a static).
pub(crate) fn read_secret_version_sql(stages_agg_fn: &str, version_on: &str) -> String {
    [
        READ_SECRET_VERSION_HEAD,
        stages_agg_fn,
        READ_SECRET_VERSION_FROM,
        version_on,
        READ_SECRET_VERSION_WHERE,
    ]
    .concat()
}

/// Newest first, strictly before `seq` `$3`.
pub(crate) const LIST_VERSIONS: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM secret_versions v WHERE v.secret_id = $1 AND v.seq < $2 \
     ORDER BY v.seq DESC LIMIT $3"
);
pub(crate) const ALL_VERSIONS: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM secret_versions v WHERE v.secret_id = $1 ORDER BY v.seq"
);
pub(crate) const VERSION_SEQ: &str =
    "SELECT seq FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
pub(crate) const COUNT_VERSIONS: &str = "SELECT COUNT(*) FROM secret_versions WHERE secret_id = $1";
/// The oldest versions holding no stage, except `$2` (the one being added).
pub(crate) const DROPPABLE_VERSIONS: &str = "SELECT v.version_id FROM secret_versions v \
     WHERE v.secret_id = $1 AND v.version_id <> $2 AND NOT EXISTS \
     (SELECT 1 FROM secret_stages st WHERE st.secret_id = v.secret_id \
     AND st.version_id = v.version_id) ORDER BY v.seq LIMIT $3";
pub(crate) const DELETE_VERSION: &str =
    "DELETE FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
pub(crate) const UPDATE_VERSION_EXPIRY: &str = concat!(
    "UPDATE secret_versions SET expire_ms = $3 WHERE secret_id = $1 AND version_id = $2 \
     RETURNING ",
    version_columns!("")
);

// stages
pub(crate) const STAGES_OF_SECRET: &str = concat!(
    "SELECT ",
    stage_columns!(""),
    " FROM secret_stages WHERE secret_id = $1 ORDER BY name"
);
pub(crate) const SELECT_STAGE: &str = concat!(
    "SELECT ",
    stage_columns!("st."),
    " FROM secret_stages st JOIN secrets s ON s.secret_id = st.secret_id \
     WHERE s.project_id = $1 AND s.name = $2 AND st.name = $3"
);
pub(crate) const UPSERT_STAGE: &str = "INSERT INTO secret_stages \
     (secret_id, name, version_id, updated_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (secret_id, name) DO UPDATE \
     SET version_id = excluded.version_id, updated_ms = excluded.updated_ms";
pub(crate) const DELETE_STAGE: &str =
    "DELETE FROM secret_stages WHERE secret_id = $1 AND name = $2";

// secret tags
pub(crate) const TAGS_OF_SECRET: &str = "SELECT t.tag_key, t.tag_value FROM secret_tags t \
     JOIN secrets s ON s.secret_id = t.secret_id WHERE s.project_id = $1 AND t.secret_id = $2 \
     ORDER BY t.tag_key";
pub(crate) const TAGS_BY_SECRET_ID: &str =
    "SELECT tag_key, tag_value FROM secret_tags WHERE secret_id = $1";
pub(crate) const UPSERT_SECRET_TAG: &str = "INSERT INTO secret_tags \
     (secret_id, tag_key, tag_value) VALUES ($1, $2, $3) \
     ON CONFLICT (secret_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
pub(crate) const DELETE_SECRET_TAG: &str =
    "DELETE FROM secret_tags WHERE secret_id = $1 AND tag_key = $2";
pub(crate) const PROJECT_SECRET_TAGS: &str = "SELECT DISTINCT t.tag_key, t.tag_value \
     FROM secret_tags t JOIN secrets s ON s.secret_id = t.secret_id WHERE s.project_id = $1 \
     ORDER BY t.tag_key, t.tag_value";
/// Selected columns of the secret tag search (`s` is `secrets`).
pub(crate) const FIND_SECRETS_HEAD: &str = concat!("SELECT ", secret_columns!("s."));
pub(crate) const FIND_SECRETS_ORDER: &str = " ORDER BY s.name LIMIT ";
pub(crate) const TAGS_OF_SECRETS_HEAD: &str =
    "SELECT secret_id AS owner_id, tag_key, tag_value FROM secret_tags WHERE secret_id IN (";

/// The statements of one tag table, which make the tag methods of keys and
/// of secrets one implementation in [`impl_store!`].
pub(crate) struct TagTable {
    /// The owner's id given `($1 project, $2 owner id)`, if it is there.
    pub(crate) owner_exists: &'static str,
    /// The tags of `($1 project, $2 owner id)`, by tag key.
    pub(crate) tags_of: &'static str,
    /// The tags of owner `$1`, whose project was checked.
    pub(crate) tags_by_id: &'static str,
    /// `($1 owner id, $2 tag key, $3 value)`.
    pub(crate) upsert: &'static str,
    /// `($1 owner id, $2 tag key)`.
    pub(crate) delete: &'static str,
    /// The distinct `(tag key, value)` pairs of project `$1`, sorted.
    pub(crate) project_tags: &'static str,
    /// What a `put` past the limit exceeds.
    pub(crate) quota: QuotaKind,
    /// The search's selected columns, then FROM up to the project bind,
    /// one tag condition up to its key bind (closed by the caller), the
    /// name column as first argument of `CONTAINS_FN`, and the order up to
    /// the limit bind.
    pub(crate) find_head: &'static str,
    pub(crate) find_from: &'static str,
    pub(crate) find_tag: &'static str,
    pub(crate) find_name: &'static str,
    pub(crate) find_order: &'static str,
    /// Up to the list of owner ids (`OwnerTagRow`s).
    pub(crate) tags_of_owners: &'static str,
}

pub(crate) const KEY_TAGS: TagTable = TagTable {
    owner_exists: KEY_EXISTS,
    tags_of: TAGS_OF_KEY,
    tags_by_id: TAGS_BY_KEY_ID,
    upsert: UPSERT_TAG,
    delete: DELETE_TAG,
    project_tags: PROJECT_TAGS,
    quota: QuotaKind::TagsPerKey,
    find_head: FIND_KEYS_HEAD,
    find_from: " FROM keys k WHERE k.project_id = ",
    find_tag: " AND EXISTS (SELECT 1 FROM key_tags t WHERE t.key_id = k.key_id \
               AND t.tag_key = ",
    find_name: "(k.alias, ",
    find_order: FIND_KEYS_ORDER,
    tags_of_owners: TAGS_OF_KEYS_HEAD,
};

pub(crate) const SECRET_TAGS: TagTable = TagTable {
    owner_exists: SECRET_EXISTS,
    tags_of: TAGS_OF_SECRET,
    tags_by_id: TAGS_BY_SECRET_ID,
    upsert: UPSERT_SECRET_TAG,
    delete: DELETE_SECRET_TAG,
    project_tags: PROJECT_SECRET_TAGS,
    quota: QuotaKind::SecretTags,
    find_head: FIND_SECRETS_HEAD,
    find_from: " FROM secrets s WHERE s.project_id = ",
    find_tag: " AND EXISTS (SELECT 1 FROM secret_tags t \
               WHERE t.secret_id = s.secret_id AND t.tag_key = ",
    find_name: "(s.name, ",
    find_order: FIND_SECRETS_ORDER,
    tags_of_owners: TAGS_OF_SECRETS_HEAD,
};

// ---- the trait impl ---------------------------------------------------------------

/// `impl Store for $store` over the sqlx database `$db`; see the module doc
/// for what `$store` must provide.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::BTreeSet;

            use sqlx::QueryBuilder;

            use $crate::model::*;
            use $crate::sql::{self as q, on_unique};
            use $crate::{Result, StoreError};

            /// The id that `statement` selects for `($1, $2)`, if any: whether a
            /// key or secret exists in a project, or a name is taken.
            async fn select_id(
                conn: &mut <$db as sqlx::Database>::Connection,
                statement: &'static str,
                project_id: &str,
                lookup: &str,
            ) -> Result<Option<String>> {
                Ok(sqlx::query_scalar(statement)
                    .bind(project_id)
                    .bind(lookup)
                    .fetch_optional(conn)
                    .await?)
            }

            /// `select_id`, `NotFound` when there is none.
            async fn require_id(
                conn: &mut <$db as sqlx::Database>::Connection,
                statement: &'static str,
                project_id: &str,
                lookup: &str,
            ) -> Result<String> {
                select_id(conn, statement, project_id, lookup)
                    .await?
                    .ok_or(StoreError::NotFound)
            }

            /// The error of a secret compare-and-set that matched no row:
            /// `WrongSecretState` with the state found, or `NotFound`.
            async fn secret_state_error<'c, E>(conn: E, project_id: &str, name: &str) -> StoreError
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let current: std::result::Result<Option<String>, sqlx::Error> =
                    sqlx::query_scalar(q::SECRET_STATE)
                        .bind(project_id)
                        .bind(name)
                        .fetch_optional(conn)
                        .await;
                match current {
                    Ok(Some(state)) => match q::secret_state(&state) {
                        Ok(current) => StoreError::WrongSecretState { current },
                        Err(e) => e.into(),
                    },
                    Ok(None) => StoreError::NotFound,
                    Err(e) => e.into(),
                }
            }

            /// Fills in the stages of `versions`, all of secret `secret_id`
            /// (read from the project by the same transaction).
            async fn attach_stages(
                conn: &mut <$db as sqlx::Database>::Connection,
                secret_id: &str,
                versions: &mut [SecretVersion],
            ) -> Result<()> {
                let stages = sqlx::query_as::<_, q::StageRow>(q::STAGES_OF_SECRET)
                    .bind(secret_id)
                    .fetch_all(conn)
                    .await?;
                q::attach_stages(versions, &stages);
                Ok(())
            }

            type Args = <$db as sqlx::Database>::Arguments;

            /// `Quota(kind)` when the rows that `count` counts already fill
            /// `limit` (one more would exceed it).
            async fn check_quota(
                conn: &mut <$db as sqlx::Database>::Connection,
                count: sqlx::query::QueryScalar<'_, $db, i64, Args>,
                limit: u32,
                kind: QuotaKind,
            ) -> Result<()> {
                if count.fetch_one(conn).await? >= i64::from(limit) {
                    return Err(StoreError::Quota(kind));
                }
                Ok(())
            }

            /// Point `stage` of `secret_id` at `version_id` (insert or move).
            async fn upsert_stage(
                conn: &mut <$db as sqlx::Database>::Connection,
                secret_id: &str,
                stage: &str,
                version_id: &str,
                updated_ms: i64,
            ) -> Result<()> {
                sqlx::query(q::UPSERT_STAGE)
                    .bind(secret_id)
                    .bind(stage)
                    .bind(version_id)
                    .bind(updated_ms)
                    .execute(conn)
                    .await?;
                Ok(())
            }

            /// Writes `version` as `version_id`, number `seq`, of secret
            /// `secret_id` (whatever the ids `version` carries).
            async fn insert_version(
                conn: &mut <$db as sqlx::Database>::Connection,
                secret_id: &str,
                version_id: &str,
                seq: i64,
                version: &SecretVersion,
            ) -> Result<()> {
                sqlx::query(q::INSERT_VERSION)
                    .bind(secret_id)
                    .bind(version_id)
                    .bind(seq)
                    .bind(&version.kms_key_id)
                    .bind(version.ciphertext.as_slice())
                    .bind(version.created_ms)
                    .bind(version.expire_ms)
                    .execute(conn)
                    .await
                    .map_err(|e| on_unique(e, Conflict::VersionId))?;
                Ok(())
            }

            /// The FROM and WHERE clauses of a tag search over `table`'s
            /// owners.
            fn push_tag_filter(
                qb: &mut QueryBuilder<$db>,
                table: &q::TagTable,
                project_id: &str,
                filter: &TagFilter,
            ) {
                qb.push(table.find_from);
                qb.push_bind(project_id.to_owned());
                for (tag_key, values) in &filter.tags {
                    qb.push(table.find_tag);
                    qb.push_bind(tag_key.clone());
                    if !values.is_empty() {
                        qb.push(" AND t.tag_value IN (");
                        let mut list = qb.separated(", ");
                        for value in values {
                            list.push_bind(value.clone());
                        }
                        list.push_unseparated(")");
                    }
                    qb.push(")");
                }
                if let Some(needle) = &filter.resource_name {
                    qb.push(" AND ");
                    qb.push(<$store>::CONTAINS_FN);
                    qb.push(table.find_name);
                    qb.push_bind(needle.clone());
                    qb.push(") > 0");
                }
            }

            /// What keys and secrets do alike: purge (over a [`q::Purge`])
            /// and the tag methods (over a [`q::TagTable`]).
            impl $store {
                /// An offset page in one snapshot: `count` gives the total
                /// over all pages, `list` the rows (decoded from `R`) at
                /// `offset`.
                async fn fetch_page<R, T>(
                    &self,
                    count: sqlx::query::QueryScalar<'_, $db, i64, Args>,
                    list: sqlx::query::QueryAs<'_, $db, R, Args>,
                    offset: u64,
                ) -> Result<Page<T>>
                where
                    R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
                    T: TryFrom<R>,
                    StoreError: From<T::Error>,
                {
                    let mut tx = self.begin_read().await?;
                    let total = count.fetch_one(&mut *tx).await?;
                    let rows = list.fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    let items = rows
                        .into_iter()
                        .map(|row| T::try_from(row).map_err(StoreError::from))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(q::page(items, offset, total))
                }

                /// Deletes each row of `purge.due` for `(pending, now)` with
                /// its children, one transaction each; returns the ids this
                /// call deleted.
                async fn purge_due<P>(
                    &self,
                    purge: &q::Purge,
                    pending: P,
                    now: Millis,
                ) -> Result<Vec<String>>
                where
                    P: for<'q> sqlx::Encode<'q, $db> + sqlx::Type<$db> + Copy + Send + Sync,
                {
                    let due = sqlx::query_as::<_, q::DueRow>(purge.due)
                        .bind(pending)
                        .bind(now)
                        .fetch_all(&self.pool)
                        .await?;
                    let mut purged = Vec::with_capacity(due.len());
                    for row in due {
                        let mut tx = self.begin_write(&row.project_id).await?;
                        // Another edge may have purged it, or the deletion may
                        // have been cancelled, since the scan: the claim
                        // re-checks under the lock, and only the caller that
                        // claimed the row reports it.
                        let claimed = sqlx::query(purge.claim)
                            .bind(&row.id)
                            .bind(&row.project_id)
                            .bind(pending)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if claimed == 0 {
                            continue;
                        }
                        for &statement in purge.rows {
                            sqlx::query(statement)
                                .bind(&row.id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        tx.commit().await?;
                        purged.push(row.id);
                    }
                    Ok(purged)
                }

                async fn owner_tags(
                    &self,
                    table: &q::TagTable,
                    project_id: &str,
                    owner_id: &str,
                ) -> Result<Vec<Tag>> {
                    let mut tx = self.begin_read().await?;
                    require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
                    let rows = sqlx::query_as::<_, q::TagRow>(table.tags_of)
                        .bind(project_id)
                        .bind(owner_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(rows.into_iter().map(Tag::from).collect())
                }

                async fn put_owner_tags(
                    &self,
                    table: &q::TagTable,
                    project_id: &str,
                    owner_id: &str,
                    tags: &[Tag],
                    limit: u32,
                ) -> Result<()> {
                    let mut tx = self.begin_write(project_id).await?;
                    require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
                    // The quota applies to the tag set the owner ends with:
                    // setting an existing tag key again adds nothing.
                    let existing = sqlx::query_as::<_, q::TagRow>(table.tags_by_id)
                        .bind(owner_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut final_keys: BTreeSet<&str> =
                        existing.iter().map(|t| t.tag_key.as_str()).collect();
                    final_keys.extend(tags.iter().map(|t| t.key.as_str()));
                    if final_keys.len() > quota(limit) {
                        return Err(StoreError::Quota(table.quota));
                    }
                    // In order, so a tag key given twice ends with its last value.
                    for tag in tags {
                        sqlx::query(table.upsert)
                            .bind(owner_id)
                            .bind(&tag.key)
                            .bind(&tag.value)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_owner_tags(
                    &self,
                    table: &q::TagTable,
                    project_id: &str,
                    owner_id: &str,
                    tag_keys: &[String],
                ) -> Result<()> {
                    let mut tx = self.begin_write(project_id).await?;
                    require_id(&mut tx, table.owner_exists, project_id, owner_id).await?;
                    for tag_key in tag_keys.iter().collect::<BTreeSet<_>>() {
                        let deleted = sqlx::query(table.delete)
                            .bind(owner_id)
                            .bind(tag_key)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if deleted == 0 {
                            // Dropping `tx` rolls back the deletions so far.
                            return Err(StoreError::NotFound);
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn tags_in_project(
                    &self,
                    table: &q::TagTable,
                    project_id: &str,
                ) -> Result<Vec<(String, Vec<String>)>> {
                    let rows = sqlx::query_as::<_, q::TagRow>(table.project_tags)
                        .bind(project_id)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(q::group_tags(rows))
                }

                /// A page of owners (decoded from rows `R`) matching
                /// `filter`, each with all its tags.
                async fn find_by_tags<R, T>(
                    &self,
                    table: &q::TagTable,
                    project_id: &str,
                    filter: &TagFilter,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<(T, Vec<Tag>)>>
                where
                    R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
                    T: TryFrom<R, Error = StoreError> + q::TagOwner,
                {
                    let mut tx = self.begin_read().await?;

                    let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*)");
                    push_tag_filter(&mut count, table, project_id, filter);
                    let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;

                    let mut select = QueryBuilder::<$db>::new(table.find_head);
                    push_tag_filter(&mut select, table, project_id, filter);
                    select.push(table.find_order);
                    select.push_bind(q::int(limit));
                    select.push(" OFFSET ");
                    select.push_bind(q::int(offset));
                    let owners = select
                        .build_query_as::<R>()
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .map(T::try_from)
                        .collect::<Result<Vec<_>>>()?;

                    let tag_rows = if owners.is_empty() {
                        Vec::new()
                    } else {
                        // These ids were just read from this project.
                        let mut tags = QueryBuilder::<$db>::new(table.tags_of_owners);
                        let mut ids = tags.separated(", ");
                        for owner in &owners {
                            ids.push_bind(owner.owner_id().to_owned());
                        }
                        ids.push_unseparated(")");
                        tags.build_query_as::<q::OwnerTagRow>()
                            .fetch_all(&mut *tx)
                            .await?
                    };
                    tx.commit().await?;
                    Ok(q::page(q::attach_tags(owners, tag_rows), offset, total))
                }
            }

            /// `read_secret_version`'s two statements with this backend's
            /// stage aggregate, built on first use.
            static READ_LATEST_VERSION: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(|| {
                    q::read_secret_version_sql(<$store>::STAGES_AGG_FN, q::READ_LATEST_VERSION_ON)
                });
            static READ_VERSION_BY_ID: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(|| {
                    q::read_secret_version_sql(<$store>::STAGES_AGG_FN, q::READ_VERSION_BY_ID_ON)
                });

            /// Quotas as counts comparable with `len()`.
            fn quota(n: u32) -> usize {
                usize::try_from(n).unwrap_or(usize::MAX)
            }

            #[async_trait::async_trait]
            impl $crate::AccountRepo for $store {
                // ---- accounts ----------------------------------------------------

                async fn create_account(&self, account: &Account) -> Result<()> {
                    // Only sealed SKs reach the database: a backup of it
                    // holds no signing key.
                    let AccountSecret::Sealed(sealed) = &account.secret else {
                        return Err(StoreError::ClearSecret);
                    };
                    sqlx::query(q::INSERT_ACCOUNT)
                        .bind(&account.access_key)
                        .bind(sealed.as_slice())
                        .bind(&account.project_id)
                        .bind(&account.user_id)
                        .bind(account.role.as_str())
                        .bind(account.created_ms)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| on_unique(e, Conflict::AccessKey))?;
                    Ok(())
                }

                async fn get_account(&self, access_key: &str) -> Result<Option<Account>> {
                    sqlx::query_as::<_, q::AccountRow>(q::SELECT_ACCOUNT)
                        .bind(access_key)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(Account::try_from)
                        .transpose()
                }

                async fn list_accounts(&self) -> Result<Vec<Account>> {
                    sqlx::query_as::<_, q::AccountRow>(q::LIST_ACCOUNTS)
                        .fetch_all(&self.pool)
                        .await?
                        .into_iter()
                        .map(Account::try_from)
                        .collect()
                }

                async fn delete_account(&self, access_key: &str) -> Result<()> {
                    let done = sqlx::query(q::DELETE_ACCOUNT)
                        .bind(access_key)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn seal_account_secret(
                    &self,
                    access_key: &str,
                    sealed: &[u8],
                ) -> Result<bool> {
                    let done = sqlx::query(q::SEAL_ACCOUNT)
                        .bind(access_key)
                        .bind(sealed)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn set_account_role(&self, access_key: &str, role: Role) -> Result<()> {
                    let done = sqlx::query(q::SET_ACCOUNT_ROLE)
                        .bind(access_key)
                        .bind(role.as_str())
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn user_role(&self, project_id: &str, user_id: &str) -> Result<Option<Role>> {
                    let roles: Vec<String> = sqlx::query_scalar(q::USER_ROLES)
                        .bind(project_id)
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await?;
                    let mut best = None;
                    for r in roles {
                        let role = Role::parse(&r).ok_or(q::CorruptRow::Role(r))?;
                        best = Some(best.map_or(role, |b: Role| b.max(role)));
                    }
                    Ok(best)
                }
            }

            #[async_trait::async_trait]
            impl $crate::SealKeyRepo for $store {
                // ---- seal keys -------------------------------------------------------

                async fn get_seal_key(&self, name: &str) -> Result<Option<SealKey>> {
                    Ok(sqlx::query_as::<_, q::SealKeyRow>(q::SELECT_SEAL_KEY)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(SealKey::from))
                }

                async fn put_seal_key_if_missing(&self, key: &SealKey) -> Result<SealKey> {
                    sqlx::query(q::INSERT_SEAL_KEY)
                        .bind(&key.name)
                        .bind(&key.wrapping_key)
                        .bind(key.wrapped.as_slice())
                        .bind(key.created_ms)
                        .execute(&self.pool)
                        .await?;
                    // The first key stored wins; read back whichever it is.
                    sqlx::query_as::<_, q::SealKeyRow>(q::SELECT_SEAL_KEY)
                        .bind(&key.name)
                        .fetch_one(&self.pool)
                        .await
                        .map(SealKey::from)
                        .map_err(StoreError::from)
                }
            }

            #[async_trait::async_trait]
            impl $crate::KeyRepo for $store {
                // ---- keys ----------------------------------------------------------

                async fn create_key(
                    &self,
                    key: &KeyRecord,
                    material: Option<&Material>,
                    quotas: &Quotas,
                ) -> Result<()> {
                    let mut tx = self.begin_write(&key.project_id).await?;
                    let taken =
                        select_id(&mut tx, q::KEY_ALIAS_TAKEN, &key.project_id, &key.alias).await?;
                    if taken.is_some() {
                        return Err(StoreError::Conflict(Conflict::KeyAlias));
                    }
                    if !key.default_key {
                        check_quota(
                            &mut tx,
                            sqlx::query_scalar(q::COUNT_CUSTOMER_KEYS).bind(&key.project_id),
                            quotas.keys_per_project,
                            QuotaKind::Keys,
                        )
                        .await?;
                    }
                    // Every writer of `keys.alias` in this project holds the
                    // write lock, so the alias check above still holds: a
                    // unique violation here can only be the global key id.
                    sqlx::query(q::INSERT_KEY)
                        .bind(&key.key_id)
                        .bind(&key.project_id)
                        .bind(&key.alias)
                        .bind(&key.description)
                        .bind(&key.spec)
                        .bind(&key.usage)
                        .bind(&key.origin)
                        .bind(i64::from(key.state.code()))
                        .bind(key.default_key)
                        .bind(key.created_ms)
                        .bind(key.deletion_ms)
                        .bind(q::version(key.material_version))
                        .bind(&key.enterprise_project_id)
                        .bind(&key.keystore_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| on_unique(e, Conflict::KeyId))?;
                    if let Some(material) = material {
                        // Filed under `key.key_id` whatever `material.key_id`
                        // says: it can belong to no other key.
                        sqlx::query(q::INSERT_MATERIAL)
                            .bind(&key.key_id)
                            .bind(q::version(material.version))
                            .bind(&material.wrapping_key)
                            .bind(material.wrapped.as_slice())
                            .bind(material.created_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn get_key(
                    &self,
                    project_id: &str,
                    key_id: &str,
                ) -> Result<Option<KeyRecord>> {
                    sqlx::query_as::<_, q::KeyRow>(q::SELECT_KEY)
                        .bind(project_id)
                        .bind(key_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(KeyRecord::try_from)
                        .transpose()
                }

                async fn get_key_with_material(
                    &self,
                    project_id: &str,
                    key_id: &str,
                ) -> Result<Option<(KeyRecord, Option<Material>)>> {
                    sqlx::query_as::<_, q::KeyMaterialRow>(q::SELECT_KEY_WITH_MATERIAL)
                        .bind(project_id)
                        .bind(key_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(<(KeyRecord, Option<Material>)>::try_from)
                        .transpose()
                }

                async fn get_material(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    version: u32,
                ) -> Result<Option<Material>> {
                    sqlx::query_as::<_, q::MaterialRow>(q::SELECT_MATERIAL)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(q::version(version))
                        .fetch_optional(&self.pool)
                        .await?
                        .map(Material::try_from)
                        .transpose()
                }

                async fn find_key_by_alias(
                    &self,
                    project_id: &str,
                    alias: &str,
                ) -> Result<Option<KeyRecord>> {
                    sqlx::query_as::<_, q::KeyRow>(q::SELECT_KEY_BY_ALIAS)
                        .bind(project_id)
                        .bind(alias)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(KeyRecord::try_from)
                        .transpose()
                }

                async fn list_keys(
                    &self,
                    project_id: &str,
                    filter: &KeyFilter,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<KeyRecord>> {
                    let state = filter.state.map(|s| i64::from(s.code()));
                    let spec = filter.spec.as_deref();
                    let eps = filter.enterprise_project_id.as_deref();
                    let count = sqlx::query_scalar(q::COUNT_KEYS)
                        .bind(project_id)
                        .bind(state)
                        .bind(spec)
                        .bind(eps);
                    let list = sqlx::query_as::<_, q::KeyRow>(q::LIST_KEYS)
                        .bind(project_id)
                        .bind(state)
                        .bind(spec)
                        .bind(eps)
                        .bind(q::int(limit))
                        .bind(q::int(offset));
                    self.fetch_page::<_, KeyRecord>(count, list, offset).await
                }

                async fn transition(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    from: &[KeyState],
                    to: KeyState,
                    deletion_ms: Option<Millis>,
                ) -> Result<KeyRecord> {
                    // One UPDATE whose WHERE holds the expected states: the
                    // database applies it atomically (PostgreSQL re-checks the
                    // WHERE after waiting for a concurrent writer's row lock),
                    // so of N racing callers exactly one sees its `from`.
                    if !from.is_empty() {
                        let mut qb = QueryBuilder::<$db>::new(q::TRANSITION_HEAD);
                        qb.push_bind(i64::from(to.code()));
                        qb.push(", deletion_ms = ");
                        qb.push_bind(deletion_ms);
                        qb.push(" WHERE project_id = ");
                        qb.push_bind(project_id.to_owned());
                        qb.push(" AND key_id = ");
                        qb.push_bind(key_id.to_owned());
                        qb.push(" AND state IN (");
                        let mut states = qb.separated(", ");
                        for state in from {
                            states.push_bind(i64::from(state.code()));
                        }
                        states.push_unseparated(")");
                        qb.push(q::RETURNING_KEY);
                        let updated = qb
                            .build_query_as::<q::KeyRow>()
                            .fetch_optional(&self.pool)
                            .await?;
                        if let Some(row) = updated {
                            return KeyRecord::try_from(row);
                        }
                    }
                    let current: Option<i64> = sqlx::query_scalar(q::KEY_STATE)
                        .bind(project_id)
                        .bind(key_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    match current {
                        Some(code) => Err(StoreError::WrongState {
                            current: q::key_state(code)?,
                        }),
                        None => Err(StoreError::NotFound),
                    }
                }

                async fn update_key_alias(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    alias: &str,
                ) -> Result<KeyRecord> {
                    // Under the write lock: see `create_key`.
                    let mut tx = self.begin_write(project_id).await?;
                    let row = sqlx::query_as::<_, q::KeyRow>(q::UPDATE_KEY_ALIAS)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(alias)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| on_unique(e, Conflict::KeyAlias))?
                        .ok_or(StoreError::NotFound)?;
                    tx.commit().await?;
                    KeyRecord::try_from(row)
                }

                async fn update_key_description(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    description: &str,
                ) -> Result<KeyRecord> {
                    let row = sqlx::query_as::<_, q::KeyRow>(q::UPDATE_KEY_DESCRIPTION)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(description)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    KeyRecord::try_from(row)
                }

                async fn purge_due_keys(&self, now: Millis) -> Result<Vec<String>> {
                    let pending = i64::from(KeyState::PendingDeletion.code());
                    self.purge_due(&q::PURGE_KEYS, pending, now).await
                }

                async fn usage(&self, project_id: &str) -> Result<Usage> {
                    let mut tx = self.begin_read().await?;
                    let keys: i64 = sqlx::query_scalar(q::COUNT_CUSTOMER_KEYS)
                        .bind(project_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let grants: i64 = sqlx::query_scalar(q::COUNT_GRANTS_OF_PROJECT)
                        .bind(project_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Usage {
                        keys: u64::try_from(keys).unwrap_or(0),
                        grants: u64::try_from(grants).unwrap_or(0),
                    })
                }
            }

            #[async_trait::async_trait]
            impl $crate::AliasRepo for $store {
                // ---- alias resources ------------------------------------------------

                async fn create_alias(&self, alias: &AliasRecord, quotas: &Quotas) -> Result<()> {
                    let mut tx = self.begin_write(&alias.project_id).await?;
                    require_id(&mut tx, q::KEY_EXISTS, &alias.project_id, &alias.key_id).await?;
                    let taken = sqlx::query(q::SELECT_ALIAS)
                        .bind(&alias.project_id)
                        .bind(&alias.alias)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if taken.is_some() {
                        return Err(StoreError::Conflict(Conflict::Alias));
                    }
                    check_quota(
                        &mut tx,
                        sqlx::query_scalar(q::COUNT_ALIASES_OF_KEY)
                            .bind(&alias.project_id)
                            .bind(&alias.key_id),
                        quotas.aliases_per_key,
                        QuotaKind::AliasesPerKey,
                    )
                    .await?;
                    sqlx::query(q::INSERT_ALIAS)
                        .bind(&alias.project_id)
                        .bind(&alias.alias)
                        .bind(&alias.key_id)
                        .bind(alias.created_ms)
                        .bind(alias.updated_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| on_unique(e, Conflict::Alias))?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_aliases(
                    &self,
                    project_id: &str,
                    key_id: Option<&str>,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<AliasRecord>> {
                    let count = sqlx::query_scalar(q::COUNT_ALIASES)
                        .bind(project_id)
                        .bind(key_id);
                    let list = sqlx::query_as::<_, q::AliasRow>(q::LIST_ALIASES)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(q::int(limit))
                        .bind(q::int(offset));
                    self.fetch_page::<_, AliasRecord>(count, list, offset).await
                }

                async fn delete_aliases(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    aliases: &[String],
                ) -> Result<()> {
                    let mut tx = self.begin_write(project_id).await?;
                    require_id(&mut tx, q::KEY_EXISTS, project_id, key_id).await?;
                    // A name listed twice is deleted once, not reported missing.
                    for alias in aliases.iter().collect::<BTreeSet<_>>() {
                        let deleted = sqlx::query(q::DELETE_ALIAS)
                            .bind(project_id)
                            .bind(key_id)
                            .bind(alias)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if deleted == 0 {
                            // Dropping `tx` rolls back the deletions so far.
                            return Err(StoreError::NotFound);
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn associate_alias(
                    &self,
                    project_id: &str,
                    alias: &str,
                    target_key_id: &str,
                    now: Millis,
                    quotas: &Quotas,
                ) -> Result<AliasRecord> {
                    let mut tx = self.begin_write(project_id).await?;
                    let current = sqlx::query_as::<_, q::AliasRow>(q::SELECT_ALIAS)
                        .bind(project_id)
                        .bind(alias)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(AliasRecord::from)
                        .ok_or(StoreError::NotFound)?;
                    require_id(&mut tx, q::KEY_EXISTS, project_id, target_key_id).await?;
                    // Re-pointing an alias at the key it already names adds
                    // nothing to that key's count.
                    if current.key_id != target_key_id {
                        check_quota(
                            &mut tx,
                            sqlx::query_scalar(q::COUNT_ALIASES_OF_KEY)
                                .bind(project_id)
                                .bind(target_key_id),
                            quotas.aliases_per_key,
                            QuotaKind::AliasesPerKey,
                        )
                        .await?;
                    }
                    let row = sqlx::query_as::<_, q::AliasRow>(q::REPOINT_ALIAS)
                        .bind(project_id)
                        .bind(alias)
                        .bind(target_key_id)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(AliasRecord::from(row))
                }
            }

            #[async_trait::async_trait]
            impl $crate::KeyTagRepo for $store {
                // ---- tags -----------------------------------------------------------

                async fn key_tags(&self, project_id: &str, key_id: &str) -> Result<Vec<Tag>> {
                    self.owner_tags(&q::KEY_TAGS, project_id, key_id).await
                }

                async fn put_tags(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    tags: &[Tag],
                    quotas: &Quotas,
                ) -> Result<()> {
                    self.put_owner_tags(&q::KEY_TAGS, project_id, key_id, tags, quotas.tags_per_key)
                        .await
                }

                async fn delete_tags(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    tag_keys: &[String],
                ) -> Result<()> {
                    self.delete_owner_tags(&q::KEY_TAGS, project_id, key_id, tag_keys)
                        .await
                }

                async fn project_tags(
                    &self,
                    project_id: &str,
                ) -> Result<Vec<(String, Vec<String>)>> {
                    self.tags_in_project(&q::KEY_TAGS, project_id).await
                }

                async fn find_keys_by_tags(
                    &self,
                    project_id: &str,
                    filter: &TagFilter,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<(KeyRecord, Vec<Tag>)>> {
                    self.find_by_tags::<q::KeyRow, KeyRecord>(
                        &q::KEY_TAGS,
                        project_id,
                        filter,
                        offset,
                        limit,
                    )
                    .await
                }
            }

            #[async_trait::async_trait]
            impl $crate::GrantRepo for $store {
                // ---- grants -----------------------------------------------------------

                async fn create_grant(&self, grant: &GrantRecord, quotas: &Quotas) -> Result<()> {
                    let operations = q::strings_json(&grant.operations)?;
                    let mut tx = self.begin_write(&grant.project_id).await?;
                    require_id(&mut tx, q::KEY_EXISTS, &grant.project_id, &grant.key_id).await?;
                    check_quota(
                        &mut tx,
                        sqlx::query_scalar(q::COUNT_GRANTS_OF_KEY)
                            .bind(&grant.project_id)
                            .bind(&grant.key_id),
                        quotas.grants_per_key,
                        QuotaKind::GrantsPerKey,
                    )
                    .await?;
                    check_quota(
                        &mut tx,
                        sqlx::query_scalar(q::COUNT_GRANTS_OF_PROJECT).bind(&grant.project_id),
                        quotas.grants_per_project,
                        QuotaKind::GrantsPerProject,
                    )
                    .await?;
                    // A duplicate grant id (random 256 bits) has no
                    // `Conflict` kind: it surfaces as `Backend`.
                    sqlx::query(q::INSERT_GRANT)
                        .bind(&grant.grant_id)
                        .bind(&grant.project_id)
                        .bind(&grant.key_id)
                        .bind(&grant.name)
                        .bind(&grant.grantee_principal)
                        .bind(&grant.grantee_principal_type)
                        .bind(operations)
                        .bind(&grant.issuing_principal)
                        .bind(&grant.retiring_principal)
                        .bind(grant.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_grants(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<GrantRecord>> {
                    let count = sqlx::query_scalar(q::COUNT_GRANTS_OF_KEY)
                        .bind(project_id)
                        .bind(key_id);
                    let list = sqlx::query_as::<_, q::GrantRow>(q::LIST_GRANTS_OF_KEY)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(q::int(limit))
                        .bind(q::int(offset));
                    self.fetch_page::<_, GrantRecord>(count, list, offset).await
                }

                async fn get_grant(
                    &self,
                    project_id: &str,
                    grant_id: &str,
                ) -> Result<Option<GrantRecord>> {
                    sqlx::query_as::<_, q::GrantRow>(q::SELECT_GRANT)
                        .bind(project_id)
                        .bind(grant_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(GrantRecord::try_from)
                        .transpose()
                }

                async fn delete_grant(
                    &self,
                    project_id: &str,
                    key_id: &str,
                    grant_id: &str,
                ) -> Result<()> {
                    let deleted = sqlx::query(q::DELETE_GRANT)
                        .bind(project_id)
                        .bind(key_id)
                        .bind(grant_id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    if deleted > 0 {
                        return Ok(());
                    }
                    let exists = sqlx::query(q::GRANT_EXISTS)
                        .bind(project_id)
                        .bind(grant_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    match exists {
                        Some(_) => Err(StoreError::GrantKeyMismatch),
                        None => Err(StoreError::NotFound),
                    }
                }

                async fn list_retirable_grants(
                    &self,
                    project_id: &str,
                    principal: &str,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<GrantRecord>> {
                    // "" marks grants without a retiring principal: nobody
                    // may retire those by naming the empty principal.
                    if principal.is_empty() {
                        return Ok(q::page(Vec::new(), offset, 0));
                    }
                    let count = sqlx::query_scalar(q::COUNT_RETIRABLE)
                        .bind(project_id)
                        .bind(principal);
                    let list = sqlx::query_as::<_, q::GrantRow>(q::LIST_RETIRABLE)
                        .bind(project_id)
                        .bind(principal)
                        .bind(q::int(limit))
                        .bind(q::int(offset));
                    self.fetch_page::<_, GrantRecord>(count, list, offset).await
                }
            }

            #[async_trait::async_trait]
            impl $crate::SecretRepo for $store {
                // ---- CSMS secrets -------------------------------------------------------

                async fn create_secret(
                    &self,
                    secret: &SecretRecord,
                    versions: &[SecretVersion],
                    stages: &[StageRecord],
                    quotas: &SecretQuotas,
                ) -> Result<()> {
                    let events = q::strings_json(&secret.event_subscriptions)?;
                    // A stage must name one of the versions being written;
                    // the foreign key would refuse it too, as an untyped
                    // `Backend` error.
                    if stages
                        .iter()
                        .any(|st| !versions.iter().any(|v| v.version_id == st.version_id))
                    {
                        return Err(StoreError::NotFound);
                    }
                    let mut tx = self.begin_write(&secret.project_id).await?;
                    let taken = select_id(
                        &mut tx,
                        q::SECRET_ID_BY_NAME,
                        &secret.project_id,
                        &secret.name,
                    )
                    .await?;
                    if taken.is_some() {
                        return Err(StoreError::Conflict(Conflict::SecretName));
                    }
                    check_quota(
                        &mut tx,
                        sqlx::query_scalar(q::COUNT_SECRETS).bind(&secret.project_id),
                        quotas.secrets_per_project,
                        QuotaKind::Secrets,
                    )
                    .await?;
                    // The name was checked under the write lock: a unique
                    // violation here is the global secret id (random UUID),
                    // which has no `Conflict` kind and surfaces as `Backend`.
                    sqlx::query(q::INSERT_SECRET)
                        .bind(&secret.secret_id)
                        .bind(&secret.project_id)
                        .bind(&secret.name)
                        .bind(secret.state.as_str())
                        .bind(&secret.kms_key_id)
                        .bind(&secret.description)
                        .bind(&secret.secret_type)
                        .bind(secret.auto_rotation)
                        .bind(&secret.rotation_period)
                        .bind(&secret.rotation_config)
                        .bind(events)
                        .bind(&secret.enterprise_project_id)
                        .bind(&secret.rotation_func_urn)
                        .bind(secret.created_ms)
                        .bind(secret.updated_ms)
                        .bind(secret.scheduled_delete_ms)
                        .bind(q::first_free_version(versions))
                        .execute(&mut *tx)
                        .await?;
                    // Children are filed under `secret.secret_id` whatever
                    // their own `secret_id` says.
                    for (seq, version) in (1i64..).zip(versions) {
                        insert_version(
                            &mut tx,
                            &secret.secret_id,
                            &version.version_id,
                            seq,
                            version,
                        )
                        .await?;
                    }
                    for stage in stages {
                        upsert_stage(
                            &mut tx,
                            &secret.secret_id,
                            &stage.name,
                            &stage.version_id,
                            stage.updated_ms,
                        )
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn get_secret(
                    &self,
                    project_id: &str,
                    name: &str,
                ) -> Result<Option<SecretRecord>> {
                    sqlx::query_as::<_, q::SecretRow>(q::SELECT_SECRET)
                        .bind(project_id)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(SecretRecord::try_from)
                        .transpose()
                }

                async fn get_secret_by_id(
                    &self,
                    project_id: &str,
                    secret_id: &str,
                ) -> Result<Option<SecretRecord>> {
                    sqlx::query_as::<_, q::SecretRow>(q::SELECT_SECRET_BY_ID)
                        .bind(project_id)
                        .bind(secret_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(SecretRecord::try_from)
                        .transpose()
                }

                async fn list_secrets(
                    &self,
                    project_id: &str,
                    after: Option<&str>,
                    limit: u64,
                    event_name: Option<&str>,
                ) -> Result<Keyset<SecretRecord>> {
                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                    // One row past the page tells whether more follow.
                    let batch = limit.saturating_add(1);
                    // The event filter runs in SQL as a substring test on the
                    // JSON text (the quoted name: a superset of the matches),
                    // then exactly on the decoded list; rows the exact test
                    // drops are made up by fetching further batches.
                    let needle = event_name.map(q::string_json).transpose()?;
                    let mut cursor = after.map(str::to_owned);
                    let mut items = Vec::new();
                    let mut tx = self.begin_read().await?;
                    loop {
                        let mut qb = QueryBuilder::<$db>::new(q::LIST_SECRETS_HEAD);
                        qb.push_bind(project_id.to_owned());
                        if let Some(cursor) = &cursor {
                            qb.push(" AND name > ");
                            qb.push_bind(cursor.clone());
                        }
                        if let Some(needle) = &needle {
                            qb.push(" AND ");
                            qb.push(<$store>::CONTAINS_FN);
                            qb.push("(event_subscriptions, ");
                            qb.push_bind(needle.clone());
                            qb.push(") > 0");
                        }
                        qb.push(q::LIST_SECRETS_ORDER);
                        qb.push_bind(i64::try_from(batch).unwrap_or(i64::MAX));
                        let rows = qb
                            .build_query_as::<q::SecretRow>()
                            .fetch_all(&mut *tx)
                            .await?;
                        let fetched = rows.len();
                        for row in rows {
                            let secret = SecretRecord::try_from(row)?;
                            cursor = Some(secret.name.clone());
                            let wanted = event_name.is_none_or(|event| {
                                secret.event_subscriptions.iter().any(|e| e == event)
                            });
                            if wanted {
                                items.push(secret);
                            }
                        }
                        if items.len() > limit || fetched < batch {
                            break;
                        }
                    }
                    tx.commit().await?;
                    Ok(q::keyset(items, limit))
                }

                async fn update_secret(&self, secret: &SecretRecord) -> Result<SecretRecord> {
                    let events = q::strings_json(&secret.event_subscriptions)?;
                    let row = sqlx::query_as::<_, q::SecretRow>(q::UPDATE_SECRET)
                        .bind(&secret.project_id)
                        .bind(&secret.name)
                        .bind(&secret.kms_key_id)
                        .bind(&secret.description)
                        .bind(secret.auto_rotation)
                        .bind(&secret.rotation_period)
                        .bind(&secret.rotation_config)
                        .bind(events)
                        .bind(&secret.rotation_func_urn)
                        .bind(secret.updated_ms)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    SecretRecord::try_from(row)
                }

                async fn set_secret_state(
                    &self,
                    project_id: &str,
                    name: &str,
                    from: &[SecretState],
                    to: SecretState,
                    scheduled_delete_ms: Option<Millis>,
                    now: Millis,
                ) -> Result<SecretRecord> {
                    // One UPDATE with the expected states in its WHERE, as
                    // `transition` does for keys.
                    if !from.is_empty() {
                        let mut qb = QueryBuilder::<$db>::new(q::SECRET_TRANSITION_HEAD);
                        qb.push_bind(to.as_str());
                        qb.push(", scheduled_delete_ms = ");
                        qb.push_bind(scheduled_delete_ms);
                        qb.push(", updated_ms = ");
                        qb.push_bind(now);
                        qb.push(" WHERE project_id = ");
                        qb.push_bind(project_id.to_owned());
                        qb.push(" AND name = ");
                        qb.push_bind(name.to_owned());
                        qb.push(" AND state IN (");
                        let mut states = qb.separated(", ");
                        for state in from {
                            states.push_bind(state.as_str());
                        }
                        states.push_unseparated(")");
                        qb.push(q::RETURNING_SECRET);
                        let updated = qb
                            .build_query_as::<q::SecretRow>()
                            .fetch_optional(&self.pool)
                            .await?;
                        if let Some(row) = updated {
                            return SecretRecord::try_from(row);
                        }
                    }
                    Err(secret_state_error(&self.pool, project_id, name).await)
                }

                async fn delete_secret(&self, project_id: &str, name: &str) -> Result<()> {
                    let mut tx = self.begin_write(project_id).await?;
                    let secret_id =
                        require_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    for statement in q::DELETE_SECRET_ROWS {
                        sqlx::query(statement)
                            .bind(&secret_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn purge_due_secrets(&self, now: Millis) -> Result<Vec<String>> {
                    let pending = SecretState::PendingDelete.as_str();
                    self.purge_due(&q::PURGE_SECRETS, pending, now).await
                }
            }

            #[async_trait::async_trait]
            impl $crate::SecretVersionRepo for $store {
                async fn add_version(
                    &self,
                    project_id: &str,
                    name: &str,
                    version: &SecretVersion,
                    stages: &[String],
                    quotas: &SecretQuotas,
                    now: Millis,
                ) -> Result<SecretVersion> {
                    // The project lock orders concurrent adds (distinct ids,
                    // SYSCURRENT on the last one); the claim below also locks
                    // the secret's row against state changes.
                    let mut tx = self.begin_write(project_id).await?;
                    let claimed = sqlx::query_as::<_, q::ClaimedVersion>(q::CLAIM_VERSION)
                        .bind(project_id)
                        .bind(name)
                        .bind(SecretState::Enabled.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(claimed) = claimed else {
                        return Err(secret_state_error(&mut *tx, project_id, name).await);
                    };
                    let secret_id = claimed.secret_id;
                    let n = claimed.next_version - 1;
                    let version_id = format!("v{n}");

                    let existing = sqlx::query_as::<_, q::StageRow>(q::STAGES_OF_SECRET)
                        .bind(&secret_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let requested: BTreeSet<&str> = stages.iter().map(String::as_str).collect();
                    // The version losing SYSCURRENT becomes SYSPREVIOUS.
                    let former_current = existing
                        .iter()
                        .find(|st| st.name == STAGE_CURRENT)
                        .map(|st| st.version_id.clone())
                        .filter(|_| requested.contains(STAGE_CURRENT));
                    let mut names: BTreeSet<&str> =
                        existing.iter().map(|st| st.name.as_str()).collect();
                    names.extend(requested.iter().copied());
                    if former_current.is_some() {
                        names.insert(STAGE_PREVIOUS);
                    }
                    if names.len() > quota(quotas.stages_per_secret) {
                        return Err(StoreError::Quota(QuotaKind::Stages));
                    }

                    insert_version(&mut tx, &secret_id, &version_id, n, version).await?;
                    if let Some(former) = &former_current {
                        upsert_stage(&mut tx, &secret_id, STAGE_PREVIOUS, former, now).await?;
                    }
                    // After the implicit SYSPREVIOUS, so that an explicit one wins.
                    for stage in &requested {
                        upsert_stage(&mut tx, &secret_id, *stage, &version_id, now).await?;
                    }

                    // Versions that just lost their last stage count as
                    // stage-less; the new version is never the one dropped.
                    let count: i64 = sqlx::query_scalar(q::COUNT_VERSIONS)
                        .bind(&secret_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let excess = count.saturating_sub(i64::from(quotas.versions_per_secret));
                    if excess > 0 {
                        let droppable: Vec<String> = sqlx::query_scalar(q::DROPPABLE_VERSIONS)
                            .bind(&secret_id)
                            .bind(&version_id)
                            .bind(excess)
                            .fetch_all(&mut *tx)
                            .await?;
                        if i64::try_from(droppable.len()).unwrap_or(i64::MAX) < excess {
                            return Err(StoreError::Quota(QuotaKind::Versions));
                        }
                        for dropped in &droppable {
                            sqlx::query(q::DELETE_VERSION)
                                .bind(&secret_id)
                                .bind(dropped)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(SecretVersion {
                        secret_id,
                        version_id,
                        kms_key_id: version.kms_key_id.clone(),
                        ciphertext: version.ciphertext.clone(),
                        created_ms: version.created_ms,
                        expire_ms: version.expire_ms,
                        stages: requested.into_iter().map(str::to_owned).collect(),
                    })
                }

                async fn get_version(
                    &self,
                    project_id: &str,
                    name: &str,
                    version_id: Option<&str>,
                ) -> Result<Option<SecretVersion>> {
                    // The hot read's one statement; the secret comes along.
                    Ok(self
                        .read_secret_version(project_id, name, version_id)
                        .await?
                        .and_then(|(_, version)| version))
                }

                async fn read_secret_version(
                    &self,
                    project_id: &str,
                    name: &str,
                    version_id: Option<&str>,
                ) -> Result<Option<(SecretRecord, Option<SecretVersion>)>> {
                    // One statement: it sees one snapshot without a
                    // transaction, and costs one round trip.
                    let row = match version_id {
                        Some(version_id) => {
                            sqlx::query_as::<_, q::SecretVersionRow>(READ_VERSION_BY_ID.as_str())
                                .bind(project_id)
                                .bind(name)
                                .bind(version_id)
                                .fetch_optional(&self.pool)
                                .await?
                        }
                        None => {
                            sqlx::query_as::<_, q::SecretVersionRow>(READ_LATEST_VERSION.as_str())
                                .bind(project_id)
                                .bind(name)
                                .fetch_optional(&self.pool)
                                .await?
                        }
                    };
                    row.map(<(SecretRecord, Option<SecretVersion>)>::try_from)
                        .transpose()
                }

                async fn list_versions(
                    &self,
                    project_id: &str,
                    name: &str,
                    after: Option<&str>,
                    limit: u64,
                ) -> Result<Keyset<SecretVersion>> {
                    let none = Keyset {
                        items: Vec::new(),
                        more: false,
                    };
                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                    let mut tx = self.begin_read().await?;
                    let secret_id =
                        select_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    let Some(secret_id) = secret_id else {
                        return Ok(none);
                    };
                    let before = match after {
                        None => i64::MAX,
                        Some(after) => {
                            let seq: Option<i64> = sqlx::query_scalar(q::VERSION_SEQ)
                                .bind(&secret_id)
                                .bind(after)
                                .fetch_optional(&mut *tx)
                                .await?;
                            // A marker that names no version (never did, or
                            // dropped since) has no place in the order.
                            match seq {
                                Some(seq) => seq,
                                None => return Ok(none),
                            }
                        }
                    };
                    let mut items: Vec<SecretVersion> =
                        sqlx::query_as::<_, q::VersionRow>(q::LIST_VERSIONS)
                            .bind(&secret_id)
                            .bind(before)
                            .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
                            .fetch_all(&mut *tx)
                            .await?
                            .into_iter()
                            .map(SecretVersion::from)
                            .collect();
                    attach_stages(&mut tx, &secret_id, &mut items).await?;
                    tx.commit().await?;
                    Ok(q::keyset(items, limit))
                }

                async fn update_version_expiry(
                    &self,
                    project_id: &str,
                    name: &str,
                    version_id: &str,
                    expire_ms: Option<Millis>,
                ) -> Result<SecretVersion> {
                    let mut tx = self.begin_write(project_id).await?;
                    let secret_id =
                        require_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    let row = sqlx::query_as::<_, q::VersionRow>(q::UPDATE_VERSION_EXPIRY)
                        .bind(&secret_id)
                        .bind(version_id)
                        .bind(expire_ms)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    let mut versions = [SecretVersion::from(row)];
                    attach_stages(&mut tx, &secret_id, &mut versions).await?;
                    tx.commit().await?;
                    let [version] = versions;
                    Ok(version)
                }

                async fn all_versions(
                    &self,
                    project_id: &str,
                    name: &str,
                ) -> Result<Vec<SecretVersion>> {
                    let mut tx = self.begin_read().await?;
                    let secret_id =
                        select_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    let Some(secret_id) = secret_id else {
                        return Ok(Vec::new());
                    };
                    let mut versions: Vec<SecretVersion> =
                        sqlx::query_as::<_, q::VersionRow>(q::ALL_VERSIONS)
                            .bind(&secret_id)
                            .fetch_all(&mut *tx)
                            .await?
                            .into_iter()
                            .map(SecretVersion::from)
                            .collect();
                    attach_stages(&mut tx, &secret_id, &mut versions).await?;
                    tx.commit().await?;
                    Ok(versions)
                }

                async fn get_stage(
                    &self,
                    project_id: &str,
                    name: &str,
                    stage: &str,
                ) -> Result<Option<StageRecord>> {
                    Ok(sqlx::query_as::<_, q::StageRow>(q::SELECT_STAGE)
                        .bind(project_id)
                        .bind(name)
                        .bind(stage)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(StageRecord::from))
                }

                async fn put_stage(
                    &self,
                    project_id: &str,
                    name: &str,
                    stage: &str,
                    version_id: &str,
                    now: Millis,
                    quotas: &SecretQuotas,
                ) -> Result<StageRecord> {
                    let mut tx = self.begin_write(project_id).await?;
                    let secret_id =
                        require_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    let version: Option<i64> = sqlx::query_scalar(q::VERSION_SEQ)
                        .bind(&secret_id)
                        .bind(version_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if version.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    let existing = sqlx::query_as::<_, q::StageRow>(q::STAGES_OF_SECRET)
                        .bind(&secret_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    // The version losing SYSCURRENT becomes SYSPREVIOUS, as
                    // in add_version. Both moves are counted against the
                    // quota before either is written, so a refusal moves
                    // nothing.
                    let former_current = existing
                        .iter()
                        .find(|st| st.name == STAGE_CURRENT && st.version_id != version_id)
                        .map(|st| st.version_id.clone())
                        .filter(|_| stage == STAGE_CURRENT);
                    let mut names: BTreeSet<&str> =
                        existing.iter().map(|st| st.name.as_str()).collect();
                    names.insert(stage);
                    if former_current.is_some() {
                        names.insert(STAGE_PREVIOUS);
                    }
                    if names.len() > quota(quotas.stages_per_secret) {
                        return Err(StoreError::Quota(QuotaKind::Stages));
                    }
                    if let Some(former) = &former_current {
                        upsert_stage(&mut tx, &secret_id, STAGE_PREVIOUS, former, now).await?;
                    }
                    upsert_stage(&mut tx, &secret_id, stage, version_id, now).await?;
                    tx.commit().await?;
                    Ok(StageRecord {
                        secret_id,
                        name: stage.to_owned(),
                        version_id: version_id.to_owned(),
                        updated_ms: now,
                    })
                }

                async fn delete_stage(
                    &self,
                    project_id: &str,
                    name: &str,
                    stage: &str,
                ) -> Result<()> {
                    let mut tx = self.begin_write(project_id).await?;
                    let secret_id =
                        require_id(&mut tx, q::SECRET_ID_BY_NAME, project_id, name).await?;
                    let deleted = sqlx::query(q::DELETE_STAGE)
                        .bind(&secret_id)
                        .bind(stage)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if deleted == 0 {
                        return Err(StoreError::NotFound);
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }

            #[async_trait::async_trait]
            impl $crate::SecretTagRepo for $store {
                // ---- CSMS tags ------------------------------------------------------------

                async fn secret_tags(&self, project_id: &str, secret_id: &str) -> Result<Vec<Tag>> {
                    self.owner_tags(&q::SECRET_TAGS, project_id, secret_id)
                        .await
                }

                async fn put_secret_tags(
                    &self,
                    project_id: &str,
                    secret_id: &str,
                    tags: &[Tag],
                    quotas: &SecretQuotas,
                ) -> Result<()> {
                    self.put_owner_tags(
                        &q::SECRET_TAGS,
                        project_id,
                        secret_id,
                        tags,
                        quotas.tags_per_secret,
                    )
                    .await
                }

                async fn delete_secret_tags(
                    &self,
                    project_id: &str,
                    secret_id: &str,
                    keys: &[String],
                ) -> Result<()> {
                    self.delete_owner_tags(&q::SECRET_TAGS, project_id, secret_id, keys)
                        .await
                }

                async fn project_secret_tags(
                    &self,
                    project_id: &str,
                ) -> Result<Vec<(String, Vec<String>)>> {
                    self.tags_in_project(&q::SECRET_TAGS, project_id).await
                }

                async fn find_secrets_by_tags(
                    &self,
                    project_id: &str,
                    filter: &TagFilter,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<(SecretRecord, Vec<Tag>)>> {
                    self.find_by_tags::<q::SecretRow, SecretRecord>(
                        &q::SECRET_TAGS,
                        project_id,
                        filter,
                        offset,
                        limit,
                    )
                    .await
                }
            }
        };
    };
}
pub(crate) use impl_store;
