//! CSMS operation handlers (`/v1/{project_id}/secrets...`,
//! `/v1/{project_id}/csms/...`). Secret values are encrypted under a KMS
//! customer master key through the same `KeyVault` path as encrypt-data
//! (the secret's `kms_key_id`, or the project's `csms/default` key created
//! on first use); the store only ever holds ciphertext.
//!
//! Each handler parses its typed request (the field rules and their codes),
//! makes one call into the domain's [`SecretService`](keymesh_kms_core::csms::SecretService)
//! (`Huawei::kms.secrets`) and renders the answer; the business rules
//! (states, stages, quotas, sealing) and every store outcome's meaning live
//! in `keymesh-kms-core`.

pub mod password;
pub mod secrets;
pub mod tags;
pub mod values;
pub mod versions;

use bytes::Bytes;
use keymesh_kms_core::SecretRecord;
use serde_json::{Value, json};

use super::codes;
use super::error::ApiError;
use super::kms::Ctx;
use super::route::CsmsOp;

/// Run the routed CSMS operation.
pub async fn dispatch(mut c: Ctx<'_>, op: CsmsOp) -> Result<Bytes, ApiError> {
    let c = &mut c;
    use CsmsOp::*;
    match op {
        CreateSecret => secrets::create(c).await,
        ShowSecret => secrets::show(c).await,
        ListSecrets => secrets::list(c).await,
        UpdateSecret => secrets::update(c).await,
        DeleteSecret => secrets::delete(c).await,
        BatchImport => secrets::batch_import(c).await,
        ScheduleDeletion => secrets::schedule_deletion(c).await,
        Restore => secrets::restore(c).await,
        Backup => secrets::backup(c).await,
        UploadBlob => secrets::upload_blob(c).await,
        CreateVersion => versions::create(c).await,
        ShowVersion => versions::show(c).await,
        ListVersions => versions::list(c).await,
        UpdateVersion => versions::update(c).await,
        ShowStage => versions::show_stage(c).await,
        UpdateStage => versions::update_stage(c).await,
        DeleteStage => versions::delete_stage(c).await,
        ListResourceInstances => tags::resource_instances(c).await,
        CreateTag => tags::create(c).await,
        BatchTags => tags::batch(c).await,
        DeleteTag => tags::delete(c).await,
        ListTags => tags::show(c).await,
        ListProjectTags => tags::list_project(c).await,
        GeneratePassword => password::generate(c),
        Unserved => Err(ApiError::Invalid(codes::CSMS_0003)),
    }
}

/// Milliseconds → the CSMS wire's epoch seconds.
pub fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The `{secret_name}` path parameter (CSMS.0002 outside the name grammar).
pub fn path_name<'a>(c: &Ctx<'a>) -> Result<&'a str, ApiError> {
    let name = c.route.secret.as_deref().ok_or(ApiError::Internal)?;
    check_name(name)?;
    Ok(name)
}

/// `^[a-zA-Z0-9_-]{1,64}$` (CSMS.0002).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if keymesh_kms_core::csms::is_name(name) {
        Ok(())
    } else {
        Err(ApiError::Invalid(codes::CSMS_0002))
    }
}

/// The secret object of every secret-returning answer (§7: integer times).
pub fn secret_json(s: &SecretRecord) -> Value {
    json!({
        "id": s.secret_id,
        "name": s.name,
        "state": s.state.as_str(),
        "kms_key_id": s.kms_key_id,
        "description": s.description,
        "create_time": secs(s.created_ms),
        "update_time": secs(s.updated_ms),
        "scheduled_delete_time": s.scheduled_delete_ms.map(secs),
        "secret_type": s.secret_type,
        "auto_rotation": s.auto_rotation,
        "rotation_period": s.rotation_period,
        "rotation_config": s.rotation_config,
        "rotation_time": Value::Null,
        "next_rotation_time": Value::Null,
        "event_subscriptions": s.event_subscriptions,
        "enterprise_project_id": s.enterprise_project_id,
        "rotation_func_urn": s.rotation_func_urn,
    })
}
