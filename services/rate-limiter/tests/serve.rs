//! The real server on an ephemeral port, spoken to with real gRPC clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use keymesh_proto::ratelimit::v1::AcquireRequest;
use keymesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;

const QUOTAS: &str = r#"
[[tenants]]
tenant = "/demo/kms/xks/v1"
rate_per_second = 10
burst = 10
"#;

fn req(tenant: &str, permits: u32) -> AcquireRequest {
    AcquireRequest {
        tenant: tenant.into(),
        operation: "Encrypt".into(),
        permits,
    }
}

#[tokio::test]
async fn acquire_health_and_drain() {
    let common::Running {
        channel,
        clock,
        stop: stop_tx,
        server,
    } = common::start(QUOTAS).await;
    let mut client = RateLimiterClient::new(channel.clone());
    common::assert_serving(&channel, "keymesh.ratelimit.v1.RateLimiter").await;

    let r = client
        .acquire(req("/demo/kms/xks/v1", 8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.granted, r.lease_ttl_ms), (8, 1000));
    let r = client
        .acquire(req("/demo/kms/xks/v1", 8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.granted, 1, "partial lease falls back to one permit");
    client.acquire(req("/demo/kms/xks/v1", 1)).await.unwrap();
    let r = client
        .acquire(req("/demo/kms/xks/v1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.granted, r.retry_after_ms), (0, 100));
    clock.advance(Duration::from_millis(100));
    let r = client
        .acquire(req("/demo/kms/xks/v1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.granted, 1);

    for bad in [req("", 1), req("/t", 0), req("/t", 10_001)] {
        let err = client.acquire(bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    stop_tx.send(()).unwrap();
    // Drain completes once the client's connection goes away.
    drop(client);
    drop(channel);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server drained")
        .unwrap()
        .unwrap();
}

/// The library entry point as `main.rs` uses it: `serve` on a pre-bound
/// `127.0.0.1:0` listener with a hot-reloaded quota file answers, returns
/// `Ok` once its shutdown future resolves, and leaves no background task
/// behind (the quota watcher and the services held the only other handles
/// on the quotas).
#[tokio::test]
async fn serve_shuts_down_cleanly_and_stops_its_tasks() {
    use std::sync::Arc;

    use keymesh_rate_limiter::{Config, serve};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotas.toml");
    std::fs::write(&path, QUOTAS).unwrap();
    let mut config = Config::load(Some(&path)).unwrap();
    config.reload_interval = Duration::from_millis(20);
    let quotas = Arc::clone(&config.quotas);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    common::assert_serving(&channel, "").await;
    let r = RateLimiterClient::new(channel.clone())
        .acquire(req("/demo/kms/xks/v1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.granted, 1);
    assert!(
        Arc::strong_count(&quotas) > 1,
        "the server holds the quotas"
    );

    drop(channel);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returned after shutdown")
        .unwrap()
        .expect("serve ended without error");
    // Aborted tasks let go of what they hold once the runtime drops them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&quotas) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a background task still holds the quotas after serve returned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
