//! Listeners for tonic servers.
//!
//! tonic ignores `Server::tcp_nodelay` under `serve_with_incoming`, and with
//! Nagle on, small gRPC frames meet delayed ACKs and p99 jumps to ~40 ms. Every
//! gRPC server in keymesh therefore serves from this stream.

use futures_util::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// Accepted connections with TCP_NODELAY set.
pub fn nodelay_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Bind `addr`, and when `addr_file` is given write the bound address there
/// (atomically) so launchers and tests can use port 0 and read the port back.
pub async fn bind(
    addr: std::net::SocketAddr,
    addr_file: Option<&std::path::Path>,
) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    if let Some(path) = addr_file {
        write_addr_file(path, listener.local_addr()?)?;
    }
    Ok(listener)
}

/// Write `addr` to `path` via a temporary file and a rename, so a reader never
/// sees a half-written address.
pub fn write_addr_file(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, path)
}
