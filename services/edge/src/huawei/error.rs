//! The wire errors of the two Huawei dialects (KMS and CSMS) and the one
//! table that maps every failure to them. Variants are causes;
//! [`ApiError::wire`] alone decides, per dialect, the HTTP status,
//! `error_code` and `error_msg` (rows of the published table in `codes.rs`,
//! plus two gateway codes the table lacks: signature failures and
//! throttling, answered the way Huawei's API gateway does). Messages are the
//! published ones: they never carry secrets or internals; the cause is
//! logged once by the audit line.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use keymesh_kms_core::tags::TagRule;
use keymesh_kms_core::{Conflict, Error as DomainError, QuotaKind, StoreError, VaultError};
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;

use super::codes::{self, Code};
use crate::http::cause::Cause;
use crate::mesh::PoolError;
use keymesh_worker_pool::WorkerFailure;

/// 401 for a missing, malformed, stale or wrong SDK-HMAC-SHA256 signature
/// (the table has no code for it; Huawei's gateway answers APIGW.0301).
pub const SIGNATURE: Code = Code {
    status: 401,
    code: "APIGW.0301",
    msg: "Incorrect IAM authentication information.",
};

/// 429 when over quota (not in the table; Huawei's gateway answers APIGW.0308).
pub const THROTTLED: Code = Code {
    status: 429,
    code: "APIGW.0308",
    msg: "The throttling threshold has been reached.",
};

/// Which API a request belongs to: the same cause has a KMS.* and a CSMS.*
/// code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kms,
    Csms,
}

impl Dialect {
    /// CSMS paths start with `/v1/`; everything else Huawei is KMS.
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/v1/") {
            Self::Csms
        } else {
            Self::Kms
        }
    }
}

/// Why a Huawei-dialect request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field broke a rule that has its own published code (e.g. KMS.1101
    /// for `key_alias`, KMS.1401 for `pending_days`): the code is the cause.
    #[error("invalid field: {}", .0.code)]
    Invalid(Code),
    /// 400 KMS.0201: no such path.
    #[error("unknown path")]
    UnknownPath,
    /// 405 KMS.0215: the path exists with another method.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// 400 KMS.0202: not JSON, not an object, a field of the wrong JSON type
    /// or a field the operation does not have.
    #[error("malformed body: {0}")]
    MalformedJson(&'static str),
    /// 400 KMS.0203: body above `max_body_bytes`.
    #[error("body too large")]
    BodyTooLarge,
    /// 400 KMS.0204: a required parameter is absent.
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// 400 KMS.0205: a key id outside the key-id grammar.
    #[error("invalid key id")]
    InvalidKeyId,
    /// 404 KMS.0207: no such key in the caller's project.
    #[error("key not found")]
    KeyNotFound,
    /// 400 KMS.0209.
    #[error("key disabled")]
    KeyDisabled,
    /// 400 KMS.0210.
    #[error("key pending deletion")]
    KeyPendingDeletion,
    /// 400 KMS.0211: forbidden on a service default master key.
    #[error("default master key")]
    DefaultKey,
    /// 400 KMS.1201: enable on a key that is not disabled.
    #[error("key not disabled")]
    KeyNotDisabled,
    /// 400 KMS.1301: the key must be enabled (pending import/activation, or
    /// disable on a non-enabled key).
    #[error("key not enabled")]
    KeyNotEnabled,
    /// 400 KMS.1402.
    #[error("key already pending deletion")]
    AlreadyPendingDeletion,
    /// 400 KMS.1501.
    #[error("key not pending deletion")]
    NotPendingDeletion,
    /// 400 KMS.1104: the `key_alias` (or alias resource name) is taken.
    #[error("duplicate alias")]
    DuplicateAlias,
    /// A quota would be exceeded (KMS.1105 keys, KMS.2404/2405 grants,
    /// KMS.0409 tags, KMS.0308 aliases).
    #[error("quota exceeded: {0:?}")]
    Quota(QuotaKind),
    /// 400 KMS.2501: no such grant in the project.
    #[error("grant not found")]
    GrantNotFound,
    /// 400 KMS.2502.
    #[error("grant belongs to another key")]
    GrantKeyMismatch,
    /// 404 KMS.0416: the tag key is not on the key.
    #[error("tag not found")]
    TagNotFound,
    /// 400 KMS.2201 (decrypt-data, re-encrypt) or as the handler maps it:
    /// the ciphertext does not parse or is not authentic.
    #[error("ciphertext not authentic")]
    Ciphertext,
    /// 403 KMS.0301..0305, KMS.0321: X-Auth-Token problems.
    #[error("token rejected: {}", .0.code)]
    Token(Code),
    /// 401 APIGW.0301: SDK-HMAC-SHA256 missing, malformed, stale or wrong.
    #[error("signature rejected: {0}")]
    Signature(&'static str),
    /// 403 KMS.0306: the caller's project or principal may not do this.
    #[error("no access")]
    NoAccess,
    /// 403 KMS.0307: a read-only account attempted a write.
    #[error("read-only account")]
    ReadOnly,
    /// 400 KMS.0319: key rotation is not served.
    #[error("rotation not supported")]
    RotationUnsupported,
    /// 400 KMS.0340: dedicated key stores are not served.
    #[error("key stores not supported")]
    KeystoreUnsupported,
    /// 429 APIGW.0308: over quota, or the worker pool is saturated.
    #[error("throttled")]
    Throttled,
    /// 503 KMS.0104: the deadline passed waiting on a dependency.
    #[error("dependency timeout")]
    Timeout,
    /// 500 KMS.0102: the store failed.
    #[error("store error")]
    Store(#[source] StoreError),
    /// 500 KMS.0101: an invariant of the edge broke.
    #[error("internal error")]
    Internal,
    /// 500 KMS.0101: a crypto-worker failed (HSM error, worker unreachable,
    /// none available).
    #[error("internal error")]
    Worker(#[source] WorkerFailure),
    /// CSMS: no secret with this name in the project (CSMS.0106).
    #[error("secret not found")]
    SecretNotFound,
    /// CSMS: a version, stage or secret id that does not exist (CSMS.0005).
    #[error("resource not found")]
    ResourceNotFound,
}

impl ApiError {
    /// The one mapping table: cause and dialect → published (status, code,
    /// message).
    pub fn wire(&self, dialect: Dialect) -> Code {
        match dialect {
            Dialect::Kms => self.kms_wire(),
            Dialect::Csms => self.csms_wire().unwrap_or_else(|| self.kms_wire()),
        }
    }

    fn kms_wire(&self) -> Code {
        use ApiError::*;
        match self {
            Invalid(c) | Token(c) => *c,
            UnknownPath => codes::KMS_0201,
            MethodNotAllowed(_) => codes::KMS_0215,
            MalformedJson(_) => codes::KMS_0202,
            BodyTooLarge => codes::KMS_0203,
            Missing(_) => codes::KMS_0204,
            InvalidKeyId => codes::KMS_0205,
            KeyNotFound | SecretNotFound | ResourceNotFound => codes::KMS_0207,
            KeyDisabled => codes::KMS_0209,
            KeyPendingDeletion => codes::KMS_0210,
            DefaultKey => codes::KMS_0211,
            KeyNotDisabled => codes::KMS_1201,
            KeyNotEnabled => codes::KMS_1301,
            AlreadyPendingDeletion => codes::KMS_1402,
            NotPendingDeletion => codes::KMS_1501,
            DuplicateAlias => codes::KMS_1104,
            Quota(QuotaKind::Keys) => codes::KMS_1105,
            Quota(QuotaKind::GrantsPerKey) => codes::KMS_2404,
            Quota(QuotaKind::GrantsPerProject) => codes::KMS_2405,
            Quota(QuotaKind::TagsPerKey | QuotaKind::SecretTags) => codes::KMS_0409,
            Quota(QuotaKind::AliasesPerKey) => codes::KMS_0308,
            Quota(QuotaKind::Secrets | QuotaKind::Versions | QuotaKind::Stages) => codes::KMS_0308,
            GrantNotFound => codes::KMS_2501,
            GrantKeyMismatch => codes::KMS_2502,
            TagNotFound => codes::KMS_0416,
            Ciphertext => codes::KMS_2201,
            Signature(_) => SIGNATURE,
            NoAccess => codes::KMS_0306,
            ReadOnly => codes::KMS_0307,
            RotationUnsupported => codes::KMS_0319,
            KeystoreUnsupported => codes::KMS_0340,
            Throttled => THROTTLED,
            Timeout => codes::KMS_0104,
            Store(_) => codes::KMS_0102,
            Internal | Worker(_) => codes::KMS_0101,
        }
    }

    /// CSMS codes where the cause has one; the rest (signature, throttling,
    /// a dependency timeout: 503 KMS.0104, the mesh's one timeout code, and
    /// codes a handler named itself) are shared with KMS.
    fn csms_wire(&self) -> Option<Code> {
        use ApiError::*;
        Some(match self {
            Invalid(c) if c.code.starts_with("CSMS.") => *c,
            Invalid(_) | Missing(_) | InvalidKeyId => codes::CSMS_0002,
            UnknownPath | MethodNotAllowed(_) => codes::CSMS_0003,
            MalformedJson(_) | BodyTooLarge => codes::CSMS_0004,
            SecretNotFound => codes::CSMS_0106,
            ResourceNotFound | TagNotFound => codes::CSMS_0005,
            // The secret's CMK cannot be used: missing, disabled, pending
            // deletion, or the ciphertext does not open under it.
            KeyNotFound | KeyDisabled | KeyPendingDeletion | KeyNotEnabled | Ciphertext => {
                codes::CSMS_0401
            }
            Token(_) => codes::CSMS_0301,
            NoAccess | ReadOnly => codes::CSMS_0302,
            Quota(QuotaKind::Secrets) => codes::CSMS_0202,
            Quota(QuotaKind::Stages | QuotaKind::Versions) => codes::CSMS_0203,
            Quota(_) => codes::CSMS_0002,
            Store(_) | Internal | Worker(_) => codes::CSMS_0001,
            _ => return None,
        })
    }

    /// The flat error body the SDKs check first (§4.1).
    pub fn body(&self, dialect: Dialect) -> Bytes {
        let c = self.wire(dialect);
        Bytes::from(serde_json::json!({ "error_code": c.code, "error_msg": c.msg }).to_string())
    }

    /// The HTTP response (the observe layer adds `X-Request-Id`).
    pub fn into_response(&self, dialect: Dialect) -> axum::response::Response {
        let c = self.wire(dialect);
        let mut r = crate::http::json_response(
            StatusCode::from_u16(c.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            self.body(dialect),
        );
        if let Self::MethodNotAllowed(allow) = self {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        r.extensions_mut().insert(Failure(c.code));
        if c.status >= 500 {
            r.extensions_mut().insert(Cause::of(self));
        }
        r
    }

    /// A crypto-worker failure by its machine-readable reason.
    pub fn from_worker(status: &tonic::Status) -> Self {
        use tonic::Code as G;
        match status.code() {
            G::DeadlineExceeded | G::Cancelled => return Self::Timeout,
            G::Unavailable | G::Unknown => return Self::Worker(status.into()),
            _ => {}
        }
        match ErrorInfo::decode(status.details())
            .map(|i| i.reason())
            .unwrap_or(ErrorReason::Unspecified)
        {
            ErrorReason::InvalidCiphertext => Self::Ciphertext,
            ErrorReason::HsmBusy => Self::Throttled,
            ErrorReason::InvalidArgument => Self::Invalid(codes::KMS_0308),
            _ => Self::Worker(status.into()),
        }
    }
}

/// Store outcomes get their meaning in the domain (`kms_core::Error`'s
/// `From<StoreError>`, the one place they are mapped); this only routes
/// through it for handlers that still call the store themselves.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

/// The domain's causes on the wire (the codes are chosen per dialect by
/// [`ApiError::wire`]).
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        use DomainError as D;
        match e {
            D::KeyNotFound => Self::KeyNotFound,
            D::KeyDisabled => Self::KeyDisabled,
            D::KeyPendingDeletion => Self::KeyPendingDeletion,
            D::KeyNotEnabled => Self::KeyNotEnabled,
            D::KeyNotDisabled => Self::KeyNotDisabled,
            D::DefaultKey => Self::DefaultKey,
            D::AlreadyPendingDeletion => Self::AlreadyPendingDeletion,
            D::NotPendingDeletion => Self::NotPendingDeletion,
            // The table has no "alias not found": the name the caller sent
            // is what is wrong (KMS.1101).
            D::InvalidAlias | D::AliasNotFound => Self::Invalid(codes::KMS_1101),
            D::InvalidDescription => Self::Invalid(codes::KMS_1103),
            D::InvalidPendingDays => Self::Invalid(codes::KMS_1401),
            D::Conflict(Conflict::SecretName) => Self::Invalid(codes::CSMS_0101),
            D::Conflict(Conflict::VersionId) => Self::Invalid(codes::CSMS_0102),
            D::DuplicateAlias | D::Conflict(_) => Self::DuplicateAlias,
            D::Quota(q) => Self::Quota(q),
            D::GrantNotFound => Self::GrantNotFound,
            D::GrantKeyMismatch => Self::GrantKeyMismatch,
            D::NotRetiringPrincipal => Self::NoAccess,
            D::TagNotFound => Self::TagNotFound,
            // KMS codes; CSMS answers every one as CSMS.0002 (csms_wire).
            D::Tag(r) => Self::Invalid(match r {
                TagRule::EmptyBatch => codes::KMS_0401,
                TagRule::TooMany => codes::KMS_0407,
                TagRule::DuplicateKey => codes::KMS_0412,
                TagRule::TooManyValues => codes::KMS_0413,
                TagRule::DuplicateValue => codes::KMS_0414,
                TagRule::BadMatchValue => codes::KMS_0402,
                TagRule::RepeatedMatch => codes::KMS_0415,
            }),
            D::Ciphertext => Self::Ciphertext,
            D::InvalidKeyId => Self::InvalidKeyId,
            D::SecretNotFound => Self::SecretNotFound,
            D::ResourceNotFound => Self::ResourceNotFound,
            D::SecretPendingDeletion => Self::Invalid(codes::CSMS_0103),
            D::SecretNotEnabled => Self::Invalid(codes::CSMS_0109),
            D::SecretAlreadyPendingDeletion => Self::Invalid(codes::CSMS_0107),
            D::SecretNotPendingDeletion => Self::Invalid(codes::CSMS_0108),
            D::ProtectedStage => Self::Invalid(codes::CSMS_0105),
            D::InvalidRecoveryWindow
            | D::InvalidExpireTime
            | D::InvalidSecretDescription
            | D::InvalidBackup
            | D::InvalidPasswordPolicy => Self::Invalid(codes::CSMS_0002),
            D::Random | D::Invariant(_) => Self::Internal,
            D::Store(e) => Self::Store(e),
            D::Vault(e) => e.into(),
        }
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Timeout => Self::Timeout,
            VaultError::Throttled => Self::Throttled,
            VaultError::Ciphertext => Self::Ciphertext,
            VaultError::InvalidArgument => Self::Invalid(codes::KMS_0308),
            VaultError::Failed(src) => match src.downcast::<WorkerFailure>() {
                Ok(w) => Self::Worker(*w),
                Err(_) => Self::Internal,
            },
            VaultError::Incomplete => Self::Internal,
        }
    }
}

impl PoolError for ApiError {
    fn no_worker() -> Self {
        Self::Worker(WorkerFailure::NoWorker)
    }
    fn shed() -> Self {
        Self::Throttled
    }
    fn from_status(status: &tonic::Status) -> Self {
        Self::from_worker(status)
    }
}

/// The `error_code` of a failed response, for the audit line and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Failure(pub &'static str);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Every row of `codes.rs` is the published CSV row, read from the
    /// in-repo copy of the table (`tests/fixtures`), so it runs in every
    /// clone (the generator's own test checks that copy against
    /// `shared/errors` when that sits beside the repository).
    #[test]
    fn codes_match_the_published_table() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/huawei-kms-csms.csv"
        ));
        let mut rows = 0;
        for line in text.lines().skip(1) {
            let status: u16 = line[..3].parse().unwrap();
            let code = line[4..].split(',').next().unwrap();
            let c = codes::ALL.iter().find(|c| c.code == code).unwrap();
            assert_eq!(c.status, status, "{code}");
            assert!(
                line.contains(c.msg) || line.contains(&format!("\"{}\"", c.msg)),
                "{code}"
            );
            rows += 1;
        }
        assert!(rows > 100, "only {rows} rows in the table");
        assert_eq!(rows, codes::ALL.len());
    }

    #[test]
    fn every_cause_maps_to_a_published_or_gateway_code() {
        let causes = [
            ApiError::UnknownPath,
            ApiError::MethodNotAllowed("POST"),
            ApiError::MalformedJson("x"),
            ApiError::BodyTooLarge,
            ApiError::Missing("key_id"),
            ApiError::InvalidKeyId,
            ApiError::KeyNotFound,
            ApiError::Timeout,
            ApiError::Internal,
        ];
        for c in causes {
            let w = c.wire(Dialect::Kms);
            assert!(
                codes::ALL.contains(&c.wire(Dialect::Csms))
                    || c.wire(Dialect::Csms).code.starts_with("KMS."),
                "{}",
                w.code
            );
            assert!(codes::ALL.contains(&w), "{}", w.code);
        }
        let k = Dialect::Kms;
        assert_eq!(ApiError::KeyNotFound.wire(k).status, 404);
        assert_eq!(ApiError::MethodNotAllowed("POST").wire(k).status, 405);
        assert_eq!(ApiError::Throttled.wire(k).status, 429);
        assert_eq!(ApiError::Timeout.wire(k).status, 503);
        let c = Dialect::Csms;
        assert_eq!(ApiError::SecretNotFound.wire(c).code, "CSMS.0106");
        assert_eq!(ApiError::Token(codes::KMS_0303).wire(c).code, "CSMS.0301");
        assert_eq!(ApiError::KeyDisabled.wire(c).code, "CSMS.0401");
        assert_eq!(
            ApiError::Invalid(codes::CSMS_0105).wire(c).code,
            "CSMS.0105"
        );
    }
}
