//! A small Huawei KMS client for the e2e tests: signs requests with an AK/SK
//! account (SDK-HMAC-SHA256, exactly as the official SDK does) or sends an
//! `X-Auth-Token`, and returns status, parsed JSON body and headers. It is
//! deliberately raw (any method, path, body bytes, header edits before and
//! after signing) so the tests can send the malformed requests a real SDK
//! never would.
//!
//! Also: the published error table (`fixtures/huawei-kms-csms.csv`) and an
//! assertion that an error response is exactly one of its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::Mesh;
use crate::errors::split_csv;
use crate::huawei::HuaweiAccount;

/// The Huawei KMS/CSMS error table as shipped with the tests.
pub const KMS_CSV: &str = include_str!("../fixtures/huawei-kms-csms.csv");

/// One published error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsRow {
    pub status: u16,
    pub code: String,
    pub msg: String,
}

/// `error_code` → row, from [`KMS_CSV`] (header skipped; fields may be
/// quoted, RFC 4180), parsed once per process.
pub fn kms_table() -> &'static BTreeMap<String, KmsRow> {
    static TABLE: OnceLock<BTreeMap<String, KmsRow>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut out = BTreeMap::new();
        for line in KMS_CSV.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let f = split_csv(line);
            let status = f
                .first()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("bad status in CSV line {line:?}"));
            let code = f.get(1).cloned().unwrap_or_default();
            let msg = f.get(2).cloned().unwrap_or_default();
            out.insert(code.clone(), KmsRow { status, code, msg });
        }
        out
    })
}

/// The codes an error-table test has provoked; [`Self::assert_exactly`]
/// compares them with the codes it claims to produce.
#[derive(Debug, Default)]
pub struct ObservedCodes(BTreeSet<String>);

impl ObservedCodes {
    /// Assert `r` is the published `code` (the gateway's APIGW.0301 is not
    /// in the table: its row is fixed here) and record it.
    pub fn expect(&mut self, code: &str, r: KmsResponse, what: &str) {
        if code == "APIGW.0301" {
            r.assert_error(401, code, "Incorrect IAM authentication information.");
        } else {
            let (status, got) = r.code();
            assert_eq!(got, code, "{what}: status {status}, body {}", r.text());
            r.assert_kms_error(code);
        }
        self.0.insert(code.to_owned());
    }

    /// The observed set equals `produced`, and every non-gateway code of it
    /// is in the published table.
    pub fn assert_exactly(&self, produced: &[&str]) {
        let want: BTreeSet<String> = produced.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(self.0, want, "observed codes differ from PRODUCED");
        let table = kms_table();
        for code in produced.iter().filter(|c| !c.starts_with("APIGW.")) {
            assert!(table.contains_key(*code), "{code} not in the CSV");
        }
    }
}

/// How a [`KmsClient`] authenticates.
#[derive(Debug, Clone)]
pub enum KmsAuth {
    /// SDK-HMAC-SHA256 with this access key / secret key.
    AkSk { ak: String, sk: String },
    /// `X-Auth-Token`.
    Token(String),
    /// No credentials at all.
    None,
}

/// One response.
#[derive(Debug, Clone)]
pub struct KmsResponse {
    pub status: u16,
    /// The parsed body (`Value::Null` when it is not JSON).
    pub json: Value,
    pub raw: Bytes,
    pub headers: HeaderMap,
}

impl KmsResponse {
    /// The `X-Request-Id` header, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    }

    /// A string field of the body (panics when absent: test helper).
    pub fn str(&self, field: &str) -> String {
        self.json
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string {field:?} in {}", self.text()))
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Assert a 2xx answer with an `X-Request-Id`.
    pub fn ok(self) -> Self {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.text()
        );
        assert!(self.request_id().is_some(), "no X-Request-Id");
        self
    }

    /// Assert this is exactly the published error `code`: status and
    /// `error_msg` from the CSV, body `{"error_code","error_msg"}` and
    /// nothing else, an `X-Request-Id` header.
    pub fn assert_kms_error(&self, code: &str) {
        let row = kms_table()
            .get(code)
            .unwrap_or_else(|| panic!("{code} is not in the error table"));
        self.assert_error(row.status, &row.code, &row.msg);
    }

    /// Assert an error body of exactly `{"error_code": code, "error_msg": msg}`.
    pub fn assert_error(&self, status: u16, code: &str, msg: &str) {
        assert_eq!(
            (
                self.status,
                self.json.get("error_code").and_then(Value::as_str)
            ),
            (status, Some(code)),
            "body: {}",
            self.text()
        );
        let obj = self
            .json
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {}", self.text()));
        assert_eq!(obj.len(), 2, "error body has extra fields: {}", self.text());
        assert_eq!(
            obj.get("error_msg").and_then(Value::as_str),
            Some(msg),
            "error_msg of {code}"
        );
        assert!(
            self.request_id().is_some(),
            "error {code} has no X-Request-Id"
        );
    }

    /// `(status, error_code)` for table-driven checks.
    pub fn code(&self) -> (u16, String) {
        (
            self.status,
            self.json
                .get("error_code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        )
    }
}

/// A Huawei KMS client bound to one project and one identity.
#[derive(Debug, Clone)]
pub struct KmsClient {
    pub addr: SocketAddr,
    pub project: String,
    pub auth: KmsAuth,
}

impl KmsClient {
    /// Signs with `account`'s AK/SK, on `account`'s project.
    pub fn aksk(mesh: &Mesh, account: &HuaweiAccount) -> Self {
        Self {
            addr: mesh.edge_addr,
            project: account.project_id.clone(),
            auth: KmsAuth::AkSk {
                ak: account.access_key.clone(),
                sk: account.secret_key.clone(),
            },
        }
    }

    /// Sends `token` as `X-Auth-Token`, on `project`'s paths.
    pub fn token(mesh: &Mesh, project: &str, token: &str) -> Self {
        Self {
            addr: mesh.edge_addr,
            project: project.to_owned(),
            auth: KmsAuth::Token(token.to_owned()),
        }
    }

    /// `/v1.0/{project}/kms/{suffix}`.
    pub fn path(&self, suffix: &str) -> String {
        format!("/v1.0/{}/kms/{suffix}", self.project)
    }

    /// `POST /v1.0/{project}/kms/{suffix}` with a JSON body.
    pub async fn post(&self, suffix: &str, body: &Value) -> KmsResponse {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.send("POST", &self.path(suffix), bytes, |_| {}, |_| {})
            .await
            .unwrap_or_else(|e| panic!("POST {suffix}: {e:#}"))
    }

    /// `create-key` with `key_alias` (must succeed); returns the key id.
    pub async fn create_key(&self, alias: &str) -> String {
        let r = self
            .post("create-key", &serde_json::json!({ "key_alias": alias }))
            .await
            .ok();
        r.json["key_info"]["key_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no key_info.key_id: {}", r.text()))
            .to_owned()
    }

    /// POST with a raw body.
    pub async fn post_raw(&self, suffix: &str, body: impl Into<Vec<u8>>) -> KmsResponse {
        self.send("POST", &self.path(suffix), body.into(), |_| {}, |_| {})
            .await
            .unwrap_or_else(|e| panic!("POST {suffix}: {e:#}"))
    }

    /// Any method and path (with an optional `?query`). `before_sign` edits
    /// the headers before signing (e.g. a stale `X-Sdk-Date`), `after_sign`
    /// afterwards (e.g. spoil the signature).
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
        before_sign: impl FnOnce(&mut HeaderMap),
        after_sign: impl FnOnce(&mut HeaderMap),
    ) -> Result<KmsResponse> {
        let host = self.addr.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_str(&host)?);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        headers.insert(
            HeaderName::from_static("x-project-id"),
            HeaderValue::from_str(&self.project)?,
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("keymesh-e2e/1"),
        );
        before_sign(&mut headers);
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        match &self.auth {
            KmsAuth::AkSk { ak, sk } => keymesh_huawei_auth::sdk_hmac::sign(
                method,
                path,
                query,
                &mut headers,
                &body,
                ak,
                sk,
                SystemTime::now(),
            )
            .map_err(|e| anyhow!("sign: {e}"))?,
            KmsAuth::Token(t) => {
                headers.insert(
                    HeaderName::from_static("x-auth-token"),
                    HeaderValue::from_str(t)?,
                );
            }
            KmsAuth::None => {}
        }
        after_sign(&mut headers);

        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{host}{path_and_query}"))
            .body(Full::new(Bytes::from(body)))?;
        *req.headers_mut() = headers;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let resp = tokio::time::timeout(crate::WAIT, client.request(req))
            .await
            .context("request timed out")??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(KmsResponse {
            status,
            json,
            raw,
            headers,
        })
    }
}
