//! The XKS proxy API v1: routing, request parsing and validation, and the
//! four operations, translated to crypto-worker gRPC calls.
//!
//! Check order (spec §8.2 recommendation): route (404) → method (405) →
//! body size (501) → SigV4 (401) → quota (429) → JSON (400) → key lookup
//! (404) → policy (403) → key state/usage and crypto (400/500/503).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use keymesh_proto::crypto::v1::{
    DecryptRequest, EncryptRequest, GetKeyMetadataRequest, HealthStatus, KeyStatus,
};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::aad;
use super::audit::Audit;
use super::error::XksError;
use crate::mesh::WorkerRpc;
use crate::state::AppState;
use keymesh_contracts::keystores::{Keystore, XKS_SUFFIX};
use keymesh_limiter_client::Decision;
use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;
use keymesh_xks_auth::policy::{Effect, Subject};

/// The four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    GetKeyMetadata,
    Encrypt,
    Decrypt,
    GetHealthStatus,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetKeyMetadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GetHealthStatus => "GetHealthStatus",
        }
    }
}

/// A matched XKS URI.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub uri_path: &'a str,
    pub operation: Operation,
    pub key_id: &'a str,
}

/// Split `[/<prefix>]/kms/xks/v1/{keys/<id>/<op>|health}`. Key ids cannot
/// contain '/', so the last `/kms/xks/v1/` is the boundary.
pub fn route(path: &str) -> Option<Route<'_>> {
    let marker = "/kms/xks/v1/";
    let at = path.rfind(marker)?;
    let uri_path = &path[..at + XKS_SUFFIX.len()];
    let rest = &path[at + marker.len()..];
    if rest == "health" {
        return Some(Route {
            uri_path,
            operation: Operation::GetHealthStatus,
            key_id: "",
        });
    }
    let (id, op) = rest.strip_prefix("keys/")?.split_once('/')?;
    let operation = match op {
        "metadata" => Operation::GetKeyMetadata,
        "encrypt" => Operation::Encrypt,
        "decrypt" => Operation::Decrypt,
        _ => return None,
    };
    if id.is_empty() {
        return None;
    }
    Some(Route {
        uri_path,
        operation,
        key_id: id,
    })
}

/// XKS-4: 1–128 chars of `A-Za-z0-9-._`.
fn valid_key_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata<'a> {
    #[serde(borrow)]
    pub aws_principal_arn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub aws_source_vpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub aws_source_vpce: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kms_key_arn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kms_operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kms_request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kms_via_service: Option<Cow<'a, str>>,
}

/// Every request body: unknown members are ignored (XKS-19).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow)]
    request_metadata: Option<RequestMetadata<'a>>,
    #[serde(borrow)]
    plaintext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ciphertext: Option<Cow<'a, str>>,
    #[serde(borrow)]
    encryption_algorithm: Option<Cow<'a, str>>,
    #[serde(borrow)]
    additional_authenticated_data: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ciphertext_data_integrity_value_algorithm: Option<Cow<'a, str>>,
    #[serde(borrow)]
    initialization_vector: Option<Cow<'a, str>>,
    #[serde(borrow)]
    authentication_tag: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ciphertext_metadata: Option<Cow<'a, str>>,
}

fn required<'a>(v: &'a Option<Cow<'a, str>>, what: &'static str) -> Result<&'a str, XksError> {
    v.as_deref().ok_or(XksError::Validation(what))
}

fn decode(v: &str, what: &'static str) -> Result<Zeroizing<Vec<u8>>, XksError> {
    B64.decode(v)
        .map(Zeroizing::new)
        .map_err(|_| XksError::Validation(what))
}

fn decode_opt(
    v: &Option<Cow<'_, str>>,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, XksError> {
    match v.as_deref() {
        Some(s) => decode(s, what),
        None => Ok(Zeroizing::new(Vec::new())),
    }
}

/// `encryptionAlgorithm` must be present and `AES_GCM` (XKS-27).
fn aes_gcm(b: &Body<'_>) -> Result<(), XksError> {
    match required(&b.encryption_algorithm, "encryptionAlgorithm is required")? {
        "AES_GCM" => Ok(()),
        _ => Err(XksError::Validation("encryptionAlgorithm must be AES_GCM")),
    }
}

/// The decoded request AAD, within this proxy's limit (501 above it).
fn request_aad(state: &AppState, b: &Body<'_>) -> Result<Zeroizing<Vec<u8>>, XksError> {
    let aad = decode_opt(
        &b.additional_authenticated_data,
        "additionalAuthenticatedData is not valid Base64",
    )?;
    if aad.len() > state.config.max_aad_bytes {
        return Err(XksError::Unsupported(
            "additionalAuthenticatedData exceeds this proxy's maximum size",
        ));
    }
    Ok(aad)
}

fn check_metadata(op: Operation, md: &RequestMetadata<'_>) -> Result<(), XksError> {
    let missing = |f: &Option<Cow<'_, str>>| f.is_none();
    if missing(&md.kms_request_id) || missing(&md.kms_operation) {
        return Err(XksError::Validation(
            "requestMetadata must carry kmsRequestId and kmsOperation",
        ));
    }
    let needs_principal = op != Operation::GetHealthStatus;
    if needs_principal && missing(&md.aws_principal_arn) {
        return Err(XksError::Validation(
            "requestMetadata.awsPrincipalArn is required",
        ));
    }
    if matches!(op, Operation::Encrypt | Operation::Decrypt) && missing(&md.kms_key_arn) {
        return Err(XksError::Validation(
            "requestMetadata.kmsKeyArn is required",
        ));
    }
    Ok(())
}

/// What the audit line says of the request's metadata (XKS-78).
fn record_metadata(audit: &mut Audit, md: &RequestMetadata<'_>) {
    // ARNs are at most 2048 chars; cap what one log line can carry.
    let owned = |v: &Option<Cow<'_, str>>| v.as_deref().map(|s| s.chars().take(2048).collect());
    audit.kms_request_id = owned(&md.kms_request_id);
    audit.kms_operation = owned(&md.kms_operation);
    audit.principal = owned(&md.aws_principal_arn);
    audit.kms_key_arn = owned(&md.kms_key_arn);
}

/// JSON 200 with the given members.
fn ok(body: serde_json::Value) -> Bytes {
    Bytes::from(body.to_string())
}

/// Run one authenticated XKS request. `audit` collects what the log line says.
pub async fn handle(
    state: &Arc<AppState>,
    keystore: &Keystore,
    route: &Route<'_>,
    body: &[u8],
    deadline: Instant,
    audit: &mut Audit,
) -> Result<Bytes, XksError> {
    let parsed: Body<'_> = serde_json::from_slice(body)
        .map_err(|_| XksError::Validation("the body is not a JSON object of the expected shape"))?;
    let md = parsed
        .request_metadata
        .as_ref()
        .ok_or(XksError::Validation("requestMetadata is required"))?;
    record_metadata(audit, md);
    check_metadata(route.operation, md)?;

    if route.operation == Operation::GetHealthStatus {
        return health(state, deadline).await;
    }

    if !valid_key_id(route.key_id) || !keystore.allows_key(route.key_id) {
        return Err(XksError::KeyNotFound);
    }
    authorize(state, route, md, audit)?;

    match route.operation {
        Operation::GetKeyMetadata => metadata(state, route.key_id, deadline).await,
        Operation::Encrypt => encrypt(state, route.key_id, &parsed, deadline).await,
        Operation::Decrypt => decrypt(state, route.key_id, &parsed, deadline).await,
        Operation::GetHealthStatus => Err(XksError::Internal),
    }
}

/// Quota for (key store, operation), through the limiter's lease cache.
pub async fn rate_limit(
    state: &AppState,
    uri_path: &str,
    operation: Operation,
    deadline: Instant,
) -> Result<(), XksError> {
    match state
        .limiter
        .check(uri_path, operation.as_str(), deadline)
        .await
    {
        Decision::Allow => Ok(()),
        Decision::Throttle { .. } => Err(XksError::Throttled),
        Decision::Unavailable => Err(XksError::DependencyTimeout),
    }
}

fn authorize(
    state: &AppState,
    route: &Route<'_>,
    md: &RequestMetadata<'_>,
    audit: &mut Audit,
) -> Result<(), XksError> {
    let Some(policy) = state.policy.as_ref() else {
        return Ok(());
    };
    let policy = policy.get();
    let s = |f: &Option<Cow<'_, str>>| f.as_deref().unwrap_or("").to_owned();
    let (principal, kms_op, key_arn, via, vpc, vpce) = (
        s(&md.aws_principal_arn),
        s(&md.kms_operation),
        s(&md.kms_key_arn),
        s(&md.kms_via_service),
        s(&md.aws_source_vpc),
        s(&md.aws_source_vpce),
    );
    let subject = Subject {
        operation: route.operation.as_str(),
        key_id: route.key_id,
        aws_principal_arn: &principal,
        kms_operation: &kms_op,
        kms_key_arn: &key_arn,
        kms_via_service: &via,
        aws_source_vpc: &vpc,
        aws_source_vpce: &vpce,
    };
    let decision = policy.evaluate(route.uri_path, &subject);
    if decision.effect == Effect::Deny {
        audit.denied_by = Some(decision.rule.to_owned());
        return Err(XksError::AccessDenied);
    }
    Ok(())
}

async fn metadata(state: &AppState, key_id: &str, deadline: Instant) -> Result<Bytes, XksError> {
    let msg = GetKeyMetadataRequest {
        key_id: key_id.to_owned(),
    };
    let resp = state
        .workers
        .call(
            WorkerRpc::XksGetKeyMetadata,
            deadline,
            msg,
            |ch, r| async move { CryptoWorkerClient::new(ch).get_key_metadata(r).await },
        )
        .await?;
    let status = match resp.status() {
        KeyStatus::Disabled => "DISABLED",
        _ => "ENABLED",
    };
    let mut usage = resp.key_usage;
    usage.truncate(10); // XKS-23
    Ok(ok(serde_json::json!({
        "keySpec": resp.key_spec,
        "keyUsage": usage,
        "keyStatus": status,
    })))
}

async fn encrypt(
    state: &AppState,
    key_id: &str,
    b: &Body<'_>,
    deadline: Instant,
) -> Result<Bytes, XksError> {
    let plaintext = decode(
        required(&b.plaintext, "plaintext is required")?,
        "plaintext is not valid Base64",
    )?;
    aes_gcm(b)?;
    let cdiv = match b.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some("SHA_256") => true,
        Some(_) => {
            return Err(XksError::Validation(
                "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
            ));
        }
    };
    let aad = request_aad(state, b)?;
    if plaintext.len() > state.config.max_plaintext_bytes {
        return Err(XksError::Unsupported(
            "plaintext exceeds this proxy's maximum size",
        ));
    }
    // keymesh returns no ciphertextMetadata, so the framed AAD ends in a zero length
    // and the CDIV input is AAD ‖ IV ‖ CT ‖ TAG (XKS-36).
    let msg = EncryptRequest {
        key_id: key_id.to_owned(),
        plaintext: Bytes::copy_from_slice(&plaintext),
        aad: aad::frame(&aad, &[]).into(),
        verify: cdiv,
        integrity_prefix: cdiv.then(|| Bytes::copy_from_slice(&aad)),
    };
    // Retried on another worker like every side-effect-free call
    // (WorkerRpc::retry): a second encrypt draws a fresh IV, and the first
    // answer, if any, was never seen.
    let resp = state
        .workers
        .call(WorkerRpc::XksEncrypt, deadline, msg, |ch, r| async move {
            CryptoWorkerClient::new(ch).encrypt(r).await
        })
        .await?;
    if resp.ciphertext.len() != plaintext.len()
        || resp.tag.len() != 16
        || !matches!(resp.iv.len(), 12 | 16)
    {
        tracing::error!("crypto-worker returned a malformed encrypt result");
        return Err(XksError::Internal);
    }
    let mut out = serde_json::json!({
        "ciphertext": B64.encode(&resp.ciphertext),
        "initializationVector": B64.encode(&resp.iv),
        "authenticationTag": B64.encode(&resp.tag),
    });
    if cdiv {
        if resp.integrity_value.len() != 32 {
            return Err(XksError::Internal);
        }
        out["ciphertextDataIntegrityValue"] = B64.encode(&resp.integrity_value).into();
    }
    Ok(ok(out))
}

async fn decrypt(
    state: &AppState,
    key_id: &str,
    b: &Body<'_>,
    deadline: Instant,
) -> Result<Bytes, XksError> {
    let ciphertext = decode(
        required(&b.ciphertext, "ciphertext is required")?,
        "ciphertext is not valid Base64",
    )?;
    aes_gcm(b)?;
    let iv = decode(
        required(&b.initialization_vector, "initializationVector is required")?,
        "initializationVector is not valid Base64",
    )?;
    let tag = decode(
        required(&b.authentication_tag, "authenticationTag is required")?,
        "authenticationTag is not valid Base64",
    )?;
    let aad = request_aad(state, b)?;
    let metadata = decode_opt(
        &b.ciphertext_metadata,
        "ciphertextMetadata is not valid Base64",
    )?;
    if metadata.len() > aad::MAX_METADATA {
        return Err(XksError::Validation("ciphertextMetadata exceeds 20 bytes"));
    }
    if ciphertext.len() > state.config.max_plaintext_bytes {
        return Err(XksError::Unsupported(
            "ciphertext exceeds this proxy's maximum size",
        ));
    }
    if !matches!(iv.len(), 12 | 16) {
        return Err(XksError::InvalidCiphertext(
            "initializationVector must be 12 or 16 bytes",
        ));
    }
    if tag.len() != 16 {
        return Err(XksError::InvalidCiphertext(
            "authenticationTag must be 16 bytes",
        ));
    }
    let msg = DecryptRequest {
        key_id: key_id.to_owned(),
        ciphertext: Bytes::copy_from_slice(&ciphertext),
        iv: Bytes::copy_from_slice(&iv),
        tag: Bytes::copy_from_slice(&tag),
        aad: aad::frame(&aad, &metadata).into(),
    };
    let resp = state
        .workers
        .call(WorkerRpc::XksDecrypt, deadline, msg, |ch, r| async move {
            CryptoWorkerClient::new(ch).decrypt(r).await
        })
        .await?;
    let plaintext = Zeroizing::new(B64.encode(&resp.plaintext));
    #[derive(serde::Serialize)]
    struct Decrypted<'a> {
        plaintext: &'a str,
    }
    crate::http::zeroizing::json(&Decrypted {
        plaintext: &plaintext,
    })
    .map_err(|_| XksError::Internal)
}

async fn health(state: &AppState, deadline: Instant) -> Result<Bytes, XksError> {
    let fleet = state.workers.fleet(deadline).await;
    let serving = fleet
        .iter()
        .filter(|m| matches!(m.status, HealthStatus::Active | HealthStatus::Degraded))
        .count();
    if fleet.is_empty() {
        // No worker known at all (e.g. a DNS name with no address): not a timeout.
        return Err(XksError::Internal);
    }
    if serving == 0 {
        // §15.7: a 200 must predict success, so no serving worker is an error.
        return Err(if fleet.iter().all(|m| m.timed_out) {
            XksError::DependencyTimeout
        } else {
            XksError::Internal
        });
    }
    let ekm_vendor = if state.config.ekm_vendor.is_empty() {
        fleet
            .iter()
            .find(|m| !m.vendor.is_empty())
            .map(|m| m.vendor.clone())
            .unwrap_or_else(|| "unknown".into())
    } else {
        state.config.ekm_vendor.clone()
    };
    let details: Vec<_> = fleet
        .iter()
        .take(10)
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "model": m.model,
                "healthStatus": match m.status {
                    HealthStatus::Active => "ACTIVE",
                    HealthStatus::Degraded => "DEGRADED",
                    _ => "UNAVAILABLE",
                },
            })
        })
        .collect();
    Ok(ok(serde_json::json!({
        "xksProxyFleetSize": serving,
        "xksProxyVendor": state.config.xks_proxy_vendor,
        "xksProxyModel": concat!("keymesh ", env!("CARGO_PKG_VERSION")),
        "ekmVendor": ekm_vendor,
        "ekmFleetDetails": details,
    })))
}

/// Verify SigV4 for `route` against its key store. Returns the access key id.
pub fn authenticate(
    state: &AppState,
    keystore: &Keystore,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<String, XksError> {
    state
        .verifier
        .verify(
            parts,
            body,
            |id| keystore.secret_for(id).map(|s| s.expose()),
            SystemTime::now(),
        )
        .map_err(XksError::from_signature)
}

/// Only `application/json` (parameters allowed) or no content type at all.
pub fn content_type_ok(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_none_or(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route("/tenant-a/kms/xks/v1/keys/k-1.x_y/encrypt");
        assert_eq!(
            r,
            Some(Route {
                uri_path: "/tenant-a/kms/xks/v1",
                operation: Operation::Encrypt,
                key_id: "k-1.x_y"
            })
        );
        assert_eq!(
            route("/kms/xks/v1/health").map(|r| r.uri_path),
            Some("/kms/xks/v1")
        );
        assert!(route("/kms/xks/v2/health").is_none());
        assert!(route("/kms/xks/v1/keys//encrypt").is_none());
        assert!(route("/kms/xks/v1/keys/a/sign").is_none());
        assert!(route("/kms/xks/v1/keys/a/encrypt/x").is_none());
        assert!(route("/kms/xks/v1/healthz").is_none());
    }

    #[test]
    fn key_id_grammar() {
        assert!(valid_key_id("Ab0-._"));
        assert!(valid_key_id(&"a".repeat(128)));
        assert!(!valid_key_id(&"a".repeat(129)));
        assert!(!valid_key_id("a%2Fb"));
        assert!(!valid_key_id(""));
    }

    #[test]
    fn unknown_members_are_tolerated_and_types_enforced() {
        let b: Result<Body<'_>, _> = serde_json::from_slice(
            br#"{"requestMetadata":{"kmsRequestId":"x","kmsOperation":"Y","newField":{"a":1}},"future":true}"#,
        );
        assert!(b.is_ok());
        let b: Result<Body<'_>, _> = serde_json::from_slice(br#"{"plaintext": 5}"#);
        assert!(b.is_err());
    }

    #[test]
    fn content_types() {
        let mut h = http::HeaderMap::new();
        assert!(content_type_ok(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(content_type_ok(&h));
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        assert!(!content_type_ok(&h));
    }
}
