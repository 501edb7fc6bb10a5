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
    Account, AliasRecord, Conflict, GrantRecord, KeyFilter, KeyRecord, KeyState, Material, Page,
    QuotaKind, Quotas, Role, Store, StoreError, Tag, TagFilter,
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
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE key_id = $1");
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
        secret_key: format!("secret-of-{access_key}").into(),
        project_id: project.to_owned(),
        user_id: format!("user{access_key}"),
        role,
        created_ms,
    }
}

fn assert_same_account(got: &Account, want: &Account) {
    assert_eq!(got.access_key, want.access_key);
    assert_eq!(*got.secret_key, *want.secret_key);
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
    assert_eq!(
        s.project_tags(P).await.unwrap(),
        [("env".to_owned(), vec!["new".to_owned()])]
    );
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
        s.delete_tags(P, "k1", &["a".to_owned(), "zz".to_owned()])
            .await,
        StoreError::NotFound
    );
    assert_eq!(s.key_tags(P, "k1").await.unwrap().len(), 3);
    s.delete_tags(P, "k1", &["a".to_owned(), "c".to_owned()])
        .await
        .unwrap();
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
        [
            ("b".to_owned(), vec!["1".to_owned(), "y".to_owned()]),
            ("env".to_owned(), vec!["dev".to_owned(), "prod".to_owned()]),
        ]
    );
    assert_eq!(
        s.project_tags(Q).await.unwrap(),
        [
            ("env".to_owned(), vec!["qa".to_owned()]),
            ("only-q".to_owned(), vec!["1".to_owned()]),
        ]
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
    let tags = |entries: &[(&str, &[&str])]| TagFilter {
        tags: entries
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect(),
        resource_name: None,
    };

    assert_eq!(find(TagFilter::default()).await, ["k1", "k2", "k3", "k4"]);
    assert_eq!(find(tags(&[("env", &["prod"])])).await, ["k1", "k3"]);
    assert_eq!(
        find(tags(&[("env", &["prod", "dev"])])).await,
        ["k1", "k2", "k3"]
    );
    assert_eq!(find(tags(&[("team", &[])])).await, ["k1", "k2"]);
    assert_eq!(
        find(tags(&[("env", &["prod"]), ("team", &[])])).await,
        ["k1"]
    );
    assert!(find(tags(&[("nope", &[])])).await.is_empty());
    assert!(find(tags(&[("env", &["staging"])])).await.is_empty());
    // resource_name: case-sensitive substring of the key alias.
    let by_name = |needle: &str, mut filter: TagFilter| {
        filter.resource_name = Some(needle.to_owned());
        filter
    };
    assert_eq!(
        find(by_name("web", TagFilter::default())).await,
        ["k1", "k2"]
    );
    assert_eq!(find(by_name("WEB", TagFilter::default())).await, ["k4"]);
    assert_eq!(
        find(by_name("-", TagFilter::default())).await,
        ["k1", "k2", "k4"]
    );
    assert_eq!(
        find(by_name("web", tags(&[("env", &["prod"])]))).await,
        ["k1"]
    );
    assert!(find(by_name("%", TagFilter::default())).await.is_empty());

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
        .find_keys_by_tags(Q, &tags(&[("env", &["prod"])]), 0, 10)
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
