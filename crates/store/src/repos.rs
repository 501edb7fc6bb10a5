//! The store's API, one trait per aggregate, so that a caller (a domain
//! service, a test fake) names only the part of the store it uses.
//!
//! [`Store`](crate::Store) is the sum of these traits; both backends
//! implement every one of them, and `Arc<dyn Store>` upcasts to any
//! `Arc<dyn XRepo>`. Each trait owns the tables of its aggregate; a method
//! may read another aggregate's tables to check a reference (an alias's
//! key exists) or enforce a cross-aggregate rule in one transaction.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::Result;
use crate::model::*;

/// Accounts (AK/SK pairs bound to a project) and the role a user holds in a project.
#[async_trait]
pub trait AccountRepo: Send + Sync + Debug {
    /// `Conflict(AccessKey)` when the access key exists; `ClearSecret` when
    /// the account's SK is not sealed (nothing is written).
    async fn create_account(&self, account: &Account) -> Result<()>;
    async fn get_account(&self, access_key: &str) -> Result<Option<Account>>;
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// `NotFound` when absent.
    async fn delete_account(&self, access_key: &str) -> Result<()>;
    /// Replace a clear SK by its sealed form and empty the clear column
    /// (migration of rows written before sealing). Compare-and-set: `false`
    /// when the row is already sealed or gone.
    async fn seal_account_secret(&self, access_key: &str, sealed: &[u8]) -> Result<bool>;
    /// `NotFound` when absent.
    async fn set_account_role(&self, access_key: &str, role: Role) -> Result<()>;
    /// The best role among `user_id`'s accounts in `project_id` (`None`: the
    /// user has none there): what an X-Auth-Token of that user may use.
    async fn user_role(&self, project_id: &str, user_id: &str) -> Result<Option<Role>>;
}

/// Seal keys: the wrapped keys that seal secrets stored at rest (account SKs).
#[async_trait]
pub trait SealKeyRepo: Send + Sync + Debug {
    async fn get_seal_key(&self, name: &str) -> Result<Option<SealKey>>;
    /// Store `key` unless a key of that name exists; returns the stored one
    /// (so concurrent first users all end up with the same key).
    async fn put_seal_key_if_missing(&self, key: &SealKey) -> Result<SealKey>;
}

/// KMS keys: records, wrapped material versions, state transitions, purge and usage.
#[async_trait]
pub trait KeyRepo: Send + Sync + Debug {
    /// Insert a key and (when given) its first material version, in one
    /// transaction. `Quota(Keys)` past `quotas.keys_per_project` (default
    /// keys not counted), `Conflict(KeyAlias)` when the alias is taken.
    async fn create_key(
        &self,
        key: &KeyRecord,
        material: Option<&Material>,
        quotas: &Quotas,
    ) -> Result<()>;
    async fn get_key(&self, project_id: &str, key_id: &str) -> Result<Option<KeyRecord>>;
    /// The key and its current material (`material_version`), one query:
    /// the encrypt hot path.
    async fn get_key_with_material(
        &self,
        project_id: &str,
        key_id: &str,
    ) -> Result<Option<(KeyRecord, Option<Material>)>>;
    /// A specific material version (decrypt of an older ciphertext).
    async fn get_material(
        &self,
        project_id: &str,
        key_id: &str,
        version: u32,
    ) -> Result<Option<Material>>;
    /// The key whose `key_alias` attribute is `alias`.
    async fn find_key_by_alias(&self, project_id: &str, alias: &str) -> Result<Option<KeyRecord>>;
    /// Ordered by creation time then key id; offset pagination.
    async fn list_keys(
        &self,
        project_id: &str,
        filter: &KeyFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<KeyRecord>>;
    /// Compare-and-set: move the key to `to` only if its state is one of
    /// `from`; sets `deletion_ms` (cleared when `None`). Returns the updated
    /// record; `WrongState { current }` otherwise; `NotFound`.
    async fn transition(
        &self,
        project_id: &str,
        key_id: &str,
        from: &[KeyState],
        to: KeyState,
        deletion_ms: Option<Millis>,
    ) -> Result<KeyRecord>;
    /// `Conflict(KeyAlias)`, `NotFound`. Returns the updated record.
    async fn update_key_alias(
        &self,
        project_id: &str,
        key_id: &str,
        alias: &str,
    ) -> Result<KeyRecord>;
    async fn update_key_description(
        &self,
        project_id: &str,
        key_id: &str,
        description: &str,
    ) -> Result<KeyRecord>;
    /// Destroy every key pending deletion whose `deletion_ms <= now`: its
    /// materials, aliases, tags and grants go with it, in one transaction
    /// per key. Returns the destroyed key ids. Safe to run concurrently from
    /// several edges.
    async fn purge_due_keys(&self, now: Millis) -> Result<Vec<String>>;
    async fn usage(&self, project_id: &str) -> Result<Usage>;
}

/// Alias resources: names pointing at a key of the same project.
#[async_trait]
pub trait AliasRepo: Send + Sync + Debug {
    /// `NotFound` (key), `Conflict(Alias)`, `Quota(AliasesPerKey)`.
    async fn create_alias(&self, alias: &AliasRecord, quotas: &Quotas) -> Result<()>;
    /// Ordered by alias name; offset pagination; `key_id` filters.
    async fn list_aliases(
        &self,
        project_id: &str,
        key_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AliasRecord>>;
    /// Delete all of `aliases` of `key_id` or none (`NotFound` if one is not
    /// an alias of that key).
    async fn delete_aliases(
        &self,
        project_id: &str,
        key_id: &str,
        aliases: &[String],
    ) -> Result<()>;
    /// Re-point an alias; `NotFound` (alias or target key),
    /// `Quota(AliasesPerKey)` on the target.
    async fn associate_alias(
        &self,
        project_id: &str,
        alias: &str,
        target_key_id: &str,
        now: Millis,
        quotas: &Quotas,
    ) -> Result<AliasRecord>;
}

/// Key tags: tags of one key, the tags of a project, and the search of keys by tag.
#[async_trait]
pub trait KeyTagRepo: Send + Sync + Debug {
    /// Sorted by tag key. `NotFound` (key).
    async fn key_tags(&self, project_id: &str, key_id: &str) -> Result<Vec<Tag>>;
    /// Upsert (a tag key set again takes the new value), all or nothing;
    /// `Quota(TagsPerKey)` when the key would end with too many; `NotFound`.
    async fn put_tags(
        &self,
        project_id: &str,
        key_id: &str,
        tags: &[Tag],
        quotas: &Quotas,
    ) -> Result<()>;
    /// Delete these tag keys, all or nothing: `NotFound` if the key or any
    /// tag key is missing.
    async fn delete_tags(&self, project_id: &str, key_id: &str, tag_keys: &[String]) -> Result<()>;
    /// Every tag key used in the project with its distinct values, sorted.
    async fn project_tags(&self, project_id: &str) -> Result<Vec<(String, Vec<String>)>>;
    /// Keys matching `filter` (see [`TagFilter`]) with their tags, ordered by
    /// creation then key id, and the total count.
    async fn find_keys_by_tags(
        &self,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(KeyRecord, Vec<Tag>)>>;
}

/// Grants: permissions on a key given to another principal.
#[async_trait]
pub trait GrantRepo: Send + Sync + Debug {
    /// `NotFound` (key), `Quota(GrantsPerKey | GrantsPerProject)`.
    async fn create_grant(&self, grant: &GrantRecord, quotas: &Quotas) -> Result<()>;
    /// Grants of one key, ordered by creation then id.
    async fn list_grants(
        &self,
        project_id: &str,
        key_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>>;
    async fn get_grant(&self, project_id: &str, grant_id: &str) -> Result<Option<GrantRecord>>;
    /// `NotFound`, `GrantKeyMismatch` when the grant is another key's.
    async fn delete_grant(&self, project_id: &str, key_id: &str, grant_id: &str) -> Result<()>;
    /// Grants whose `retiring_principal` is `principal`, across the project.
    async fn list_retirable_grants(
        &self,
        project_id: &str,
        principal: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<GrantRecord>>;
}

/// CSMS secrets: the secret records (metadata and state) and their purge.
#[async_trait]
pub trait SecretRepo: Send + Sync + Debug {
    /// Insert a secret with its versions and stages in one transaction (a
    /// create has one version `v1` with SYSCURRENT; a restore from backup
    /// has all of them). `Conflict(SecretName)`, `Quota(Secrets)`; nothing is
    /// written on failure.
    async fn create_secret(
        &self,
        secret: &SecretRecord,
        versions: &[SecretVersion],
        stages: &[StageRecord],
        quotas: &SecretQuotas,
    ) -> Result<()>;
    async fn get_secret(&self, project_id: &str, name: &str) -> Result<Option<SecretRecord>>;
    async fn get_secret_by_id(
        &self,
        project_id: &str,
        secret_id: &str,
    ) -> Result<Option<SecretRecord>>;
    /// Ordered by name (bytes); names after `after` (exclusive). With
    /// `event_name`, only secrets subscribed to it.
    async fn list_secrets(
        &self,
        project_id: &str,
        after: Option<&str>,
        limit: u64,
        event_name: Option<&str>,
    ) -> Result<Keyset<SecretRecord>>;
    /// Replace the metadata fields (kms_key_id, description, rotation
    /// fields, event_subscriptions, updated_ms) of the secret `secret.name`.
    /// `NotFound`. Returns the stored record.
    async fn update_secret(&self, secret: &SecretRecord) -> Result<SecretRecord>;
    /// Compare-and-set of the state (and `scheduled_delete_ms`, cleared when
    /// `None`); `WrongSecretState { current }`, `NotFound`.
    async fn set_secret_state(
        &self,
        project_id: &str,
        name: &str,
        from: &[SecretState],
        to: SecretState,
        scheduled_delete_ms: Option<Millis>,
        now: Millis,
    ) -> Result<SecretRecord>;
    /// Delete the secret with its versions, stages and tags. `NotFound`.
    async fn delete_secret(&self, project_id: &str, name: &str) -> Result<()>;
    /// Destroy every PENDING_DELETE secret whose `scheduled_delete_ms <= now`
    /// (versions, stages, tags). Returns the destroyed secret ids.
    async fn purge_due_secrets(&self, now: Millis) -> Result<Vec<String>>;
}

/// CSMS secret versions and the stages (version labels) pointing at them.
#[async_trait]
pub trait SecretVersionRepo: Send + Sync + Debug {
    /// Add a version in one transaction: the store assigns the next id
    /// (`v<n>`, n = 1 + the highest ever used in this secret), attaches
    /// `stages` (each moved from whichever version held it); when SYSCURRENT
    /// moves, the version that held it receives SYSPREVIOUS. Beyond
    /// `versions_per_secret` the oldest versions without stages are dropped
    /// (`Quota(Versions)` if none can be). `Quota(Stages)` when the secret
    /// would hold more distinct stages than allowed. `NotFound` (secret).
    /// `WrongSecretState` unless the secret is ENABLED. Returns the version
    /// with its id and stages.
    async fn add_version(
        &self,
        project_id: &str,
        name: &str,
        version: &SecretVersion,
        stages: &[String],
        quotas: &SecretQuotas,
        now: Millis,
    ) -> Result<SecretVersion>;
    /// A version by id, or the newest (`latest`) when `version_id` is None.
    async fn get_version(
        &self,
        project_id: &str,
        name: &str,
        version_id: Option<&str>,
    ) -> Result<Option<SecretVersion>>;
    /// The secret and one of its versions (the newest when `version_id` is
    /// None) with the version's stages, in ONE statement (the CSMS hot read:
    /// no transaction, no second round trip). `None` when the secret does not
    /// exist; `Some((secret, None))` when the secret exists but the version
    /// does not.
    async fn read_secret_version(
        &self,
        project_id: &str,
        name: &str,
        version_id: Option<&str>,
    ) -> Result<Option<(SecretRecord, Option<SecretVersion>)>>;
    /// Newest first; ids after `after` in that order.
    async fn list_versions(
        &self,
        project_id: &str,
        name: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Keyset<SecretVersion>>;
    /// `NotFound` (secret or version).
    async fn update_version_expiry(
        &self,
        project_id: &str,
        name: &str,
        version_id: &str,
        expire_ms: Option<Millis>,
    ) -> Result<SecretVersion>;
    /// Every version with its ciphertext and stages (backup), oldest first.
    async fn all_versions(&self, project_id: &str, name: &str) -> Result<Vec<SecretVersion>>;

    async fn get_stage(
        &self,
        project_id: &str,
        name: &str,
        stage: &str,
    ) -> Result<Option<StageRecord>>;
    /// Point `stage` at `version_id` (moving it), in one transaction: when
    /// SYSCURRENT moves to another version, the version that held it receives
    /// SYSPREVIOUS. `Quota(Stages)` when the secret would then hold more
    /// distinct stages than allowed (checked before anything moves).
    /// `NotFound` (secret or version).
    async fn put_stage(
        &self,
        project_id: &str,
        name: &str,
        stage: &str,
        version_id: &str,
        now: Millis,
        quotas: &SecretQuotas,
    ) -> Result<StageRecord>;
    /// `NotFound` (secret or stage).
    async fn delete_stage(&self, project_id: &str, name: &str, stage: &str) -> Result<()>;
}

/// CSMS secret tags (secrets addressed by id) and the search of secrets by tag.
#[async_trait]
pub trait SecretTagRepo: Send + Sync + Debug {
    /// Sorted by key. `NotFound` (secret).
    async fn secret_tags(&self, project_id: &str, secret_id: &str) -> Result<Vec<Tag>>;
    /// Upsert, all or nothing; `Quota(SecretTags)`; `NotFound`.
    async fn put_secret_tags(
        &self,
        project_id: &str,
        secret_id: &str,
        tags: &[Tag],
        quotas: &SecretQuotas,
    ) -> Result<()>;
    /// All or nothing: `NotFound` if the secret or any tag key is missing.
    async fn delete_secret_tags(
        &self,
        project_id: &str,
        secret_id: &str,
        keys: &[String],
    ) -> Result<()>;
    async fn project_secret_tags(&self, project_id: &str) -> Result<Vec<(String, Vec<String>)>>;
    /// As [`KeyTagRepo::find_keys_by_tags`]; `resource_name` matches the secret name
    /// (substring). Ordered by name.
    async fn find_secrets_by_tags(
        &self,
        project_id: &str,
        filter: &TagFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page<(SecretRecord, Vec<Tag>)>>;
}
