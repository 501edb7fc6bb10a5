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
