//! Balancing and ejection: power-of-two-choices picking on in-flight
//! requests, and admitting or ejecting a member as its health changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::pool::WorkerPool;
use super::worker::Worker;

/// splitmix64: a cheap, well-mixed random number per pick from one counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl WorkerPool {
    pub(super) fn rebuild_admitted(&self) {
        let _one = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let members = self.members.load();
        let admitted: Vec<_> = members.iter().filter(|w| w.serving()).cloned().collect();
        metrics::gauge!("keymesh_edge_workers", "state" => "known").set(members.len() as f64);
        metrics::gauge!("keymesh_edge_workers", "state" => "admitted").set(admitted.len() as f64);
        self.admitted.store(Arc::new(admitted));
    }

    pub(super) fn set_serving(&self, w: &Worker, ok: bool, why: &'static str) {
        if w.serving.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(worker = %w.endpoint, why, "worker admitted");
            } else {
                tracing::warn!(worker = %w.endpoint, why, "worker ejected");
            }
            metrics::gauge!("keymesh_edge_worker_serving", "worker" => w.endpoint.clone())
                .set(if ok { 1.0 } else { 0.0 });
            self.rebuild_admitted();
        }
    }

    /// Power of two choices among the admitted workers (all members when none
    /// is admitted), never `exclude`. `None` only when there is no candidate.
    pub fn pick(&self, exclude: Option<&Worker>) -> Option<Arc<Worker>> {
        let admitted = self.admitted.load();
        let list = if admitted.is_empty() {
            self.members.load_full()
        } else {
            Arc::clone(&admitted)
        };
        let ok = |w: &Arc<Worker>| exclude.is_none_or(|x| !std::ptr::eq(Arc::as_ptr(w), x));
        let n = list.len();
        match n {
            0 => None,
            1 => list.first().filter(|w| ok(w)).cloned(),
            _ => {
                let r = mix(self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
                let i = (r as usize) % n;
                let mut j = ((r >> 32) as usize) % (n - 1);
                if j >= i {
                    j += 1; // two distinct members
                }
                let (a, b) = (&list[i], &list[j]);
                let chosen = match (ok(a), ok(b)) {
                    (true, true) if b.in_flight() < a.in_flight() => b,
                    (true, _) => a,
                    (false, true) => b,
                    (false, false) => return None,
                };
                Some(Arc::clone(chosen))
            }
        }
    }
}
