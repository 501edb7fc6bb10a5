//! Huawei-Cloud-compatible requests, signed with SDK-HMAC-SHA256
//! (`keymesh_huawei_auth::sdk_hmac::sign`, the same signer the edge's
//! verifier is tested against): KMS `encrypt-data` and `create-datakey`
//! (`POST /v1.0/{project}/kms/...`) and the CSMS hot read,
//! show-secret-version (`GET /v1/{project}/secrets/{name}/versions/{id}`).
//!
//! What a real SDK client would compute once is computed once: the path, the
//! JSON body (the official clients send a fixed body per call; the bytes are
//! shared, never re-serialised) and the header values that never change. What
//! a real client computes per request is computed per request: `X-Sdk-Date`
//! (it changes every second), the canonical request, its hash and the HMAC.
//! So the edge verifies a fresh signature every time, and the signer's cost
//! shows in the load generator's own CPU column (and, measured alone, in the
//! run's `request_build_us`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::Full;
use keymesh_common::Secret;
use keymesh_huawei_auth::sdk_hmac;
use serde_json::Value;

use crate::conn::{Answer, Conn, Endpoint};

/// What the official clients send for the KMS operations (API reference §2.2).
const CONTENT_TYPE_KMS: &str = "application/json;charset=utf-8";
/// What the official clients send for the CSMS operations (the CSMS client
/// sets plain `application/json`, on GETs too, and signs it).
const CONTENT_TYPE_CSMS: &str = "application/json";
/// Signed like the SDK's `huaweicloud-usdk-python/3.0; ...` value.
const AGENT: &str = "huaweicloud-usdk-compatible keymesh-loadgen";
/// encrypt-data takes 1..=4096 bytes of plaintext.
const MAX_PLAINTEXT: usize = 4096;
/// A CSMS `secret_string` holds at most 32768 characters.
const MAX_SECRET_VALUE: usize = 32_768;

/// Who signs: an account made by `keymeshctl account create`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountArgs {
    /// Project id (or from --account-file).
    #[arg(long)]
    pub project_id: Option<String>,
    /// Access key (AK) (or from --account-file).
    #[arg(long, env = "KEYMESH_LOADGEN_HW_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret key (SK). Prefer the env var or --account-file: argv is world-readable.
    #[arg(long, env = "KEYMESH_LOADGEN_HW_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,
    /// JSON as printed by `keymeshctl account create --json`.
    #[arg(long)]
    pub account_file: Option<PathBuf>,
}

/// The Huawei operations under load.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OpArgs {
    /// Huawei KMS encrypt-data of a `size`-byte (ASCII) plaintext.
    KmsEncrypt {
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Master key id (UUID; `kms-create-key` makes one).
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// Huawei KMS create-datakey of `bits` bits (`datakey_length`).
    KmsDatakey {
        #[arg(long, default_value_t = 512)]
        bits: u32,
        /// Master key id (UUID; `kms-create-key` makes one).
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// Huawei KMS create-rsa-datakey-pair (an HSM key-pair generation: the
    /// expensive operation of the HSM-fairness scenario).
    KmsKeypair {
        /// `key_spec`: RSA_2048, RSA_3072 or RSA_4096.
        #[arg(long, default_value = "RSA_4096")]
        spec: String,
        /// Master key id (UUID; `kms-create-key` makes one).
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        account: AccountArgs,
    },
    /// Huawei CSMS show-secret-version: the secret's value, decrypted.
    CsmsShow {
        /// Secret name (`csms-create-secret` makes one).
        #[arg(long)]
        name: String,
        /// Version id, or `latest` (the SYSCURRENT version).
        #[arg(long, default_value = "latest")]
        version: String,
        #[command(flatten)]
        account: AccountArgs,
    },
}

impl OpArgs {
    pub fn name(&self) -> &'static str {
        match self {
            OpArgs::KmsEncrypt { .. } => "kms-encrypt",
            OpArgs::KmsDatakey { .. } => "kms-datakey",
            OpArgs::KmsKeypair { .. } => "kms-keypair",
            OpArgs::CsmsShow { .. } => "csms-show",
        }
    }

    pub fn dialect(&self) -> &'static str {
        match self {
            OpArgs::KmsEncrypt { .. } | OpArgs::KmsDatakey { .. } | OpArgs::KmsKeypair { .. } => {
                "huawei-kms"
            }
            OpArgs::CsmsShow { .. } => "huawei-csms",
        }
    }

    /// Plaintext bytes (encrypt-data) or data-key bytes (create-datakey);
    /// for show-secret-version the size is the stored value's, known only
    /// once the probe has read it ([`Kms::value_len`]).
    pub fn size(&self) -> Option<usize> {
        match self {
            OpArgs::KmsEncrypt { size, .. } => Some(*size),
            OpArgs::KmsDatakey { bits, .. } => Some((*bits / 8) as usize),
            OpArgs::KmsKeypair { .. } | OpArgs::CsmsShow { .. } => None,
        }
    }
}

/// `kms-create-key`: make the master key the runs use.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateKeyArgs {
    /// Edge base URL; plain HTTP to a loopback address only.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// `key_alias` of the new key.
    #[arg(long, default_value = "bench-1")]
    pub alias: String,
    #[command(flatten)]
    pub account: AccountArgs,
}

/// `csms-create-secret`: make the secret the `csms-show` runs read.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateSecretArgs {
    /// Edge base URL; plain HTTP to a loopback address only.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// Secret name (`[A-Za-z0-9_-]{1,64}`).
    #[arg(long, default_value = "bench-secret-1")]
    pub name: String,
    /// Length of the (ASCII) `secret_string` stored as its first version.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    #[command(flatten)]
    pub account: AccountArgs,
}

#[derive(serde::Deserialize)]
struct AccountFile {
    access_key: String,
    secret_key: Secret,
    project_id: String,
}

/// A resolved account. `Debug` is derived but the secret is a [`Secret`].
#[derive(Debug, Clone)]
struct Account {
    project_id: String,
    access_key: String,
    secret_key: Secret,
}

impl Account {
    fn resolve(args: &AccountArgs) -> anyhow::Result<Self> {
        let file = args
            .account_file
            .as_deref()
            .map(read_account_file)
            .transpose()?;
        let pick = |flag: &Option<String>, from_file: Option<&String>, name: &str| {
            flag.clone()
                .or_else(|| from_file.cloned())
                .ok_or_else(|| anyhow::anyhow!("give --{name} or --account-file"))
        };
        Ok(Self {
            project_id: pick(
                &args.project_id,
                file.as_ref().map(|f| &f.project_id),
                "project-id",
            )?,
            access_key: pick(
                &args.access_key,
                file.as_ref().map(|f| &f.access_key),
                "access-key",
            )?,
            secret_key: args
                .secret_key
                .clone()
                .or_else(|| file.map(|f| f.secret_key))
                .ok_or_else(|| anyhow::anyhow!("give --secret-key or --account-file"))?,
        })
    }
}

fn read_account_file(path: &Path) -> anyhow::Result<AccountFile> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A JSON string literal (escaping included).
fn lit(s: &str) -> anyhow::Result<String> {
    Ok(serde_json::to_string(s)?)
}

/// A body in the clients' layout: `{"a": "x", "b": "y"}` (Python's
/// `json.dumps` separators, API reference §2.3).
fn body(fields: &[(&str, &str)]) -> anyhow::Result<Bytes> {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&lit(k)?);
        out.push_str(": ");
        out.push_str(&lit(v)?);
    }
    out.push('}');
    Ok(Bytes::from(out))
}

/// A secret name as the edge accepts it (`^[a-zA-Z0-9_-]{1,64}$`). Checked
/// here so that it can go into the path as is: no character of it needs
/// percent-encoding.
fn check_secret_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        anyhow::bail!("--name must match [A-Za-z0-9_-]{{1,64}}");
    }
    Ok(())
}

/// A deterministic printable plaintext (the SDK sends `plain_text` and
/// `secret_string` as strings; ASCII keeps bytes = characters). Bench data,
/// not a secret.
fn plaintext(size: usize) -> String {
    (0..size)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// One operation of one account against one endpoint, ready to be signed.
#[derive(Debug)]
pub struct Kms {
    pub endpoint: Endpoint,
    account: Account,
    method: http::Method,
    /// Raw path, e.g. `/v1.0/{project}/kms/encrypt-data`.
    path: String,
    /// Empty for GETs.
    body: Bytes,
    /// Host, Content-Type, User-Agent, X-Project-Id: signed, never changing.
    fixed: HeaderMap,
    /// JSON pointer to the response string that shows the call did its work.
    expect: &'static str,
    /// Length of that string in the probe's answer (show-secret-version:
    /// the value's size).
    value_len: Option<usize>,
}

/// Which API a request belongs to: its path prefix and Content-Type.
#[derive(Debug, Clone, Copy)]
enum Api {
    Kms,
    Csms,
}

impl Kms {
    /// A KMS `POST /v1.0/{project}/kms/{operation}`.
    fn kms_post(
        endpoint: Endpoint,
        account: Account,
        operation: &str,
        body: Bytes,
        expect: &'static str,
    ) -> anyhow::Result<Self> {
        let path = format!("/v1.0/{}/kms/{operation}", account.project_id);
        Self::new(
            endpoint,
            account,
            Api::Kms,
            http::Method::POST,
            path,
            body,
            expect,
        )
    }

    /// A CSMS request on `/v1/{project}/{rest}`.
    fn csms(
        endpoint: Endpoint,
        account: Account,
        method: http::Method,
        rest: &str,
        body: Bytes,
        expect: &'static str,
    ) -> anyhow::Result<Self> {
        let path = format!("/v1/{}/{rest}", account.project_id);
        Self::new(endpoint, account, Api::Csms, method, path, body, expect)
    }

    fn new(
        endpoint: Endpoint,
        account: Account,
        api: Api,
        method: http::Method,
        path: String,
        body: Bytes,
        expect: &'static str,
    ) -> anyhow::Result<Self> {
        let content_type = match api {
            Api::Kms => CONTENT_TYPE_KMS,
            Api::Csms => CONTENT_TYPE_CSMS,
        };
        let mut fixed = HeaderMap::new();
        fixed.insert(HOST, HeaderValue::from_str(&endpoint.host)?);
        fixed.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        fixed.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        fixed.insert(
            HeaderName::from_static("x-project-id"),
            HeaderValue::from_str(&account.project_id)?,
        );
        Ok(Self {
            endpoint,
            account,
            method,
            path,
            body,
            fixed,
            expect,
            value_len: None,
        })
    }

    /// Length of the probed response string (see `value_len`).
    pub fn value_len(&self) -> Option<usize> {
        self.value_len
    }

    /// Resolve, build, and probe once (a misconfigured run fails here, with
    /// the edge's error body, instead of as 100 % errors).
    pub async fn prepare(endpoint: &str, op: &OpArgs) -> anyhow::Result<Self> {
        let endpoint = Endpoint::resolve(endpoint).await?;
        let mut kms = match op {
            OpArgs::KmsEncrypt {
                size,
                key_id,
                account,
            } => {
                if !(1..=MAX_PLAINTEXT).contains(size) {
                    anyhow::bail!("--size must be in 1..={MAX_PLAINTEXT}");
                }
                let body = body(&[("key_id", key_id), ("plain_text", &plaintext(*size))])?;
                Self::kms_post(
                    endpoint,
                    Account::resolve(account)?,
                    "encrypt-data",
                    body,
                    "/cipher_text",
                )?
            }
            OpArgs::KmsDatakey {
                bits,
                key_id,
                account,
            } => {
                if !(8..=8192).contains(bits) || bits % 8 != 0 {
                    anyhow::bail!("--bits must be a multiple of 8 in 8..=8192");
                }
                let body = body(&[("key_id", key_id), ("datakey_length", &bits.to_string())])?;
                Self::kms_post(
                    endpoint,
                    Account::resolve(account)?,
                    "create-datakey",
                    body,
                    "/cipher_text",
                )?
            }
            OpArgs::KmsKeypair {
                spec,
                key_id,
                account,
            } => {
                if !matches!(spec.as_str(), "RSA_2048" | "RSA_3072" | "RSA_4096") {
                    anyhow::bail!("--spec must be RSA_2048, RSA_3072 or RSA_4096");
                }
                let body = body(&[("key_id", key_id), ("key_spec", spec)])?;
                Self::kms_post(
                    endpoint,
                    Account::resolve(account)?,
                    "create-rsa-datakey-pair",
                    body,
                    "/public_key",
                )?
            }
            OpArgs::CsmsShow {
                name,
                version,
                account,
            } => {
                check_secret_name(name)?;
                // `latest` or a version id (a UUID): path-safe either way.
                if version.is_empty()
                    || !version
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    anyhow::bail!("--version must be `latest` or a version id");
                }
                Self::csms(
                    endpoint,
                    Account::resolve(account)?,
                    http::Method::GET,
                    &format!("secrets/{name}/versions/{version}"),
                    Bytes::new(),
                    "/version/secret_string",
                )?
            }
        };
        let answer = kms.once().await?;
        let probed = check(&answer, kms.expect)?;
        kms.value_len = Some(probed);
        Ok(kms)
    }

    /// The next request, signed now.
    pub fn build(&self) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let mut headers = self.fixed.clone();
        sdk_hmac::sign(
            self.method.as_str(),
            &self.path,
            None,
            &mut headers,
            &self.body,
            &self.account.access_key,
            self.account.secret_key.expose(),
            SystemTime::now(),
        )?;
        let mut req = http::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .body(Full::new(self.body.clone()))?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    async fn once(&self) -> anyhow::Result<Answer> {
        let mut conn = Conn::connect(self.endpoint.addr).await?;
        conn.send(self.build()?).await
    }
}

/// A 2xx whose JSON has a string at `pointer`: that string's length.
/// Otherwise the status and the edge's error body (error bodies carry codes
/// and messages, never key material or secret values). The answer itself is
/// never printed: a show-secret-version answer holds the value.
fn check(answer: &Answer, pointer: &str) -> anyhow::Result<usize> {
    let v = success_json(answer, "probe request")?;
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::len)
        .ok_or_else(|| anyhow::anyhow!("probe response ({}) has no {pointer}", answer.status))
}

/// The JSON of a 2xx answer; otherwise `{what} failed:` with the status and
/// the edge's error body.
fn success_json(answer: &Answer, what: &str) -> anyhow::Result<Value> {
    if !answer.status.is_success() {
        anyhow::bail!(
            "{what} failed: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(serde_json::from_slice(&answer.body)?)
}

/// `create-key` with `alias`; returns the new key's id.
pub async fn create_key(args: &CreateKeyArgs) -> anyhow::Result<String> {
    let endpoint = Endpoint::resolve(&args.endpoint).await?;
    let kms = Kms::kms_post(
        endpoint,
        Account::resolve(&args.account)?,
        "create-key",
        body(&[("key_alias", &args.alias)])?,
        "/key_info/key_id",
    )?;
    let v = success_json(&kms.once().await?, "create-key")?;
    v.pointer(kms.expect)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("create-key response has no key_info.key_id"))
}

/// `create-secret` named `args.name` with a `value_bytes`-character
/// `secret_string` (encrypted under the project's `csms/default` key, which
/// the edge creates on first use); returns the new secret's id.
pub async fn create_secret(args: &CreateSecretArgs) -> anyhow::Result<String> {
    check_secret_name(&args.name)?;
    if !(1..=MAX_SECRET_VALUE).contains(&args.value_bytes) {
        anyhow::bail!("--value-bytes must be in 1..={MAX_SECRET_VALUE}");
    }
    let endpoint = Endpoint::resolve(&args.endpoint).await?;
    let kms = Kms::csms(
        endpoint,
        Account::resolve(&args.account)?,
        http::Method::POST,
        "secrets",
        body(&[
            ("name", &args.name),
            ("secret_string", &plaintext(args.value_bytes)),
        ])?,
        "/secret/id",
    )?;
    let v = success_json(&kms.once().await?, "create-secret")?;
    v.pointer(kms.expect)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("create-secret response has no secret.id"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint() -> Endpoint {
        Endpoint {
            addr: "127.0.0.1:9".parse().unwrap(),
            host: "127.0.0.1:9".into(),
        }
    }

    fn account() -> Account {
        Account {
            project_id: "0123456789abcdef0123456789abcdef".into(),
            access_key: "AKEXAMPLE0000000000A".into(),
            secret_key: Secret::new("secret-example".into()),
        }
    }

    fn kms() -> Kms {
        let b = body(&[
            ("key_id", "0d0466b0-e727-4d9c-b35d-f84bb474a37e"),
            ("plain_text", &plaintext(32)),
        ])
        .unwrap();
        Kms::kms_post(endpoint(), account(), "encrypt-data", b, "/cipher_text").unwrap()
    }

    /// The edge's check of a signed request: Ok(access key) or the error.
    fn verify(
        req: http::Request<Full<Bytes>>,
    ) -> (http::request::Parts, Result<String, sdk_hmac::SignError>) {
        let (parts, body) = req.into_parts();
        let body = futures_body(body);
        let r = sdk_hmac::Request::new(&parts.method, &parts.uri, &parts.headers, &body);
        let ok = sdk_hmac::Verifier::default()
            .verify(&r, SystemTime::now(), |ak| {
                (ak == "AKEXAMPLE0000000000A")
                    .then(|| zeroize::Zeroizing::new("secret-example".to_owned()))
            })
            .map(|v| v.access_key);
        (parts, ok)
    }

    #[test]
    fn csms_show_is_a_signed_get_that_verifies() {
        let op = OpArgs::CsmsShow {
            name: "bench-secret-1".into(),
            version: "latest".into(),
            account: AccountArgs {
                project_id: None,
                access_key: None,
                secret_key: None,
                account_file: None,
            },
        };
        assert_eq!(
            (op.name(), op.dialect(), op.size()),
            ("csms-show", "huawei-csms", None)
        );
        let k = Kms::csms(
            endpoint(),
            account(),
            http::Method::GET,
            "secrets/bench-secret-1/versions/latest",
            Bytes::new(),
            "/version/secret_string",
        )
        .unwrap();
        let (parts, ok) = verify(k.build().unwrap());
        assert_eq!(ok.unwrap(), "AKEXAMPLE0000000000A");
        assert_eq!(parts.method, http::Method::GET);
        assert_eq!(
            parts.uri.path(),
            "/v1/0123456789abcdef0123456789abcdef/secrets/bench-secret-1/versions/latest"
        );
        assert_eq!(parts.headers[CONTENT_TYPE], "application/json");
        let auth = parts.headers[http::header::AUTHORIZATION].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date"),
            "{auth}"
        );
        // Signed for GET: the same headers presented as a POST fail.
        let mut forged = http::Request::new(Full::new(Bytes::new()));
        *forged.method_mut() = http::Method::POST;
        *forged.uri_mut() = parts.uri.clone();
        *forged.headers_mut() = parts.headers.clone();
        assert!(verify(forged).1.is_err());
    }

    #[test]
    fn csms_create_secret_body_and_signature() {
        let b = body(&[
            ("name", "bench-secret-1"),
            ("secret_string", &plaintext(64)),
        ])
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["secret_string"].as_str().unwrap().len(), 64);
        let k = Kms::csms(
            endpoint(),
            account(),
            http::Method::POST,
            "secrets",
            b,
            "/secret/id",
        )
        .unwrap();
        let (parts, ok) = verify(k.build().unwrap());
        assert_eq!(ok.unwrap(), "AKEXAMPLE0000000000A");
        assert_eq!(
            parts.uri.path(),
            "/v1/0123456789abcdef0123456789abcdef/secrets"
        );
    }

    #[test]
    fn secret_names_are_path_safe() {
        assert!(check_secret_name("bench-secret_1").is_ok());
        for bad in ["", "a/b", "a b", "a%2Fb", "é", &"x".repeat(65)] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_uses_the_sdk_layout() {
        let b = body(&[("key_id", "k"), ("datakey_length", "512")]).unwrap();
        assert_eq!(&b[..], br#"{"key_id": "k", "datakey_length": "512"}"#);
        assert_eq!(plaintext(32).len(), 32);
    }

    #[test]
    fn requests_verify_with_the_edge_verifier() {
        let k = kms();
        let (parts, ok) = verify(k.build().unwrap());
        assert_eq!(ok.unwrap(), "AKEXAMPLE0000000000A");
        assert_eq!(
            parts.headers[CONTENT_TYPE],
            "application/json;charset=utf-8"
        );
        let auth = parts.headers[http::header::AUTHORIZATION].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date"),
            "{auth}"
        );
        // A second later the date, hence the signature, differs.
        let later = SystemTime::now() + Duration::from_secs(2);
        let mut h = k.fixed.clone();
        sdk_hmac::sign(
            "POST",
            &k.path,
            None,
            &mut h,
            &k.body,
            "AKEXAMPLE0000000000A",
            "secret-example",
            later,
        )
        .unwrap();
        assert_ne!(h[http::header::AUTHORIZATION], auth);
    }

    fn futures_body(b: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt as _;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(b.collect())
            .unwrap()
            .to_bytes()
    }
}
