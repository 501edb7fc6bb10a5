//! The SQL implementation of the store traits, shared by both backends.
//!
//! SQLite and PostgreSQL run the very same statements: `$n` placeholders
//! (sqlx binds them by number on SQLite too), 64-bit integers, TEXT, BLOB or
//! BYTEA, `INSERT .. ON CONFLICT` and `UPDATE .. RETURNING`, which both
//! speak, against the same tables (`migrations/*/0001_kms.sql`,
//! `migrations/*/0002_csms.sql`, `migrations/*/0003_sealed_secrets.sql`,
//! `migrations/*/0004_domain_keys.sql`). What differs is how a
//! read-check-write transaction keeps concurrent writers out, and the names
//! of two functions, so each backend type provides four items that the
//! repositories call:
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
//! Layout:
//! * this module: what knows no backend (bind values, pages, JSON lists)
//!   and the column lists that several aggregates' statements share;
//! * [`rows`]: the rows the statements select and their conversion into
//!   the records of [`crate::model`];
//! * `repos/`: one file per aggregate (`accounts.rs`, `seal_keys.rs`,
//!   `keys.rs`, `aliases.rs`, `key_tags.rs`, `grants.rs`, `secrets.rs`,
//!   `versions.rs`, `secret_tags.rs`, `domain_keys.rs`), each with its
//!   statements at the top and its `impl XRepo for SqlStore` below; beside
//!   them `common.rs` (lookups, quota checks, pages, purge) and `tags.rs`
//!   (what key tags and secret tags do alike).
//!
//! The `repos/` files are compiled once per backend: `sqlite.rs` and
//! `postgres.rs` each name their store type `SqlStore` and their sqlx
//! database `Db`, then include the directory as their module `repos`. Each
//! copy is plain Rust, type-checked against its concrete backend. Generic
//! code over `sqlx::Database` would repeat a dozen executor/encode/decode
//! bounds on every function, and a macro (how this was written before)
//! hides the code from the IDE and rustdoc.
//!
//! Every statement that reads a key, alias, tag or grant names the
//! `project_id` (tags through a join with `keys`), so nothing of another
//! project is reachable; a write inside a transaction may address a row by
//! `key_id` alone once that transaction has checked the key's project.
//! Secrets follow the same rule: versions, stages and secret tags are
//! reached through a join with `secrets` on `project_id`, or by a
//! `secret_id` that the same transaction has just read from the project.

pub(crate) mod rows;

use crate::model::{Keyset, Page, SecretVersion};
use crate::{Conflict, StoreError};

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

// ---- column lists -----------------------------------------------------------

/// `"p.a, p.b, ..."`: columns `a, b, ...` each behind the prefix `p`.
macro_rules! prefixed {
    ($p:literal; $first:ident $(, $rest:ident)* $(,)?) => {
        concat!($p, stringify!($first) $(, ", ", $p, stringify!($rest))*)
    };
}

/// The column lists take an optional table-alias prefix (`"k."`) for
/// statements that join, so that each list is written once.
macro_rules! key_columns {
    () => {
        $crate::sql::key_columns!("")
    };
    ($p:literal) => {
        $crate::sql::prefixed!($p; key_id, project_id, alias, description, spec, key_usage, origin, state,
            default_key, created_ms, deletion_ms, material_version, enterprise_project_id,
            keystore_id)
    };
}

/// Secret columns, with an optional prefix as [`key_columns!`].
macro_rules! secret_columns {
    () => {
        $crate::sql::secret_columns!("")
    };
    ($p:literal) => {
        $crate::sql::prefixed!($p; secret_id, project_id, name, state, kms_key_id, description, secret_type,
            auto_rotation, rotation_period, rotation_config, event_subscriptions,
            enterprise_project_id, rotation_func_urn, created_ms, updated_ms, scheduled_delete_ms)
    };
}
pub(crate) use {key_columns, prefixed, secret_columns};
