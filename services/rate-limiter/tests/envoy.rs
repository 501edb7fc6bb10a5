//! Envoy's RateLimitService on the real server, spoken to with a tonic client
//! generated from the same (Envoy-numbered) protos an ingress would use, and
//! sharing buckets with keymesh's own Acquire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use keymesh_proto::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use keymesh_proto::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use keymesh_proto::envoy::service::ratelimit::v3::RateLimitRequest;
use keymesh_proto::envoy::service::ratelimit::v3::rate_limit_response::Code;
use keymesh_proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use keymesh_proto::ratelimit::v1::AcquireRequest;
use keymesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;

const QUOTAS: &str = r#"
[default]
rate_per_second = 1000
burst = 1000
[[tenants]]
tenant = "/demo/kms/xks/v1"
rate_per_second = 10
burst = 10
[tenants.operations.Encrypt]
rate_per_second = 2
burst = 4
"#;

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

fn request(domain: &str, hits: u32, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: hits,
    }
}

#[tokio::test]
async fn should_rate_limit_shares_buckets_with_acquire() {
    let common::Running {
        channel,
        clock,
        stop: stop_tx,
        server,
    } = common::start(QUOTAS).await;
    let mut envoy = RateLimitServiceClient::new(channel.clone());
    let mut keymesh = RateLimiterClient::new(channel.clone());
    common::assert_serving(&channel, "envoy.service.ratelimit.v3.RateLimitService").await;

    let encrypt = || desc(&[("operation", "Encrypt")]);
    // domain = tenant; hits_addend 0 counts as 1; the status names the limit.
    let r = envoy
        .should_rate_limit(request("/demo/kms/xks/v1", 0, vec![encrypt()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 1);
    let limit = r.statuses[0].current_limit.clone().unwrap();
    assert_eq!(limit.requests_per_unit, 2);
    // The same bucket as keymesh's Acquire: 4 - 1 = 3 left, take 2 here.
    let a = keymesh
        .acquire(AcquireRequest {
            tenant: "/demo/kms/xks/v1".into(),
            operation: "Encrypt".into(),
            permits: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.granted, 2);
    // 1 left: hits_addend 2 is over (and takes nothing), 1 fits.
    let r = envoy
        .should_rate_limit(request("/demo/kms/xks/v1", 2, vec![encrypt()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    // A `tenant` entry overrides the domain.
    let r = envoy
        .should_rate_limit(request(
            "ingress",
            1,
            vec![desc(&[
                ("tenant", "/demo/kms/xks/v1"),
                ("operation", "Encrypt"),
            ])],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);

    // Several descriptors: each is charged; one over → overall OVER_LIMIT.
    let r = envoy
        .should_rate_limit(request(
            "/demo/kms/xks/v1",
            1,
            vec![desc(&[("operation", "Decrypt")]), encrypt()],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let codes: Vec<i32> = r.statuses.iter().map(|s| s.code).collect();
    assert_eq!(codes, vec![Code::Ok as i32, Code::OverLimit as i32]);

    // Arbitrary descriptors map to a bucket of the domain's tenant.
    let r = envoy
        .should_rate_limit(request(
            "/other",
            1,
            vec![desc(&[("remote_address", "10.0.0.1")])],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        1000
    );

    // Refill: 2/s → one permit every 500 ms.
    clock.advance(Duration::from_millis(500));
    let r = envoy
        .should_rate_limit(request("/demo/kms/xks/v1", 1, vec![encrypt()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);

    // Bad requests are INVALID_ARGUMENT and charge nothing.
    let e = envoy
        .should_rate_limit(request("", 1, vec![encrypt()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = envoy
        .should_rate_limit(request("/t", 1, vec![desc(&[("tenant", "/t")])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
