//! Harness shared by the worker's SoftHSM2 suites (`softhsm.rs`, `vault.rs`).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialised, and a
//! process may call `C_Initialize` only once. Tests must not mutate their own
//! environment, so each suite re-runs its own test binary as a child process
//! with `SOFTHSM2_CONF` pointing at a fresh temporary token directory
//! ([`run_suite`]); the child runs the whole suite against one initialised
//! module. The rest are the helpers both suites use inside the child.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use keymesh_common::Secret;
use keymesh_crypto_worker::Config;
use keymesh_crypto_worker::pool::{Pool, PoolThreads};
use keymesh_pkcs11::Hsm;
use keymesh_pkcs11::wrap;
use keymesh_proto::crypto::v1::{ErrorInfo, ErrorReason};
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The token every suite initialises.
pub const LABEL: &str = "keymesh";

/// The test `suite` (its `#[test]` name): in the child (`child_env` set to
/// the temporary directory) run `child` with that directory; in the parent
/// make the token directory and re-run this binary as the child. `what`
/// names the suite in the failure message.
pub fn run_suite(suite: &str, child_env: &str, what: &str, child: fn(&Path)) {
    if let Some(dir) = std::env::var_os(child_env) {
        child(Path::new(&dir));
        return;
    }
    if !Path::new(MODULE).exists() {
        eprintln!("SKIPPED: {MODULE} not installed");
        return;
    }
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
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", suite, "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(child_env, dir.path())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed in the child process");
}

pub fn pin() -> Secret {
    Secret::new("1234".into())
}

/// A fresh logged-in handle on the suite's token, for a pool of its own.
pub fn pool_token(admin: &Hsm) -> Arc<Hsm> {
    Arc::new(Hsm::open(admin.context().clone(), LABEL, pin()).unwrap())
}

/// Stop a pool: drop the last handle, then join its session threads.
pub async fn stop(pool: Pool, threads: PoolThreads) {
    drop(pool);
    tokio::task::spawn_blocking(move || threads.join())
        .await
        .unwrap();
}

pub fn reason(status: &tonic::Status) -> ErrorReason {
    let info = ErrorInfo::decode(status.details()).unwrap();
    ErrorReason::try_from(info.reason).unwrap()
}

#[track_caller]
pub fn expect_err(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, why: ErrorReason) {
    let status = r.expect_err("expected an error");
    assert_eq!((status.code(), reason(&status)), (code, why), "{status:?}");
}

/// One boolean attribute of object `h`.
pub fn bool_attr(s: &Session, h: ObjectHandle, t: AttributeType) -> bool {
    match s.get_attributes(h, &[t]).unwrap().as_slice() {
        [
            Attribute::Token(b)
            | Attribute::Sensitive(b)
            | Attribute::Extractable(b)
            | Attribute::Encrypt(b)
            | Attribute::Decrypt(b)
            | Attribute::Wrap(b)
            | Attribute::Unwrap(b),
        ] => *b,
        other => panic!("unexpected attributes {other:?}"),
    }
}

/// A two-session worker on the suite's token with the default domain key.
pub fn config(worker_id: &str, key_status_file: PathBuf, drain_delay: Duration) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        addr_file: None,
        worker_id: worker_id.into(),
        pkcs11_module: MODULE.into(),
        token_label: LABEL.into(),
        pin: pin(),
        sessions: 2,
        slow_lane: keymesh_crypto_worker::pool::SlowLane {
            sessions: 1,
            queue: 4,
        },
        key_status_file: Some(key_status_file),
        health_interval: Duration::from_secs(1),
        session_key_copies: true,
        key_revalidate: Duration::from_secs(1),
        drain_delay,
        grpc_tls: None,
        health_listen: None,
        domain_key_label: wrap::DEFAULT_DOMAIN_KEY_LABEL.into(),
        domain_key_kcv: None,
    }
}

/// Serve `config` on an ephemeral port in this process (the module `ctx` is
/// already initialised); returns a connected channel, the shutdown trigger
/// and the server task.
pub async fn start_worker(
    config: Config,
    ctx: Pkcs11,
) -> (
    Channel,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keymesh_crypto_worker::serve_with_module(
        config,
        ctx,
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    (connect(addr).await, stop_tx, server)
}

async fn connect(addr: SocketAddr) -> Channel {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => return ch,
            Err(e) => {
                assert!(Instant::now() < until, "cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
