//! CPU time of processes, from `/proc/<pid>/stat`.
//!
//! Throughput alone hides where the cost sits; CPU-seconds per process divided
//! by requests served gives the µs each hop spends per request, which is what
//! a capacity plan needs.

use std::collections::BTreeMap;

use serde::Serialize;

/// Kernel clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of
/// utime/stime in `/proc/<pid>/stat`.
#[allow(unsafe_code)]
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes a plain integer name, touches no memory we own
    // and is thread-safe; an unknown name returns -1, handled below.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        // USER_HZ has been 100 on every mainstream Linux ABI.
        100.0
    }
}

/// utime + stime of `pid` in clock ticks.
pub fn ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
}

/// Fields after the command name (which may itself contain spaces and
/// parentheses, hence the search for the *last* ')'): state is field 3,
/// utime field 14, stime field 15.
fn parse_stat(stat: &str) -> anyhow::Result<u64> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow::anyhow!("malformed /proc stat line"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let v = fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("/proc stat line has no field {n}"))?;
        Ok(v.parse()?)
    };
    Ok(field(14)? + field(15)?)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// CPU figures of one process over a run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUsage {
    pub pid: u32,
    pub name: String,
    pub cpu_seconds: f64,
    /// CPU µs per successful request (null when none succeeded).
    pub us_per_request: Option<f64>,
}

/// Start-of-run tick counts for a set of processes (the load generator's own
/// process included, reported as `self`).
#[derive(Debug)]
pub struct CpuSampler {
    hz: f64,
    start: BTreeMap<u32, (String, u64)>,
}

impl CpuSampler {
    pub fn start(pids: &[u32]) -> anyhow::Result<Self> {
        let mut start = BTreeMap::new();
        for &pid in pids {
            start.insert(pid, (comm(pid), ticks(pid)?));
        }
        start.insert(
            std::process::id(),
            ("self".to_owned(), ticks(std::process::id())?),
        );
        Ok(Self {
            hz: clock_ticks_per_second(),
            start,
        })
    }

    /// Usage since `start`; a process that has exited is reported with what
    /// it had used at the start (zero), never fails the run.
    pub fn finish(&self, ok_requests: u64) -> Vec<CpuUsage> {
        self.start
            .iter()
            .map(|(&pid, (name, t0))| {
                let t1 = ticks(pid).unwrap_or(*t0);
                let cpu_seconds = t1.saturating_sub(*t0) as f64 / self.hz;
                CpuUsage {
                    pid,
                    name: name.clone(),
                    cpu_seconds,
                    us_per_request: (ok_requests > 0)
                        .then(|| cpu_seconds * 1e6 / ok_requests as f64),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line =
            "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line).unwrap(), 267);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(ticks(std::process::id()).is_ok());
        assert!(clock_ticks_per_second() > 0.0);
    }
}
