//! Rendezvous (highest random weight) hashing of bucket keys over replicas.
//!
//! The hash must be stable across processes and builds (every edge has to
//! pick the same owner for a key), so it is FNV-1a (`fnv` crate, fixed by its
//! spec) rather than std's `DefaultHasher` (unspecified, may change between
//! Rust releases), finished with splitmix64 because FNV alone mixes its high
//! bits poorly and HRW compares whole 64-bit weights.

use std::hash::Hasher;

/// splitmix64's finaliser: a bijection with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash of a replica's identity (its configured URL).
pub fn replica_seed(endpoint: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(endpoint.as_bytes());
    mix(h.finish())
}

/// The hash of a bucket key. The 0xff separator cannot occur in UTF-8,
/// so ("a", "bc") and ("ab", "c") differ.
pub fn key_hash(tenant: &str, operation: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(tenant.as_bytes());
    h.write_u8(0xff);
    h.write(operation.as_bytes());
    h.finish()
}

/// Replica indices, best first: the key's owner, then where the key goes
/// if the owner is down, and so on. Removing a replica leaves the
/// relative order of the others unchanged, so only its own keys move.
pub fn order(key: u64, seeds: &[u64]) -> Box<[u16]> {
    let mut weighted: Vec<(u64, u16)> = seeds
        .iter()
        .zip(0u16..)
        .map(|(&seed, i)| (mix(key ^ seed), i))
        .collect();
    // Highest weight first; the index breaks (astronomically unlikely) ties.
    weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    weighted.into_iter().map(|(_, i)| i).collect()
}
