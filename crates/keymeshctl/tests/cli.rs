//! keymeshctl as an operator runs it, against a fresh SoftHSM2 token.
//! Every invocation is a child process, so SOFTHSM2_CONF is set per child and
//! this process's environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct Env {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    status: PathBuf,
    keystores: PathBuf,
    pin_file: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "5678\n").unwrap();
        Self {
            status: dir.path().join("key-status.json"),
            keystores: dir.path().join("keystores.json"),
            conf,
            pin_file,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        common::keymeshctl(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("KEYMESH_PKCS11_MODULE", MODULE)
            .env("KEYMESH_PIN_FILE", &self.pin_file)
            .env("KEYMESH_KEY_STATUS_FILE", &self.status)
            .env("KEYMESH_KEYSTORES_FILE", &self.keystores)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        common::stdout_ok(args, self.run(args))
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        common::assert_stderr_has(args, &out, needle);
    }
}

#[test]
fn operator_workflow() {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let env = Env::new();
    env.fails(&["key", "list"], "no token labelled");
    env.ok(&["token", "init"]);
    env.fails(&["token", "init"], "already exists");
    assert!(
        env.ok(&["token", "init", "--if-missing"])
            .contains("already exists")
    );

    env.ok(&["key", "create", "k1"]);
    env.ok(&["key", "create", "k2", "--usage", "encrypt"]);
    env.ok(&["key", "create", "k3", "--usage", "none"]);
    env.fails(&["key", "create", "k1"], "already exists");
    env.fails(&["key", "create", "bad id"], "may only contain");
    env.fails(&["key", "disable", "missing"], "no key labelled");

    env.ok(&["key", "disable", "k2"]);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"id": "k1", "key_spec": "AES_256", "key_usage": ["ENCRYPT", "DECRYPT"], "status": "ENABLED"},
            {"id": "k2", "key_spec": "AES_256", "key_usage": ["ENCRYPT"], "status": "DISABLED"},
            {"id": "k3", "key_spec": "AES_256", "key_usage": [], "status": "ENABLED"},
        ])
    );
    env.ok(&["key", "enable", "k2"]);
    assert!(
        env.ok(&["key", "list"])
            .contains("k2  AES_256   ENCRYPT          ENABLED")
    );

    // Wrong PIN: a clear error, no PIN in it.
    let out = common::keymeshctl(&["key", "list", "--pin", "0000"])
        .env("SOFTHSM2_CONF", &env.conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("0000"));

    // Credentials.
    let p = "/demo/kms/xks/v1";
    let first: serde_json::Value =
        serde_json::from_str(&env.ok(&["credential", "create", "--uri-path", p])).unwrap();
    let first_id = first["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = first["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["credential", "rotate", "--uri-path", p]);
    env.ok(&["credential", "rotate", "--uri-path", p]);
    let listed = env.ok(&["credential", "list"]);
    assert!(
        !listed.contains(&first_id),
        "rotated twice: the first credential is gone"
    );
    assert!(!listed.contains(&secret));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    env.fails(
        &["credential", "rotate", "--uri-path", "/other/kms/xks/v1"],
        "no key store",
    );
    env.fails(
        &[
            "credential",
            "revoke",
            "--uri-path",
            p,
            "--access-key-id",
            &first_id,
        ],
        "has no credential",
    );
}

#[test]
fn domain_key_init() {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let env = Env::new();
    env.fails(&["domain-key", "init"], "no token labelled");
    env.ok(&["token", "init"]);
    assert!(
        env.ok(&["domain-key", "init"])
            .contains("created domain key keymesh-domain-v1")
    );
    env.fails(&["domain-key", "init"], "already exists");
    assert!(
        env.ok(&["domain-key", "init", "--if-missing"])
            .contains("already exists")
    );
    env.ok(&["domain-key", "init", "--label", "keymesh-domain-v2"]);
    // A customer key's label is never taken over, nor a second key created
    // next to it.
    env.ok(&["key", "create", "k1"]);
    // Outside the wrapping-key class (keymesh-domain-*), refused up front.
    env.fails(
        &["domain-key", "init", "--label", "k1", "--if-missing"],
        "wrapping-key label class",
    );
    env.fails(&["domain-key", "init", "--label", ""], "--label");

    // Wrap/unwrap only: the workers can never encrypt with a domain key.
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"id": "k1", "key_spec": "AES_256", "key_usage": ["ENCRYPT", "DECRYPT"], "status": "ENABLED"},
            {"id": "keymesh-domain-v1", "key_spec": "AES_256", "key_usage": ["WRAP", "UNWRAP"], "status": "ENABLED"},
            {"id": "keymesh-domain-v2", "key_spec": "AES_256", "key_usage": ["WRAP", "UNWRAP"], "status": "ENABLED"},
        ])
    );
}

#[test]
fn keys_are_assigned_to_key_stores() {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let env = Env::new();
    env.ok(&["token", "init"]);
    let (a, b) = ("/a/kms/xks/v1", "/b/kms/xks/v1");
    env.ok(&["credential", "create", "--uri-path", a]);
    env.ok(&["credential", "create", "--uri-path", b]);
    let key_ids = |uri: &str| -> Vec<String> {
        let f: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&env.keystores).unwrap()).unwrap();
        let ks = f["keystores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["uri_path"] == uri)
            .unwrap()
            .clone();
        serde_json::from_value(ks["key_ids"].clone()).unwrap_or_default()
    };
    // A new key store serves nothing.
    assert!(key_ids(a).is_empty() && key_ids(b).is_empty());

    env.ok(&["key", "create", "ka", "--keystore", a]);
    assert_eq!(key_ids(a), ["ka"]);
    assert!(key_ids(b).is_empty());
    // A typo in the key store creates nothing.
    env.fails(
        &["key", "create", "kx", "--keystore", "/typo/kms/xks/v1"],
        "no key store",
    );
    assert!(!env.ok(&["key", "list"]).contains("kx"));

    env.ok(&["key", "create", "kb"]);
    env.ok(&["key", "assign", "kb", "ka", "--keystore", b]);
    assert!(
        env.ok(&["key", "assign", "kb", "--keystore", b])
            .contains("already assigned")
    );
    assert_eq!(key_ids(b), ["kb", "ka"]);
    env.ok(&["key", "assign", "ledger-*", "--keystore", b]);
    env.fails(
        &["key", "assign", "nope", "--keystore", b],
        "no key labelled",
    );
    env.ok(&[
        "key",
        "assign",
        "later",
        "--keystore",
        b,
        "--no-token-check",
    ]);
    env.ok(&["key", "unassign", "later", "--keystore", b]);
    env.fails(&["key", "assign", "*", "--keystore", b], "every key");
    env.ok(&["key", "unassign", "ka", "ledger-*", "--keystore", b]);
    assert!(
        env.ok(&["key", "unassign", "ka", "--keystore", b])
            .contains("was not assigned")
    );
    assert_eq!(key_ids(b), ["kb"]);

    // keymesh's own label space: never created, never assigned.
    env.ok(&["domain-key", "init"]);
    for id in ["keymesh-domain-v1", "keymesh-health-check", "keymesh-x"] {
        env.fails(&["key", "create", id], "reserved");
        env.fails(&["key", "assign", id, "--keystore", a], "reserved");
    }
    env.fails(&["key", "assign", "keymesh-*", "--keystore", a], "reserved");

    // The file stays private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&env.keystores)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

impl Env {
    /// `run` with `KEYMESH_STORE_URL` set.
    fn run_store(&self, store: &str, args: &[&str]) -> Output {
        common::keymeshctl(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("KEYMESH_PKCS11_MODULE", MODULE)
            .env("KEYMESH_PIN_FILE", &self.pin_file)
            .env("KEYMESH_STORE_URL", store)
            .output()
            .unwrap()
    }

    fn store_ok(&self, store: &str, args: &[&str]) -> String {
        common::stdout_ok(args, self.run_store(store, args))
    }

    fn store_fails(&self, store: &str, args: &[&str], needle: &str) {
        let out = self.run_store(store, args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
        common::assert_stderr_has(args, &out, needle);
    }

    /// The token is lost: its directory is gone, a fresh token is made.
    fn lose_token(&self) {
        let tokens = self.conf.parent().unwrap().join("tokens");
        std::fs::remove_dir_all(&tokens).unwrap();
        std::fs::create_dir(&tokens).unwrap();
        self.ok(&["token", "init"]);
    }
}

/// The KCV in `created domain key ... KCV <hex>` / `... (KCV <hex>)`.
fn kcv_of(out: &str) -> String {
    let at = out.rfind("KCV ").unwrap() + 4;
    out[at..at + 16].to_owned()
}

#[test]
fn domain_key_init_never_replaces_stored_material() {
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
    let env = Env::new();
    let dir = env.conf.parent().unwrap().to_path_buf();
    let store = format!("sqlite://{}", dir.join("store.db").display());
    let other = format!("sqlite://{}", dir.join("other.db").display());
    env.ok(&["token", "init"]);
    let kcv1 = kcv_of(&env.store_ok(&store, &["domain-key", "init"]));
    assert_eq!(env.store_ok(&store, &["domain-key", "check"]).trim(), kcv1);
    let again = env.store_ok(&store, &["domain-key", "init", "--if-missing"]);
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(kcv_of(&again), kcv1);

    // The token is lost: init --if-missing must not paper over it.
    env.lose_token();
    for args in [
        &["domain-key", "init", "--if-missing"][..],
        &["domain-key", "init"][..],
    ] {
        env.store_fails(&store, args, &format!("recorded KCV {kcv1}"));
        env.store_fails(&store, args, "--i-understand-existing-material-is-lost");
    }
    env.store_fails(&store, &["domain-key", "check"], "no domain key");
    // Told explicitly: a new key, and the record follows it.
    let out = env.store_ok(
        &store,
        &[
            "domain-key",
            "init",
            "--i-understand-existing-material-is-lost",
        ],
    );
    let kcv2 = kcv_of(&out);
    assert_ne!(kcv2, kcv1);
    assert_eq!(env.store_ok(&store, &["domain-key", "check"]).trim(), kcv2);

    // A store bound to another key: the HSM's key is refused, naming both.
    env.store_ok(&other, &["domain-key", "init", "--if-missing"]);
    env.lose_token();
    // Without a store nothing can be checked: created, with a warning.
    let out = env.run(&["domain-key", "init"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: no --store-url"));
    let kcv3 = kcv_of(&String::from_utf8_lossy(&out.stdout));
    for args in [
        &["domain-key", "init", "--if-missing"][..],
        &["domain-key", "check"][..],
    ] {
        env.store_fails(
            &store,
            args,
            &format!("has KCV {kcv3}, but the store recorded KCV {kcv2}"),
        );
    }
    // Even the explicit flag does not accept a key that differs from the record.
    env.store_fails(
        &store,
        &[
            "domain-key",
            "init",
            "--if-missing",
            "--i-understand-existing-material-is-lost",
        ],
        "but the store recorded KCV",
    );
}
