//! Command line / environment configuration, validated once into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keymesh_common::Secret;
pub use keymesh_common::grpc_tls::GrpcTlsArgs;
use keymesh_common::grpc_tls::MeshTls;
pub use keymesh_pkcs11::args::HsmArgs;

/// Longest allowed deep-health interval: GetHealth treats results older than
/// 60 s as UNAVAILABLE, so a longer interval would flap.
pub const MAX_HEALTH_INTERVAL_SECS: u64 = 60;

/// Longest allowed `--key-revalidate-secs`: with session key copies, a key
/// deleted on the token stays usable from its copy for up to this long.
pub const MAX_KEY_REVALIDATE_SECS: u64 = 300;

/// Longest allowed `--drain-delay-ms`: the delay plus the drain must fit in
/// a pod's termination grace period (30 s in deploy/).
pub const MAX_DRAIN_DELAY_MS: u64 = 60_000;

/// Raw flags; every flag also reads its environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "crypto-worker",
    about = "keymesh crypto-worker: AES-256-GCM over a PKCS#11 session pool"
)]
pub struct Args {
    /// gRPC listen address (default 127.0.0.1:7100).
    #[arg(long, env = "KEYMESH_WORKER_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Write the bound address here once listening (default: none).
    #[arg(long, env = "KEYMESH_WORKER_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Stable id reported by GetHealth (default `<hostname>-<pid>`).
    #[arg(long, env = "KEYMESH_WORKER_ID")]
    pub worker_id: Option<String>,
    #[command(flatten)]
    pub hsm: HsmArgs,
    /// PKCS#11 sessions, one dedicated thread each (default 2).
    #[arg(long, env = "KEYMESH_WORKER_SESSIONS", default_value_t = 2)]
    pub sessions: usize,
    /// PKCS#11 sessions (one thread each) of the slow lane, which runs the
    /// operations that hold a session for long (RSA key-pair generation) so
    /// they never take the `--sessions` the fast operations need (default 1;
    /// 0 = no slow lane: everything shares one pool, the old behaviour).
    #[arg(long, env = "KEYMESH_WORKER_SLOW_LANE_SESSIONS", default_value_t = 1)]
    pub slow_lane_sessions: usize,
    /// Slow-lane jobs queued before callers get HSM_BUSY (the edge answers
    /// throttling) (default 4: with RSA-4096 at ~2 s each, a longer queue
    /// would only hold requests past their deadline).
    #[arg(long, env = "KEYMESH_WORKER_SLOW_LANE_QUEUE", default_value_t = 4)]
    pub slow_lane_queue: usize,
    /// Key-status file, polled every 500 ms (default: none, all keys enabled).
    #[arg(long, env = "KEYMESH_KEY_STATUS_FILE")]
    pub key_status_file: Option<PathBuf>,
    /// Seconds between deep health checks (default 10, max 60).
    #[arg(long, env = "KEYMESH_HEALTH_INTERVAL_SECS", default_value_t = 10)]
    pub health_interval_secs: u64,
    /// Run AES-GCM on per-process session-object copies (C_CopyObject,
    /// CKA_TOKEN=false) of the token keys: ~3x cheaper per operation on
    /// SoftHSM2. Copies keep the source's CKA_SENSITIVE/CKA_EXTRACTABLE/usage
    /// (checked). A key the HSM refuses to copy is served from the token
    /// object. `false` for HSMs where copies are undesirable (default true).
    #[arg(
        long,
        env = "KEYMESH_SESSION_KEY_COPIES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub session_key_copies: bool,
    /// Re-find each cached key on the token at most this often, in seconds
    /// (default 5, 1..=300). A key deleted, re-created or changed on the token
    /// is noticed within this time (with copies, the old copy serves until then).
    #[arg(long, env = "KEYMESH_KEY_REVALIDATE_SECS", default_value_t = 5)]
    pub key_revalidate_secs: u64,
    /// After SIGTERM, keep serving this long while reporting NOT_SERVING
    /// before refusing new connections and draining, in ms (default 1000,
    /// 0 = none, at most 60000). Edges see NOT_SERVING on their health Watch
    /// (or the next 1 s Check) and stop routing here before the listener
    /// goes, so no request lands on a closing connection.
    #[arg(long, env = "KEYMESH_WORKER_DRAIN_DELAY_MS", default_value_t = 1000)]
    pub drain_delay_ms: u64,
    /// CKA_LABEL of the HSM domain key that wraps KeyVault customer master
    /// keys (default keymesh-domain-v1; created by `keymeshctl domain-key
    /// init`). GenerateKey uses it when the request names none.
    #[arg(
        long,
        env = "KEYMESH_DOMAIN_KEY_LABEL",
        default_value = keymesh_pkcs11::wrap::DEFAULT_DOMAIN_KEY_LABEL
    )]
    pub domain_key_label: String,
    /// Expected key check value of the domain key (16 hex digits, as
    /// `keymeshctl domain-key check` prints it) (default: none, not checked
    /// here; the edge still compares with its store). When set, the worker
    /// refuses to start unless the HSM's domain key has exactly this KCV: a
    /// token restored from the wrong backup, or a key re-created under the
    /// same label, would otherwise make every stored CMK unreadable.
    #[arg(long, env = "KEYMESH_DOMAIN_KEY_KCV")]
    pub domain_key_kcv: Option<String>,
    #[command(flatten)]
    pub grpc_tls: GrpcTlsArgs,
    /// Also serve only grpc.health.v1, in plaintext, on this address, for
    /// kubelet probes that cannot present a mesh certificate (default: none).
    #[arg(long, env = "KEYMESH_WORKER_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

/// Validated configuration: what [`crate::serve`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub addr_file: Option<PathBuf>,
    pub worker_id: String,
    pub pkcs11_module: PathBuf,
    pub token_label: String,
    pub pin: Secret,
    pub sessions: usize,
    /// `--slow-lane-sessions` and `--slow-lane-queue`.
    pub slow_lane: crate::pool::SlowLane,
    pub key_status_file: Option<PathBuf>,
    pub health_interval: Duration,
    /// `--session-key-copies`.
    pub session_key_copies: bool,
    /// `--key-revalidate-secs`.
    pub key_revalidate: Duration,
    /// `--drain-delay-ms`.
    pub drain_delay: Duration,
    /// `--grpc-tls-*` and `--grpc-allowed-peers`: serve over mTLS. `None`
    /// (plaintext) only with `--insecure-plaintext-grpc`.
    pub grpc_tls: Option<MeshTls>,
    /// `--health-listen`.
    pub health_listen: Option<SocketAddr>,
    /// `--domain-key-label`.
    pub domain_key_label: String,
    /// `--domain-key-kcv`, lower-case.
    pub domain_key_kcv: Option<String>,
}

impl Args {
    /// Validate everything and report every problem at once.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut errors = Vec::new();
        let pin = self.hsm.pin().map_err(|e| errors.push(e.to_string())).ok();
        if self.sessions == 0 || self.sessions > 256 {
            errors.push(format!("--sessions must be 1..=256, got {}", self.sessions));
        }
        if self.slow_lane_sessions > 64 {
            errors.push(format!(
                "--slow-lane-sessions must be 0..=64, got {}",
                self.slow_lane_sessions
            ));
        }
        if self.slow_lane_queue == 0 || self.slow_lane_queue > 1024 {
            errors.push(format!(
                "--slow-lane-queue must be 1..=1024, got {}",
                self.slow_lane_queue
            ));
        }
        if self.health_interval_secs == 0 || self.health_interval_secs > MAX_HEALTH_INTERVAL_SECS {
            errors.push(format!(
                "--health-interval-secs must be 1..={MAX_HEALTH_INTERVAL_SECS}, got {}",
                self.health_interval_secs
            ));
        }
        // 0 ("every request") is refused: it would put a C_FindObjects
        // (40-60 µs) in front of every operation and defeat both the cache
        // and the copies.
        if self.key_revalidate_secs == 0 || self.key_revalidate_secs > MAX_KEY_REVALIDATE_SECS {
            errors.push(format!(
                "--key-revalidate-secs must be 1..={MAX_KEY_REVALIDATE_SECS}, got {}",
                self.key_revalidate_secs
            ));
        }
        if self.drain_delay_ms > MAX_DRAIN_DELAY_MS {
            errors.push(format!(
                "--drain-delay-ms must be 0..={MAX_DRAIN_DELAY_MS}, got {}",
                self.drain_delay_ms
            ));
        }
        if let Err(e) = keymesh_pkcs11::wrap::check_domain_key_label(&self.domain_key_label) {
            errors.push(format!("--domain-key-label: {e}"));
        }
        let domain_key_kcv = self.domain_key_kcv.map(|k| k.to_ascii_lowercase());
        if let Some(k) = &domain_key_kcv
            && (k.len() != 2 * keymesh_pkcs11::wrap::KCV_LEN
                || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            errors.push(format!(
                "--domain-key-kcv must be {} hex digits",
                2 * keymesh_pkcs11::wrap::KCV_LEN
            ));
        }
        if self.hsm.token_label.is_empty() || self.hsm.token_label.len() > 32 {
            errors.push("--token-label must be 1-32 characters".to_owned());
        }
        let grpc_tls = self
            .grpc_tls
            .mesh_tls()
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        if self
            .health_listen
            .is_some_and(|h| h == self.listen && h.port() != 0)
        {
            errors.push("--health-listen must differ from --listen".to_owned());
        }
        let worker_id = match self.worker_id {
            Some(id) if !id.trim().is_empty() => id,
            Some(_) => {
                errors.push("--worker-id must not be empty".to_owned());
                String::new()
            }
            None => default_worker_id(),
        };
        match pin {
            Some(pin) if errors.is_empty() => Ok(Config {
                listen: self.listen,
                addr_file: self.addr_file,
                worker_id,
                pkcs11_module: self.hsm.pkcs11_module,
                token_label: self.hsm.token_label,
                pin,
                sessions: self.sessions,
                slow_lane: crate::pool::SlowLane {
                    sessions: self.slow_lane_sessions,
                    queue: self.slow_lane_queue,
                },
                key_status_file: self.key_status_file,
                health_interval: Duration::from_secs(self.health_interval_secs),
                session_key_copies: self.session_key_copies,
                key_revalidate: Duration::from_secs(self.key_revalidate_secs),
                drain_delay: Duration::from_millis(self.drain_delay_ms),
                grpc_tls,
                health_listen: self.health_listen,
                domain_key_label: self.domain_key_label,
                domain_key_kcv,
            }),
            _ => anyhow::bail!("invalid configuration: {}", errors.join("; ")),
        }
    }
}

/// `<hostname>-<pid>`; the host name comes from the kernel (no libc call).
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_and_validation() {
        let c = Args::try_parse_from(["w", "--pin", "1234", "--insecure-plaintext-grpc"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7100");
        assert_eq!(c.sessions, 2);
        assert_eq!(
            c.slow_lane,
            crate::pool::SlowLane {
                sessions: 1,
                queue: 4
            }
        );
        assert_eq!(c.health_interval, Duration::from_secs(10));
        assert_eq!(c.token_label, "keymesh");
        assert!(c.worker_id.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(format!("{:?}", c.pin), "\"<redacted>\"");
        assert!(c.session_key_copies);
        assert_eq!(c.key_revalidate, Duration::from_secs(5));
        assert_eq!(c.drain_delay, Duration::from_secs(1));
        assert_eq!(c.domain_key_label, "keymesh-domain-v1");
    }

    #[test]
    fn domain_key_label_flag() {
        let parse = |v: &str| {
            Args::try_parse_from([
                "w",
                "--pin",
                "1234",
                "--insecure-plaintext-grpc",
                "--domain-key-label",
                v,
            ])
            .unwrap()
            .into_config()
        };
        assert_eq!(
            parse("keymesh-domain-v2").unwrap().domain_key_label,
            "keymesh-domain-v2"
        );
        // Outside the wrapping-key class the KeyVault accepts.
        let err = parse("dk-2").unwrap_err().to_string();
        assert!(err.contains("keymesh-domain-"), "{err}");
        let kcv = |v: &str| {
            Args::try_parse_from([
                "w",
                "--pin",
                "1234",
                "--insecure-plaintext-grpc",
                "--domain-key-kcv",
                v,
            ])
            .unwrap()
            .into_config()
        };
        assert_eq!(
            kcv("0123456789ABCDEF").unwrap().domain_key_kcv.as_deref(),
            Some("0123456789abcdef")
        );
        for bad in ["0123", "0123456789abcdeg"] {
            let err = kcv(bad).unwrap_err().to_string();
            assert!(err.contains("--domain-key-kcv"), "{err}");
        }
        let err = parse("").unwrap_err().to_string();
        assert!(err.contains("--domain-key-label"), "{err}");
        assert!(parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn grpc_mtls_required_unless_insecure() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["w", "--pin", "1234"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().into_config()
        };
        let err = parse(&[]).unwrap_err().to_string();
        assert!(err.contains("gRPC requires mutual TLS"), "{err}");
        assert!(
            parse(&["--insecure-plaintext-grpc"])
                .unwrap()
                .grpc_tls
                .is_none()
        );
        let files = [
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
            "--grpc-tls-ca",
            "ca.pem",
        ];
        let tls = parse(&files).unwrap().grpc_tls.unwrap();
        assert_eq!(tls.files.ca, PathBuf::from("ca.pem"));
        assert_eq!(tls.peers.to_string(), "spiffe://keymesh/edge");
        let err = parse(&["--grpc-tls-cert", "c.pem"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing --grpc-tls-key, --grpc-tls-ca"),
            "{err}"
        );
        let mut health = files.to_vec();
        health.extend(["--health-listen", "127.0.0.1:7101"]);
        assert_eq!(
            parse(&health).unwrap().health_listen,
            Some("127.0.0.1:7101".parse().unwrap())
        );
        let mut same = files.to_vec();
        same.extend(["--health-listen", "127.0.0.1:7100"]);
        assert!(
            parse(&same)
                .unwrap_err()
                .to_string()
                .contains("--health-listen")
        );
    }

    #[test]
    fn drain_delay_flag() {
        let parse = |v: &str| {
            Args::try_parse_from([
                "w",
                "--pin",
                "1234",
                "--insecure-plaintext-grpc",
                "--drain-delay-ms",
                v,
            ])
            .unwrap()
            .into_config()
        };
        assert_eq!(parse("0").unwrap().drain_delay, Duration::ZERO);
        assert_eq!(
            parse("250").unwrap().drain_delay,
            Duration::from_millis(250)
        );
        let err = parse("60001").unwrap_err().to_string();
        assert!(err.contains("--drain-delay-ms"), "{err}");
    }

    #[test]
    fn key_copy_flags() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["w", "--pin", "1234", "--insecure-plaintext-grpc"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().into_config()
        };
        assert!(
            !parse(&["--session-key-copies", "false"])
                .unwrap()
                .session_key_copies
        );
        assert!(
            !parse(&["--session-key-copies=false"])
                .unwrap()
                .session_key_copies
        );
        assert!(parse(&["--session-key-copies"]).unwrap().session_key_copies);
        assert_eq!(
            parse(&["--key-revalidate-secs", "1"])
                .unwrap()
                .key_revalidate,
            Duration::from_secs(1)
        );
        for bad in ["0", "301"] {
            let err = parse(&["--key-revalidate-secs", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--key-revalidate-secs"), "{err}");
        }
    }

    #[test]
    fn slow_lane_flags() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["w", "--pin", "1234", "--insecure-plaintext-grpc"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().into_config()
        };
        let off = parse(&["--slow-lane-sessions", "0"]).unwrap();
        assert_eq!(off.slow_lane.sessions, 0);
        let c = parse(&["--slow-lane-sessions", "2", "--slow-lane-queue", "16"]).unwrap();
        assert_eq!(
            c.slow_lane,
            crate::pool::SlowLane {
                sessions: 2,
                queue: 16
            }
        );
        let err = parse(&["--slow-lane-sessions", "65", "--slow-lane-queue", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--slow-lane-sessions"), "{err}");
        assert!(err.contains("--slow-lane-queue"), "{err}");
    }

    #[test]
    fn every_error_reported_together() {
        let err = Args::try_parse_from([
            "w",
            "--pin-file",
            "/nonexistent/pin",
            "--sessions",
            "0",
            "--health-interval-secs",
            "61",
        ])
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
        assert!(err.contains("PIN file"), "{err}");
        assert!(err.contains("--sessions"), "{err}");
        assert!(err.contains("--health-interval-secs"), "{err}");
    }
}
