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

/// kill -9 one of two workers under Decrypt/GetKeyMetadata load: requests in
/// flight on it and those that still pick it are retried on the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_under_idempotent_load_fails_nothing() {
    let m = Mesh::start(opts(2, 1000)).unwrap();
    let enc = encrypted(&m).await;
    let load = Load::start(
        &m,
        &enc,
        &[Operation::Decrypt, Operation::GetKeyMetadata],
        6,
    );
    load.advance(200).await;
    tokio::task::block_in_place(|| m.kill_worker(1));
    load.advance(600).await;
    let failures = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed after kill -9: {failures:?}",
        failures.len()
    );
    eprintln!(
        "retries: decrypt {} metadata {}",
        metric(&m, "keymesh_edge_worker_retries_total", "Decrypt"),
        metric(&m, "keymesh_edge_worker_retries_total", "GetKeyMetadata")
    );
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

/// A worker that stops answering while requests queue on it: once the queue
/// implies a wait beyond the remaining budget, new requests get 429
/// ThrottlingException at once instead of a 503 at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_worker_sheds_with_throttling_not_timeout() {
    let deadline = 1000;
    let m = Mesh::start(opts(1, deadline)).unwrap();
    let enc = encrypted(&m).await;
    m.signal_worker(0, "STOP").unwrap();
    // Five requests are admitted while the stall is young and queue up.
    let stuck: Vec<_> = (0..5)
        .map(|_| {
            let c = xks::XksClient::new(m.client_config(TENANT_A)).unwrap();
            tokio::spawn(async move {
                c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let c = m.client(TENANT_A);
    // Each probe gives up after 100 ms: an admitted one would sit in the
    // queue until its deadline, a shed one answers at once.
    let shed = poll_async("a 429 while the worker is stalled", WAIT, || async {
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            c.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None)),
        )
        .await
        .ok()?
        .unwrap();
        Some((r, t0.elapsed()))
    })
    .await
    .unwrap();
    assert_xks_error(&shed.0, Operation::Decrypt, 429, "ThrottlingException");
    assert!(shed.1 < Duration::from_millis(100), "{:?}", shed.1);
    for s in stuck {
        let r = s.await.unwrap();
        assert!(
            matches!(r.status(), 503 | 429),
            "queued request: {} {}",
            r.status(),
            String::from_utf8_lossy(&r.body)
        );
    }
    assert!(metric(&m, "keymesh_edge_shed_total", "reason=\"queue\"") >= 1.0);
    m.signal_worker(0, "CONT").unwrap();
    poll_async("served again after SIGCONT", WAIT, || async {
        (c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await
    .unwrap();
}
