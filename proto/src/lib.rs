//! gRPC contracts of the keymesh mesh, one versioned package per service.
//!
//! `crypto::v1` is the crypto-worker (the only owner of HSM sessions);
//! `ratelimit::v1` is the rate-limiter. `envoy` is the wire-compatible subset
//! of Envoy's rate limit service that the rate-limiter also serves. Standard `grpc.health.v1` comes from
//! `tonic-health` and is served by every service.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod crypto {
    pub mod v1 {
        tonic::include_proto!("keymesh.crypto.v1");
    }
}

pub mod ratelimit {
    pub mod v1 {
        tonic::include_proto!("keymesh.ratelimit.v1");
    }
}

/// Envoy's `envoy.service.ratelimit.v3.RateLimitService` (minimal subset, same
/// package names and field numbers as Envoy's own protos).
pub mod envoy {
    pub mod extensions {
        pub mod common {
            pub mod ratelimit {
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    pub mod service {
        pub mod ratelimit {
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
}
