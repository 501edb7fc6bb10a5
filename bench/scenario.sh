#!/usr/bin/env bash
# Scale and failure under load (issue 3, section 7), as processes on loopback:
# 1 edge, 3 crypto-workers, 2 rate-limiter replicas, steady open-loop load from
# several keymesh-loadgen processes (Encrypt, Decrypt, GetKeyMetadata on a
# tenant with ample quota, GetKeyMetadata on a tenant with a tiny quota), and at
# scripted moments:
#
#   t=10 s  kill -9 worker 0           (in-flight Encrypts may fail: not retryable)
#   t=20 s  SIGTERM worker 1           (NOT_SERVING, drain delay, drain: no failure)
#   t=30 s  start worker 3             (pre-listed in the edge config, see below)
#   t=42 s  kill -9 limiter replica 1
#   t=60 s  load ends
#
# Prints per operation: requests, failures by status, retries; per worker: the
# edge's keymesh_edge_worker_requests_total; how long worker 3 took to get
# traffic; the throttled tenant's 429 share per 10 s window (before and after
# the limiter kill). Checks the expectations and exits 1 if one fails.
#
#   bench/scenario.sh [OUT_DIR]      (default: a temp dir, removed on exit)
#
# Env: LOAD_SECONDS (60), ENCRYPT_RATE / DECRYPT_RATE / METADATA_RATE (req/s,
#      600 / 600 / 300), THROTTLED_RATE (50), ENCRYPT_FAILURE_BOUND (50),
#      SKIP_BUILD=1 to use the existing release binaries.
#
# New worker: the edge's static `workers` list already names worker 3's
# address. Until something listens there, the edge's 1 s health probe ejects it
# (a request that picked it in the first second fails to connect, which is
# provably unsent and retried, Encrypt included); once worker 3 answers SERVING
# it is admitted. That is the static-list equivalent of a new pod appearing
# behind a `dns+http://` headless-Service name, without needing several
# loopback addresses for one DNS name.
#
# Limiter replicas: the edge is started with `limiters = [..]` (two replicas).
# An edge built before that field existed refuses the config; the script then
# falls back to one `limiter`, prints a NOTE and labels the report (the limiter
# kill then shows fail-open for every tenant, not a moved share).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${LOAD_SECONDS:-60}
ENC_RATE=${ENCRYPT_RATE:-600}
DEC_RATE=${DECRYPT_RATE:-600}
META_RATE=${METADATA_RATE:-300}
THR_RATE=${THROTTLED_RATE:-50}
ENC_BOUND=${ENCRYPT_FAILURE_BOUND:-50}
# Event times scale with LOAD (defaults above are for 60 s).
T_KILL_WORKER=$((LOAD * 10 / 60))
T_TERM_WORKER=$((LOAD * 20 / 60))
T_NEW_WORKER=$((LOAD * 30 / 60))
T_KILL_LIMITER=$((LOAD * 42 / 60))
WINDOW=$((LOAD / 6))

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" \
    -p keymesh-edge -p keymesh-crypto-worker -p keymesh-rate-limiter -p keymeshctl -p keymesh-loadgen
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ -n "${1:-}" ]; then
  DIR=$1; mkdir -p "$DIR"; KEEP=1
else
  DIR=$(mktemp -d); KEEP=0
fi
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$KEEP" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR/tokens" "$DIR/out"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$DIR" >"$DIR/softhsm2.conf"
export SOFTHSM2_CONF=$DIR/softhsm2.conf
export KEYMESH_PIN=scenario-pin-1234
export KEYMESH_KEYSTORES_FILE=$DIR/keystores.json
export KEYMESH_KEY_STATUS_FILE=$DIR/key-status.json
export RUST_LOG=${RUST_LOG:-info}
# Nine processes on this machine's cores: one runtime thread each (REPORT.md).
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}

TENANT=/scenario/kms/xks/v1
THROTTLED=/throttled/kms/xks/v1
"$BIN/keymeshctl" token init --so-pin scenario-so-5678 >/dev/null
"$BIN/keymeshctl" key create scenario-key >/dev/null
"$BIN/keymeshctl" credential create --uri-path "$TENANT" --console-config "$DIR/tenant.json" >/dev/null
"$BIN/keymeshctl" credential create --uri-path "$THROTTLED" --console-config "$DIR/throttled.json" >/dev/null
"$BIN/keymeshctl" key assign scenario-key --keystore "$TENANT" --keystore "$THROTTLED" >/dev/null

# Ample quota for the main tenant; 5 req/s for the throttled one. Both limiter
# replicas read the same file (each owns a share of the buckets).
cat >"$DIR/quotas.toml" <<EOF
[default]
rate_per_second = 1000000
burst = 1000000

[[tenants]]
tenant = "$THROTTLED"
rate_per_second = 5
burst = 5
EOF

# Mesh mTLS as in production: a CA and one certificate per service identity.
"$BIN/keymeshctl" pki init --dir "$DIR/pki" >/dev/null
mesh_tls() { # service
  echo --grpc-tls-cert "$DIR/pki/$1.pem" --grpc-tls-key "$DIR/pki/$1.key" --grpc-tls-ca "$DIR/pki/ca.pem"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { # path pid name
  for _ in $(seq 300); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited; log:" >&2; tail -20 "$DIR/$3.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "timeout waiting for $1" >&2; exit 1
}

declare -A WPID WADDR
start_worker() { # index [port]
  local i=$1 port=${2:-0}
  "$BIN/crypto-worker" --listen "127.0.0.1:$port" --addr-file "$DIR/worker$i.addr" \
    --worker-id "scenario-$i" --sessions 1 $(mesh_tls crypto-worker) 2>"$DIR/worker$i.log" &
  WPID[$i]=$!; PIDS+=($!)
  wait_file "$DIR/worker$i.addr" "$!" "worker$i"
  WADDR[$i]=$(cat "$DIR/worker$i.addr")
}
declare -A LPID LADDR
for i in 0 1; do
  "$BIN/rate-limiter" --listen 127.0.0.1:0 --addr-file "$DIR/limiter$i.addr" --config "$DIR/quotas.toml" \
    $(mesh_tls rate-limiter) 2>"$DIR/limiter$i.log" &
  LPID[$i]=$!; PIDS+=($!)
  wait_file "$DIR/limiter$i.addr" "$!" "limiter$i"
  LADDR[$i]=$(cat "$DIR/limiter$i.addr")
done
for i in 0 1 2; do start_worker "$i"; done
NEW_PORT=$(free_port)
WADDR[3]=127.0.0.1:$NEW_PORT
ADMIN=127.0.0.1:$(free_port)

# The edge: try two limiter replicas first, fall back to one.
edge_conf() { # limiter lines
  cat <<EOF
listen = "127.0.0.1:0"
addr_file = "$DIR/edge.addr"
admin_listen = "$ADMIN"
workers = ["http://${WADDR[0]}", "http://${WADDR[1]}", "http://${WADDR[2]}", "http://${WADDR[3]}"]
$1
keystores_file = "$DIR/keystores.json"

[grpc_tls]
cert_file = "$DIR/pki/edge.pem"
key_file = "$DIR/pki/edge.key"
ca_file = "$DIR/pki/ca.pem"
EOF
}
start_edge() {
  rm -f "$DIR/edge.addr"
  "$BIN/edge" --config "$DIR/edge.toml" 2>"$DIR/edge.log" &
  EDGE_PID=$!
  for _ in $(seq 100); do
    [ -s "$DIR/edge.addr" ] && { PIDS+=($EDGE_PID); return 0; }
    kill -0 "$EDGE_PID" 2>/dev/null || { wait "$EDGE_PID" 2>/dev/null || true; return 1; }
    sleep 0.05
  done
  return 1
}
LIMITER_MODE="2 replicas (limiters = [..])"
edge_conf "limiters = [\"http://${LADDR[0]}\", \"http://${LADDR[1]}\"]" >"$DIR/edge.toml"
if ! start_edge; then
  if grep -q "limiters" "$DIR/edge.log"; then
    echo "NOTE: this edge does not accept 'limiters' yet; falling back to ONE limiter replica" >&2
    LIMITER_MODE="1 replica (fallback: edge has no 'limiters' support yet); replica 1 idle"
    edge_conf "limiter = \"http://${LADDR[0]}\"" >"$DIR/edge.toml"
    KILL_LIMITER=0
    start_edge || { tail -20 "$DIR/edge.log" >&2; exit 1; }
  else
    tail -20 "$DIR/edge.log" >&2; exit 1
  fi
else
  KILL_LIMITER=1
fi
EDGE=http://$(cat "$DIR/edge.addr")

# Scraped from the edge's admin listener (admin_listen): plain HTTP, probes
# and metrics only.
metrics() { curl -sf "http://$ADMIN/metrics" || true; }
worker_count() { # address → keymesh_edge_worker_requests_total for it (0 if absent)
  local m; m=$(metrics)
  awk -v w="worker=\"http://$1\"" 'index($0, "keymesh_edge_worker_requests_total{") == 1 && index($0, w) { print $NF; f = 1 } END { if (!f) print 0 }' <<<"$m"
}
# Ready: a worker admitted; and worker 3 (not running) ejected by its first probe.
for _ in $(seq 100); do
  m=$(metrics)
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/readyz")" = 200 ] &&
    grep -qF "keymesh_edge_worker_serving{worker=\"http://${WADDR[3]}\"} 0" <<<"$m" && break
  sleep 0.1
done

LG=$BIN/keymesh-loadgen
COMMON=(--endpoint "$EDGE" --key-id scenario-key --timeout-ms 2000)
# Warm-up: connections, key caches, quota leases (not recorded).
"$LG" closed --concurrency 4 --duration 1 "${COMMON[@]}" --console-config "$DIR/tenant.json" encrypt --size 32 >/dev/null 2>&1

echo "==> load ${LOAD}s: Encrypt ${ENC_RATE}/s, Decrypt ${DEC_RATE}/s, GetKeyMetadata ${META_RATE}/s (+ throttled tenant ${THR_RATE}/s); limiter: $LIMITER_MODE" >&2
T0=$(date +%s.%N)
LOADS=()
for spec in "encrypt:$ENC_RATE:encrypt --size 32" "decrypt:$DEC_RATE:decrypt --size 32" "metadata:$META_RATE:metadata"; do
  name=${spec%%:*}; rest=${spec#*:}; rate=${rest%%:*}; cmd=${rest#*:}
  # shellcheck disable=SC2086
  "$LG" open --rate "$rate" --duration "$LOAD" --concurrency 32 "${COMMON[@]}" \
    --console-config "$DIR/tenant.json" $cmd >"$DIR/out/$name.json" 2>"$DIR/out/$name.err" &
  LOADS+=($!); PIDS+=($!)
done
# The throttled tenant in consecutive windows, so its 429 share is visible
# before and after the limiter kill.
(
  for w in $(seq 0 5); do
    "$LG" open --rate "$THR_RATE" --duration "$WINDOW" --concurrency 4 "${COMMON[@]}" \
      --console-config "$DIR/throttled.json" metadata >"$DIR/out/throttled-$w.json" 2>/dev/null
  done
) &
LOADS+=($!); PIDS+=($!)

at() { # wait until T0 + $1 seconds
  local now; now=$(date +%s.%N)
  local d; d=$(python3 -c "print(max(0.0, $T0 + $1 - $now))")
  sleep "$d"
}
elapsed() { python3 -c "print(f'{$(date +%s.%N) - $T0:.1f}')"; }
EVENTS=$DIR/out/events.txt
: >"$EVENTS"

at "$T_KILL_WORKER"
kill -KILL "${WPID[0]}"; wait "${WPID[0]}" 2>/dev/null || true
echo "t=$(elapsed)s kill -9 worker 0 (${WADDR[0]})" | tee -a "$EVENTS" >&2

at "$T_TERM_WORKER"
echo "t=$(elapsed)s SIGTERM worker 1 (${WADDR[1]})" | tee -a "$EVENTS" >&2
kill -TERM "${WPID[1]}"
st=0; wait "${WPID[1]}" || st=$?
echo "t=$(elapsed)s worker 1 exited with status $st" | tee -a "$EVENTS" >&2

at "$T_NEW_WORKER"
before=$(worker_count "${WADDR[3]}")
start_worker 3 "$NEW_PORT"
echo "t=$(elapsed)s worker 3 serving (${WADDR[3]})" | tee -a "$EVENTS" >&2
t_up=$(date +%s.%N); took=none
for _ in $(seq 100); do
  if [ "$(worker_count "${WADDR[3]}")" != "$before" ]; then
    took=$(python3 -c "print(f'{$(date +%s.%N) - $t_up:.2f}')"); break
  fi
  sleep 0.1
done
echo "t=$(elapsed)s worker 3 first request after ${took}s" | tee -a "$EVENTS" >&2

at "$T_KILL_LIMITER"
if [ "$KILL_LIMITER" = 1 ]; then
  kill -KILL "${LPID[1]}"; wait "${LPID[1]}" 2>/dev/null || true
  echo "t=$(elapsed)s kill -9 limiter replica 1 (${LADDR[1]})" | tee -a "$EVENTS" >&2
else
  kill -KILL "${LPID[0]}"; wait "${LPID[0]}" 2>/dev/null || true
  echo "t=$(elapsed)s kill -9 the only limiter (${LADDR[0]}; fallback mode)" | tee -a "$EVENTS" >&2
  FALLBACK_KILLED_AT=$T_KILL_LIMITER
fi

for p in "${LOADS[@]}"; do wait "$p"; done
metrics >"$DIR/out/edge-metrics.txt"

python3 "$ROOT/bench/scenario_report.py" "$DIR/out" \
  --workers "http://${WADDR[0]}=0 (kill -9)" "http://${WADDR[1]}=1 (SIGTERM)" "http://${WADDR[2]}=2" "http://${WADDR[3]}=3 (new)" \
  --window "$WINDOW" --limiter-mode "$LIMITER_MODE" --encrypt-bound "$ENC_BOUND" \
  ${FALLBACK_KILLED_AT:+--limiter-killed-at "$FALLBACK_KILLED_AT"}
