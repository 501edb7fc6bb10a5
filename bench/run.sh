#!/usr/bin/env bash
# Benchmark matrix for bench/REPORT.md: a throwaway SoftHSM2 token and SQLite
# store, the three services (release builds) on loopback, the edge serving
# both XKS and the Huawei KMS dialect ([huawei]), keymesh-loadgen runs, one
# JSON line per run appended to $OUT. Everything lives in a temp dir removed
# on exit.
#
#   bench/run.sh [OUT=bench/results.jsonl] [DURATION=10]
#
# Env: SUITE (default "all": the XKS matrix then the KMS comparison; "kms": the raw HSM ceiling at
#      32 B and the KMS comparison only, 4 x DURATION of load per round; "csms": the CSMS hot read
#      only — XKS Encrypt 32 B, encrypt-data 32 B and show-secret-version `latest` of a 64-byte
#      value — 3 x DURATION per round), WORKER_SESSIONS (default
#      1: SoftHSM2 serialises sessions inside one process), SIZES (default "32 4300"), CONCURRENCY
#      (default "1 8 32 64"), RATES (open loop, default "1800"), KMS_CONCURRENCY (default "32"), KMS_ROUNDS (default 1: how many times the
#      KMS comparison — XKS Encrypt 32 B, encrypt-data 32 B, create-datakey 512-bit, show-secret-
#      version 64 B — is repeated, interleaved so that drift on a shared machine hits all alike; the
#      csms suite uses it too; "fairness": HSM fairness, XKS Encrypt 32 B at concurrency 8 while 20
#      concurrent Huawei create-rsa-datakey-pair RSA_4096 run, once on a mesh whose worker has the slow
#      lane off (--slow-lane-sessions 0: one shared pool, the old behaviour) and once on a second mesh
#      with it on (the default, 1), DURATION of XKS load each, after a baseline of XKS alone), BUILD (default 1; 0 runs the binaries already built), CARGO_TARGET_DIR
#      (where the release binaries are built and looked for; default target/), MESH_TLS (default 1:
#      the gRPC hops use mutual TLS with pinned identities, certificates from `keymeshctl pki
#      init`, as in production; 0: --insecure-plaintext-grpc). SUITE=mtls measures what mTLS
#      costs: a second, plaintext mesh on the same token next to the mTLS one, and XKS Encrypt
#      32 B at KMS_CONCURRENCY alternated between the two, KMS_ROUNDS times (lines tagged "mesh").
#      SUITE=baseline compares two builds: a second mesh from the edge, crypto-worker and
#      rate-limiter in BASELINE_BIN (e.g. a release build of the commit before a refactor) on the
#      same token and store, and XKS Encrypt 32 B and encrypt-data 32 B at KMS_CONCURRENCY
#      alternated between the two, KMS_ROUNDS times (lines tagged "build": "before"/"after").
# bench/report.py turns the JSONL into the tables of bench/REPORT.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/bench/results.jsonl}
DURATION=${2:-10}
SESSIONS=${WORKER_SESSIONS:-1}
SIZES=${SIZES:-"32 4300"}
CONCURRENCY=${CONCURRENCY:-"1 8 32 64"}
RATES=${RATES:-"1800"}
SUITE=${SUITE:-all}
KMS_CONCURRENCY=${KMS_CONCURRENCY:-"32"}
KMS_ROUNDS=${KMS_ROUNDS:-1}
MESH_TLS=${MESH_TLS:-1}
case "$SUITE" in all | kms | csms | mtls | fairness | baseline) ;; *) echo "SUITE must be all, kms, csms, mtls, fairness or baseline" >&2; exit 2 ;; esac
if [ "$SUITE" = baseline ] && [ ! -x "${BASELINE_BIN:-}/edge" ]; then
  echo "SUITE=baseline needs BASELINE_BIN: a directory with the edge, crypto-worker and rate-limiter to compare against" >&2
  exit 2
fi

if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" \
    -p keymesh-edge -p keymesh-crypto-worker -p keymesh-rate-limiter -p keymeshctl -p keymesh-loadgen
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

DIR=$(mktemp -d)
chmod 700 "$DIR"
umask 077
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
"$BIN/keymeshctl" key assign bench-key --keystore /demo/kms/xks/v1 >/dev/null

# The Huawei dialect: SQLite store, the HSM domain (wrapping) key, one full-access account.
export KEYMESH_STORE_URL=sqlite://$DIR/keymesh.db
"$BIN/keymeshctl" domain-key init --if-missing >/dev/null
PROJECT=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
"$BIN/keymeshctl" account create --project "$PROJECT" --user bench --role full --json >"$DIR/account.json"

# Quotas far above what one machine can drive: the limiter is measured, not binding.
printf '[default]\nrate_per_second = 1000000\nburst = 1000000\n' >"$DIR/quotas.toml"

wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "timeout waiting for $1" >&2; exit 1; }

# The mesh PKI: one CA, one certificate per service identity.
"$BIN/keymeshctl" pki init --dir "$DIR/pki" >/dev/null

# start_mesh TAG TLS [SLOW_LANE] [BIN_DIR]: a worker (slow lane of SLOW_LANE
# sessions, default 1), a limiter and an edge (mTLS when TLS=1, else
# plaintext), binaries from BIN_DIR (default $BIN); sets MESH_EDGE (address)
# and MESH_PIDS (edge,worker,limiter).
start_mesh() {
  local tag=$1 tls=$2 slow_lane=${3:-1} bin=${4:-$BIN} wtls ltls top="" section=""
  if [ "$tls" = 1 ]; then
    wtls=(--grpc-tls-cert "$DIR/pki/crypto-worker.pem" --grpc-tls-key "$DIR/pki/crypto-worker.key" --grpc-tls-ca "$DIR/pki/ca.pem")
    ltls=(--grpc-tls-cert "$DIR/pki/rate-limiter.pem" --grpc-tls-key "$DIR/pki/rate-limiter.key" --grpc-tls-ca "$DIR/pki/ca.pem")
    section="[grpc_tls]
cert_file = \"$DIR/pki/edge.pem\"
key_file = \"$DIR/pki/edge.key\"
ca_file = \"$DIR/pki/ca.pem\""
  else
    wtls=(--insecure-plaintext-grpc)
    ltls=(--insecure-plaintext-grpc)
    top="insecure_plaintext_grpc = true"
  fi
  "$bin/crypto-worker" --listen 127.0.0.1:0 --addr-file "$DIR/worker-$tag.addr" --sessions "$SESSIONS" \
    --slow-lane-sessions "$slow_lane" "${wtls[@]}" 2>"$DIR/worker-$tag.log" &
  PIDS+=($!); local worker_pid=$!
  "$bin/rate-limiter" --listen 127.0.0.1:0 --addr-file "$DIR/limiter-$tag.addr" --config "$DIR/quotas.toml" \
    "${ltls[@]}" 2>"$DIR/limiter-$tag.log" &
  PIDS+=($!); local limiter_pid=$!
  wait_file "$DIR/worker-$tag.addr"; wait_file "$DIR/limiter-$tag.addr"

  cat >"$DIR/edge-$tag.toml" <<EOF
listen = "127.0.0.1:0"
addr_file = "$DIR/edge-$tag.addr"
workers = ["http://$(cat "$DIR/worker-$tag.addr")"]
limiter = "http://$(cat "$DIR/limiter-$tag.addr")"
keystores_file = "$DIR/keystores.json"
$top

$section

[huawei]
store_url = "$KEYMESH_STORE_URL"
EOF
  "$bin/edge" --config "$DIR/edge-$tag.toml" 2>"$DIR/edge-$tag.log" &
  PIDS+=($!); local edge_pid=$!
  wait_file "$DIR/edge-$tag.addr"
  MESH_EDGE=$(cat "$DIR/edge-$tag.addr")
  MESH_PIDS="$edge_pid,$worker_pid,$limiter_pid"
}

# The fairness suite measures the old behaviour on the main mesh first.
MAIN_SLOW_LANE=1
[ "$SUITE" = fairness ] && MAIN_SLOW_LANE=0
start_mesh main "$MESH_TLS" "$MAIN_SLOW_LANE"
EDGE_ADDR=$MESH_EDGE
MAIN_PIDS=$MESH_PIDS

COMMON=(--endpoint "http://$EDGE_ADDR" --console-config "$DIR/console.json"
        --key-id bench-key --pids "$MAIN_PIDS")
LG=$BIN/keymesh-loadgen

# The Huawei master key (wrapped under the domain key, in the store).
KMS_KEY=$("$LG" kms-create-key --endpoint "http://$EDGE_ADDR" --account-file "$DIR/account.json" \
  --alias bench-1 | sed -E 's/.*"key_id":"([^"]*)".*/\1/')
KMS=(--key-id "$KMS_KEY" --account-file "$DIR/account.json")

# The CSMS secret: one 64-character secret_string version, encrypted under the
# project's csms/default key (made by the edge on first use).
"$LG" csms-create-secret --endpoint "http://$EDGE_ADDR" --account-file "$DIR/account.json" \
  --name bench-secret-1 --value-bytes 64 >/dev/null
CSMS=(--name bench-secret-1 --version latest --account-file "$DIR/account.json")

# Warm-up (connections, key handle and store caches), not recorded.
"$LG" closed --concurrency 4 --duration 2 "${COMMON[@]}" encrypt --size 32 >/dev/null
"$LG" closed --concurrency 4 --duration 1 "${COMMON[@]}" kms-encrypt --size 32 "${KMS[@]}" >/dev/null
"$LG" closed --concurrency 4 --duration 1 "${COMMON[@]}" kms-datakey --bits 512 "${KMS[@]}" >/dev/null
"$LG" closed --concurrency 4 --duration 1 "${COMMON[@]}" csms-show "${CSMS[@]}" >/dev/null

# One closed-loop run at concurrency $1 of the operation in "$@", appended to $OUT.
closed_run() {
  local c=$1
  shift
  "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" "$@" >>"$OUT"
}
# Huawei KMS against XKS Encrypt on the same processes, same run (issue 4 §9:
# CPU per request within 1.2x of XKS Encrypt 32 B); with $1 = csms, the CSMS
# hot read only (issue 5 §7: show-secret-version `latest`: two store reads,
# never cached, and one KeyVault decrypt) against XKS Encrypt and
# encrypt-data, i.e. the same rounds without create-datakey.
compare_suite() {
  for _ in $(seq "$KMS_ROUNDS"); do
    for c in $KMS_CONCURRENCY; do
      closed_run "$c" encrypt --size 32
      closed_run "$c" kms-encrypt --size 32 "${KMS[@]}"
      if [ "$1" = kms ]; then
        closed_run "$c" kms-datakey --bits 512 "${KMS[@]}"
      fi
      closed_run "$c" csms-show "${CSMS[@]}"
    done
  done
}
# HSM fairness: XKS Encrypt while 20 RSA-4096 key-pair generations run through
# the mesh whose loadgen arguments are in FAIR, with that worker's slow lane
# off ($1 = 0) or on ($1 = 1). The keypair load starts first and outlasts the
# XKS run; both lines go to $OUT, tagged.
fairness_round() {
  local lane=$1 tag
  tag="\"scenario\":\"hsm-fairness\",\"slow_lane_sessions\":$lane,\"worker_sessions\":$SESSIONS,"
  "$LG" closed --concurrency 20 --duration "$((DURATION + 6))" --timeout-ms 30000 "${FAIR[@]}" \
    kms-keypair --spec RSA_4096 "${KMS[@]}" >"$DIR/keypair.json" &
  local kp=$!
  # Let the 20 generations occupy the HSM before XKS load starts.
  sleep 3
  "$LG" closed --concurrency 8 --duration "$DURATION" "${FAIR[@]}" encrypt --size 32 | sed "s/^{/{$tag/" >>"$OUT"
  wait "$kp"
  sed "s/^{/{$tag/" "$DIR/keypair.json" >>"$OUT"
}
if [ "$SUITE" = fairness ]; then
  # Baseline: XKS alone, same processes and box, no key-pair load.
  "$LG" closed --concurrency 8 --duration "$DURATION" "${COMMON[@]}" encrypt --size 32 |
    sed "s/^{/{\"scenario\":\"hsm-fairness-baseline\",\"slow_lane_sessions\":0,/" >>"$OUT"
  FAIR=("${COMMON[@]}")
  fairness_round 0
  # A second mesh on the same token and store, its worker with the slow lane (the default).
  start_mesh lane "$MESH_TLS" 1
  FAIR=(--endpoint "http://$MESH_EDGE" --console-config "$DIR/console.json" --key-id bench-key --pids "$MESH_PIDS")
  "$LG" closed --concurrency 4 --duration 2 "${FAIR[@]}" encrypt --size 32 >/dev/null
  fairness_round 1
  echo "results appended to $OUT" >&2
  exit 0
fi
if [ "$SUITE" = mtls ]; then
  # The other variant next to the main mesh, on the same token and key.
  if [ "$MESH_TLS" = 1 ]; then other=0; else other=1; fi
  start_mesh other "$other"
  OTHER=(--endpoint "http://$MESH_EDGE" --console-config "$DIR/console.json" --key-id bench-key --pids "$MESH_PIDS")
  "$LG" closed --concurrency 4 --duration 2 "${OTHER[@]}" encrypt --size 32 >/dev/null
  tag() { sed -E "s/^\{/{\"mesh\":\"$1\",/"; }
  name() { if [ "$1" = 1 ]; then echo mtls; else echo plaintext; fi; }
  for _ in $(seq "$KMS_ROUNDS"); do
    for c in $KMS_CONCURRENCY; do
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" encrypt --size 32 | tag "$(name "$MESH_TLS")" >>"$OUT"
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${OTHER[@]}" encrypt --size 32 | tag "$(name "$other")" >>"$OUT"
    done
  done
  echo "results appended to $OUT" >&2
  exit 0
fi
if [ "$SUITE" = baseline ]; then
  # The build under comparison, next to the main mesh, on the same token, key and store.
  start_mesh before "$MESH_TLS" 1 "$BASELINE_BIN"
  BEFORE=(--endpoint "http://$MESH_EDGE" --console-config "$DIR/console.json" --key-id bench-key --pids "$MESH_PIDS")
  "$LG" closed --concurrency 4 --duration 2 "${BEFORE[@]}" encrypt --size 32 >/dev/null
  "$LG" closed --concurrency 4 --duration 1 "${BEFORE[@]}" kms-encrypt --size 32 "${KMS[@]}" >/dev/null
  tag() { sed -E "s/^\{/{\"build\":\"$1\",/"; }
  for _ in $(seq "$KMS_ROUNDS"); do
    for c in $KMS_CONCURRENCY; do
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${BEFORE[@]}" encrypt --size 32 | tag before >>"$OUT"
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" encrypt --size 32 | tag after >>"$OUT"
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${BEFORE[@]}" kms-encrypt --size 32 "${KMS[@]}" | tag before >>"$OUT"
      "$LG" closed --concurrency "$c" --duration "$DURATION" "${COMMON[@]}" kms-encrypt --size 32 "${KMS[@]}" | tag after >>"$OUT"
    done
  done
  echo "results appended to $OUT" >&2
  exit 0
fi
if [ "$SUITE" = csms ]; then
  compare_suite csms
  echo "results appended to $OUT" >&2
  exit 0
fi
if [ "$SUITE" = kms ]; then
  # The raw SoftHSM2 ceiling at 32 B: calibrates this machine against other runs.
  "$LG" raw-hsm --key-id bench-key --size 32 --threads 1 --duration "$DURATION" >>"$OUT"
  "$LG" raw-hsm --key-id bench-key --size 32 --threads 1 --duration "$DURATION" --session-copy >>"$OUT"
  compare_suite kms
  echo "results appended to $OUT" >&2
  exit 0
fi

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
compare_suite kms

echo "results appended to $OUT" >&2
