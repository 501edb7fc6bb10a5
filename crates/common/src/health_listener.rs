//! The plaintext, health-only gRPC listener (`--health-listen`).
//!
//! With mTLS on the service port, the kubelet's gRPC probe (which presents no
//! client certificate) cannot reach `grpc.health.v1` there. This second
//! listener serves that one service and nothing else, from the same health
//! reporter, so probes still see the real (deep) health and NOT_SERVING
//! during a drain, while no HSM or quota RPC is reachable without the mesh
//! identity.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::net::nodelay_incoming;

/// A running health-only server; [`HealthListener::stop`] ends it.
#[derive(Debug)]
pub struct HealthListener {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serve `health` (a clone of the main server's health service) on
/// `listener` until stopped.
pub fn spawn<T: Health>(listener: TcpListener, health: HealthServer<T>) -> HealthListener {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(nodelay_incoming(listener), async {
                // A dropped sender stops it too.
                let _ = stopped.await;
            })
            .await
    });
    HealthListener { stop, task }
}

/// Bind `addr` (when `--health-listen` is set) and serve `health` there:
/// the one start-up path of every service's health-only port.
pub async fn start<T: Health>(
    addr: Option<std::net::SocketAddr>,
    health: HealthServer<T>,
) -> anyhow::Result<Option<HealthListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = crate::net::bind(addr, None).await?;
    tracing::info!(addr = %listener.local_addr()?, "plaintext health-only listener");
    Ok(Some(spawn(listener, health)))
}

impl HealthListener {
    /// Stop accepting, let open probes finish, and report a serve error.
    pub async fn stop(self) -> anyhow::Result<()> {
        // Err only when the server already ended; its result says why.
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}
