//! HSM fairness end to end: while RSA-4096 key-pair generations hold the
//! crypto-worker's slow lane (Huawei create-rsa-datakey-pair), XKS Encrypt
//! keeps being served: successes while the generations are in flight and no
//! 429/503 at all. Functional, with no timing bound: "in flight" is read
//! from the worker's own slow-lane gauge and from the generation requests
//! still being unanswered. The latency numbers live in bench/REPORT.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keymesh_tests::huawei::HuaweiStore;
use keymesh_tests::kms::KmsClient;
use keymesh_tests::xks::model::EncryptRequest;
use keymesh_tests::{KEY_ED, Mesh, MeshOptions, TENANT_A, http_request, plaintext, poll};
use serde_json::json;

/// Generations started at once: one runs on the slow lane's one session,
/// the rest wait in (or overflow) its queue.
const GENERATIONS: usize = 4;
/// Most XKS Encrypts sent while the generations run.
const MAX_ENCRYPTS: usize = 200;
/// Generous: a busy shared box may be slow to start generating.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// The value of the worker gauge `name` (no labels), if scraped.
fn gauge(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_request(addr, "GET", "/metrics", &[], b"").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_encrypt_is_served_while_rsa_key_pairs_are_generated() {
    let m = Mesh::start(MeshOptions {
        huawei: Some(HuaweiStore::Sqlite),
        metrics: true,
        ..MeshOptions::default()
    })
    .unwrap();
    let worker_metrics = m.worker_metrics_addrs[0];
    assert_eq!(
        gauge(worker_metrics, "keymesh_worker_slow_lane_sessions"),
        Some(1.0),
        "the worker runs one slow-lane session by default"
    );
    let kms = KmsClient::aksk(&m, &m.huawei().full_a);
    let key_id = kms.create_key("fairness").await;

    let generations: Vec<_> = (0..GENERATIONS)
        .map(|_| {
            let (kms, key_id) = (kms.clone(), key_id.clone());
            tokio::spawn(async move {
                let body = json!({ "key_id": key_id, "key_spec": "RSA_4096" });
                kms.post("create-rsa-datakey-pair", &body).await.status
            })
        })
        .collect();
    // In flight: the worker reports its slow-lane session busy.
    poll("a slow-lane session to be busy", BUSY_WAIT, || {
        (gauge(worker_metrics, "keymesh_worker_slow_lane_sessions_busy")? >= 1.0).then_some(())
    })
    .unwrap();

    let xks = m.client(TENANT_A);
    let (mut sent, mut ok_in_flight, mut refused) = (0, 0, Vec::new());
    while sent < MAX_ENCRYPTS && !generations.iter().all(|g| g.is_finished()) {
        sent += 1;
        let r = xks
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
            .await
            .unwrap();
        match r.status() {
            200 => ok_in_flight += 1,
            s => refused.push((s, String::from_utf8_lossy(&r.body).into_owned())),
        }
    }
    assert!(
        ok_in_flight > 0,
        "no XKS Encrypt succeeded while key pairs were generated ({sent} sent)"
    );
    assert!(
        refused.is_empty(),
        "XKS Encrypt refused during key-pair generation: {refused:?}"
    );

    // Generations either finish, or are shed by the slow lane's bounded queue
    // or deadline with the dialect's answer; never a crash of the mesh.
    for g in generations {
        let status = g.await.unwrap();
        assert!(matches!(status, 200 | 429 | 503), "generation: {status}");
    }
    // The next XKS request still works.
    let r = xks
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    m.assert_no_plaintext_in_logs();
}
