//! Membership and health: where workers come from (static URLs or a DNS
//! name re-resolved on a timer), the prober, and one health Watch per worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::pool::WorkerPool;
use super::source::{Source, serving};
use super::worker::Worker;

/// How long a health probe may take before the worker (or any other gRPC
/// peer probed the same way) counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before re-opening a health Watch that ended or failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);

impl WorkerPool {
    /// Probe every worker once.
    pub async fn probe(&self) {
        let members = self.members.load_full();
        let checks = members
            .iter()
            .map(|w| serving(w.channel.clone(), PROBE_TIMEOUT));
        let results = futures_util::future::join_all(checks).await;
        for (w, ok) in members.iter().zip(results) {
            self.set_serving(w, ok, "health check");
        }
    }

    /// Start the background tasks: the prober (every `probe_interval`), the
    /// DNS resolver (every `resolve_interval`, only with DNS sources) and
    /// one health Watch per worker. The caller owns the returned prober and
    /// resolver and stops them with [`WorkerPool::stop`] (which ends the
    /// watches).
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let (probe_every, resolve_every) = (self.probe_interval, self.resolve_interval);
        for w in self.members.load().iter() {
            self.watch(w);
        }
        let this = Arc::clone(self);
        let mut tasks = vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(probe_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.probe().await;
            }
        })];
        if self.sources.iter().any(|s| matches!(s, Source::Dns { .. })) {
            let this = Arc::clone(self);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(resolve_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    this.resolve(resolve_every).await;
                }
            }));
        }
        tasks
    }

    /// End every health Watch (each holds the pool); the prober and resolver
    /// [`WorkerPool::start`] returned must be aborted first, or the resolver
    /// may start new ones.
    pub fn stop(&self) {
        for (_, task) in self.book().watches.drain() {
            task.abort();
        }
    }

    /// Follow `w`'s health Watch stream. NOT_SERVING ejects it at once; the
    /// stream is then dropped, because an open stream would hold the
    /// worker's graceful drain open (it waits for every stream to finish).
    pub(super) fn watch(self: &Arc<Self>, w: &Arc<Worker>) {
        let (this, w) = (Arc::clone(self), Arc::clone(w));
        let endpoint = w.endpoint.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut client = HealthClient::new(w.channel.clone());
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(resp) = client.watch(req).await {
                    let mut stream = resp.into_inner();
                    while let Ok(Some(update)) = stream.message().await {
                        let ok = update.status() == ServingStatus::Serving;
                        this.set_serving(&w, ok, "health watch");
                        if !ok {
                            break;
                        }
                    }
                }
                tokio::time::sleep(WATCH_RETRY).await;
            }
        });
        if let Some(old) = self.book().watches.insert(endpoint, task.abort_handle()) {
            old.abort();
        }
    }

    /// Re-resolve the DNS sources and update the members: new addresses
    /// become workers (admitted by their first probe or watch answer), gone
    /// ones are dropped. A lookup that fails keeps that source's last good
    /// answer (probes eject any that died); one that returns no address
    /// yields no worker from that name. Both are counted and logged.
    pub async fn resolve(self: &Arc<Self>, timeout: Duration) {
        let mut wanted: Vec<String> = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                Source::Static(url) => wanted.push(url.clone()),
                Source::Dns { host, port } => {
                    let found = tokio::time::timeout(
                        timeout,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await;
                    let addrs = match found {
                        Ok(Ok(it)) => {
                            let mut v: Vec<SocketAddr> = it.collect();
                            v.sort();
                            v.dedup();
                            if v.is_empty() {
                                metrics::counter!("keymesh_edge_worker_resolve_empty_total", "name" => host.clone())
                                    .increment(1);
                                tracing::warn!(name = %host, "worker DNS name resolved to no address");
                            }
                            self.book().last_good.insert(i, v.clone());
                            v
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("keymesh_edge_worker_resolve_failures_total", "name" => host.clone())
                                .increment(1);
                            tracing::warn!(name = %host, error = %e, "worker DNS lookup failed");
                            self.book().last_good.get(&i).cloned().unwrap_or_default()
                        }
                        Err(_) => {
                            metrics::counter!("keymesh_edge_worker_resolve_failures_total", "name" => host.clone())
                                .increment(1);
                            tracing::warn!(name = %host, "worker DNS lookup timed out");
                            self.book().last_good.get(&i).cloned().unwrap_or_default()
                        }
                    };
                    wanted.extend(addrs.iter().map(|a| format!("http://{a}")));
                }
            }
        }
        wanted.dedup();
        self.set_members(&wanted).await;
    }

    pub(super) async fn set_members(self: &Arc<Self>, wanted: &[String]) {
        let current = self.members.load_full();
        if current.len() == wanted.len()
            && current.iter().zip(wanted).all(|(w, u)| &w.endpoint == u)
        {
            return;
        }
        let mut next = Vec::with_capacity(wanted.len());
        let mut fresh = Vec::new();
        for url in wanted {
            if let Some(w) = current.iter().find(|w| &w.endpoint == url) {
                next.push(Arc::clone(w));
                continue;
            }
            match Worker::new(url.clone(), false, self.tls.as_ref()) {
                Ok(w) => {
                    let w = Arc::new(w);
                    tracing::info!(worker = %url, "worker discovered");
                    fresh.push(Arc::clone(&w));
                    next.push(w);
                }
                Err(e) => tracing::warn!(worker = %url, error = %e, "unusable worker address"),
            }
        }
        {
            let mut book = self.book();
            for gone in current.iter().filter(|w| !wanted.contains(&w.endpoint)) {
                tracing::info!(worker = %gone.endpoint, "worker removed");
                if let Some(task) = book.watches.remove(&gone.endpoint) {
                    task.abort();
                }
            }
        }
        self.members.store(Arc::new(next));
        self.rebuild_admitted();
        for w in &fresh {
            self.watch(w);
        }
        // Admit new workers now rather than at the next probe tick.
        let checks = fresh
            .iter()
            .map(|w| serving(w.channel.clone(), PROBE_TIMEOUT));
        let results = futures_util::future::join_all(checks).await;
        for (w, ok) in fresh.iter().zip(results) {
            self.set_serving(w, ok, "first health check");
        }
    }
}
