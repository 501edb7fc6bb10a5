//! `X-Auth-Token`: a compact JWS (RFC 7515) signed with Ed25519 (`alg`
//! `EdDSA`, RFC 8037), carrying the caller's identity and project.
//!
//! Huawei's tokens come from IAM; ours are issued offline by
//! `keymeshctl auth-token issue` with a private key, and the edge only needs
//! the public key. Every refusal is a [`TokenError`] that maps one-to-one to
//! a KMS.03xx code (CSMS has a single code for all of them).
//!
//! A token names its signing key (`kid`, the RFC 7638 thumbprint of the
//! public key, so a public-key file needs no key ids of its own), its issuer
//! (`iss`), its project (`aud`) and its validity window (`nbf`, `exp`, and
//! `exp - iat` at most the verifier's maximum TTL). A [`TokenVerifier`]
//! holds every public key of one PEM file, so a signing key is rotated by
//! adding the new public key next to the old one, moving issuers to the new
//! private key, and removing the old public key once its tokens expired.
//! What the signature proves is only that the issuer vouched for the
//! claims: the edge still checks that the subject's account exists with at
//! least the token's role (revocation), see the edge's `huawei::auth`.
//!
//! Why no JWT crate: `jsonwebtoken` 10+ needs aws-lc-rs or the RustCrypto
//! stack, neither of which is in the workspace. `ring` (already used for TLS)
//! makes and checks the signatures; this module only frames them (base64url
//! and JSON), and accepts exactly one algorithm, so there is no
//! algorithm-confusion surface (`none`, HS256 with the public key, ...).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use crate::unix_seconds;

/// The request header (lower case).
pub const HEADER: &str = "x-auth-token";
const ALG: &str = "EdDSA";
/// The issuer `keymeshctl auth-token issue` names by default and the edge
/// expects by default.
pub const DEFAULT_ISSUER: &str = "keymesh";
/// Longest lifetime (`exp - iat`) the edge accepts by default: 24 h.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on `nbf` between the issuing host and the edge.
const NBF_LEEWAY_SECS: i64 = 60;
/// Tokens are ~300 bytes; anything this large is not ours.
const MAX_TOKEN_LEN: usize = 8 * 1024;
const PRIVATE_TAG: &str = "PRIVATE KEY";
const PUBLIC_TAG: &str = "PUBLIC KEY";
/// An Ed25519 SubjectPublicKeyInfo is this fixed DER prefix followed by the
/// 32-byte key (RFC 8410 §4: algorithm id-Ed25519 1.3.101.112, no
/// parameters), so no ASN.1 parser is needed to read or write one.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PUBLIC_KEY_LEN: usize = 32;

/// What the token's holder may do: Huawei's "KMS CMKFullAccess" or
/// "KMS ReadOnlyAccess".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "full")]
    Full,
    #[serde(rename = "readonly")]
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "readonly",
        }
    }
}

/// The token payload. Times are seconds since the Unix epoch (JWT
/// NumericDate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who vouches for the token (checked against the verifier's issuer).
    pub iss: String,
    /// The user id (the principal grants name).
    pub sub: String,
    /// The only project the token may act on; `None` is refused on every
    /// project-scoped path (KMS.0305).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    pub role: Role,
    pub iat: i64,
    /// Not valid before (refused earlier, with a minute of clock leeway).
    pub nbf: i64,
    pub exp: i64,
    /// Huawei's "OBT" marker: such tokens may not call services (KMS.0304).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub obt: bool,
}

impl Claims {
    /// Claims by [`DEFAULT_ISSUER`] issued and valid from `now`, for `ttl`.
    pub fn new(
        sub: impl Into<String>,
        project_id: Option<String>,
        role: Role,
        now: SystemTime,
        ttl: Duration,
    ) -> Self {
        let iat = unix_seconds(now);
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Self {
            iss: DEFAULT_ISSUER.to_owned(),
            sub: sub.into(),
            aud: project_id,
            role,
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl),
            obt: false,
        }
    }
}

/// What a verifier demands beyond a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The only accepted `iss`.
    pub issuer: String,
    /// Longest accepted `exp - iat`.
    pub max_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// Why a token was refused; [`TokenError::kms_code`] gives the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// KMS.0301 (403): no token, or an empty one.
    #[error("X-Auth-Token is missing")]
    Missing,
    /// KMS.0301 (403): not a compact JWS with our claims.
    #[error("X-Auth-Token is malformed")]
    Malformed,
    /// KMS.0302 (403): wrong algorithm or a signature our key did not make.
    #[error("X-Auth-Token signature is invalid")]
    BadSignature,
    /// KMS.0302 (403): no `kid`, or one naming no key the verifier holds
    /// (never issued, or removed by a rotation).
    #[error("X-Auth-Token names an unknown signing key")]
    UnknownKey,
    /// KMS.0302 (403): another issuer.
    #[error("X-Auth-Token has the wrong issuer")]
    WrongIssuer,
    /// KMS.0302 (403): `nbf` is in the future.
    #[error("X-Auth-Token is not valid yet")]
    NotYetValid,
    /// KMS.0302 (403): `exp - iat` exceeds the maximum TTL.
    #[error("X-Auth-Token lifetime exceeds the maximum")]
    TtlTooLong,
    /// KMS.0302 (403): the subject has no account in the project (deleted,
    /// or never created): the token is revoked.
    #[error("X-Auth-Token subject has no account")]
    Revoked,
    /// KMS.0303 (403).
    #[error("X-Auth-Token has expired")]
    Expired,
    /// KMS.0304 (403).
    #[error("X-Auth-Token carries the OBT tag")]
    Obt,
    /// KMS.0305 (403): the token names no project but the path does.
    #[error("X-Auth-Token names no project")]
    NoProject,
    /// KMS.0321 (403): the token's project is not the path's.
    #[error("X-Auth-Token project does not match the URL")]
    ProjectMismatch,
}

impl TokenError {
    /// The KMS error code (all 403, see the error table).
    pub fn kms_code(&self) -> &'static str {
        match self {
            Self::Missing | Self::Malformed => "KMS.0301",
            Self::BadSignature
            | Self::UnknownKey
            | Self::WrongIssuer
            | Self::NotYetValid
            | Self::TtlTooLong
            | Self::Revoked => "KMS.0302",
            Self::Expired => "KMS.0303",
            Self::Obt => "KMS.0304",
            Self::NoProject => "KMS.0305",
            Self::ProjectMismatch => "KMS.0321",
        }
    }

    /// The CSMS error code (400): CSMS has one code for every token problem.
    pub fn csms_code(&self) -> &'static str {
        "CSMS.0301"
    }
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a PEM document")]
    Pem(#[source] pem::PemError),
    #[error("expected a `{expected}` PEM block, found `{found}`")]
    PemTag {
        expected: &'static str,
        found: String,
    },
    #[error("not an Ed25519 key")]
    NotEd25519,
    #[error("no PEM block found")]
    NoKey,
    #[error("the system random number generator failed")]
    Rng,
    #[error("cannot encode the claims")]
    Json(#[source] serde_json::Error),
}

fn encode_pem(tag: &str, der: &[u8]) -> Zeroizing<String> {
    let block = pem::Pem::new(tag, der);
    let text = pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    block.into_contents().zeroize();
    Zeroizing::new(text)
}

fn decode_pem(text: &[u8], expected: &'static str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let block = pem::parse(text).map_err(KeyError::Pem)?;
    if block.tag() != expected {
        return Err(KeyError::PemTag {
            expected,
            found: block.tag().to_owned(),
        });
    }
    Ok(Zeroizing::new(block.into_contents()))
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })
}

/// The key id of an Ed25519 public key: its RFC 7638 JWK thumbprint
/// (base64url SHA-256 of the canonical `{"crv","kty","x"}` JSON), so the id
/// follows from the key and no file has to carry it.
pub fn kid(public_key: &[u8]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public_key)
    );
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes()))
}

/// A fresh Ed25519 key pair: (private key as PKCS#8 PEM, public key as SPKI
/// PEM). The private PEM is what [`issue`] takes; the public PEM is what
/// [`TokenVerifier`] loads. Both interoperate with OpenSSL.
pub fn keygen() -> Result<(Zeroizing<String>, String), KeyError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Rng)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::NotEd25519)?;
    let mut spki = SPKI_ED25519_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    let public = encode_pem(PUBLIC_TAG, &spki);
    Ok((encode_pem(PRIVATE_TAG, pkcs8.as_ref()), public.to_string()))
}

/// Issues tokens with one private key (parsed once).
pub struct TokenIssuer {
    pair: Ed25519KeyPair,
    kid: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// From a PKCS#8 `PRIVATE KEY` PEM (v1 as `openssl genpkey -algorithm
    /// ed25519` writes, or v2 as [`keygen`] writes).
    pub fn from_pem(private_pem: &str) -> Result<Self, KeyError> {
        let der = decode_pem(private_pem.as_bytes(), PRIVATE_TAG)?;
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| KeyError::NotEd25519)?;
        let kid = kid(pair.public_key().as_ref());
        Ok(Self { pair, kid })
    }

    /// The key id tokens of this issuer carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = read(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::NotEd25519)?;
        Self::from_pem(text)
    }

    /// `base64url(header).base64url(claims).base64url(signature)`.
    pub fn issue(&self, claims: &Claims) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": ALG, "typ": "JWT", "kid": self.kid});
        let header = serde_json::to_vec(&header).map_err(KeyError::Json)?;
        let payload = serde_json::to_vec(claims).map_err(KeyError::Json)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// Sign `claims` with the private key in `private_pem`.
pub fn issue(private_pem: &str, claims: &Claims) -> Result<String, KeyError> {
    TokenIssuer::from_pem(private_pem)?.issue(claims)
}

/// Checks tokens against a set of public keys, each known by its [`kid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenVerifier {
    keys: Vec<(String, [u8; PUBLIC_KEY_LEN])>,
    policy: Policy,
}

impl TokenVerifier {
    /// From one or more Ed25519 SubjectPublicKeyInfo `PUBLIC KEY` PEM
    /// blocks (a rotation holds the old and the new key), with the default
    /// [`Policy`].
    pub fn from_pem(public_pem: &str) -> Result<Self, KeyError> {
        Self::from_pem_bytes(public_pem.as_bytes())
    }

    /// [`Self::from_pem`] over raw file bytes.
    pub fn from_pem_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(bytes).map_err(KeyError::Pem)?;
        if blocks.is_empty() {
            return Err(KeyError::NoKey);
        }
        let mut keys: Vec<(String, [u8; PUBLIC_KEY_LEN])> = Vec::with_capacity(blocks.len());
        for block in blocks {
            if block.tag() != PUBLIC_TAG {
                return Err(KeyError::PemTag {
                    expected: PUBLIC_TAG,
                    found: block.tag().to_owned(),
                });
            }
            let key = block
                .contents()
                .strip_prefix(&SPKI_ED25519_PREFIX[..])
                .and_then(|k| <[u8; PUBLIC_KEY_LEN]>::try_from(k).ok())
                .ok_or(KeyError::NotEd25519)?;
            let id = kid(&key);
            if !keys.iter().any(|(k, _)| *k == id) {
                keys.push((id, key));
            }
        }
        Ok(Self {
            keys,
            policy: Policy::default(),
        })
    }

    /// From a public-key PEM file (one or more keys).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem_bytes(&read(path)?)
    }

    /// The same keys, checked against `policy`.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The key ids this verifier accepts, in file order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Check `token` (the header value; empty means missing) at `now`. With
    /// `path_project_id` (every project-scoped path) the token's `aud` must
    /// be that project. Checks run in code order: KMS.0301, 0302 (alg, kid,
    /// signature), 0301 (claims), 0302 (iss), 0303, 0302 (nbf, TTL), 0304,
    /// 0305, 0321. Whether the subject still has an account is the
    /// caller's check ([`TokenError::Revoked`]).
    pub fn verify(
        &self,
        token: &str,
        now: SystemTime,
        path_project_id: Option<&str>,
    ) -> Result<Claims, TokenError> {
        self.verify_with(&self.policy, token, now, path_project_id)
    }

    /// [`Self::verify`] under `policy` instead of the verifier's own (keys
    /// reloaded from a file, policy from configuration).
    pub fn verify_with(
        &self,
        policy: &Policy,
        token: &str,
        now: SystemTime,
        path_project_id: Option<&str>,
    ) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let jose: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if jose.contains_key("crit") {
            // RFC 7515 §4.1.11: extensions we do not understand must be refused.
            return Err(TokenError::Malformed);
        }
        if jose.get("alg").and_then(serde_json::Value::as_str) != Some(ALG) {
            return Err(TokenError::BadSignature);
        }
        let kid = jose.get("kid").and_then(serde_json::Value::as_str);
        let Some((_, public_key)) = self.keys.iter().find(|(k, _)| Some(k.as_str()) == kid) else {
            return Err(TokenError::UnknownKey);
        };
        let signature = decode(signature)?;
        let signing_input = &token[..header.len() + 1 + payload.len()];
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        if claims.iss != policy.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let now = unix_seconds(now);
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(NBF_LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        let max_ttl = i64::try_from(policy.max_ttl.as_secs()).unwrap_or(i64::MAX);
        // Both the stated lifetime and what is left of it: an `iat` set in
        // the future must not hide a long-lived token.
        if claims.exp.saturating_sub(claims.iat) > max_ttl
            || claims.exp.saturating_sub(now) > max_ttl
        {
            return Err(TokenError::TtlTooLong);
        }
        if claims.obt {
            return Err(TokenError::Obt);
        }
        if let Some(path_project) = path_project_id {
            match claims.aud.as_deref() {
                None => return Err(TokenError::NoProject),
                Some(p) if p != path_project => return Err(TokenError::ProjectMismatch),
                Some(_) => {}
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::time::UNIX_EPOCH;

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";

    /// Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1) and
    /// `openssl pkey -pubout`.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ/H0XsVSK7Ie1CViPIE5W/diFeOc9U6KWHOefV5GF54
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA1uJ3xKqAQY7Cb59BwUWwyzhqMEBQx1ZqQoAgtNd/DjE=
-----END PUBLIC KEY-----
";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_110_400)
    }

    fn claims() -> Claims {
        Claims::new(
            "user1",
            Some(PROJECT.to_owned()),
            Role::Full,
            t0(),
            Duration::from_secs(3600),
        )
    }

    fn keys() -> (TokenIssuer, TokenVerifier) {
        let (private, public) = keygen().unwrap();
        (
            TokenIssuer::from_pem(&private).unwrap(),
            TokenVerifier::from_pem(&public).unwrap(),
        )
    }

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn issued_tokens_verify() {
        let (issuer, verifier) = keys();
        let c = claims();
        let token = issuer.issue(&c).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verifier.verify(&token, t0(), Some(PROJECT)).unwrap(), c);
        // Surrounding whitespace is tolerated; account-level paths skip the project check.
        let padded = format!(" {token} ");
        assert_eq!(verifier.verify(&padded, t0(), None).unwrap(), c);
        let mut ro = claims();
        ro.role = Role::ReadOnly;
        ro.aud = None;
        let token = issuer.issue(&ro).unwrap();
        assert_eq!(
            verifier.verify(&token, t0(), None).unwrap().role,
            Role::ReadOnly
        );
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"iss": "keymesh", "sub": "user1", "role": "readonly", "iat": 1_704_110_400, "nbf": 1_704_110_400, "exp": 1_704_114_000})
        );
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": issuer.kid()})
        );
    }

    #[test]
    fn missing_and_malformed_are_kms_0301() {
        let (issuer, verifier) = keys();
        let token = issuer.issue(&claims()).unwrap();
        assert_eq!(
            verifier.verify("", t0(), Some(PROJECT)),
            Err(TokenError::Missing)
        );
        assert_eq!(
            verifier.verify("  ", t0(), Some(PROJECT)),
            Err(TokenError::Missing)
        );
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let cases = [
            format!("{h}.{p}"),
            format!("{token}.x"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}!"),
            format!("{}.{p}.{s}", b64(b"not json")),
            format!("{}.{p}.{s}", b64(br#"{"alg":"EdDSA","crit":["exp"]}"#)),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ];
        for bad in cases {
            let err = verifier.verify(&bad, t0(), Some(PROJECT)).unwrap_err();
            assert_eq!(err, TokenError::Malformed, "{bad}");
            assert_eq!(err.kms_code(), "KMS.0301");
        }
        // Validly signed but not our claims.
        let other = b64(br#"{"sub":"u"}"#);
        let input = format!("{h}.{other}");
        let sig = b64(issuer.pair.sign(input.as_bytes()).as_ref());
        assert_eq!(
            verifier.verify(&format!("{input}.{sig}"), t0(), None),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn bad_signatures_are_kms_0302() {
        let (issuer, verifier) = keys();
        let (_, other_verifier) = keys();
        let token = issuer.issue(&claims()).unwrap();
        let err = other_verifier
            .verify(&token, t0(), Some(PROJECT))
            .unwrap_err();
        assert_eq!(err, TokenError::UnknownKey);
        assert_eq!(err.kms_code(), "KMS.0302");
        // The other key under our kid: the signature does not verify.
        let (h, rest) = token.split_once('.').unwrap();
        let stolen_kid = TokenVerifier {
            keys: vec![(issuer.kid().to_owned(), other_verifier.keys[0].1)],
            policy: Policy::default(),
        };
        assert_eq!(
            stolen_kid.verify(&token, t0(), Some(PROJECT)),
            Err(TokenError::BadSignature)
        );
        // No kid at all.
        let (p, s) = rest.split_once('.').unwrap();
        let no_kid = b64(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let input = format!("{no_kid}.{p}");
        let sig = b64(issuer.pair.sign(input.as_bytes()).as_ref());
        assert_eq!(
            verifier.verify(&format!("{input}.{sig}"), t0(), Some(PROJECT)),
            Err(TokenError::UnknownKey)
        );
        let _ = (h, s);

        let (h, rest) = token.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let mut forged = claims();
        forged.sub = "admin".into();
        let forged_payload = b64(&serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{h}.{forged_payload}.{s}");
        assert_eq!(
            verifier.verify(&tampered, t0(), Some(PROJECT)),
            Err(TokenError::BadSignature)
        );
        // alg "none" and alg confusion are refused before any signature check.
        let payload = b64(&serde_json::to_vec(&claims()).unwrap());
        for header in [
            br#"{"alg":"none"}"#.as_slice(),
            br#"{"alg":"HS256","typ":"JWT"}"#,
            br#"{"typ":"JWT"}"#,
        ] {
            let t = format!("{}.{payload}.{s}", b64(header));
            assert_eq!(
                verifier.verify(&t, t0(), Some(PROJECT)),
                Err(TokenError::BadSignature)
            );
            let t = format!("{}.{payload}.", b64(header));
            assert_eq!(
                verifier.verify(&t, t0(), Some(PROJECT)),
                Err(TokenError::BadSignature)
            );
        }
    }

    #[test]
    fn expiry_obt_and_project_checks() {
        let (issuer, verifier) = keys();
        let token = issuer.issue(&claims()).unwrap();
        let just_before = t0() + Duration::from_secs(3599);
        assert!(verifier.verify(&token, just_before, Some(PROJECT)).is_ok());
        let at_exp = t0() + Duration::from_secs(3600);
        let err = verifier.verify(&token, at_exp, Some(PROJECT)).unwrap_err();
        assert_eq!((err, err.kms_code()), (TokenError::Expired, "KMS.0303"));

        let mut c = claims();
        c.obt = true;
        let err = verifier
            .verify(&issuer.issue(&c).unwrap(), t0(), Some(PROJECT))
            .unwrap_err();
        assert_eq!((err, err.kms_code()), (TokenError::Obt, "KMS.0304"));

        let mut c = claims();
        c.aud = None;
        let err = verifier
            .verify(&issuer.issue(&c).unwrap(), t0(), Some(PROJECT))
            .unwrap_err();
        assert_eq!((err, err.kms_code()), (TokenError::NoProject, "KMS.0305"));

        let err = verifier.verify(&token, t0(), Some("another")).unwrap_err();
        assert_eq!(
            (err, err.kms_code()),
            (TokenError::ProjectMismatch, "KMS.0321")
        );
        assert_eq!(err.csms_code(), "CSMS.0301");
    }

    #[test]
    fn keys_interoperate_with_openssl() {
        let issuer = TokenIssuer::from_pem(OPENSSL_PRIVATE).unwrap();
        let verifier = TokenVerifier::from_pem(OPENSSL_PUBLIC).unwrap();
        let token = issuer.issue(&claims()).unwrap();
        assert!(verifier.verify(&token, t0(), Some(PROJECT)).is_ok());
        // Our SPKI encoding of openssl's key is byte-for-byte openssl's.
        let mut spki = SPKI_ED25519_PREFIX.to_vec();
        spki.extend_from_slice(issuer.pair.public_key().as_ref());
        assert_eq!(*encode_pem(PUBLIC_TAG, &spki), OPENSSL_PUBLIC);

        let (private, public) = keygen().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(!private.contains('\r'));
        assert!(matches!(
            TokenVerifier::from_pem(&private),
            Err(KeyError::PemTag { .. })
        ));
        assert!(matches!(
            TokenIssuer::from_pem(&public),
            Err(KeyError::PemTag { .. })
        ));
        // No PEM block at all.
        assert!(matches!(
            TokenVerifier::from_pem("junk"),
            Err(KeyError::NoKey)
        ));
        assert!(matches!(
            TokenIssuer::from_pem("junk"),
            Err(KeyError::Pem(_))
        ));
        let rsa_like = encode_pem(PUBLIC_TAG, &[0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            TokenVerifier::from_pem(&rsa_like),
            Err(KeyError::NotEd25519)
        ));
    }

    #[test]
    fn keys_load_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keygen().unwrap();
        let (sk, pk) = (dir.path().join("sk.pem"), dir.path().join("pk.pem"));
        std::fs::write(&sk, private.as_bytes()).unwrap();
        std::fs::write(&pk, public.as_bytes()).unwrap();
        let token = TokenIssuer::load(&sk).unwrap().issue(&claims()).unwrap();
        let verifier = TokenVerifier::load(&pk).unwrap();
        assert!(verifier.verify(&token, t0(), Some(PROJECT)).is_ok());
        assert_eq!(issue(&private, &claims()).unwrap().split('.').count(), 3);
        let err = TokenVerifier::load(&dir.path().join("missing.pem")).unwrap_err();
        assert!(matches!(err, KeyError::Io { .. }));
        assert!(err.to_string().contains("missing.pem"));
    }
    fn issue_with(issuer: &TokenIssuer, edit: impl FnOnce(&mut Claims)) -> String {
        let mut c = claims();
        edit(&mut c);
        issuer.issue(&c).unwrap()
    }

    #[test]
    fn issuer_window_and_ttl_are_checked() {
        let (issuer, verifier) = keys();
        let check = |t: &str| verifier.verify(t, t0(), Some(PROJECT));
        let t = issue_with(&issuer, |c| c.iss = "someone-else".into());
        assert_eq!(check(&t), Err(TokenError::WrongIssuer));
        let custom = verifier.clone().with_policy(Policy {
            issuer: "someone-else".into(),
            ..Policy::default()
        });
        assert!(custom.verify(&t, t0(), Some(PROJECT)).is_ok());

        // nbf: a minute of leeway, no more.
        let t = issue_with(&issuer, |c| c.nbf = c.iat + 60);
        assert!(check(&t).is_ok());
        let t = issue_with(&issuer, |c| c.nbf = c.iat + 61);
        let err = check(&t).unwrap_err();
        assert_eq!((err, err.kms_code()), (TokenError::NotYetValid, "KMS.0302"));
        assert!(
            verifier
                .verify(&t, t0() + Duration::from_secs(61), Some(PROJECT))
                .is_ok()
        );

        // TTL: exactly the maximum passes, one second more does not.
        let day = 24 * 3600;
        let t = issue_with(&issuer, |c| c.exp = c.iat + day);
        assert!(check(&t).is_ok());
        let t = issue_with(&issuer, |c| c.exp = c.iat + day + 1);
        let err = check(&t).unwrap_err();
        assert_eq!((err, err.kms_code()), (TokenError::TtlTooLong, "KMS.0302"));
        // An iat in the future does not hide a long remaining lifetime.
        let t = issue_with(&issuer, |c| {
            c.iat += day;
            c.nbf = c.iat - day;
            c.exp = c.iat + 10;
        });
        assert_eq!(check(&t), Err(TokenError::TtlTooLong));
        let short = verifier.clone().with_policy(Policy {
            max_ttl: Duration::from_secs(600),
            ..Policy::default()
        });
        let t = issue_with(&issuer, |c| c.exp = c.iat + 601);
        assert_eq!(
            short.verify(&t, t0(), Some(PROJECT)),
            Err(TokenError::TtlTooLong)
        );
        // Tokens without the new claims (issued before kid/iss/nbf) are refused.
        let legacy = b64(br#"{"sub":"u","project_id":"p","role":"full","iat":1,"exp":2}"#);
        let header = b64(&serde_json::to_vec(
            &serde_json::json!({"alg":"EdDSA","kid":issuer.kid()}),
        )
        .unwrap());
        let input = format!("{header}.{legacy}");
        let sig = b64(issuer.pair.sign(input.as_bytes()).as_ref());
        assert_eq!(
            verifier.verify(&format!("{input}.{sig}"), t0(), None),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn two_keys_verify_during_a_rotation() {
        let (old_private, old_public) = keygen().unwrap();
        let (new_private, new_public) = keygen().unwrap();
        let old = TokenIssuer::from_pem(&old_private).unwrap();
        let new = TokenIssuer::from_pem(&new_private).unwrap();
        assert_ne!(old.kid(), new.kid());
        let both = TokenVerifier::from_pem(&format!("{old_public}{new_public}")).unwrap();
        assert_eq!(both.kids().collect::<Vec<_>>(), vec![old.kid(), new.kid()]);
        let (t_old, t_new) = (old.issue(&claims()).unwrap(), new.issue(&claims()).unwrap());
        assert!(both.verify(&t_old, t0(), Some(PROJECT)).is_ok());
        assert!(both.verify(&t_new, t0(), Some(PROJECT)).is_ok());
        let only_new = TokenVerifier::from_pem(&new_public).unwrap();
        assert_eq!(
            only_new.verify(&t_old, t0(), Some(PROJECT)),
            Err(TokenError::UnknownKey)
        );
        assert!(only_new.verify(&t_new, t0(), Some(PROJECT)).is_ok());
        // The same key twice is one key; a private key in the file is an error.
        let twice = TokenVerifier::from_pem(&format!("{new_public}{new_public}")).unwrap();
        assert_eq!(twice.kids().count(), 1);
        assert!(matches!(
            TokenVerifier::from_pem(&format!("{new_public}{}", *old_private)),
            Err(KeyError::PemTag { .. })
        ));
        assert!(matches!(TokenVerifier::from_pem(""), Err(KeyError::NoKey)));
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(kid(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
