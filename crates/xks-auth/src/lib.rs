//! Authentication and authorization for the AWS XKS proxy API: SigV4
//! verification of a request against the credentials of the key store it
//! addresses (spec §9), and the secondary-authorization policy over
//! `requestMetadata` ([`policy`], spec §11).
//!
//! The sibling of `keymesh-huawei-auth`, and like it free of any HTTP
//! framework and of the edge: the caller hands over the request head, the
//! body and a lookup from access key id to secret (the addressed key store's
//! credentials only), and gets back the access key id that signed or a
//! [`VerifyError`], which the edge's XKS wire table maps to
//! `AuthenticationFailedException` (or `InternalException`).
//!
//! aws-sigv4 is a signer, so [`Verifier::verify`] verifies by re-signing:
//! parse `Authorization`, check scope, freshness and that `host` and
//! `x-amz-date` are signed, look the secret up, sign a request built from
//! exactly the `SignedHeaders`, and compare signatures in constant time.
//! Failure messages are deliberately vague: they never say which part was
//! wrong in a way that helps a forger, and never echo a signature.

pub mod policy;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_smithy_runtime_api::client::identity::Identity;
use subtle::ConstantTimeEq;

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature is missing, malformed, stale, out of scope or wrong;
    /// the message is safe to send to the client.
    #[error("{0}")]
    Rejected(&'static str),
    /// The signing parameters could not be built: an invariant broke, not
    /// the client's fault.
    #[error("internal error")]
    Internal,
}

/// Verification settings from the edge config.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub max_skew: Duration,
    /// Accepted regions in the credential scope; empty = any.
    pub regions: Vec<String>,
}

/// The parsed `Authorization` header.
#[derive(Debug, PartialEq)]
struct AuthHeader<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_auth(value: &str) -> Option<AuthHeader<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let slot = match k {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return None,
        };
        if slot.replace(v).is_some() {
            return None;
        }
    }
    let mut scope = cred?.split('/');
    let (access_key_id, date, region, service, terminal) = (
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
    );
    if scope.next().is_some() || terminal != "aws4_request" || access_key_id.is_empty() {
        return None;
    }
    let signed_headers: Vec<&str> = signed?.split(';').collect();
    let sorted = signed_headers.windows(2).all(|w| w[0] < w[1]);
    let sig = sig?;
    let hex = sig.len() == 64
        && sig
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sorted
        || !hex
        || signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return None;
    }
    Some(AuthHeader {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature: sig,
    })
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, fmt).ok()?.assume_utc();
    Some(SystemTime::from(t))
}

/// The single value of a header that must appear exactly once.
fn single<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v
            .to_str()
            .map_err(|_| VerifyError::Rejected("malformed authentication headers")),
        _ => Err(VerifyError::Rejected(
            "missing or repeated authentication headers",
        )),
    }
}

impl Verifier {
    /// Verify `parts` + `body` against the credentials `secret_for` knows
    /// (access key id → secret access key; the addressed key store's only);
    /// returns the access key id that signed.
    pub fn verify<'k>(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        secret_for: impl FnOnce(&str) -> Option<&'k str>,
        now: SystemTime,
    ) -> Result<String, VerifyError> {
        const BAD: VerifyError = VerifyError::Rejected("the request signature is not valid");
        let auth = parse_auth(single(&parts.headers, "authorization")?)
            .ok_or(VerifyError::Rejected("malformed Authorization header"))?;
        let amz_date = single(&parts.headers, "x-amz-date")?;
        let signed_at =
            parse_amz_date(amz_date).ok_or(VerifyError::Rejected("malformed X-Amz-Date"))?;
        if auth.service != SERVICE
            || !amz_date.starts_with(auth.date)
            || auth.date.len() != 8
            || !auth.signed_headers.contains(&"host")
            || !auth.signed_headers.contains(&"x-amz-date")
        {
            return Err(VerifyError::Rejected(
                "the credential scope or signed headers are not acceptable",
            ));
        }
        if !self.regions.is_empty() && !self.regions.iter().any(|r| r == auth.region) {
            return Err(VerifyError::Rejected(
                "the credential scope region is not accepted",
            ));
        }
        let skew = match now.duration_since(signed_at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > self.max_skew {
            return Err(VerifyError::Rejected("the request timestamp is not recent"));
        }
        let secret = secret_for(auth.access_key_id).ok_or(BAD)?;

        // Host comes from `Host` (HTTP/1.1) or `:authority` (HTTP/2).
        let authority = parts.uri.authority().map(|a| a.as_str());
        let mut headers = Vec::with_capacity(auth.signed_headers.len());
        for &name in &auth.signed_headers {
            if name == "host" {
                let host = match parts.headers.get(http::header::HOST) {
                    Some(h) => h.to_str().map_err(|_| BAD)?,
                    None => authority.ok_or(BAD)?,
                };
                headers.push((name, host));
                continue;
            }
            let mut values = parts.headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                return Err(BAD);
            }
            for v in values {
                headers.push((name, v.to_str().map_err(|_| BAD)?));
            }
        }

        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let signable = SignableRequest::new(
            parts.method.as_str(),
            path,
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| BAD)?;
        let identity: Identity =
            Credentials::new(auth.access_key_id, secret, None, None, "keymesh-keystore").into();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = None;
        settings.percent_encoding_mode = PercentEncodingMode::Double;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(auth.region)
            .name(SERVICE)
            .time(signed_at)
            .settings(settings)
            .build()
            .map_err(|_| VerifyError::Internal)?
            .into();
        let out = sign(signable, &params).map_err(|_| BAD)?;
        if bool::from(out.signature().as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(auth.access_key_id.to_owned())
        } else {
            Err(BAD)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BODY: &str = r#"{"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsOperation":"KmsHealthCheck"}}"#;
    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=XKSDIGESTEXAMPLEKEY2345/20240515/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=06629912cc95d9c95be59e0bf6e57c6f9264d56466d2d0b6d2946708cef17789";

    /// The spec's example key store: one credential.
    fn ks(access_key_id: &str) -> Option<&'static str> {
        (access_key_id == "XKSDIGESTEXAMPLEKEY2345")
            .then_some("jFwF3w1r9GU1GwUr5hsYypKAi780VUCOv2GW/jKbMYs=")
    }

    fn request(auth: &str, date: &str) -> http::request::Parts {
        http::Request::post("/tenant-a/kms/xks/v1/health")
            .header("host", "xks.example.com")
            .header("x-amz-date", date)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn verifier() -> Verifier {
        Verifier {
            max_skew: Duration::from_secs(300),
            regions: vec![],
        }
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap()
    }

    #[test]
    fn spec_worked_example_verifies() {
        let parts = request(AUTH, "20240515T120000Z");
        let id = verifier()
            .verify(&parts, BODY.as_bytes(), ks, at("20240515T120400Z"))
            .unwrap();
        assert_eq!(id, "XKSDIGESTEXAMPLEKEY2345");
    }

    #[test]
    fn tampering_or_staleness_fails() {
        let v = verifier();
        let parts = request(AUTH, "20240515T120000Z");
        assert!(v.verify(&parts, b"{}", ks, at("20240515T120000Z")).is_err());
        assert!(
            v.verify(&parts, BODY.as_bytes(), ks, at("20240515T120501Z"))
                .is_err()
        );
        assert!(
            v.verify(&parts, BODY.as_bytes(), ks, at("20240515T115459Z"))
                .is_err()
        );
        // A key id the key store does not know: the same vague answer.
        assert_eq!(
            v.verify(&parts, BODY.as_bytes(), |_| None, at("20240515T120000Z")),
            Err(VerifyError::Rejected("the request signature is not valid"))
        );
        let wrong_region = AUTH.replace("us-east-1", "eu-west-1");
        let parts = request(&wrong_region, "20240515T120000Z");
        assert!(
            v.verify(&parts, BODY.as_bytes(), ks, at("20240515T120000Z"))
                .is_err()
        );
        let restricted = Verifier {
            regions: vec!["eu-west-1".into()],
            ..verifier()
        };
        let parts = request(AUTH, "20240515T120000Z");
        assert!(
            restricted
                .verify(&parts, BODY.as_bytes(), ks, at("20240515T120000Z"))
                .is_err()
        );
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert!(parse_auth("AWS4-HMAC-SHA256 Credential=A/20240515/r/s/aws4_request").is_none());
        assert!(parse_auth("Basic Zm9v").is_none());
        assert!(parse_auth(&AUTH.replace("host;x-amz-date", "x-amz-date;host")).is_none());
        assert!(parse_auth(&format!("{AUTH}, Signature=00")).is_none());
        assert!(parse_auth(AUTH).is_some());
    }
}
