//! Where workers come from (a `workers` entry: a static URL or a DNS name)
//! and the one health check every member and limiter replica gets.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Where workers come from: one `workers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One worker at this URL.
    Static(String),
    /// Every address `host` resolves to, on `port`.
    Dns { host: String, port: u16 },
}

impl Source {
    /// `http(s)://...` or `dns+http://name:port`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        if let Some(rest) = entry.strip_prefix("dns+http://") {
            let authority = rest.trim_end_matches('/');
            let (host, port) = authority
                .rsplit_once(':')
                .ok_or_else(|| format!("{entry:?}: dns+http:// needs name:port"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{entry:?}: bad port {port:?}"))?;
            if host.is_empty() || host.contains(['/', '@', '[', ']']) {
                return Err(format!("{entry:?}: bad host name"));
            }
            return Ok(Self::Dns {
                host: host.to_owned(),
                port,
            });
        }
        if !(entry.starts_with("http://") || entry.starts_with("https://")) {
            return Err(format!(
                "{entry:?}: expected http://host:port or dns+http://name:port"
            ));
        }
        Endpoint::from_shared(entry.to_owned()).map_err(|e| format!("{entry:?}: {e}"))?;
        Ok(Self::Static(entry.to_owned()))
    }
}

/// One `grpc.health.v1` Check: SERVING within `timeout`.
pub async fn serving(channel: Channel, timeout: Duration) -> bool {
    let mut client = HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(timeout);
    matches!(
        tokio::time::timeout(timeout, client.check(req)).await,
        Ok(Ok(resp)) if resp.get_ref().status() == ServingStatus::Serving
    )
}
