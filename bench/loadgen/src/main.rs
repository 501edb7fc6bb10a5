//! keymesh-loadgen: load for the edge, and the raw HSM ceiling.
//!
//! `closed` and `open` drive the edge over plain HTTP/1.1 keep-alive
//! connections (one per worker) in either API dialect: XKS operations are
//! signed with SigV4 as AWS KMS does, Huawei KMS and CSMS operations
//! (`kms-encrypt`, `kms-datakey`, `csms-show`) with SDK-HMAC-SHA256 as the
//! Huawei SDKs do; every request is signed afresh. `kms-create-key` and
//! `csms-create-secret` make the Huawei master key and the secret the runs
//! use. `raw-hsm` encrypts straight through PKCS#11 to show what the HSM
//! alone can do. Each run prints one JSON line on stdout (for scripts and
//! bench/REPORT.md) and one human-readable line on stderr. Targets must be
//! loopback and every run is bounded in time.

mod conn;
mod cpu;
mod huawei;
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
use crate::run::{Load, Shared};
use crate::stats::{Stats, Summary};
use crate::xks::{Plan, Target, TargetArgs};

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
        op: Op,
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
        op: Op,
    },
    /// Huawei KMS create-key; prints {"key_id": ...} for the kms-* runs.
    KmsCreateKey(huawei::CreateKeyArgs),
    /// Huawei CSMS create-secret; prints {"secret_id": ...} for csms-show runs.
    CsmsCreateSecret(huawei::CreateSecretArgs),
    /// AES-GCM encrypt loop straight through PKCS#11 (the raw HSM ceiling).
    RawHsm(raw_hsm::RawHsmArgs),
}

/// The operation under load, in either dialect (one flat list of subcommands).
#[derive(Debug, Clone, Subcommand)]
enum Op {
    #[command(flatten)]
    Xks(xks::OpArgs),
    #[command(flatten)]
    Kms(huawei::OpArgs),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Xks(op) => op.name(),
            Op::Kms(op) => op.name(),
        }
    }

    fn size(&self) -> Option<usize> {
        match self {
            Op::Xks(op) => op.size(),
            Op::Kms(op) => op.size(),
        }
    }

    fn dialect(&self) -> &'static str {
        match self {
            Op::Xks(_) => "xks",
            Op::Kms(op) => op.dialect(),
        }
    }
}

/// Requests built and signed in [`build_cost`].
const BUILD_COST_SAMPLES: u32 = 5_000;

/// µs to build and sign one request on one thread, measured before the load
/// starts (on an otherwise idle machine wall time is CPU time). The same
/// work is inside the loadgen CPU column of the run; this isolates it.
fn build_cost(shared: &Shared) -> anyhow::Result<f64> {
    let t0 = std::time::Instant::now();
    for _ in 0..BUILD_COST_SAMPLES {
        std::hint::black_box(shared.request()?);
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(BUILD_COST_SAMPLES);
    Ok((us * 100.0).round() / 100.0)
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

async fn http_run(mode: Mode) -> anyhow::Result<Value> {
    let (target_args, op) = match &mode {
        Mode::Closed { target, op, .. } | Mode::Open { target, op, .. } => (target, op),
        Mode::RawHsm(_) | Mode::KmsCreateKey(_) | Mode::CsmsCreateSecret(_) => {
            anyhow::bail!("not a load mode")
        }
    };
    let load = match op {
        Op::Xks(op) => {
            let target = Target::resolve(target_args).await?;
            let plan = Plan::prepare(&target, op).await?;
            Load::Xks { target, plan }
        }
        Op::Kms(op) => Load::Kms(huawei::Kms::prepare(&target_args.endpoint, op).await?),
    };
    // csms-show: the size is the stored value's, read by the probe.
    let size = match &load {
        Load::Kms(kms) => op.size().or(kms.value_len()),
        Load::Xks { .. } => op.size(),
    };
    let shared = Arc::new(Shared {
        load,
        timeout: Duration::from_millis(target_args.timeout_ms.max(1)),
        seq: AtomicU64::new(0),
    });
    let request_build_us = build_cost(&shared)?;
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
        Mode::RawHsm(_) | Mode::KmsCreateKey(_) | Mode::CsmsCreateSecret(_) => {
            anyhow::bail!("not a load mode")
        }
    };
    if let Value::Object(m) = &mut report {
        m.insert("op".into(), json!(op.name()));
        m.insert("dialect".into(), json!(op.dialect()));
        m.insert("size".into(), json!(size));
        m.insert("request_build_us".into(), json!(request_build_us));
        m.insert("endpoint".into(), json!(target_args.endpoint));
    }
    Ok(report)
}

fn raw_hsm_run(args: &raw_hsm::RawHsmArgs) -> anyhow::Result<Value> {
    check_bounds(args.duration, args.threads.max(args.keygen_threads))?;
    if args.keygen_threads > MAX_CONCURRENCY {
        anyhow::bail!("--keygen-threads must be at most {MAX_CONCURRENCY}");
    }
    let sampler = CpuSampler::start(&[])?;
    let raw_hsm::RawRun {
        stats,
        elapsed,
        keypairs,
    } = raw_hsm::run(args)?;
    Ok(json!({
        "mode": "raw-hsm", "op": "encrypt", "size": args.size, "threads": args.threads,
        "key": if args.session_copy { "session-copy" } else { "token" },
        "keygen_threads": args.keygen_threads, "keygen_bits": args.keygen_bits,
        "keypairs": keypairs,
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
        Mode::KmsCreateKey(args) => {
            let key_id = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(huawei::create_key(&args))?;
            println!("{}", json!({ "key_id": key_id }));
            return Ok(());
        }
        Mode::CsmsCreateSecret(args) => {
            let secret_id = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(huawei::create_secret(&args))?;
            println!("{}", json!({ "secret_id": secret_id, "name": args.name }));
            return Ok(());
        }
        mode => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(http_run(mode))?,
    };
    println!("{report}");
    eprintln!("{}", human(&report));
    Ok(())
}
