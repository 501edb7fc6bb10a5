//! SigV4 signing of XKS requests with the `aws-sigv4` crate.
//!
//! KMS signs `host` and `x-amz-date`; this client also signs `content-type`
//! (as `curl --aws-sigv4` does), so a proxy that builds its canonical request
//! from `SignedHeaders` must cope with more headers than the minimum.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::Error;

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";

/// A SigV4 credential as entered in KMS (`AccessKeyId`, `RawSecretAccessKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// 20–30 chars of `A-Z2-7`.
    pub access_key_id: String,
    secret_access_key: String,
}

impl Credentials {
    /// A credential pair.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// The secret, for callers that must hand it to another signer (e.g. curl).
    pub fn secret(&self) -> &str {
        &self.secret_access_key
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// How to sign one request.
#[derive(Debug, Clone)]
pub struct SigningOptions {
    /// Credential to sign with.
    pub credentials: Credentials,
    /// Region of the credential scope (the KMS Region calling the proxy).
    pub region: String,
    /// Signing time; `None` = now. Set it to sign stale or future requests.
    pub time: Option<SystemTime>,
}

impl SigningOptions {
    /// Sign with `credentials` in `region`, at the current time.
    pub fn new(credentials: Credentials, region: impl Into<String>) -> Self {
        Self {
            credentials,
            region: region.into(),
            time: None,
        }
    }

    /// The same options with the signing clock moved by `secs` (negative = past).
    #[must_use]
    pub fn skewed(mut self, secs: i64) -> Self {
        let base = self.time.unwrap_or_else(SystemTime::now);
        let delta = Duration::from_secs(secs.unsigned_abs());
        self.time = Some(if secs < 0 {
            base.checked_sub(delta).unwrap_or(base)
        } else {
            base.checked_add(delta).unwrap_or(base)
        });
        self
    }
}

/// The headers SigV4 adds to a request (`authorization`, `x-amz-date`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `(name, value)` pairs to add to the request.
    pub headers: Vec<(String, String)>,
    /// The hex signature alone.
    pub signature: String,
}

/// Sign `method path` with the given `host` and other `headers` (all of which
/// are signed) over the exact `body` bytes.
///
/// `path` is the request path as sent (already URI-encoded). Returns the
/// headers to add to the request.
pub fn sign_request(
    opts: &SigningOptions,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Signature, Error> {
    let identity = aws_credential_types::Credentials::new(
        opts.credentials.access_key_id.clone(),
        opts.credentials.secret_access_key.clone(),
        None,
        None,
        "keymesh-xks-client",
    )
    .into();
    // Default settings: double percent-encoding and path normalisation (the
    // SigV4 defaults for every service but S3), no x-amz-content-sha256 header.
    let settings = SigningSettings::default();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&opts.region)
        .name(SERVICE)
        .time(opts.time.unwrap_or_else(SystemTime::now))
        .settings(settings)
        .build()
        .map_err(|e| Error::Sign(e.to_string()))?
        .into();
    // The canonical request needs an absolute URI only for its path; the
    // `host` header we pass wins over the URI authority.
    let uri = format!("http://{host}{path}");
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
    all.push(("host", host));
    all.extend(headers.iter().copied());
    let signable = SignableRequest::new(method, uri, all.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| Error::Sign(e.to_string()))?;
    let (instructions, signature) = sign(signable, &params)
        .map_err(|e| Error::Sign(e.to_string()))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    Ok(Signature {
        headers: headers
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect(),
        signature,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// §9.3 of the XKS digest: the worked example must reproduce exactly.
    #[test]
    fn digest_worked_example_reproduces() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_774_400); // 2024-05-15T12:00:00Z
        let opts = SigningOptions {
            credentials: Credentials::new(
                "XKSDIGESTEXAMPLEKEY2345",
                "jFwF3w1r9GU1GwUr5hsYypKAi780VUCOv2GW/jKbMYs=",
            ),
            region: "us-east-1".into(),
            time: Some(time),
        };
        let body = br#"{"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsOperation":"KmsHealthCheck"}}"#;
        assert_eq!(body.len(), 107);
        let sig = sign_request(
            &opts,
            "POST",
            "xks.example.com",
            "/tenant-a/kms/xks/v1/health",
            &[],
            body,
        )
        .unwrap();
        assert_eq!(
            sig.signature,
            "06629912cc95d9c95be59e0bf6e57c6f9264d56466d2d0b6d2946708cef17789"
        );
        let auth = sig
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=XKSDIGESTEXAMPLEKEY2345/20240515/us-east-1/kms-xks-proxy/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=06629912cc95d9c95be59e0bf6e57c6f9264d56466d2d0b6d2946708cef17789"
        );
        let date = sig
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(date, "20240515T120000Z");
    }

    #[test]
    fn content_type_is_signed_when_given() {
        let opts = SigningOptions::new(Credentials::new("AKID", "secret"), "eu-west-1");
        let sig = sign_request(
            &opts,
            "POST",
            "127.0.0.1:8000",
            "/kms/xks/v1/health",
            &[("content-type", "application/json")],
            b"{}",
        )
        .unwrap();
        let auth = &sig
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/kms-xks-proxy/aws4_request"),
            "{auth}"
        );
    }

    #[test]
    fn skew_moves_the_clock() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut o = SigningOptions::new(Credentials::new("a", "b"), "r");
        o.time = Some(t0);
        assert_eq!(
            o.clone().skewed(-600).time,
            Some(t0 - Duration::from_secs(600))
        );
        assert_eq!(o.skewed(600).time, Some(t0 + Duration::from_secs(600)));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = Credentials::new("AKID", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
