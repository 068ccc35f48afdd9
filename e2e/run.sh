#!/usr/bin/env bash
# End-to-end: the operator (`mlobs run`, 2 replicas with leader election, as local processes with
# the chart's ServiceAccount token) against a real control plane and moto as AWS; the scenarios
# are the Rust integration tests in e2e/tests/ (`cargo test --test e2e`). Never skips.
# Without KUBECONFIG it starts ../shared/cluster (and stops it on exit). See e2e/README.md.
# MLOBS_E2E_BENCH=1 (make bench): the scale bench (e2e/tests/bench.rs) instead of the scenarios,
# on 20 GPU nodes (MLOBS_E2E_GPU_NODES), with one release-built replica (no leader election)
# reading drift events from a moto SQS queue.
set -euo pipefail
# One compound command: bash reads all of it before running any, so editing this file while a
# run is in progress cannot change what that run does.
{
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
KUBECTL=$ROOT/.venv/bin/kubectl
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl) || { echo "e2e: kubectl is required (make venv installs it)"; exit 1; }
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || { echo "e2e: .venv is missing: run make venv"; exit 1; }
# moto's server, paging IAM's role listing and KMS's alias listing as AWS does (scripts/moto_server.py).
"$PY" -c 'import moto.server' 2>/dev/null || { echo "e2e: moto[server] is required in .venv (make venv installs it)"; exit 1; }

STATE=${MLOBS_E2E_STATE_DIR:-$ROOT/target/e2e}
OPNS=mlobs-system
CLUSTER_HOME=${MLOBS_CLUSTER_HOME:-$HOME/.cache/mlobs-cluster}
BENCH=${MLOBS_E2E_BENCH:-0}
# MLOBS_E2E_BENCH_SHARDS=M: the bench runs M replicas as --shard I/M (one per shard).
# MLOBS_E2E_OPERATOR_ENV="K=V ...": more environment for the operator replicas only, e.g. glibc
# malloc tunables for a memory experiment (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072).
BENCH_SHARDS=${MLOBS_E2E_BENCH_SHARDS:-1}
if [ "$BENCH" = 1 ]; then REPLICAS=$BENCH_SHARDS GPU_NODES=${MLOBS_E2E_GPU_NODES:-20}; else REPLICAS=2 GPU_NODES=${MLOBS_E2E_GPU_NODES:-4}; fi
TMP=$(mktemp -d)
STARTED_CLUSTER=0
MOTO_PID=
FAILED=1

log() { echo "e2e: $(date +%H:%M:%S) $*"; }
k() { "$KUBECTL" "$@"; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listening() { "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null; }
field() { sed -n "s/^$1=//p" "$2" | head -1; }

stop_replicas() {
  local f pid pids=()
  for f in "$STATE"/replica-*.env; do
    [ -e "$f" ] || continue
    pid=$(field pid "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); }
  done
  for _ in $(seq 40); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.25
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# The end of each failing scenario's output (its error is last), lines cut to 300 characters.
failure_endings() {
  # Two passes: the first learns the failing names (listed after the last `failures:`), the
  # second prints the last 25 lines of their `---- name stdout ----` blocks.
  awk -v file="$1" '
    function flush(  i, from) {
      if (name != "" && FNR != NR && (name in failed)) {
        print "---- end of " name " (" file ")"
        from = n > 25 ? n - 25 : 0
        for (i = from; i < n; i++) print buf[i % 25]
      }
      name = ""
    }
    /^---- .* stdout ----$/ { flush(); name = $2; n = 0; next }
    /^(successes|failures):$/ { flush(); mode = $0; next }
    /^test result:/ { flush(); mode = ""; next }
    name != "" { buf[n++ % 25] = substr($0, 1, 300); next }
    mode == "failures:" && /^    [^ ]+$/ { failed[substr($0, 5)] = 1 }
  ' "$1" "$1"
}

cleanup() {
  local rc=$?
  set +e
  if [ "$FAILED" = 1 ] || [ $rc != 0 ]; then
    for f in "$STATE"/operator-*.log; do
      [ -e "$f" ] || continue
      echo "---- tail of $f"
      tail -n 40 "$f"
    done
    # Last, so that a CI log cut to its tail still names each failing scenario and its error.
    for f in "$STATE"/phase-*.log; do
      [ -e "$f" ] && failure_endings "$f"
    done
  fi
  if [ -n "${KUBECONFIG:-}" ] && [ "$STARTED_CLUSTER" = 0 ]; then
    # Test namespaces whose pipelines still carry the finalizer would stay Terminating forever
    # once the operator is gone: give the operator a moment, then let go of the finalizers.
    for _ in $(seq 30); do
      [ -z "$(k get ns -l mlobs-e2e=true -o name 2>/dev/null)" ] && break
      sleep 2
    done
    for ns in $(k get ns -l mlobs-e2e=true -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
      for p in $(k -n "$ns" get mlop -o name 2>/dev/null); do
        k -n "$ns" patch "$p" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
      done
      k delete ns "$ns" --wait=false >/dev/null 2>&1
    done
    k delete gputelemetrypolicies -l mlobs-e2e=true --wait=false >/dev/null 2>&1
  fi
  stop_replicas
  [ -n "$MOTO_PID" ] && { kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null; }
  if [ "$STARTED_CLUSTER" = 1 ]; then
    log "stopping the cluster we started"
    ../shared/cluster/down.sh >/dev/null 2>&1 || ../shared/cluster/down.sh
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The cluster: ours when KUBECONFIG is unset, else the one given (CRDs re-applied).
if [ -z "${KUBECONFIG:-}" ]; then
  if [ "$(KUBECONFIG=$CLUSTER_HOME/kubeconfig k get --raw /readyz 2>/dev/null)" = ok ]; then
    log "a control plane is already running ($CLUSTER_HOME/kubeconfig): using it, not stopping it"
  else
    log "starting ../shared/cluster"
    STARTED_CLUSTER=1
    ../shared/cluster/up.sh "$GPU_NODES" --apply crds/
  fi
  export KUBECONFIG=$CLUSTER_HOME/kubeconfig
fi
log "cluster: $(k config view --minify -o jsonpath='{.clusters[0].cluster.server}') (KUBECONFIG=$KUBECONFIG)"
k apply --server-side --force-conflicts -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/mlobservabilitypipelines.mlobs.io crd/gputelemetrypolicies.mlobs.io >/dev/null

# 2. moto.
MOTO_PORT=$(free_port)
"$PY" scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 240); do listening "$MOTO_PORT" && break; sleep 0.25; done
listening "$MOTO_PORT" || { cat "$TMP/moto.log"; echo "e2e: moto did not listen on $MOTO_PORT"; exit 1; }
MOTO_URL=http://127.0.0.1:$MOTO_PORT
log "moto at $MOTO_URL"
# Drift events queues in moto: `drift_queues M` creates one queue, or with M > 1 one per shard
# (as the EventBridge rule's targets of `mlobs plan --shards M` are), and sets QUEUE_ARG (the
# --drift-events-queue value: with `{shard}` when sharded) and MLOBS_E2E_DRIFT_QUEUE_URLS (the
# queues in shard order, for the tests to deliver events to).
drift_queues() {
  local urls
  urls=$(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$PY" -c 'import sys, boto3
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1")
m = int(sys.argv[2])
names = ["mlobs-drift-events"] if m == 1 else ["mlobs-drift-events-%d" % i for i in range(m)]
print(" ".join(sqs.create_queue(QueueName=n)["QueueUrl"] for n in names))' "$MOTO_URL" "$1")
  export MLOBS_E2E_DRIFT_QUEUE_URLS=$urls
  QUEUE_ARG=${urls%% *}
  if [ "$1" -gt 1 ]; then QUEUE_ARG=${QUEUE_ARG%-0}-{shard}; fi
  log "drift events queue(s) $urls (--drift-events-queue $QUEUE_ARG)"
}
DRIFT_ARGS=()
if [ "$BENCH" = 1 ]; then
  drift_queues "$BENCH_SHARDS"
  # One process measured from start to end: without leader election, since a lease renewal the
  # overloaded API server does not answer in time ends the leader (a Deployment restarts it; the
  # failover itself is e2e's serial::failover test). The first 1,000-pipeline run showed that.
  DRIFT_ARGS=(--drift-events-queue "$QUEUE_ARG" --leader-elect=false)
fi

# 3. Build: the test profile, so the operator binary and the test binary share one compilation
# (`cargo test` builds bin targets for integration tests). The binary is copied so that a later
# `cargo build` does not replace it under the running replicas.
log "building (cargo test --test e2e --no-run)"
cargo test --test e2e --no-run
OPERATOR_BUILD=target/debug/mlobs
if [ "$BENCH" = 1 ]; then
  log "building the operator for the bench (cargo build --release --bin mlobs)"
  # The image's build (Dockerfile): packed relative relocations, see build.rs.
  MLOBS_PACK_RELOCS=1 cargo build --release --bin mlobs
  OPERATOR_BUILD=target/release/mlobs
fi
rm -rf "$STATE"
mkdir -p "$STATE"
# MLOBS_E2E_BINARY runs the scenarios against another build (e.g. an older commit's, to show
# which scenarios fail there).
cp "${MLOBS_E2E_BINARY:-$OPERATOR_BUILD}" "$STATE/mlobs"

# 4. The chart, applied for real: ServiceAccount, RBAC, Deployment (kwok reports its Pods
# Running; nothing runs them: the operator runs as local processes below).
log "applying charts/mlobs-operator to namespace $OPNS"
k create namespace "$OPNS" --dry-run=client -o yaml | k apply --server-side -f - >/dev/null
"$PY" scripts/chart.py template charts/mlobs-operator --namespace "$OPNS" \
  --set replicas=$REPLICAS --set defaultPolicy.enabled=false \
  --set clusterName=e2e --set region=us-east-1 --set-string accountId=123456789012 >"$STATE/chart.yaml"
k apply --server-side --force-conflicts -f "$STATE/chart.yaml" >/dev/null

# 5. Least privilege: the operator talks to the API server with the chart's ServiceAccount token.
OPKC=$TMP/operator-kubeconfig
TOKEN=$(k -n "$OPNS" create token mlobs-operator --duration=3h)
SERVER=$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
CA=$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
umask 077
cat >"$OPKC" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $SERVER
    certificate-authority-data: $CA
users:
- name: mlobs-operator
  user:
    token: $TOKEN
contexts:
- name: e2e
  context:
    cluster: e2e
    user: mlobs-operator
    namespace: $OPNS
current-context: e2e
EOF
umask 022
unset TOKEN CA

# 6. Operator replicas. Each writes a state file the tests read (and use to restart a replica):
# pid, identity, metrics address, log, and the command line (arg=) and environment (env=).
# The scenarios log mlobs at debug (their failures are read from the logs); the bench measures the
# operator as the chart deploys it, at the chart's logLevel.
DEFAULT_RUST_LOG=info,mlobs=debug
if [ "$BENCH" = 1 ]; then
  DEFAULT_RUST_LOG=$(sed -n 's/^logLevel: //p' charts/mlobs-operator/values.yaml)
fi
start_replica() {
  local i=$1 port
  shift
  port=$(free_port)
  local id=mlobs-e2e-$i f=$STATE/replica-$i.env logf=$STATE/operator-$i.log
  local cmd=("$STATE/mlobs" run --cluster-name e2e --region us-east-1 --account-id 123456789012
    --namespace "$OPNS" --aws-endpoint-url "$MOTO_URL" --metrics-addr "127.0.0.1:$port" "${DRIFT_ARGS[@]}" "$@")
  local envs=("KUBECONFIG=$OPKC" "POD_NAME=$id" "AWS_ACCESS_KEY_ID=testing"
    "AWS_SECRET_ACCESS_KEY=testing" "RUST_LOG=${MLOBS_E2E_RUST_LOG:-$DEFAULT_RUST_LOG}")
  local kv
  for kv in ${MLOBS_E2E_OPERATOR_ENV:-}; do envs+=("$kv"); done
  env -u AWS_PROFILE -u AWS_ENDPOINT_URL -u POD_NAMESPACE "${envs[@]}" "${cmd[@]}" >>"$logf" 2>&1 &
  {
    echo "pid=$!"
    echo "identity=$id"
    echo "metrics_addr=127.0.0.1:$port"
    echo "log=$logf"
    printf 'arg=%s\n' "${cmd[@]}"
    printf 'env=%s\n' "${envs[@]}"
  } >"$f"
}
if [ "$BENCH" = 1 ] && [ "$BENCH_SHARDS" -gt 1 ]; then
  for i in $(seq 0 $((REPLICAS - 1))); do start_replica "$i" --shard "$i/$BENCH_SHARDS"; done
else
  # The scenarios' replicas read streams at 2 a second (serial::a_new_leader_reads_…_stream_budget
  # shows the budget at work); the bench runs the operator's default.
  extra=()
  [ "$BENCH" = 1 ] || extra=(--stream-reads-per-second=2)
  for i in $(seq 0 $((REPLICAS - 1))); do start_replica "$i" "${extra[@]}"; done
fi
holder=
if [ "$BENCH" = 1 ]; then
  log "started the bench's $REPLICAS replica(s) (no leader election, $BENCH_SHARDS shard(s))"
else
log "started $REPLICAS replicas; waiting for one to hold Lease $OPNS/mlobs-operator-leader"
for _ in $(seq 240); do
  holder=$(k -n "$OPNS" get lease mlobs-operator-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  case $holder in mlobs-e2e-*) break ;; esac
  for f in "$STATE"/replica-*.env; do
    kill -0 "$(field pid "$f")" 2>/dev/null || { echo "e2e: replica $(field identity "$f") exited"; exit 1; }
  done
  sleep 0.25
done
case $holder in mlobs-e2e-*) log "leader: $holder" ;; *) echo "e2e: no replica took the Lease within 60 s (holder: '$holder')"; exit 1 ;; esac
fi

# 7. The scenarios. Tests under `serial::` measure the operator as a whole (its write counter,
# failover) and run alone, after the others.
export MLOBS_E2E_STATE_DIR=$STATE MLOBS_E2E_MOTO_URL=$MOTO_URL MLOBS_E2E_OPERATOR_KUBECONFIG=$OPKC
export MLOBS_E2E_KUBECTL=$KUBECTL
# Test failures are anyhow errors with context; their backtraces are noise.
export RUST_LIB_BACKTRACE=${RUST_LIB_BACKTRACE:-0}
# The sharded phase: the chart re-applied with shards=2 (its Role then grants the shards'
# Leases), the replicas restarted as `--shard 0/2` and `--shard 1/2`, then `sharded::` alone.
sharded_phase() {
  log "sharded phase: chart with shards=2, replicas restarted as --shard 0/2 and --shard 1/2, each reading its own drift events queue"
  "$PY" scripts/chart.py template charts/mlobs-operator --namespace "$OPNS" \
    --set replicas=1 --set shards=2 --set defaultPolicy.enabled=false \
    --set clusterName=e2e --set region=us-east-1 --set-string accountId=123456789012 >"$STATE/chart-sharded.yaml"
  k apply --server-side --force-conflicts -f "$STATE/chart-sharded.yaml" >/dev/null
  stop_replicas
  rm -f "$STATE"/replica-*.env
  local i l h
  drift_queues 2
  for i in 0 1; do start_replica "$i" --shard "$i/2" --drift-events-queue "$QUEUE_ARG"; done
  for i in 0 1; do
    l=mlobs-operator-leader-$i-of-2
    for _ in $(seq 240); do
      h=$(k -n "$OPNS" get lease "$l" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
      [ "$h" = "mlobs-e2e-$i" ] && break
      sleep 0.25
    done
    [ "$h" = "mlobs-e2e-$i" ] || { echo "e2e: shard $i/2 did not take Lease $l within 60 s (holder: '$h')"; return 1; }
    log "shard $i/2: Lease $l held by $h"
  done
  cargo test --test e2e sharded:: -- --test-threads=1 --show-output 2>&1 | tee "$STATE/phase-sharded.log"
}

rc=0
if [ "$BENCH" = 1 ]; then
  log "scale bench (e2e/tests/bench.rs)"
  cargo test --test e2e bench:: -- --test-threads=1 --nocapture || rc=1
  [ $rc = 0 ] && FAILED=0
  exit $rc
fi
if [ "${MLOBS_E2E_FILTER:-}" = sharded ]; then
  sharded_phase || rc=1
  [ $rc = 0 ] && FAILED=0
  exit $rc
fi
if [ -n "${MLOBS_E2E_FILTER:-}" ]; then
  # Development: only the scenarios whose name contains the filter (never set by make e2e).
  log "scenarios matching '$MLOBS_E2E_FILTER' only"
  cargo test --test e2e -- "$MLOBS_E2E_FILTER" --skip sharded:: --test-threads=4 --show-output 2>&1 \
    | tee "$STATE/phase-filtered.log" || rc=1
  [ $rc = 0 ] && FAILED=0
  exit $rc
fi
log "scenarios (parallel)"
cargo test --test e2e -- --skip serial:: --skip bench:: --skip sharded:: --test-threads=4 --show-output 2>&1 \
  | tee "$STATE/phase-parallel.log" || rc=1
log "waiting for the test namespaces to be gone before the serial scenarios"
for _ in $(seq 90); do
  [ -z "$(k get ns -l mlobs-e2e=true -o name 2>/dev/null)" ] && break
  sleep 2
done
log "scenarios (serial)"
cargo test --test e2e serial:: -- --test-threads=1 --show-output 2>&1 | tee "$STATE/phase-serial.log" || rc=1
for _ in $(seq 90); do
  [ -z "$(k get ns -l mlobs-e2e=true -o name 2>/dev/null)" ] && break
  sleep 2
done
sharded_phase || rc=1
[ $rc = 0 ] && FAILED=0
[ $rc = 0 ] && log "passed" || log "FAILED (operator logs: $STATE/operator-*.log)"
exit $rc
}
