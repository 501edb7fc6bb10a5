//! Domain-key binding end to end: the store records the domain key's check
//! value (KCV); an edge whose store records another KCV than the HSM's key
//! refuses to start, naming both, and so does a worker whose pinned
//! `--domain-key-kcv` differs; a store with no record (a deployment older
//! than the binding) gets the HSM's KCV recorded on the edge's first start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keymesh_tests::huawei::HuaweiStore;
use keymesh_tests::{Mesh, MeshOptions, WAIT, pkcs11_module, poll, poll_async};
use sqlx::Connection as _;

const WRONG_KCV: &str = "0000000000000000";

/// Start `bin` with `args` (output captured), as the harness would.
fn spawn(m: &Mesh, bin: &std::path::Path, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .env("SOFTHSM2_CONF", &m.softhsm_conf)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait (generously: a busy box) for `child` to exit; its status and output.
fn exit_of(mut child: Child) -> (std::process::ExitStatus, String) {
    let status = poll("the process to exit", Duration::from_secs(120), || {
        child.try_wait().unwrap()
    })
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status, text)
}

async fn sql(url: &str, statement: &str) {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut c)
        .await
        .unwrap();
}

async fn recorded_kcv(url: &str) -> Option<String> {
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT kcv FROM domain_keys WHERE label = 'keymesh-domain-v1'")
        .fetch_optional(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_is_refused_on_a_mismatched_domain_key() {
    let m = Mesh::start(MeshOptions {
        huawei: Some(HuaweiStore::Sqlite),
        ..MeshOptions::default()
    })
    .unwrap();
    let store = m.huawei().store_url.clone();
    // `domain-key init` recorded the HSM's KCV in the store.
    let hsm_kcv = m
        .ctl(&["--store-url", &store, "domain-key", "check"])
        .unwrap();
    let hsm_kcv = hsm_kcv.trim().to_owned();
    assert_eq!(hsm_kcv.len(), 16, "{hsm_kcv}");
    assert_eq!(
        recorded_kcv(&store).await.as_deref(),
        Some(hsm_kcv.as_str())
    );
    let edge_config = m.edge_config.display().to_string();

    // A store bound to another domain key: the edge refuses to start.
    sql(
        &store,
        &format!("UPDATE domain_keys SET kcv = '{WRONG_KCV}'"),
    )
    .await;
    let (status, out) = exit_of(spawn(&m, &m.bins.edge, &["--config", &edge_config]));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "has KCV {hsm_kcv}, but the store recorded KCV {WRONG_KCV}"
        )),
        "{out}"
    );

    // No record (a deployment older than the binding): recorded at start.
    sql(&store, "DELETE FROM domain_keys").await;
    let mut edge = spawn(&m, &m.bins.edge, &["--config", &edge_config]);
    let recorded = poll_async("the edge to record the KCV", WAIT, || {
        let store = store.clone();
        async move { recorded_kcv(&store).await }
    })
    .await
    .unwrap();
    assert_eq!(recorded, hsm_kcv);
    assert!(edge.try_wait().unwrap().is_none(), "the edge exited");
    edge.kill().unwrap();
    edge.wait().unwrap();

    // A worker pinned to another KCV refuses to start, naming both.
    let pin_file = m.pin_file.display().to_string();
    let module = pkcs11_module();
    let worker_args = |kcv: &str| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--pkcs11-module".to_owned(),
            module.clone(),
            "--pin-file".to_owned(),
            pin_file.clone(),
            "--domain-key-kcv".to_owned(),
            kcv.to_owned(),
            // It must get as far as the KCV check: no mesh certificate needed.
            "--insecure-plaintext-grpc".to_owned(),
        ]
    };
    let args = worker_args(WRONG_KCV);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, out) = exit_of(spawn(&m, &m.bins.worker, &args));
    assert!(!status.success(), "{out}");
    assert!(
        out.contains(&hsm_kcv) && out.contains(WRONG_KCV),
        "the error names both KCVs: {out}"
    );

    // The running mesh is untouched, and the edge still starts over the
    // matching record.
    m.restart_edge().unwrap();
    m.assert_no_plaintext_in_logs();
}
