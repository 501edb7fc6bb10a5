#!/usr/bin/env bash
# Benchmark matrix for bench/REPORT.md: a throwaway SoftHSM2 token, the three
# services (release builds) on loopback, keymesh-loadgen runs, one JSON line
# per run appended to $OUT. Everything lives in a temp dir removed on exit.
#
#   bench/run.sh [OUT=bench/results.jsonl] [DURATION=10]
#
# Env: WORKER_SESSIONS (default 1: SoftHSM2 serialises sessions inside one process), SIZES (default "32 4300"),
#      CONCURRENCY (default "1 8 32 64"), RATES (open loop, default "1800").
# bench/report.py turns the JSONL into the tables of bench/REPORT.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/results.jsonl}
DURATION=${2:-10}
SESSIONS=${WORKER_SESSIONS:-1}
SIZES=${SIZES:-"32 4300"}
CONCURRENCY=${CONCURRENCY:-"1 8 32 64"}
RATES=${RATES:-"1800"}

cargo build --release --manifest-path "$ROOT/Cargo.toml" \
  -p keymesh-edge -p keymesh-crypto-worker -p keymesh-rate-limiter -p keymeshctl -p keymesh-loadgen
BIN=$ROOT/target/release

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

mkdir "$DIR/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$DIR" >"$DIR/softhsm2.conf"
export SOFTHSM2_CONF=$DIR/softhsm2.conf
export KEYMESH_PIN=bench-pin-1234
export KEYMESH_KEYSTORES_FILE=$DIR/keystores.json
export KEYMESH_KEY_STATUS_FILE=$DIR/key-status.json
# Audit logging stays on (info): a production edge writes one line per request.
export RUST_LOG=info
# One runtime thread per service: all processes share two cores (see REPORT.md).
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}

"$BIN/keymeshctl" token init --so-pin bench-so-5678 >/dev/null
"$BIN/keymeshctl" key create bench-key >/dev/null
"$BIN/keymeshctl" credential create --uri-path /demo/kms/xks/v1 --console-config "$DIR/console.json" >/dev/null

# Quotas far above what one machine can drive: the limiter is measured, not binding.
printf '[default]\nrate_per_second = 1000000\nburst = 1000000\n' >"$DIR/quotas.toml"

wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "timeout waiting for $1" >&2; exit 1; }

"$BIN/crypto-worker" --listen 127.0.0.1:0 --addr-file "$DIR/worker.addr" --sessions "$SESSIONS" 2>"$DIR/worker.log" &
PIDS+=($!); WORKER_PID=$!
"$BIN/rate-limiter" --listen 127.0.0.1:0 --addr-file "$DIR/limiter.addr" --config "$DIR/quotas.toml" 2>"$DIR/limiter.log" &
PIDS+=($!); LIMITER_PID=$!
wait_file "$DIR/worker.addr"; wait_file "$DIR/limiter.addr"

cat >"$DIR/edge.toml" <<EOF
listen = "127.0.0.1:0"
addr_file = "$DIR/edge.addr"
workers = ["http://$(cat "$DIR/worker.addr")"]
limiter = "http://$(cat "$DIR/limiter.addr")"
keystores_file = "$DIR/keystores.json"
EOF
"$BIN/edge" --config "$DIR/edge.toml" 2>"$DIR/edge.log" &
PIDS+=($!); EDGE_PID=$!
wait_file "$DIR/edge.addr"

COMMON=(--endpoint "http://$(cat "$DIR/edge.addr")" --console-config "$DIR/console.json"
        --key-id bench-key --pids "$EDGE_PID,$WORKER_PID,$LIMITER_PID")
LG=$BIN/keymesh-loadgen

# Warm-up (connections, key handle caches), not recorded.
"$LG" closed --concurrency 4 --duration 2 "${COMMON[@]}" encrypt --size 32 >/dev/null

# The raw SoftHSM2 ceiling, measured in the same run on the same token.
for size in $SIZES; do
  "$LG" raw-hsm --key-id bench-key --size "$size" --threads 1 --duration "$DURATION" >>"$OUT"
  "$LG" raw-hsm --key-id bench-key --size "$size" --threads 1 --duration "$DURATION" --session-copy >>"$OUT"
done
for size in $SIZES; do
  for c in $CONCURRENCY; do
    "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" encrypt --size "$size" >>"$OUT"
  done
  for r in $RATES; do
    "$LG" open --rate "$r" --duration "$DURATION" "${COMMON[@]}" encrypt --size "$size" >>"$OUT"
  done
done
for c in $CONCURRENCY; do
  "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" decrypt --size 32 >>"$OUT"
done
for c in $CONCURRENCY; do
  "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" health >>"$OUT"
done
"$LG" closed --concurrency 32 --duration "$DURATION" "${COMMON[@]}" metadata >>"$OUT"

echo "results appended to $OUT" >&2
