#!/usr/bin/env python3
"""Turn bench/run.sh's JSONL into the Markdown tables of bench/REPORT.md.

    python3 bench/report.py bench/results.jsonl > /tmp/tables.md
"""
import json
import sys


def cpu_cols(run):
    by = {c["name"]: c for c in run.get("cpu", [])}
    out = []
    for name in ("edge", "crypto-worker", "rate-limiter", "self"):
        c = by.get(name)
        out.append(f'{c["us_per_request"]:.1f}' if c else "-")
    total = sum(c["us_per_request"] for c in run.get("cpu", []))
    out.append(f"{total:.1f}")
    return out


PROCS = ("edge", "crypto-worker", "rate-limiter", "self")


def pooled(group):
    """One row from several rounds of the same point: throughput and CPU per
    request pooled (sums of requests, seconds and CPU-seconds), latency
    percentiles averaged over the rounds."""
    ok = sum(r["ok"] for r in group)
    elapsed = sum(r["elapsed_s"] for r in group)
    cpu = {}
    for name in PROCS:
        secs = [c["cpu_seconds"] for r in group for c in r.get("cpu", []) if c["name"] == name]
        cpu[name] = sum(secs) * 1e6 / ok if secs and ok else None
    mean = lambda k: sum(r["latency_us"][k] for r in group) / len(group)
    builds = [r["request_build_us"] for r in group if "request_build_us" in r]
    return {
        "rps": ok / elapsed if elapsed else 0.0,
        "p50": mean("p50"), "p99": mean("p99"),
        "errors": sum(r["error_count"] for r in group),
        "cpu": cpu, "total": sum(v for v in cpu.values() if v is not None),
        "build": sum(builds) / len(builds) if builds else None,
        "rounds": len(group),
    }


def kms_table(runs):
    """Huawei KMS runs against XKS Encrypt 32 B at the same concurrency in the
    same bench run (same edge endpoint); runs numbered in file order."""
    closed = [r for r in runs if r["mode"] == "closed"]
    huawei = lambda op: op.startswith("kms-") or op.startswith("csms-")
    kms = [r for r in closed if huawei(r["op"])]
    if not kms:
        return
    order = [r.get("endpoint") for r in runs]
    sessions = sorted({r["endpoint"] for r in kms}, key=order.index)
    print("### Huawei KMS/CSMS dialect against XKS Encrypt (closed loop, same processes, same run)\n")
    print("| run | operation | size | concurrency | rounds | req/s | p50 µs | p99 µs | errors | CPU µs/req edge | worker | limiter | loadgen | total | total vs XKS Encrypt | build+sign µs (loadgen, alone) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    label = {"encrypt": "XKS Encrypt", "kms-encrypt": "encrypt-data", "kms-datakey": "create-datakey",
             "csms-show": "show-secret-version latest"}
    for run, ep in enumerate(sessions, 1):
        mine = [r for r in closed if r["endpoint"] == ep]
        for c in sorted({r["concurrency"] for r in mine if huawei(r["op"])}):
            ref_runs = [r for r in mine if r["op"] == "encrypt" and r.get("size") == 32 and r["concurrency"] == c]
            ref = pooled(ref_runs) if ref_runs else None
            for op in ("encrypt", "kms-encrypt", "kms-datakey", "csms-show"):
                group = [r for r in mine if r["op"] == op and r["concurrency"] == c
                         and (op != "encrypt" or r.get("size") == 32)]
                if not group:
                    continue
                p = pooled(group)
                size = group[0].get("size")
                size = f"{size * 8}-bit" if op == "kms-datakey" else f"{size} B"
                ratio = f'{p["total"] / ref["total"]:.2f}×' if ref and ref["total"] else "-"
                cpu = [f"{p['cpu'][n]:.1f}" if p["cpu"][n] is not None else "-" for n in PROCS]
                build = f'{p["build"]:.1f}' if p["build"] is not None else "-"
                print(f'| {run} | {label[op]} | {size} | {c} | {p["rounds"]} | {p["rps"]:.0f} | {p["p50"]:.0f} | {p["p99"]:.0f} | '
                      f'{p["errors"]} | ' + " | ".join(cpu) + f' | {p["total"]:.1f} | {ratio} | {build} |')
    print()


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    raws = [r for r in runs if r["mode"] == "raw-hsm" and r.get("threads") == 1]
    # The ratio is against the token-object ceiling (what a proxy without key copies gets).
    raw = {r["size"]: r for r in raws if r.get("key", "token") == "token"}
    print("### Raw SoftHSM2 AES-GCM ceiling (direct cryptoki loop, 1 thread)\n")
    print("| size | key | ops/s | p50 µs | p99 µs | CPU µs/op |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in raws:
        lat = r["latency_us"]
        print(f'| {r["size"]} B | {r.get("key", "token")} | {r["throughput_rps"]:.0f} | {lat["p50"]} | {lat["p99"]} | {r["cpu"][0]["us_per_request"]:.1f} |')
    print()
    print("### Closed loop through edge → rate-limiter → crypto-worker\n")
    print("| operation | size | concurrency | req/s | p50 µs | p99 µs | p99.9 µs | errors | e2e/raw | CPU µs/req edge | worker | limiter | loadgen | total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if r["mode"] != "closed":
            continue
        lat = r["latency_us"]
        size = r.get("size")
        ratio = "-"
        if r["op"] in ("encrypt", "decrypt") and size in raw:
            ratio = f'{r["throughput_rps"] / raw[size]["throughput_rps"]:.2f}'
        print(f'| {r["op"]} | {size if size else "-"} | {r["concurrency"]} | {r["throughput_rps"]:.0f} | '
              f'{lat["p50"]} | {lat["p99"]} | {lat["p999"]} | {r["error_count"]} | {ratio} | ' + " | ".join(cpu_cols(r)) + " |")
    print()
    print("### Open loop (latency from the intended send time)\n")
    print("| operation | size | offered req/s | achieved req/s | p50 µs | p99 µs | p99.9 µs | max µs | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if r["mode"] != "open":
            continue
        lat = r["latency_us"]
        print(f'| {r["op"]} | {r.get("size")} | {r["rate"]:.0f} | {r["throughput_rps"]:.0f} | {lat["p50"]} | '
              f'{lat["p99"]} | {lat["p999"]} | {lat["max"]} | {r["error_count"]} |')
    print()
    kms_table(runs)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results.jsonl")
