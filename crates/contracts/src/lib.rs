//! keymesh contracts: what two keymesh programs agree on without one of them
//! owning it.
//!
//! A file written by `keymeshctl` and read by a service, or a limit the
//! rate-limiter enforces and the edge must respect, is a contract between
//! them. Each has its one home here, so the CLI and the services depend on
//! this crate rather than on each other:
//!
//! * [`keystores`]: `keystores.json`, the edge's XKS key stores (SigV4
//!   credentials and the key ids each store serves), with its validation,
//!   the atomic, private rewrite `keymeshctl credential|key assign` does, and
//!   the lookup view ([`keystores::Keystores`]) that says which store serves
//!   a URI path and which keys it serves.
//! * [`glob`]: what a `*`/`?` pattern in `key_ids` matches.
//! * [`key_status`]: `key-status.json`, the keys an operator disabled,
//!   written by `keymeshctl key enable|disable` and polled by every worker.
//! * [`atomic`]: [`write_atomic`], the one way these files are replaced
//!   (readers see the old or the new content, never a torn write).
//! * [`limits`]: numbers both sides of a wire must agree on, such as the
//!   largest lease one rate-limiter `Acquire` may ask for.

pub mod atomic;
pub mod glob;
pub mod key_status;
pub mod keystores;
pub mod limits;

pub use atomic::write_atomic;
