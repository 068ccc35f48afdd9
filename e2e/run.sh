#!/usr/bin/env bash
# End-to-end: the operator against the real cluster in KUBECONFIG and the AWS endpoint given.
# Skips (exit 0, with a message) when KUBECONFIG is not set. See e2e/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KUBECONFIG:-}" ]; then
  echo "e2e: KUBECONFIG is not set; skipping (set it to a test cluster to run the end-to-end scenario)"
  exit 0
fi
command -v kubectl >/dev/null || { echo "e2e: kubectl is required"; exit 1; }

NS=${MLOBS_E2E_NAMESPACE:-mlobs-e2e}
OPNS=${MLOBS_E2E_OPERATOR_NAMESPACE:-mlobs-system}
CLUSTER=${MLOBS_E2E_CLUSTER_NAME:-mlobs-e2e}
REGION=${AWS_REGION:-us-east-1}
TIMEOUT=${MLOBS_E2E_TIMEOUT:-180s}
MLOBS=${MLOBS:-target/debug/mlobs}
[ -x "$MLOBS" ] || cargo build --quiet --bin mlobs

log() { echo "e2e: $*"; }
fail() { echo "e2e: FAILED: $*"; kubectl -n "$NS" get mlop -o yaml || true; exit 1; }

log "installing CRDs"
kubectl apply -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/mlobservabilitypipelines.mlobs.io crd/gputelemetrypolicies.mlobs.io >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create namespace "$OPNS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

log "starting the operator (AWS endpoint: ${AWS_ENDPOINT_URL:-default chain})"
opargs=(run --cluster-name "$CLUSTER" --region "$REGION" --namespace "$OPNS" --leader-elect=false --metrics-addr 127.0.0.1:18080)
[ -n "${MLOBS_E2E_ACCOUNT_ID:-}" ] && opargs+=(--account-id "$MLOBS_E2E_ACCOUNT_ID")
"$MLOBS" "${opargs[@]}" > "${TMPDIR:-/tmp}/mlobs-e2e-operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT

log "applying a pipeline"
cat <<YAML | kubectl apply -f - >/dev/null
apiVersion: mlobs.io/v1alpha1
kind: MLObservabilityPipeline
metadata:
  name: e2e
  namespace: $NS
spec:
  deletionPolicy: Delete
  identity:
    mode: IRSA
    oidcProviderArn: ${MLOBS_E2E_OIDC_PROVIDER_ARN:-arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/E2E}
YAML

for c in KmsKeyReady LogGroupsReady IamRoleReady; do
  kubectl -n "$NS" wait --for=condition=$c --timeout="$TIMEOUT" mlop/e2e >/dev/null || fail "$c"
  log "$c=True"
done
for kind in daemonset configmap serviceaccount; do
  kubectl -n "$NS" get "$kind" mlobs-e2e >/dev/null || fail "$kind mlobs-e2e missing"
done
log "children exist; waiting for the collector (needs GPU nodes; CollectorReady may stay False without them)"
kubectl -n "$NS" wait --for=condition=CollectorReady --timeout=30s mlop/e2e >/dev/null || log "CollectorReady not True (no GPU nodes?)"

log "deleting the pipeline"
kubectl -n "$NS" delete mlop/e2e --wait=true --timeout="$TIMEOUT" >/dev/null || fail "delete"
for kind in daemonset configmap serviceaccount; do
  for _ in $(seq 30); do kubectl -n "$NS" get "$kind" mlobs-e2e >/dev/null 2>&1 || break; sleep 2; done
  kubectl -n "$NS" get "$kind" mlobs-e2e >/dev/null 2>&1 && fail "$kind mlobs-e2e not garbage-collected"
done
kubectl get clusterrole -l mlobs.io/pipeline="$NS.e2e" -o name | grep -q . && fail "ClusterRole left behind"
log "passed"
