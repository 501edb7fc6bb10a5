//! The pool's unit tests: parsing, queue estimates, P2C, retry evidence
//! and DNS discovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use keymesh_proto::crypto::v1::crypto_worker_client::CryptoWorkerClient;

use crate::*;

fn pool(urls: &[&str]) -> Arc<WorkerPool> {
    Arc::new(
        WorkerPool::new(PoolConfig {
            workers: urls.iter().map(|s| (*s).to_owned()).collect(),
            probe_interval: Duration::from_secs(1),
            resolve_interval: Duration::from_secs(5),
            tls: None,
        })
        .unwrap(),
    )
}

#[test]
fn sources_parse() {
    assert_eq!(
        Source::parse("dns+http://workers.ns.svc:7100"),
        Ok(Source::Dns {
            host: "workers.ns.svc".into(),
            port: 7100
        })
    );
    assert!(matches!(
        Source::parse("http://10.0.0.1:7100"),
        Ok(Source::Static(_))
    ));
    assert!(Source::parse("dns+http://workers").is_err());
    assert!(Source::parse("dns+http://:7100").is_err());
    assert!(Source::parse("tcp://x:1").is_err());
}

#[tokio::test]
async fn idle_worker_has_no_queue_and_a_stalled_one_grows() {
    let w = Worker::new("http://127.0.0.1:1".into(), true, None).unwrap();
    assert_eq!(w.queue_wait(1_000_000), Duration::ZERO);
    // Healthy: answers every 100 µs while busy.
    for k in 0..20u64 {
        let g = w.begin(k * 100);
        w.answered(k * 100 + 100);
        drop(g);
    }
    let held: Vec<_> = (0..32).map(|_| w.begin(2_000)).collect();
    // Just after the burst: 32 × ~100 µs.
    assert!(w.queue_wait(2_050) < Duration::from_millis(4));
    // A 20 ms scheduling hiccup with 32 queued is not a 640 ms queue.
    assert!(w.queue_wait(22_000) < Duration::from_millis(30));
    // The worker stops answering: 300 ms without progress.
    let stalled = w.queue_wait(302_000);
    assert!(stalled >= Duration::from_millis(300), "{stalled:?}");
    // An answer restarts the clock.
    w.answered(302_100);
    assert!(w.queue_wait(302_200) < Duration::from_millis(100));
    drop(held);
    assert_eq!(w.in_flight(), 0);
    assert_eq!(w.queue_wait(400_000), Duration::ZERO);
}

#[tokio::test]
async fn p2c_prefers_the_less_loaded_and_honours_exclude() {
    let p = pool(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
    let members = p.members();
    let (a, b) = (&members[0], &members[1]);
    let _busy: Vec<_> = (0..3).map(|_| a.begin(0)).collect();
    for _ in 0..50 {
        let w = p.pick(None).unwrap();
        assert!(Arc::ptr_eq(&w, b));
    }
    assert!(Arc::ptr_eq(&p.pick(Some(b)).unwrap(), a));
    // Ejected workers are skipped while another is admitted.
    p.set_serving(b, false, "test");
    assert!(Arc::ptr_eq(&p.pick(None).unwrap(), a));
    // None admitted: any member is tried.
    p.set_serving(a, false, "test");
    assert!(p.pick(None).is_some());
    let single = pool(&["http://127.0.0.1:1"]);
    let only = single.members()[0].clone();
    assert!(single.pick(Some(&only)).is_none());
}

#[tokio::test]
async fn connect_refused_is_provably_unsent() {
    // Bind then drop a listener: the port refuses connections.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let ch = channel(&format!("http://{addr}")).unwrap();
    let mut c = CryptoWorkerClient::new(ch);
    let s = c
        .get_key_metadata(keymesh_proto::crypto::v1::GetKeyMetadataRequest { key_id: "k".into() })
        .await
        .unwrap_err();
    assert!(is_transport_failure(&s), "{s:?}");
    assert!(never_sent(&s), "{s:?}");
    // A worker's own UNAVAILABLE-less application error is neither.
    let app = tonic::Status::with_details(tonic::Code::Internal, "x", vec![8u8, 1].into());
    assert!(!is_transport_failure(&app));
    assert!(!never_sent(&app));
    let timeout = tonic::Status::deadline_exceeded("late");
    assert!(!is_transport_failure(&timeout));
}

#[test]
fn side_effect_free_rpcs_retry_on_any_worker_failure() {
    use WorkerRpc::*;
    let all = [
        XksGetKeyMetadata,
        XksEncrypt,
        XksDecrypt,
        VaultGenerateKey,
        VaultEncrypt,
        VaultDecrypt,
        VaultReEncrypt,
        VaultDataKey,
        VaultDataKeyPair,
        VaultRandom,
    ];
    // A reset after the request may have been processed: an I/O error
    // as the source, not provably unsent.
    let reset = tonic::Status::from_error(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    assert!(is_transport_failure(&reset) && !never_sent(&reset));
    // A worker that says UNAVAILABLE itself (with an ErrorInfo).
    let unavailable =
        tonic::Status::with_details(tonic::Code::Unavailable, "x", vec![8u8, 1].into());
    let app = tonic::Status::with_details(tonic::Code::NotFound, "x", vec![8u8, 1].into());
    let late = tonic::Status::deadline_exceeded("late");
    for rpc in all {
        assert_eq!(rpc.retry(), Retry::SideEffectFree, "{rpc:?}");
        assert!(rpc.may_retry(&reset), "{rpc:?}");
        assert!(rpc.may_retry(&unavailable), "{rpc:?}");
        assert!(!rpc.may_retry(&app), "{rpc:?}: an answer is final");
        assert!(!rpc.may_retry(&late), "{rpc:?}: no budget left");
    }
}

#[tokio::test]
async fn dns_name_without_address_yields_no_worker() {
    let p = pool(&["dns+http://no-such-worker.invalid:7100"]);
    p.resolve(Duration::from_secs(5)).await;
    assert!(p.members().is_empty());
    assert!(p.pick(None).is_none());
    let p = pool(&["dns+http://localhost:7100"]);
    p.resolve(Duration::from_secs(5)).await;
    assert!(
        p.members()
            .iter()
            .any(|w| w.endpoint == "http://127.0.0.1:7100"),
        "{:?}",
        p.members()
    );
}
