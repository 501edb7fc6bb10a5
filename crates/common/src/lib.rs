//! Runtime plumbing shared by every keymesh service.
//!
//! Each service's `main.rs` is telemetry → config → bind → serve → drain; the
//! pieces that are the same everywhere live here so they are written once:
//! telemetry set-up and W3C trace-context propagation across gRPC hops, the
//! Prometheus recorder and `/metrics` listener, a TCP_NODELAY listener stream
//! for tonic, mutual TLS between services (reloading certificates, pinning
//! peer identities) with a plaintext health-only listener for probes, the
//! shutdown signal, hot-reloaded files, a `Secret` string that never prints,
//! and the HSM label classes every service checks.

pub mod grpc_tls;
pub mod health_listener;
pub mod labels;
pub mod mesh_identity;
pub mod net;
pub mod prometheus;
pub mod propagation;
pub mod reload;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use secret::Secret;
