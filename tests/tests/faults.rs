//! Dependency failures: stopped, killed and restarted workers, a dead
//! rate-limiter. Every test owns its mesh because it breaks it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keymesh_tests::errors::{assert_error_shape, assert_xks_error};
use keymesh_tests::xks::model::*;
use keymesh_tests::*;

fn opts(deadline_ms: u64) -> MeshOptions {
    MeshOptions {
        keystores: vec![TENANT_A.into()],
        deadline_ms,
        ..MeshOptions::default()
    }
}

/// SIGSTOP the only worker: requests must fail with 503
/// DependencyTimeoutException (the frozen worker never answers, so any
/// answer at all is the edge's deadline at work), then recover after SIGCONT.
#[tokio::test]
async fn stopped_worker_gives_dependency_timeout_within_deadline() {
    let m = Mesh::start(opts(300)).unwrap();
    let c = m.client(TENANT_A);
    let enc = c
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap()
        .parse::<EncryptResponse>()
        .unwrap();
    m.signal_worker(0, "STOP").unwrap();
    for op in [
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::GetKeyMetadata,
    ] {
        let r = answered_within(&format!("{op:?} with the worker frozen"), WAIT, async {
            match op {
                Operation::Encrypt => c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32))).await,
                Operation::Decrypt => {
                    c.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
                        .await
                }
                _ => {
                    c.get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                        .await
                }
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_xks_error(&r, op, 503, "DependencyTimeoutException");
    }
    // GetHealthStatus with the only HSM worker frozen: an error (503/500), or
    // a 200 that does not claim ACTIVE for the frozen worker.
    let h = answered_within("health with the worker frozen", WAIT, async {
        c.health(&HealthRequest::default()).await
    })
    .await
    .unwrap()
    .unwrap();
    if h.status() == 200 {
        let hs = h.parse::<HealthStatus>().unwrap();
        assert!(
            hs.ekm_fleet_details
                .iter()
                .all(|d| d.health_status != "ACTIVE"),
            "a 200 claims the frozen worker ACTIVE: {hs:?}"
        );
    } else {
        assert!(matches!(h.status(), 500 | 503), "health: {}", h.status());
        assert_error_shape(&h, Operation::GetHealthStatus);
    }
    m.signal_worker(0, "CONT").unwrap();
    wait_for_encrypt_status(
        &c,
        KEY_ED,
        200,
        "recovery after SIGCONT",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let d = c
        .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
}

/// kill -9 the worker mid-run: requests fail fast with 500/503 (never hang),
/// /readyz turns 503, and after a restart on the same port everything recovers.
#[tokio::test]
async fn killed_worker_fails_fast_then_recovers_on_restart() {
    let m = Mesh::start(opts(500)).unwrap();
    let c = m.client(TENANT_A);
    let c2 = m.client_h2(TENANT_A);
    let enc = c
        .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
        .await
        .unwrap()
        .parse::<EncryptResponse>()
        .unwrap();
    assert_eq!(m.readyz(), 200);
    // Load in flight while the worker dies.
    let load = {
        let cfg = m.client_config(TENANT_A);
        tokio::spawn(async move {
            let c = xks::XksClient::new(cfg).unwrap();
            let mut statuses = Vec::new();
            for _ in 0..200 {
                match c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32))).await {
                    Ok(r) => {
                        if r.status() != 200 {
                            assert_error_shape(&r, Operation::Encrypt);
                        }
                        statuses.push(r.status());
                    }
                    Err(e) => panic!("transport error while the worker died: {e}"),
                }
            }
            statuses
        })
    };
    tokio::task::yield_now().await;
    m.kill_worker(0);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 500 | 503)),
        "{statuses:?}"
    );

    for op in [
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::GetKeyMetadata,
    ] {
        for client in [&c, &c2] {
            let r = answered_within(&format!("{op:?} with the worker dead"), WAIT, async {
                match op {
                    Operation::Encrypt => {
                        client
                            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
                            .await
                    }
                    Operation::Decrypt => {
                        client
                            .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
                            .await
                    }
                    _ => {
                        client
                            .get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                            .await
                    }
                }
            })
            .await
            .unwrap()
            .unwrap();
            assert!(
                matches!(
                    r.error_name().as_deref(),
                    Some("InternalException" | "DependencyTimeoutException")
                ),
                "{op:?} with the worker dead: {} {}",
                r.status(),
                String::from_utf8_lossy(&r.body)
            );
            assert_error_shape(&r, op);
        }
    }
    poll("readyz 503 with no worker", Duration::from_secs(10), || {
        (m.readyz() == 503).then_some(())
    })
    .unwrap();
    assert_eq!(m.probe("/livez"), 200, "livez stays 200");
    let h = c.health(&HealthRequest::default()).await.unwrap();
    assert!(
        matches!(h.status(), 500 | 503),
        "GetHealthStatus with no worker: {} {:?}",
        h.status(),
        h.body
    );
    assert_error_shape(&h, Operation::GetHealthStatus);

    m.restart_worker(0).unwrap();
    poll("readyz 200 after restart", Duration::from_secs(15), || {
        (m.readyz() == 200).then_some(())
    })
    .unwrap();
    wait_for_encrypt_status(
        &c,
        KEY_ED,
        200,
        "Encrypt after restart",
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert_eq!(
        c2.decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, None))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.health(&HealthRequest::default()).await.unwrap().status(),
        200
    );
}

/// Two workers: killing one keeps the service up; health reports the fleet.
#[tokio::test]
async fn one_of_two_workers_down_keeps_serving() {
    let m = Mesh::start(MeshOptions {
        workers: 2,
        ..opts(500)
    })
    .unwrap();
    let c = m.client(TENANT_A);
    let h = c
        .health(&HealthRequest::default())
        .await
        .unwrap()
        .parse::<HealthStatus>()
        .unwrap();
    assert_eq!(h.ekm_fleet_details.len(), 2, "{h:?}");
    m.kill_worker(1);
    // After at most a few failures, requests are routed to the live worker.
    poll_async(
        "all requests to the survivor",
        Duration::from_secs(10),
        || async {
            for _ in 0..10 {
                if c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
                    .await
                    .ok()?
                    .status()
                    != 200
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(m.readyz(), 200, "one worker suffices for readiness");
    let h = poll_async(
        "health to show the dead worker",
        Duration::from_secs(10),
        || async {
            let r = c.health(&HealthRequest::default()).await.ok()?;
            let h = r.parse::<HealthStatus>().ok()?;
            h.ekm_fleet_details
                .iter()
                .any(|d| d.health_status != "ACTIVE")
                .then_some(h)
        },
    )
    .await;
    assert!(
        h.is_ok(),
        "GetHealthStatus keeps reporting every worker ACTIVE after one died"
    );
}

/// SIGTERM drains the worker; /readyz follows.
#[tokio::test]
async fn terminated_worker_exits_cleanly_and_readyz_follows() {
    let m = Mesh::start(opts(500)).unwrap();
    let st = m.terminate_worker(0);
    assert!(st.is_some(), "worker did not exit within 20 s of SIGTERM");
    assert!(
        st.unwrap().success(),
        "worker exit status after SIGTERM: {st:?}"
    );
    poll("readyz 503", Duration::from_secs(10), || {
        (m.readyz() == 503).then_some(())
    })
    .unwrap();
    m.restart_worker(0).unwrap();
    poll("readyz 200", Duration::from_secs(15), || {
        (m.readyz() == 200).then_some(())
    })
    .unwrap();
}

/// Limiter down with fail-open: requests are still served; readiness reflects it.
/// A 200 is itself the proof of timeliness: had the edge waited on the dead
/// or frozen limiter past the request deadline, it would have answered 503.
#[tokio::test]
async fn limiter_down_fail_open_still_serves() {
    let m = Mesh::start(opts(500)).unwrap();
    let c = m.client(TENANT_A);
    m.kill_limiter();
    for i in 0..20 {
        let r = answered_within("Encrypt with the limiter down", WAIT, async {
            c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32))).await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i} with the limiter down (fail-open): {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Frozen (not just dead) limiter: still served within the deadline.
    m.restart_limiter().unwrap();
    m.signal_limiter("STOP").unwrap();
    for i in 0..5 {
        let r = answered_within("GetKeyMetadata with the limiter frozen", WAIT, async {
            c.get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                .await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i} with the limiter frozen (fail-open)"
        );
    }
    m.signal_limiter("CONT").unwrap();
    poll(
        "readyz 200 with the limiter back",
        Duration::from_secs(10),
        || (m.readyz() == 200).then_some(()),
    )
    .unwrap();
}

/// Limiter down with fail-closed: 503 DependencyTimeoutException (the
/// limiter is frozen, so an answer at all is the deadline at work).
#[tokio::test]
async fn limiter_down_fail_closed_is_dependency_timeout() {
    let m = Mesh::start(MeshOptions {
        limiter_failure_policy: "closed".into(),
        ..opts(400)
    })
    .unwrap();
    let c = m.client(TENANT_A);
    assert_eq!(
        c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32)))
            .await
            .unwrap()
            .status(),
        200
    );
    m.signal_limiter("STOP").unwrap();
    // Leases already taken may still serve a few requests; then 503.
    let r = poll_async(
        "503 with the limiter frozen",
        Duration::from_secs(10),
        || async {
            let r = answered_within("Encrypt with the limiter frozen", WAIT, async {
                c.encrypt(KEY_ED, &EncryptRequest::new(plaintext(32))).await
            })
            .await
            .unwrap()
            .ok()?;
            (r.status() != 200).then_some(r)
        },
    )
    .await
    .unwrap();
    assert_xks_error(&r, Operation::Encrypt, 503, "DependencyTimeoutException");
    m.signal_limiter("CONT").unwrap();
    wait_for_encrypt_status(&c, KEY_ED, 200, "served again", Duration::from_secs(10))
        .await
        .unwrap();
}

/// The edge drains on SIGTERM and exits 0, promptly, even with idle
/// HTTP/1.1 and HTTP/2 keep-alive connections open (the runtime keeps
/// polling the client connections, so they can answer GOAWAY).
#[tokio::test]
async fn edge_sigterm_drains_idle_connections_and_exits_cleanly() {
    let m = Mesh::start(opts(500)).unwrap();
    let c1 = m.client(TENANT_A);
    let c2 = m.client_h2(TENANT_A);
    assert_eq!(
        c1.health(&HealthRequest::default()).await.unwrap().status(),
        200
    );
    assert_eq!(
        c2.health(&HealthRequest::default()).await.unwrap().status(),
        200
    );
    m.signal_edge("TERM").unwrap();
    // Idle connections that never close would hold the edge for its whole
    // 15 s drain timeout; a prompt drain exits at once. 10 s tells them apart
    // with room to spare on a loaded machine.
    poll_async(
        "edge exit before its 15 s drain timeout",
        Duration::from_secs(10),
        || async { (!m.edge_alive()).then_some(()) },
    )
    .await
    .unwrap();
    let st = m.edge_exit_status();
    assert!(
        st.is_none_or(|s| s.success()),
        "edge exit status after SIGTERM: {st:?}"
    );
}
