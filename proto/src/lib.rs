//! gRPC contracts of the keymesh mesh, one versioned package per service.
//!
//! `crypto::v1` is the crypto-worker (the only owner of HSM sessions);
//! `ratelimit::v1` is the rate-limiter. Standard `grpc.health.v1` comes from
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
