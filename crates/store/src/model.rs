//! The records the store keeps. Times are milliseconds since the Unix epoch
//! (`Millis`), always passed in by the caller so that tests control the clock.

use zeroize::Zeroizing;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// What an account may do: Huawei's "KMS CMKFullAccess" or "KMS ReadOnlyAccess".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Full,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "readonly",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "readonly" => Some(Self::ReadOnly),
            _ => None,
        }
    }

    /// The lesser of two roles (a token never grants more than its account).
    pub fn min(self, other: Self) -> Self {
        if self == Self::ReadOnly || other == Self::ReadOnly {
            Self::ReadOnly
        } else {
            Self::Full
        }
    }

    /// The greater of two roles (a user with several accounts holds the best).
    pub fn max(self, other: Self) -> Self {
        if self == Self::Full || other == Self::Full {
            Self::Full
        } else {
            Self::ReadOnly
        }
    }
}

/// An AK/SK pair bound to one project. The SK is needed in clear to verify
/// SDK-HMAC-SHA256 signatures; the store keeps it only sealed by the HSM
/// ([`crate::sealed`]) and the edge holds it in clear in memory only.
#[derive(Clone)]
pub struct Account {
    /// Access key id (AK), unique.
    pub access_key: String,
    /// Secret key (SK), sealed or (in memory, or a row not yet migrated) clear.
    pub secret: AccountSecret,
    /// The only project this account can see.
    pub project_id: String,
    /// Principal id of the account's user (`^[a-zA-Z0-9]{1,64}$`): grants name it.
    pub user_id: String,
    pub role: Role,
    pub created_ms: Millis,
}

/// An account's SK as the store or a caller holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum AccountSecret {
    /// A [`crate::sealed::SealedSecret`] envelope: the only form
    /// [`crate::AccountRepo::create_account`] writes.
    Sealed(Vec<u8>),
    /// In clear, in a zeroizing buffer: after unsealing, or read from a row
    /// written before sealing existed (migrated on the edge's first start).
    Clear(Zeroizing<String>),
}

impl AccountSecret {
    /// The clear SK, if this is one.
    pub fn clear(&self) -> Option<&str> {
        match self {
            Self::Clear(s) => Some(s.as_str()),
            Self::Sealed(_) => None,
        }
    }
}

impl std::fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sealed(_) => "Sealed(..)",
            Self::Clear(_) => "Clear(<redacted>)",
        })
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("access_key", &self.access_key)
            .field("secret", &self.secret)
            .field("project_id", &self.project_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .finish()
    }
}

/// A keymesh-internal AES-256 key (the account seal key), generated in the
/// HSM and kept outside it only wrapped under the domain key, like a CMK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealKey {
    /// Unique name ([`crate::sealed::ACCOUNT_SEAL_KEY`]).
    pub name: String,
    /// Label of the HSM wrapping (domain) key.
    pub wrapping_key: String,
    /// CKM_AES_KEY_WRAP_PAD output.
    pub wrapped: Vec<u8>,
    pub created_ms: Millis,
}

/// Huawei key states (`key_state` on the wire is the number as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    PendingActivation = 1,
    Enabled = 2,
    Disabled = 3,
    PendingDeletion = 4,
    PendingImport = 5,
}

impl KeyState {
    pub fn code(self) -> i32 {
        self as i32
    }
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Self::PendingActivation,
            2 => Self::Enabled,
            3 => Self::Disabled,
            4 => Self::PendingDeletion,
            5 => Self::PendingImport,
            _ => return None,
        })
    }
}

/// One customer master key (metadata only; material is [`Material`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Lower-case hex UUID, unique across all projects.
    pub key_id: String,
    pub project_id: String,
    /// `key_alias` attribute: unique within a project.
    pub alias: String,
    pub description: String,
    /// `AES_256`, ... as on the wire.
    pub spec: String,
    /// `ENCRYPT_DECRYPT` or `SIGN_VERIFY`.
    pub usage: String,
    /// `kms` or `external`.
    pub origin: String,
    pub state: KeyState,
    /// A service default master key (alias `<service>/default`).
    pub default_key: bool,
    pub created_ms: Millis,
    /// Set while `state == PendingDeletion`: when the material is destroyed.
    pub deletion_ms: Option<Millis>,
    /// Version of the material new ciphertexts use (0 = none yet).
    pub material_version: u32,
    pub enterprise_project_id: String,
    pub keystore_id: String,
}

/// Key material, wrapped under an HSM-resident domain key. The only copy of
/// a CMK outside the HSM; deleting the row destroys the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub key_id: String,
    pub version: u32,
    /// Label of the HSM wrapping key that wraps `wrapped`.
    pub wrapping_key: String,
    pub wrapped: Vec<u8>,
    pub created_ms: Millis,
}

/// An alias resource (separate from the `key_alias` attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    pub project_id: String,
    /// Unique within a project.
    pub alias: String,
    pub key_id: String,
    pub created_ms: Millis,
    pub updated_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// 64 lower-case hex characters, unique.
    pub grant_id: String,
    pub project_id: String,
    pub key_id: String,
    pub name: String,
    pub grantee_principal: String,
    /// `user` or `domain`.
    pub grantee_principal_type: String,
    /// Wire names such as `encrypt-data`.
    pub operations: Vec<String>,
    pub issuing_principal: String,
    /// Empty when none was given.
    pub retiring_principal: String,
    pub created_ms: Millis,
}

/// Limits enforced inside the store's transactions (so that concurrent
/// requests cannot overshoot them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Customer master keys per project, default keys not counted.
    pub keys_per_project: u32,
    /// Grants per key.
    pub grants_per_key: u32,
    /// Grants per project.
    pub grants_per_project: u32,
    /// Tags per key.
    pub tags_per_key: u32,
    /// Alias resources per key.
    pub aliases_per_key: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            keys_per_project: 100,
            grants_per_key: 100,
            grants_per_project: 1000,
            tags_per_key: 20,
            aliases_per_key: 10,
        }
    }
}

/// Which quota a refused write would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Keys,
    GrantsPerKey,
    GrantsPerProject,
    TagsPerKey,
    AliasesPerKey,
    /// CSMS: secrets per project.
    Secrets,
    /// CSMS: versions per secret (every version holds a stage).
    Versions,
    /// CSMS: stages per secret.
    Stages,
    /// CSMS: tags per secret.
    SecretTags,
}

/// Which unique constraint a refused write hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Another key of the project has this `key_alias`.
    KeyAlias,
    /// Another alias resource of the project has this name.
    Alias,
    /// The access key id is taken.
    AccessKey,
    /// The key id is taken (practically never: ids are random UUIDs).
    KeyId,
    /// CSMS: another secret of the project has this name.
    SecretName,
    /// CSMS: the version id exists in this secret.
    VersionId,
}

/// One page of a list, with offset-based markers (Huawei markers are numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Offset of the next page, when there is one.
    pub next_offset: Option<u64>,
    /// Items matching the query across all pages.
    pub total: u64,
}

/// list-keys filters (`None` = no filter on that field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub state: Option<KeyState>,
    /// `None` lists every spec (the wire default `AES_256` is the caller's job).
    pub spec: Option<String>,
    pub enterprise_project_id: Option<String>,
}

/// resource_instances filter: a key matches when, for every entry of
/// `tags`, it has that tag key with one of the values (any value when the
/// list is empty), and for every `matches` entry `resource_name` contains
/// the value (the key's alias; Huawei's only documented match field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    pub tags: Vec<(String, Vec<String>)>,
    pub resource_name: Option<String>,
}

/// Per-project usage for user-quotas / user-instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Customer master keys, default keys not counted.
    pub keys: u64,
    /// Grants across all keys of the project.
    pub grants: u64,
}

// ---- CSMS (secrets) ------------------------------------------------------

/// Secret states (`state` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretState {
    Enabled,
    Disabled,
    PendingDelete,
    Frozen,
}

impl SecretState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::PendingDelete => "PENDING_DELETE",
            Self::Frozen => "FROZEN",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ENABLED" => Self::Enabled,
            "DISABLED" => Self::Disabled,
            "PENDING_DELETE" => Self::PendingDelete,
            "FROZEN" => Self::Frozen,
            _ => return None,
        })
    }
}

/// A secret's metadata. Values live in [`SecretVersion`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Lower-case hex UUID, unique across all projects.
    pub secret_id: String,
    pub project_id: String,
    /// `^[a-zA-Z0-9_-]{1,64}$`, unique within a project.
    pub name: String,
    pub state: SecretState,
    /// CMK that new versions are encrypted under.
    pub kms_key_id: String,
    pub description: String,
    pub secret_type: String,
    pub auto_rotation: bool,
    pub rotation_period: String,
    pub rotation_config: String,
    pub event_subscriptions: Vec<String>,
    pub enterprise_project_id: String,
    pub rotation_func_urn: String,
    pub created_ms: Millis,
    pub updated_ms: Millis,
    /// Set while `state == PendingDelete`: when the secret is destroyed.
    pub scheduled_delete_ms: Option<Millis>,
}

/// One value of a secret, encrypted (only ciphertext is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub secret_id: String,
    /// `v1`, `v2`, ... unique within the secret.
    pub version_id: String,
    /// CMK the value is encrypted under.
    pub kms_key_id: String,
    /// The encrypted value (opaque to the store).
    pub ciphertext: Vec<u8>,
    pub created_ms: Millis,
    pub expire_ms: Option<Millis>,
    /// Stages on this version, sorted (filled by reads; ignored on writes).
    pub stages: Vec<String>,
}

/// A stage label pointing at one version of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRecord {
    pub secret_id: String,
    pub name: String,
    pub version_id: String,
    pub updated_ms: Millis,
}

/// A page of a name/id-keyed list (CSMS markers are the last item's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset<T> {
    pub items: Vec<T>,
    /// More items follow the last one returned.
    pub more: bool,
}

/// CSMS limits (enforced in the writing transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretQuotas {
    /// Secrets per project (CSMS.0202).
    pub secrets_per_project: u32,
    /// Versions per secret: beyond it the oldest version without a stage is
    /// dropped; if every version has a stage, the write fails (CSMS.0203-ish).
    pub versions_per_secret: u32,
    /// Stages per secret, SYSCURRENT and SYSPREVIOUS included (CSMS.0203).
    pub stages_per_secret: u32,
    /// Tags per secret.
    pub tags_per_secret: u32,
}

impl Default for SecretQuotas {
    fn default() -> Self {
        Self {
            secrets_per_project: 200,
            versions_per_secret: 20,
            stages_per_secret: 12,
            tags_per_secret: 20,
        }
    }
}

/// The stage on a secret's current value; adding a version with it moves
/// [`STAGE_PREVIOUS`] to the version that held it.
pub const STAGE_CURRENT: &str = "SYSCURRENT";
/// The stage on a secret's previous value.
pub const STAGE_PREVIOUS: &str = "SYSPREVIOUS";
