#!/usr/bin/env bash
# Lints the Helm chart strictly, renders it (default values and ci/all-on-values.yaml) and the
# kustomize base, and validates every rendered object with kubernetes-validate's bundled
# Kubernetes 1.33 schemas (--strict: unknown fields are errors). No helm binary: scripts/chart.py
# drives helm-python-sdk. Custom resources (GpuTelemetryPolicy, ServiceMonitor) have no bundled
# schema; tests/install.rs checks them (the policy with the operator's own validation).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
KV=.venv/bin/kubernetes-validate
CHART=charts/mlobs-operator
[ -x "$PY" ] && [ -x "$KV" ] || { echo "validate-chart: .venv is missing: run make venv"; exit 1; }
KUBECTL=.venv/bin/kubectl
[ -x "$KUBECTL" ] || KUBECTL=$(command -v kubectl) || { echo "validate-chart: kubectl is required (make venv installs it)"; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$PY" scripts/chart.py lint "$CHART" --strict
"$PY" scripts/chart.py lint "$CHART" --strict -f "$CHART/ci/all-on-values.yaml"

"$PY" scripts/chart.py template "$CHART" --include-crds > "$out/chart-default.yaml"
"$PY" scripts/chart.py template "$CHART" --include-crds -f "$CHART/ci/all-on-values.yaml" > "$out/chart-all-on.yaml"
"$KUBECTL" kustomize config/default > "$out/kustomize.yaml"

# One file per document (kubernetes-validate reports only the first error of a file), custom
# resources set aside.
"$PY" - "$out" <<'PY'
import pathlib, re, sys, yaml
out = pathlib.Path(sys.argv[1])
for src in sorted(out.glob("*.yaml")):
    n = 0
    for i, doc in enumerate(re.split(r"(?m)^---\s*$", src.read_text())):
        obj = yaml.safe_load(doc)
        if not obj:
            continue
        group = obj["apiVersion"].rpartition("/")[0]
        if group in ("mlobs.io", "monitoring.coreos.com"):
            print(f"validate-chart: {src.stem}: {obj['kind']} {obj['metadata']['name']}: custom resource, checked by tests/install.rs")
            continue
        (out / "docs").mkdir(exist_ok=True)
        (out / "docs" / f"{src.stem}-{i:02d}.yaml").write_text(doc.strip() + "\n")
        n += 1
    if n < 8:
        sys.exit(f"validate-chart: {src.name} rendered only {n} objects")
PY
n=$(ls "$out"/docs/*.yaml | wc -l)
"$KV" --strict -k 1.33.0 "$out"/docs/*.yaml > "$out/report.txt" 2>&1 || { cat "$out/report.txt"; exit 1; }
if grep -v " passed for resource " "$out/report.txt" | grep -q .; then
  cat "$out/report.txt"
  echo "kubernetes-validate printed warnings or errors"
  exit 1
fi
echo "validate-chart: $n objects from the chart (default and all-on values) and config/default valid against Kubernetes 1.33 (strict)"
