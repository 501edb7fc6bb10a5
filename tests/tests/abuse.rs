//! Abuse budgets and hostile-input regressions (issue 9, deliverables 5, 8
//! and 9), through the real edge:
//!
//! - 200 concurrent unauthenticated 1 MiB CSMS bodies: every answer is the
//!   dialect's error JSON, the edge's peak RSS stays under its 256 Mi
//!   Kubernetes limit, and a signed request afterwards succeeds;
//! - a flood of unknown access keys (Huawei) or bad signatures (XKS) from
//!   one source gets 429 past that source's budget, while other sources are
//!   served;
//! - a declared `Content-Length` far above the limit with no body is refused
//!   at once with the body-too-large code on every dialect;
//! - CSMS `expire_time` out of range is CSMS.0002 and stores nothing;
//! - a SYSCURRENT move refused by the stage quota moves nothing;
//! - `/metrics` only on the admin listener when there is one;
//! - the audit line of a 5xx carries its cause.
//!
//! Raw requests go over tokio sockets bound to a chosen loopback source
//! (127.0.0.x), so each flood has a source of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};
use keymesh_tests::csms::CsmsClient;
use keymesh_tests::huawei::HuaweiStore;
use keymesh_tests::kms::KmsClient;
use keymesh_tests::xks::model::EncryptRequest;
use keymesh_tests::{
    KEY_ED, Mesh, MeshOptions, TENANT_A, WAIT, free_port, http_get_status, http_request, plaintext,
    poll_async, random_hex,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The edge's Kubernetes memory limit (deploy/kubernetes/base/edge.yaml).
const EDGE_MEMORY_LIMIT_KIB: u64 = 256 * 1024;

/// One raw HTTP/1.1 answer.
#[derive(Debug)]
struct Raw {
    status: u16,
    json: Value,
    text: String,
}

impl Raw {
    fn field(&self, name: &str) -> &str {
        self.json[name].as_str().unwrap_or("")
    }
}

/// Send `head` (request line and headers, without the blank line) and
/// `body` from `source` to `addr`; read one answer (up to its
/// Content-Length, or to the end).
async fn raw(source: Ipv4Addr, addr: SocketAddr, head: &str, body: &[u8]) -> anyhow::Result<Raw> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut s = sock.connect(addr).await?;
    let exchange = async {
        s.write_all(format!("{head}\r\n\r\n").as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let headers = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if len.is_some_and(|len| buf.len() >= end + 4 + len) {
                    break;
                }
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(WAIT, exchange).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP response: {text:.200}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(Raw {
        status,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
        text: body.to_owned(),
    })
}

/// A POST head with an SDK-HMAC signature by an access key no account has.
fn unknown_key_head(addr: SocketAddr, path: &str, body: &[u8]) -> String {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&addr.to_string()).unwrap(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let ak = random_hex(10).to_uppercase();
    keymesh_huawei_auth::sdk_hmac::sign(
        "POST",
        path,
        None,
        &mut headers,
        body,
        &ak,
        &random_hex(20),
        SystemTime::now(),
    )
    .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close",
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("\r\n{k}: {}", v.to_str().unwrap()));
    }
    head
}

/// `VmRSS` / `VmHWM` (peak) of a process, in KiB.
fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn huawei_sqlite(extra: &str) -> Mesh {
    Mesh::start(MeshOptions {
        edge_extra: extra.to_owned(),
        ..HuaweiStore::Sqlite.options()
    })
    .unwrap()
}

// ---------------------------------------------------------------- memory

/// 200 concurrent unauthenticated 1 MiB CSMS bodies (each signed by its own
/// unknown access key, the costliest kind): every answer is a well-formed
/// dialect error, the edge's peak RSS stays under 256 MiB, and a valid
/// signed request afterwards succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unauthenticated_bodies_stay_within_memory() {
    let m = huawei_sqlite("");
    let pid = m.edge_pid().unwrap();
    let before = vm_kib(pid, "VmRSS:").unwrap();
    let project = m.huawei().full_a.project_id.clone();
    let path = format!("/v1/{project}/secrets");
    // Just under csms_max_body_bytes (1 MiB): each body is buffered whole.
    let filler = "A".repeat((1 << 20) - 64);
    let body = serde_json::to_vec(&json!({ "name": "flood", "secret_string": filler })).unwrap();
    assert!(body.len() <= 1 << 20);
    let addr = m.edge_addr;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let head = unknown_key_head(addr, &path, &body);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            raw(Ipv4Addr::LOCALHOST, addr, &head, &body).await
        }));
    }
    let mut codes: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for t in tasks {
        let r = t
            .await
            .unwrap()
            .expect("every flood request gets an answer");
        assert!(
            !r.field("error_code").is_empty() && !r.field("error_msg").is_empty(),
            "not the dialect's error JSON: {} {}",
            r.status,
            r.text
        );
        *codes
            .entry((r.status, r.field("error_code").to_owned()))
            .or_default() += 1;
    }
    let after = vm_kib(pid, "VmRSS:").unwrap();
    let peak = vm_kib(pid, "VmHWM:").unwrap();
    eprintln!(
        "flood answers {codes:?}; edge RSS before {before} KiB, after {after} KiB, peak {peak} KiB"
    );
    for (status, code) in codes.keys() {
        assert!(
            matches!(
                (*status, code.as_str()),
                (401, "APIGW.0301") | (429, "APIGW.0308")
            ),
            "unexpected answer {status} {code} in {codes:?}"
        );
    }
    assert!(
        peak < EDGE_MEMORY_LIMIT_KIB,
        "edge peak RSS {peak} KiB reaches the 256 Mi limit"
    );
    // The edge still serves a signed caller (the flood's source budget may
    // need a moment to refill for its account-cache miss).
    let c = CsmsClient(KmsClient::aksk(&m, &m.huawei().full_a));
    let name = format!("after-flood-{}", random_hex(4));
    poll_async("a signed request after the flood", WAIT, || {
        let (c, name) = (&c, &name);
        async move {
            let r = c.create_text(name, "v").await;
            (r.status == 200).then_some(())
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------- the rest

/// Unauthenticated attempts per source: a burst of 20, then one a second.
const SOURCE_BUDGET: &str =
    "abuse = { unauthenticated_per_source_burst = 20, unauthenticated_per_source_per_sec = 1 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_hostile_input_regressions() {
    let admin = free_port().unwrap();
    let m = huawei_sqlite(&format!("{SOURCE_BUDGET}admin_listen = \"{admin}\"\n"));
    declared_length_is_refused_at_once(&m).await;
    expire_time_out_of_range(&m).await;
    syscurrent_move_refused_by_quota_moves_nothing(&m).await;
    unknown_key_flood_is_throttled_per_source(&m).await;
    bad_signature_flood_is_throttled_per_source(&m).await;
    metrics_only_on_the_admin_listener(&m, admin);
    // Last: it stops the only worker.
    five_hundreds_carry_their_cause(&m).await;
}

/// A `Content-Length` far above the limit and no body: refused at once with
/// the body-too-large code (before, the Huawei dialects waited for the
/// bytes until their 5 s deadline and answered 503 KMS.0104).
async fn declared_length_is_refused_at_once(m: &Mesh) {
    let project = &m.huawei().full_a.project_id;
    for (path, status, code) in [
        (format!("/v1.0/{project}/kms/encrypt-data"), 400, "KMS.0203"),
        (format!("/v1/{project}/secrets"), 400, "CSMS.0004"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000",
            m.edge_addr
        );
        let r = raw(Ipv4Addr::LOCALHOST, m.edge_addr, &head, b"")
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.field("error_code")),
            (status, code),
            "{path}: {}",
            r.text
        );
    }
    let head = format!(
        "POST {TENANT_A}/keys/{KEY_ED}/encrypt HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000",
        m.edge_addr
    );
    let r = raw(Ipv4Addr::LOCALHOST, m.edge_addr, &head, b"")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.field("errorName")),
        (501, "UnsupportedOperationException"),
        "{}",
        r.text
    );
}

/// `expire_time` beyond year 9999 (9223372036854775807 overflowed to -1) or
/// in the past: CSMS.0002 on create-version and update-version, nothing
/// stored; the last second of 9999 is accepted exactly.
async fn expire_time_out_of_range(m: &Mesh) {
    let c = CsmsClient(KmsClient::aksk(m, &m.huawei().full_a));
    let n = format!("exp-{}", random_hex(4));
    c.create_text(&n, "v1").await.ok();
    let past = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    for bad in [json!(i64::MAX), json!(253_402_300_800i64), json!(past)] {
        c.json(
            "POST",
            &format!("secrets/{n}/versions"),
            &json!({ "secret_string": "x", "expire_time": bad }),
        )
        .await
        .assert_kms_error("CSMS.0002");
        c.json(
            "PUT",
            &format!("secrets/{n}/versions/v1"),
            &json!({ "expire_time": bad }),
        )
        .await
        .assert_kms_error("CSMS.0002");
    }
    // Nothing was added or changed.
    let v = c.version(&n, "latest").await.ok();
    assert_eq!(v.json["version"]["version_metadata"]["id"], "v1");
    assert!(v.json["version"]["version_metadata"]["expire_time"].is_null());
    let last = 253_402_300_799i64;
    let r = c
        .json(
            "PUT",
            &format!("secrets/{n}/versions/v1"),
            &json!({ "expire_time": last }),
        )
        .await
        .ok();
    assert_eq!(r.json["version_metadata"]["expire_time"], last);
    assert_eq!(
        c.version(&n, "v1").await.ok().json["version"]["version_metadata"]["expire_time"],
        last
    );
}

/// A secret at its stage quota (12) without SYSPREVIOUS: moving SYSCURRENT
/// would create SYSPREVIOUS, so it is CSMS.0203, and SYSCURRENT stays put.
async fn syscurrent_move_refused_by_quota_moves_nothing(m: &Mesh) {
    let c = CsmsClient(KmsClient::aksk(m, &m.huawei().full_a));
    let n = format!("stq-{}", random_hex(4));
    c.create_text(&n, "v1").await.ok();
    let custom: Vec<String> = (0..11).map(|i| format!("S{i}")).collect();
    c.json(
        "POST",
        &format!("secrets/{n}/versions"),
        &json!({ "secret_string": "v2", "version_stages": custom }),
    )
    .await
    .ok();
    let before = c.stages(&n).await;
    assert_eq!(before["v1"], vec!["SYSCURRENT".to_owned()]);
    c.json(
        "PUT",
        &format!("secrets/{n}/stages/SYSCURRENT"),
        &json!({ "version_id": "v2" }),
    )
    .await
    .assert_kms_error("CSMS.0203");
    assert_eq!(c.stages(&n).await, before);
    // With a stage freed, the move carries SYSPREVIOUS along.
    c.delete(&format!("secrets/{n}/stages/S0")).await.ok();
    c.json(
        "PUT",
        &format!("secrets/{n}/stages/SYSCURRENT"),
        &json!({ "version_id": "v2" }),
    )
    .await
    .ok();
    let after = c.stages(&n).await;
    assert_eq!(after["v1"], vec!["SYSPREVIOUS".to_owned()]);
    assert!(after["v2"].contains(&"SYSCURRENT".to_owned()));
}

/// Distinct unknown access keys from one source: 401 while its budget
/// lasts, then 429 APIGW.0308; another source is still served.
async fn unknown_key_flood_is_throttled_per_source(m: &Mesh) {
    let source = Ipv4Addr::new(127, 0, 0, 3);
    let project = &m.huawei().full_a.project_id;
    let path = format!("/v1.0/{project}/kms/list-keys");
    let body = br#"{"limit":"10"}"#;
    let unauthenticated = (401, "APIGW.0301".to_owned());
    let throttled = (429, "APIGW.0308".to_owned());
    let mut answers = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..40 {
        let head = unknown_key_head(m.edge_addr, &path, body);
        let r = raw(source, m.edge_addr, &head, body).await.unwrap();
        answers.push((r.status, r.field("error_code").to_owned()));
    }
    // Each unknown key costs two attempts (its store lookup, its failure):
    // the burst of 20 buys 10 answers, each further second one more.
    let allowed = 10 + start.elapsed().as_secs() as usize + 1;
    assert_eq!(answers[0], unauthenticated, "{answers:?}");
    let passed = answers.iter().filter(|a| **a == unauthenticated).count();
    assert!(passed <= allowed, "{passed} > {allowed}: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| *a == unauthenticated || *a == throttled),
        "{answers:?}"
    );
    // The real account, from its own source, is served.
    let r = KmsClient::aksk(m, &m.huawei().full_a)
        .post("list-keys", &json!({ "limit": "10" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Bad SigV4 from one source: 401 AuthenticationFailedException while its
/// budget lasts, then 429 ThrottlingException.
async fn bad_signature_flood_is_throttled_per_source(m: &Mesh) {
    let source = Ipv4Addr::new(127, 0, 0, 2);
    let body = br#"{"requestMetadata":{"awsPrincipalArn":"x","kmsOperation":"DescribeKey","kmsRequestId":"r"}}"#;
    let head = format!(
        "POST {TENANT_A}/keys/{KEY_ED}/metadata HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDNOTREAL/20250101/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=00\r\nConnection: close",
        m.edge_addr,
        body.len()
    );
    let mut answers = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..40 {
        let r = raw(source, m.edge_addr, &head, body).await.unwrap();
        answers.push((r.status, r.field("errorName").to_owned()));
    }
    // One attempt per failure: the burst of 20, then one a second.
    let allowed = 20 + start.elapsed().as_secs() as usize + 1;
    let unauthenticated = (401, "AuthenticationFailedException".to_owned());
    let throttled = (429, "ThrottlingException".to_owned());
    assert_eq!(answers[0], unauthenticated, "{answers:?}");
    let passed = answers.iter().filter(|a| **a == unauthenticated).count();
    assert!(passed <= allowed, "{passed} > {allowed}: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| *a == unauthenticated || *a == throttled),
        "{answers:?}"
    );
}

/// With an admin listener, `/metrics` is served there only; the probes stay
/// on both.
fn metrics_only_on_the_admin_listener(m: &Mesh, admin: SocketAddr) {
    // The main listener does not know the path (with the Huawei dialect
    // on, it is a Huawei URL error).
    let (status, body) = http_request(m.edge_addr, "GET", "/metrics", &[], b"").unwrap();
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(!body.contains("keymesh_"), "{body}");
    let (status, body) = http_request(admin, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("keymesh_kms_requests_total"), "{body:.300}");
    assert!(
        body.contains("keymesh_edge_unauthenticated_refused_total"),
        "{body:.300}"
    );
    for p in ["/livez", "/readyz"] {
        assert_eq!(http_get_status(m.edge_addr, p), 200, "{p}");
        assert_eq!(http_get_status(admin, p), 200, "{p}");
    }
}

/// With the only worker gone, a Huawei and an XKS request fail 5xx and the
/// audit line of each names the crypto-worker failure.
async fn five_hundreds_carry_their_cause(m: &Mesh) {
    let k = KmsClient::aksk(m, &m.huawei().full_a);
    let key = k.create_key(&format!("cause-{}", random_hex(4))).await;
    m.kill_worker(0);
    let r = k
        .post(
            "encrypt-data",
            &json!({ "key_id": key, "plain_text": "hello" }),
        )
        .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    let id = r.request_id().unwrap().to_owned();
    let req = EncryptRequest::new(plaintext(16));
    let kms_id = req.metadata.kms_request_id.clone();
    let x = m.client(TENANT_A).encrypt(KEY_ED, &req).await.unwrap();
    assert!(x.status() >= 500, "{}", x.status());
    for needle in [id, kms_id] {
        let line = poll_async("the audit line of a 5xx", WAIT, || {
            let needle = needle.clone();
            async move {
                m.log_files()
                    .iter()
                    .filter_map(|f| std::fs::read_to_string(f).ok())
                    .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
                    .find(|l| l.contains(&needle) && l.contains("keymesh::audit"))
            }
        })
        .await
        .unwrap();
        assert!(
            line.contains("cause") && line.contains("crypto-worker"),
            "no cause in the audit line: {line}"
        );
    }
}
