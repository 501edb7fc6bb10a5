//! An HTTP(S) listener: accept, optional TLS handshake, HTTP/1.1 or HTTP/2
//! (auto-detected; ALPN with TLS), graceful drain on shutdown. What it serves
//! is the caller's router (the edge: the whole app on the main listener,
//! the probes alone on the admin listener).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use super::abuse::{AbuseConfig, Peer};

/// How long a client may take to finish the TLS handshake or send headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest HTTP/1.1 read buffer per connection (hyper's default is ~400
/// KiB): the request head must fit, and a body streams through it.
const HTTP1_MAX_BUF: usize = 64 << 10;

/// Serve `router` until `shutdown` resolves, then drain in-flight connections.
/// Each request carries its peer address as a [`Peer`] extension (the
/// per-source budgets key on it); `limits` bounds what one connection may
/// make the edge hold.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: AbuseConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // A Router clone shares its routes (one Arc), so per-connection
        // clones cost no rebuilding of the tower stack.
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(
                ServiceBuilder::new()
                    .layer(axum::Extension(Peer(peer)))
                    .service(router),
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(HTTP1_MAX_BUF);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .initial_stream_window_size(limits.http2_stream_window_bytes)
                .initial_connection_window_size(limits.http2_connection_window_bytes)
                .max_header_list_size(limits.http2_max_header_list_bytes);
            let result = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}
