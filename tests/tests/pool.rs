//! The edge's crypto-worker pool against the real binaries: balancing, a
//! worker killed or drained under load, DNS discovery and load shedding.
//! Every test owns its mesh because it breaks it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keymesh_tests::errors::assert_xks_error;
use keymesh_tests::xks::model::*;
use keymesh_tests::*;

fn opts(workers: usize, deadline_ms: u64) -> MeshOptions {
    MeshOptions {
        workers,
        keystores: vec![TENANT_A.into()],
        deadline_ms,
        ..MeshOptions::default()
    }
}

/// Sum of every sample of `name` whose labels contain `label` in the edge's /metrics.
fn metric(m: &Mesh, name: &str, label: &str) -> f64 {
    let (_, body) = http_request(m.edge_addr, "GET", "/metrics", &[], b"").unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The edge log lines containing any of `needles` (for failure messages).
fn edge_log_lines(m: &Mesh, needles: &[&str]) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(m.root().join("logs")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("edge") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for l in text
                .lines()
                .filter(|l| needles.iter().any(|n| l.contains(n)))
            {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Requests per worker as the edge counted them.
fn per_worker(m: &Mesh) -> Vec<f64> {
    m.worker_addrs
        .iter()
        .map(|a| {
            metric(
                m,
                "keymesh_edge_worker_requests_total",
                &format!("worker=\"http://{a}\""),
            )
        })
        .collect()
}

/// Closed-loop load of `ops` from `tasks` tasks until `stop`; every non-200
/// is recorded with its body.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(m: &Mesh, enc: &EncryptResponse, ops: &[Operation], tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let handles = (0..tasks)
            .map(|t| {
                let c = xks::XksClient::new(m.client_config(TENANT_A)).unwrap();
                let (stop, done, enc) = (Arc::clone(&stop), Arc::clone(&done), enc.clone());
                let ops = ops.to_vec();
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let op = ops[i % ops.len()];
                        i += 1;
                        let r = match op {
                            Operation::Encrypt => {
                                c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32))).await
                            }
                            Operation::Decrypt => {
                                c.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
                                    .await
                            }
                            _ => {
                                c.get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                                    .await
                            }
                        };
                        match r {
                            Ok(r) if r.status() == 200 => {}
                            Ok(r) => failures.push(format!(
                                "{op:?}: {} {}",
                                r.status(),
                                String::from_utf8_lossy(&r.body)
                            )),
                            Err(e) => failures.push(format!("{op:?}: transport {e}")),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    failures
                })
            })
            .collect();
        Self {
            stop,
            done,
            tasks: handles,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests completed.
    async fn advance(&self, n: usize) {
        let target = self.done() + n;
        poll_async("load to advance", WAIT, || async {
            (self.done() >= target).then_some(())
        })
        .await
        .unwrap();
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

async fn encrypted(m: &Mesh) -> EncryptResponse {
    m.client(TENANT_A)
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap()
        .parse::<EncryptResponse>()
        .unwrap()
}

/// Power of two choices spreads the load over both workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_spreads_over_two_workers() {
    let m = Mesh::start(opts(2, 1000)).unwrap();
    let enc = encrypted(&m).await;
    let before = per_worker(&m);
    let load = Load::start(&m, &enc, &[Operation::Encrypt, Operation::Decrypt], 6);
    load.advance(600).await;
    let failures = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    let after = per_worker(&m);
    let served: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: f64 = served.iter().sum();
    assert!(total >= 600.0, "{served:?}");
    for s in &served {
        assert!(
            *s >= total * 0.2,
            "uneven spread over the workers: {served:?}"
        );
    }
}

/// kill -9 one of two workers under load of every XKS operation: requests
/// in flight on it and those that still pick it are retried on the
/// survivor. Every one of them is free of HSM-side effects (Encrypt draws a
/// fresh IV), so none may fail, Encrypt included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_under_load_fails_nothing() {
    let m = Mesh::start(opts(2, 1000)).unwrap();
    let enc = encrypted(&m).await;
    let load = Load::start(
        &m,
        &enc,
        &[
            Operation::Encrypt,
            Operation::Decrypt,
            Operation::GetKeyMetadata,
        ],
        6,
    );
    load.advance(200).await;
    tokio::task::block_in_place(|| m.kill_worker(1));
    load.advance(600).await;
    let failures = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed after kill -9: {failures:?}\n{}",
        failures.len(),
        edge_log_lines(&m, &["WARN", "Exception", "retrying"])
    );
    eprintln!(
        "retries: encrypt {} decrypt {} metadata {}",
        metric(&m, "keymesh_edge_worker_retries_total", "\"Encrypt\""),
        metric(&m, "keymesh_edge_worker_retries_total", "\"Decrypt\""),
        metric(&m, "keymesh_edge_worker_retries_total", "GetKeyMetadata")
    );
}

/// The same for the Huawei dialect: encrypt-data and decrypt-data under
/// concurrent load while one of two workers is killed: zero failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_under_huawei_load_fails_nothing() {
    use keymesh_tests::kms::KmsClient;
    use serde_json::json;

    let m = Mesh::start(MeshOptions {
        workers: 2,
        keystores: vec![TENANT_A.into()],
        huawei: Some(HuaweiStore::Sqlite),
        ..MeshOptions::default()
    })
    .unwrap();
    let key_id = KmsClient::aksk(&m, &m.huawei().full_a)
        .create_key(&format!("kill-{}", random_hex(4)))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = KmsClient::aksk(&m, &m.huawei().full_a);
            let (stop, done, key_id) = (Arc::clone(&stop), Arc::clone(&done), key_id.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let text = marker_text(64);
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .post(
                            "encrypt-data",
                            &json!({ "key_id": key_id, "plain_text": text }),
                        )
                        .await;
                    if r.status != 200 {
                        failures.push(format!("encrypt-data: {} {}", r.status, r.text()));
                    } else {
                        let ct = r.str("cipher_text");
                        let d = c.post("decrypt-data", &json!({ "cipher_text": ct })).await;
                        if d.status != 200 {
                            failures.push(format!("decrypt-data: {} {}", d.status, d.text()));
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let advance = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            let target = done.load(Ordering::Relaxed) + n;
            poll_async("Huawei load to advance", WAIT, || async {
                (done.load(Ordering::Relaxed) >= target).then_some(())
            })
            .await
            .unwrap();
        }
    };
    advance(100).await;
    tokio::task::block_in_place(|| m.kill_worker(1));
    advance(300).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed after kill -9: {failures:?}\n{}",
        failures.len(),
        edge_log_lines(&m, &["WARN", "KMS.0", "retrying"])
    );
    eprintln!(
        "retries: encrypt-data {} decrypt-data {}",
        metric(&m, "keymesh_edge_worker_retries_total", "kms_encrypt"),
        metric(&m, "keymesh_edge_worker_retries_total", "kms_decrypt")
    );
    m.assert_no_plaintext_in_logs();
}

/// SIGTERM one of two workers under load of every operation: it reports
/// NOT_SERVING, the edge stops sending to it, it drains and exits, and no
/// request fails (Encrypt included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_worker_under_load_fails_nothing() {
    let m = Mesh::start(opts(2, 1000)).unwrap();
    let enc = encrypted(&m).await;
    let load = Load::start(
        &m,
        &enc,
        &[
            Operation::Encrypt,
            Operation::Decrypt,
            Operation::GetKeyMetadata,
        ],
        6,
    );
    load.advance(200).await;
    let st = tokio::task::block_in_place(|| m.terminate_worker(1));
    assert!(st.is_some_and(|s| s.success()), "worker exit: {st:?}");
    load.advance(600).await;
    let failures = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed around SIGTERM: {failures:?}\n{}",
        failures.len(),
        edge_log_lines(&m, &["WARN", "Exception", "worker error", "DEBUG"])
    );
    let before = per_worker(&m);
    let c = m.client(TENANT_A);
    for _ in 0..20 {
        let r = c
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = per_worker(&m);
    assert_eq!(after[1], before[1], "the drained worker still gets traffic");
}

/// `dns+http://localhost:PORT`: the edge resolves the name and serves
/// through every address it finds.
#[tokio::test]
async fn dns_named_workers_serve() {
    let m = Mesh::start(MeshOptions {
        dns_workers: true,
        ..opts(1, 1000)
    })
    .unwrap();
    let c = m.client(TENANT_A);
    let enc = encrypted(&m).await;
    let d = c
        .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    let h = c
        .health(&HealthRequest::default())
        .await
        .unwrap()
        .parse::<HealthStatus>()
        .unwrap();
    assert!(h.fleet_size >= 1, "{h:?}");
    assert!(
        per_worker(&m)[0] >= 2.0,
        "requests did not go to the resolved address"
    );
}

/// A worker that stops answering while requests queue on it: once the
/// expected wait (its stall so far, expected to last as long again, plus the
/// queue) exceeds the remaining budget, new requests get 429
/// ThrottlingException at once instead of a 503 at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_worker_sheds_with_throttling_not_timeout() {
    let deadline = 1000;
    let m = Mesh::start(opts(1, deadline)).unwrap();
    let enc = encrypted(&m).await;
    m.signal_worker(0, "STOP").unwrap();
    // Steady Decrypt traffic, one request every 50 ms, each on its own
    // connection: the first ones are admitted and queue on the stalled
    // worker (then time out: 503); once the stall has lasted about a budget,
    // the rest are shed at once.
    let shed = Arc::new(AtomicBool::new(false));
    let mut sent = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let give_up = Instant::now() + WAIT;
    while !shed.load(Ordering::Relaxed) && Instant::now() < give_up {
        pace.tick().await;
        let c = xks::XksClient::new(m.client_config(TENANT_A)).unwrap();
        let (enc, shed) = (enc.clone(), Arc::clone(&shed));
        sent.push(tokio::spawn(async move {
            let r = answered_within("Decrypt with the worker stalled", WAIT, async {
                c.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
                    .await
            })
            .await
            .unwrap()
            .unwrap();
            if r.status() == 429 {
                shed.store(true, Ordering::Relaxed);
            }
            r
        }));
    }
    assert!(shed.load(Ordering::Relaxed), "no request was shed");
    let (mut shed_n, mut timed_out) = (0, 0);
    for s in sent {
        let r = s.await.unwrap();
        // The status tells a shed request (429, refused before it queued)
        // from one that waited on the stalled worker (503, its deadline).
        match r.status() {
            429 => {
                assert_xks_error(&r, Operation::Decrypt, 429, "ThrottlingException");
                shed_n += 1;
            }
            503 => timed_out += 1,
            other => panic!(
                "request with a stalled worker: {other} {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    eprintln!("stalled worker: {timed_out} timed out (503), {shed_n} shed (429)");
    assert!(metric(&m, "keymesh_edge_shed_total", "reason=\"queue\"") >= 1.0);
    m.signal_worker(0, "CONT").unwrap();
    let c = m.client(TENANT_A);
    wait_for_encrypt_status(&c, KEY_ED, 200, "served again after SIGCONT", WAIT)
        .await
        .unwrap();
}

/// Kills a child process when dropped (the test may panic).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second edge whose only worker entry is a DNS name with no address:
/// it starts, stays unready, and answers requests at once with 500
/// InternalException (no worker), counted, never hanging or crashing.
#[tokio::test]
async fn dns_name_without_address_fails_fast() {
    let m = Mesh::start(opts(1, 1000)).unwrap();
    let addr_file = m.root().join("edge-nodns.addr");
    let toml: String = m
        .edge_toml()
        .lines()
        .map(|l| {
            if l.starts_with("workers") {
                "workers = [\"dns+http://no-such-worker.invalid:7100\"]".to_owned()
            } else if l.starts_with("addr_file") {
                format!("addr_file = \"{}\"", addr_file.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = m.root().join("edge-nodns.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(m.root().join("logs").join("edge-nodns.log")).unwrap();
    let child = std::process::Command::new(&m.bins.edge)
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut edge = KillOnDrop(child);
    let addr: std::net::SocketAddr = poll("second edge address", WAIT, || {
        std::fs::read_to_string(&addr_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap();
    let mut cfg = m.client_config(TENANT_A);
    cfg.addr = addr;
    cfg.authority = addr.to_string();
    let c = xks::XksClient::new(cfg).unwrap();
    for _ in 0..3 {
        // 500 InternalException (no worker known), not a wait for one until
        // the deadline (503).
        let r = answered_within("GetKeyMetadata with no worker resolved", WAIT, async {
            c.get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                .await
        })
        .await
        .unwrap()
        .unwrap();
        assert_xks_error(&r, Operation::GetKeyMetadata, 500, "InternalException");
        let h = c.health(&HealthRequest::default()).await.unwrap();
        assert_eq!(h.status(), 500, "{}", String::from_utf8_lossy(&h.body));
    }
    assert_eq!(http_get_status(addr, "/readyz"), 503);
    poll("a resolve failure metric", WAIT, || {
        let (_, metrics) = http_request(addr, "GET", "/metrics", &[], b"").ok()?;
        (metrics.contains("keymesh_edge_worker_resolve_failures_total")
            || metrics.contains("keymesh_edge_worker_resolve_empty_total"))
        .then_some(())
    })
    .unwrap();
    assert!(edge.0.try_wait().unwrap().is_none(), "the edge exited");
}
