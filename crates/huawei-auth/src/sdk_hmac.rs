//! `SDK-HMAC-SHA256` request signatures (API reference §3).
//!
//! The scheme resembles AWS SigV4 without credential scope or key
//! derivation: the HMAC key is the secret key itself, and the string to sign
//! is `SDK-HMAC-SHA256\n<X-Sdk-Date>\n<hex sha256(canonical request)>`. The
//! canonical request is rebuilt from the request *as received* (raw path,
//! raw query, raw body bytes), mirroring the official signer
//! (`huaweicloudsdkcore/signer/signer.py`) rule for rule, including its
//! quirks: the whole path is percent-decoded *before* it is split at `/`, so
//! an encoded `%2F` inside a path parameter counts as a separator.
//!
//! Verification is split in two so that the secret-key lookup can be async
//! (a database): [`Verifier::precheck`] does everything that needs no secret
//! (parse, required headers, clock window, canonical request) and returns a
//! [`Prepared`] naming the access key; [`Prepared::check_signature`] then
//! compares in constant time. [`Verifier::verify`] chains both for callers
//! with a synchronous lookup.
//!
//! HTTP/2 requests have no `Host` header (the client signed the `:authority`
//! value as `host`): call [`ensure_host`] before verifying.
//!
//! Errors never carry the expected signature.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::{digest, hmac};
use subtle::ConstantTimeEq as _;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use zeroize::Zeroizing;

/// The algorithm name that opens the `Authorization` value.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The signing-time header (lower case, as in `SignedHeaders`).
pub const DATE_HEADER: &str = "x-sdk-date";
/// Replaces the body hash when present (`UNSIGNED-PAYLOAD`); refused here.
pub const CONTENT_SHA256_HEADER: &str = "x-sdk-content-sha256";
/// The usual clock window around `X-Sdk-Date` (API reference §3.3 step 4).
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Python's `quote(s, safe='~')`: RFC 3986 unreserved characters stay,
/// every other byte becomes `%XX` with upper-case hex.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const DATE_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const DATE_LEN: usize = "20240101T120000Z".len();
const SIGNATURE_LEN: usize = 32;
/// Generous bounds: real AKs are 20 characters and clients sign 5-6 headers.
const MAX_ACCESS_KEY_LEN: usize = 128;
const MAX_SIGNED_HEADERS: usize = 64;

/// What is wrong with an `Authorization` value (API reference §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not an `SDK-HMAC-SHA256 ` authorization")]
    Scheme,
    #[error("expected `Access=<AK>, SignedHeaders=<h1;h2>, Signature=<hex>`")]
    Layout,
    #[error("the access key must be 1 to 128 characters of A-Z a-z 0-9 - _ .")]
    AccessKey,
    #[error("SignedHeaders must be lower-case header names, sorted, without duplicates")]
    SignedHeaders,
    #[error("the signature must be 64 lower-case hex digits")]
    Signature,
}

/// Why a request signature was refused (or could not be produced). Each
/// variant is one cause; none reveals the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error("malformed Authorization header")]
    Malformed(#[from] Malformed),
    /// `host` and `x-sdk-date` must be covered by the signature.
    #[error("header `{0}` must be signed")]
    NotSigned(&'static str),
    #[error("signed header `{0}` is missing")]
    MissingSignedHeader(String),
    /// A signed header (or `Authorization`) sent more than once is ambiguous.
    #[error("header `{0}` appears more than once")]
    DuplicateHeader(String),
    #[error("header `{0}` is not valid UTF-8")]
    InvalidHeaderValue(String),
    #[error("X-Sdk-Date is not of the form YYYYMMDDTHHMMSSZ")]
    BadDate,
    #[error("X-Sdk-Date is outside the accepted clock window")]
    StaleDate,
    /// The official clients never send `X-Sdk-Content-Sha256` for JSON
    /// bodies; accepting `UNSIGNED-PAYLOAD` would leave the body unsigned.
    #[error("X-Sdk-Content-Sha256 is not supported: the body must be signed")]
    UnsignedPayload,
    #[error("unknown access key")]
    UnknownAccessKey,
    #[error("signature mismatch")]
    SignatureMismatch,
}

/// A parsed `Authorization` value. `Debug` leaves the signature out.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key: &'a str,
    /// Lower case, strictly ascending.
    pub signed_headers: Vec<&'a str>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for Authorization<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("access_key", &self.access_key)
            .field("signed_headers", &self.signed_headers)
            .finish_non_exhaustive()
    }
}

fn valid_access_key(ak: &str) -> bool {
    (1..=MAX_ACCESS_KEY_LEN).contains(&ak.len())
        && ak
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An RFC 9110 token in lower case (what `SignedHeaders` may name).
fn valid_signed_header(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Parse `SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2;...>,
/// Signature=<64 lower-case hex>` with the exact separators of §3.1.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, SignError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(Malformed::Scheme)?;
    let rest = rest.strip_prefix("Access=").ok_or(Malformed::Layout)?;
    let (access_key, rest) = rest
        .split_once(", SignedHeaders=")
        .ok_or(Malformed::Layout)?;
    let (signed, signature_hex) = rest.split_once(", Signature=").ok_or(Malformed::Layout)?;
    if !valid_access_key(access_key) {
        return Err(Malformed::AccessKey.into());
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers.len() > MAX_SIGNED_HEADERS
        || !signed_headers.iter().all(|h| valid_signed_header(h))
        || !signed_headers.windows(2).all(|w| w[0] < w[1])
    {
        return Err(Malformed::SignedHeaders.into());
    }
    let mut signature = [0u8; SIGNATURE_LEN];
    if signature_hex.len() != 2 * SIGNATURE_LEN
        || !signature_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Malformed::Signature.into());
    }
    hex::decode_to_slice(signature_hex, &mut signature).map_err(|_| Malformed::Signature)?;
    Ok(Authorization {
        access_key,
        signed_headers,
        signature,
    })
}

/// The one value of header `name`, as UTF-8 (the official client sends the
/// UTF-8 bytes of its `str` values).
fn single_value<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, SignError> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| SignError::MissingSignedHeader(name.to_owned()))?;
    if values.next().is_some() {
        return Err(SignError::DuplicateHeader(name.to_owned()));
    }
    std::str::from_utf8(value.as_bytes())
        .map_err(|_| SignError::InvalidHeaderValue(name.to_owned()))
}

fn encode(s: &str) -> impl std::fmt::Display + '_ {
    utf8_percent_encode(s, UNRESERVED)
}

/// Like Python's `unquote`: malformed escapes stay literal, invalid UTF-8
/// becomes U+FFFD.
fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

/// Canonical URI: decode the whole path, split at `/`, encode each segment,
/// re-join, and append `/` unless already there.
fn push_canonical_uri(out: &mut String, raw_path: &str) {
    use std::fmt::Write as _;
    let start = out.len();
    for (i, segment) in decode(raw_path).split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{}", encode(segment));
    }
    if out.len() == start || !out.ends_with('/') {
        out.push('/');
    }
}

/// Canonical query: decode every `name=value` pair, sort by name then value,
/// re-encode. A pair without `=` has an empty value; `+` is a literal plus
/// (the clients encode spaces as `%20`).
fn push_canonical_query(out: &mut String, raw_query: Option<&str>) {
    use std::fmt::Write as _;
    let Some(query) = raw_query else { return };
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (decode(name), decode(value))
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        let _ = write!(out, "{}={}", encode(name), encode(value));
    }
}

/// Build the canonical request of API reference §3.2 step 4 from the request
/// as received. `signed_headers` are lower-case names in `SignedHeaders`
/// order; each must be present exactly once. Requests carrying
/// `X-Sdk-Content-Sha256` are refused ([`SignError::UnsignedPayload`]).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed_headers: &[&str],
    body: &[u8],
) -> Result<String, SignError> {
    if headers.contains_key(CONTENT_SHA256_HEADER) {
        return Err(SignError::UnsignedPayload);
    }
    let mut out = String::with_capacity(320 + raw_path.len() + raw_query.map_or(0, str::len));
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    push_canonical_uri(&mut out, raw_path);
    out.push('\n');
    push_canonical_query(&mut out, raw_query);
    out.push('\n');
    for name in signed_headers {
        let value = single_value(headers, name)?;
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(digest::digest(&digest::SHA256, body)));
    Ok(out)
}

/// `SDK-HMAC-SHA256\n<date>\n<hex sha256(canonical request)>`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    let hash = digest::digest(&digest::SHA256, canonical_request.as_bytes());
    format!("{ALGORITHM}\n{sdk_date}\n{}", hex::encode(hash))
}

fn hmac_sha256(secret_key: &str, string_to_sign: &str) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret_key.as_bytes());
    hmac::sign(&key, string_to_sign.as_bytes())
}

fn parse_date(value: &str) -> Result<OffsetDateTime, SignError> {
    // The length check keeps `time` from accepting a longer year.
    if value.len() != DATE_LEN {
        return Err(SignError::BadDate);
    }
    PrimitiveDateTime::parse(value, DATE_FORMAT)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| SignError::BadDate)
}

fn format_date(at: SystemTime) -> Result<String, SignError> {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| SignError::BadDate)?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| SignError::BadDate)?;
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(DATE_FORMAT).ok())
        .ok_or(SignError::BadDate)
}

/// HTTP/2 carries the authority in `:authority`, which the client signed as
/// `host`: insert it as a `host` header when the request has none.
pub fn ensure_host(headers: &mut HeaderMap, uri: &http::Uri) {
    if !headers.contains_key(HOST)
        && let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(HOST, value);
    }
}

/// The parts of a received request that the signature covers. Deliberately
/// not `Debug`: the headers include `Authorization`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path exactly as received, still percent-encoded, without query.
    pub raw_path: &'a str,
    /// The query string exactly as received, without `?`.
    pub raw_query: Option<&'a str>,
    /// Must hold `host` (see [`ensure_host`]).
    pub headers: &'a HeaderMap,
    /// The raw body bytes, never re-serialised.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
        body: &'a [u8],
    ) -> Self {
        Self {
            method: method.as_str(),
            raw_path: uri.path(),
            raw_query: uri.query(),
            headers,
            body,
        }
    }
}

/// A request whose signature passed every check that needs no secret.
#[derive(Clone)]
pub struct Prepared {
    access_key: String,
    string_to_sign: String,
    signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The access key whose secret [`Self::check_signature`] needs.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Recompute the signature with `secret_key` and compare in constant time.
    pub fn check_signature(&self, secret_key: &str) -> Result<Verified, SignError> {
        let expected = hmac_sha256(secret_key, &self.string_to_sign);
        if bool::from(expected.as_ref().ct_eq(&self.signature[..])) {
            Ok(Verified {
                access_key: self.access_key.clone(),
            })
        } else {
            Err(SignError::SignatureMismatch)
        }
    }
}

/// A request whose signature is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
}

/// Server-side verification (API reference §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    /// Largest accepted distance between `X-Sdk-Date` and the server clock,
    /// either way (default 15 minutes). The clients sign no nonce, so
    /// identical retries inside the window are legitimate.
    pub max_skew: Duration,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            max_skew: DEFAULT_MAX_SKEW,
        }
    }
}

impl Verifier {
    /// Every check that needs no secret, in order: parse `Authorization`;
    /// `host` and `x-sdk-date` signed and every signed header present;
    /// `X-Sdk-Date` well formed and within `max_skew` of `now`; canonical
    /// request rebuilt.
    pub fn precheck(&self, req: &Request<'_>, now: SystemTime) -> Result<Prepared, SignError> {
        let value = match single_value(req.headers, AUTHORIZATION.as_str()) {
            Err(SignError::MissingSignedHeader(_)) => return Err(SignError::MissingAuthorization),
            Err(SignError::InvalidHeaderValue(_)) => return Err(Malformed::Scheme.into()),
            other => other?,
        };
        let auth = parse_authorization(value)?;
        for required in ["host", DATE_HEADER] {
            if !auth.signed_headers.contains(&required) {
                return Err(SignError::NotSigned(required));
            }
        }
        if let Some(missing) = auth
            .signed_headers
            .iter()
            .find(|h| !req.headers.contains_key(**h))
        {
            return Err(SignError::MissingSignedHeader((*missing).to_owned()));
        }
        let sdk_date = single_value(req.headers, DATE_HEADER)?.trim();
        let signed_at = parse_date(sdk_date)?;
        let skew = (i128::from(crate::unix_seconds(now)) - i128::from(signed_at.unix_timestamp()))
            .unsigned_abs();
        if skew > u128::from(self.max_skew.as_secs()) {
            return Err(SignError::StaleDate);
        }
        let canonical = canonical_request(
            req.method,
            req.raw_path,
            req.raw_query,
            req.headers,
            &auth.signed_headers,
            req.body,
        )?;
        Ok(Prepared {
            access_key: auth.access_key.to_owned(),
            string_to_sign: string_to_sign(sdk_date, &canonical),
            signature: auth.signature,
        })
    }

    /// [`Self::precheck`], secret lookup (`None` = unknown access key), then
    /// [`Prepared::check_signature`].
    pub fn verify(
        &self,
        req: &Request<'_>,
        now: SystemTime,
        secret_for: impl FnOnce(&str) -> Option<Zeroizing<String>>,
    ) -> Result<Verified, SignError> {
        let prepared = self.precheck(req, now)?;
        let secret = secret_for(prepared.access_key()).ok_or(SignError::UnknownAccessKey)?;
        prepared.check_signature(&secret)
    }
}

/// Sign a request the way the official client does: set `X-Sdk-Date` (kept
/// when already present), then sign every header present whose name has no
/// `_`, and set `Authorization`. `headers` must already hold `host`.
#[allow(clippy::too_many_arguments)] // mirrors canonical_request + credentials + clock
pub fn sign(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &mut HeaderMap,
    body: &[u8],
    access_key: &str,
    secret_key: &str,
    date: SystemTime,
) -> Result<(), SignError> {
    if !valid_access_key(access_key) {
        return Err(Malformed::AccessKey.into());
    }
    headers.remove(AUTHORIZATION);
    if !headers.contains_key(DATE_HEADER) {
        let value = HeaderValue::from_str(&format_date(date)?).map_err(|_| SignError::BadDate)?;
        headers.insert(HeaderName::from_static(DATE_HEADER), value);
    }
    if !headers.contains_key(HOST) {
        return Err(SignError::MissingSignedHeader(HOST.as_str().to_owned()));
    }
    let sdk_date = single_value(headers, DATE_HEADER)?.trim().to_owned();
    parse_date(&sdk_date)?;
    let mut names: Vec<&str> = headers
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| !n.contains('_'))
        .collect();
    names.sort_unstable();
    let canonical = canonical_request(method, raw_path, raw_query, headers, &names, body)?;
    let signature = hex::encode(hmac_sha256(
        secret_key,
        &string_to_sign(&sdk_date, &canonical),
    ));
    let value = format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={signature}",
        names.join(";")
    );
    let value = HeaderValue::from_str(&value).map_err(|_| Malformed::AccessKey)?;
    headers.insert(AUTHORIZATION, value);
    Ok(())
}

/// The system random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RngError;

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Access keys: 20 upper-case alphanumerics, like Huawei's.
pub const ACCESS_KEY_LEN: usize = 20;
/// Secret keys: 40 alphanumerics (~238 bits), like Huawei's.
pub const SECRET_KEY_LEN: usize = 40;

/// Append `len` characters drawn uniformly from `alphabet`. Rejection
/// sampling (bytes at or above the largest multiple of the alphabet size are
/// dropped) keeps every character equally likely.
fn push_random(
    rng: &SystemRandom,
    out: &mut String,
    len: usize,
    alphabet: &[u8],
) -> Result<(), RngError> {
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut buf = Zeroizing::new([0u8; 64]);
    let target = out.len() + len;
    while out.len() < target {
        rng.fill(buf.as_mut()).map_err(|_| RngError)?;
        for &b in buf.iter() {
            let b = usize::from(b);
            if b < limit && out.len() < target {
                out.push(char::from(alphabet[b % n]));
            }
        }
    }
    Ok(())
}

/// A fresh AK/SK pair from the system CSPRNG.
pub fn generate_credentials() -> Result<(String, Zeroizing<String>), RngError> {
    let rng = SystemRandom::new();
    let mut access_key = String::with_capacity(ACCESS_KEY_LEN);
    push_random(&rng, &mut access_key, ACCESS_KEY_LEN, UPPER_ALNUM)?;
    // Pre-sized so that the secret is never reallocated (and left behind).
    let mut secret = Zeroizing::new(String::with_capacity(SECRET_KEY_LEN));
    push_random(&rng, &mut secret, SECRET_KEY_LEN, ALNUM)?;
    Ok((access_key, secret))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/sdk_hmac_vectors.json");
    const AK: &str = "AK_EXAMPLE";
    const SK: &str = "SK_EXAMPLE_SECRET";

    struct Vector {
        method: String,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        body: Vec<u8>,
        canonical_request: String,
        string_to_sign: String,
        authorization: String,
    }

    impl Vector {
        fn request(&self) -> Request<'_> {
            Request {
                method: &self.method,
                raw_path: &self.path,
                raw_query: self.query.as_deref(),
                headers: &self.headers,
                body: &self.body,
            }
        }
    }

    fn vectors() -> Vec<Vector> {
        let doc: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let list = doc["test_vectors"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        list.iter()
            .map(|v| {
                let target = v["request_target"].as_str().unwrap();
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                    None => (target.to_owned(), None),
                };
                let mut headers = HeaderMap::new();
                for (k, val) in v["headers"].as_object().unwrap() {
                    headers.insert(
                        HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
                    );
                }
                assert_eq!(v["ak"], AK);
                assert_eq!(v["sk"], SK);
                let authorization = v["authorization"].as_str().unwrap().to_owned();
                headers.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(&authorization).unwrap(),
                );
                Vector {
                    method: v["method"].as_str().unwrap().to_owned(),
                    path,
                    query,
                    headers,
                    body: v["body"].as_str().unwrap().as_bytes().to_vec(),
                    canonical_request: v["canonical_request"].as_str().unwrap().to_owned(),
                    string_to_sign: v["string_to_sign"].as_str().unwrap().to_owned(),
                    authorization,
                }
            })
            .collect()
    }

    /// 20240101T120000Z
    fn signing_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_110_400)
    }

    fn secret(ak: &str) -> Option<Zeroizing<String>> {
        (ak == AK).then(|| Zeroizing::new(SK.to_owned()))
    }

    fn verify(req: &Request<'_>, now: SystemTime) -> Result<Verified, SignError> {
        Verifier::default().verify(req, now, secret)
    }

    fn resign(v: &Vector, signed: &[&str], sk: &str) -> String {
        let canonical = canonical_request(
            &v.method,
            &v.path,
            v.query.as_deref(),
            &v.headers,
            signed,
            &v.body,
        )
        .unwrap();
        let sig = hex::encode(hmac_sha256(
            sk,
            &string_to_sign("20240101T120000Z", &canonical),
        ));
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders={}, Signature={sig}",
            signed.join(";")
        )
    }

    fn with_auth(v: &Vector, auth: &str) -> HeaderMap {
        let mut h = v.headers.clone();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn worked_examples_reproduce_exactly() {
        for v in vectors() {
            let auth = parse_authorization(&v.authorization).unwrap();
            assert_eq!(auth.access_key, AK);
            let canonical = canonical_request(
                &v.method,
                &v.path,
                v.query.as_deref(),
                &v.headers,
                &auth.signed_headers,
                &v.body,
            )
            .unwrap();
            assert_eq!(canonical, v.canonical_request);
            let sts = string_to_sign("20240101T120000Z", &canonical);
            assert_eq!(sts, v.string_to_sign);
            assert_eq!(hmac_sha256(SK, &sts).as_ref(), &auth.signature[..]);

            // The client-side signer produces the same header.
            let mut headers = v.headers.clone();
            headers.remove(AUTHORIZATION);
            sign(
                &v.method,
                &v.path,
                v.query.as_deref(),
                &mut headers,
                &v.body,
                AK,
                SK,
                signing_time() + Duration::from_secs(3600), // X-Sdk-Date is kept
            )
            .unwrap();
            assert_eq!(headers[AUTHORIZATION], v.authorization.as_str());
        }
    }

    #[test]
    fn worked_examples_verify_inside_the_window() {
        for v in vectors() {
            for offset in [0i64, 899, -899, 900, -900] {
                let now = if offset >= 0 {
                    signing_time() + Duration::from_secs(offset.unsigned_abs())
                } else {
                    signing_time() - Duration::from_secs(offset.unsigned_abs())
                };
                let ok = verify(&v.request(), now).unwrap();
                assert_eq!(ok.access_key, AK);
            }
        }
    }

    #[test]
    fn stale_dates_are_refused() {
        for v in vectors() {
            let later = signing_time() + Duration::from_secs(901);
            let earlier = signing_time() - Duration::from_secs(901);
            assert_eq!(verify(&v.request(), later), Err(SignError::StaleDate));
            assert_eq!(verify(&v.request(), earlier), Err(SignError::StaleDate));
            let strict = Verifier {
                max_skew: Duration::from_secs(60),
            };
            let r = strict.verify(
                &v.request(),
                signing_time() + Duration::from_secs(61),
                secret,
            );
            assert_eq!(r, Err(SignError::StaleDate));
        }
    }

    #[test]
    fn tampering_is_detected() {
        let now = signing_time();
        for v in vectors() {
            let mut r = v.request();
            let body = b"{\"key_id\": \"0d0466b0-e727-4d9c-b35d-f84bb474a37e\"}".to_vec();
            r.body = &body;
            assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));

            let mut r = v.request();
            let path = v.path.replace(
                "0123456789abcdef0123456789abcdef",
                "0123456789abcdef0123456789abcdee",
            );
            r.raw_path = &path;
            assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));

            let mut r = v.request();
            r.method = "PUT";
            assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));

            let mut r = v.request();
            r.raw_query = Some("limit=11&marker=my%20secret%2F1");
            assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));

            let mut headers = v.headers.clone();
            headers.insert("x-project-id", HeaderValue::from_static("other"));
            let mut r = v.request();
            r.headers = &headers;
            assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));

            let r = Verifier::default().verify(&v.request(), now, |_| {
                Some(Zeroizing::new("SK_EXAMPLE_SECRET2".to_owned()))
            });
            assert_eq!(r, Err(SignError::SignatureMismatch));

            let r = Verifier::default().verify(&v.request(), now, |_| None);
            assert_eq!(r, Err(SignError::UnknownAccessKey));
        }
        // Query order and encoding of the raw string do not matter; content does.
        let v = &vectors()[1];
        let mut r = v.request();
        r.raw_query = Some("marker=my%20secret%2f1&limit=10");
        assert!(verify(&r, now).is_ok());
        r.raw_query = None;
        assert_eq!(verify(&r, now), Err(SignError::SignatureMismatch));
    }

    #[test]
    fn required_headers_must_be_signed_and_present() {
        let v = &vectors()[0];
        let now = signing_time();
        let without_date = resign(
            v,
            &["content-type", "host", "user-agent", "x-project-id"],
            SK,
        );
        let h = with_auth(v, &without_date);
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(verify(&r, now), Err(SignError::NotSigned("x-sdk-date")));

        let without_host = resign(v, &["content-type", "x-sdk-date"], SK);
        let h = with_auth(v, &without_host);
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(verify(&r, now), Err(SignError::NotSigned("host")));

        // A minimal but complete signature is accepted.
        let minimal = resign(v, &["host", "x-sdk-date"], SK);
        let h = with_auth(v, &minimal);
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert!(verify(&r, now).is_ok());

        let mut h = v.headers.clone();
        h.remove("x-project-id");
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(
            verify(&r, now),
            Err(SignError::MissingSignedHeader("x-project-id".into()))
        );

        let mut h = v.headers.clone();
        h.append("x-project-id", HeaderValue::from_static("again"));
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(
            verify(&r, now),
            Err(SignError::DuplicateHeader("x-project-id".into()))
        );

        let mut h = v.headers.clone();
        h.remove(AUTHORIZATION);
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(verify(&r, now), Err(SignError::MissingAuthorization));

        let mut h = v.headers.clone();
        h.insert(
            CONTENT_SHA256_HEADER,
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(verify(&r, now), Err(SignError::UnsignedPayload));
    }

    #[test]
    fn bad_dates_are_refused() {
        let v = &vectors()[0];
        for bad in [
            "2024-01-01T12:00:00Z",
            "20240101T120000",
            "20241301T120000Z",
            "020240101T20000Z",
            "20240101t120000z",
        ] {
            let mut h = v.headers.clone();
            h.insert(DATE_HEADER, HeaderValue::from_str(bad).unwrap());
            let r = Request {
                headers: &h,
                ..v.request()
            };
            assert_eq!(verify(&r, signing_time()), Err(SignError::BadDate), "{bad}");
        }
    }

    #[test]
    fn malformed_authorization_values() {
        let good = &vectors()[0].authorization;
        assert!(parse_authorization(good).is_ok());
        let sig = "ec7ced32045ceb1a5115f05e240f7422f99b8d2a8ecfe290d4427ab4ebf62d40";
        let cases = [
            (String::new(), Malformed::Scheme),
            (
                good.replace("SDK-HMAC-SHA256 ", "SDK-HMAC-SM3 "),
                Malformed::Scheme,
            ),
            (
                good.replace("SDK-HMAC-SHA256 ", "sdk-hmac-sha256 "),
                Malformed::Scheme,
            ),
            (
                good.replace("SDK-HMAC-SHA256 ", "SDK-HMAC-SHA256  "),
                Malformed::Layout,
            ),
            (
                good.replace(", SignedHeaders", ",SignedHeaders"),
                Malformed::Layout,
            ),
            (good.replace(", Signature", " Signature"), Malformed::Layout),
            (good.replace("Access=", "Credential="), Malformed::Layout),
            (
                good.replace("Access=AK_EXAMPLE", "Access="),
                Malformed::AccessKey,
            ),
            (
                good.replace("AK_EXAMPLE", "AK EXAMPLE"),
                Malformed::AccessKey,
            ),
            (
                good.replace("content-type;host", "host;content-type"),
                Malformed::SignedHeaders,
            ),
            (
                good.replace("content-type;", "host;"),
                Malformed::SignedHeaders,
            ),
            (
                good.replace("content-type", "Content-Type"),
                Malformed::SignedHeaders,
            ),
            (good.replace("content-type;", ";"), Malformed::SignedHeaders),
            (good.replace(sig, &sig.to_uppercase()), Malformed::Signature),
            (good.replace(sig, &sig[..62]), Malformed::Signature),
            (format!("{good}0"), Malformed::Signature),
            (format!("{good}, Extra=1"), Malformed::Signature),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_authorization(&value),
                Err(SignError::Malformed(want)),
                "{value}"
            );
        }
        // A malformed header is reported as such by verify, too.
        let v = &vectors()[0];
        let h = with_auth(v, &good.replace(", Signature", " Signature"));
        let r = Request {
            headers: &h,
            ..v.request()
        };
        assert_eq!(
            verify(&r, signing_time()),
            Err(SignError::Malformed(Malformed::Layout))
        );
    }

    #[test]
    fn debug_and_errors_hide_the_signature() {
        let v = &vectors()[0];
        let auth = parse_authorization(&v.authorization).unwrap();
        assert!(!format!("{auth:?}").contains("ec7ced"));
        let p = Verifier::default()
            .precheck(&v.request(), signing_time())
            .unwrap();
        assert_eq!(p.access_key(), AK);
        assert!(!format!("{p:?}").contains("ec7ced"));
        let err = p.check_signature("wrong").unwrap_err();
        assert_eq!(err.to_string(), "signature mismatch");
        assert!(p.check_signature(SK).is_ok());
    }

    fn uri(path: &str) -> String {
        let mut s = String::new();
        push_canonical_uri(&mut s, path);
        s
    }

    fn query(q: Option<&str>) -> String {
        let mut s = String::new();
        push_canonical_query(&mut s, q);
        s
    }

    #[test]
    fn canonical_uri_follows_the_official_signer() {
        assert_eq!(uri("/"), "/");
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/v1.0/p/kms/describe-key"), "/v1.0/p/kms/describe-key/");
        assert_eq!(uri("/v1/p/secrets/"), "/v1/p/secrets/");
        // The whole path is decoded before splitting: %2F becomes a separator.
        assert_eq!(
            uri("/v1.0/p/kms/k/tags/a%20b%2Fc"),
            "/v1.0/p/kms/k/tags/a%20b/c/"
        );
        assert_eq!(uri("/a/%c3%a9~%7E%2d"), "/a/%C3%A9~~-/");
        assert_eq!(uri("/a/é"), "/a/%C3%A9/");
        assert_eq!(uri("/a/%zz"), "/a/%25zz/");
        assert_eq!(uri("/a/b+c"), "/a/b%2Bc/");
    }

    #[test]
    fn canonical_query_is_sorted_and_reencoded() {
        assert_eq!(query(None), "");
        assert_eq!(query(Some("")), "");
        assert_eq!(query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
        assert_eq!(query(Some("flag&x=")), "flag=&x=");
        assert_eq!(query(Some("x=a+b")), "x=a%2Bb");
        assert_eq!(query(Some("m=my%20secret%2f1")), "m=my%20secret%2F1");
        assert_eq!(query(Some("m=my secret/1")), "m=my%20secret%2F1");
        assert_eq!(query(Some("k%20=v&&k=v")), "k=v&k%20=v");
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:9443"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x_underscore", HeaderValue::from_static("not signed"));
        // Non-ASCII header values are signed as their UTF-8 bytes.
        h.insert(
            "user-agent",
            HeaderValue::from_bytes("agent é".as_bytes()).unwrap(),
        );
        let path = "/v1.0/p/kms/k/tags/a%20b%2Fc";
        let q = Some("limit=10&marker=x%20y");
        sign(
            "DELETE",
            path,
            q,
            &mut h,
            b"",
            "AK1",
            "secret",
            signing_time(),
        )
        .unwrap();
        assert_eq!(h[DATE_HEADER], "20240101T120000Z");
        let auth = h[AUTHORIZATION].to_str().unwrap().to_owned();
        let parsed = parse_authorization(&auth).unwrap();
        assert_eq!(
            parsed.signed_headers,
            ["content-type", "host", "user-agent", "x-sdk-date"]
        );
        let req = Request {
            method: "DELETE",
            raw_path: path,
            raw_query: q,
            headers: &h,
            body: b"",
        };
        let ok = Verifier::default()
            .verify(&req, signing_time(), |ak| {
                (ak == "AK1").then(|| Zeroizing::new("secret".to_owned()))
            })
            .unwrap();
        assert_eq!(ok.access_key, "AK1");

        let mut h = HeaderMap::new();
        assert_eq!(
            sign("GET", "/", None, &mut h, b"", "AK1", "s", signing_time()),
            Err(SignError::MissingSignedHeader("host".into()))
        );
        h.insert(HOST, HeaderValue::from_static("h"));
        assert_eq!(
            sign("GET", "/", None, &mut h, b"", "A K", "s", signing_time()),
            Err(SignError::Malformed(Malformed::AccessKey))
        );
    }

    #[test]
    fn ensure_host_uses_the_authority() {
        let u: http::Uri = "https://kms.example:8443/v1.0/p/kms/list-keys"
            .parse()
            .unwrap();
        let mut h = HeaderMap::new();
        ensure_host(&mut h, &u);
        assert_eq!(h[HOST], "kms.example:8443");
        h.insert(HOST, HeaderValue::from_static("other"));
        ensure_host(&mut h, &u);
        assert_eq!(h[HOST], "other");
        let mut h = HeaderMap::new();
        ensure_host(&mut h, &"/relative".parse().unwrap());
        assert!(h.is_empty());
    }

    #[test]
    fn generated_credentials_have_the_huawei_shape() {
        let (ak, sk) = generate_credentials().unwrap();
        assert_eq!(ak.len(), ACCESS_KEY_LEN);
        assert!(
            ak.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(sk.len(), SECRET_KEY_LEN);
        assert!(sk.bytes().all(|b| b.is_ascii_alphanumeric()));
        let (ak2, sk2) = generate_credentials().unwrap();
        assert_ne!(ak, ak2);
        assert_ne!(*sk, *sk2);
        assert!(valid_access_key(&ak));
    }
}
