//! Mutual TLS between keymesh services (edge → crypto-worker / rate-limiter).
//!
//! One [`GrpcTls`] per process holds the rustls server and client configs
//! built from three PEM files (certificate chain, key, CA bundle) and
//! rebuilds them when any of the files changes, so a certificate rotation
//! (cert-manager rewriting a Secret) needs no restart. Both sides require a
//! certificate chaining to the CA *and* carrying an allowed identity
//! ([`crate::mesh_identity`]): a pod without a mesh certificate cannot call
//! an HSM-backed worker, and a worker's or limiter's certificate cannot call
//! one either, nor pose as a worker to the edge.
//!
//! mTLS is the default: the services refuse to start without these files
//! unless `--insecure-plaintext-grpc` (edge: `insecure_plaintext_grpc =
//! true`) says, loudly, that plaintext gRPC is wanted.
//!
//! tonic's own TLS is not compiled in (its `tls-*` features pull a second
//! rustls setup and cannot reload), so TLS is done here: the server side
//! turns a `TcpListener` into a stream of handshaken connections for
//! `serve_with_incoming*`; the client side is a connector for
//! `Endpoint::connect_with_connector_lazy`, which keeps `http://` URIs and
//! does the handshake itself. Every new connection uses the config current at
//! that moment; existing connections keep the one they were made with.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::Stream;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

use crate::mesh_identity::{
    AllowedPeers, EDGE_IDENTITY, PinnedClientVerifier, PinnedServerVerifier,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;

/// How long a TLS handshake may take, either side. A client that opens a
/// socket and stalls must not hold a handshake slot (or a connect) forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the three files are checked for changes (SIGHUP forces a reload).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Handshaken connections waiting for tonic to take them. Small: tonic takes
/// them as fast as they come; the bound only stops a burst of handshakes from
/// queueing without limit while the server is busy.
const ACCEPTED_QUEUE: usize = 64;

/// The PEM files of one service's mesh identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle: peers (servers and clients alike) must chain to it.
    pub ca: PathBuf,
}

impl GrpcTlsFiles {
    /// All three or none: `Ok(None)` when none is set, an error naming the
    /// missing ones when only some are. `names` are the flag/field names in
    /// (cert, key, ca) order, for the message.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
        names: [&str; 3],
    ) -> Result<Option<Self>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self { cert, key, ca })),
            (cert, key, ca) => {
                let missing = [cert.is_none(), key.is_none(), ca.is_none()]
                    .iter()
                    .zip(names)
                    .filter(|(m, _)| **m)
                    .map(|(_, n)| n)
                    .collect::<Vec<_>>();
                Err(format!(
                    "{}, {}, {} must be set together (missing {})",
                    names[0],
                    names[1],
                    names[2],
                    missing.join(", ")
                ))
            }
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.ca.clone()]
    }
}

/// One side's mesh TLS: its files and the identities its peers must carry
/// (clients calling this server, or servers this client dials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTls {
    pub files: GrpcTlsFiles,
    pub peers: AllowedPeers,
}

/// The current server and client configs, rebuilt from [`GrpcTlsFiles`].
/// Both pin [`MeshTls::peers`]: the edge, which dials two kinds of peers,
/// loads one `GrpcTls` per kind.
pub struct GrpcTls {
    files: GrpcTlsFiles,
    peers: AllowedPeers,
    server: ArcSwap<ServerConfig>,
    client: ArcSwap<ClientConfig>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("files", &self.files)
            .field("peers", &self.peers)
            .finish()
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

fn certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no PEM certificate", path.display());
    }
    Ok(certs)
}

fn key(path: &std::path::Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The key bytes are secret: zeroised once parsed.
    let pem = zeroize::Zeroizing::new(read(path)?);
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("{}: no PEM private key", path.display()))
}

/// Both configs from the files, or the first problem.
fn build(
    files: &GrpcTlsFiles,
    peers: &AllowedPeers,
) -> anyhow::Result<(ServerConfig, ClientConfig)> {
    let chain = certs(&files.cert)?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.ca.display()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Both ends are keymesh: TLS 1.3 only, no legacy to negotiate with.
    let versions = &[&rustls::version::TLS13];

    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.ca.display()))?;
    let clients = Arc::new(PinnedClientVerifier::new(webpki, peers.clone()));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key(&files.key)?)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", files.cert.display(), files.key.display()))?;
    // gRPC is HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];

    let servers = Arc::new(PinnedServerVerifier::new(
        roots,
        Arc::clone(&provider),
        peers.clone(),
    ));
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(servers)
        .with_client_auth_cert(chain, key(&files.key)?)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", files.cert.display(), files.key.display()))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok((server, client))
}

impl GrpcTls {
    /// Load the files now (an error here is fatal: a service configured for
    /// mTLS must not fall back to plaintext).
    pub fn load(mesh: MeshTls) -> anyhow::Result<Arc<Self>> {
        let MeshTls { files, peers } = mesh;
        let (server, client) = build(&files, &peers)?;
        Ok(Arc::new(Self {
            files,
            peers,
            server: ArcSwap::from_pointee(server),
            client: ArcSwap::from_pointee(client),
        }))
    }

    /// Rebuild from the files now; keeps the old configs when they do not
    /// parse (a half-rotated Secret must not take the mesh down).
    pub fn reload(&self) -> bool {
        match build(&self.files, &self.peers) {
            Ok((server, client)) => {
                self.server.store(Arc::new(server));
                self.client.store(Arc::new(client));
                tracing::info!(cert = %self.files.cert.display(), "gRPC TLS reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "gRPC TLS reload failed; keeping previous certificates");
                false
            }
        }
    }

    /// Watch the three files until the returned task is dropped/aborted.
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        crate::reload::spawn_poll(self.files.paths(), interval, move || {
            this.reload();
        })
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.load_full()
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.load_full()
    }

    /// The identities peers must carry.
    pub fn peers(&self) -> &AllowedPeers {
        &self.peers
    }
}

/// A server-side TLS connection tonic can serve: tonic implements
/// `Connected` for tokio-rustls streams only with its TLS feature, so the
/// stream is wrapped here.
#[derive(Debug)]
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConn {
    pub fn get_ref(&self) -> &tokio_rustls::server::TlsStream<TcpStream> {
        &self.0
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

/// Accepted, handshaken connections on `listener` for `serve_with_incoming*`.
///
/// TCP_NODELAY is set (see [`crate::net`]). Each handshake runs in its own
/// task under [`HANDSHAKE_TIMEOUT`], so a slow or silent client never delays
/// the next accept; failures (no client certificate, wrong CA, timeouts) are
/// logged at debug and dropped, never surfaced to tonic. The accept loop ends
/// (closing the listener) when tonic drops the stream at shutdown.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<GrpcTls>,
) -> impl Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConn>>(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: pause instead of spinning; the
                    // listener stays open and the next accept may succeed.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "set_nodelay failed; dropped");
                continue;
            }
            // The config current now: reloaded certificates apply to every
            // connection accepted after the reload.
            let acceptor = TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(handshake(acceptor, tcp, peer, tx));
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    tx: tokio::sync::mpsc::Sender<io::Result<TlsConn>>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            // Err only when the server is gone; the connection just closes.
            let _ = tx.send(Ok(TlsConn(stream))).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
    }
}

/// A client connection as tonic's connector must return it.
pub type ClientConn = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

/// A connector for `Endpoint::connect_with_connector_lazy`: dials the URI's
/// host and port (TCP_NODELAY), then does the TLS handshake with the current
/// client config. The server is verified by chain and pinned identity, not
/// by the URI host (workers are dialled by IP); the host only becomes the
/// SNI when it is a DNS name.
pub fn connector(
    tls: Arc<GrpcTls>,
) -> impl tower::Service<Uri, Response = ClientConn, Error = io::Error, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let tls = Arc::clone(&tls);
        async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{uri}: bad TLS server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // Nagle + delayed ACK would add ~40 ms to small gRPC frames.
            tcp.set_nodelay(true)?;
            let connector = TlsConnector::from(tls.client_config());
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(stream))
        }
    })
}

/// The service-mTLS flags of the crypto-worker and the rate-limiter. Either
/// all three files, or the explicit `--insecure-plaintext-grpc`: neither is
/// a configuration error.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GrpcTlsArgs {
    /// Serve gRPC over mutual TLS with this PEM certificate chain, leaf first
    /// (hot-reloaded; required unless --insecure-plaintext-grpc).
    #[arg(long, env = "KEYMESH_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert (hot-reloaded).
    #[arg(long, env = "KEYMESH_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA bundle client certificates must chain to (hot-reloaded).
    #[arg(long, env = "KEYMESH_GRPC_TLS_CA")]
    pub grpc_tls_ca: Option<PathBuf>,
    /// Identities (SAN URI or DNS name, comma-separated) a client certificate
    /// must carry one of (default spiffe://keymesh/edge).
    #[arg(
        long,
        env = "KEYMESH_GRPC_ALLOWED_PEERS",
        value_delimiter = ',',
        default_value = EDGE_IDENTITY
    )]
    pub grpc_allowed_peers: Vec<String>,
    /// Serve gRPC in PLAINTEXT, without any caller authentication: anyone
    /// who reaches the port can use the HSM. Development only (default false).
    #[arg(long, env = "KEYMESH_INSECURE_PLAINTEXT_GRPC")]
    pub insecure_plaintext_grpc: bool,
}

impl GrpcTlsArgs {
    /// The server's mesh TLS; `Ok(None)` only with `--insecure-plaintext-grpc`.
    pub fn mesh_tls(self) -> Result<Option<MeshTls>, String> {
        let files = GrpcTlsFiles::from_parts(
            self.grpc_tls_cert,
            self.grpc_tls_key,
            self.grpc_tls_ca,
            ["--grpc-tls-cert", "--grpc-tls-key", "--grpc-tls-ca"],
        )?;
        let peers = AllowedPeers::parse(&self.grpc_allowed_peers)
            .map_err(|e| format!("--grpc-allowed-peers: {e}"))?;
        match (files, self.insecure_plaintext_grpc) {
            (Some(files), false) => Ok(Some(MeshTls { files, peers })),
            (None, true) => Ok(None),
            (Some(_), true) => Err(
                "--insecure-plaintext-grpc contradicts --grpc-tls-cert/-key/-ca: choose one"
                    .to_owned(),
            ),
            (None, false) => Err(
                "gRPC requires mutual TLS: set --grpc-tls-cert, --grpc-tls-key and --grpc-tls-ca \
                 (or, for development only, --insecure-plaintext-grpc)"
                    .to_owned(),
            ),
        }
    }
}

/// The start-up warning of a service running without mesh TLS. One place,
/// so every service says it the same way (operators grep for it).
pub fn warn_insecure_plaintext(service: &str) {
    tracing::warn!(
        service,
        "INSECURE: mesh gRPC runs in PLAINTEXT without peer authentication \
         (--insecure-plaintext-grpc / insecure_plaintext_grpc); anyone on the network \
         path can read, call or impersonate this hop"
    );
}
