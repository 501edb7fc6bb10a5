//! Transport: one kept-alive connection per client, HTTP/1.1 or HTTP/2, plain
//! TCP or TLS (rustls, ring provider) with an optional client certificate.
//!
//! HTTP/2 without TLS uses prior knowledge (h2c); with TLS the protocol is
//! chosen by ALPN (`h2` or `http/1.1` offered alone, so the test knows which
//! one it gets). On HTTP/1.1 the `Host` header carries the authority; on
//! HTTP/2 only `:authority` does, as KMS's HTTP/2 client sends it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::Error;
use crate::model::{
    DecryptRequest, EncryptRequest, ErrorBody, FromJson, GetKeyMetadataRequest, HealthRequest,
    Operation,
};
use crate::sign::{Credentials, SigningOptions, sign_request};

/// HTTP protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (h2c prior knowledge on plain TCP, ALPN `h2` on TLS).
    Http2,
}

/// TLS protocol versions to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
    /// Both (the server picks).
    #[default]
    Any,
}

/// TLS client settings.
#[derive(Clone)]
pub struct TlsConfig {
    /// PEM root CA(s) the server certificate must chain to.
    pub root_ca_pem: Vec<u8>,
    /// Optional client certificate chain and private key (PEM) for mTLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the server certificate against (DNS name or IP literal).
    pub server_name: String,
    /// Protocol versions to offer.
    pub versions: TlsVersion,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .field("versions", &self.versions)
            .field("client_identity", &self.client_identity.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// Trust `root_ca_pem`, verify the server as `server_name`.
    pub fn new(root_ca_pem: Vec<u8>, server_name: impl Into<String>) -> Self {
        Self {
            root_ca_pem,
            client_identity: None,
            server_name: server_name.into(),
            versions: TlsVersion::Any,
        }
    }

    /// Present this client certificate chain and key (PEM).
    #[must_use]
    pub fn with_client_identity(mut self, chain_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.client_identity = Some((chain_pem, key_pem));
        self
    }

    /// Offer only these protocol versions.
    #[must_use]
    pub fn with_versions(mut self, versions: TlsVersion) -> Self {
        self.versions = versions;
        self
    }

    fn build(
        &self,
        http: HttpVersion,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), Error> {
        let tls = |e: rustls::Error| Error::Tls(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.root_ca_pem) {
            let cert = cert.map_err(|e| Error::Config(format!("root CA PEM: {e}")))?;
            roots.add(cert).map_err(tls)?;
        }
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.versions {
            TlsVersion::Tls12 => &[&rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
            TlsVersion::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .map_err(tls)?
        .with_root_certificates(roots);
        let mut config = match &self.client_identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Config(format!("client chain PEM: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| Error::Config(format!("client key PEM: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(tls)?
            }
        };
        config.alpn_protocols = vec![match http {
            HttpVersion::Http1 => b"http/1.1".to_vec(),
            HttpVersion::Http2 => b"h2".to_vec(),
        }];
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| Error::Config(format!("server name: {e}")))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}

/// What a TLS handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLSv1_3`.
    pub protocol_version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// ALPN protocol, if any.
    pub alpn: Option<String>,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Proxy address to connect to.
    pub addr: SocketAddr,
    /// The authority sent as `Host` / `:authority` and signed (default `addr`).
    pub authority: String,
    /// `XksProxyUriPath`, e.g. `/demo/kms/xks/v1`.
    pub uri_path: String,
    /// SigV4 settings (credential, region, clock).
    pub signing: SigningOptions,
    /// Protocol.
    pub http: HttpVersion,
    /// TLS; `None` = plain TCP.
    pub tls: Option<TlsConfig>,
    /// Whole-request timeout (connect included).
    pub timeout: Duration,
}

impl ClientConfig {
    /// Plain HTTP/1.1 to `addr`, region `us-east-1`, 10 s timeout.
    pub fn plain(addr: SocketAddr, uri_path: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            addr,
            authority: addr.to_string(),
            uri_path: uri_path.into(),
            signing: SigningOptions::new(credentials, "us-east-1"),
            http: HttpVersion::Http1,
            tls: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A request under full control of the caller.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// HTTP method.
    pub method: Method,
    /// Path (and nothing else) as sent.
    pub path: String,
    /// Exact body bytes.
    pub body: Bytes,
    /// `Content-Type`; `None` = no header.
    pub content_type: Option<String>,
    /// Signing; `None` = unsigned.
    pub signing: Option<SigningOptions>,
    /// Headers added *after* signing (appended, so duplicates are possible).
    pub extra_headers: Vec<(String, String)>,
    /// Header names removed after signing.
    pub remove_headers: Vec<String>,
}

impl RawRequest {
    /// A signed `POST path` with a JSON body, signed with `signing`.
    pub fn post_json(
        path: impl Into<String>,
        body: impl Into<Bytes>,
        signing: SigningOptions,
    ) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: body.into(),
            content_type: Some("application/json".into()),
            signing: Some(signing),
            extra_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct XksResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// Protocol version of the response.
    pub version: http::Version,
}

impl XksResponse {
    /// Status as a number.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The `Content-Type` header value, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The XKS error body, if the body is one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        self.json().and_then(|v| ErrorBody::from_json(&v).ok())
    }

    /// `errorName`, if the body is an XKS error.
    pub fn error_name(&self) -> Option<String> {
        self.error_body().map(|e| e.error_name)
    }

    /// Decode a 200 response; any other status is [`Error::Status`].
    pub fn parse<T: FromJson>(&self) -> Result<T, Error> {
        if self.status != StatusCode::OK {
            return Err(Error::Status {
                status: self.status.as_u16(),
                body: String::from_utf8_lossy(&self.body).into_owned(),
            });
        }
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| Error::Malformed(format!("body is not JSON: {e}")))?;
        T::from_json(&v)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// An XKS client bound to one proxy and one key store.
pub struct XksClient {
    config: ClientConfig,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Mutex<Option<Sender>>,
    tls_info: std::sync::Mutex<Option<TlsInfo>>,
}

impl std::fmt::Debug for XksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksClient")
            .field("config", &self.config)
            .finish()
    }
}

impl XksClient {
    /// Validate `config` (TLS material included). Connects lazily.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let tls = match &config.tls {
            None => None,
            Some(t) => Some(t.build(config.http)?),
        };
        Ok(Self {
            config,
            tls,
            conn: Mutex::new(None),
            tls_info: std::sync::Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The default signing options (credential, region, clock).
    pub fn signing(&self) -> SigningOptions {
        self.config.signing.clone()
    }

    /// What the last TLS handshake negotiated.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.tls_info.lock().ok().and_then(|g| g.clone())
    }

    /// Drop the kept-alive connection; the next request opens a new one.
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }

    /// Open a connection now (TCP, TLS handshake, HTTP handshake).
    pub async fn connect(&self) -> Result<(), Error> {
        let sender = tokio::time::timeout(self.config.timeout, self.open())
            .await
            .map_err(|_| Error::Timeout(self.config.timeout))??;
        *self.conn.lock().await = Some(sender);
        Ok(())
    }

    async fn open(&self) -> Result<Sender, Error> {
        let tcp = TcpStream::connect(self.config.addr).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await?;
                let (_, conn) = stream.get_ref();
                let info = TlsInfo {
                    protocol_version: conn
                        .protocol_version()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default(),
                    cipher_suite: conn
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default(),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                };
                if let Ok(mut g) = self.tls_info.lock() {
                    *g = Some(info);
                }
                Box::new(stream)
            }
        };
        let io = TokioIo::new(io);
        Ok(match self.config.http {
            HttpVersion::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            HttpVersion::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        })
    }

    /// Build, sign and send `raw`, within the configured timeout.
    pub async fn send(&self, raw: RawRequest) -> Result<XksResponse, Error> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.send_inner(raw))
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    fn build(&self, raw: &RawRequest) -> Result<Request<Full<Bytes>>, Error> {
        let authority = self.config.authority.as_str();
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(ct) = &raw.content_type {
            headers.push(("content-type".into(), ct.clone()));
        }
        if let Some(signing) = &raw.signing {
            let signed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let sig = sign_request(
                signing,
                raw.method.as_str(),
                authority,
                &raw.path,
                &signed,
                &raw.body,
            )?;
            headers.extend(sig.headers);
        }
        let uri = match self.config.http {
            HttpVersion::Http1 => raw.path.clone(),
            HttpVersion::Http2 => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{authority}{}", raw.path)
            }
        };
        let mut req = Request::builder()
            .method(raw.method.clone())
            .uri(uri)
            .body(Full::new(raw.body.clone()))
            .map_err(|e| Error::Config(format!("request: {e}")))?;
        let map = req.headers_mut();
        if self.config.http == HttpVersion::Http1 {
            map.insert(HOST, header_value(authority)?);
        }
        for (n, v) in headers.iter().chain(raw.extra_headers.iter()) {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| Error::Config(format!("header name {n}: {e}")))?;
            map.append(name, header_value(v)?);
        }
        for n in &raw.remove_headers {
            map.remove(n.as_str());
        }
        Ok(req)
    }

    async fn send_inner(&self, raw: RawRequest) -> Result<XksResponse, Error> {
        // A kept-alive connection may have been closed by the server between
        // two requests; retry exactly once on a fresh connection in that case.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self.build(&raw)?;
            let (fut, reused) = {
                let mut guard = self.conn.lock().await;
                let (mut sender, reused) = match guard.take() {
                    Some(s) if !s.is_closed() => (s, true),
                    _ => (self.open().await?, false),
                };
                let fut = match &mut sender {
                    Sender::H1(s) => {
                        if s.ready().await.is_err() {
                            if attempt < 2 {
                                continue;
                            }
                            return Err(Error::Io(std::io::Error::other("connection closed")));
                        }
                        futures_boxed(s.send_request(req))
                    }
                    Sender::H2(s) => {
                        if s.ready().await.is_err() {
                            if attempt < 2 {
                                continue;
                            }
                            return Err(Error::Io(std::io::Error::other("connection closed")));
                        }
                        futures_boxed(s.send_request(req))
                    }
                };
                *guard = Some(sender);
                (fut, reused)
            };
            match fut.await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let body = body.collect().await?.to_bytes();
                    return Ok(XksResponse {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                        version: parts.version,
                    });
                }
                Err(e)
                    if reused
                        && attempt < 2
                        && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                {
                    *self.conn.lock().await = None;
                }
                Err(e) => {
                    *self.conn.lock().await = None;
                    return Err(e.into());
                }
            }
        }
    }

    /// A signed POST of `body` (exact bytes) to `op` on `key_id`.
    pub async fn post(
        &self,
        op: Operation,
        key_id: &str,
        body: impl Into<Bytes>,
    ) -> Result<XksResponse, Error> {
        let path = op.path(&self.config.uri_path, key_id);
        self.send(RawRequest::post_json(path, body, self.signing()))
            .await
    }

    /// A signed POST of a JSON value to `op` on `key_id`.
    pub async fn post_json(
        &self,
        op: Operation,
        key_id: &str,
        body: &Value,
    ) -> Result<XksResponse, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Config(e.to_string()))?;
        self.post(op, key_id, bytes).await
    }

    /// GetKeyMetadata.
    pub async fn get_key_metadata(
        &self,
        key_id: &str,
        req: &GetKeyMetadataRequest,
    ) -> Result<XksResponse, Error> {
        self.post_json(Operation::GetKeyMetadata, key_id, &req.to_json())
            .await
    }

    /// Encrypt.
    pub async fn encrypt(&self, key_id: &str, req: &EncryptRequest) -> Result<XksResponse, Error> {
        self.post_json(Operation::Encrypt, key_id, &req.to_json())
            .await
    }

    /// Decrypt.
    pub async fn decrypt(&self, key_id: &str, req: &DecryptRequest) -> Result<XksResponse, Error> {
        self.post_json(Operation::Decrypt, key_id, &req.to_json())
            .await
    }

    /// GetHealthStatus.
    pub async fn health(&self, req: &HealthRequest) -> Result<XksResponse, Error> {
        self.post_json(Operation::GetHealthStatus, "", &req.to_json())
            .await
    }
}

type RespFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
            + Send,
    >,
>;

fn futures_boxed(
    f: impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
    + Send
    + 'static,
) -> RespFuture {
    Box::pin(f)
}

fn header_value(v: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(v).map_err(|e| Error::Config(format!("header value: {e}")))
}
