//! Authentication for the Huawei-Cloud-compatible KMS/CSMS API.
//!
//! The official clients authenticate in one of two ways, and this crate
//! implements both, free of any HTTP framework so that the edge, tests and
//! the load generator share one implementation:
//!
//! * [`sdk_hmac`]: AK/SK request signatures (`Authorization: SDK-HMAC-SHA256
//!   ...`), the scheme every client built with `BasicCredentials` uses.
//!   Server-side verification and a client-side signer.
//! * [`token`]: `X-Auth-Token` bearer tokens. Huawei's are IAM tokens; ours
//!   are compact JWS (Ed25519) issued by `keymeshctl auth-token issue`, with
//!   errors that map one-to-one onto the KMS.03xx codes.

pub mod sdk_hmac;
pub mod token;

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, negative before it (saturating): the clock
/// both schemes check their timestamps against.
pub(crate) fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
