//! End-to-end test harness: starts the real keymesh binaries as child
//! processes against a real SoftHSM2 token in a temporary directory.
//!
//! * Binaries are found next to the test executable (`target/<profile>/deps/..`)
//!   or in `$KEYMESH_BIN_DIR`. Both `edge` and `keymesh-edge` style names are tried.
//! * Every service listens on `127.0.0.1:0` and writes its bound address to an
//!   addr file, which the harness polls with a deadline (never a fixed sleep).
//! * `SOFTHSM2_CONF` is passed to child processes only; the test process
//!   environment is never mutated.
//! * Children are started through `setpriv --pdeathsig KILL` from one long-lived
//!   spawner thread, so they die with the test process even when the [`Mesh`]
//!   lives in a `static` and is never dropped; an owned `Mesh` kills them on Drop.
//! * stdout and stderr of each child go to `<tmp>/logs/<name>.log`, which
//!   [`Mesh::assert_no_plaintext_in_logs`] scans for the plaintext marker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod csms;
pub mod errors;
pub mod huawei;
pub mod kms;
pub mod pki;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
pub use keymesh_xks_client as xks;
use keymesh_xks_client::{ClientConfig, Credentials, HttpVersion, TlsConfig, XksClient};

pub use huawei::{Huawei, HuaweiAccount, HuaweiStore, TokenSpec};

/// Key usable for encrypt and decrypt.
pub const KEY_ED: &str = "key-ed";
/// Encrypt-only key.
pub const KEY_ENC: &str = "key-enc";
/// Decrypt-only key.
pub const KEY_DEC: &str = "key-dec";
/// Key with no usage.
pub const KEY_NONE: &str = "key-none";
/// Encrypt-decrypt key reserved for enable/disable tests.
pub const KEY_TOGGLE: &str = "key-toggle";
/// Every key a mesh creates with keymeshctl, with its `--usage`.
pub const KEYS: [(&str, &str); 5] = [
    (KEY_ED, "encrypt-decrypt"),
    (KEY_ENC, "encrypt"),
    (KEY_DEC, "decrypt"),
    (KEY_NONE, "none"),
    (KEY_TOGGLE, "encrypt-decrypt"),
];

/// Main key store of every mesh.
pub const TENANT_A: &str = "/tenant-a/kms/xks/v1";
/// A second key store with its own credentials.
pub const TENANT_B: &str = "/tenant-b/kms/xks/v1";

/// Distinctive plaintext prefix used by every crypto test; it must never
/// appear in any log, neither raw nor Base64.
pub const MARKER: &[u8] = b"KMPLAINTEXT-9d41c7e2b5q";

/// A plaintext of `n` bytes (n ≥ 1) that starts with [`MARKER`] (repeated).
pub fn plaintext(n: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(n).collect()
}

/// [`plaintext`] as a `String` (the marker is ASCII), for JSON text fields.
pub fn marker_text(n: usize) -> String {
    String::from_utf8(plaintext(n)).unwrap()
}

/// Strings whose presence in a log proves plaintext leaked.
pub fn marker_needles() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let m = &MARKER[..MARKER.len() / 3 * 3];
    vec![
        String::from_utf8(MARKER.to_vec()).unwrap(),
        b64.encode(m),
        // The marker's hex form, in case a byte slice is Debug-printed as hex.
        MARKER
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        // Debug of a Vec<u8>: "[75, 77, 80, ...".
        format!("{:?}", &MARKER[..8])
            .trim_end_matches(']')
            .to_owned(),
    ]
}

/// Default overall deadline for a condition to become true.
pub const WAIT: Duration = Duration::from_secs(20);

/// Poll `cond` every 25 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Async flavour of [`poll`].
pub async fn poll_async<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Await `answer`, failing if it has not come within `timeout`. For a request
/// that must be answered at all (a deadline enforced, a dead dependency
/// noticed): the test asserts what the answer says, under a generous bound,
/// instead of timing it against a tight wall-clock budget.
pub async fn answered_within<T>(
    what: &str,
    timeout: Duration,
    answer: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {timeout:?}"))
}

/// Poll until an Encrypt of a marker plaintext under `key` answers `status`
/// (recovery after a fault, or a key-status change taking effect).
pub async fn wait_for_encrypt_status(
    c: &XksClient,
    key: &str,
    status: u16,
    what: &str,
    timeout: Duration,
) -> Result<()> {
    poll_async(what, timeout, || async {
        let req = keymesh_xks_client::model::EncryptRequest::new(plaintext(32));
        (c.encrypt(key, &req).await.ok()?.status() == status).then_some(())
    })
    .await
}

// ---------------------------------------------------------------------------
// Binaries

/// Paths of the service binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    pub edge: PathBuf,
    pub worker: PathBuf,
    pub limiter: PathBuf,
    pub ctl: PathBuf,
}

/// The directory holding the binaries: `$KEYMESH_BIN_DIR`, else the parent of
/// the `deps/` directory the test executable lives in.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEYMESH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn find_bin(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    for n in names {
        let p = dir.join(n);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "none of {names:?} found in {} (build with `cargo build --workspace --bins`)",
        dir.display()
    )
}

impl Bins {
    /// Locate all four binaries.
    pub fn locate() -> Result<Self> {
        let d = bin_dir();
        Ok(Self {
            edge: find_bin(&d, &["edge", "keymesh-edge"])?,
            worker: find_bin(&d, &["crypto-worker", "keymesh-crypto-worker"])?,
            limiter: find_bin(&d, &["rate-limiter", "keymesh-rate-limiter"])?,
            ctl: find_bin(&d, &["keymeshctl"])?,
        })
    }
}

// ---------------------------------------------------------------------------
// Child processes

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawn `cmd` from one long-lived thread: `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked the child exits, and libtest's test threads are short-lived.
fn spawn_from_keeper(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("child-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn keeper thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap()
        .send((cmd, rtx))
        .map_err(|_| std::io::Error::other("keeper gone"))?;
    rrx.recv()
        .map_err(|_| std::io::Error::other("keeper gone"))?
}

/// A running child process with its log file.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Start `program args` with `env`, output appended to `log`.
    fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(program)
            .args(args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = spawn_from_keeper(cmd).with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`STOP`, `CONT`, `TERM`, `KILL`, `HUP`) with kill(1).
    /// (The workspace forbids `unsafe`, so no `libc::kill`.)
    pub fn signal(&self, sig: &str) -> Result<()> {
        let st = Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()?;
        if !st.success() {
            bail!("kill -s {sig} {} failed", self.pid());
        }
        Ok(())
    }

    /// Whether it exited (reaping it if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for exit (SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        let _ = self.signal("CONT");
        let _ = self.signal("TERM");
        let r = poll(&format!("{} to exit", self.name), timeout, || self.exited());
        match r {
            Ok(st) => Some(st),
            Err(_) => {
                self.kill();
                None
            }
        }
    }

    /// The last `n` bytes of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.signal("CONT");
            self.kill();
        }
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let s = fs::read(path).unwrap_or_default();
    let start = s.len().saturating_sub(n);
    String::from_utf8_lossy(&s[start..]).into_owned()
}

/// Wait until `proc` wrote a socket address to `addr_file` (and is still alive).
fn wait_addr(proc: &mut Proc, addr_file: &Path, timeout: Duration) -> Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = fs::read_to_string(addr_file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        {
            return Ok(a);
        }
        if let Some(st) = proc.exited() {
            bail!(
                "{} exited ({st}) before writing {}:\n{}",
                proc.name,
                addr_file.display(),
                proc.log_tail(3000)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not write {} within {timeout:?}:\n{}",
                proc.name,
                addr_file.display(),
                proc.log_tail(3000)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Plain HTTP probes (sync, std only) for /readyz, /livez, /ping, /metrics

/// One HTTP/1.1 request over a fresh TCP connection; returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {text:.200}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `GET path` → status (0 when the connection failed).
pub fn http_get_status(addr: SocketAddr, path: &str) -> u16 {
    http_request(addr, "GET", path, &[], b"")
        .map(|r| r.0)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Mesh

/// TLS setup of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Plain,
    Tls,
    /// TLS with client certificates required (CN [`pki::KMS_CLIENT_CN`]).
    Mtls,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub workers: usize,
    /// List the workers to the edge as `dns+http://localhost:PORT` (resolved
    /// by the edge) instead of `http://127.0.0.1:PORT`.
    pub dns_workers: bool,
    /// Key stores to create, each with one credential.
    pub keystores: Vec<String>,
    /// rate-limiter quota file; `None` = generous defaults.
    pub limiter_toml: Option<String>,
    /// rate-limiter replicas (default 1). With more than one the edge gets
    /// `limiters = [...]` (each bucket key owned by one replica), else
    /// `limiter = "..."`. All replicas read the same quota file.
    pub limiters: usize,
    /// Initial policy file contents (the file always exists; empty = allow all).
    pub policy_toml: String,
    pub tls: TlsMode,
    pub deadline_ms: u64,
    pub limiter_failure_policy: String,
    pub max_body_bytes: usize,
    pub max_plaintext_bytes: usize,
    pub max_aad_bytes: usize,
    /// Extra top-level edge TOML lines.
    pub edge_extra: String,
    pub worker_sessions: usize,
    pub rust_log: String,
    /// Extra environment for every service process (e.g. the OTLP endpoint).
    pub extra_env: Vec<(String, String)>,
    /// Start the limiter and workers with `--metrics-listen` (addresses in
    /// [`Mesh::limiter_metrics_addr`], [`Mesh::worker_metrics_addrs`]).
    pub metrics: bool,
    /// gRPC between the edge and the workers/limiters over mutual TLS with
    /// pinned identities (`--grpc-tls-*` and `[grpc_tls]`, certificates from
    /// `keymeshctl pki init` in [`Mesh::grpc_pki`]); default true, as in
    /// production. `false` = the explicit `--insecure-plaintext-grpc` /
    /// `insecure_plaintext_grpc = true` opt-out.
    pub grpc_mtls: bool,
    /// Start workers and limiters with a plaintext health-only listener
    /// (`--health-listen`; addresses in [`Mesh::worker_health_addrs`],
    /// [`Mesh::limiter_health_addr`]). Default false.
    pub health_listen: bool,
    /// Also serve the Huawei KMS dialect on this store backend: store,
    /// domain key, token keys, accounts and the edge's `[huawei]` section
    /// (see [`Mesh::huawei`]). `None` (default) = XKS only.
    pub huawei: Option<HuaweiStore>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            dns_workers: false,
            keystores: vec![TENANT_A.into(), TENANT_B.into()],
            limiter_toml: None,
            limiters: 1,
            policy_toml: String::new(),
            tls: TlsMode::Plain,
            deadline_ms: 1000,
            limiter_failure_policy: "open".into(),
            max_body_bytes: 65536,
            max_plaintext_bytes: 8192,
            max_aad_bytes: 8192,
            edge_extra: String::new(),
            worker_sessions: 2,
            rust_log: "info,keymesh_edge=debug,keymesh_crypto_worker=debug,keymesh_rate_limiter=debug,keymesh_common=debug,edge=debug,crypto_worker=debug,rate_limiter=debug".into(),
            extra_env: Vec::new(),
            metrics: false,
            grpc_mtls: true,
            health_listen: false,
            huawei: None,
        }
    }
}

/// Default generous limiter quotas.
pub const LIMITER_DEFAULT_TOML: &str = "[default]\nrate_per_second = 100000\nburst = 100000\n";

/// A running keymesh: rate-limiter, crypto-worker(s) and edge on a fresh token.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub bins: Bins,
    pub opts: MeshOptions,
    pub softhsm_conf: PathBuf,
    pub pin_file: PathBuf,
    pub keystores_file: PathBuf,
    pub key_status_file: PathBuf,
    pub policy_file: PathBuf,
    pub limiter_file: PathBuf,
    pub edge_config: PathBuf,
    pub pki: Option<pki::Pki>,
    /// The service-mTLS files when [`MeshOptions::grpc_mtls`] is set.
    pub grpc_pki: Option<pki::GrpcPki>,
    pub limiter_addr: SocketAddr,
    /// Every limiter replica's address (`[0]` is `limiter_addr`).
    pub limiter_addrs: Vec<SocketAddr>,
    pub worker_addrs: Vec<SocketAddr>,
    pub edge_addr: SocketAddr,
    /// The limiter's `/metrics` address when [`MeshOptions::metrics`] is set.
    pub limiter_metrics_addr: Option<SocketAddr>,
    /// Each worker's `/metrics` address when [`MeshOptions::metrics`] is set.
    pub worker_metrics_addrs: Vec<SocketAddr>,
    /// The limiter's health-only address when [`MeshOptions::health_listen`] is set.
    pub limiter_health_addr: Option<SocketAddr>,
    /// Each worker's health-only address when [`MeshOptions::health_listen`] is set.
    pub worker_health_addrs: Vec<SocketAddr>,
    creds: Mutex<HashMap<String, Credentials>>,
    limiter: Mutex<Option<Proc>>,
    /// Limiter replicas 1.. (replica 0 is `limiter`).
    limiter_replicas: Mutex<Vec<Option<Proc>>>,
    workers: Mutex<Vec<Option<Proc>>>,
    edge: Mutex<Option<Proc>>,
    log_counter: Mutex<u32>,
    /// Set when [`MeshOptions::huawei`] is.
    huawei: Option<Huawei>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("dir", &self.dir.path())
            .field("edge", &self.edge_addr)
            .finish()
    }
}

/// The PKCS#11 module path.
pub fn pkcs11_module() -> String {
    std::env::var("KEYMESH_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into())
}

impl Mesh {
    /// Start with default options.
    pub fn start_default() -> Result<Self> {
        Self::start(MeshOptions::default())
    }

    /// Create the token, keys and credentials, then start every service and
    /// wait until `/readyz` answers 200.
    pub fn start(opts: MeshOptions) -> Result<Self> {
        let bins = Bins::locate()?;
        let dir = tempfile::Builder::new().prefix("keymesh-e2e-").tempdir()?;
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("tokens"))?;
        fs::create_dir_all(root.join("logs"))?;
        let softhsm_conf = root.join("softhsm2.conf");
        fs::write(
            &softhsm_conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                root.join("tokens").display()
            ),
        )?;
        let pin_file = root.join("pin");
        fs::write(&pin_file, format!("{}\n", random_hex(8)))?;
        let key_status_file = root.join("key-status.json");
        fs::write(&key_status_file, "{\"disabled\": []}\n")?;
        let keystores_file = root.join("keystores.json");
        let policy_file = root.join("policy.toml");
        fs::write(&policy_file, &opts.policy_toml)?;
        let limiter_file = root.join("limiter.toml");
        fs::write(
            &limiter_file,
            opts.limiter_toml.as_deref().unwrap_or(LIMITER_DEFAULT_TOML),
        )?;
        let pki = match opts.tls {
            TlsMode::Plain => None,
            _ => Some(pki::Pki::generate(&root.join("tls"))?),
        };

        let grpc_pki = if opts.grpc_mtls {
            Some(pki::GrpcPki::generate(&bins.ctl, &root.join("grpc-tls"))?)
        } else {
            None
        };

        let mut mesh = Self {
            grpc_pki,
            edge_config: root.join("edge.toml"),
            dir,
            bins,
            softhsm_conf,
            pin_file,
            keystores_file,
            key_status_file,
            policy_file,
            limiter_file,
            pki,
            limiter_addr: "127.0.0.1:0".parse()?,
            limiter_addrs: Vec::new(),
            worker_addrs: Vec::new(),
            edge_addr: "127.0.0.1:0".parse()?,
            limiter_metrics_addr: None,
            worker_metrics_addrs: Vec::new(),
            limiter_health_addr: None,
            worker_health_addrs: Vec::new(),
            creds: Mutex::new(HashMap::new()),
            limiter: Mutex::new(None),
            limiter_replicas: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            edge: Mutex::new(None),
            log_counter: Mutex::new(0),
            huawei: None,
            opts,
        };

        mesh.ctl(&["token", "init", "--so-pin", &random_hex(8)])?;
        for (id, usage) in KEYS {
            mesh.ctl(&["key", "create", id, "--usage", usage])?;
        }
        for ks in mesh.opts.keystores.clone() {
            mesh.create_credential(&ks)?;
        }
        // Key stores serve only assigned keys: every mesh key store serves
        // the harness keys (isolation tests make stores of their own).
        let ids: Vec<&str> = KEYS.iter().map(|(id, _)| *id).collect();
        mesh.assign_keys(&ids, &mesh.opts.keystores.clone())?;
        if let Some(store) = mesh.opts.huawei {
            mesh.huawei = Some(mesh.setup_huawei(store)?);
        }

        if mesh.opts.metrics {
            mesh.limiter_metrics_addr = Some(free_port()?);
            for _ in 0..mesh.opts.workers {
                mesh.worker_metrics_addrs.push(free_port()?);
            }
        }
        if mesh.opts.health_listen {
            mesh.limiter_health_addr = Some(free_port()?);
            for _ in 0..mesh.opts.workers {
                mesh.worker_health_addrs.push(free_port()?);
            }
        }
        // rate-limiter
        let (p, a) = mesh.spawn_limiter("127.0.0.1:0")?;
        mesh.limiter_addr = a;
        mesh.limiter_addrs.push(a);
        *mesh.limiter.lock().unwrap() = Some(p);
        for i in 1..mesh.opts.limiters {
            let (p, a) = mesh.spawn_limiter_replica(i, "127.0.0.1:0")?;
            mesh.limiter_addrs.push(a);
            mesh.limiter_replicas.lock().unwrap().push(Some(p));
        }
        // workers
        for i in 0..mesh.opts.workers {
            let (p, a) = mesh.spawn_worker(i, "127.0.0.1:0")?;
            mesh.worker_addrs.push(a);
            mesh.workers.lock().unwrap().push(Some(p));
        }
        // edge
        mesh.write_edge_config()?;
        let (p, a) = mesh.spawn_edge()?;
        mesh.edge_addr = a;
        *mesh.edge.lock().unwrap() = Some(p);
        if let Some(h) = mesh.huawei.as_mut() {
            h.endpoint = if mesh.pki.is_some() {
                format!("https://localhost:{}", a.port())
            } else {
                format!("http://{a}")
            };
        }
        mesh.wait_ready()?;
        Ok(mesh)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        let mut n = self.log_counter.lock().unwrap();
        *n += 1;
        self.root()
            .join("logs")
            .join(format!("{name}.{:02}.log", *n))
    }

    fn child_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "SOFTHSM2_CONF".into(),
                self.softhsm_conf.display().to_string(),
            ),
            ("RUST_LOG".into(), self.opts.rust_log.clone()),
            ("RUST_BACKTRACE".into(), "1".into()),
            // Panics get backtraces; anyhow errors stay one line.
            ("RUST_LIB_BACKTRACE".into(), "0".into()),
        ];
        env.extend(self.opts.extra_env.iter().cloned());
        env
    }

    /// Run keymeshctl with the mesh's token, pin and files; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = self.ctl_output(args)?;
        if !out.status.success() {
            bail!(
                "keymeshctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run keymeshctl and return its raw output (also appended to logs/keymeshctl.log).
    pub fn ctl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new(&self.bins.ctl);
        cmd.arg("--pkcs11-module")
            .arg(pkcs11_module())
            .arg("--token-label")
            .arg("keymesh")
            .arg("--pin-file")
            .arg(&self.pin_file)
            .arg("--key-status-file")
            .arg(&self.key_status_file)
            .arg("--keystores-file")
            .arg(&self.keystores_file)
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in self.child_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().context("run keymeshctl")?;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root().join("logs").join("keymeshctl.log"))?;
        writeln!(log, "$ keymeshctl {}", args.join(" "))?;
        log.write_all(&out.stdout)?;
        log.write_all(&out.stderr)?;
        Ok(out)
    }

    /// `credential create --uri-path P --console-config F`; remembers it as the
    /// key store's current credential.
    pub fn create_credential(&self, uri_path: &str) -> Result<Credentials> {
        self.credential_command("create", uri_path)
    }

    /// `credential rotate`; returns the new credential (also remembered).
    pub fn rotate_credential(&self, uri_path: &str) -> Result<Credentials> {
        self.credential_command("rotate", uri_path)
    }

    /// `credential <verb> --uri-path P --console-config F`, then read and
    /// remember the credential the console file holds.
    fn credential_command(&self, verb: &str, uri_path: &str) -> Result<Credentials> {
        let f = self.root().join(format!("console-{}.json", random_hex(4)));
        self.ctl(&[
            "credential",
            verb,
            "--uri-path",
            uri_path,
            "--console-config",
            f.to_str().unwrap(),
        ])?;
        let c = read_console_config(&f, uri_path)?;
        self.creds
            .lock()
            .unwrap()
            .insert(uri_path.to_owned(), c.clone());
        Ok(c)
    }

    /// `key assign IDS --keystore S...`: let key stores serve keys. No-op
    /// without key stores.
    pub fn assign_keys(&self, ids: &[&str], keystores: &[String]) -> Result<()> {
        self.edit_assignments("assign", ids, keystores)
    }

    /// `key unassign IDS --keystore S...`.
    pub fn unassign_keys(&self, ids: &[&str], keystores: &[String]) -> Result<()> {
        self.edit_assignments("unassign", ids, keystores)
    }

    fn edit_assignments(&self, verb: &str, ids: &[&str], keystores: &[String]) -> Result<()> {
        if keystores.is_empty() || ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["key", verb];
        args.extend_from_slice(ids);
        for ks in keystores {
            args.extend(["--keystore", ks.as_str()]);
        }
        self.ctl(&args).map(drop)
    }

    /// Poll until key store `uri_path` serves `key_id` (GetKeyMetadata no
    /// longer 404): the edge picks up a changed keystores file on its next
    /// reload. Returns the last status.
    pub async fn wait_key_served(&self, uri_path: &str, key_id: &str) -> Result<u16> {
        let c = self.client(uri_path);
        poll_async(&format!("{uri_path} to serve {key_id}"), WAIT, || async {
            let r = c
                .get_key_metadata(key_id, &xks::model::GetKeyMetadataRequest::default())
                .await
                .ok()?;
            (r.status() != 404).then_some(r.status())
        })
        .await
    }

    /// The current credential of a key store.
    pub fn credentials(&self, uri_path: &str) -> Credentials {
        self.creds
            .lock()
            .unwrap()
            .get(uri_path)
            .cloned()
            .unwrap_or_else(|| panic!("no credential for {uri_path}"))
    }

    fn spawn_limiter(&self, listen: &str) -> Result<(Proc, SocketAddr)> {
        self.spawn_limiter_replica(0, listen)
    }

    /// Start limiter replica `i` (0 = the primary, the only one with metrics).
    fn spawn_limiter_replica(&self, i: usize, listen: &str) -> Result<(Proc, SocketAddr)> {
        let (addr_file, name) = if i == 0 {
            (self.root().join("limiter.addr"), "rate-limiter".to_owned())
        } else {
            (
                self.root().join(format!("limiter{i}.addr")),
                format!("rate-limiter-{i}"),
            )
        };
        let _ = fs::remove_file(&addr_file);
        let mut args = vec![
            "--listen".into(),
            listen.into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
            "--config".into(),
            self.limiter_file.display().to_string(),
        ];
        if let Some(a) = self.limiter_metrics_addr.filter(|_| i == 0) {
            args.extend(["--metrics-listen".into(), a.to_string()]);
        }
        if let Some(a) = self.limiter_health_addr.filter(|_| i == 0) {
            args.extend(["--health-listen".into(), a.to_string()]);
        }
        args.extend(self.grpc_tls_args("rate-limiter"));
        let mut p = Proc::start(
            &name,
            &self.bins.limiter,
            &args,
            &self.child_env(),
            &self.log_path(&name),
        )?;
        let a = wait_addr(&mut p, &addr_file, WAIT)?;
        Ok((p, a))
    }

    fn spawn_worker(&self, i: usize, listen: &str) -> Result<(Proc, SocketAddr)> {
        let addr_file = self.root().join(format!("worker{i}.addr"));
        let _ = fs::remove_file(&addr_file);
        let mut args = vec![
            "--listen".into(),
            listen.into(),
            "--addr-file".into(),
            addr_file.display().to_string(),
            "--worker-id".into(),
            format!("worker-{i}"),
            "--pkcs11-module".into(),
            pkcs11_module(),
            "--token-label".into(),
            "keymesh".into(),
            "--pin-file".into(),
            self.pin_file.display().to_string(),
            "--sessions".into(),
            self.opts.worker_sessions.to_string(),
            "--key-status-file".into(),
            self.key_status_file.display().to_string(),
            "--health-interval-secs".into(),
            "1".into(),
        ];
        if let Some(a) = self.worker_metrics_addrs.get(i) {
            args.extend(["--metrics-listen".into(), a.to_string()]);
        }
        if let Some(a) = self.worker_health_addrs.get(i) {
            args.extend(["--health-listen".into(), a.to_string()]);
        }
        args.extend(self.grpc_tls_args("crypto-worker"));
        let name = format!("crypto-worker-{i}");
        let mut p = Proc::start(
            &name,
            &self.bins.worker,
            &args,
            &self.child_env(),
            &self.log_path(&name),
        )?;
        let a = wait_addr(&mut p, &addr_file, WAIT)?;
        Ok((p, a))
    }

    /// `--grpc-tls-*` with `service`'s certificate for a worker or limiter,
    /// or the explicit plaintext opt-out without service mTLS.
    fn grpc_tls_args(&self, service: &str) -> Vec<String> {
        let Some(g) = &self.grpc_pki else {
            return vec!["--insecure-plaintext-grpc".into()];
        };
        let (cert, key) = g.identity(service);
        vec![
            "--grpc-tls-cert".into(),
            cert.display().to_string(),
            "--grpc-tls-key".into(),
            key.display().to_string(),
            "--grpc-tls-ca".into(),
            g.ca_cert.display().to_string(),
        ]
    }

    /// The edge configuration this mesh runs with.
    pub fn edge_toml(&self) -> String {
        let o = &self.opts;
        let workers = self
            .worker_addrs
            .iter()
            .map(|a| {
                if o.dns_workers {
                    format!("\"dns+http://localhost:{}\"", a.port())
                } else {
                    format!("\"http://{a}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = format!(
            "listen = \"127.0.0.1:0\"\naddr_file = \"{}\"\ndeadline_ms = {}\nworkers = [{workers}]\n{}\n\
             limiter_failure_policy = \"{}\"\nkeystores_file = \"{}\"\npolicy_file = \"{}\"\nreload_interval_ms = 100\n\
             max_body_bytes = {}\nmax_plaintext_bytes = {}\nmax_aad_bytes = {}\nmax_skew_secs = 300\n{}\n{}\n",
            self.root().join("edge.addr").display(),
            o.deadline_ms,
            self.limiter_toml_line(),
            o.limiter_failure_policy,
            self.keystores_file.display(),
            self.policy_file.display(),
            o.max_body_bytes,
            o.max_plaintext_bytes,
            o.max_aad_bytes,
            if self.grpc_pki.is_none() {
                "insecure_plaintext_grpc = true"
            } else {
                ""
            },
            o.edge_extra,
        );
        if let Some(p) = &self.pki {
            s.push_str(&format!(
                "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                p.server_chain.display(),
                p.server_key.display()
            ));
            if self.opts.tls == TlsMode::Mtls {
                s.push_str(&format!(
                    "client_ca_file = \"{}\"\nclient_subject_cn = \"{}\"\n",
                    p.client_ca_cert.display(),
                    pki::KMS_CLIENT_CN
                ));
            }
        }
        if let Some(g) = &self.grpc_pki {
            let (cert, key) = g.identity("edge");
            s.push_str(&format!(
                "\n[grpc_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
                cert.display(),
                key.display(),
                g.ca_cert.display()
            ));
        }
        if let Some(h) = &self.huawei {
            s.push_str(&h.edge_toml());
        }
        s
    }

    fn write_edge_config(&self) -> Result<()> {
        fs::write(&self.edge_config, self.edge_toml())?;
        Ok(())
    }

    fn spawn_edge(&self) -> Result<(Proc, SocketAddr)> {
        let addr_file = self.root().join("edge.addr");
        let _ = fs::remove_file(&addr_file);
        let args = vec!["--config".into(), self.edge_config.display().to_string()];
        let mut p = Proc::start(
            "edge",
            &self.bins.edge,
            &args,
            &self.child_env(),
            &self.log_path("edge"),
        )?;
        let a = wait_addr(&mut p, &addr_file, WAIT)?;
        Ok((p, a))
    }

    /// `GET /readyz` status over plain HTTP, or over TLS for TLS meshes
    /// (0 when the connection fails).
    pub fn readyz(&self) -> u16 {
        self.probe("/readyz")
    }

    /// Status of an unauthenticated GET probe path.
    pub fn probe(&self, path: &str) -> u16 {
        if self.pki.is_none() {
            return http_get_status(self.edge_addr, path);
        }
        // TLS edge: use the async client on a throwaway runtime thread.
        let mesh_client = self.client_config(TENANT_A);
        let path = path.to_owned();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let c = XksClient::new(mesh_client).unwrap();
                    let mut r = xks::RawRequest::post_json(path, bytes::Bytes::new(), c.signing());
                    r.method = http::Method::GET;
                    r.signing = None;
                    r.content_type = None;
                    c.send(r).await.map(|r| r.status()).unwrap_or(0)
                })
            })
            .join()
            .unwrap_or(0)
        })
    }

    /// Wait until `/readyz` is 200.
    pub fn wait_ready(&self) -> Result<()> {
        poll("edge /readyz = 200", WAIT, || {
            if let Some(p) = self.edge.lock().unwrap().as_mut()
                && let Some(st) = p.exited()
            {
                return Some(Err(anyhow!("edge exited ({st}):\n{}", p.log_tail(3000))));
            }
            (self.readyz() == 200).then_some(Ok(()))
        })
        .map_err(|e| anyhow!("{e}\nedge log:\n{}", self.edge_log_tail()))?
    }

    fn edge_log_tail(&self) -> String {
        self.edge
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.log_tail(3000))
            .unwrap_or_default()
    }

    /// Client configuration for key store `uri_path` with its current credential,
    /// plain or TLS (trusting the mesh CA, presenting the KMS client cert on mTLS).
    pub fn client_config(&self, uri_path: &str) -> ClientConfig {
        let creds = self
            .creds
            .lock()
            .unwrap()
            .get(uri_path)
            .cloned()
            .unwrap_or_else(|| Credentials::new("AAAAAAAAAAAAAAAAAAAAAAAAAA", "x".repeat(44)));
        let mut cfg = ClientConfig::plain(self.edge_addr, uri_path, creds);
        cfg.timeout = Duration::from_secs(10);
        if let Some(p) = &self.pki {
            let mut t = TlsConfig::new(p.server_ca_pem.clone().into_bytes(), "localhost");
            if self.opts.tls == TlsMode::Mtls {
                t = t.with_client_identity(
                    p.client_chain_pem.clone().into_bytes(),
                    p.client_key_pem.clone().into_bytes(),
                );
            }
            cfg.tls = Some(t);
            cfg.authority = format!("localhost:{}", self.edge_addr.port());
        }
        cfg
    }

    /// An HTTP/1.1 client for `uri_path`.
    pub fn client(&self, uri_path: &str) -> XksClient {
        XksClient::new(self.client_config(uri_path)).unwrap()
    }

    /// An HTTP/2 client for `uri_path`.
    pub fn client_h2(&self, uri_path: &str) -> XksClient {
        let mut c = self.client_config(uri_path);
        c.http = HttpVersion::Http2;
        XksClient::new(c).unwrap()
    }

    // ----- process control

    /// PID of worker `i` (panics if it is not running).
    pub fn worker_pid(&self, i: usize) -> u32 {
        self.workers.lock().unwrap()[i]
            .as_ref()
            .expect("worker running")
            .pid()
    }

    /// Signal worker `i` (`STOP`, `CONT`, `TERM`, ...).
    pub fn signal_worker(&self, i: usize, sig: &str) -> Result<()> {
        self.workers.lock().unwrap()[i]
            .as_ref()
            .ok_or_else(|| anyhow!("worker {i} not running"))?
            .signal(sig)
    }

    /// kill -9 worker `i` and reap it.
    pub fn kill_worker(&self, i: usize) {
        if let Some(mut p) = self.workers.lock().unwrap()[i].take() {
            p.kill();
        }
    }

    /// SIGTERM worker `i` and wait for it to exit.
    pub fn terminate_worker(&self, i: usize) -> Option<std::process::ExitStatus> {
        let p = self.workers.lock().unwrap()[i].take();
        p.and_then(|mut p| p.terminate(WAIT))
    }

    /// Start worker `i` again on its original port (retrying while the port
    /// is still held by the dying process).
    pub fn restart_worker(&self, i: usize) -> Result<()> {
        self.kill_worker(i);
        let listen = self.worker_addrs[i].to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn_worker(i, &listen) {
                Ok((p, a)) => {
                    assert_eq!(a, self.worker_addrs[i]);
                    self.workers.lock().unwrap()[i] = Some(p);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart worker {i}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `limiter = "..."` for one replica, `limiters = [...]` for several.
    fn limiter_toml_line(&self) -> String {
        if self.limiter_addrs.len() > 1 {
            let list = self
                .limiter_addrs
                .iter()
                .map(|a| format!("\"http://{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            format!("limiters = [{list}]")
        } else {
            format!("limiter = \"http://{}\"", self.limiter_addr)
        }
    }

    /// kill -9 limiter replica `i` (0 = [`Mesh::kill_limiter`]).
    pub fn kill_limiter_replica(&self, i: usize) {
        if i == 0 {
            return self.kill_limiter();
        }
        if let Some(mut p) = self
            .limiter_replicas
            .lock()
            .unwrap()
            .get_mut(i - 1)
            .and_then(Option::take)
        {
            p.kill();
        }
    }

    /// Signal the rate-limiter.
    pub fn signal_limiter(&self, sig: &str) -> Result<()> {
        self.limiter
            .lock()
            .unwrap()
            .as_ref()
            .ok_or_else(|| anyhow!("limiter not running"))?
            .signal(sig)
    }

    /// kill -9 the rate-limiter.
    pub fn kill_limiter(&self) {
        if let Some(mut p) = self.limiter.lock().unwrap().take() {
            p.kill();
        }
    }

    /// Restart the rate-limiter on its original port.
    pub fn restart_limiter(&self) -> Result<()> {
        self.kill_limiter();
        let listen = self.limiter_addr.to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn_limiter(&listen) {
                Ok((p, _)) => {
                    *self.limiter.lock().unwrap() = Some(p);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart limiter: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Signal the edge.
    pub fn signal_edge(&self, sig: &str) -> Result<()> {
        self.edge
            .lock()
            .unwrap()
            .as_ref()
            .ok_or_else(|| anyhow!("edge not running"))?
            .signal(sig)
    }

    /// Whether the edge process is still running.
    pub fn edge_alive(&self) -> bool {
        self.edge
            .lock()
            .unwrap()
            .as_mut()
            .map(|p| p.exited().is_none())
            .unwrap_or(false)
    }

    /// The edge's process id while it runs (e.g. to read /proc/PID/status).
    pub fn edge_pid(&self) -> Option<u32> {
        self.edge.lock().unwrap().as_ref().map(Proc::pid)
    }

    /// The edge's exit status, if it has exited.
    pub fn edge_exit_status(&self) -> Option<std::process::ExitStatus> {
        self.edge.lock().unwrap().as_mut().and_then(Proc::exited)
    }

    /// kill -9 the edge and reap it (no drain, no flush: a crash).
    pub fn kill_edge(&self) {
        if let Some(mut p) = self.edge.lock().unwrap().take() {
            p.kill();
        }
    }

    /// Start the edge again on its original address (killing it first if it
    /// still runs) and wait until `/readyz` is 200. The configuration is
    /// rewritten with the fixed port, retrying while the dead process's
    /// socket is still held.
    pub fn restart_edge(&self) -> Result<()> {
        self.kill_edge();
        let fixed = self.edge_toml().replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.edge_addr),
            1,
        );
        fs::write(&self.edge_config, fixed)?;
        let deadline = Instant::now() + WAIT;
        loop {
            match self.spawn_edge() {
                Ok((p, a)) => {
                    if a != self.edge_addr {
                        bail!("restarted edge listens on {a}, not {}", self.edge_addr);
                    }
                    *self.edge.lock().unwrap() = Some(p);
                    return self.wait_ready();
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart edge: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Replace the policy file atomically (the edge hot-reloads it).
    pub fn write_policy(&self, toml: &str) -> Result<()> {
        atomic_write(&self.policy_file, toml.as_bytes())
    }

    /// Replace the limiter quota file atomically.
    pub fn write_limiter_config(&self, toml: &str) -> Result<()> {
        atomic_write(&self.limiter_file, toml.as_bytes())
    }

    /// Every log file written by this mesh's children.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.root().join("logs"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Fail if the plaintext marker appears in any child log (raw, Base64, hex).
    pub fn assert_no_plaintext_in_logs(&self) {
        let needles = marker_needles();
        for f in self.log_files() {
            let text = String::from_utf8_lossy(&fs::read(&f).unwrap_or_default()).into_owned();
            for n in &needles {
                if let Some(pos) = text.find(n.as_str()) {
                    let start = text[..pos].rfind('\n').map(|p| p + 1).unwrap_or(0);
                    let end = text[pos..]
                        .find('\n')
                        .map(|e| pos + e)
                        .unwrap_or(text.len());
                    panic!(
                        "plaintext marker {n:?} found in {}:\n{}",
                        f.display(),
                        &text[start..end.min(start + 2000)]
                    );
                }
            }
        }
    }

    /// Stop every child: SIGTERM (graceful, so logs flush), SIGKILL after a deadline.
    ///
    /// The edge gets 3 s: when a test drops its mesh, the test's HTTP/2 client
    /// connections are still open on a runtime that is not being polled, so
    /// they cannot answer the edge's GOAWAY and the drain would run into its
    /// timeout. Clean drains are tested explicitly in `faults.rs`.
    pub fn shutdown(&self) {
        if let Some(mut p) = self.edge.lock().unwrap().take() {
            p.terminate(Duration::from_secs(3));
        }
        for w in self.workers.lock().unwrap().iter_mut() {
            if let Some(mut p) = w.take() {
                p.terminate(Duration::from_secs(10));
            }
        }
        if let Some(mut p) = self.limiter.lock().unwrap().take() {
            p.terminate(Duration::from_secs(10));
        }
        for r in self.limiter_replicas.lock().unwrap().iter_mut() {
            if let Some(mut p) = r.take() {
                p.terminate(Duration::from_secs(10));
            }
        }
    }

    /// Run curl's own SigV4 signer (`--aws-sigv4`) against `path` with `body`.
    /// Returns (status, body).
    pub fn curl(
        &self,
        path: &str,
        body: &[u8],
        creds: &Credentials,
        extra: &[&str],
    ) -> Result<(u16, String)> {
        let f = self
            .root()
            .join(format!("curl-body-{}.json", random_hex(4)));
        fs::write(&f, body)?;
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let host = if self.pki.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let url = format!("{scheme}://{host}:{}{path}", self.edge_addr.port());
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy"])
            .arg("--user")
            .arg(format!("{}:{}", creds.access_key_id, creds.secret()))
            .args(["-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", f.display()))
            .args(extra);
        if let Some(p) = &self.pki {
            cmd.arg("--cacert").arg(&p.server_ca_cert);
            cmd.arg("--resolve")
                .arg(format!("localhost:{}:127.0.0.1", self.edge_addr.port()));
            if self.opts.tls == TlsMode::Mtls {
                cmd.arg("--cert")
                    .arg(&p.client_cert)
                    .arg("--key")
                    .arg(&p.client_key);
            }
        }
        cmd.arg(url);
        let out = cmd.output()?;
        let _ = fs::remove_file(&f);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .ok_or_else(|| anyhow!("curl output: {text}"))?;
        let code: u16 = code.trim().parse().map_err(|_| {
            anyhow!(
                "curl failed: {} {}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((code, body.to_owned()))
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Procs kill themselves on drop; an owned mesh also checks its logs.
        self.shutdown();
        if !std::thread::panicking() {
            self.assert_no_plaintext_in_logs();
        }
        if std::env::var_os("KEYMESH_KEEP_TMP").is_some() {
            let p = self.dir.path().to_path_buf();
            eprintln!("keeping {}", p.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

fn read_console_config(f: &Path, uri_path: &str) -> Result<Credentials> {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(f).with_context(|| format!("read {}", f.display()))?)?;
    if v["XksProxyUriPath"] != uri_path {
        bail!(
            "console config {} names {} not {uri_path}",
            f.display(),
            v["XksProxyUriPath"]
        );
    }
    let c = &v["XksProxyAuthenticationCredential"];
    Ok(Credentials::new(
        c["AccessKeyId"]
            .as_str()
            .ok_or_else(|| anyhow!("no AccessKeyId"))?,
        c["RawSecretAccessKey"]
            .as_str()
            .ok_or_else(|| anyhow!("no RawSecretAccessKey"))?,
    ))
}

/// A port free right now on 127.0.0.1, for a child's second listener that
/// has no addr file (`--metrics-listen`). Another process could take it
/// before the child binds; the kernel hands out ephemeral ports round-robin,
/// so in practice it does not.
pub fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Write `path` via a temp file and rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", random_hex(3)));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).expect("rng");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Shared meshes: one per test binary, started on first use, never dropped
/// (children die with the test process via PDEATHSIG).
pub fn shared_mesh(
    cell: &'static OnceLock<Mesh>,
    opts: impl FnOnce() -> MeshOptions,
) -> &'static Mesh {
    static START: Mutex<()> = Mutex::new(());
    if let Some(m) = cell.get() {
        return m;
    }
    let _g = START.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = cell.get() {
        return m;
    }
    let m = Mesh::start(opts()).unwrap_or_else(|e| panic!("mesh start failed: {e:#}"));
    let _ = cell.set(m);
    cell.get().unwrap()
}

impl Mesh {
    /// Import raw AES key bytes into the token with `pkcs11-tool --write-object`
    /// (bypassing keymeshctl, e.g. for spec test vectors, a duplicate label or
    /// a non-256-bit key). The key may encrypt and decrypt, and is assigned
    /// to every key store of the mesh (a running edge serves it after its
    /// next reload: [`Mesh::wait_key_served`]).
    /// (`softhsm2-util --import --aes` is not used: it sets no CKA_VALUE_LEN.)
    pub fn import_aes_key(&self, label: &str, key: &[u8], id_hex: &str) -> Result<()> {
        let f = self.root().join(format!("import-{}.key", random_hex(4)));
        fs::write(&f, key)?;
        let pin = fs::read_to_string(&self.pin_file)?.trim().to_owned();
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                &pkcs11_module(),
                "--token-label",
                "keymesh",
                "--login",
                "--pin",
                &pin,
                "--write-object",
            ])
            .arg(&f)
            .args([
                "--type",
                "secrkey",
                "--key-type",
                &format!("AES:{}", key.len()),
                "--label",
                label,
                "--id",
                id_hex,
            ])
            .args(["--usage-decrypt", "--sensitive"])
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .output()?;
        let _ = fs::remove_file(&f);
        if !out.status.success() {
            bail!(
                "pkcs11-tool --write-object {label}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.assign_keys(&[label], &self.opts.keystores)
    }
}
