//! keymesh HTTP server: the HTTP(S) machinery of the edge that knows no
//! dialect and no edge state. [`server`] accepts connections and serves a
//! router over HTTP/1.1 or HTTP/2 with per-connection limits and a graceful
//! drain; [`tls`] builds the rustls acceptor from the `[tls]` section (XKS
//! suites, optional client certificates pinned to a subject CN); [`abuse`]
//! holds the budgets of callers not yet authenticated (per source address,
//! and bytes buffered before authentication) and the `[abuse]` limits; [`body`] buffers a
//! request body within a size, a deadline and that byte budget; and
//! [`zeroizing`] serialises answers that carry secrets into a buffer wiped
//! once written. What a refusal looks like on the wire is the caller's:
//! each dialect maps [`body::BodyError`] and the budgets' refusals itself.
//! The `[tls]` and `[abuse]` sections are plain deserialisable structs here,
//! parsed as part of the embedding service's configuration.

pub mod abuse;
pub mod body;
pub mod server;
pub mod tls;
pub mod zeroizing;
