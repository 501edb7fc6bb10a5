//! Dialling a gRPC peer (worker or limiter replica) with the settings every
//! keymesh hop uses, over mutual TLS when `[grpc_tls]` is set.

use std::sync::Arc;
use std::time::Duration;

use keymesh_common::grpc_tls::GrpcTls;
use tonic::transport::{Channel, Endpoint};

/// How the edge dials one kind of peer (workers, or limiters) under
/// `[grpc_tls]`: its mesh identity (reloaded in place) and the identities
/// that kind's certificates must carry (pinned inside the `GrpcTls`).
#[derive(Debug, Clone)]
pub struct GrpcClientTls {
    pub tls: Arc<GrpcTls>,
}

/// A plaintext gRPC channel to `url` with the settings every keymesh hop uses.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    channel_with(url, None)
}

/// A gRPC channel to `url`, over mutual TLS when `tls` is given. URLs stay
/// `http://`: the connector does the TLS, tonic only sees a byte stream.
pub fn channel_with(url: &str, tls: Option<&GrpcClientTls>) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())?
        // Nagle + delayed ACK would add ~40 ms to small gRPC frames (the TLS
        // connector sets TCP_NODELAY itself).
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(match tls {
        Some(t) => endpoint
            .connect_with_connector_lazy(keymesh_common::grpc_tls::connector(Arc::clone(&t.tls))),
        None => endpoint.connect_lazy(),
    })
}
