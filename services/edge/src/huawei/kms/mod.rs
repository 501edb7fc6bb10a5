//! KMS operation handlers, one module per resource group. Each handler takes
//! the parsed route, the caller and the raw body and returns the JSON answer
//! or a [`KmsError`].

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
use super::error::KmsError;
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

/// Run the routed operation.
pub async fn dispatch(
    h: &Huawei,
    route: &Route,
    caller: &Caller,
    body: &Bytes,
    query: Option<&str>,
    deadline: Instant,
    audit_key: &mut Option<String>,
) -> Result<Bytes, KmsError> {
    let mut c = Ctx {
        h,
        route,
        caller,
        body,
        query,
        deadline,
        audit_key,
    };
    use KmsOp::*;
    match route.op {
        CreateKey => keys::create(&mut c).await,
        DescribeKey => keys::describe(&mut c).await,
        ListKeys => keys::list(&mut c).await,
        EnableKey => keys::enable(&mut c).await,
        DisableKey => keys::disable(&mut c).await,
        ScheduleKeyDeletion => keys::schedule_deletion(&mut c).await,
        CancelKeyDeletion => keys::cancel_deletion(&mut c).await,
        UpdateKeyAlias => keys::update_alias(&mut c).await,
        UpdateKeyDescription => keys::update_description(&mut c).await,
        EncryptData => crypto::encrypt_data(&mut c).await,
        DecryptData => crypto::decrypt_data(&mut c).await,
        ReEncrypt => crypto::re_encrypt(&mut c).await,
        CreateDatakey => datakeys::create(&mut c, true).await,
        CreateDatakeyWithoutPlaintext => datakeys::create(&mut c, false).await,
        EncryptDatakey => datakeys::encrypt(&mut c).await,
        DecryptDatakey => datakeys::decrypt(&mut c).await,
        CreateRsaDatakeyPair => datakeys::key_pair(&mut c, false).await,
        CreateEcDatakeyPair => datakeys::key_pair(&mut c, true).await,
        GenRandom => misc::gen_random(&mut c).await,
        CreateAlias => aliases::create(&mut c).await,
        ListAliases => aliases::list(&mut c).await,
        DeleteAlias => aliases::delete(&mut c).await,
        AssociateAlias => aliases::associate(&mut c).await,
        CreateKmsTag => tags::create(&mut c).await,
        BatchCreateKmsTags => tags::batch(&mut c).await,
        DeleteTag => tags::delete(&mut c).await,
        ShowKmsTags => tags::show(&mut c).await,
        ListKmsTags => tags::list_project(&mut c).await,
        ListKmsByTags => tags::resource_instances(&mut c).await,
        CreateGrant => grants::create(&mut c).await,
        ListGrants => grants::list(&mut c).await,
        RevokeGrant => grants::revoke(&mut c).await,
        RetireGrant => grants::retire(&mut c).await,
        ListRetirableGrants => grants::list_retirable(&mut c).await,
        ShowUserQuotas => misc::user_quotas(&mut c).await,
        ShowUserInstances => misc::user_instances(&mut c).await,
        ShowVersions => misc::versions(&mut c),
        ShowVersion => misc::version(&mut c),
        Rotation => Err(KmsError::RotationUnsupported),
        Keystores => Err(KmsError::KeystoreUnsupported),
        Unserved => Err(KmsError::UnknownPath),
    }
}

/// Offset-style `limit`/`marker` of list-keys and the grant lists: `limit`
/// 1..=1000 (default `default_limit`, KMS.1601 otherwise), `marker` a
/// non-negative offset (KMS.1602).
pub fn page_params(b: &super::json::Body, default_limit: u64) -> Result<(u64, u64), KmsError> {
    use super::codes;
    let limit = match b.int("limit", codes::KMS_1601)? {
        None => default_limit,
        Some(n) if (1..=1000).contains(&n) => n as u64,
        Some(_) => return Err(KmsError::Invalid(codes::KMS_1601)),
    };
    let offset = match b.str("marker") {
        Ok(None | Some("")) => 0,
        _ => match b.int("marker", codes::KMS_1602)? {
            Some(n) if n >= 0 => n as u64,
            _ => return Err(KmsError::Invalid(codes::KMS_1602)),
        },
    };
    Ok((offset, limit))
}

/// `next_marker` / `truncated` / `total` of the offset-style lists.
pub fn page_fields<T>(p: &keymesh_store::Page<T>) -> (String, &'static str, u64) {
    match p.next_offset {
        Some(n) => (n.to_string(), "true", p.total),
        None => (String::new(), "false", p.total),
    }
}
