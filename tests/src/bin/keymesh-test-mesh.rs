//! keymesh-test-mesh: start a complete keymesh (rate-limiter, crypto-worker,
//! edge, fresh SoftHSM2 token) with the Huawei KMS dialect on a fresh store,
//! for test suites written in other languages (`tests/python`).
//!
//! `keymesh-test-mesh --store sqlite|postgres` prints ONE JSON line on stdout
//! (endpoint, accounts with AK/SK, pre-issued X-Auth-Tokens, paths), then
//! blocks until its stdin reaches EOF, then stops the mesh, drops the
//! PostgreSQL database and exits non-zero if the plaintext marker
//! ([`keymesh_tests::MARKER`]) shows up in any service log. The parent never
//! has to signal it: closing the pipe (or dying) is enough, and the services
//! die with it through PDEATHSIG.
//!
//! Binaries are found like the cargo e2e tests find them: `$KEYMESH_BIN_DIR`,
//! else the directory this binary lives in (`target/<profile>`).

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use keymesh_tests::{Mesh, huawei::HuaweiStore, huawei::TokenSpec};
use serde_json::json;

const USAGE: &str = "usage: keymesh-test-mesh --store sqlite|postgres";

fn parse_args() -> Result<HuaweiStore> {
    let mut store = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = if a == "--store" {
            args.next()
                .ok_or_else(|| anyhow!("--store needs a value"))?
        } else if let Some(v) = a.strip_prefix("--store=") {
            v.to_owned()
        } else if a == "-h" || a == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else {
            bail!("unknown argument {a:?}\n{USAGE}");
        };
        store = Some(
            HuaweiStore::parse(&value)
                .ok_or_else(|| anyhow!("unknown store {value:?}\n{USAGE}"))?,
        );
    }
    Ok(store.unwrap_or(HuaweiStore::Sqlite))
}

/// The JSON line a test suite needs to reach and authenticate to the mesh.
fn describe(mesh: &Mesh) -> Result<serde_json::Value> {
    let h = mesh.huawei();
    let a = TokenSpec::for_account(&h.full_a);
    let token = |spec: TokenSpec| mesh.huawei_token(&spec);
    // A second user of project A (full role): the grantee / retiring
    // principal of grant tests. Tokens are honoured only for users with an
    // account in the token's project, so it gets one (its AK/SK is unused).
    let other_user = keymesh_tests::random_hex(16);
    mesh.huawei_create_account(&h.full_a.project_id, &other_user, "full")?;
    let tokens = json!({
        "a_valid": token(a.clone())?,
        "a_readonly": token(TokenSpec::for_account(&h.readonly_a))?,
        // Lifetime 0: expired the moment it is issued.
        "a_expired": token(TokenSpec { ttl_secs: Some(0), ..a.clone() })?,
        "a_obt": token(TokenSpec { obt: true, ..a.clone() })?,
        "no_project": token(TokenSpec { no_project: true, ..a.clone() })?,
        // Well-formed, but signed by a key the edge does not trust.
        "a_bad_signature": token(TokenSpec {
            private_key: Some(h.rogue_private_key.clone()),
            ..a.clone()
        })?,
        "b_valid": token(TokenSpec::for_account(&h.full_b))?,
        "a_other_user": token(TokenSpec { user: other_user.clone(), ..a.clone() })?,
    });
    Ok(json!({
        "endpoint": h.endpoint,
        "store": h.store.as_str(),
        "store_url": h.store_url,
        "accounts": {
            "a_full": h.full_a,
            "a_readonly": h.readonly_a,
            "b_full": h.full_b,
        },
        "projects": {
            "a": h.full_a.project_id,
            "b": h.full_b.project_id,
        },
        "tokens": tokens,
        "users": { "a_other": other_user },
        "token_private_key": h.token_private_key,
        "token_public_key": h.token_public_key,
        "root": mesh.root(),
        "logs_dir": mesh.root().join("logs"),
        "edge_config": mesh.edge_config,
        "ctl": mesh.bins.ctl,
        "softhsm_conf": mesh.softhsm_conf,
        "pin_file": mesh.pin_file,
        "marker": String::from_utf8_lossy(keymesh_tests::MARKER),
    }))
}

/// Block until stdin reaches EOF (the parent closed it, or died) or a
/// SIGTERM/SIGINT/SIGHUP arrives, so that every way of stopping the launcher
/// still stops the mesh cleanly and drops its database.
fn wait_for_stop() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let on_eof = tx.clone();
    std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            let mut sink = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            while stdin.read(&mut sink).unwrap_or(0) != 0 {}
            let _ = on_eof.send(());
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            use tokio::signal::unix::{SignalKind, signal};
            rt.block_on(async move {
                let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {}
                }
                let _ = tx.send(());
            });
        })?;
    rx.recv().map_err(|_| anyhow!("stop watchers gone"))
}

fn run() -> Result<()> {
    let store = parse_args()?;
    let mesh = Mesh::start(store.options()).context("start mesh")?;
    let line = serde_json::to_string(&describe(&mesh)?)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    wait_for_stop()?;
    mesh.shutdown();
    // Mesh's Drop scans the logs for the plaintext marker and panics on a
    // leak; turn that into an exit status the parent can check.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(mesh)))
        .map_err(|_| anyhow!("plaintext marker found in a service log (see above)"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keymesh-test-mesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
