//! `keymeshctl account` and `auth-token` as an operator runs them, against a
//! fresh SQLite store and SoftHSM2 token (account secret keys are sealed in
//! the HSM). Every invocation is a child process with its own environment;
//! this process's environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use keymesh_huawei_auth::token::{Role as TokenRole, TokenError, TokenVerifier};
use keymesh_store::AccountSecret;
use keymesh_store::sealed::{ACCOUNT_SEAL_KEY, SealedSecret};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct Env {
    dir: tempfile::TempDir,
    url: String,
}

impl Env {
    /// A store, and a token with the domain key (what `account create` seals under).
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), "5678\n").unwrap();
        let env = Self { dir, url };
        env.ok(&["token", "init"]);
        env.ok(&["domain-key", "init"]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_with(&self, store_url: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = common::keymeshctl(args);
        cmd.env("SOFTHSM2_CONF", self.path("softhsm2.conf"))
            .env("KEYMESH_PKCS11_MODULE", MODULE)
            .env("KEYMESH_PIN_FILE", self.path("pin"));
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

    // The store holds the SK only sealed, bound to the row, under a seal
    // key that is itself stored wrapped; nothing in the database file is
    // the printed secret.
    let store = block_on(keymesh_store::open(&env.url)).unwrap();
    let account = block_on(store.get_account(&ak)).unwrap().unwrap();
    assert_eq!(account.role, keymesh_store::Role::Full);
    assert_eq!(account.user_id, "alice");
    let AccountSecret::Sealed(envelope) = &account.secret else {
        panic!("stored in clear");
    };
    let sealed = SealedSecret::decode(envelope).unwrap();
    assert_eq!(sealed.seal_key, ACCOUNT_SEAL_KEY);
    assert_eq!(sealed.ciphertext.len(), sk.len());
    assert_ne!(sealed.ciphertext, sk.as_bytes());
    let seal_key = block_on(store.get_seal_key(ACCOUNT_SEAL_KEY))
        .unwrap()
        .unwrap();
    assert_eq!(seal_key.wrapping_key, "keymesh-domain-v1");
    assert_eq!(seal_key.wrapped.len(), 40);
    // Both accounts sealed under the one seal key, each with its own IV.
    let bob = block_on(store.get_account(&ak2)).unwrap().unwrap();
    let AccountSecret::Sealed(bob_env) = &bob.secret else {
        panic!("stored in clear");
    };
    assert_ne!(SealedSecret::decode(bob_env).unwrap().iv, sealed.iv);
    drop(store);
    for file in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(file)) {
            for secret in [&sk, &sk2] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{file} holds a secret key"
                );
            }
        }
    }

    // set-role changes the role and nothing else.
    assert_eq!(
        env.ok(&[
            "account",
            "set-role",
            "--access-key",
            &ak,
            "--role",
            "readonly"
        ])
        .trim(),
        format!("{ak}: role readonly")
    );
    let store = block_on(keymesh_store::open(&env.url)).unwrap();
    let after = block_on(store.get_account(&ak)).unwrap().unwrap();
    assert_eq!(after.role, keymesh_store::Role::ReadOnly);
    assert_eq!(after.secret, account.secret);
    drop(store);
    env.fails(
        &[
            "account",
            "set-role",
            "--access-key",
            "NOPE",
            "--role",
            "full",
        ],
        "no account with access key",
    );

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
fn clear_rows_are_sealed_by_account_seal() {
    let env = Env::new();
    // A row as an older keymesh wrote it: the SK in clear.
    block_on(async {
        // Migrations run on open; then write behind the store's back.
        drop(keymesh_store::open(&env.url).await.unwrap());
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&env.url).await.unwrap();
        sqlx::query(
            "INSERT INTO accounts (access_key, secret_key, project_id, user_id, role, created_ms) \
             VALUES ('AKOLDROW', 'old-clear-secret-key', 'p', 'u', 'full', 1)",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    });
    assert_eq!(
        env.ok(&["account", "seal"]).trim(),
        "sealed 1 account secret key(s)"
    );
    assert_eq!(
        env.ok(&["account", "seal"]).trim(),
        "sealed 0 account secret key(s)"
    );
    let store = block_on(keymesh_store::open(&env.url)).unwrap();
    let row = block_on(store.get_account("AKOLDROW")).unwrap().unwrap();
    let AccountSecret::Sealed(envelope) = &row.secret else {
        panic!("still clear");
    };
    let sealed = SealedSecret::decode(envelope).unwrap();
    assert_eq!(sealed.ciphertext.len(), "old-clear-secret-key".len());
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
    assert!(verifier.verify(&token, now, None).unwrap().aud.is_none());

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
        Err(TokenError::UnknownKey)
    );
    // Issuer and not-before are the operator's to set; the kid is the key's.
    let token = issue(&[
        "--project",
        PROJECT,
        "--issuer",
        "other",
        "--not-before-secs",
        "600",
    ]);
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "other");
    assert_eq!(claims["aud"], PROJECT);
    assert_eq!(
        claims["nbf"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(
        verifier.verify(&token, now, Some(PROJECT)),
        Err(TokenError::WrongIssuer)
    );
    let printed_kid = env
        .ok(&[
            "auth-token",
            "keygen",
            "--private-key",
            env.path("third.key").to_str().unwrap(),
            "--public-key",
            env.path("third.pub").to_str().unwrap(),
        ])
        .lines()
        .find_map(|l| l.strip_prefix("kid: ").map(str::to_owned))
        .unwrap();
    let third = TokenVerifier::load(&env.path("third.pub")).unwrap();
    assert_eq!(third.kids().collect::<Vec<_>>(), vec![printed_kid.as_str()]);

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
