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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results.jsonl")
