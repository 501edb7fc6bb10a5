//! Routing of the Huawei dialects: the raw path is split at `/` and each
//! segment percent-decoded (§2.1: clients escape every reserved character in
//! path parameters, `/` included), then matched against the operation
//! tables. An unknown path is KMS.0201 / CSMS.0003; a known path with another
//! method KMS.0215 / CSMS.0003.

use http::Method;

/// Every KMS operation keymesh recognises (the SDK's operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KmsOp {
    CreateKey,
    DescribeKey,
    ListKeys,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    EncryptData,
    DecryptData,
    ReEncrypt,
    CreateDatakey,
    CreateDatakeyWithoutPlaintext,
    EncryptDatakey,
    DecryptDatakey,
    CreateRsaDatakeyPair,
    CreateEcDatakeyPair,
    GenRandom,
    UpdateKeyAlias,
    UpdateKeyDescription,
    CreateAlias,
    ListAliases,
    DeleteAlias,
    AssociateAlias,
    CreateKmsTag,
    BatchCreateKmsTags,
    DeleteTag,
    ShowKmsTags,
    ListKmsTags,
    ListKmsByTags,
    CreateGrant,
    ListGrants,
    RevokeGrant,
    RetireGrant,
    ListRetirableGrants,
    ShowUserQuotas,
    ShowUserInstances,
    ShowVersions,
    ShowVersion,
    /// Rotation operations: recognised, answered KMS.0319.
    Rotation,
    /// Dedicated key stores: recognised, answered KMS.0340.
    Keystores,
    /// Everything else the SDK can call (import, asymmetric, MAC,
    /// replication, key policies, access points, capsules): recognised,
    /// answered KMS.0201 (not served by keymesh; see README).
    Unserved,
}

impl KmsOp {
    /// The SDK's operation name: span field, metric label, rate-limit bucket.
    pub fn name(self) -> &'static str {
        use KmsOp::*;
        match self {
            CreateKey => "create_key",
            DescribeKey => "list_key_detail",
            ListKeys => "list_keys",
            EnableKey => "enable_key",
            DisableKey => "disable_key",
            ScheduleKeyDeletion => "delete_key",
            CancelKeyDeletion => "cancel_key_deletion",
            EncryptData => "encrypt_data",
            DecryptData => "decrypt_data",
            ReEncrypt => "re_encrypt",
            CreateDatakey => "create_datakey",
            CreateDatakeyWithoutPlaintext => "create_datakey_without_plaintext",
            EncryptDatakey => "encrypt_datakey",
            DecryptDatakey => "decrypt_datakey",
            CreateRsaDatakeyPair => "create_rsa_datakey_pair",
            CreateEcDatakeyPair => "create_ec_datakey_pair",
            GenRandom => "create_random",
            UpdateKeyAlias => "update_key_alias",
            UpdateKeyDescription => "update_key_description",
            CreateAlias => "create_alias",
            ListAliases => "list_aliases",
            DeleteAlias => "delete_alias",
            AssociateAlias => "associate_alias",
            CreateKmsTag => "create_kms_tag",
            BatchCreateKmsTags => "batch_create_kms_tags",
            DeleteTag => "delete_tag",
            ShowKmsTags => "show_kms_tags",
            ListKmsTags => "list_kms_tags",
            ListKmsByTags => "list_kms_by_tags",
            CreateGrant => "create_grant",
            ListGrants => "list_grants",
            RevokeGrant => "cancel_grant",
            RetireGrant => "cancel_self_grant",
            ListRetirableGrants => "list_retirable_grants",
            ShowUserQuotas => "show_user_quotas",
            ShowUserInstances => "show_user_instances",
            ShowVersions => "show_versions",
            ShowVersion => "show_version",
            Rotation => "rotation",
            Keystores => "keystores",
            Unserved => "unserved",
        }
    }

    /// Whether the operation changes state (refused to read-only accounts).
    pub fn writes(self) -> bool {
        use KmsOp::*;
        !matches!(
            self,
            DescribeKey
                | ListKeys
                | ListAliases
                | ShowKmsTags
                | ListKmsTags
                | ListKmsByTags
                | ListGrants
                | ListRetirableGrants
                | ShowUserQuotas
                | ShowUserInstances
                | ShowVersions
                | ShowVersion
        )
    }

    /// Version discovery needs no project and no authentication.
    pub fn anonymous(self) -> bool {
        matches!(self, KmsOp::ShowVersions | KmsOp::ShowVersion)
    }
}

/// Every CSMS operation keymesh recognises (the SDK's operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsmsOp {
    CreateSecret,
    ShowSecret,
    ListSecrets,
    UpdateSecret,
    DeleteSecret,
    BatchImport,
    CreateVersion,
    ShowVersion,
    ListVersions,
    UpdateVersion,
    ShowStage,
    UpdateStage,
    DeleteStage,
    ScheduleDeletion,
    Restore,
    ListResourceInstances,
    CreateTag,
    BatchTags,
    DeleteTag,
    ListTags,
    ListProjectTags,
    Backup,
    UploadBlob,
    GeneratePassword,
    /// Events, notifications, rotation, tasks, function templates, agencies,
    /// the secret checker, sharing and users: recognised, answered CSMS.0003.
    Unserved,
}

impl CsmsOp {
    pub fn name(self) -> &'static str {
        use CsmsOp::*;
        match self {
            CreateSecret => "create_secret",
            ShowSecret => "show_secret",
            ListSecrets => "list_secrets",
            UpdateSecret => "update_secret",
            DeleteSecret => "delete_secret",
            BatchImport => "batch_import_secrets",
            CreateVersion => "create_secret_version",
            ShowVersion => "show_secret_version",
            ListVersions => "list_secret_versions",
            UpdateVersion => "update_version",
            ShowStage => "show_secret_stage",
            UpdateStage => "update_secret_stage",
            DeleteStage => "delete_secret_stage",
            ScheduleDeletion => "delete_secret_for_schedule",
            Restore => "restore_secret",
            ListResourceInstances => "list_resource_instances",
            CreateTag => "create_secret_tag",
            BatchTags => "batch_create_or_delete_tags",
            DeleteTag => "delete_secret_tag",
            ListTags => "list_secret_tags",
            ListProjectTags => "list_project_secrets_tags",
            Backup => "download_secret_blob",
            UploadBlob => "upload_secret_blob",
            GeneratePassword => "generate_random_password",
            Unserved => "unserved",
        }
    }

    fn writes(self) -> bool {
        use CsmsOp::*;
        !matches!(
            self,
            ShowSecret
                | ListSecrets
                | ShowVersion
                | ListVersions
                | ShowStage
                | ListResourceInstances
                | ListTags
                | ListProjectTags
                | Backup
                | GeneratePassword
        )
    }
}

/// The operation of a routed request, in its dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Kms(KmsOp),
    Csms(CsmsOp),
}

impl Op {
    /// The SDK's operation name: span field, metric label, rate-limit bucket.
    pub fn name(self) -> &'static str {
        match self {
            Op::Kms(o) => o.name(),
            Op::Csms(o) => o.name(),
        }
    }

    /// Whether the operation changes state (refused to read-only accounts).
    pub fn writes(self) -> bool {
        match self {
            Op::Kms(o) => o.writes(),
            Op::Csms(o) => o.writes(),
        }
    }

    /// Version discovery needs no project and no authentication.
    /// Version discovery and the CSMS operations keymesh does not serve
    /// (answered CSMS.0003 to anyone).
    pub fn anonymous(self) -> bool {
        match self {
            Op::Kms(o) => o.anonymous(),
            Op::Csms(o) => o == CsmsOp::Unserved,
        }
    }

    /// The rate-limit tenant prefix of the dialect.
    pub fn service(self) -> &'static str {
        match self {
            Op::Kms(_) => "kms",
            Op::Csms(_) => "csms",
        }
    }
}

/// A routed request: the operation and its decoded path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub op: Op,
    /// CSMS: `{secret_name}` (secret paths) or `{secret_id}` (tag paths).
    pub secret: Option<String>,
    /// `{project_id}` (empty for version discovery).
    pub project_id: String,
    /// `{key_id}` of the tag paths.
    pub key_id: Option<String>,
    /// `{key}` (tag key) of the delete-tag paths, `{version_id}` of
    /// show-version (either dialect) or `{stage_name}`.
    pub param: Option<String>,
}

/// Why a path did not route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// KMS.0201.
    UnknownPath,
    /// KMS.0215 (405); carries the allowed method.
    Method(&'static str),
}

/// Whether `path` belongs to the Huawei dialects at all (the rest is XKS).
pub fn is_huawei_path(path: &str) -> bool {
    // One segment is version discovery (`/`, `/v1.0`, `/v9`); XKS paths
    // always have several.
    path.starts_with("/v1.0/")
        || path.starts_with("/v2/")
        // CSMS; an XKS key store may use a `/v1` prefix of its own.
        || (path.starts_with("/v1/") && !path.contains("/kms/xks/"))
        || !path[1.min(path.len())..].contains('/')
}

fn decode(seg: &str) -> Option<String> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// KMS POST operations addressed as `/v1.0/{project}/kms/<name>`.
const POST_OPS: &[(&str, KmsOp)] = &[
    ("create-key", KmsOp::CreateKey),
    ("describe-key", KmsOp::DescribeKey),
    ("list-keys", KmsOp::ListKeys),
    ("enable-key", KmsOp::EnableKey),
    ("disable-key", KmsOp::DisableKey),
    ("schedule-key-deletion", KmsOp::ScheduleKeyDeletion),
    ("cancel-key-deletion", KmsOp::CancelKeyDeletion),
    ("encrypt-data", KmsOp::EncryptData),
    ("decrypt-data", KmsOp::DecryptData),
    ("re-encrypt", KmsOp::ReEncrypt),
    ("create-datakey", KmsOp::CreateDatakey),
    (
        "create-datakey-without-plaintext",
        KmsOp::CreateDatakeyWithoutPlaintext,
    ),
    ("encrypt-datakey", KmsOp::EncryptDatakey),
    ("decrypt-datakey", KmsOp::DecryptDatakey),
    ("create-rsa-datakey-pair", KmsOp::CreateRsaDatakeyPair),
    ("create-ec-datakey-pair", KmsOp::CreateEcDatakeyPair),
    ("gen-random", KmsOp::GenRandom),
    ("update-key-alias", KmsOp::UpdateKeyAlias),
    ("update-key-description", KmsOp::UpdateKeyDescription),
    ("create-grant", KmsOp::CreateGrant),
    ("list-grants", KmsOp::ListGrants),
    ("revoke-grant", KmsOp::RevokeGrant),
    ("retire-grant", KmsOp::RetireGrant),
    ("list-retirable-grants", KmsOp::ListRetirableGrants),
    ("enable-key-rotation", KmsOp::Rotation),
    ("disable-key-rotation", KmsOp::Rotation),
    ("get-key-rotation-status", KmsOp::Rotation),
    ("update-key-rotation-interval", KmsOp::Rotation),
    ("rotate-on-demand", KmsOp::Rotation),
    ("get-parameters-for-import", KmsOp::Unserved),
    ("import-key-material", KmsOp::Unserved),
    ("delete-imported-key-material", KmsOp::Unserved),
    ("get-publickey", KmsOp::Unserved),
    ("sign", KmsOp::Unserved),
    ("verify", KmsOp::Unserved),
    ("derive-shared-secret", KmsOp::Unserved),
    ("generate-mac", KmsOp::Unserved),
    ("verify-mac", KmsOp::Unserved),
    ("create-pin", KmsOp::Keystores),
];

/// Route a request. Query strings are not part of `raw_path`.
pub fn route(method: &Method, raw_path: &str) -> Result<Route, RouteError> {
    let mut segs = Vec::new();
    // Leading '/', then segments; an empty segment (`//` or trailing '/')
    // is not a path this API has.
    let rest = raw_path.strip_prefix('/').ok_or(RouteError::UnknownPath)?;
    if !rest.is_empty() {
        for s in rest.split('/') {
            segs.push(decode(s).ok_or(RouteError::UnknownPath)?);
        }
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let mk = |op, project: &str| Route {
        op: Op::Kms(op),
        secret: None,
        project_id: project.to_owned(),
        key_id: None,
        param: None,
    };
    let want = |m: Method, name: &'static str, r: Route| {
        if *method == m {
            Ok(r)
        } else {
            Err(RouteError::Method(name))
        }
    };
    let valid_project = |p: &str| {
        !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    match s.as_slice() {
        [] => want(Method::GET, "GET", mk(KmsOp::ShowVersions, "")),
        [v] => {
            let mut r = mk(KmsOp::ShowVersion, "");
            r.param = Some((*v).to_owned());
            want(Method::GET, "GET", r)
        }
        ["v1.0", p, "keystores", ..] if valid_project(p) => Ok(mk(KmsOp::Keystores, p)),
        ["v2", p, "kms", ..] if valid_project(p) => Ok(mk(KmsOp::Unserved, p)),
        ["v1.0", p, "kms", rest @ ..] if valid_project(p) => kms_route(method, p, rest, &want, &mk),
        // Account-level CSMS paths (agencies, users, function templates).
        ["v1", "csms", ..] => Ok(csms(CsmsOp::Unserved, "", None, None)),
        ["v1", p, rest @ ..] if valid_project(p) => csms_route(method, p, rest),
        _ => Err(RouteError::UnknownPath),
    }
}

fn csms(op: CsmsOp, project: &str, secret: Option<&str>, param: Option<&str>) -> Route {
    Route {
        op: Op::Csms(op),
        project_id: project.to_owned(),
        secret: secret.map(str::to_owned),
        key_id: None,
        param: param.map(str::to_owned),
    }
}

fn csms_route(method: &Method, p: &str, rest: &[&str]) -> Result<Route, RouteError> {
    use CsmsOp::*;
    let m = method.as_str();
    let r = |op, secret: Option<&str>, param: Option<&str>| Ok(csms(op, p, secret, param));
    let wrong = |allow| Err(RouteError::Method(allow));
    match rest {
        ["secrets"] => match m {
            "POST" => r(CreateSecret, None, None),
            "GET" => r(ListSecrets, None, None),
            _ => wrong("GET, POST"),
        },
        ["secrets", "batch-import"] if m == "POST" => r(BatchImport, None, None),
        ["secrets", "restore"] if m == "POST" => r(UploadBlob, None, None),
        ["secrets", "checker", ..] => r(Unserved, None, None),
        ["secrets", name] => match m {
            "GET" => r(ShowSecret, Some(name), None),
            "PUT" => r(UpdateSecret, Some(name), None),
            "DELETE" => r(DeleteSecret, Some(name), None),
            _ => wrong("GET, PUT, DELETE"),
        },
        ["secrets", name, "versions"] => match m {
            "POST" => r(CreateVersion, Some(name), None),
            "GET" => r(ListVersions, Some(name), None),
            _ => wrong("GET, POST"),
        },
        ["secrets", name, "versions", v] => match m {
            "GET" => r(ShowVersion, Some(name), Some(v)),
            "PUT" => r(UpdateVersion, Some(name), Some(v)),
            _ => wrong("GET, PUT"),
        },
        ["secrets", name, "stages", stage] => match m {
            "GET" => r(ShowStage, Some(name), Some(stage)),
            "PUT" => r(UpdateStage, Some(name), Some(stage)),
            "DELETE" => r(DeleteStage, Some(name), Some(stage)),
            _ => wrong("GET, PUT, DELETE"),
        },
        ["secrets", name, "scheduled-deleted-tasks", "create"] if m == "POST" => {
            r(ScheduleDeletion, Some(name), None)
        }
        ["secrets", name, "scheduled-deleted-tasks", "cancel"] if m == "POST" => {
            r(Restore, Some(name), None)
        }
        ["secrets", name, "backup"] if m == "POST" => r(Backup, Some(name), None),
        ["secrets", _, "rotate"] => r(Unserved, None, None),
        ["secrets", _, "scheduled-deleted-tasks", _] | ["secrets", _, "backup"] => wrong("POST"),
        ["csms", "resource_instances", "action"] if m == "POST" => {
            r(ListResourceInstances, None, None)
        }
        ["csms", "generate-password"] if m == "POST" => r(GeneratePassword, None, None),
        ["csms", "tags"] if m == "GET" => r(ListProjectTags, None, None),
        [
            "csms",
            "events" | "notification-records" | "tasks" | "grants",
            ..,
        ] => r(Unserved, None, None),
        ["csms", id, "tags"] => match m {
            "POST" => r(CreateTag, Some(id), None),
            "GET" => r(ListTags, Some(id), None),
            _ => wrong("GET, POST"),
        },
        ["csms", id, "tags", "action"] if m == "POST" => r(BatchTags, Some(id), None),
        ["csms", id, "tags", key] if m == "DELETE" => r(DeleteTag, Some(id), Some(key)),
        ["csms", ..] | ["secrets", ..] => wrong("GET, POST, PUT, DELETE"),
        _ => Err(RouteError::UnknownPath),
    }
}

fn kms_route(
    method: &Method,
    project: &str,
    rest: &[&str],
    want: &dyn Fn(Method, &'static str, Route) -> Result<Route, RouteError>,
    mk: &dyn Fn(KmsOp, &str) -> Route,
) -> Result<Route, RouteError> {
    let with_key = |op, key: &str| {
        let mut r = mk(op, project);
        r.key_id = Some(key.to_owned());
        r
    };
    match rest {
        ["aliases"] => match *method {
            Method::GET => Ok(mk(KmsOp::ListAliases, project)),
            Method::POST => Ok(mk(KmsOp::CreateAlias, project)),
            Method::DELETE => Ok(mk(KmsOp::DeleteAlias, project)),
            _ => Err(RouteError::Method("GET, POST, DELETE")),
        },
        ["alias", "associate"] => want(Method::POST, "POST", mk(KmsOp::AssociateAlias, project)),
        ["tags"] => want(Method::GET, "GET", mk(KmsOp::ListKmsTags, project)),
        ["user-quotas"] => want(Method::GET, "GET", mk(KmsOp::ShowUserQuotas, project)),
        ["user-instances"] => want(Method::GET, "GET", mk(KmsOp::ShowUserInstances, project)),
        [name] => match POST_OPS.iter().find(|(n, _)| n == name) {
            Some((_, op)) => want(Method::POST, "POST", mk(*op, project)),
            None => Err(RouteError::UnknownPath),
        },
        ["resource_instances", "action"] => {
            want(Method::POST, "POST", mk(KmsOp::ListKmsByTags, project))
        }
        [key, "tags"] => match *method {
            Method::GET => Ok(with_key(KmsOp::ShowKmsTags, key)),
            Method::POST => Ok(with_key(KmsOp::CreateKmsTag, key)),
            _ => Err(RouteError::Method("GET, POST")),
        },
        [key, "tags", "action"] => want(
            Method::POST,
            "POST",
            with_key(KmsOp::BatchCreateKmsTags, key),
        ),
        [key, "tags", tag] => {
            let mut r = with_key(KmsOp::DeleteTag, key);
            r.param = Some((*tag).to_owned());
            want(Method::DELETE, "DELETE", r)
        }
        ["datakey-capsule", ..] | ["key-policies", ..] | ["access-points", ..] => {
            Ok(mk(KmsOp::Unserved, project))
        }
        _ => Err(RouteError::UnknownPath),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const P: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn routes_the_operation_table() {
        let r = route(&Method::POST, &format!("/v1.0/{P}/kms/create-key")).unwrap();
        assert_eq!(
            (r.op, r.project_id.as_str()),
            (Op::Kms(KmsOp::CreateKey), P)
        );
        let r = route(&Method::DELETE, &format!("/v1.0/{P}/kms/k1/tags/a%20b%2Fc")).unwrap();
        assert_eq!(r.op, Op::Kms(KmsOp::DeleteTag));
        assert_eq!(r.key_id.as_deref(), Some("k1"));
        assert_eq!(r.param.as_deref(), Some("a b/c"));
        assert_eq!(
            route(&Method::GET, "/").unwrap().op,
            Op::Kms(KmsOp::ShowVersions)
        );
        assert_eq!(
            route(&Method::GET, "/v1.0").unwrap().op,
            Op::Kms(KmsOp::ShowVersion)
        );
        let r = route(
            &Method::GET,
            &format!("/v1/{P}/secrets/db%2Fpw/versions/latest"),
        )
        .unwrap();
        assert_eq!(r.op, Op::Csms(CsmsOp::ShowVersion));
        assert_eq!(r.secret.as_deref(), Some("db/pw"));
        assert_eq!(r.param.as_deref(), Some("latest"));
        assert_eq!(
            route(&Method::POST, &format!("/v1/{P}/secrets/batch-import"))
                .unwrap()
                .op,
            Op::Csms(CsmsOp::BatchImport)
        );
        assert_eq!(
            route(&Method::GET, &format!("/v1/{P}/csms/events"))
                .unwrap()
                .op,
            Op::Csms(CsmsOp::Unserved)
        );
        assert_eq!(
            route(
                &Method::POST,
                &format!("/v1.0/{P}/kms/resource_instances/action")
            )
            .unwrap()
            .op,
            Op::Kms(KmsOp::ListKmsByTags)
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(
            route(&Method::POST, &format!("/v1.0/{P}/kms/nope")),
            Err(RouteError::UnknownPath)
        );
        assert_eq!(
            route(&Method::GET, &format!("/v1.0/{P}/kms/create-key")),
            Err(RouteError::Method("POST"))
        );
        assert_eq!(
            route(&Method::POST, &format!("/v1.0/{P}/kms/create-key/")),
            Err(RouteError::UnknownPath)
        );
        // An encoded slash inside a segment stays one segment.
        assert_eq!(
            route(&Method::POST, &format!("/v1.0/{P}/kms/create%2Fkey")),
            Err(RouteError::UnknownPath)
        );
        assert_eq!(
            route(&Method::POST, "/v1.0/a%2Fb/kms/create-key"),
            Err(RouteError::UnknownPath)
        );
        assert!(is_huawei_path("/v1.0/x/kms/create-key"));
        assert!(!is_huawei_path("/tenant/kms/xks/v1/keys/k/encrypt"));
        assert!(is_huawei_path("/"));
        assert!(is_huawei_path("/v9.9"));
        assert!(is_huawei_path("/v1/p/secrets"));
        assert!(!is_huawei_path("/v1/kms/xks/v1/keys/k/encrypt"));
    }
}
