//! Loading the edge's live view of the key-stores file (`keystores.json`,
//! whose format, validation, writer and lookup view — which store serves a
//! URI path, which keys it serves — are [`keymesh_contracts::keystores`]).
//!
//! The file is hot-reloaded (file watch or SIGHUP, wired in `state`), so
//! credentials rotate and keys move without a restart; each load goes
//! through [`load`].
//!
//! Isolation: a key store serves only the keys its `key_ids` name, never a
//! keymesh-internal label. A catch-all pattern (`"*"`, written by keymeshctl
//! before key stores were isolated) matches only with the edge's
//! `allow_wildcard_keystores = true`, and a warning names the store at every
//! load, so the operator sees it until the pattern is gone.

use keymesh_contracts::keystores::Keystores;

/// Parse the file with the edge's `allow_wildcard_keystores` setting,
/// warning about each store with a catch-all pattern.
pub fn load(bytes: &[u8], allow_wildcard: bool) -> anyhow::Result<Keystores> {
    Keystores::parse_with(bytes, allow_wildcard, |uri_path, p| {
        if allow_wildcard {
            tracing::warn!(
                keystore = %uri_path, pattern = %p,
                "key store serves every non-internal key on the token (allow_wildcard_keystores = true); assign its keys with `keymeshctl key assign` and remove the pattern"
            );
        } else {
            tracing::warn!(
                keystore = %uri_path, pattern = %p,
                "catch-all key pattern ignored: key stores serve only assigned keys unless allow_wildcard_keystores = true; assign keys with `keymeshctl key assign`"
            );
        }
    })
}
