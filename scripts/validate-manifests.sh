#!/usr/bin/env bash
# Validates the generated CRDs (and, once rendering exists, every rendered sample) with
# kubernetes-validate's bundled Kubernetes 1.33 schemas.
set -euo pipefail
cd "$(dirname "$0")/.."
KV=.venv/bin/kubernetes-validate
"$KV" --strict -k 1.33.0 crds/*.yaml
