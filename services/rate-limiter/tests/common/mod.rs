//! The real limiter server on an ephemeral port with a fake clock, shared by
//! the integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use governor::clock::FakeRelativeClock;
use keymesh_rate_limiter::{Config, Quotas, serve_with_clock};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub struct Running {
    pub channel: Channel,
    pub clock: FakeRelativeClock,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Serve `quotas` on 127.0.0.1:0 and connect a channel to it.
pub async fn start(quotas: &str) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let clock = FakeRelativeClock::default();
    let config = Config::fixed(Quotas::from_toml(quotas.as_bytes()).unwrap());
    let server = tokio::spawn(serve_with_clock(config, clock.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        channel,
        clock,
        stop,
        server,
    }
}

/// Assert `grpc.health.v1` reports `service` as SERVING.
pub async fn assert_serving(channel: &Channel, service: &str) {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}
