#!/usr/bin/env python3
"""Summarise one bench/scenario.sh run as Markdown and check its expectations.

Reads, from the run's output directory: the keymesh-loadgen JSON lines
(encrypt.json, decrypt.json, metadata.json, throttled-<w>.json), the edge's
final /metrics scrape (edge-metrics.txt) and the event log (events.txt).
Exits 1 when an expectation fails: a failed Decrypt or GetKeyMetadata, more
Encrypt failures than the bound, no traffic on the new worker, or a throttled
window without 429s.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if not m or line.startswith("#"):
            continue
        labels = dict(LABEL.findall(m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


def total(series, name: str, **want: str) -> float:
    return sum(v for n, l, v in series if n == name and all(l.get(k) == w for k, w in want.items()))


def load(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", nargs="+", default=[], help="URL=label, in order")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--limiter-mode", default="")
    ap.add_argument("--encrypt-bound", type=int, default=50)
    ap.add_argument("--limiter-killed-at", type=float, default=None,
                    help="with a single limiter (fallback), windows after this second fail open by design")
    a = ap.parse_args()

    series = parse_metrics((a.out / "edge-metrics.txt").read_text())
    failed: list[str] = []

    print(f"Limiter: {a.limiter_mode}\n")
    print("Events:\n")
    for line in (a.out / "events.txt").read_text().splitlines():
        print(f"* {line}")

    print("\n| operation | offered req/s | requests | ok | failures by status | p50 ms | p99 ms | max ms | edge retries |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    ops = {"encrypt": "Encrypt", "decrypt": "Decrypt", "metadata": "GetKeyMetadata"}
    for short, op in ops.items():
        r = load(a.out / f"{short}.json")
        errors = r.get("errors", {})
        n = r["ok"] + r["error_count"]
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"
        lat = r.get("latency_us", {})
        retries = total(series, "keymesh_edge_worker_retries_total", operation=op)
        unsent = f" (+{r['unsent']} unsent)" if r.get("unsent") else ""
        print(
            f"| {op} | {r['rate']:.0f} | {n}{unsent} | {r['ok']} | {errs} | {lat.get('p50', 0) / 1000:.2f} "
            f"| {lat.get('p99', 0) / 1000:.2f} | {lat.get('max', 0) / 1000:.1f} | {retries:.0f} |"
        )
        if op == "Encrypt":
            if r["error_count"] > a.encrypt_bound:
                failed.append(f"Encrypt: {r['error_count']} failures > bound {a.encrypt_bound}")
        elif r["error_count"] or r.get("unsent"):
            failed.append(f"{op}: {r['error_count']} failed, {r.get('unsent', 0)} unsent")

    print("\n| worker | requests routed by the edge (`keymesh_edge_worker_requests_total`) |")
    print("|---|---:|")
    for spec in a.workers:
        url, _, label = spec.partition("=")
        n = total(series, "keymesh_edge_worker_requests_total", worker=url)
        print(f"| {label} | {n:.0f} |")
        if label.endswith("(new)") and n == 0:
            failed.append("the new worker got no traffic")

    print(f"\nThrottled tenant (quota 5 req/s, burst 5), GetKeyMetadata in {a.window} s windows:\n")
    print("| window | requests | 200 | 429 | other failures |")
    print("|---|---:|---:|---:|---|")
    w = 0
    while (p := a.out / f"throttled-{w}.json").exists():
        r = load(p)
        errors = dict(r.get("errors", {}))
        n429 = errors.pop("429", 0)
        n = r["ok"] + r["error_count"]
        other = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"
        fail_open = a.limiter_killed_at is not None and (w + 1) * a.window > a.limiter_killed_at
        note = " (only limiter killed: fail-open expected)" if fail_open else ""
        print(f"| {w * a.window}-{(w + 1) * a.window} s{note} | {n} | {r['ok']} | {n429} | {other} |")
        if n429 == 0 and not fail_open:
            failed.append(f"throttled window {w}: no 429 (quota not enforced)")
        w += 1

    print("\nEdge counters at the end:\n")
    for name in (
        "keymesh_limiter_unavailable_total",
        "keymesh_edge_no_workers_total",
        "keymesh_edge_shed_total",
    ):
        print(f"* `{name}`: {total(series, name):.0f}")
    outcomes = {}
    for n, l, v in series:
        if n == "keymesh_edge_requests_total" and l.get("outcome") not in (None, "success"):
            outcomes[f"{l.get('operation')}/{l.get('outcome')}"] = v
    print(f"* `keymesh_edge_requests_total` not ok: {', '.join(f'{k} {v:.0f}' for k, v in sorted(outcomes.items())) or 'none'}")

    print()
    if failed:
        for f in failed:
            print(f"CHECK FAILED: {f}")
        return 1
    print("All checks passed: no failed Decrypt/GetKeyMetadata, Encrypt failures within the bound, "
          "traffic on the new worker, throttling enforced in every window.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
