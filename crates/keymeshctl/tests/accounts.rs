//! `keymeshctl account` and `auth-token` as an operator runs them, against a
//! fresh SQLite store. Every invocation is a child process with its own
//! environment; this process's environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use keymesh_huawei_auth::sdk_hmac::{self, Request, Verifier};
use keymesh_huawei_auth::token::{Role as TokenRole, TokenError, TokenVerifier};

struct Env {
    dir: tempfile::TempDir,
    url: String,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Self { dir, url }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_with(&self, store_url: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = common::keymeshctl(args);
        if let Some(url) = store_url {
            cmd.env("KEYMESH_STORE_URL", url);
        }
        cmd.output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(Some(&self.url), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        common::stdout_ok(args, self.run(args))
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        common::assert_stderr_has(args, &out, needle);
    }
}

fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn account_lifecycle() {
    let env = Env::new();
    let created: serde_json::Value = serde_json::from_str(&env.ok(&[
        "account",
        "create",
        "--project",
        PROJECT,
        "--user",
        "alice",
        "--json",
    ]))
    .unwrap();
    let ak = created["access_key"].as_str().unwrap().to_owned();
    let sk = created["secret_key"].as_str().unwrap().to_owned();
    assert_eq!(ak.len(), 20);
    assert!(
        ak.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(sk.len(), 40);
    assert!(sk.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(created["project_id"], PROJECT);
    assert_eq!(created["user_id"], "alice");
    assert_eq!(created["role"], "full");

    // Text form, read-only role, store named by the flag instead of the env.
    let out = env.run_with(
        None,
        &[
            "--store-url",
            &env.url,
            "account",
            "create",
            "--project",
            "demo",
            "--user",
            "bob",
            "--role",
            "readonly",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (ak2, sk2) = (field("access_key:"), field("secret_key:"));
    assert_eq!(field("role:"), "readonly");

    // list never shows secrets.
    let table = env.ok(&["account", "list"]);
    assert!(table.starts_with("ACCESS_KEY"));
    assert!(table.contains(&ak) && table.contains(&ak2), "{table}");
    assert!(!table.contains(&sk) && !table.contains(&sk2));
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["account", "list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a.get("secret_key").is_none()));
    let bob = listed
        .iter()
        .find(|a| a["access_key"] == ak2.as_str())
        .unwrap();
    assert_eq!(bob["role"], "readonly");
    assert_eq!(bob["project_id"], "demo");

    // The stored secret is the printed one: a request signed with it verifies.
    let store = block_on(keymesh_store::open(&env.url)).unwrap();
    let account = block_on(store.get_account(&ak)).unwrap().unwrap();
    assert_eq!(account.secret_key.as_str(), sk);
    assert_eq!(account.role, keymesh_store::Role::Full);
    assert_eq!(account.user_id, "alice");
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("127.0.0.1:8080"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let path = format!("/v1.0/{PROJECT}/kms/list-keys");
    let body = br#"{"limit": "10"}"#;
    let now = SystemTime::now();
    sdk_hmac::sign("POST", &path, None, &mut headers, body, &ak, &sk, now).unwrap();
    let req = Request {
        method: "POST",
        raw_path: &path,
        raw_query: None,
        headers: &headers,
        body,
    };
    let prepared = Verifier::default().precheck(&req, now).unwrap();
    let stored = block_on(store.get_account(prepared.access_key()))
        .unwrap()
        .unwrap();
    assert_eq!(
        prepared
            .check_signature(&stored.secret_key)
            .unwrap()
            .access_key,
        ak
    );
    drop(store);

    assert_eq!(
        env.ok(&["account", "delete", "--access-key", &ak]).trim(),
        format!("deleted {ak}")
    );
    env.fails(
        &["account", "delete", "--access-key", &ak],
        "no account with access key",
    );
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["account", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn account_arguments_are_checked() {
    let env = Env::new();
    let out = env.run_with(None, &["account", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--store-url / KEYMESH_STORE_URL is required")
    );
    let out = env.run_with(Some("mysql://x"), &["account", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the store"));
    env.fails(
        &["account", "create", "--project", "a/b", "--user", "u"],
        "invalid --project",
    );
    env.fails(
        &["account", "create", "--project", "p", "--user", "u-1"],
        "invalid --user",
    );
    env.fails(
        &[
            "account",
            "create",
            "--project",
            "p",
            "--user",
            "u",
            "--role",
            "admin",
        ],
        "invalid value 'admin'",
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn auth_tokens() {
    let env = Env::new();
    let (sk, pk) = (env.path("token.key"), env.path("token.pub"));
    let (sk_s, pk_s) = (sk.to_str().unwrap(), pk.to_str().unwrap());
    env.ok(&[
        "auth-token",
        "keygen",
        "--private-key",
        sk_s,
        "--public-key",
        pk_s,
    ]);
    assert_eq!(mode(&sk), 0o600);
    assert!(
        std::fs::read_to_string(&sk)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    env.fails(
        &[
            "auth-token",
            "keygen",
            "--private-key",
            sk_s,
            "--public-key",
            pk_s,
        ],
        "refusing to replace a key",
    );
    let verifier = TokenVerifier::load(&pk).unwrap();
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "auth-token",
            "issue",
            "--private-key",
            sk_s,
            "--user",
            "alice",
        ];
        args.extend_from_slice(extra);
        env.ok(&args).trim().to_owned()
    };
    let now = SystemTime::now();

    let token = issue(&["--project", PROJECT]);
    let claims = verifier.verify(&token, now, Some(PROJECT)).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, TokenRole::Full);
    assert_eq!(claims.exp - claims.iat, 86_400);
    assert!(!claims.obt);
    assert_eq!(
        verifier.verify(&token, now, Some("other")),
        Err(TokenError::ProjectMismatch)
    );

    let token = issue(&[
        "--project",
        PROJECT,
        "--role",
        "readonly",
        "--ttl-secs",
        "60",
    ]);
    let claims = verifier.verify(&token, now, Some(PROJECT)).unwrap();
    assert_eq!(claims.role, TokenRole::ReadOnly);
    assert_eq!(claims.exp - claims.iat, 60);
    assert_eq!(
        verifier.verify(&token, now + Duration::from_secs(120), Some(PROJECT)),
        Err(TokenError::Expired)
    );

    let token = issue(&["--project", PROJECT, "--obt"]);
    assert_eq!(
        verifier.verify(&token, now, Some(PROJECT)),
        Err(TokenError::Obt)
    );

    let token = issue(&["--no-project"]);
    assert_eq!(
        verifier.verify(&token, now, Some(PROJECT)),
        Err(TokenError::NoProject)
    );
    assert!(
        verifier
            .verify(&token, now, None)
            .unwrap()
            .project_id
            .is_none()
    );

    // A token from another key pair does not verify.
    let (sk2, pk2) = (env.path("other.key"), env.path("other.pub"));
    env.ok(&[
        "auth-token",
        "keygen",
        "--private-key",
        sk2.to_str().unwrap(),
        "--public-key",
        pk2.to_str().unwrap(),
    ]);
    let other = TokenVerifier::load(&pk2).unwrap();
    let token = issue(&["--project", PROJECT]);
    assert_eq!(
        other.verify(&token, now, Some(PROJECT)),
        Err(TokenError::BadSignature)
    );

    // --project or --no-project, not both, not neither.
    let out = env.run(&[
        "auth-token",
        "issue",
        "--private-key",
        sk_s,
        "--user",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&[
        "auth-token",
        "issue",
        "--private-key",
        sk_s,
        "--user",
        "alice",
        "--project",
        "p",
        "--no-project",
    ]);
    assert_eq!(out.status.code(), Some(2));
    env.fails(
        &[
            "auth-token",
            "issue",
            "--private-key",
            pk_s,
            "--user",
            "alice",
            "--project",
            "p",
        ],
        "PRIVATE KEY",
    );
}
