#!/usr/bin/env python3
"""Render and lint a Helm chart without a helm binary, through PyPI helm-python-sdk (Helm v4's Go
SDK as libhelm_c.so). Run it with the project's venv: `.venv/bin/python scripts/chart.py ...`.

  chart.py template CHART [--values FILE]... [--set[-string] k=v]... [--name N] [--namespace NS]
                          [--include-crds] [--kube-version V]
      prints the rendered objects as multi-document YAML, like `helm template`.
  chart.py lint CHART [--values FILE]... [--set[-string] k=v]... --strict
      prints every finding; exits 1 on any error, and with --strict on any warning too.

Both render for Kubernetes 1.33 (`.Capabilities.KubeVersion`), the version kubernetes-validate
checks against. The SDK's public Chart.render() fixes the version at its built-in default (1.36),
so `template` calls the library's helm_render with its `kube_version` option through the
binding's private `_native.call_string`; helm-python-sdk is pinned (==0.2.2) in
requirements-dev.txt because of that. Any template, values or schema error exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
    from helm_python import _native
except ImportError as e:  # the tests say the same: they must fail, not skip
    sys.exit(f"chart.py: helm-python-sdk is not installed ({e}); run `make venv`")

KUBE_VERSION = "v1.33.0"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge like Helm's -f/--set layering: maps merge, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def user_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in args.values:
        values = merge(values, helm.values_from_yaml(Path(f).read_text()) or {})
    for s in args.set:
        values = merge(values, helm.parse_set_string(s))
    for s in args.set_string:
        values = merge(values, helm.parse_set_string_values(s))
    return values


def template(args: argparse.Namespace) -> int:
    opts = {
        "name": args.name,
        "namespace": args.namespace,
        "kube_version": args.kube_version,
        "is_install": True,
    }
    out: list[str] = []
    with helm.Chart.load(args.chart) as chart:
        if args.include_crds:
            for crd in sorted(chart.crds, key=lambda c: c["filename"]):
                out.append(f"# Source: {crd['filename']}\n{crd['data'].strip()}\n")
        rendered = json.loads(
            _native.call_string("helm_render", chart._raw(), json.dumps(user_values(args)), json.dumps(opts))
        )
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in rendered[path].split("\n---\n"):
            if any(line.strip() and not line.lstrip().startswith("#") for line in doc.splitlines()):
                out.append(f"# Source: {path}\n{doc.strip().removeprefix('---').strip()}\n")
    sys.stdout.write("".join(f"---\n{d}" for d in out))
    return 0


SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint(args: argparse.Namespace) -> int:
    report = helm.lint(
        args.chart,
        user_values(args),
        strict=args.strict,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )
    worst = 0
    for m in report.get("messages") or []:
        sev = int(m.get("severity", 0))
        worst = max(worst, sev)
        print(f"[{SEVERITY.get(sev, sev)}] {m.get('path', '')}: {str(m.get('error', '')).strip()}")
    for e in report.get("errors") or []:
        worst = 3
        print(f"[ERROR] {str(e).strip()}")
    failed = worst >= 3 or (args.strict and worst >= 2)
    print(f"chart.py lint: {args.chart}: {'FAILED' if failed else 'ok'} (Kubernetes {args.kube_version})")
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("template", template), ("lint", lint)):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        s.add_argument("chart")
        s.add_argument("-f", "--values", action="append", default=[], metavar="FILE")
        s.add_argument("--set", action="append", default=[], metavar="K=V")
        s.add_argument("--set-string", action="append", default=[], metavar="K=V")
        s.add_argument("--namespace", default="mlobs-system")
        s.add_argument("--kube-version", default=KUBE_VERSION)
    t = sub.choices["template"]
    t.add_argument("--name", default="mlobs-operator", help="release name")
    t.add_argument("--include-crds", action="store_true", help="also print the chart's crds/")
    sub.choices["lint"].add_argument("--strict", action="store_true", help="fail on warnings too")
    args = p.parse_args()
    try:
        return args.fn(args)
    except helm.HelmError as e:
        print(f"chart.py {args.cmd}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
