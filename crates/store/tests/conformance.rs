//! Conformance suite: one set of tests, each run against every backend.
//!
//! `conformance!` turns every test function (`async fn(Ctx)`) into
//! `sqlite::<name>` and `postgres::<name>` tests. SQLite gets a fresh file
//! in a temporary directory; PostgreSQL a freshly created database
//! (`km_<random hex>`, created through `KEYMESH_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, dropped afterwards), so tests
//! run in parallel without seeing each other. An unreachable PostgreSQL
//! fails the postgres tests unless `KEYMESH_TEST_POSTGRES=skip`.
//!
//! Time is an argument of the store API, so "the clock" here is just the
//! numbers the tests pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use keymesh_store::{
    Account, AccountSecret, AliasRecord, Conflict, GrantRecord, KeyFilter, KeyRecord, KeyState,
    Keyset, Material, Page, QuotaKind, Quotas, Role, SealKey, SecretQuotas, SecretRecord,
    SecretState, SecretVersion, StageRecord, Store, StoreError, Tag, TagFilter,
};
use sqlx::{AssertSqlSafe, Connection};

// ---- harness ---------------------------------------------------------------------

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// What a test gets: the store, and how to reach the same database again.
#[derive(Clone)]
struct Ctx {
    store: Arc<dyn Store>,
    url: String,
    backend: Backend,
}

impl Ctx {
    /// A second, independent store on the same database.
    async fn reopen(&self) -> Arc<dyn Store> {
        keymesh_store::open(&self.url).await.unwrap()
    }

    /// Rows of `table` that belong to `key_id`, read behind the store's
    /// back (to prove that a purge really deleted them).
    async fn rows_of_key(&self, table: &str, key_id: &str) -> i64 {
        self.rows_where(table, "key_id", key_id).await
    }

    /// Run `sql` (with `$1` bound to `arg`) behind the store's back.
    async fn exec(&self, sql: &str, arg: &str) {
        let sql = sql.to_owned();
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql))
                    .bind(arg)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(AssertSqlSafe(sql))
                    .bind(arg)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }

    /// Every account row's `secret_key` column as stored, read behind the
    /// store's back.
    async fn clear_secret_column(&self) -> Vec<String> {
        let sql = "SELECT secret_key FROM accounts ORDER BY access_key";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Rows of `table` whose `column` is `value`, read behind the store's back.
    async fn rows_where(&self, table: &str, column: &str, key_id: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(key_id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(key_id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }
}

/// A database that exists for one test.
struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// `None` when the backend is skipped by configuration.
    async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                Some(Self {
                    url,
                    cleanup: Cleanup::Dir(dir),
                })
            }
            Backend::Postgres => {
                if std::env::var("KEYMESH_TEST_POSTGRES").as_deref() == Ok("skip") {
                    eprintln!("KEYMESH_TEST_POSTGRES=skip: PostgreSQL test skipped");
                    return None;
                }
                let admin_url = std::env::var("KEYMESH_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL unreachable at {admin_url}: {e} \
                         (set KEYMESH_TEST_POSTGRES=skip to skip these tests)"
                        )
                    });
                let name = format!(
                    "km_{:016x}",
                    RandomState::new().hash_one(std::process::id())
                );
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                Some(Self {
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Postgres { admin_url, name },
                })
            }
        }
    }

    async fn destroy(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Postgres { admin_url, name } => {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                admin.close().await.unwrap();
            }
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(slash) => &head[..authority + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs `test` on a fresh database of `backend`, then drops the database
/// even when the test panicked (the panic is re-raised afterwards).
async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url.clone();
    let outcome = tokio::spawn(async move {
        let store = keymesh_store::open(&url).await.unwrap();
        test(Ctx {
            store,
            url,
            backend,
        })
        .await;
    })
    .await;
    db.destroy().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::run(crate::Backend::Sqlite, crate::$test).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::run(crate::Backend::Postgres, crate::$test).await;
                }
            )*
        }
    };
}

conformance!(
    accounts,
    legacy_clear_accounts_are_sealed_in_place,
    account_roles_and_token_subjects,
    seal_keys_first_writer_wins,
    keys_create_and_read,
    key_quota_counts_customer_keys_only,
    list_keys_pages_and_filters,
    transitions_are_compare_and_set,
    concurrent_transitions_one_winner,
    concurrent_create_key_respects_quota,
    concurrent_create_key_same_alias,
    key_alias_and_description_updates,
    purge_follows_the_clock,
    concurrent_purges_split_the_work,
    alias_resources,
    tags,
    find_keys_by_tags,
    grants,
    concurrent_grants_respect_project_quota,
    text_order_is_bytewise,
    reopen_sees_committed_data,
    secrets_create_read_update_delete,
    secret_state_is_compare_and_set,
    secret_quota_and_failed_creates,
    concurrent_create_secret_respects_quota,
    concurrent_create_secret_same_name,
    stage_semantics,
    stage_quota,
    syscurrent_move_is_atomic,
    version_quota_drops_stageless_versions,
    add_version_checks_the_secret,
    read_secret_version_in_one_statement,
    two_concurrent_add_versions,
    eight_concurrent_add_versions,
    list_secrets_keyset,
    list_versions_keyset,
    versions_expiry_backup_and_restore,
    purge_secrets_follows_the_clock,
    secret_tags,
    find_secrets_by_tags,
    domain_key_checks,
    concurrent_first_domain_key_records_agree,
);

/// `expr` must be `Err(pattern)`.
macro_rules! assert_err {
    ($expr:expr, $pattern:pat) => {
        match $expr {
            Err($pattern) => {}
            other => panic!("expected Err({}), got {other:?}", stringify!($pattern)),
        }
    };
}

// ---- fixtures ---------------------------------------------------------------------

const P: &str = "0123456789abcdef0123456789abcdef";
const Q: &str = "fedcba9876543210fedcba9876543210";

fn key(project: &str, key_id: &str, alias: &str, created_ms: i64) -> KeyRecord {
    KeyRecord {
        key_id: key_id.to_owned(),
        project_id: project.to_owned(),
        alias: alias.to_owned(),
        description: format!("description of {key_id}"),
        spec: "AES_256".to_owned(),
        usage: "ENCRYPT_DECRYPT".to_owned(),
        origin: "kms".to_owned(),
        state: KeyState::Enabled,
        default_key: false,
        created_ms,
        deletion_ms: None,
        material_version: 1,
        enterprise_project_id: "0".to_owned(),
        keystore_id: "0".to_owned(),
    }
}

fn material(key_id: &str, version: u32) -> Material {
    Material {
        key_id: key_id.to_owned(),
        version,
        wrapping_key: "keymesh-domain-1".to_owned(),
        wrapped: (0..40u8).map(|b| b ^ version as u8).collect(),
        created_ms: 1_000 + i64::from(version),
    }
}

/// Creates `key` with material version 1 under default quotas.
async fn add_key(store: &dyn Store, key: &KeyRecord) {
    store
        .create_key(key, Some(&material(&key.key_id, 1)), &Quotas::default())
        .await
        .unwrap();
}

fn alias(project: &str, name: &str, key_id: &str, ms: i64) -> AliasRecord {
    AliasRecord {
        project_id: project.to_owned(),
        alias: name.to_owned(),
        key_id: key_id.to_owned(),
        created_ms: ms,
        updated_ms: ms,
    }
}

fn grant(project: &str, n: u64, key_id: &str, created_ms: i64) -> GrantRecord {
    GrantRecord {
        grant_id: format!("{n:064x}"),
        project_id: project.to_owned(),
        key_id: key_id.to_owned(),
        name: format!("grant-{n}"),
        grantee_principal: "user0001".to_owned(),
        grantee_principal_type: "user".to_owned(),
        operations: vec!["encrypt-data".to_owned(), "decrypt-data".to_owned()],
        issuing_principal: "issuer01".to_owned(),
        retiring_principal: "retirer1".to_owned(),
        created_ms,
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `(name, [values])` pairs: a stage map (version id, stages), a project's
/// tag listing (tag key, values) or a tag filter's entries.
fn sm(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    entries
        .iter()
        .map(|(name, values)| (name.to_string(), strings(values)))
        .collect()
}

/// A filter on tags alone.
fn tag_filter(entries: &[(&str, &[&str])]) -> TagFilter {
    TagFilter {
        tags: sm(entries),
        resource_name: None,
    }
}

/// `filter` narrowed to resource names containing `needle`.
fn named(needle: &str, filter: TagFilter) -> TagFilter {
    TagFilter {
        resource_name: Some(needle.to_owned()),
        ..filter
    }
}

fn ids<'a>(keys: impl IntoIterator<Item = &'a KeyRecord>) -> Vec<&'a str> {
    keys.into_iter().map(|k| k.key_id.as_str()).collect()
}

fn empty<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_offset: None,
        total: 0,
    }
}

// ---- accounts -----------------------------------------------------------------------

fn account(access_key: &str, project: &str, role: Role, created_ms: i64) -> Account {
    Account {
        access_key: access_key.to_owned(),
        // The store treats the envelope as opaque bytes.
        secret: AccountSecret::Sealed(format!("sealed-{access_key}").into_bytes()),
        project_id: project.to_owned(),
        user_id: format!("user{access_key}"),
        role,
        created_ms,
    }
}

fn assert_same_account(got: &Account, want: &Account) {
    assert_eq!(got.access_key, want.access_key);
    assert_eq!(got.secret, want.secret);
    assert_eq!(got.project_id, want.project_id);
    assert_eq!(got.user_id, want.user_id);
    assert_eq!(got.role, want.role);
    assert_eq!(got.created_ms, want.created_ms);
}

async fn accounts(ctx: Ctx) {
    let s = &*ctx.store;
    let full = account("AKFULL", P, Role::Full, 20);
    let read = account("AKREAD", Q, Role::ReadOnly, 10);
    s.create_account(&full).await.unwrap();
    s.create_account(&read).await.unwrap();
    assert_err!(
        s.create_account(&account("AKFULL", Q, Role::ReadOnly, 30))
            .await,
        StoreError::Conflict(Conflict::AccessKey)
    );

    assert_same_account(&s.get_account("AKFULL").await.unwrap().unwrap(), &full);
    assert_same_account(&s.get_account("AKREAD").await.unwrap().unwrap(), &read);
    assert!(s.get_account("AKNONE").await.unwrap().is_none());

    // Ordered by creation time.
    let all = s.list_accounts().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_same_account(&all[0], &read);
    assert_same_account(&all[1], &full);

    s.delete_account("AKFULL").await.unwrap();
    assert_err!(s.delete_account("AKFULL").await, StoreError::NotFound);
    assert!(s.get_account("AKFULL").await.unwrap().is_none());
    assert_eq!(s.list_accounts().await.unwrap().len(), 1);

    // Only sealed secret keys are written: a clear one is refused, nothing
    // is stored, and the clear column of stored rows is empty.
    let mut clear = account("AKCLEAR", P, Role::Full, 40);
    clear.secret = AccountSecret::Clear("the-sk".to_owned().into());
    assert_err!(s.create_account(&clear).await, StoreError::ClearSecret);
    assert!(s.get_account("AKCLEAR").await.unwrap().is_none());
    assert_eq!(ctx.clear_secret_column().await, vec![String::new()]);
}

async fn legacy_clear_accounts_are_sealed_in_place(ctx: Ctx) {
    let s = &*ctx.store;
    // A row as written before migration 0003: clear SK, nothing sealed.
    ctx.exec(
        "INSERT INTO accounts (access_key, secret_key, project_id, user_id, role, created_ms) \
         VALUES ('AKOLD', $1, 'p', 'u', 'full', 1)",
        "old-clear-sk",
    )
    .await;
    let old = s.get_account("AKOLD").await.unwrap().unwrap();
    assert_eq!(old.secret.clear(), Some("old-clear-sk"));
    assert_eq!(
        s.list_accounts().await.unwrap()[0].secret.clear(),
        Some("old-clear-sk")
    );

    assert!(s.seal_account_secret("AKOLD", b"envelope").await.unwrap());
    let sealed = s.get_account("AKOLD").await.unwrap().unwrap();
    assert_eq!(sealed.secret, AccountSecret::Sealed(b"envelope".to_vec()));
    assert_eq!(sealed.role, Role::Full);
    assert_eq!(ctx.clear_secret_column().await, vec![String::new()]);
    // Compare-and-set: a sealed row is never re-sealed (two edges migrating
    // at once keep the first envelope), and a missing row is no error.
    assert!(!s.seal_account_secret("AKOLD", b"other").await.unwrap());
    assert_eq!(
        s.get_account("AKOLD").await.unwrap().unwrap().secret,
        AccountSecret::Sealed(b"envelope".to_vec())
    );
    assert!(!s.seal_account_secret("AKNONE", b"x").await.unwrap());
}

async fn account_roles_and_token_subjects(ctx: Ctx) {
    let s = &*ctx.store;
    let mut a = account("AK1", P, Role::ReadOnly, 1);
    a.user_id = "alice".into();
    let mut b = account("AK2", P, Role::ReadOnly, 2);
    b.user_id = "alice".into();
    let mut other = account("AK3", Q, Role::Full, 3);
    other.user_id = "alice".into();
    for acc in [&a, &b, &other] {
        s.create_account(acc).await.unwrap();
    }
    assert_eq!(s.user_role(P, "alice").await.unwrap(), Some(Role::ReadOnly));
    // The user's best account counts; another project's never does.
    s.set_account_role("AK2", Role::Full).await.unwrap();
    assert_eq!(
        s.get_account("AK2").await.unwrap().unwrap().role,
        Role::Full
    );
    assert_eq!(s.user_role(P, "alice").await.unwrap(), Some(Role::Full));
    s.set_account_role("AK2", Role::ReadOnly).await.unwrap();
    assert_eq!(s.user_role(P, "alice").await.unwrap(), Some(Role::ReadOnly));
    assert_eq!(s.user_role(P, "bob").await.unwrap(), None);
    assert_eq!(s.user_role("nowhere", "alice").await.unwrap(), None);
    s.delete_account("AK3").await.unwrap();
    assert_eq!(s.user_role(Q, "alice").await.unwrap(), None);
    assert_err!(
        s.set_account_role("AKNONE", Role::Full).await,
        StoreError::NotFound
    );
}

async fn seal_keys_first_writer_wins(ctx: Ctx) {
    let s = &*ctx.store;
    assert!(s.get_seal_key("seal-a").await.unwrap().is_none());
    let first = SealKey {
        name: "seal-a".into(),
        wrapping_key: "keymesh-domain-v1".into(),
        wrapped: vec![1; 40],
        created_ms: 5,
    };
    assert_eq!(s.put_seal_key_if_missing(&first).await.unwrap(), first);
    let second = SealKey {
        wrapped: vec![2; 40],
        created_ms: 6,
        ..first.clone()
    };
    assert_eq!(s.put_seal_key_if_missing(&second).await.unwrap(), first);
    assert_eq!(s.get_seal_key("seal-a").await.unwrap(), Some(first.clone()));
    assert_eq!(
        ctx.reopen().await.get_seal_key("seal-a").await.unwrap(),
        Some(first)
    );

    // Concurrent first users all get the one key stored.
    let keys: Vec<SealKey> = (0..8u8)
        .map(|i| SealKey {
            name: "seal-b".into(),
            wrapping_key: "keymesh-domain-v1".into(),
            wrapped: vec![i; 40],
            created_ms: i64::from(i),
        })
        .collect();
    let mut tasks = Vec::new();
    for k in keys {
        let store = Arc::clone(&ctx.store);
        tasks.push(tokio::spawn(async move {
            store.put_seal_key_if_missing(&k).await.unwrap()
        }));
    }
    let mut won = BTreeSet::new();
    for t in tasks {
        won.insert(t.await.unwrap().wrapped);
    }
    assert_eq!(won.len(), 1);
}

// ---- keys ---------------------------------------------------------------------------

async fn keys_create_and_read(ctx: Ctx) {
    let s = &*ctx.store;
    let k1 = key(P, "k1", "alias-1", 100);
    add_key(s, &k1).await;
    let m1 = material("k1", 1);

    assert_eq!(s.get_key(P, "k1").await.unwrap(), Some(k1.clone()));
    assert_eq!(
        s.get_key_with_material(P, "k1").await.unwrap(),
        Some((k1.clone(), Some(m1.clone())))
    );
    assert_eq!(s.get_material(P, "k1", 1).await.unwrap(), Some(m1));
    assert_eq!(s.get_material(P, "k1", 2).await.unwrap(), None);
    assert_eq!(
        s.find_key_by_alias(P, "alias-1").await.unwrap(),
        Some(k1.clone())
    );
    assert_eq!(s.find_key_by_alias(P, "alias-2").await.unwrap(), None);
    assert_eq!(s.get_key(P, "nope").await.unwrap(), None);
    assert_eq!(s.get_key_with_material(P, "nope").await.unwrap(), None);

    // No material yet (external origin, pending import): every field
    // round-trips, including the optional ones.
    let mut k2 = key(P, "k2", "alias-2", 200);
    k2.state = KeyState::PendingImport;
    k2.origin = "external".to_owned();
    k2.material_version = 0;
    k2.default_key = true;
    k2.deletion_ms = Some(123_456);
    k2.enterprise_project_id = "eps-2".to_owned();
    k2.keystore_id = "ks-2".to_owned();
    s.create_key(&k2, None, &Quotas::default()).await.unwrap();
    assert_eq!(s.get_key(P, "k2").await.unwrap(), Some(k2.clone()));
    assert_eq!(
        s.get_key_with_material(P, "k2").await.unwrap(),
        Some((k2, None))
    );

    // Material is filed under the key being created.
    let k3 = key(P, "k3", "alias-3", 300);
    s.create_key(&k3, Some(&material("k1", 1)), &Quotas::default())
        .await
        .unwrap();
    assert_eq!(
        s.get_material(P, "k3", 1).await.unwrap(),
        Some(material("k3", 1))
    );

    // Another project sees none of it.
    assert_eq!(s.get_key(Q, "k1").await.unwrap(), None);
    assert_eq!(s.get_key_with_material(Q, "k1").await.unwrap(), None);
    assert_eq!(s.get_material(Q, "k1", 1).await.unwrap(), None);
    assert_eq!(s.find_key_by_alias(Q, "alias-1").await.unwrap(), None);
    assert_eq!(
        s.list_keys(Q, &KeyFilter::default(), 0, 10).await.unwrap(),
        empty()
    );

    // The key alias is unique per project; nothing is written on conflict.
    assert_err!(
        s.create_key(
            &key(P, "k4", "alias-1", 400),
            Some(&material("k4", 1)),
            &Quotas::default()
        )
        .await,
        StoreError::Conflict(Conflict::KeyAlias)
    );
    assert_eq!(s.get_key(P, "k4").await.unwrap(), None);
    add_key(s, &key(Q, "q1", "alias-1", 400)).await;

    // Key ids are unique across projects.
    assert_err!(
        s.create_key(&key(Q, "k1", "other", 500), None, &Quotas::default())
            .await,
        StoreError::Conflict(Conflict::KeyId)
    );
    assert_eq!(s.get_key(P, "k1").await.unwrap(), Some(k1));
}

async fn key_quota_counts_customer_keys_only(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = Quotas {
        keys_per_project: 2,
        ..Quotas::default()
    };
    s.create_key(&key(P, "k1", "a1", 1), None, &quotas)
        .await
        .unwrap();
    s.create_key(&key(P, "k2", "a2", 2), None, &quotas)
        .await
        .unwrap();
    assert_err!(
        s.create_key(&key(P, "k3", "a3", 3), None, &quotas).await,
        StoreError::Quota(QuotaKind::Keys)
    );
    assert_eq!(s.get_key(P, "k3").await.unwrap(), None);

    // Default keys are outside the quota, and so is another project.
    let mut default = key(P, "kd", "kms/default", 4);
    default.default_key = true;
    s.create_key(&default, None, &quotas).await.unwrap();
    s.create_key(&key(Q, "q1", "a1", 5), None, &quotas)
        .await
        .unwrap();

    // Keys pending deletion still count.
    s.transition(
        P,
        "k1",
        &[KeyState::Enabled],
        KeyState::PendingDeletion,
        Some(99),
    )
    .await
    .unwrap();
    assert_err!(
        s.create_key(&key(P, "k3", "a3", 6), None, &quotas).await,
        StoreError::Quota(QuotaKind::Keys)
    );

    let usage = s.usage(P).await.unwrap();
    assert_eq!((usage.keys, usage.grants), (2, 0));
    assert_eq!(s.usage(Q).await.unwrap().keys, 1);
    assert_eq!(s.usage("no-such-project").await.unwrap().keys, 0);
}

async fn list_keys_pages_and_filters(ctx: Ctx) {
    let s = &*ctx.store;
    add_key(s, &key(P, "k-a", "a", 300)).await;
    add_key(s, &key(P, "k-b", "b", 100)).await;
    // Same creation time: ordered by key id.
    add_key(s, &key(P, "k-d", "d", 200)).await;
    add_key(s, &key(P, "k-c", "c", 200)).await;
    let mut e = key(P, "k-e", "e", 400);
    e.spec = "RSA_2048".to_owned();
    e.state = KeyState::Disabled;
    e.enterprise_project_id = "eps-1".to_owned();
    add_key(s, &e).await;
    add_key(s, &key(Q, "q-1", "a", 50)).await;

    let all = KeyFilter::default();
    let page = s.list_keys(P, &all, 0, 2).await.unwrap();
    assert_eq!(ids(&page.items), ["k-b", "k-c"]);
    assert_eq!((page.next_offset, page.total), (Some(2), 5));
    let page = s.list_keys(P, &all, 2, 2).await.unwrap();
    assert_eq!(ids(&page.items), ["k-d", "k-a"]);
    assert_eq!((page.next_offset, page.total), (Some(4), 5));
    let page = s.list_keys(P, &all, 4, 2).await.unwrap();
    assert_eq!(ids(&page.items), ["k-e"]);
    assert_eq!((page.next_offset, page.total), (None, 5));
    assert_eq!(page.items[0], e);
    let page = s.list_keys(P, &all, 5, 2).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!((page.next_offset, page.total), (None, 5));
    let page = s.list_keys(P, &all, 0, 100).await.unwrap();
    assert_eq!(ids(&page.items), ["k-b", "k-c", "k-d", "k-a", "k-e"]);
    assert_eq!(page.next_offset, None);

    let by_state = KeyFilter {
        state: Some(KeyState::Disabled),
        ..KeyFilter::default()
    };
    let page = s.list_keys(P, &by_state, 0, 10).await.unwrap();
    assert_eq!((ids(&page.items), page.total), (vec!["k-e"], 1));

    let by_spec = KeyFilter {
        spec: Some("AES_256".to_owned()),
        ..KeyFilter::default()
    };
    let page = s.list_keys(P, &by_spec, 0, 3).await.unwrap();
    assert_eq!(ids(&page.items), ["k-b", "k-c", "k-d"]);
    assert_eq!((page.next_offset, page.total), (Some(3), 4));

    let by_eps = KeyFilter {
        enterprise_project_id: Some("eps-1".to_owned()),
        ..KeyFilter::default()
    };
    assert_eq!(s.list_keys(P, &by_eps, 0, 10).await.unwrap().total, 1);

    let none = KeyFilter {
        state: Some(KeyState::Enabled),
        spec: Some("RSA_2048".to_owned()),
        enterprise_project_id: None,
    };
    assert_eq!(s.list_keys(P, &none, 0, 10).await.unwrap(), empty());

    let page = s.list_keys(Q, &all, 0, 10).await.unwrap();
    assert_eq!((ids(&page.items), page.total), (vec!["q-1"], 1));
}

async fn transitions_are_compare_and_set(ctx: Ctx) {
    let s = &*ctx.store;
    add_key(s, &key(P, "k1", "a1", 1)).await;

    let disabled = s
        .transition(P, "k1", &[KeyState::Enabled], KeyState::Disabled, None)
        .await
        .unwrap();
    assert_eq!(disabled.state, KeyState::Disabled);
    assert_eq!(s.get_key(P, "k1").await.unwrap(), Some(disabled));

    assert_err!(
        s.transition(P, "k1", &[KeyState::Enabled], KeyState::Disabled, None)
            .await,
        StoreError::WrongState {
            current: KeyState::Disabled
        }
    );

    let pending = s
        .transition(
            P,
            "k1",
            &[KeyState::Enabled, KeyState::Disabled],
            KeyState::PendingDeletion,
            Some(7_000),
        )
        .await
        .unwrap();
    assert_eq!(
        (pending.state, pending.deletion_ms),
        (KeyState::PendingDeletion, Some(7_000))
    );

    let cancelled = s
        .transition(
            P,
            "k1",
            &[KeyState::PendingDeletion],
            KeyState::Disabled,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.deletion_ms),
        (KeyState::Disabled, None)
    );
    assert_eq!(s.get_key(P, "k1").await.unwrap(), Some(cancelled));

    // An empty `from` matches no state.
    assert_err!(
        s.transition(P, "k1", &[], KeyState::Enabled, None).await,
        StoreError::WrongState {
            current: KeyState::Disabled
        }
    );
    assert_err!(
        s.transition(Q, "k1", &[KeyState::Disabled], KeyState::Enabled, None)
            .await,
        StoreError::NotFound
    );
    assert_err!(
        s.transition(P, "nope", &[KeyState::Disabled], KeyState::Enabled, None)
            .await,
        StoreError::NotFound
    );
    assert_eq!(
        s.get_key(P, "k1").await.unwrap().unwrap().state,
        KeyState::Disabled
    );
}

async fn concurrent_transitions_one_winner(ctx: Ctx) {
    add_key(&*ctx.store, &key(P, "k1", "a1", 1)).await;
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let store = ctx.store.clone();
            tokio::spawn(async move {
                store
                    .transition(P, "k1", &[KeyState::Enabled], KeyState::Disabled, None)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(key) => {
                assert_eq!(key.state, KeyState::Disabled);
                won += 1;
            }
            Err(StoreError::WrongState {
                current: KeyState::Disabled,
            }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(won, 1);
}

async fn concurrent_create_key_respects_quota(ctx: Ctx) {
    let quotas = Quotas {
        keys_per_project: 10,
        ..Quotas::default()
    };
    for free in [1usize, 3] {
        let project = format!("project-with-{free}-free");
        for i in 0..10 - free {
            ctx.store
                .create_key(
                    &key(
                        &project,
                        &format!("{project}-pre-{i}"),
                        &format!("pre-{i}"),
                        1,
                    ),
                    None,
                    &quotas,
                )
                .await
                .unwrap();
        }
        let attempts: Vec<_> = (0..16)
            .map(|i| {
                let store = ctx.store.clone();
                let key = key(
                    &project,
                    &format!("{project}-new-{i}"),
                    &format!("new-{i}"),
                    2,
                );
                let material = material(&key.key_id, 1);
                tokio::spawn(async move { store.create_key(&key, Some(&material), &quotas).await })
            })
            .collect();
        let mut created = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(()) => created += 1,
                Err(StoreError::Quota(QuotaKind::Keys)) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(created, free, "{project}");
        assert_eq!(ctx.store.usage(&project).await.unwrap().keys, 10);
        let listed = ctx
            .store
            .list_keys(&project, &KeyFilter::default(), 0, 100)
            .await
            .unwrap();
        assert_eq!(listed.total, 10);
    }
}

async fn concurrent_create_key_same_alias(ctx: Ctx) {
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let store = ctx.store.clone();
            let key = key(P, &format!("k{i}"), "contested", i);
            tokio::spawn(async move { store.create_key(&key, None, &Quotas::default()).await })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(Conflict::KeyAlias)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ctx.store.usage(P).await.unwrap().keys, 1);
}

async fn key_alias_and_description_updates(ctx: Ctx) {
    let s = &*ctx.store;
    add_key(s, &key(P, "k1", "first", 1)).await;
    add_key(s, &key(P, "k2", "second", 2)).await;

    let renamed = s.update_key_alias(P, "k1", "renamed").await.unwrap();
    assert_eq!(renamed.alias, "renamed");
    assert_eq!(
        s.find_key_by_alias(P, "renamed").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(s.find_key_by_alias(P, "first").await.unwrap(), None);
    // The freed name can be taken again.
    add_key(s, &key(P, "k3", "first", 3)).await;

    assert_err!(
        s.update_key_alias(P, "k1", "second").await,
        StoreError::Conflict(Conflict::KeyAlias)
    );
    assert_eq!(s.get_key(P, "k1").await.unwrap().unwrap().alias, "renamed");
    // Its own alias is no conflict.
    s.update_key_alias(P, "k1", "renamed").await.unwrap();
    assert_err!(s.update_key_alias(Q, "k1", "x").await, StoreError::NotFound);
    assert_err!(
        s.update_key_alias(P, "nope", "x").await,
        StoreError::NotFound
    );

    let described = s
        .update_key_description(P, "k1", "new words")
        .await
        .unwrap();
    assert_eq!(described.description, "new words");
    assert_eq!(s.get_key(P, "k1").await.unwrap(), Some(described));
    assert_err!(
        s.update_key_description(Q, "k1", "x").await,
        StoreError::NotFound
    );
    assert_err!(
        s.update_key_description(P, "nope", "x").await,
        StoreError::NotFound
    );
}

// ---- purge ----------------------------------------------------------------------------

async fn purge_follows_the_clock(ctx: Ctx) {
    const T: i64 = 1_700_000_000_000;
    let s = &*ctx.store;
    // `doomed` has everything a key can own.
    add_key(s, &key(P, "doomed", "doomed", 1)).await;
    s.create_alias(&alias(P, "alias/doomed", "doomed", 1), &Quotas::default())
        .await
        .unwrap();
    s.put_tags(P, "doomed", &[tag("env", "old")], &Quotas::default())
        .await
        .unwrap();
    s.create_grant(&grant(P, 1, "doomed", 1), &Quotas::default())
        .await
        .unwrap();
    // `keeper` is alive and owns the same kinds of rows.
    add_key(s, &key(P, "keeper", "keeper", 2)).await;
    s.create_alias(&alias(P, "alias/keeper", "keeper", 2), &Quotas::default())
        .await
        .unwrap();
    s.put_tags(P, "keeper", &[tag("env", "new")], &Quotas::default())
        .await
        .unwrap();
    s.create_grant(&grant(P, 2, "keeper", 2), &Quotas::default())
        .await
        .unwrap();
    // `later` is due after T; `other` is another project's key due at T;
    // `cancelled` was scheduled for T and then cancelled.
    add_key(s, &key(P, "later", "later", 3)).await;
    add_key(s, &key(Q, "other", "other", 4)).await;
    add_key(s, &key(P, "cancelled", "cancelled", 5)).await;
    let schedule = |project: &'static str, id: &'static str, at: i64| async move {
        s.transition(
            project,
            id,
            &[KeyState::Enabled],
            KeyState::PendingDeletion,
            Some(at),
        )
        .await
        .unwrap();
    };
    schedule(P, "doomed", T).await;
    schedule(P, "later", T + 10).await;
    schedule(Q, "other", T).await;
    schedule(P, "cancelled", T).await;
    s.transition(
        P,
        "cancelled",
        &[KeyState::PendingDeletion],
        KeyState::Disabled,
        None,
    )
    .await
    .unwrap();

    assert!(s.purge_due_keys(T - 1).await.unwrap().is_empty());
    assert!(s.get_key(P, "doomed").await.unwrap().is_some());
    assert_eq!(ctx.rows_of_key("key_materials", "doomed").await, 1);

    let mut purged = s.purge_due_keys(T).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["doomed", "other"]);

    assert_eq!(s.get_key(P, "doomed").await.unwrap(), None);
    assert_eq!(s.get_key_with_material(P, "doomed").await.unwrap(), None);
    assert_eq!(s.get_material(P, "doomed", 1).await.unwrap(), None);
    assert_eq!(s.find_key_by_alias(P, "doomed").await.unwrap(), None);
    assert_err!(s.key_tags(P, "doomed").await, StoreError::NotFound);
    assert_eq!(
        s.get_grant(P, &grant(P, 1, "", 0).grant_id).await.unwrap(),
        None
    );
    assert_eq!(s.list_grants(P, "doomed", 0, 10).await.unwrap(), empty());
    let aliases = s.list_aliases(P, None, 0, 10).await.unwrap();
    assert_eq!(aliases.items, [alias(P, "alias/keeper", "keeper", 2)]);
    assert_eq!(s.project_tags(P).await.unwrap(), sm(&[("env", &["new"])]));
    assert_eq!(s.usage(P).await.unwrap().grants, 1);
    for table in ["keys", "key_materials", "key_tags", "aliases", "grants"] {
        assert_eq!(ctx.rows_of_key(table, "doomed").await, 0, "{table}");
    }
    assert_eq!(ctx.rows_of_key("key_materials", "keeper").await, 1);
    assert_eq!(s.get_key(Q, "other").await.unwrap(), None);

    // The rest is untouched, and purging again finds nothing new.
    assert_eq!(s.key_tags(P, "keeper").await.unwrap(), [tag("env", "new")]);
    assert!(s.get_key(P, "later").await.unwrap().is_some());
    assert!(s.get_key(P, "cancelled").await.unwrap().is_some());
    assert!(s.purge_due_keys(T).await.unwrap().is_empty());
    assert_eq!(s.purge_due_keys(T + 10).await.unwrap(), ["later"]);
    assert!(s.purge_due_keys(i64::MAX).await.unwrap().is_empty());
    assert!(s.get_key(P, "cancelled").await.unwrap().is_some());
}

async fn concurrent_purges_split_the_work(ctx: Ctx) {
    let mut due = BTreeSet::new();
    for i in 0..8 {
        let id = format!("k{i}");
        add_key(&*ctx.store, &key(P, &id, &id, i)).await;
        ctx.store
            .transition(
                P,
                &id,
                &[KeyState::Enabled],
                KeyState::PendingDeletion,
                Some(100 + i),
            )
            .await
            .unwrap();
        due.insert(id);
    }
    let purges: Vec<_> = (0..4)
        .map(|_| {
            let store = ctx.store.clone();
            tokio::spawn(async move { store.purge_due_keys(1_000).await })
        })
        .collect();
    let mut purged = Vec::new();
    for purge in purges {
        purged.extend(purge.await.unwrap().unwrap());
    }
    // Every due key is reported exactly once.
    purged.sort();
    assert_eq!(purged, due.into_iter().collect::<Vec<_>>());
    assert_eq!(ctx.store.usage(P).await.unwrap().keys, 0);
}

// ---- alias resources ---------------------------------------------------------------------

async fn alias_resources(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = Quotas {
        aliases_per_key: 2,
        ..Quotas::default()
    };
    add_key(s, &key(P, "k1", "k1", 1)).await;
    add_key(s, &key(P, "k2", "k2", 2)).await;
    add_key(s, &key(Q, "q1", "q1", 3)).await;

    s.create_alias(&alias(P, "alias/one", "k1", 10), &quotas)
        .await
        .unwrap();
    s.create_alias(&alias(P, "alias/two", "k1", 11), &quotas)
        .await
        .unwrap();
    assert_err!(
        s.create_alias(&alias(P, "alias/three", "k1", 12), &quotas)
            .await,
        StoreError::Quota(QuotaKind::AliasesPerKey)
    );
    assert_err!(
        s.create_alias(&alias(P, "alias/one", "k2", 13), &quotas)
            .await,
        StoreError::Conflict(Conflict::Alias)
    );
    assert_err!(
        s.create_alias(&alias(P, "alias/x", "nope", 14), &quotas)
            .await,
        StoreError::NotFound
    );
    // A key of another project is not found; names are per project.
    assert_err!(
        s.create_alias(&alias(Q, "alias/x", "k1", 15), &quotas)
            .await,
        StoreError::NotFound
    );
    s.create_alias(&alias(Q, "alias/one", "q1", 16), &quotas)
        .await
        .unwrap();

    let page = s.list_aliases(P, None, 0, 10).await.unwrap();
    assert_eq!(
        page.items,
        [
            alias(P, "alias/one", "k1", 10),
            alias(P, "alias/two", "k1", 11)
        ]
    );
    assert_eq!((page.next_offset, page.total), (None, 2));
    let page = s.list_aliases(P, None, 0, 1).await.unwrap();
    assert_eq!(page.items, [alias(P, "alias/one", "k1", 10)]);
    assert_eq!((page.next_offset, page.total), (Some(1), 2));
    let page = s.list_aliases(P, None, 1, 1).await.unwrap();
    assert_eq!(page.items, [alias(P, "alias/two", "k1", 11)]);
    assert_eq!(page.next_offset, None);
    assert_eq!(s.list_aliases(P, Some("k2"), 0, 10).await.unwrap(), empty());
    assert_eq!(s.list_aliases(P, Some("k1"), 0, 10).await.unwrap().total, 2);
    let page = s.list_aliases(Q, None, 0, 10).await.unwrap();
    assert_eq!(page.items, [alias(Q, "alias/one", "q1", 16)]);
    assert_eq!(s.list_aliases(Q, Some("k1"), 0, 10).await.unwrap(), empty());

    // Re-point: the target's quota applies, the alias keeps its creation time.
    let moved = s
        .associate_alias(P, "alias/two", "k2", 50, &quotas)
        .await
        .unwrap();
    assert_eq!(
        moved,
        AliasRecord {
            updated_ms: 50,
            ..alias(P, "alias/two", "k2", 11)
        }
    );
    s.create_alias(&alias(P, "alias/extra", "k2", 51), &quotas)
        .await
        .unwrap();
    assert_err!(
        s.associate_alias(P, "alias/one", "k2", 52, &quotas).await,
        StoreError::Quota(QuotaKind::AliasesPerKey)
    );
    // Re-pointing at the same key (already at quota) is allowed.
    let same = s
        .associate_alias(P, "alias/two", "k2", 53, &quotas)
        .await
        .unwrap();
    assert_eq!((same.key_id.as_str(), same.updated_ms), ("k2", 53));
    assert_err!(
        s.associate_alias(P, "alias/none", "k2", 54, &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.associate_alias(P, "alias/one", "nope", 55, &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.associate_alias(P, "alias/one", "q1", 56, &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.associate_alias(Q, "alias/two", "q1", 57, &quotas).await,
        StoreError::NotFound
    );
    assert_eq!(s.list_aliases(P, Some("k1"), 0, 10).await.unwrap().total, 1);

    // Delete all or nothing.
    let both = ["alias/two".to_owned(), "alias/missing".to_owned()];
    assert_err!(s.delete_aliases(P, "k2", &both).await, StoreError::NotFound);
    // An alias of another key is not this key's.
    let wrong_key = ["alias/two".to_owned(), "alias/one".to_owned()];
    assert_err!(
        s.delete_aliases(P, "k2", &wrong_key).await,
        StoreError::NotFound
    );
    assert_eq!(s.list_aliases(P, Some("k2"), 0, 10).await.unwrap().total, 2);
    assert_err!(
        s.delete_aliases(Q, "k2", &["alias/two".to_owned()]).await,
        StoreError::NotFound
    );
    assert_err!(s.delete_aliases(P, "nope", &[]).await, StoreError::NotFound);
    let twice = [
        "alias/two".to_owned(),
        "alias/extra".to_owned(),
        "alias/two".to_owned(),
    ];
    s.delete_aliases(P, "k2", &twice).await.unwrap();
    assert_eq!(s.list_aliases(P, Some("k2"), 0, 10).await.unwrap(), empty());
    assert_eq!(s.list_aliases(P, None, 0, 10).await.unwrap().total, 1);
    assert_eq!(s.list_aliases(Q, None, 0, 10).await.unwrap().total, 1);
}

// ---- tags -------------------------------------------------------------------------------

async fn tags(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = Quotas {
        tags_per_key: 3,
        ..Quotas::default()
    };
    add_key(s, &key(P, "k1", "k1", 1)).await;
    add_key(s, &key(P, "k2", "k2", 2)).await;
    add_key(s, &key(Q, "q1", "q1", 3)).await;
    assert!(s.key_tags(P, "k1").await.unwrap().is_empty());

    s.put_tags(P, "k1", &[tag("b", "1"), tag("a", "1")], &quotas)
        .await
        .unwrap();
    assert_eq!(
        s.key_tags(P, "k1").await.unwrap(),
        [tag("a", "1"), tag("b", "1")]
    );
    // Upsert: `a` is replaced, so the key ends with 3 tags.
    s.put_tags(P, "k1", &[tag("a", "2"), tag("c", "3")], &quotas)
        .await
        .unwrap();
    assert_eq!(
        s.key_tags(P, "k1").await.unwrap(),
        [tag("a", "2"), tag("b", "1"), tag("c", "3")]
    );
    // A fourth would exceed the quota: nothing changes, not even `a`.
    assert_err!(
        s.put_tags(P, "k1", &[tag("a", "9"), tag("d", "4")], &quotas)
            .await,
        StoreError::Quota(QuotaKind::TagsPerKey)
    );
    assert_eq!(s.key_tags(P, "k1").await.unwrap()[0], tag("a", "2"));
    // The last value of a key given twice wins.
    s.put_tags(P, "k1", &[tag("b", "x"), tag("b", "y")], &quotas)
        .await
        .unwrap();
    assert_eq!(s.key_tags(P, "k1").await.unwrap()[1], tag("b", "y"));

    // Delete all or nothing.
    assert_err!(
        s.delete_tags(P, "k1", &strings(&["a", "zz"])).await,
        StoreError::NotFound
    );
    assert_eq!(s.key_tags(P, "k1").await.unwrap().len(), 3);
    s.delete_tags(P, "k1", &strings(&["a", "c"])).await.unwrap();
    assert_eq!(s.key_tags(P, "k1").await.unwrap(), [tag("b", "y")]);

    // Missing keys and other projects' keys.
    assert_err!(s.key_tags(P, "nope").await, StoreError::NotFound);
    assert_err!(s.key_tags(Q, "k1").await, StoreError::NotFound);
    assert_err!(
        s.put_tags(Q, "k1", &[tag("x", "1")], &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.put_tags(P, "nope", &[], &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_tags(Q, "k1", &["b".to_owned()]).await,
        StoreError::NotFound
    );
    assert_err!(s.delete_tags(P, "nope", &[]).await, StoreError::NotFound);
    assert_eq!(s.key_tags(P, "k1").await.unwrap(), [tag("b", "y")]);

    s.put_tags(P, "k2", &[tag("env", "prod"), tag("b", "1")], &quotas)
        .await
        .unwrap();
    s.put_tags(P, "k1", &[tag("env", "dev")], &quotas)
        .await
        .unwrap();
    s.put_tags(Q, "q1", &[tag("env", "qa"), tag("only-q", "1")], &quotas)
        .await
        .unwrap();
    assert_eq!(
        s.project_tags(P).await.unwrap(),
        sm(&[("b", &["1", "y"]), ("env", &["dev", "prod"])])
    );
    assert_eq!(
        s.project_tags(Q).await.unwrap(),
        sm(&[("env", &["qa"]), ("only-q", &["1"])])
    );
    assert!(s.project_tags("no-such-project").await.unwrap().is_empty());
}

async fn find_keys_by_tags(ctx: Ctx) {
    let s = &*ctx.store;
    let q = Quotas::default();
    add_key(s, &key(P, "k1", "web-frontend", 1)).await;
    add_key(s, &key(P, "k2", "web-backend", 2)).await;
    add_key(s, &key(P, "k3", "db", 3)).await;
    add_key(s, &key(P, "k4", "WEB-admin", 4)).await;
    add_key(s, &key(Q, "q1", "web-q", 5)).await;
    s.put_tags(P, "k1", &[tag("team", "a"), tag("env", "prod")], &q)
        .await
        .unwrap();
    s.put_tags(P, "k2", &[tag("env", "dev"), tag("team", "a")], &q)
        .await
        .unwrap();
    s.put_tags(P, "k3", &[tag("env", "prod")], &q)
        .await
        .unwrap();
    s.put_tags(Q, "q1", &[tag("env", "prod")], &q)
        .await
        .unwrap();

    let find = |filter: TagFilter| async move {
        let page = s.find_keys_by_tags(P, &filter, 0, 100).await.unwrap();
        assert_eq!(page.total as usize, page.items.len());
        page.items
            .iter()
            .map(|(k, _)| k.key_id.clone())
            .collect::<Vec<_>>()
    };

    assert_eq!(find(TagFilter::default()).await, ["k1", "k2", "k3", "k4"]);
    assert_eq!(find(tag_filter(&[("env", &["prod"])])).await, ["k1", "k3"]);
    assert_eq!(
        find(tag_filter(&[("env", &["prod", "dev"])])).await,
        ["k1", "k2", "k3"]
    );
    assert_eq!(find(tag_filter(&[("team", &[])])).await, ["k1", "k2"]);
    assert_eq!(
        find(tag_filter(&[("env", &["prod"]), ("team", &[])])).await,
        ["k1"]
    );
    assert!(find(tag_filter(&[("nope", &[])])).await.is_empty());
    assert!(find(tag_filter(&[("env", &["staging"])])).await.is_empty());
    // resource_name: case-sensitive substring of the key alias.
    assert_eq!(find(named("web", TagFilter::default())).await, ["k1", "k2"]);
    assert_eq!(find(named("WEB", TagFilter::default())).await, ["k4"]);
    assert_eq!(
        find(named("-", TagFilter::default())).await,
        ["k1", "k2", "k4"]
    );
    assert_eq!(
        find(named("web", tag_filter(&[("env", &["prod"])]))).await,
        ["k1"]
    );
    assert!(find(named("%", TagFilter::default())).await.is_empty());

    // Pages, with each key's tags sorted.
    let page = s
        .find_keys_by_tags(P, &TagFilter::default(), 0, 3)
        .await
        .unwrap();
    assert_eq!((page.next_offset, page.total), (Some(3), 4));
    assert_eq!(page.items[0].1, [tag("env", "prod"), tag("team", "a")]);
    assert_eq!(page.items[2].1, [tag("env", "prod")]);
    let page = s
        .find_keys_by_tags(P, &TagFilter::default(), 3, 3)
        .await
        .unwrap();
    assert_eq!((page.next_offset, page.total), (None, 4));
    assert_eq!(page.items[0].0.key_id, "k4");
    assert!(page.items[0].1.is_empty());

    // Another project.
    let page = s
        .find_keys_by_tags(Q, &tag_filter(&[("env", &["prod"])]), 0, 10)
        .await
        .unwrap();
    assert_eq!(ids(page.items.iter().map(|(k, _)| k)), ["q1"]);
    assert_eq!(page.items[0].1, [tag("env", "prod")]);
    assert_eq!(
        s.find_keys_by_tags("no-such-project", &TagFilter::default(), 0, 10)
            .await
            .unwrap(),
        empty()
    );
}

// ---- grants -----------------------------------------------------------------------------

async fn grants(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = Quotas {
        grants_per_key: 2,
        grants_per_project: 3,
        ..Quotas::default()
    };
    add_key(s, &key(P, "k1", "k1", 1)).await;
    add_key(s, &key(P, "k2", "k2", 2)).await;
    add_key(s, &key(Q, "q1", "q1", 3)).await;

    let g1 = grant(P, 1, "k1", 20);
    let g2 = grant(P, 2, "k1", 10);
    let mut g3 = grant(P, 3, "k2", 30);
    g3.retiring_principal = String::new();
    s.create_grant(&g1, &quotas).await.unwrap();
    s.create_grant(&g2, &quotas).await.unwrap();
    assert_err!(
        s.create_grant(&grant(P, 9, "k1", 40), &quotas).await,
        StoreError::Quota(QuotaKind::GrantsPerKey)
    );
    s.create_grant(&g3, &quotas).await.unwrap();
    assert_err!(
        s.create_grant(&grant(P, 9, "k2", 40), &quotas).await,
        StoreError::Quota(QuotaKind::GrantsPerProject)
    );
    assert_err!(
        s.create_grant(&grant(P, 9, "nope", 40), &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.create_grant(&grant(Q, 9, "k1", 40), &quotas).await,
        StoreError::NotFound
    );
    let gq = grant(Q, 4, "q1", 5);
    s.create_grant(&gq, &quotas).await.unwrap();
    assert_eq!(s.usage(P).await.unwrap().grants, 3);
    assert_eq!(s.usage(Q).await.unwrap().grants, 1);

    // Per key, by creation time.
    let page = s.list_grants(P, "k1", 0, 10).await.unwrap();
    assert_eq!(page.items, [g2.clone(), g1.clone()]);
    assert_eq!((page.next_offset, page.total), (None, 2));
    let page = s.list_grants(P, "k1", 0, 1).await.unwrap();
    assert_eq!(
        (page.items, page.next_offset, page.total),
        (vec![g2.clone()], Some(1), 2)
    );
    assert_eq!(s.list_grants(Q, "k1", 0, 10).await.unwrap(), empty());
    assert_eq!(s.list_grants(P, "nope", 0, 10).await.unwrap(), empty());

    assert_eq!(
        s.get_grant(P, &g1.grant_id).await.unwrap(),
        Some(g1.clone())
    );
    assert_eq!(
        s.get_grant(P, &g3.grant_id).await.unwrap(),
        Some(g3.clone())
    );
    assert_eq!(s.get_grant(Q, &g1.grant_id).await.unwrap(), None);
    assert_eq!(s.get_grant(P, &gq.grant_id).await.unwrap(), None);

    // Retirable: across the project's keys, never for the empty principal.
    let page = s.list_retirable_grants(P, "retirer1", 0, 10).await.unwrap();
    assert_eq!(page.items, [g2.clone(), g1.clone()]);
    let page = s.list_retirable_grants(P, "retirer1", 1, 1).await.unwrap();
    assert_eq!(
        (page.items, page.next_offset, page.total),
        (vec![g1.clone()], None, 2)
    );
    assert_eq!(
        s.list_retirable_grants(P, "", 0, 10).await.unwrap(),
        empty()
    );
    assert_eq!(
        s.list_retirable_grants(P, "someone", 0, 10).await.unwrap(),
        empty()
    );
    assert_eq!(
        s.list_retirable_grants(Q, "retirer1", 0, 10)
            .await
            .unwrap()
            .items,
        [gq]
    );

    assert_err!(
        s.delete_grant(P, "k2", &g1.grant_id).await,
        StoreError::GrantKeyMismatch
    );
    assert_err!(
        s.delete_grant(Q, "k1", &g1.grant_id).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_grant(P, "k1", &"f".repeat(64)).await,
        StoreError::NotFound
    );
    s.delete_grant(P, "k1", &g1.grant_id).await.unwrap();
    assert_err!(
        s.delete_grant(P, "k1", &g1.grant_id).await,
        StoreError::NotFound
    );
    assert_eq!(s.get_grant(P, &g1.grant_id).await.unwrap(), None);
    assert_eq!(s.usage(P).await.unwrap().grants, 2);
    // A slot is free again.
    s.create_grant(&grant(P, 9, "k1", 50), &quotas)
        .await
        .unwrap();
}

async fn concurrent_grants_respect_project_quota(ctx: Ctx) {
    let quotas = Quotas {
        grants_per_key: 100,
        grants_per_project: 5,
        ..Quotas::default()
    };
    add_key(&*ctx.store, &key(P, "k1", "k1", 1)).await;
    add_key(&*ctx.store, &key(P, "k2", "k2", 2)).await;
    for n in 0..3 {
        ctx.store
            .create_grant(&grant(P, n, "k1", 1), &quotas)
            .await
            .unwrap();
    }
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let store = ctx.store.clone();
            let grant = grant(P, 100 + i, if i % 2 == 0 { "k1" } else { "k2" }, 2);
            tokio::spawn(async move { store.create_grant(&grant, &quotas).await })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::Quota(QuotaKind::GrantsPerProject)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(created, 2);
    assert_eq!(ctx.store.usage(P).await.unwrap().grants, 5);
}

// ---- cross-cutting --------------------------------------------------------------------------

/// Names sort by bytes on every backend (PostgreSQL would otherwise use the
/// database locale), like Rust strings do.
async fn text_order_is_bytewise(ctx: Ctx) {
    let s = &*ctx.store;
    add_key(s, &key(P, "k1", "k1", 1)).await;
    let names = [
        "alias/b", "Alias/Z", "alias/a", "alias/_x", "alias/é", "alias/B",
    ];
    let quotas = Quotas::default();
    for name in names {
        s.create_alias(&alias(P, name, "k1", 1), &quotas)
            .await
            .unwrap();
    }
    let tags: Vec<Tag> = names.iter().map(|n| tag(n, "v")).collect();
    s.put_tags(P, "k1", &tags, &quotas).await.unwrap();

    let mut sorted = names.map(str::to_owned).to_vec();
    sorted.sort();
    let listed: Vec<String> = s
        .list_aliases(P, None, 0, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.alias)
        .collect();
    assert_eq!(listed, sorted);
    let tag_keys: Vec<String> = s
        .key_tags(P, "k1")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(tag_keys, sorted);
    let project_keys: Vec<String> = s
        .project_tags(P)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(project_keys, sorted);
}

async fn reopen_sees_committed_data(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = Quotas::default();
    s.create_account(&account("AK1", P, Role::Full, 1))
        .await
        .unwrap();
    let k1 = key(P, "k1", "k1", 1);
    add_key(s, &k1).await;
    s.create_alias(&alias(P, "alias/k1", "k1", 1), &quotas)
        .await
        .unwrap();
    s.put_tags(P, "k1", &[tag("env", "prod")], &quotas)
        .await
        .unwrap();
    let g = grant(P, 1, "k1", 1);
    s.create_grant(&g, &quotas).await.unwrap();

    let again = ctx.reopen().await;
    assert_same_account(
        &again.get_account("AK1").await.unwrap().unwrap(),
        &account("AK1", P, Role::Full, 1),
    );
    assert_eq!(
        again.get_key_with_material(P, "k1").await.unwrap(),
        Some((k1, Some(material("k1", 1))))
    );
    assert_eq!(again.list_aliases(P, None, 0, 10).await.unwrap().total, 1);
    assert_eq!(again.key_tags(P, "k1").await.unwrap(), [tag("env", "prod")]);
    assert_eq!(again.get_grant(P, &g.grant_id).await.unwrap(), Some(g));
}

// ---- backend-specific ---------------------------------------------------------------------

/// Several processes (here: pools) opening one fresh database at once all
/// succeed: the migration race is handled.
async fn concurrent_first_open(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { keymesh_store::open(&url).await.map(|_| ()) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for open in opens {
        outcomes.push(open.await.unwrap());
    }
    db.destroy().await;
    for outcome in outcomes {
        outcome.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_first_open() {
    concurrent_first_open(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_first_open() {
    concurrent_first_open(Backend::Postgres).await;
}

/// The file is created (with its directory), configured as documented,
/// and keeps a commit across a close and reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_settings_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/keymesh.db");
    let url = format!("sqlite://{}", path.display());
    let store = keymesh_store::SqliteStore::open(&url).await.unwrap();
    assert!(path.exists());
    add_key(&store, &key(P, "k1", "k1", 1)).await;
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    conn.close().await.unwrap();

    let reopened = keymesh_store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(
        reopened.get_key_with_material(P, "k1").await.unwrap(),
        Some((key(P, "k1", "k1", 1), Some(material("k1", 1))))
    );
}

#[tokio::test]
async fn unsupported_url() {
    assert_err!(
        keymesh_store::open("mysql://localhost/keymesh").await,
        StoreError::UnsupportedUrl
    );
}

// ---- CSMS: fixtures -----------------------------------------------------------------------

const CUR: &str = "SYSCURRENT";
const PREV: &str = "SYSPREVIOUS";

fn secret(project: &str, secret_id: &str, name: &str, created_ms: i64) -> SecretRecord {
    SecretRecord {
        secret_id: secret_id.to_owned(),
        project_id: project.to_owned(),
        name: name.to_owned(),
        state: SecretState::Enabled,
        kms_key_id: "k1".to_owned(),
        description: format!("description of {name}"),
        secret_type: "COMMON".to_owned(),
        auto_rotation: false,
        rotation_period: String::new(),
        rotation_config: String::new(),
        event_subscriptions: Vec::new(),
        enterprise_project_id: "0".to_owned(),
        rotation_func_urn: String::new(),
        created_ms,
        updated_ms: created_ms,
        scheduled_delete_ms: None,
    }
}

/// A version to write: the store assigns the id and ignores `secret_id`.
fn value(n: u8, created_ms: i64) -> SecretVersion {
    SecretVersion {
        secret_id: String::new(),
        version_id: String::new(),
        kms_key_id: "k1".to_owned(),
        ciphertext: vec![n; 24],
        created_ms,
        expire_ms: None,
        stages: Vec::new(),
    }
}

/// `value` as stored under `secret_id` with `version_id` and `stages`.
fn stored(
    n: u8,
    created_ms: i64,
    secret_id: &str,
    version_id: &str,
    stages: &[&str],
) -> SecretVersion {
    SecretVersion {
        secret_id: secret_id.to_owned(),
        version_id: version_id.to_owned(),
        stages: strings(stages),
        ..value(n, created_ms)
    }
}

fn stage(secret_id: &str, name: &str, version_id: &str, updated_ms: i64) -> StageRecord {
    StageRecord {
        secret_id: secret_id.to_owned(),
        name: name.to_owned(),
        version_id: version_id.to_owned(),
        updated_ms,
    }
}

/// What a create-secret request writes: `v1` (value 1) with SYSCURRENT.
async fn create_secret_with(
    store: &dyn Store,
    secret: &SecretRecord,
    quotas: &SecretQuotas,
) -> Result<(), StoreError> {
    let mut v1 = value(1, secret.created_ms);
    v1.version_id = "v1".to_owned();
    store
        .create_secret(
            secret,
            &[v1],
            &[stage(&secret.secret_id, CUR, "v1", secret.created_ms)],
            quotas,
        )
        .await
}

async fn add_secret(store: &dyn Store, secret: &SecretRecord) {
    create_secret_with(store, secret, &SecretQuotas::default())
        .await
        .unwrap();
}

/// Adds value `n` with `stages`, default quotas; returns the new id.
async fn add_value(store: &dyn Store, project: &str, name: &str, n: u8, stages: &[&str]) -> String {
    let stages = strings(stages);
    store
        .add_version(
            project,
            name,
            &value(n, 100 + i64::from(n)),
            &stages,
            &SecretQuotas::default(),
            1_000 + i64::from(n),
        )
        .await
        .unwrap()
        .version_id
}

/// `(version id, stages)` of every version, oldest first.
async fn stage_map(store: &dyn Store, project: &str, name: &str) -> Vec<(String, Vec<String>)> {
    store
        .all_versions(project, name)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version_id, v.stages))
        .collect()
}

fn names(page: &Keyset<SecretRecord>) -> Vec<&str> {
    page.items.iter().map(|s| s.name.as_str()).collect()
}

fn version_ids(page: &Keyset<SecretVersion>) -> Vec<&str> {
    page.items.iter().map(|v| v.version_id.as_str()).collect()
}

// ---- CSMS: secrets --------------------------------------------------------------------------

async fn secrets_create_read_update_delete(ctx: Ctx) {
    let s = &*ctx.store;
    let mut s1 = secret(P, "id-1", "db-password", 100);
    s1.auto_rotation = true;
    s1.rotation_period = "30d".to_owned();
    s1.rotation_config = "{\"x\":1}".to_owned();
    s1.event_subscriptions = vec!["ev-a".to_owned(), "ev-b".to_owned()];
    s1.rotation_func_urn = "urn:fn".to_owned();
    s1.scheduled_delete_ms = Some(7);
    add_secret(s, &s1).await;

    assert_eq!(
        s.get_secret(P, "db-password").await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(
        s.get_secret_by_id(P, "id-1").await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(s.get_secret(P, "nope").await.unwrap(), None);
    assert_eq!(s.get_secret_by_id(P, "nope").await.unwrap(), None);
    let v1 = stored(1, 100, "id-1", "v1", &[CUR]);
    assert_eq!(
        s.get_version(P, "db-password", None).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        s.get_version(P, "db-password", Some("v1")).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        s.get_version(P, "db-password", Some("v2")).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_stage(P, "db-password", CUR).await.unwrap(),
        Some(stage("id-1", CUR, "v1", 100))
    );
    assert_eq!(s.get_stage(P, "db-password", PREV).await.unwrap(), None);

    // Another project sees none of it.
    assert_eq!(s.get_secret(Q, "db-password").await.unwrap(), None);
    assert_eq!(s.get_secret_by_id(Q, "id-1").await.unwrap(), None);
    assert_eq!(s.get_version(Q, "db-password", None).await.unwrap(), None);
    assert_eq!(
        s.get_version(Q, "db-password", Some("v1")).await.unwrap(),
        None
    );
    assert_eq!(s.get_stage(Q, "db-password", CUR).await.unwrap(), None);
    assert!(s.all_versions(Q, "db-password").await.unwrap().is_empty());
    assert!(
        s.list_secrets(Q, None, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_versions(Q, "db-password", None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // ...and the same name is free there.
    add_secret(s, &secret(Q, "id-q", "db-password", 1)).await;

    // Metadata update: only the metadata fields change.
    let mut changed = s1.clone();
    changed.kms_key_id = "k2".to_owned();
    changed.description = "new".to_owned();
    changed.auto_rotation = false;
    changed.rotation_period = "7d".to_owned();
    changed.rotation_config = String::new();
    changed.event_subscriptions = vec!["ev-c".to_owned()];
    changed.rotation_func_urn = String::new();
    changed.updated_ms = 500;
    let mut ignored = changed.clone();
    ignored.secret_type = "RDS".to_owned();
    ignored.created_ms = 1;
    ignored.state = SecretState::Frozen;
    ignored.secret_id = "other-id".to_owned();
    assert_eq!(s.update_secret(&ignored).await.unwrap(), changed);
    assert_eq!(
        s.get_secret(P, "db-password").await.unwrap(),
        Some(changed.clone())
    );
    let mut missing = changed.clone();
    missing.name = "nope".to_owned();
    assert_err!(s.update_secret(&missing).await, StoreError::NotFound);
    missing.name = "db-password".to_owned();
    missing.project_id = "no-such-project".to_owned();
    assert_err!(s.update_secret(&missing).await, StoreError::NotFound);

    // Delete takes versions, stages and tags with it.
    s.put_secret_tags(P, "id-1", &[tag("env", "prod")], &SecretQuotas::default())
        .await
        .unwrap();
    add_value(s, P, "db-password", 2, &[CUR]).await;
    assert_err!(s.delete_secret(Q, "nope").await, StoreError::NotFound);
    assert_err!(s.delete_secret(P, "nope").await, StoreError::NotFound);
    s.delete_secret(P, "db-password").await.unwrap();
    assert_err!(
        s.delete_secret(P, "db-password").await,
        StoreError::NotFound
    );
    assert_eq!(s.get_secret(P, "db-password").await.unwrap(), None);
    assert_eq!(s.get_version(P, "db-password", None).await.unwrap(), None);
    assert_err!(s.secret_tags(P, "id-1").await, StoreError::NotFound);
    for table in ["secrets", "secret_versions", "secret_stages", "secret_tags"] {
        assert_eq!(
            ctx.rows_where(table, "secret_id", "id-1").await,
            0,
            "{table}"
        );
    }
    // The other project's secret of that name is untouched; the name is free again.
    assert!(s.get_secret(Q, "db-password").await.unwrap().is_some());
    add_secret(s, &secret(P, "id-2", "db-password", 600)).await;
    assert_eq!(
        s.get_version(P, "db-password", None)
            .await
            .unwrap()
            .unwrap()
            .version_id,
        "v1"
    );
}

async fn secret_state_is_compare_and_set(ctx: Ctx) {
    let s = &*ctx.store;
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    let updated = s
        .set_secret_state(
            P,
            "s1",
            &[SecretState::Enabled, SecretState::Disabled],
            SecretState::PendingDelete,
            Some(9_000),
            50,
        )
        .await
        .unwrap();
    assert_eq!(updated.state, SecretState::PendingDelete);
    assert_eq!(updated.scheduled_delete_ms, Some(9_000));
    assert_eq!(updated.updated_ms, 50);
    assert_eq!(s.get_secret(P, "s1").await.unwrap(), Some(updated));
    assert_err!(
        s.set_secret_state(
            P,
            "s1",
            &[SecretState::Enabled],
            SecretState::Disabled,
            None,
            60
        )
        .await,
        StoreError::WrongSecretState {
            current: SecretState::PendingDelete
        }
    );
    assert_err!(
        s.set_secret_state(P, "s1", &[], SecretState::Disabled, None, 60)
            .await,
        StoreError::WrongSecretState {
            current: SecretState::PendingDelete
        }
    );
    assert_err!(
        s.set_secret_state(
            P,
            "nope",
            &[SecretState::Enabled],
            SecretState::Disabled,
            None,
            60
        )
        .await,
        StoreError::NotFound
    );
    assert_err!(
        s.set_secret_state(
            Q,
            "s1",
            &[SecretState::PendingDelete],
            SecretState::Disabled,
            None,
            60
        )
        .await,
        StoreError::NotFound
    );
    // Cancelling clears the schedule.
    let cancelled = s
        .set_secret_state(
            P,
            "s1",
            &[SecretState::PendingDelete],
            SecretState::Disabled,
            None,
            70,
        )
        .await
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.scheduled_delete_ms),
        (SecretState::Disabled, None)
    );

    // Of N racing identical transitions exactly one wins.
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = ctx.store.clone();
            tokio::spawn(async move {
                store
                    .set_secret_state(
                        P,
                        "s1",
                        &[SecretState::Disabled],
                        SecretState::Enabled,
                        None,
                        100 + i,
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::WrongSecretState {
                current: SecretState::Enabled,
            }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(won, 1);
}

async fn secret_quota_and_failed_creates(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = SecretQuotas {
        secrets_per_project: 2,
        ..SecretQuotas::default()
    };
    create_secret_with(s, &secret(P, "id-1", "s1", 1), &quotas)
        .await
        .unwrap();
    // Name conflict: nothing of the refused secret is written.
    assert_err!(
        create_secret_with(s, &secret(P, "id-x", "s1", 2), &quotas).await,
        StoreError::Conflict(Conflict::SecretName)
    );
    create_secret_with(s, &secret(P, "id-2", "s2", 3), &quotas)
        .await
        .unwrap();
    // At the quota (PENDING_DELETE secrets count too).
    s.set_secret_state(
        P,
        "s2",
        &[SecretState::Enabled],
        SecretState::PendingDelete,
        Some(1),
        4,
    )
    .await
    .unwrap();
    assert_err!(
        create_secret_with(s, &secret(P, "id-y", "s3", 5), &quotas).await,
        StoreError::Quota(QuotaKind::Secrets)
    );
    // The quota is per project.
    create_secret_with(s, &secret(Q, "id-q", "s3", 5), &quotas)
        .await
        .unwrap();

    // A version id given twice (a corrupt backup): the whole create fails.
    let mut v = value(1, 6);
    v.version_id = "v1".to_owned();
    assert_err!(
        s.create_secret(
            &secret(Q, "id-z", "dup", 6),
            &[v.clone(), v.clone()],
            &[stage("id-z", CUR, "v1", 6)],
            &quotas
        )
        .await,
        StoreError::Conflict(Conflict::VersionId)
    );
    // A stage naming no version of the secret.
    assert_err!(
        s.create_secret(
            &secret(Q, "id-z", "dangling", 6),
            &[v],
            &[stage("id-z", CUR, "v2", 6)],
            &quotas
        )
        .await,
        StoreError::NotFound
    );
    for id in ["id-x", "id-y", "id-z"] {
        for table in ["secrets", "secret_versions", "secret_stages"] {
            assert_eq!(
                ctx.rows_where(table, "secret_id", id).await,
                0,
                "{table} {id}"
            );
        }
    }
    assert_eq!(
        s.get_secret(P, "s1").await.unwrap().unwrap().secret_id,
        "id-1"
    );
    assert_eq!(s.get_secret(P, "s3").await.unwrap(), None);
    assert_eq!(s.get_secret(Q, "dup").await.unwrap(), None);
    assert_eq!(
        s.list_secrets(P, None, 10, None).await.unwrap().items.len(),
        2
    );

    // Deleting frees a slot.
    s.delete_secret(P, "s2").await.unwrap();
    create_secret_with(s, &secret(P, "id-3", "s3", 7), &quotas)
        .await
        .unwrap();
}

async fn concurrent_create_secret_respects_quota(ctx: Ctx) {
    let quotas = SecretQuotas {
        secrets_per_project: 10,
        ..SecretQuotas::default()
    };
    for free in [1usize, 3] {
        let project = format!("project-with-{free}-free");
        for i in 0..10 - free {
            create_secret_with(
                &*ctx.store,
                &secret(
                    &project,
                    &format!("{project}-pre-{i}"),
                    &format!("pre-{i}"),
                    1,
                ),
                &quotas,
            )
            .await
            .unwrap();
        }
        let attempts: Vec<_> = (0..16)
            .map(|i| {
                let store = ctx.store.clone();
                let secret = secret(
                    &project,
                    &format!("{project}-new-{i}"),
                    &format!("new-{i}"),
                    2,
                );
                tokio::spawn(async move { create_secret_with(&*store, &secret, &quotas).await })
            })
            .collect();
        let mut created = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(()) => created += 1,
                Err(StoreError::Quota(QuotaKind::Secrets)) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(created, free, "{project}");
        let listed = ctx
            .store
            .list_secrets(&project, None, 100, None)
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 10, "{project}");
        assert!(!listed.more);
    }
}

async fn concurrent_create_secret_same_name(ctx: Ctx) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = ctx.store.clone();
            let secret = secret(P, &format!("id-{i}"), "same", i);
            tokio::spawn(async move {
                create_secret_with(&*store, &secret, &SecretQuotas::default()).await
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::Conflict(Conflict::SecretName)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(created, 1);
    let winner = ctx.store.get_secret(P, "same").await.unwrap().unwrap();
    for i in 0..8 {
        let id = format!("id-{i}");
        let versions = ctx.rows_where("secret_versions", "secret_id", &id).await;
        assert_eq!(versions, i64::from(id == winner.secret_id), "{id}");
    }
}

// ---- CSMS: versions and stages ------------------------------------------------------------------

async fn stage_semantics(ctx: Ctx) {
    let s = &*ctx.store;
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    assert_eq!(add_value(s, P, "s1", 2, &[CUR]).await, "v2");
    let v3 = s
        .add_version(
            P,
            "s1",
            &value(3, 103),
            &[CUR.to_owned()],
            &SecretQuotas::default(),
            1_003,
        )
        .await
        .unwrap();
    assert_eq!(v3, stored(3, 103, "id-1", "v3", &[CUR]));
    // SYSCURRENT moved to v3; the version that held it got SYSPREVIOUS.
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[]), ("v2", &[PREV]), ("v3", &[CUR])])
    );
    assert_eq!(
        s.get_stage(P, "s1", CUR).await.unwrap(),
        Some(stage("id-1", CUR, "v3", 1_003))
    );
    assert_eq!(
        s.get_stage(P, "s1", PREV).await.unwrap(),
        Some(stage("id-1", PREV, "v2", 1_003))
    );
    assert_eq!(s.get_version(P, "s1", None).await.unwrap(), Some(v3));

    // Explicit stages without SYSCURRENT leave SYSCURRENT where it is; the
    // newest version is "latest" whatever its stages.
    assert_eq!(
        add_value(s, P, "s1", 4, &["blue", "green", "blue"]).await,
        "v4"
    );
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[
            ("v1", &[]),
            ("v2", &[PREV]),
            ("v3", &[CUR]),
            ("v4", &["blue", "green"])
        ])
    );
    assert_eq!(
        s.get_version(P, "s1", None)
            .await
            .unwrap()
            .unwrap()
            .version_id,
        "v4"
    );
    // A version without stages.
    assert_eq!(add_value(s, P, "s1", 5, &[]).await, "v5");
    assert!(
        s.get_version(P, "s1", Some("v5"))
            .await
            .unwrap()
            .unwrap()
            .stages
            .is_empty()
    );

    // Moving a custom stage.
    let moved = s
        .put_stage(P, "s1", "blue", "v1", 2_000, &SecretQuotas::default())
        .await
        .unwrap();
    assert_eq!(moved, stage("id-1", "blue", "v1", 2_000));
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[
            ("v1", &["blue"]),
            ("v2", &[PREV]),
            ("v3", &[CUR]),
            ("v4", &["green"]),
            ("v5", &[])
        ])
    );
    // A new stage via put_stage.
    s.put_stage(P, "s1", "red", "v5", 2_001, &SecretQuotas::default())
        .await
        .unwrap();
    assert_eq!(
        s.get_stage(P, "s1", "red").await.unwrap(),
        Some(stage("id-1", "red", "v5", 2_001))
    );
    // Adding with a custom stage moves it too.
    assert_eq!(add_value(s, P, "s1", 6, &["green", CUR]).await, "v6");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[
            ("v1", &["blue"]),
            ("v2", &[]),
            ("v3", &[PREV]),
            ("v4", &[]),
            ("v5", &["red"]),
            ("v6", &[CUR, "green"])
        ])
    );

    // put_stage: missing secret, version, other project.
    let q = SecretQuotas::default();
    assert_err!(
        s.put_stage(P, "s1", "blue", "v9", 1, &q).await,
        StoreError::NotFound
    );
    assert_err!(
        s.put_stage(P, "nope", "blue", "v1", 1, &q).await,
        StoreError::NotFound
    );
    assert_err!(
        s.put_stage(Q, "s1", "blue", "v1", 1, &q).await,
        StoreError::NotFound
    );

    // Deleting a stage.
    s.delete_stage(P, "s1", "blue").await.unwrap();
    assert_eq!(s.get_stage(P, "s1", "blue").await.unwrap(), None);
    assert_err!(s.delete_stage(P, "s1", "blue").await, StoreError::NotFound);
    assert_err!(s.delete_stage(P, "nope", "red").await, StoreError::NotFound);
    assert_err!(s.delete_stage(Q, "s1", "red").await, StoreError::NotFound);
    assert!(s.get_stage(P, "s1", "red").await.unwrap().is_some());
    assert!(
        s.get_version(P, "s1", Some("v1"))
            .await
            .unwrap()
            .unwrap()
            .stages
            .is_empty()
    );
}

async fn stage_quota(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = SecretQuotas {
        stages_per_secret: 3,
        ..SecretQuotas::default()
    };
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    // SYSCURRENT + the SYSPREVIOUS that moving it creates.
    s.add_version(P, "s1", &value(2, 2), &[CUR.to_owned()], &quotas, 2)
        .await
        .unwrap();
    s.put_stage(P, "s1", "green", "v1", 3, &quotas)
        .await
        .unwrap();
    // Full: a fourth stage is refused, by put_stage and by add_version.
    assert_err!(
        s.put_stage(P, "s1", "red", "v1", 4, &quotas).await,
        StoreError::Quota(QuotaKind::Stages)
    );
    assert_err!(
        s.add_version(P, "s1", &value(3, 4), &["red".to_owned()], &quotas, 4)
            .await,
        StoreError::Quota(QuotaKind::Stages)
    );
    // Nothing of the refused add is written, and its id is not used up.
    assert_eq!(s.all_versions(P, "s1").await.unwrap().len(), 2);
    // Moving existing stages is fine at the quota.
    s.put_stage(P, "s1", "green", "v2", 5, &quotas)
        .await
        .unwrap();
    let v3 = s
        .add_version(
            P,
            "s1",
            &value(3, 6),
            &[CUR.to_owned(), "green".to_owned()],
            &quotas,
            6,
        )
        .await
        .unwrap();
    assert_eq!(v3.version_id, "v3");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[]), ("v2", &[PREV]), ("v3", &[CUR, "green"])])
    );
    // The first SYSPREVIOUS counts: with room for one stage only, moving
    // SYSCURRENT fails.
    add_secret(s, &secret(P, "id-2", "s2", 1)).await;
    let one = SecretQuotas {
        stages_per_secret: 1,
        ..SecretQuotas::default()
    };
    assert_err!(
        s.add_version(P, "s2", &value(2, 2), &[CUR.to_owned()], &one, 2)
            .await,
        StoreError::Quota(QuotaKind::Stages)
    );
    assert_eq!(stage_map(s, P, "s2").await, sm(&[("v1", &[CUR])]));
}

/// Moving SYSCURRENT by hand hands SYSPREVIOUS to the version that held it,
/// in the same transaction: a move the stage quota refuses moves nothing.
async fn syscurrent_move_is_atomic(ctx: Ctx) {
    let s = &*ctx.store;
    let two = SecretQuotas {
        stages_per_secret: 2,
        ..SecretQuotas::default()
    };
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    s.add_version(P, "s1", &value(2, 2), &["green".to_owned()], &two, 2)
        .await
        .unwrap();
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[CUR]), ("v2", &["green"])])
    );
    // SYSCURRENT → v2 would create SYSPREVIOUS on v1: a third stage.
    assert_err!(
        s.put_stage(P, "s1", CUR, "v2", 3, &two).await,
        StoreError::Quota(QuotaKind::Stages)
    );
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[CUR]), ("v2", &["green"])])
    );
    // With room, both move together.
    let three = SecretQuotas {
        stages_per_secret: 3,
        ..SecretQuotas::default()
    };
    let moved = s.put_stage(P, "s1", CUR, "v2", 4, &three).await.unwrap();
    assert_eq!(moved, stage("id-1", CUR, "v2", 4));
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[PREV]), ("v2", &[CUR, "green"])])
    );
    assert_eq!(
        s.get_stage(P, "s1", PREV).await.unwrap(),
        Some(stage("id-1", PREV, "v1", 4))
    );
    // Pointing SYSCURRENT at the version that holds it moves nothing else.
    s.put_stage(P, "s1", CUR, "v2", 5, &three).await.unwrap();
    assert_eq!(
        s.get_stage(P, "s1", PREV).await.unwrap(),
        Some(stage("id-1", PREV, "v1", 4))
    );
    // A custom stage never touches SYSPREVIOUS.
    s.put_stage(P, "s1", "green", "v1", 6, &three)
        .await
        .unwrap();
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[PREV, "green"]), ("v2", &[CUR])])
    );
}

async fn version_quota_drops_stageless_versions(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = SecretQuotas {
        versions_per_secret: 3,
        ..SecretQuotas::default()
    };
    let add = |n: u8, stages: &'static [&'static str]| async move {
        let stages = strings(stages);
        s.add_version(
            P,
            "s1",
            &value(n, i64::from(n)),
            &stages,
            &quotas,
            i64::from(n),
        )
        .await
        .map(|v| v.version_id)
    };
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    assert_eq!(add(2, &[CUR]).await.unwrap(), "v2");
    assert_eq!(add(3, &[CUR]).await.unwrap(), "v3");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v1", &[]), ("v2", &[PREV]), ("v3", &[CUR])])
    );
    // Fourth version: the oldest stage-less one (v1) goes; v2 has just
    // lost SYSPREVIOUS but one drop is enough.
    assert_eq!(add(4, &[CUR]).await.unwrap(), "v4");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v2", &[]), ("v3", &[PREV]), ("v4", &[CUR])])
    );
    assert_eq!(s.get_version(P, "s1", Some("v1")).await.unwrap(), None);

    // Every older version holds a stage: a stage-less add has nothing to
    // drop (it never drops itself), and nothing is written.
    s.put_stage(P, "s1", "pinned", "v2", 10, &SecretQuotas::default())
        .await
        .unwrap();
    assert_err!(add(5, &[]).await, StoreError::Quota(QuotaKind::Versions));
    assert_eq!(s.all_versions(P, "s1").await.unwrap().len(), 3);
    // Moving SYSCURRENT frees v3 (its SYSPREVIOUS moves to v4): v3 goes.
    // Ids are never reused: v1 was dropped, the refused add used none.
    assert_eq!(add(5, &[CUR]).await.unwrap(), "v5");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v2", &["pinned"]), ("v4", &[PREV]), ("v5", &[CUR])])
    );
    s.delete_stage(P, "s1", "pinned").await.unwrap();
    assert_eq!(add(6, &[CUR]).await.unwrap(), "v6");
    assert_eq!(
        stage_map(s, P, "s1").await,
        sm(&[("v4", &[]), ("v5", &[PREV]), ("v6", &[CUR])])
    );
    // Behind the store's back too.
    assert_eq!(
        ctx.rows_where("secret_versions", "secret_id", "id-1").await,
        3
    );
}

async fn add_version_checks_the_secret(ctx: Ctx) {
    let s = &*ctx.store;
    let q = SecretQuotas::default();
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    let cur = [CUR.to_owned()];
    assert_err!(
        s.add_version(P, "nope", &value(2, 2), &cur, &q, 2).await,
        StoreError::NotFound
    );
    assert_err!(
        s.add_version(Q, "s1", &value(2, 2), &cur, &q, 2).await,
        StoreError::NotFound
    );
    for state in [
        SecretState::Disabled,
        SecretState::Frozen,
        SecretState::PendingDelete,
    ] {
        let from = [
            SecretState::Enabled,
            SecretState::Disabled,
            SecretState::Frozen,
        ];
        s.set_secret_state(P, "s1", &from, state, None, 3)
            .await
            .unwrap();
        match s.add_version(P, "s1", &value(2, 2), &cur, &q, 4).await {
            Err(StoreError::WrongSecretState { current }) => assert_eq!(current, state),
            other => panic!("expected WrongSecretState, got {other:?}"),
        }
        s.set_secret_state(P, "s1", &[state], SecretState::Enabled, None, 5)
            .await
            .unwrap();
    }
    assert_eq!(stage_map(s, P, "s1").await, sm(&[("v1", &[CUR])]));
    assert_eq!(add_value(s, P, "s1", 2, &[CUR]).await, "v2");
}

/// `read_secret_version` answers what `get_secret` + `get_version` answer.
async fn read_secret_version_in_one_statement(ctx: Ctx) {
    let s = &*ctx.store;
    let s1 = secret(P, "id-1", "s1", 1);
    add_secret(s, &s1).await;
    // Latest of a secret with its first version only.
    assert_eq!(
        s.read_secret_version(P, "s1", None).await.unwrap(),
        Some((s1.clone(), Some(stored(1, 1, "id-1", "v1", &[CUR]))))
    );
    assert_eq!(add_value(s, P, "s1", 2, &[CUR]).await, "v2");
    // Several stages, given out of byte order (upper case sorts first).
    assert_eq!(
        add_value(s, P, "s1", 3, &["green", "blue", "Z_9", "a-1"]).await,
        "v3"
    );
    s.update_version_expiry(P, "s1", "v2", Some(99))
        .await
        .unwrap();

    // The newest version, whatever its stages, as `get_version` has it.
    let latest = stored(3, 103, "id-1", "v3", &["Z_9", "a-1", "blue", "green"]);
    assert_eq!(
        s.get_version(P, "s1", None).await.unwrap(),
        Some(latest.clone())
    );
    assert_eq!(
        s.read_secret_version(P, "s1", None).await.unwrap(),
        Some((s1.clone(), Some(latest)))
    );
    // Each version by id: the same secret, stages and expiry as `get_version`.
    for id in ["v1", "v2", "v3"] {
        let want = s.get_version(P, "s1", Some(id)).await.unwrap();
        assert!(want.is_some(), "{id}");
        assert_eq!(
            s.read_secret_version(P, "s1", Some(id)).await.unwrap(),
            Some((s1.clone(), want)),
            "{id}"
        );
    }
    let mut v2 = stored(2, 102, "id-1", "v2", &[CUR]);
    v2.expire_ms = Some(99);
    assert_eq!(
        s.read_secret_version(P, "s1", Some("v2")).await.unwrap(),
        Some((s1.clone(), Some(v2)))
    );
    assert_eq!(
        s.read_secret_version(P, "s1", Some("v1")).await.unwrap(),
        Some((s1.clone(), Some(stored(1, 1, "id-1", "v1", &[PREV]))))
    );

    // The secret exists, the version does not.
    for id in ["v9", "", "latest", "V1"] {
        assert_eq!(
            s.read_secret_version(P, "s1", Some(id)).await.unwrap(),
            Some((s1.clone(), None)),
            "{id:?}"
        );
    }
    // No such secret, here or (for this name) in another project.
    for (project, name) in [(P, "nope"), (Q, "s1")] {
        assert_eq!(
            s.read_secret_version(project, name, None).await.unwrap(),
            None
        );
        assert_eq!(
            s.read_secret_version(project, name, Some("v1"))
                .await
                .unwrap(),
            None
        );
    }
    // Another project's secret of the same name is its own.
    let q1 = secret(Q, "id-q", "s1", 7);
    add_secret(s, &q1).await;
    assert_eq!(
        s.read_secret_version(Q, "s1", None).await.unwrap(),
        Some((q1, Some(stored(1, 7, "id-q", "v1", &[CUR]))))
    );

    // After add_version the latest is the new one, and the stages it took
    // left the others.
    assert_eq!(add_value(s, P, "s1", 4, &[CUR, "blue"]).await, "v4");
    let v4 = stored(4, 104, "id-1", "v4", &[CUR, "blue"]);
    assert_eq!(
        s.read_secret_version(P, "s1", None).await.unwrap(),
        Some((s1.clone(), Some(v4.clone())))
    );
    assert_eq!(s.get_version(P, "s1", None).await.unwrap(), Some(v4));
    for id in ["v1", "v2", "v3"] {
        let (_, got) = s
            .read_secret_version(P, "s1", Some(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, s.get_version(P, "s1", Some(id)).await.unwrap(), "{id}");
    }
    assert_eq!(
        s.read_secret_version(P, "s1", Some("v3"))
            .await
            .unwrap()
            .unwrap()
            .1
            .unwrap()
            .stages,
        ["Z_9", "a-1", "green"]
    );
    // A version left without stages.
    assert_eq!(
        s.read_secret_version(P, "s1", Some("v1")).await.unwrap(),
        Some((s1.clone(), Some(stored(1, 1, "id-1", "v1", &[]))))
    );

    // The state is the caller's to judge: a disabled secret is still read.
    let disabled = s
        .set_secret_state(
            P,
            "s1",
            &[SecretState::Enabled],
            SecretState::Disabled,
            None,
            60,
        )
        .await
        .unwrap();
    assert_eq!(disabled.state, SecretState::Disabled);
    let (got, version) = s.read_secret_version(P, "s1", None).await.unwrap().unwrap();
    assert_eq!(got, disabled);
    assert_eq!(version.unwrap().version_id, "v4");
}

async fn two_concurrent_add_versions(ctx: Ctx) {
    add_secret(&*ctx.store, &secret(P, "id-1", "s1", 1)).await;
    let adds: Vec<_> = (0..2u8)
        .map(|i| {
            let store = ctx.store.clone();
            tokio::spawn(async move { add_value(&*store, P, "s1", 10 + i, &[CUR]).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for add in adds {
        ids.insert(add.await.unwrap());
    }
    assert_eq!(ids, BTreeSet::from(["v2".to_owned(), "v3".to_owned()]));
    assert_eq!(
        stage_map(&*ctx.store, P, "s1").await,
        sm(&[("v1", &[]), ("v2", &[PREV]), ("v3", &[CUR])])
    );
}

async fn eight_concurrent_add_versions(ctx: Ctx) {
    add_secret(&*ctx.store, &secret(P, "id-1", "s1", 1)).await;
    let adds: Vec<_> = (0..8u8)
        .map(|i| {
            let store = ctx.store.clone();
            tokio::spawn(async move {
                let id = add_value(&*store, P, "s1", 10 + i, &[CUR]).await;
                (id, 10 + i)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut values = BTreeSet::new();
    for add in adds {
        let (id, n) = add.await.unwrap();
        // Each caller's id holds that caller's value.
        let got = ctx
            .store
            .get_version(P, "s1", Some(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.ciphertext, vec![n; 24]);
        ids.insert(id);
        values.insert(n);
    }
    let want: BTreeSet<String> = (2..=9).map(|n| format!("v{n}")).collect();
    assert_eq!(ids, want);
    assert_eq!(values.len(), 8);
    let map = stage_map(&*ctx.store, P, "s1").await;
    assert_eq!(map.len(), 9);
    let with = |stage: &str| {
        map.iter()
            .filter(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(with(CUR), ["v9"]);
    assert_eq!(with(PREV), ["v8"]);
}

// ---- CSMS: lists -------------------------------------------------------------------------------

async fn list_secrets_keyset(ctx: Ctx) {
    let s = &*ctx.store;
    // Byte order, as Rust sorts strings.
    let all = ["b", "B", "a", "é", "_x", "a-1", "c"];
    for (i, name) in all.iter().enumerate() {
        add_secret(s, &secret(P, &format!("id-{i}"), name, i as i64)).await;
    }
    add_secret(s, &secret(Q, "id-q", "a", 1)).await;
    let mut sorted = all.to_vec();
    sorted.sort();

    let page = s.list_secrets(P, None, 100, None).await.unwrap();
    assert_eq!((names(&page), page.more), (sorted.clone(), false));
    // Exactly one page: no `more`.
    let page = s.list_secrets(P, None, 7, None).await.unwrap();
    assert!(!page.more);
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_secrets(P, after.as_deref(), 3, None).await.unwrap();
        assert!(page.items.len() <= 3);
        walked.extend(page.items.iter().map(|s| s.name.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|s| s.name.clone());
    }
    assert_eq!(walked, sorted);
    // A marker that is no name still orders.
    let page = s.list_secrets(P, Some("a0"), 2, None).await.unwrap();
    assert_eq!((names(&page), page.more), (vec!["b", "c"], true));
    let page = s.list_secrets(P, Some("é"), 2, None).await.unwrap();
    assert_eq!((page.items.len(), page.more), (0, false));
    let page = s.list_secrets(P, None, 0, None).await.unwrap();
    assert_eq!((page.items.len(), page.more), (0, true));
    assert!(
        s.list_secrets("no-such-project", None, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Event filter: exact names; `x"a` is stored as JSON `"x\"a"`, whose
    // text contains `"a"`, and must not match event `a`.
    for (name, events) in [
        ("b", vec!["a", "other"]),
        ("c", vec!["x\"a"]),
        ("_x", vec!["ab"]),
        ("a-1", vec!["a"]),
        ("é", vec!["a"]),
    ] {
        let mut record = s.get_secret(P, name).await.unwrap().unwrap();
        record.event_subscriptions = events.into_iter().map(str::to_owned).collect();
        s.update_secret(&record).await.unwrap();
    }
    let page = s.list_secrets(P, None, 100, Some("a")).await.unwrap();
    assert_eq!((names(&page), page.more), (vec!["a-1", "b", "é"], false));
    let page = s.list_secrets(P, None, 2, Some("a")).await.unwrap();
    assert_eq!((names(&page), page.more), (vec!["a-1", "b"], true));
    let page = s.list_secrets(P, Some("b"), 1, Some("a")).await.unwrap();
    assert_eq!((names(&page), page.more), (vec!["é"], false));
    let page = s.list_secrets(P, Some("a-1"), 1, Some("a")).await.unwrap();
    assert_eq!((names(&page), page.more), (vec!["b"], true));
    let page = s.list_secrets(P, None, 10, Some("x\"a")).await.unwrap();
    assert_eq!(names(&page), ["c"]);
    assert!(
        s.list_secrets(P, None, 10, Some("none"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_secrets(Q, None, 10, Some("a"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn list_versions_keyset(ctx: Ctx) {
    let s = &*ctx.store;
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    for n in 2..=11 {
        add_value(s, P, "s1", n, &[CUR]).await;
    }
    // Newest first, numerically (v10 after v9, not between v1 and v2).
    let page = s.list_versions(P, "s1", None, 3).await.unwrap();
    assert_eq!(
        (version_ids(&page), page.more),
        (vec!["v11", "v10", "v9"], true)
    );
    assert_eq!(page.items[0], stored(11, 111, "id-1", "v11", &[CUR]));
    assert_eq!(page.items[1].stages, [PREV]);
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_versions(P, "s1", after.as_deref(), 4).await.unwrap();
        walked.extend(page.items.iter().map(|v| v.version_id.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|v| v.version_id.clone());
    }
    let want: Vec<String> = (1..=11).rev().map(|n| format!("v{n}")).collect();
    assert_eq!(walked, want);
    let page = s.list_versions(P, "s1", Some("v2"), 4).await.unwrap();
    assert_eq!((version_ids(&page), page.more), (vec!["v1"], false));
    let page = s.list_versions(P, "s1", Some("v1"), 4).await.unwrap();
    assert_eq!((page.items.len(), page.more), (0, false));
    let page = s.list_versions(P, "s1", None, 11).await.unwrap();
    assert_eq!((page.items.len(), page.more), (11, false));
    // Unknown marker, secret or project.
    assert!(
        s.list_versions(P, "s1", Some("v99"), 4)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_versions(P, "nope", None, 4)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        s.list_versions(Q, "s1", None, 4)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn versions_expiry_backup_and_restore(ctx: Ctx) {
    let s = &*ctx.store;
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    add_value(s, P, "s1", 2, &[CUR]).await;
    add_value(s, P, "s1", 3, &["blue"]).await;

    let updated = s
        .update_version_expiry(P, "s1", "v2", Some(99))
        .await
        .unwrap();
    let mut v2 = stored(2, 102, "id-1", "v2", &[CUR]);
    v2.expire_ms = Some(99);
    assert_eq!(updated, v2);
    assert_eq!(
        s.get_version(P, "s1", Some("v2")).await.unwrap(),
        Some(v2.clone())
    );
    assert_err!(
        s.update_version_expiry(P, "s1", "v9", Some(1)).await,
        StoreError::NotFound
    );
    assert_err!(
        s.update_version_expiry(P, "nope", "v2", Some(1)).await,
        StoreError::NotFound
    );
    assert_err!(
        s.update_version_expiry(Q, "s1", "v2", Some(1)).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.get_version(P, "s1", Some("v2")).await.unwrap(),
        Some(v2.clone())
    );

    // Backup: every version, oldest first, with ciphertext and stages.
    let backup = s.all_versions(P, "s1").await.unwrap();
    assert_eq!(
        backup,
        [
            stored(1, 1, "id-1", "v1", &[PREV]),
            v2.clone(),
            stored(3, 103, "id-1", "v3", &["blue"]),
        ]
    );
    assert!(s.all_versions(P, "nope").await.unwrap().is_empty());

    // Restore into another project after the original is gone, with ids
    // the store did not assign in this database: the next id follows the
    // highest restored one.
    let restored_secret = secret(Q, "id-r", "s1", 5);
    let mut versions = backup.clone();
    versions[2].version_id = "v7".to_owned();
    let stages = [
        stage("id-r", PREV, "v1", 5),
        stage("id-r", CUR, "v2", 5),
        stage("id-r", "blue", "v7", 5),
    ];
    s.create_secret(
        &restored_secret,
        &versions,
        &stages,
        &SecretQuotas::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        stage_map(s, Q, "s1").await,
        sm(&[("v1", &[PREV]), ("v2", &[CUR]), ("v7", &["blue"])])
    );
    assert_eq!(
        s.get_version(Q, "s1", None)
            .await
            .unwrap()
            .unwrap()
            .version_id,
        "v7"
    );
    assert_eq!(
        s.get_version(Q, "s1", Some("v1"))
            .await
            .unwrap()
            .unwrap()
            .secret_id,
        "id-r"
    );
    assert_eq!(add_value(s, Q, "s1", 8, &[CUR]).await, "v8");
    assert_eq!(
        stage_map(s, Q, "s1").await,
        sm(&[
            ("v1", &[]),
            ("v2", &[PREV]),
            ("v7", &["blue"]),
            ("v8", &[CUR])
        ])
    );
    // Restored ids that are not `v<n>` still leave room after them.
    let mut odd = value(1, 1);
    odd.version_id = "legacy".to_owned();
    s.create_secret(
        &secret(Q, "id-o", "odd", 1),
        &[odd],
        &[stage("id-o", CUR, "legacy", 1)],
        &SecretQuotas::default(),
    )
    .await
    .unwrap();
    assert_eq!(add_value(s, Q, "odd", 2, &[CUR]).await, "v2");
    assert_eq!(
        stage_map(s, Q, "odd").await,
        sm(&[("legacy", &[PREV]), ("v2", &[CUR])])
    );
}

async fn purge_secrets_follows_the_clock(ctx: Ctx) {
    const T: i64 = 1_700_000_000_000;
    let s = &*ctx.store;
    let q = SecretQuotas::default();
    for (project, id, name) in [
        (P, "doomed", "doomed"),
        (P, "keeper", "keeper"),
        (P, "later", "later"),
        (Q, "other", "doomed"),
        (P, "cancelled", "cancelled"),
    ] {
        add_secret(s, &secret(project, id, name, 1)).await;
        add_value(s, project, name, 2, &[CUR, "blue"]).await;
        s.put_secret_tags(project, id, &[tag("env", id)], &q)
            .await
            .unwrap();
    }
    let schedule = |project: &'static str, name: &'static str, at: i64| async move {
        s.set_secret_state(
            project,
            name,
            &[SecretState::Enabled, SecretState::Disabled],
            SecretState::PendingDelete,
            Some(at),
            2,
        )
        .await
        .unwrap();
    };
    schedule(P, "doomed", T).await;
    schedule(P, "later", T + 10).await;
    schedule(Q, "doomed", T).await;
    schedule(P, "cancelled", T).await;
    s.set_secret_state(
        P,
        "cancelled",
        &[SecretState::PendingDelete],
        SecretState::Disabled,
        None,
        3,
    )
    .await
    .unwrap();

    assert!(s.purge_due_secrets(T - 1).await.unwrap().is_empty());
    assert!(s.get_secret(P, "doomed").await.unwrap().is_some());
    assert_eq!(
        ctx.rows_where("secret_versions", "secret_id", "doomed")
            .await,
        2
    );

    let mut purged = s.purge_due_secrets(T).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["doomed", "other"]);
    assert_eq!(s.get_secret(P, "doomed").await.unwrap(), None);
    assert_eq!(s.get_secret(Q, "doomed").await.unwrap(), None);
    assert_eq!(s.get_version(P, "doomed", None).await.unwrap(), None);
    assert_eq!(s.get_stage(P, "doomed", CUR).await.unwrap(), None);
    assert_err!(s.secret_tags(P, "doomed").await, StoreError::NotFound);
    for id in ["doomed", "other"] {
        for table in ["secrets", "secret_versions", "secret_stages", "secret_tags"] {
            assert_eq!(
                ctx.rows_where(table, "secret_id", id).await,
                0,
                "{table} {id}"
            );
        }
    }
    assert_eq!(
        s.project_secret_tags(P).await.unwrap(),
        [(
            "env".to_owned(),
            vec![
                "cancelled".to_owned(),
                "keeper".to_owned(),
                "later".to_owned()
            ]
        )]
    );
    assert!(s.project_secret_tags(Q).await.unwrap().is_empty());
    // The rest is untouched.
    assert_eq!(
        ctx.rows_where("secret_versions", "secret_id", "keeper")
            .await,
        2
    );
    assert_eq!(
        ctx.rows_where("secret_stages", "secret_id", "keeper").await,
        3
    );
    assert!(s.purge_due_secrets(T).await.unwrap().is_empty());
    assert_eq!(s.purge_due_secrets(T + 10).await.unwrap(), ["later"]);
    assert!(s.purge_due_secrets(i64::MAX).await.unwrap().is_empty());
    assert!(s.get_secret(P, "cancelled").await.unwrap().is_some());
    assert!(s.get_secret(P, "keeper").await.unwrap().is_some());

    // Concurrent purges split the work: each secret is reported once.
    for i in 0..6 {
        let name = format!("due-{i}");
        add_secret(s, &secret(P, &name, &name, 1)).await;
        s.set_secret_state(
            P,
            &name,
            &[SecretState::Enabled],
            SecretState::PendingDelete,
            Some(T),
            2,
        )
        .await
        .unwrap();
    }
    let purges: Vec<_> = (0..4)
        .map(|_| {
            let store = ctx.store.clone();
            tokio::spawn(async move { store.purge_due_secrets(T).await })
        })
        .collect();
    let mut all = Vec::new();
    for purge in purges {
        all.extend(purge.await.unwrap().unwrap());
    }
    all.sort();
    let want: Vec<String> = (0..6).map(|i| format!("due-{i}")).collect();
    assert_eq!(all, want);
}

// ---- CSMS: tags ---------------------------------------------------------------------------------

async fn secret_tags(ctx: Ctx) {
    let s = &*ctx.store;
    let quotas = SecretQuotas {
        tags_per_secret: 3,
        ..SecretQuotas::default()
    };
    add_secret(s, &secret(P, "id-1", "s1", 1)).await;
    add_secret(s, &secret(P, "id-2", "s2", 2)).await;
    add_secret(s, &secret(Q, "id-q", "s1", 3)).await;
    assert!(s.secret_tags(P, "id-1").await.unwrap().is_empty());
    s.put_secret_tags(P, "id-1", &[tag("b", "1"), tag("a", "x")], &quotas)
        .await
        .unwrap();
    // Upsert: a key given again (even twice in one call) takes the last value.
    s.put_secret_tags(
        P,
        "id-1",
        &[tag("b", "2"), tag("c", "z"), tag("b", "y")],
        &quotas,
    )
    .await
    .unwrap();
    assert_eq!(
        s.secret_tags(P, "id-1").await.unwrap(),
        [tag("a", "x"), tag("b", "y"), tag("c", "z")]
    );
    // Quota on the final set, all or nothing.
    assert_err!(
        s.put_secret_tags(P, "id-1", &[tag("a", "new"), tag("d", "4")], &quotas)
            .await,
        StoreError::Quota(QuotaKind::SecretTags)
    );
    assert_eq!(s.secret_tags(P, "id-1").await.unwrap()[0], tag("a", "x"));
    s.put_secret_tags(P, "id-1", &[tag("a", "new")], &quotas)
        .await
        .unwrap();

    // Delete: all or nothing.
    assert_err!(
        s.delete_secret_tags(P, "id-1", &strings(&["a", "zz"]))
            .await,
        StoreError::NotFound
    );
    assert_eq!(s.secret_tags(P, "id-1").await.unwrap().len(), 3);
    s.delete_secret_tags(P, "id-1", &strings(&["a", "c", "a"]))
        .await
        .unwrap();
    assert_eq!(s.secret_tags(P, "id-1").await.unwrap(), [tag("b", "y")]);

    // Missing secrets and other projects' secrets.
    assert_err!(s.secret_tags(P, "nope").await, StoreError::NotFound);
    assert_err!(s.secret_tags(Q, "id-1").await, StoreError::NotFound);
    assert_err!(
        s.put_secret_tags(Q, "id-1", &[tag("x", "1")], &quotas)
            .await,
        StoreError::NotFound
    );
    assert_err!(
        s.put_secret_tags(P, "nope", &[], &quotas).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_secret_tags(Q, "id-1", &["b".to_owned()]).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_secret_tags(P, "nope", &[]).await,
        StoreError::NotFound
    );
    assert_eq!(s.secret_tags(P, "id-1").await.unwrap(), [tag("b", "y")]);

    s.put_secret_tags(P, "id-2", &[tag("env", "prod"), tag("b", "1")], &quotas)
        .await
        .unwrap();
    s.put_secret_tags(Q, "id-q", &[tag("env", "qa")], &quotas)
        .await
        .unwrap();
    assert_eq!(
        s.project_secret_tags(P).await.unwrap(),
        sm(&[("b", &["1", "y"]), ("env", &["prod"])])
    );
    assert_eq!(
        s.project_secret_tags(Q).await.unwrap(),
        sm(&[("env", &["qa"])])
    );
    assert!(
        s.project_secret_tags("no-such-project")
            .await
            .unwrap()
            .is_empty()
    );
    // Key tags and secret tags are separate worlds.
    assert!(s.project_tags(P).await.unwrap().is_empty());
}

async fn find_secrets_by_tags(ctx: Ctx) {
    let s = &*ctx.store;
    let q = SecretQuotas::default();
    add_secret(s, &secret(P, "id-1", "web-frontend", 4)).await;
    add_secret(s, &secret(P, "id-2", "web-backend", 3)).await;
    add_secret(s, &secret(P, "id-3", "db", 2)).await;
    add_secret(s, &secret(P, "id-4", "WEB-admin", 1)).await;
    add_secret(s, &secret(Q, "id-q", "web-q", 5)).await;
    s.put_secret_tags(P, "id-1", &[tag("team", "a"), tag("env", "prod")], &q)
        .await
        .unwrap();
    s.put_secret_tags(P, "id-2", &[tag("env", "dev"), tag("team", "a")], &q)
        .await
        .unwrap();
    s.put_secret_tags(P, "id-3", &[tag("env", "prod")], &q)
        .await
        .unwrap();
    s.put_secret_tags(Q, "id-q", &[tag("env", "prod")], &q)
        .await
        .unwrap();

    let find = |filter: TagFilter| async move {
        let page = s.find_secrets_by_tags(P, &filter, 0, 100).await.unwrap();
        assert_eq!(page.total as usize, page.items.len());
        page.items
            .iter()
            .map(|(k, _)| k.name.clone())
            .collect::<Vec<_>>()
    };
    // Ordered by name (bytes).
    assert_eq!(
        find(TagFilter::default()).await,
        ["WEB-admin", "db", "web-backend", "web-frontend"]
    );
    assert_eq!(
        find(tag_filter(&[("env", &["prod"])])).await,
        ["db", "web-frontend"]
    );
    assert_eq!(
        find(tag_filter(&[("env", &["prod", "dev"])])).await,
        ["db", "web-backend", "web-frontend"]
    );
    assert_eq!(
        find(tag_filter(&[("team", &[])])).await,
        ["web-backend", "web-frontend"]
    );
    assert_eq!(
        find(tag_filter(&[("env", &["prod"]), ("team", &[])])).await,
        ["web-frontend"]
    );
    assert!(find(tag_filter(&[("nope", &[])])).await.is_empty());
    assert_eq!(
        find(named("web", TagFilter::default())).await,
        ["web-backend", "web-frontend"]
    );
    assert_eq!(
        find(named("WEB", TagFilter::default())).await,
        ["WEB-admin"]
    );
    assert_eq!(
        find(named("web", tag_filter(&[("env", &["prod"])]))).await,
        ["web-frontend"]
    );
    assert!(find(named("%", TagFilter::default())).await.is_empty());

    let page = s
        .find_secrets_by_tags(P, &TagFilter::default(), 0, 3)
        .await
        .unwrap();
    assert_eq!((page.next_offset, page.total), (Some(3), 4));
    assert!(page.items[0].1.is_empty());
    assert_eq!(page.items[2].1, [tag("env", "dev"), tag("team", "a")]);
    let page = s
        .find_secrets_by_tags(P, &TagFilter::default(), 3, 3)
        .await
        .unwrap();
    assert_eq!((page.next_offset, page.total), (None, 4));
    assert_eq!(page.items[0].0, secret(P, "id-1", "web-frontend", 4));
    assert_eq!(page.items[0].1, [tag("env", "prod"), tag("team", "a")]);

    let page = s
        .find_secrets_by_tags(Q, &tag_filter(&[("env", &["prod"])]), 0, 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].0.secret_id, "id-q");
    assert_eq!(
        s.find_secrets_by_tags("no-such-project", &TagFilter::default(), 0, 10)
            .await
            .unwrap(),
        empty()
    );
}

// ---- domain-key binding -----------------------------------------------------------

/// The first KCV recorded for a label holds until explicitly replaced;
/// wrapped material is counted per wrapping key.
async fn domain_key_checks(ctx: Ctx) {
    let s = &*ctx.store;
    let dk = "keymesh-domain-1";
    assert_eq!(s.domain_key_check(dk).await.unwrap(), None);
    assert_eq!(s.wrapped_under(dk).await.unwrap(), 0);
    let first = s
        .record_domain_key_check(dk, "00112233aabbccdd", 10)
        .await
        .unwrap();
    assert_eq!(
        (first.label.as_str(), first.kcv.as_str(), first.recorded_ms),
        (dk, "00112233aabbccdd", 10)
    );
    // A second record keeps the first: the caller sees the mismatch.
    let kept = s
        .record_domain_key_check(dk, "ffffffffffffffff", 20)
        .await
        .unwrap();
    assert_eq!(kept, first);
    assert_eq!(s.domain_key_check(dk).await.unwrap(), Some(first));
    assert_eq!(s.domain_key_check("other").await.unwrap(), None);
    s.replace_domain_key_check(dk, "ffffffffffffffff", 30)
        .await
        .unwrap();
    let replaced = s.domain_key_check(dk).await.unwrap().unwrap();
    assert_eq!(
        (replaced.kcv.as_str(), replaced.recorded_ms),
        ("ffffffffffffffff", 30)
    );
    // Replacing a label never recorded records it.
    s.replace_domain_key_check("dk-2", "0123456789abcdef", 40)
        .await
        .unwrap();
    assert!(s.domain_key_check("dk-2").await.unwrap().is_some());

    add_key(s, &key(P, "k1", "a1", 1)).await;
    add_key(s, &key(Q, "k2", "a2", 2)).await;
    assert_eq!(s.wrapped_under(dk).await.unwrap(), 2);
    assert_eq!(s.wrapped_under("dk-2").await.unwrap(), 0);
    // The record survives a reopen.
    let again = keymesh_store::open(&ctx.url).await.unwrap();
    assert_eq!(again.domain_key_check(dk).await.unwrap(), Some(replaced));
}

/// Two first starts racing: both end up with the same record.
async fn concurrent_first_domain_key_records_agree(ctx: Ctx) {
    let (a, b) = (Arc::clone(&ctx.store), Arc::clone(&ctx.store));
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.record_domain_key_check("dk", "aaaaaaaaaaaaaaaa", 1).await }),
        tokio::spawn(async move { b.record_domain_key_check("dk", "bbbbbbbbbbbbbbbb", 1).await }),
    );
    let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert_eq!(ra, rb);
}
