//! The one domain error. Variants are causes; each dialect's wire table
//! (the edge's `huawei/error.rs`) turns them into codes. Store errors are
//! mapped here, once ([`From<StoreError>`]): what a store outcome means for
//! the domain (a missing key, a taken alias, a key in the wrong state) is
//! decided in this file and nowhere else.

use keymesh_store::{Conflict, KeyState, QuotaKind, SecretState, StoreError};

use crate::vault::VaultError;

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such key in the caller's project.
    #[error("key not found")]
    KeyNotFound,
    #[error("key disabled")]
    KeyDisabled,
    #[error("key pending deletion")]
    KeyPendingDeletion,
    /// The key must be enabled (pending import/activation, or disable on a
    /// key that is not enabled).
    #[error("key not enabled")]
    KeyNotEnabled,
    /// Enable on a key that is not disabled.
    #[error("key not disabled")]
    KeyNotDisabled,
    /// Forbidden on a service default master key.
    #[error("default master key")]
    DefaultKey,
    #[error("key already pending deletion")]
    AlreadyPendingDeletion,
    #[error("key not pending deletion")]
    NotPendingDeletion,
    /// A `key_alias` or alias resource name outside the grammar, or one
    /// claiming the `/default` suffix of service default keys.
    #[error("invalid alias")]
    InvalidAlias,
    /// An alias the operation needs does not exist (or is not the key's).
    #[error("alias not found")]
    AliasNotFound,
    /// A `key_description` too long or with control characters.
    #[error("invalid description")]
    InvalidDescription,
    /// Deletion scheduled outside the allowed waiting period.
    #[error("pending days out of range")]
    InvalidPendingDays,
    /// The key alias or alias resource name is taken.
    #[error("duplicate alias")]
    DuplicateAlias,
    /// Another unique name is taken (secret name, version id, ...).
    #[error("conflict: {0:?}")]
    Conflict(Conflict),
    /// A quota would be exceeded.
    #[error("quota exceeded: {0:?}")]
    Quota(QuotaKind),
    #[error("grant not found")]
    GrantNotFound,
    #[error("grant belongs to another key")]
    GrantKeyMismatch,
    /// Only the grantee, the retiring or the issuing principal may retire.
    #[error("not a retiring principal of the grant")]
    NotRetiringPrincipal,
    /// The tag key is not on the key.
    #[error("tag not found")]
    TagNotFound,
    /// A tag request breaks a rule of [`crate::tags`].
    #[error("tag rule broken: {0:?}")]
    Tag(TagRule),
    /// The ciphertext does not parse or is not authentic.
    #[error("ciphertext not authentic")]
    Ciphertext,
    /// The OS random generator failed (ids must never fall back to zeros).
    #[error("random generator failed")]
    Random,
    /// A domain invariant broke (e.g. a row just reported as taken is
    /// gone): a bug or a racing administrator, never a caller's mistake.
    #[error("invariant broken: {0}")]
    Invariant(&'static str),
    /// A key id outside the key-id grammar (a secret's `kms_key_id`).
    #[error("invalid key id")]
    InvalidKeyId,
    /// CSMS: no secret with this name in the project.
    #[error("secret not found")]
    SecretNotFound,
    /// CSMS: a version, stage, tag or secret (addressed by id) that does not
    /// exist.
    #[error("resource not found")]
    ResourceNotFound,
    /// CSMS: the secret is pending deletion (no values, no changes).
    #[error("secret pending deletion")]
    SecretPendingDeletion,
    /// CSMS: the secret must be enabled.
    #[error("secret not enabled")]
    SecretNotEnabled,
    /// CSMS: deletion is already scheduled.
    #[error("secret already pending deletion")]
    SecretAlreadyPendingDeletion,
    /// CSMS: restore of a secret that is not pending deletion.
    #[error("secret not pending deletion")]
    SecretNotPendingDeletion,
    /// CSMS: SYSCURRENT and SYSPREVIOUS belong to the service.
    #[error("protected stage")]
    ProtectedStage,
    /// CSMS: a recovery window outside 7..=30 days.
    #[error("recovery window out of range")]
    InvalidRecoveryWindow,
    /// CSMS: an `expire_time` before now or after year 9999.
    #[error("expire time out of range")]
    InvalidExpireTime,
    /// CSMS: a secret description over 2048 bytes.
    #[error("invalid secret description")]
    InvalidSecretDescription,
    /// CSMS: a backup blob that is not an authentic backup of a secret.
    #[error("invalid backup blob")]
    InvalidBackup,
    /// CSMS: a password request that leaves no characters, or requires more
    /// character types than its length.
    #[error("invalid password policy")]
    InvalidPasswordPolicy,
    /// The store failed (unreachable, corrupt) or answered something the
    /// domain has no cause for.
    #[error("store error")]
    Store(#[source] StoreError),
    /// The vault failed.
    #[error("vault error")]
    Vault(#[source] VaultError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error for a key found in `state` where it cannot be used.
    pub fn unusable(state: KeyState) -> Self {
        match state {
            KeyState::Disabled => Self::KeyDisabled,
            KeyState::PendingDeletion => Self::KeyPendingDeletion,
            _ => Self::KeyNotEnabled,
        }
    }
}

impl Error {
    /// The error for using a secret in `state` where ENABLED is required.
    pub fn secret_unusable(state: SecretState) -> Self {
        match state {
            SecretState::PendingDelete => Self::SecretPendingDeletion,
            _ => Self::SecretNotEnabled,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::KeyNotFound,
            StoreError::Conflict(Conflict::KeyAlias | Conflict::Alias) => Self::DuplicateAlias,
            StoreError::Conflict(c) => Self::Conflict(c),
            StoreError::Quota(q) => Self::Quota(q),
            StoreError::GrantKeyMismatch => Self::GrantKeyMismatch,
            StoreError::WrongState { current } => Self::unusable(current),
            StoreError::WrongSecretState { current } => Self::secret_unusable(current),
            e => Self::Store(e),
        }
    }
}

impl From<VaultError> for Error {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Ciphertext => Self::Ciphertext,
            e => Self::Vault(e),
        }
    }
}

/// A broken tag request rule (each dialect has its code for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRule {
    /// A batch with an empty tag list.
    EmptyBatch,
    /// A batch above [`MAX_BATCH`](crate::tags::MAX_BATCH) or a filter above [`MAX_FILTER_KEYS`](crate::tags::MAX_FILTER_KEYS).
    TooMany,
    /// A tag key given twice in one batch or filter: the outcome would
    /// depend on order.
    DuplicateKey,
    /// A filter entry above [`MAX_FILTER_VALUES`](crate::tags::MAX_FILTER_VALUES) values.
    TooManyValues,
    /// A filter entry naming one value twice.
    DuplicateValue,
    /// A `resource_name` match value too long, or empty where not allowed.
    BadMatchValue,
    /// `resource_name` matched twice.
    RepeatedMatch,
}
