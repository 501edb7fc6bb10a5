//! keymesh-loadgen: load for the XKS edge, and the raw HSM ceiling.
//!
//! `closed` and `open` drive the edge over plain HTTP/1.1 keep-alive
//! connections (one per worker), signing every request with SigV4 as KMS
//! does. `raw-hsm` encrypts straight through PKCS#11 to show what the HSM
//! alone can do. Each run prints one JSON line on stdout (for scripts and
//! bench/REPORT.md) and one human-readable line on stderr. Targets must be
//! loopback and every run is bounded in time.

mod cpu;
mod raw_hsm;
mod run;
mod stats;
mod xks;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::cpu::CpuSampler;
use crate::stats::{Stats, Summary};
use crate::xks::{OpArgs, Plan, Target, TargetArgs};

/// Longest run accepted, in seconds.
const MAX_DURATION_S: f64 = 3_600.0;
/// Most connections / workers / threads.
const MAX_CONCURRENCY: usize = 4_096;
/// Highest open-loop rate.
const MAX_RATE: f64 = 1_000_000.0;

#[derive(Debug, Parser)]
#[command(name = "keymesh-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed loop: `concurrency` workers, each waits for its answer.
    Closed {
        #[arg(long)]
        concurrency: usize,
        /// Seconds.
        #[arg(long)]
        duration: f64,
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        op: OpArgs,
    },
    /// Open loop: `rate` requests/s on schedule; latency from intended send time.
    Open {
        #[arg(long)]
        rate: f64,
        /// Seconds.
        #[arg(long)]
        duration: f64,
        /// Most connections (requests due while all are busy wait for one).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        op: OpArgs,
    },
    /// AES-GCM encrypt loop straight through PKCS#11 (the raw HSM ceiling).
    RawHsm(raw_hsm::RawHsmArgs),
}

fn check_bounds(duration: f64, concurrency: usize) -> anyhow::Result<Duration> {
    if !(duration > 0.0 && duration <= MAX_DURATION_S) {
        anyhow::bail!("--duration must be in (0, {MAX_DURATION_S}] seconds");
    }
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        anyhow::bail!("--concurrency/--threads must be in 1..={MAX_CONCURRENCY}");
    }
    Ok(Duration::from_secs_f64(duration))
}

fn errors_json(stats: &Stats) -> Value {
    json!(stats.errors)
}

fn human(report: &Value) -> String {
    // Strings without JSON quotes, everything else as JSON.
    let get = |path: &[&str]| match path.iter().try_fold(report, |v, k| v.get(*k)) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".to_owned(),
    };
    let mut line = format!(
        "{} {}: {} ok, {} errors, {} req/s; latency µs p50 {} p99 {} p99.9 {} max {}",
        get(&["mode"]),
        get(&["op"]),
        get(&["ok"]),
        get(&["error_count"]),
        get(&["throughput_rps"]),
        get(&["latency_us", "p50"]),
        get(&["latency_us", "p99"]),
        get(&["latency_us", "p999"]),
        get(&["latency_us", "max"]),
    );
    if let Some(cpu) = report.get("cpu").and_then(Value::as_array) {
        for p in cpu {
            line.push_str(&format!(
                "; {}[{}] {:.2} CPU-s {} µs/req",
                p.get("name").and_then(Value::as_str).unwrap_or("?"),
                p.get("pid").cloned().unwrap_or(Value::Null),
                p.get("cpu_seconds").and_then(Value::as_f64).unwrap_or(0.0),
                p.get("us_per_request")
                    .and_then(Value::as_f64)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
    }
    line
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

async fn xks_run(mode: Mode) -> anyhow::Result<Value> {
    let (target_args, op) = match &mode {
        Mode::Closed { target, op, .. } | Mode::Open { target, op, .. } => (target, op),
        Mode::RawHsm(_) => anyhow::bail!("not an XKS mode"),
    };
    let target = Target::resolve(target_args).await?;
    let plan = Plan::prepare(&target, op).await?;
    let shared = Arc::new(run::Shared {
        target,
        plan,
        seq: AtomicU64::new(0),
    });
    let sampler = CpuSampler::start(&target_args.pids)?;
    let mut report = match &mode {
        Mode::Closed {
            concurrency,
            duration,
            ..
        } => {
            let d = check_bounds(*duration, *concurrency)?;
            let (stats, elapsed) = run::closed(Arc::clone(&shared), *concurrency, d).await?;
            json!({
                "mode": "closed", "concurrency": concurrency,
                "elapsed_s": round1(elapsed.as_secs_f64()),
                "ok": stats.ok, "error_count": stats.error_count(), "errors": errors_json(&stats),
                "throughput_rps": round1(stats.ok as f64 / elapsed.as_secs_f64()),
                "latency_us": Summary::of(&stats.latency),
                "cpu": sampler.finish(stats.ok),
            })
        }
        Mode::Open {
            rate,
            duration,
            concurrency,
            ..
        } => {
            let d = check_bounds(*duration, *concurrency)?;
            if !(*rate > 0.0 && *rate <= MAX_RATE) {
                anyhow::bail!("--rate must be in (0, {MAX_RATE}]");
            }
            let (stats, elapsed, outcome) =
                run::open(Arc::clone(&shared), *rate, *concurrency, d).await?;
            json!({
                "mode": "open", "rate": rate, "concurrency": concurrency,
                "elapsed_s": round1(elapsed.as_secs_f64()),
                "scheduled": outcome.scheduled, "unsent": outcome.unsent,
                "ok": stats.ok, "error_count": stats.error_count(), "errors": errors_json(&stats),
                "throughput_rps": round1(stats.ok as f64 / elapsed.as_secs_f64()),
                "latency_us": Summary::of(&stats.latency),
                "service_time_us": Summary::of(&stats.service),
                "cpu": sampler.finish(stats.ok),
            })
        }
        Mode::RawHsm(_) => anyhow::bail!("not an XKS mode"),
    };
    if let Value::Object(m) = &mut report {
        m.insert("op".into(), json!(op.name()));
        m.insert("size".into(), json!(op.size()));
        m.insert("endpoint".into(), json!(target_args.endpoint));
    }
    Ok(report)
}

fn raw_hsm_run(args: &raw_hsm::RawHsmArgs) -> anyhow::Result<Value> {
    check_bounds(args.duration, args.threads)?;
    let sampler = CpuSampler::start(&[])?;
    let (stats, elapsed) = raw_hsm::run(args)?;
    Ok(json!({
        "mode": "raw-hsm", "op": "encrypt", "size": args.size, "threads": args.threads,
        "key": if args.session_copy { "session-copy" } else { "token" },
        "elapsed_s": round1(elapsed.as_secs_f64()),
        "ok": stats.ok, "error_count": stats.error_count(), "errors": errors_json(&stats),
        "throughput_rps": round1(stats.ok as f64 / elapsed.as_secs_f64()),
        "latency_us": Summary::of(&stats.latency),
        "cpu": sampler.finish(stats.ok),
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.mode {
        // PKCS#11 calls block: no async runtime for this mode.
        Mode::RawHsm(args) => raw_hsm_run(&args)?,
        mode => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(xks_run(mode))?,
    };
    println!("{report}");
    eprintln!("{}", human(&report));
    Ok(())
}
