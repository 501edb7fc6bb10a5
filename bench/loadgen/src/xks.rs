//! XKS requests: SigV4 signing and bodies per operation (the connection
//! itself is `conn`).
//!
//! Every request is signed afresh (as KMS does), so the edge's SigV4
//! verification cost is part of what is measured.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::Full;
use keymesh_common::Secret;
use serde_json::{Value, json};

use crate::conn::{Conn, Endpoint};

/// The SigV4 service name of the XKS proxy API.
const SERVICE: &str = "kms-xks-proxy";

/// Where to send and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Edge base URL; plain HTTP to a loopback address only.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// Key store URI path (from --console-config when given there).
    #[arg(long)]
    pub uri_path: Option<String>,
    /// Key id (the HSM key label) for encrypt/decrypt/metadata.
    #[arg(long, default_value = "bench-key")]
    pub key_id: String,
    /// SigV4 access key id (or from --console-config).
    #[arg(long, env = "KEYMESH_LOADGEN_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// SigV4 secret (or from --console-config). Prefer the env var: argv is world-readable.
    #[arg(long, env = "KEYMESH_LOADGEN_SECRET", hide_env_values = true)]
    pub secret: Option<Secret>,
    /// KMS console JSON as printed by `keymeshctl credential create`.
    #[arg(long)]
    pub console_config: Option<PathBuf>,
    /// SigV4 region of the credential scope.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Per-request timeout in ms.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Comma-separated pids whose CPU time is sampled around the run.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
}

/// The XKS operation under load.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OpArgs {
    /// Encrypt `size` bytes per request.
    Encrypt {
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Encrypt one `size`-byte payload at start, then decrypt it repeatedly.
    Decrypt {
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    Metadata,
}

impl OpArgs {
    pub fn name(&self) -> &'static str {
        match self {
            OpArgs::Encrypt { .. } => "encrypt",
            OpArgs::Decrypt { .. } => "decrypt",
            OpArgs::Health => "health",
            OpArgs::Metadata => "metadata",
        }
    }

    pub fn size(&self) -> Option<usize> {
        match self {
            OpArgs::Encrypt { size } | OpArgs::Decrypt { size } => Some(*size),
            OpArgs::Health | OpArgs::Metadata => None,
        }
    }
}

/// Largest payload accepted (the edge's default body limit is 64 KiB).
const MAX_SIZE: usize = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsoleConfig {
    xks_proxy_uri_path: String,
    xks_proxy_authentication_credential: ConsoleCredential,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsoleCredential {
    access_key_id: String,
    raw_secret_access_key: Secret,
}

/// Resolved, validated target.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    uri_path: String,
    key_id: String,
    identity: Identity,
    region: String,
}

impl Target {
    pub async fn resolve(args: &TargetArgs) -> anyhow::Result<Self> {
        let endpoint = Endpoint::resolve(&args.endpoint).await?;
        let console = args
            .console_config
            .as_deref()
            .map(read_console)
            .transpose()?;
        let uri_path = args
            .uri_path
            .clone()
            .or_else(|| console.as_ref().map(|c| c.xks_proxy_uri_path.clone()))
            .unwrap_or_else(|| "/demo/kms/xks/v1".to_owned());
        let (access_key_id, secret) = match (&args.access_key_id, &args.secret, console) {
            (Some(id), Some(secret), _) => (id.clone(), secret.clone()),
            (_, _, Some(c)) => (
                c.xks_proxy_authentication_credential.access_key_id,
                c.xks_proxy_authentication_credential.raw_secret_access_key,
            ),
            _ => anyhow::bail!("give --access-key-id and --secret, or --console-config"),
        };
        let identity = aws_credential_types::Credentials::new(
            access_key_id,
            secret.expose().to_owned(),
            None,
            None,
            "keymesh-loadgen",
        )
        .into();
        Ok(Self {
            endpoint,
            uri_path: uri_path.trim_end_matches('/').to_owned(),
            key_id: args.key_id.clone(),
            identity,
            region: args.region.clone(),
        })
    }

    /// The next request of `plan`, signed.
    pub fn build(
        &self,
        plan: &Plan,
        seq: &AtomicU64,
    ) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let (path, body) = plan.path_and_body(self, seq)?;
        self.request(&path, body)
    }

    /// A signed POST of `body` to `path`.
    fn request(&self, path: &str, body: Bytes) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let uri = format!("http://{}{path}", self.endpoint.host);
        let headers = [
            ("host", self.endpoint.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            "POST",
            &uri,
            headers.into_iter(),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::HOST, &self.endpoint.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        instructions.apply_to_request_http1x(&mut req);
        Ok(req)
    }
}

fn read_console(path: &Path) -> anyhow::Result<ConsoleConfig> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A fresh `kmsRequestId` per request (unique within the run).
fn request_id(seq: &AtomicU64) -> String {
    let n = seq.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

const PRINCIPAL: &str = "arn:aws:iam::111122223333:user/loadgen";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// What every request of the run sends: the operation with its fixed inputs.
#[derive(Debug)]
pub enum Plan {
    Encrypt {
        plaintext: String,
    },
    Decrypt {
        ciphertext: String,
        iv: String,
        tag: String,
    },
    Health,
    Metadata,
}

impl Plan {
    /// Prepare the run; for `decrypt` this encrypts the payload once.
    pub async fn prepare(target: &Target, op: &OpArgs) -> anyhow::Result<Self> {
        if let Some(size) = op.size()
            && size > MAX_SIZE
        {
            anyhow::bail!("--size {size} exceeds {MAX_SIZE}");
        }
        match op {
            OpArgs::Encrypt { size } => Ok(Plan::Encrypt {
                plaintext: B64.encode(payload(*size)),
            }),
            OpArgs::Decrypt { size } => {
                let enc = Plan::Encrypt {
                    plaintext: B64.encode(payload(*size)),
                };
                let mut conn = Conn::connect(target.endpoint.addr).await?;
                let seq = AtomicU64::new(0);
                let resp = conn.send(target.build(&enc, &seq)?).await?;
                if !resp.status.is_success() {
                    anyhow::bail!(
                        "initial encrypt failed: {} {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    );
                }
                let v: Value = serde_json::from_slice(&resp.body)?;
                let field = |k: &str| -> anyhow::Result<String> {
                    v.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow::anyhow!("encrypt response has no {k}"))
                };
                Ok(Plan::Decrypt {
                    ciphertext: field("ciphertext")?,
                    iv: field("initializationVector")?,
                    tag: field("authenticationTag")?,
                })
            }
            OpArgs::Health => Ok(Plan::Health),
            OpArgs::Metadata => Ok(Plan::Metadata),
        }
    }

    fn path_and_body(&self, target: &Target, seq: &AtomicU64) -> anyhow::Result<(String, Bytes)> {
        let (base, key) = (&target.uri_path, &target.key_id);
        let id = request_id(seq);
        let (path, body) = match self {
            Plan::Encrypt { plaintext } => (
                format!("{base}/keys/{key}/encrypt"),
                json!({
                    "requestMetadata": {
                        "awsPrincipalArn": PRINCIPAL, "kmsKeyArn": KEY_ARN,
                        "kmsOperation": "Encrypt", "kmsRequestId": id,
                    },
                    "plaintext": plaintext,
                    "encryptionAlgorithm": "AES_GCM",
                }),
            ),
            Plan::Decrypt {
                ciphertext,
                iv,
                tag,
            } => (
                format!("{base}/keys/{key}/decrypt"),
                json!({
                    "requestMetadata": {
                        "awsPrincipalArn": PRINCIPAL, "kmsKeyArn": KEY_ARN,
                        "kmsOperation": "Decrypt", "kmsRequestId": id,
                    },
                    "ciphertext": ciphertext,
                    "encryptionAlgorithm": "AES_GCM",
                    "initializationVector": iv,
                    "authenticationTag": tag,
                }),
            ),
            Plan::Health => (
                format!("{base}/health"),
                json!({
                    "requestMetadata": { "kmsOperation": "KmsHealthCheck", "kmsRequestId": id },
                }),
            ),
            Plan::Metadata => (
                format!("{base}/keys/{key}/metadata"),
                json!({
                    "requestMetadata": {
                        "awsPrincipalArn": PRINCIPAL,
                        "kmsOperation": "DescribeKey", "kmsRequestId": id,
                    },
                }),
            ),
        };
        Ok((path, Bytes::from(serde_json::to_vec(&body)?)))
    }
}

/// A deterministic, non-constant payload (content does not matter to AES-GCM
/// cost; determinism keeps runs comparable).
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}
