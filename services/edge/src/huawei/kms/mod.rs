//! KMS operation handlers, one module per resource group. Each handler takes
//! the parsed route, the caller and the raw body, parses the request (the
//! dialect's grammar and its codes), makes one call into the KMS domain
//! (`keymesh-kms-core`, [`Huawei::kms`]) and renders the JSON answer, or
//! returns an [`ApiError`] (domain errors convert through the wire table).

pub mod aliases;
pub mod crypto;
pub mod datakeys;
pub mod grants;
pub mod keys;
pub mod misc;
pub mod tags;

use bytes::Bytes;
use tokio::time::Instant;

use super::Huawei;
use super::auth::Caller;
use super::error::ApiError;
use super::route::{KmsOp, Route};

/// What one handler call gets.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub h: &'a Huawei,
    pub route: &'a Route,
    pub caller: &'a Caller,
    pub body: &'a [u8],
    /// The raw (still percent-encoded) query string: list-aliases reads
    /// `key_id`, `limit` and `marker` from it.
    pub query: Option<&'a str>,
    pub deadline: Instant,
    /// The key id the request addressed, for the audit line.
    pub audit_key: &'a mut Option<String>,
}

impl Ctx<'_> {
    /// The caller's project: every domain call is scoped by it.
    pub fn project(&self) -> &str {
        &self.caller.project_id
    }
}

/// Run the routed KMS operation.
pub async fn dispatch(mut c: Ctx<'_>, op: KmsOp) -> Result<Bytes, ApiError> {
    let c = &mut c;
    use KmsOp::*;
    match op {
        CreateKey => keys::create(c).await,
        DescribeKey => keys::describe(c).await,
        ListKeys => keys::list(c).await,
        EnableKey => keys::enable(c).await,
        DisableKey => keys::disable(c).await,
        ScheduleKeyDeletion => keys::schedule_deletion(c).await,
        CancelKeyDeletion => keys::cancel_deletion(c).await,
        UpdateKeyAlias => keys::update_alias(c).await,
        UpdateKeyDescription => keys::update_description(c).await,
        EncryptData => crypto::encrypt_data(c).await,
        DecryptData => crypto::decrypt_data(c).await,
        ReEncrypt => crypto::re_encrypt(c).await,
        CreateDatakey => datakeys::create(c, true).await,
        CreateDatakeyWithoutPlaintext => datakeys::create(c, false).await,
        EncryptDatakey => datakeys::encrypt(c).await,
        DecryptDatakey => datakeys::decrypt(c).await,
        CreateRsaDatakeyPair => datakeys::key_pair(c, false).await,
        CreateEcDatakeyPair => datakeys::key_pair(c, true).await,
        GenRandom => misc::gen_random(c).await,
        CreateAlias => aliases::create(c).await,
        ListAliases => aliases::list(c).await,
        DeleteAlias => aliases::delete(c).await,
        AssociateAlias => aliases::associate(c).await,
        CreateKmsTag => tags::create(c).await,
        BatchCreateKmsTags => tags::batch(c).await,
        DeleteTag => tags::delete(c).await,
        ShowKmsTags => tags::show(c).await,
        ListKmsTags => tags::list_project(c).await,
        ListKmsByTags => tags::resource_instances(c).await,
        CreateGrant => grants::create(c).await,
        ListGrants => grants::list(c).await,
        RevokeGrant => grants::revoke(c).await,
        RetireGrant => grants::retire(c).await,
        ListRetirableGrants => grants::list_retirable(c).await,
        ShowUserQuotas => misc::user_quotas(c).await,
        ShowUserInstances => misc::user_instances(c).await,
        ShowVersions => misc::versions(c),
        ShowVersion => misc::version(c),
        Rotation => Err(ApiError::RotationUnsupported),
        Keystores => Err(ApiError::KeystoreUnsupported),
        Unserved => Err(ApiError::UnknownPath),
    }
}

/// Offset-style `limit`/`marker` of list-keys and the grant lists: `limit`
/// 1..=1000 (default `default_limit`, KMS.1601 otherwise), `marker` a
/// non-negative offset (KMS.1602).
pub fn page_params(b: &super::json::Body, default_limit: u64) -> Result<(u64, u64), ApiError> {
    use super::codes;
    let limit = match b.int("limit", codes::KMS_1601)? {
        None => default_limit,
        Some(n) if (1..=1000).contains(&n) => n as u64,
        Some(_) => return Err(ApiError::Invalid(codes::KMS_1601)),
    };
    let offset = match b.str("marker") {
        Ok(None | Some("")) => 0,
        _ => match b.int("marker", codes::KMS_1602)? {
            Some(n) if n >= 0 => n as u64,
            _ => return Err(ApiError::Invalid(codes::KMS_1602)),
        },
    };
    Ok((offset, limit))
}

/// `next_marker` / `truncated` / `total` of the offset-style lists.
pub fn page_fields<T>(p: &keymesh_kms_core::Page<T>) -> (String, &'static str, u64) {
    match p.next_offset {
        Some(n) => (n.to_string(), "true", p.total),
        None => (String::new(), "false", p.total),
    }
}
