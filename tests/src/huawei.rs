//! Huawei-Cloud KMS dialect support for the e2e harness.
//!
//! A mesh started with [`crate::MeshOptions::huawei`] also gets a durable
//! store (a SQLite file in the mesh directory, or a fresh PostgreSQL database
//! `km_e2e_<hex>` that is dropped with the mesh), the HSM domain (wrapping)
//! key, an auth-token signing key pair and three accounts: project A with a
//! full and a read-only account, project B with a full account. The edge gets
//! a `[huawei]` section pointing at all of it. Everything is created with
//! `keymeshctl`, exactly as an operator would, so these tests also exercise
//! the admin CLI.
//!
//! The PostgreSQL database is created and dropped with sqlx on a helper
//! thread with its own runtime: `Mesh::start` may be called from inside a
//! `#[tokio::test]` runtime, where blocking on another runtime would panic.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{Mesh, MeshOptions, random_hex};

/// Which store backend the Huawei dialect runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuaweiStore {
    /// `sqlite://<mesh dir>/keymesh.db`.
    Sqlite,
    /// A fresh database on [`pg_admin_url`], dropped with the mesh.
    Postgres,
}

impl HuaweiStore {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }

    /// Default mesh options plus the Huawei dialect on this backend.
    pub fn options(self) -> MeshOptions {
        MeshOptions {
            huawei: Some(self),
            ..MeshOptions::default()
        }
    }

    /// The mesh of this backend shared by every test of one test binary
    /// (started on first use, see [`crate::shared_mesh`]).
    pub fn shared_mesh(self) -> &'static Mesh {
        static SQLITE: OnceLock<Mesh> = OnceLock::new();
        static POSTGRES: OnceLock<Mesh> = OnceLock::new();
        let cell = match self {
            Self::Sqlite => &SQLITE,
            Self::Postgres => &POSTGRES,
        };
        crate::shared_mesh(cell, || self.options())
    }
}

/// The PostgreSQL server the e2e tests create their databases on:
/// `$KEYMESH_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`
/// (trust auth). The database in the URL is only used to run CREATE/DROP.
pub fn pg_admin_url() -> String {
    std::env::var("KEYMESH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One AK/SK account, as printed by `keymeshctl account create --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuaweiAccount {
    pub access_key: String,
    pub secret_key: String,
    pub project_id: String,
    pub user_id: String,
    pub role: String,
}

/// What `keymeshctl auth-token issue` should put into a token.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub project: String,
    pub user: String,
    /// `--role` (keymeshctl's default when `None`).
    pub role: Option<String>,
    /// `--ttl-secs`. 0 issues a token that is expired at once (expiry =
    /// issue time, and the edge refuses a token when `now >= exp`).
    pub ttl_secs: Option<u64>,
    /// `--obt`: the token carries the OBT tag (KMS.0304).
    pub obt: bool,
    /// `--no-project` (instead of `--project`): a token without a project
    /// scope (KMS.0305).
    pub no_project: bool,
    /// Sign with this private key instead of the one the edge trusts.
    pub private_key: Option<PathBuf>,
    /// `--not-before-secs`: valid only from this many seconds after now.
    pub not_before_secs: Option<u64>,
    /// `--issuer` (keymeshctl's default, which the edge expects, when `None`).
    pub issuer: Option<String>,
}

impl TokenSpec {
    /// A token for `account`'s project and user, with its role.
    pub fn for_account(account: &HuaweiAccount) -> Self {
        Self {
            project: account.project_id.clone(),
            user: account.user_id.clone(),
            role: Some(account.role.clone()),
            ..Self::default()
        }
    }
}

/// The Huawei side of a running mesh.
#[derive(Debug)]
pub struct Huawei {
    pub store: HuaweiStore,
    /// The `store_url` the edge and keymeshctl use.
    pub store_url: String,
    /// `http://127.0.0.1:PORT` (or `https://localhost:PORT` on a TLS mesh):
    /// the edge's main listener, which serves the Huawei paths.
    pub endpoint: String,
    /// Project A, role `full`.
    pub full_a: HuaweiAccount,
    /// Project A, role `readonly`.
    pub readonly_a: HuaweiAccount,
    /// Project B, role `full`.
    pub full_b: HuaweiAccount,
    /// The key that signs X-Auth-Tokens the edge trusts.
    pub token_private_key: PathBuf,
    /// Its public half, named by the edge's `token_public_key_file`.
    pub token_public_key: PathBuf,
    /// A second key pair the edge does not trust (tokens signed with it are
    /// well-formed but carry a bad signature: KMS.0302).
    pub rogue_private_key: PathBuf,
    pub rogue_public_key: PathBuf,
    /// Held only for its `Drop` (drops the PostgreSQL database).
    _pg: Option<PgDatabase>,
}

impl Huawei {
    /// The edge's `[huawei]` section.
    pub fn edge_toml(&self) -> String {
        format!(
            "\n[huawei]\nstore_url = \"{}\"\ntoken_public_key_file = \"{}\"\ndeadline_ms = 5000\nmax_skew_secs = 900\n",
            self.store_url,
            self.token_public_key.display()
        )
    }
}

/// A PostgreSQL database created for one mesh and dropped with it
/// (kept when `KEYMESH_KEEP_TMP` is set, like the mesh directory).
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    /// URL of the new database.
    pub url: String,
}

impl PgDatabase {
    /// `CREATE DATABASE km_e2e_<pid>_<hex>` on the server of `admin_url`,
    /// after dropping the databases of test processes that are gone.
    ///
    /// Shared meshes live in statics and are never dropped, so their
    /// databases outlive the test binary; the creator's pid in the name lets
    /// the next run find and drop them.
    pub fn create(admin_url: &str) -> Result<Self> {
        if let Err(e) = sweep_stale(admin_url) {
            eprintln!("sweeping stale km_e2e databases: {e:#}");
        }
        let name = format!("km_e2e_{}_{}", std::process::id(), random_hex(6));
        Self::create_named(admin_url, &name)
    }

    /// `CREATE DATABASE <name>`; `name` must be `[a-z0-9_]+` (it is spliced
    /// into the statement).
    pub fn create_named(admin_url: &str, name: &str) -> Result<Self> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("database name {name:?} is not [a-z0-9_]+");
        }
        run_pg(admin_url, format!("CREATE DATABASE \"{name}\""))
            .with_context(|| format!("create database {name} via {admin_url}"))?;
        let url = replace_db_name(admin_url, name)?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if std::env::var_os("KEYMESH_KEEP_TMP").is_some() {
            eprintln!("keeping database {}", self.url);
            return;
        }
        // FORCE: a child that was SIGKILLed may leave a backend behind for a moment.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = run_pg(&self.admin_url, sql) {
            eprintln!("drop database {}: {e:#}", self.name);
        }
    }
}

/// Drop every `km_e2e_<pid>_*` database whose process no longer runs.
fn sweep_stale(admin_url: &str) -> Result<()> {
    let names = pg_database_names(admin_url)?;
    for name in names.iter().filter(|n| is_stale(n)) {
        run_pg(
            admin_url,
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )?;
    }
    Ok(())
}

/// A harness database (`km_e2e_<pid>_<hex>`) whose creator has exited.
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("km_e2e_") else {
        return false;
    };
    let Some((pid, hex)) = rest.split_once('_') else {
        return false;
    };
    let well_formed = pid.bytes().all(|b| b.is_ascii_digit())
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Names of the `km_e2e_%` databases on the server.
fn pg_database_names(url: &str) -> Result<Vec<String>> {
    let url = url.to_owned();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<Vec<String>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::postgres::PgConnection::connect(&url).await?;
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'km\\_e2e\\_%'",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                Ok(names)
            })
        })
        .join()
        .map_err(|_| anyhow!("postgres helper thread panicked"))?
    })
}

/// `postgres://user@host:port/db?x` → same URL with database `name`.
fn replace_db_name(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("not a URL: {url}"))?;
    let authority_end = base[after_scheme..]
        .find('/')
        .map(|i| i + after_scheme)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Run one statement on `url` from a helper thread with its own runtime.
fn run_pg(url: &str, sql: String) -> Result<()> {
    let url = url.to_owned();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::postgres::PgConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok(())
            })
        })
        .join()
        .map_err(|_| anyhow!("postgres helper thread panicked"))?
    })
}

impl Mesh {
    /// The Huawei side of this mesh (panics when the mesh was started
    /// without [`crate::MeshOptions::huawei`]).
    pub fn huawei(&self) -> &Huawei {
        self.huawei
            .as_ref()
            .expect("mesh started without MeshOptions::huawei")
    }

    /// keymeshctl with `--store-url` of this mesh's store.
    pub fn huawei_ctl(&self, args: &[&str]) -> Result<String> {
        let url = match &self.huawei {
            Some(h) => h.store_url.clone(),
            None => bail!("mesh started without MeshOptions::huawei"),
        };
        self.ctl_with_store(&url, args)
    }

    fn ctl_with_store(&self, store_url: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["--store-url", store_url];
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// `keymeshctl account create ... --json`.
    pub fn huawei_create_account(
        &self,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<HuaweiAccount> {
        let url = &self.huawei().store_url;
        create_account(self, url, project, user, role)
    }

    /// Issue an X-Auth-Token with `keymeshctl auth-token issue`.
    pub fn huawei_token(&self, spec: &TokenSpec) -> Result<String> {
        let h = self.huawei();
        issue_token(self, &h.store_url, &h.token_private_key, spec)
    }

    /// Create the store, domain key, token keys and accounts (before any
    /// service starts). The endpoint is filled in once the edge is up.
    pub(crate) fn setup_huawei(&self, store: HuaweiStore) -> Result<Huawei> {
        let (store_url, pg) = match store {
            HuaweiStore::Sqlite => {
                let f = self.root().join("keymesh.db");
                // An empty file is a valid empty SQLite database; creating it
                // here makes the URL work whatever `create_if_missing` says.
                std::fs::File::create(&f)?;
                (format!("sqlite://{}", f.display()), None)
            }
            HuaweiStore::Postgres => {
                let db = PgDatabase::create(&pg_admin_url())?;
                (db.url.clone(), Some(db))
            }
        };
        self.ctl_with_store(&store_url, &["domain-key", "init", "--if-missing"])?;

        let keys = self.root().join("auth-token");
        std::fs::create_dir_all(&keys)?;
        let keygen = |name: &str| -> Result<(PathBuf, PathBuf)> {
            let private = keys.join(format!("{name}-private.pem"));
            let public = keys.join(format!("{name}-public.pem"));
            self.ctl(&[
                "auth-token",
                "keygen",
                "--private-key",
                path_str(&private)?,
                "--public-key",
                path_str(&public)?,
            ])?;
            Ok((private, public))
        };
        let (token_private_key, token_public_key) = keygen("token")?;
        let (rogue_private_key, rogue_public_key) = keygen("rogue")?;

        // Huawei project and user ids are 32 lower-case hex characters.
        let project_a = random_hex(16);
        let project_b = random_hex(16);
        let full_a = create_account(self, &store_url, &project_a, &random_hex(16), "full")?;
        let readonly_a = create_account(self, &store_url, &project_a, &random_hex(16), "readonly")?;
        let full_b = create_account(self, &store_url, &project_b, &random_hex(16), "full")?;

        Ok(Huawei {
            store,
            store_url,
            endpoint: String::new(),
            full_a,
            readonly_a,
            full_b,
            token_private_key,
            token_public_key,
            rogue_private_key,
            rogue_public_key,
            _pg: pg,
        })
    }
}

fn path_str(p: &std::path::Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}

fn create_account(
    mesh: &Mesh,
    store_url: &str,
    project: &str,
    user: &str,
    role: &str,
) -> Result<HuaweiAccount> {
    let out = mesh.ctl_with_store(
        store_url,
        &[
            "account",
            "create",
            "--project",
            project,
            "--user",
            user,
            "--role",
            role,
            "--json",
        ],
    )?;
    let a: HuaweiAccount = serde_json::from_str(out.trim())
        .with_context(|| format!("parse `account create --json` output: {out:.300}"))?;
    if a.project_id != project || a.user_id != user {
        bail!(
            "account create returned project {} user {}",
            a.project_id,
            a.user_id
        );
    }
    Ok(a)
}

fn issue_token(
    mesh: &Mesh,
    store_url: &str,
    default_key: &std::path::Path,
    spec: &TokenSpec,
) -> Result<String> {
    let key = spec.private_key.as_deref().unwrap_or(default_key);
    let mut args: Vec<String> = vec![
        "auth-token".into(),
        "issue".into(),
        "--private-key".into(),
        path_str(key)?.into(),
        "--user".into(),
        spec.user.clone(),
    ];
    if spec.no_project {
        args.push("--no-project".into());
    } else {
        args.extend(["--project".into(), spec.project.clone()]);
    }
    if let Some(r) = &spec.role {
        args.extend(["--role".into(), r.clone()]);
    }
    if let Some(t) = spec.ttl_secs {
        args.extend(["--ttl-secs".into(), t.to_string()]);
    }
    if spec.obt {
        args.push("--obt".into());
    }
    if let Some(n) = spec.not_before_secs {
        args.extend(["--not-before-secs".into(), n.to_string()]);
    }
    if let Some(i) = &spec.issuer {
        args.extend(["--issuer".into(), i.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mesh.ctl_with_store(store_url, &refs)?;
    let token = out.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("auth-token issue printed no single token: {out:.300}");
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_name_is_replaced() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://u:p@h/test?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            replace_db_name("postgresql://h:1", "x").unwrap(),
            "postgresql://h:1/x"
        );
    }

    #[test]
    fn stale_names() {
        // pid 0 never names a live process.
        assert!(is_stale("km_e2e_0_ab12"));
        let mine = format!("km_e2e_{}_ab12", std::process::id());
        assert!(!is_stale(&mine));
        for other in ["test", "km_e2e_", "km_e2e_12", "km_e2e_x_ab", "km_e2e_1_zz"] {
            assert!(!is_stale(other), "{other}");
        }
    }

    #[test]
    fn store_names_round_trip() {
        for s in [HuaweiStore::Sqlite, HuaweiStore::Postgres] {
            assert_eq!(HuaweiStore::parse(s.as_str()), Some(s));
        }
    }
}
