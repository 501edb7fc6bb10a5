//! XKS request and response bodies (spec §4–§8).
//!
//! Requests are built from typed structs with raw bytes and serialised to the
//! wire JSON (Base64 members) by `to_json`; tests that need malformed bodies
//! take that `serde_json::Value` and mutate it. Responses are parsed from the
//! wire JSON with Base64 members decoded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Error;

/// Base64 (standard alphabet, padded) as the XKS API uses it.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decode standard padded Base64.
pub fn unb64(s: &str) -> Result<Vec<u8>, Error> {
    B64.decode(s)
        .map_err(|e| Error::Malformed(format!("bad base64: {e}")))
}

/// The four XKS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `POST .../keys/{id}/metadata`
    GetKeyMetadata,
    /// `POST .../keys/{id}/encrypt`
    Encrypt,
    /// `POST .../keys/{id}/decrypt`
    Decrypt,
    /// `POST .../health`
    GetHealthStatus,
}

impl Operation {
    /// All four, in spec order.
    pub const ALL: [Operation; 4] = [
        Operation::GetKeyMetadata,
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::GetHealthStatus,
    ];

    /// The API name used in the spec's error table.
    pub fn name(self) -> &'static str {
        match self {
            Operation::GetKeyMetadata => "GetKeyMetadata",
            Operation::Encrypt => "Encrypt",
            Operation::Decrypt => "Decrypt",
            Operation::GetHealthStatus => "GetHealthStatus",
        }
    }

    /// The request path below the key store's URI path (`key_id` is ignored
    /// for GetHealthStatus).
    pub fn path(self, uri_path: &str, key_id: &str) -> String {
        match self {
            Operation::GetKeyMetadata => format!("{uri_path}/keys/{key_id}/metadata"),
            Operation::Encrypt => format!("{uri_path}/keys/{key_id}/encrypt"),
            Operation::Decrypt => format!("{uri_path}/keys/{key_id}/decrypt"),
            Operation::GetHealthStatus => format!("{uri_path}/health"),
        }
    }
}

/// `requestMetadata` (§4.1). Absent members are omitted from the JSON.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// ARN of the KMS caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_principal_arn: Option<String>,
    /// VPC the KMS call came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    /// VPC endpoint the KMS call came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// ARN of the KMS key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// The KMS API that caused the call.
    pub kms_operation: String,
    /// Opaque request id (CloudTrail correlation key).
    pub kms_request_id: String,
    /// AWS service that called KMS for the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
}

/// An example principal in the spec's example account.
pub const EXAMPLE_PRINCIPAL: &str = "arn:aws:iam::111122223333:user/Alice";
/// An example KMS key ARN in the spec's example account.
pub const EXAMPLE_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:08x}-0000-4000-8000-{:012x}", (t as u64) & 0xffff_ffff, n)
}

impl RequestMetadata {
    /// Metadata as KMS sends it for `operation`, with a fresh request id.
    pub fn for_operation(operation: Operation) -> Self {
        match operation {
            Operation::GetKeyMetadata => Self {
                aws_principal_arn: Some(EXAMPLE_PRINCIPAL.into()),
                kms_operation: "CreateKey".into(),
                kms_request_id: request_id(),
                ..Self::default()
            },
            Operation::Encrypt => Self {
                aws_principal_arn: Some(EXAMPLE_PRINCIPAL.into()),
                kms_key_arn: Some(EXAMPLE_KEY_ARN.into()),
                kms_operation: "Encrypt".into(),
                kms_request_id: request_id(),
                ..Self::default()
            },
            Operation::Decrypt => Self {
                aws_principal_arn: Some(EXAMPLE_PRINCIPAL.into()),
                kms_key_arn: Some(EXAMPLE_KEY_ARN.into()),
                kms_operation: "Decrypt".into(),
                kms_request_id: request_id(),
                ..Self::default()
            },
            Operation::GetHealthStatus => Self {
                kms_operation: "KmsHealthCheck".into(),
                kms_request_id: request_id(),
                ..Self::default()
            },
        }
    }

    /// The same metadata with another caller ARN.
    #[must_use]
    pub fn with_principal(mut self, arn: impl Into<String>) -> Self {
        self.aws_principal_arn = Some(arn.into());
        self
    }

    /// As a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn body_with(metadata: &RequestMetadata, members: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert("requestMetadata".into(), metadata.to_json());
    for (k, v) in members {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// GetKeyMetadata request (§5.1).
#[derive(Debug, Clone)]
pub struct GetKeyMetadataRequest {
    /// Request metadata.
    pub metadata: RequestMetadata,
}

impl Default for GetKeyMetadataRequest {
    fn default() -> Self {
        Self {
            metadata: RequestMetadata::for_operation(Operation::GetKeyMetadata),
        }
    }
}

impl GetKeyMetadataRequest {
    /// Wire JSON.
    pub fn to_json(&self) -> Value {
        body_with(&self.metadata, vec![])
    }
}

/// GetHealthStatus request (§5.4).
#[derive(Debug, Clone)]
pub struct HealthRequest {
    /// Request metadata.
    pub metadata: RequestMetadata,
}

impl Default for HealthRequest {
    fn default() -> Self {
        Self {
            metadata: RequestMetadata::for_operation(Operation::GetHealthStatus),
        }
    }
}

impl HealthRequest {
    /// Wire JSON.
    pub fn to_json(&self) -> Value {
        body_with(&self.metadata, vec![])
    }
}

/// Encrypt request (§5.2).
#[derive(Clone)]
pub struct EncryptRequest {
    /// Request metadata.
    pub metadata: RequestMetadata,
    /// Plaintext bytes (Base64 on the wire).
    pub plaintext: Vec<u8>,
    /// `encryptionAlgorithm`, `AES_GCM` in v1.
    pub encryption_algorithm: String,
    /// Optional AAD bytes.
    pub aad: Option<Vec<u8>>,
    /// Optional `ciphertextDataIntegrityValueAlgorithm` (`SHA_256`).
    pub cdiv_algorithm: Option<String>,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("metadata", &self.metadata)
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .field("aad", &self.aad.as_ref().map(Vec::len))
            .field("cdiv_algorithm", &self.cdiv_algorithm)
            .finish()
    }
}

impl EncryptRequest {
    /// Encrypt `plaintext` with AES_GCM, no AAD, no CDIV.
    pub fn new(plaintext: Vec<u8>) -> Self {
        Self {
            metadata: RequestMetadata::for_operation(Operation::Encrypt),
            plaintext,
            encryption_algorithm: "AES_GCM".into(),
            aad: None,
            cdiv_algorithm: None,
        }
    }

    /// With AAD.
    #[must_use]
    pub fn with_aad(mut self, aad: Vec<u8>) -> Self {
        self.aad = Some(aad);
        self
    }

    /// Ask for a `SHA_256` ciphertext data integrity value.
    #[must_use]
    pub fn with_cdiv(mut self) -> Self {
        self.cdiv_algorithm = Some("SHA_256".into());
        self
    }

    /// Wire JSON.
    pub fn to_json(&self) -> Value {
        let mut members = vec![
            ("plaintext", Value::String(b64(&self.plaintext))),
            (
                "encryptionAlgorithm",
                Value::String(self.encryption_algorithm.clone()),
            ),
        ];
        if let Some(aad) = &self.aad {
            members.push(("additionalAuthenticatedData", Value::String(b64(aad))));
        }
        if let Some(alg) = &self.cdiv_algorithm {
            members.push((
                "ciphertextDataIntegrityValueAlgorithm",
                Value::String(alg.clone()),
            ));
        }
        body_with(&self.metadata, members)
    }
}

/// Decrypt request (§5.3).
#[derive(Debug, Clone)]
pub struct DecryptRequest {
    /// Request metadata.
    pub metadata: RequestMetadata,
    /// Ciphertext bytes (without tag).
    pub ciphertext: Vec<u8>,
    /// `encryptionAlgorithm`, `AES_GCM` in v1.
    pub encryption_algorithm: String,
    /// IV from Encrypt.
    pub iv: Vec<u8>,
    /// 16-byte tag from Encrypt.
    pub tag: Vec<u8>,
    /// AAD given to Encrypt.
    pub aad: Option<Vec<u8>>,
    /// `ciphertextMetadata` returned by Encrypt.
    pub ciphertext_metadata: Option<Vec<u8>>,
}

impl DecryptRequest {
    /// The Decrypt request that undoes `enc`, given the AAD used to encrypt.
    pub fn from_encrypt(enc: &EncryptResponse, aad: Option<Vec<u8>>) -> Self {
        Self {
            metadata: RequestMetadata::for_operation(Operation::Decrypt),
            ciphertext: enc.ciphertext.clone(),
            encryption_algorithm: "AES_GCM".into(),
            iv: enc.iv.clone(),
            tag: enc.tag.clone(),
            aad,
            ciphertext_metadata: enc.ciphertext_metadata.clone(),
        }
    }

    /// Wire JSON.
    pub fn to_json(&self) -> Value {
        let mut members = vec![
            ("ciphertext", Value::String(b64(&self.ciphertext))),
            (
                "encryptionAlgorithm",
                Value::String(self.encryption_algorithm.clone()),
            ),
            ("initializationVector", Value::String(b64(&self.iv))),
            ("authenticationTag", Value::String(b64(&self.tag))),
        ];
        if let Some(aad) = &self.aad {
            members.push(("additionalAuthenticatedData", Value::String(b64(aad))));
        }
        if let Some(cm) = &self.ciphertext_metadata {
            members.push(("ciphertextMetadata", Value::String(b64(cm))));
        }
        body_with(&self.metadata, members)
    }
}

/// Decoding of a 200 response body.
pub trait FromJson: Sized {
    /// Parse and validate the wire JSON.
    fn from_json(v: &Value) -> Result<Self, Error>;
}

fn str_member<'a>(v: &'a Value, name: &str) -> Result<&'a str, Error> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Malformed(format!("missing string member {name}")))
}

fn opt_b64_member(v: &Value, name: &str) -> Result<Option<Vec<u8>>, Error> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => unb64(s).map(Some),
        Some(_) => Err(Error::Malformed(format!("{name} is not a string"))),
    }
}

/// Encrypt response (§5.2), Base64 members decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptResponse {
    /// Ciphertext, as long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// 12- or 16-byte IV.
    pub iv: Vec<u8>,
    /// 16-byte GCM tag.
    pub tag: Vec<u8>,
    /// Optional vendor metadata (≤ 20 bytes).
    pub ciphertext_metadata: Option<Vec<u8>>,
    /// CDIV (32-byte SHA-256) when requested.
    pub cdiv: Option<Vec<u8>>,
}

impl FromJson for EncryptResponse {
    fn from_json(v: &Value) -> Result<Self, Error> {
        Ok(Self {
            ciphertext: unb64(str_member(v, "ciphertext")?)?,
            iv: unb64(str_member(v, "initializationVector")?)?,
            tag: unb64(str_member(v, "authenticationTag")?)?,
            ciphertext_metadata: opt_b64_member(v, "ciphertextMetadata")?,
            cdiv: opt_b64_member(v, "ciphertextDataIntegrityValue")?,
        })
    }
}

/// Decrypt response (§5.3).
#[derive(Clone, PartialEq, Eq)]
pub struct DecryptResponse {
    /// The recovered plaintext.
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for DecryptResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecryptResponse(<{} bytes>)", self.plaintext.len())
    }
}

impl FromJson for DecryptResponse {
    fn from_json(v: &Value) -> Result<Self, Error> {
        Ok(Self {
            plaintext: unb64(str_member(v, "plaintext")?)?,
        })
    }
}

/// GetKeyMetadata response (§5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// `AES_256` for the keys XKS can use.
    pub key_spec: String,
    /// Upper-case usages, e.g. `ENCRYPT`, `DECRYPT`.
    pub key_usage: Vec<String>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: String,
}

impl FromJson for KeyMetadata {
    fn from_json(v: &Value) -> Result<Self, Error> {
        let usage = v
            .get("keyUsage")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Malformed("missing array member keyUsage".into()))?
            .iter()
            .map(|u| {
                u.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::Malformed("keyUsage entry is not a string".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            key_spec: str_member(v, "keySpec")?.to_owned(),
            key_usage: usage,
            key_status: str_member(v, "keyStatus")?.to_owned(),
        })
    }
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkmDetail {
    /// Unique within the cluster.
    pub id: String,
    /// Product / hardware description.
    pub model: String,
    /// `ACTIVE`, `DEGRADED` or `UNAVAILABLE`.
    pub health_status: String,
}

/// GetHealthStatus response (§5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// Number of proxy instances (> 0).
    pub fleet_size: u64,
    /// Proxy vendor.
    pub proxy_vendor: String,
    /// Proxy product and version.
    pub proxy_model: String,
    /// Key manager vendor.
    pub ekm_vendor: String,
    /// 1–10 key managers.
    pub ekm_fleet_details: Vec<EkmDetail>,
}

impl FromJson for HealthStatus {
    fn from_json(v: &Value) -> Result<Self, Error> {
        let details = v
            .get("ekmFleetDetails")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Malformed("missing array member ekmFleetDetails".into()))?
            .iter()
            .map(|d| {
                Ok(EkmDetail {
                    id: str_member(d, "id")?.to_owned(),
                    model: str_member(d, "model")?.to_owned(),
                    health_status: str_member(d, "healthStatus")?.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            fleet_size: v
                .get("xksProxyFleetSize")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Error::Malformed("xksProxyFleetSize is not an unsigned integer".into())
                })?,
            proxy_vendor: str_member(v, "xksProxyVendor")?.to_owned(),
            proxy_model: str_member(v, "xksProxyModel")?.to_owned(),
            ekm_vendor: str_member(v, "ekmVendor")?.to_owned(),
            ekm_fleet_details: details,
        })
    }
}

/// An XKS error body (§8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// `errorName` from the error table.
    pub error_name: String,
    /// Optional `errorMessage`.
    pub error_message: Option<String>,
}

impl FromJson for ErrorBody {
    fn from_json(v: &Value) -> Result<Self, Error> {
        let error_message = match v.get("errorMessage") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::Malformed("errorMessage is not a string".into())),
        };
        Ok(Self {
            error_name: str_member(v, "errorName")?.to_owned(),
            error_message,
        })
    }
}

/// CDIV (§7): SHA-256 over AAD ‖ CM ‖ IV ‖ CT ‖ TAG, absent members empty.
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [aad, metadata, iv, ciphertext, tag] {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The §6 framed AAD: u16be(len AAD) ‖ AAD ‖ u8(len CM) ‖ CM.
///
/// Returns `None` when a length does not fit its field.
pub fn frame_aad(aad: &[u8], metadata: &[u8]) -> Option<Vec<u8>> {
    let a = u16::try_from(aad.len()).ok()?;
    let c = u8::try_from(metadata.len()).ok()?;
    let mut v = Vec::with_capacity(3 + aad.len() + metadata.len());
    v.extend_from_slice(&a.to_be_bytes());
    v.extend_from_slice(aad);
    v.push(c);
    v.extend_from_slice(metadata);
    Some(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn cdiv_digest_vectors() {
        // §7.3 (a)
        let d = cdiv(
            b"tenant=blue;app=ledger",
            b"kv=7",
            &unb64("AAECAwQFBgcICQoL").unwrap(),
            &unb64("D2e6d6rFmlDeYA==").unwrap(),
            &unb64("xFDqNpJZJtrAIIz8JcT7Aw==").unwrap(),
        );
        assert_eq!(
            hex(&d),
            "9a8e808ed6504b817c35b17e3a83f80d91aac8330481d6748aec0b6e59c8dcc8"
        );
        assert_eq!(b64(&d), "mo6AjtZQS4F8NbF+OoP4DZGqyDMEgdZ0iuwLblnI3Mg=");
        // §7.3 (b)
        let d = cdiv(
            b"",
            b"",
            &unb64("AAECAwQFBgcICQoL").unwrap(),
            &unb64("D2e6d6rFmlDeYA==").unwrap(),
            &unb64("mJhlsXlHTS24iNH/Fpd19w==").unwrap(),
        );
        assert_eq!(b64(&d), "rslVGqgZ/ACtfz7wQit70KF506kX4PSRL73fQtcqyug=");
        // §7.3 (c), the spec's own example
        let d = cdiv(
            b"project=nile,department=marketing",
            &unb64("a2V5X3ZlcnNpb249MQ==").unwrap(),
            &unb64("HMrlRw85cAJUd5Ax").unwrap(),
            &unb64("ghxkK1txeDNn3q8Y").unwrap(),
            &unb64("vBxN2ncH1oEkR8WVXpmyYQ==").unwrap(),
        );
        assert_eq!(b64(&d), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
    }

    #[test]
    fn aad_framing_digest_vectors() {
        let f = frame_aad(b"tenant=blue;app=ledger", b"kv=7").unwrap();
        assert_eq!(f.len(), 29);
        assert_eq!(&f[..2], &[0x00, 0x16]);
        assert_eq!(f[24], 4);
        assert_eq!(frame_aad(b"", b"kv=7").unwrap(), b"\x00\x00\x04kv=7");
        assert_eq!(frame_aad(b"kv=7", b"").unwrap(), b"\x00\x04kv=7\x00");
        assert_eq!(frame_aad(b"", b"").unwrap(), b"\x00\x00\x00");
        assert!(frame_aad(b"", &[0u8; 256]).is_none());
    }

    /// §6.2 end-to-end AES-256-GCM vectors, checked with ring: the framing and
    /// the digest's numbers agree, so tests can trust `frame_aad`.
    #[test]
    fn aes_gcm_digest_vectors() {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key: Vec<u8> = (0u8..32).collect();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let iv: [u8; 12] = core::array::from_fn(|i| i as u8);
        for (aad, cm, tag) in [
            (
                &b"tenant=blue;app=ledger"[..],
                &b"kv=7"[..],
                "xFDqNpJZJtrAIIz8JcT7Aw==",
            ),
            (&b""[..], &b""[..], "mJhlsXlHTS24iNH/Fpd19w=="),
        ] {
            let mut buf = b"Hello XKS!".to_vec();
            let t = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(frame_aad(aad, cm).unwrap()),
                    &mut buf,
                )
                .unwrap();
            assert_eq!(b64(&buf), "D2e6d6rFmlDeYA==");
            assert_eq!(b64(t.as_ref()), tag);
        }
    }

    #[test]
    fn encrypt_json_shape() {
        let v = EncryptRequest::new(b"Hello XKS!".to_vec())
            .with_aad(b"tenant=blue;app=ledger".to_vec())
            .with_cdiv()
            .to_json();
        assert_eq!(v["plaintext"], "SGVsbG8gWEtTIQ==");
        assert_eq!(v["encryptionAlgorithm"], "AES_GCM");
        assert_eq!(
            v["additionalAuthenticatedData"],
            "dGVuYW50PWJsdWU7YXBwPWxlZGdlcg=="
        );
        assert_eq!(v["ciphertextDataIntegrityValueAlgorithm"], "SHA_256");
        assert_eq!(v["requestMetadata"]["kmsOperation"], "Encrypt");
        assert!(v["requestMetadata"].get("kmsViaService").is_none());
    }

    #[test]
    fn parse_responses() {
        let v: Value = serde_json::from_str(
            r#"{ "ciphertext": "D2e6d6rFmlDeYA==", "ciphertextMetadata": "a3Y9Nw==",
  "initializationVector": "AAECAwQFBgcICQoL", "authenticationTag": "xFDqNpJZJtrAIIz8JcT7Aw==",
  "ciphertextDataIntegrityValue": "mo6AjtZQS4F8NbF+OoP4DZGqyDMEgdZ0iuwLblnI3Mg=" }"#,
        )
        .unwrap();
        let e = EncryptResponse::from_json(&v).unwrap();
        assert_eq!(e.ciphertext_metadata.as_deref(), Some(&b"kv=7"[..]));
        let d = DecryptRequest::from_encrypt(&e, Some(b"x".to_vec())).to_json();
        assert_eq!(d["ciphertextMetadata"], "a3Y9Nw==");
        assert_eq!(d["additionalAuthenticatedData"], "eA==");
        let h = HealthStatus::from_json(&serde_json::json!({
            "xksProxyFleetSize": 3, "xksProxyVendor": "v", "xksProxyModel": "m", "ekmVendor": "e",
            "ekmFleetDetails": [{"id": "a", "model": "b", "healthStatus": "ACTIVE"}]}))
        .unwrap();
        assert_eq!(h.fleet_size, 3);
        assert!(ErrorBody::from_json(&serde_json::json!({"errorMessage": "x"})).is_err());
    }
}
