#!/usr/bin/env bash
# Validates the generated CRDs and everything `mlobs render` produces for the samples with
# kubernetes-validate's bundled Kubernetes 1.33 schemas (--strict: unknown fields are errors).
set -euo pipefail
cd "$(dirname "$0")/.."
KV=.venv/bin/kubernetes-validate
MLOBS=${MLOBS:-target/debug/mlobs}
[ -x "$MLOBS" ] || cargo build --quiet --bin mlobs
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$KV" --strict -k 1.33.0 crds/*.yaml

render() { # name, args...
  local name=$1; shift
  "$MLOBS" render "$@" > "$out/$name.yaml"
  # One file per document: kubernetes-validate reports only the first error of a file.
  .venv/bin/python - "$out/$name.yaml" <<'PY'
import sys, pathlib
p = pathlib.Path(sys.argv[1])
docs = [d for d in p.read_text().split("\n---\n") if d.strip()]
for i, d in enumerate(docs):
    (p.parent / f"{p.stem}-{i:02d}.yaml").write_text(d)
p.unlink()
PY
}
render minimal -f config/samples/pipeline-minimal.yaml
render minimal-default -f config/samples/pipeline-minimal.yaml --policy config/samples/policy-default.yaml
render full -f config/samples/pipeline-full.yaml --policy config/samples/policy-default.yaml
render gpu-operator -f tests/fixtures/pipeline-gpu-operator.yaml --policy config/samples/policy-gpu-operator.yaml
n=$(ls "$out"/*.yaml | wc -l)
"$KV" --strict -k 1.33.0 "$out"/*.yaml > "$out/report.txt" 2>&1 || { cat "$out/report.txt"; exit 1; }
if grep -v " passed for resource " "$out/report.txt" | grep -q .; then
  cat "$out/report.txt"
  echo "kubernetes-validate printed warnings or errors"
  exit 1
fi
echo "kubernetes-validate: $n rendered objects valid against Kubernetes 1.33 (strict)"
