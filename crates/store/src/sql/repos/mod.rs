//! The repository traits implemented over one backend's pool: compiled
//! once for SQLite (in `crate::sqlite`) and once for PostgreSQL (in
//! `crate::postgres`), each of which names its store type `SqlStore` and
//! its sqlx database `Db` before including this directory (see
//! [`crate::sql`] for why).
//!
//! One file per aggregate, statements at the top and the trait impl below;
//! `common.rs` and `tags.rs` hold what several aggregates do alike. The
//! dependencies point one way: aggregates use `common` and `tags`, keys use
//! the grant count (usage), secrets use the version writes (create).

mod accounts;
mod aliases;
mod common;
mod domain_keys;
mod grants;
mod key_tags;
mod keys;
mod seal_keys;
mod secret_tags;
mod secrets;
mod tags;
mod versions;

use super::{Db, SqlStore};
