//! A small client for the AWS KMS External Key Store (XKS) proxy API v1.
//!
//! It speaks to an XKS proxy the way AWS KMS does: JSON bodies built from
//! typed requests ([`model`]), signed with SigV4 (service `kms-xks-proxy`,
//! signed headers `content-type;host;x-amz-date`, see [`sign`]), sent over
//! HTTP/1.1 or HTTP/2, plain or TLS with an optional client certificate
//! ([`client`]). Every knob a conformance test needs is exposed: the signing
//! region and clock (to produce stale or skewed requests), the credentials,
//! raw bodies and header tampering after signing.
//!
//! The client never interprets an error status as a Rust error: a call that
//! reached the proxy returns an [`XksResponse`] with the status, headers and
//! body, and [`XksResponse::parse`] / [`XksResponse::error_body`] decode it.
//! Only transport failures (connect, TLS, timeout) are [`Error`]s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keymesh_xks_client::Error> {
//! use keymesh_xks_client::{ClientConfig, Credentials, XksClient, model::*};
//! let client = XksClient::new(ClientConfig::plain(
//!     "127.0.0.1:8000".parse().map_err(|_| keymesh_xks_client::Error::Config("addr".into()))?,
//!     "/demo/kms/xks/v1",
//!     Credentials::new("AKIDEXAMPLEAKIDEXAMPLE", "secret-secret-secret-secret-secret-secret-1234"),
//! ))?;
//! let enc = client
//!     .encrypt("my-key", &EncryptRequest::new(b"hello".to_vec()).with_aad(b"ctx".to_vec()))
//!     .await?
//!     .parse::<EncryptResponse>()?;
//! let dec = client
//!     .decrypt("my-key", &DecryptRequest::from_encrypt(&enc, Some(b"ctx".to_vec())))
//!     .await?
//!     .parse::<DecryptResponse>()?;
//! assert_eq!(dec.plaintext, b"hello");
//! # Ok(()) }
//! ```

pub mod client;
pub mod model;
pub mod sign;

pub use client::{
    ClientConfig, HttpVersion, RawRequest, TlsConfig, TlsInfo, TlsVersion, XksClient, XksResponse,
};
pub use sign::{Credentials, SigningOptions};

/// Failures that prevented a request from producing an HTTP response, or a
/// response from being decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid client configuration (bad PEM, bad server name, bad URI...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// SigV4 signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// TCP connect or I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration or handshake error.
    #[error("tls error: {0}")]
    Tls(String),
    /// HTTP protocol error (hyper).
    #[error("http error: {0}")]
    Http(#[from] hyper::Error),
    /// The request did not complete within the configured timeout.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The proxy answered with a non-200 status where a success was expected.
    #[error("unexpected status {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body, lossily decoded.
        body: String,
    },
    /// A 200 response whose body does not match the XKS response schema.
    #[error("malformed response: {0}")]
    Malformed(String),
}
