//! keymesh edge: the HTTP(S) front door.
//!
//! It authenticates AWS KMS (SigV4, optional mTLS), validates XKS requests,
//! applies per-key-store policy and quotas, and translates each operation
//! into a gRPC call to a crypto-worker. It holds no key material.

pub mod app;
pub mod config;
pub mod http;
pub mod huawei;
pub mod keystores;
pub mod limiter;
pub mod mesh;
pub mod state;
pub mod xks;
