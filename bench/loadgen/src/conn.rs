//! The transport both dialects share: a loopback-only endpoint and one
//! HTTP/1.1 keep-alive connection per load worker.
//!
//! Kept apart from the request builders (`xks`, `huawei`) so that the two
//! dialects are measured over exactly the same client stack: any difference
//! in the numbers is the server's (or the signer's), not the transport's.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A resolved `--endpoint`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host` header value (both dialects sign it).
    pub host: String,
}

impl Endpoint {
    /// Parse and resolve `http://HOST:PORT`; anything but loopback is refused.
    pub async fn resolve(endpoint: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = endpoint.parse()?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                anyhow::bail!("--endpoint: scheme {other} not supported (plain http only)")
            }
            None => anyhow::bail!("--endpoint needs a scheme: http://127.0.0.1:PORT"),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--endpoint has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((authority.host(), port))
            .await?
            .collect();
        // A load generator pointed at someone else's service is a DoS tool:
        // refuse anything that is not this machine.
        let addr = match addrs.first() {
            Some(a) if addrs.iter().all(|a| a.ip().is_loopback()) => *a,
            Some(_) => anyhow::bail!("--endpoint must be a loopback address"),
            None => anyhow::bail!("--endpoint does not resolve"),
        };
        Ok(Self {
            addr,
            host: authority.as_str().to_owned(),
        })
    }
}

/// A response, fully read (so the connection can be reused).
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Small requests and responses: Nagle + delayed ACK would add ~40 ms.
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Send one (already signed) request, reading the whole response.
    pub async fn send(&mut self, req: http::Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}
