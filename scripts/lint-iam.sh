#!/usr/bin/env bash
# Lints every IAM policy mlobs produces with parliament (PyPI, offline) and fails on any finding:
#   - the operator's own policy (`mlobs plan --operator-policy`), without and with a permissions
#     boundary; each statement goes into a file of its own, named after its Sid, so that an
#     allowed finding below names exactly one statement;
#   - for the full sample pipeline (IRSA, and the same pipeline in EKS Pod Identity mode) and the
#     destinations sample (X-Ray, AMP), the archive sample (S3 with Object Lock) and the hot path
#     sample (Kinesis): the collector role's trust policy and inline policy, and Fluent Bit's;
#   - no collector inline policy has `"Resource": "*"` except the one documented X-Ray statement
#     (Sid XRayPutTraceSegments, exactly xray:PutTraceSegments, region-conditioned): X-Ray has no
#     resource types, so it cannot be granted on anything narrower.
# Not linted: the KMS key policy (`mlobs plan` prints it too). It is a KMS resource policy, where
# "Resource": "*" means the key itself; parliament checks identity-policy rules against it.
# Needs target/debug/mlobs (`cargo build --bins`) and .venv with requirements-dev.txt installed.
set -euo pipefail
cd "$(dirname "$0")/.."

MLOBS=${MLOBS:-target/debug/mlobs}
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PARLIAMENT="$VENV/bin/parliament"
for f in "$MLOBS" "$PY" "$PARLIAMENT"; do
  [[ -x "$f" ]] || { echo "lint-iam: $f is missing (cargo build --bins; make venv)" >&2; exit 1; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One policy document per statement: operator.<Sid>.json.
split_statements() { # <policy.json> <file prefix>
  "$PY" - "$1" "$2" <<'PY'
import json, sys
policy = json.load(open(sys.argv[1]))
sids = [s["Sid"] for s in policy["Statement"]]
assert len(sids) == len(set(sids)), f"duplicate Sid in {sids}"
for s in policy["Statement"]:
    with open(f"{sys.argv[2]}.{s['Sid']}.json", "w") as f:
        json.dump({"Version": policy["Version"], "Statement": [s]}, f, indent=2)
PY
}

"$MLOBS" plan --operator-policy --account-id 123456789012 --region us-east-1 >"$out/operator.json"
split_statements "$out/operator.json" "$out/operator"
"$MLOBS" plan --operator-policy --account-id 123456789012 --region us-east-1 --cluster-name prod-gpu \
  --permissions-boundary-arn arn:aws:iam::123456789012:policy/mlobs-collector-boundary \
  >"$out/operator-boundary.json"
split_statements "$out/operator-boundary.json" "$out/operator-boundary"
rm "$out/operator.json" "$out/operator-boundary.json"

# The collector's policies as `mlobs plan -o json` prints them (the builders the operator uses).
pipeline_policies() { # <pipeline.yaml> <file prefix>
  "$MLOBS" plan -f "$1" --policy config/samples/policy-default.yaml -o json >"$out/plan.json"
  "$PY" - "$out/plan.json" "$2" <<'PY'
import json, sys
reports = json.load(open(sys.argv[1]))
assert reports, "no pipeline in the plan"
for i, r in enumerate(reports):
    docs = {"trust": r["aws"]["role"].get("trustPolicy"), "inline": r["aws"]["role"].get("inlinePolicy")}
    # The hot path's Fluent Bit role, when the pipeline has one.
    hot = (r["aws"].get("hotPath") or {}).get("role")
    if hot:
        docs.update({"hotpath.trust": hot.get("trustPolicy"), "hotpath.inline": hot.get("inlinePolicy")})
    for name, doc in docs.items():
        assert doc, f"{r['pipeline']}: no {name} policy in the plan"
        with open(f"{sys.argv[2]}-{i}.{name}.json", "w") as f:
            json.dump(doc, f, indent=2)
PY
  rm "$out/plan.json"
}
pipeline_policies config/samples/pipeline-full.yaml "$out/irsa"
grep -q 'mode: IRSA' config/samples/pipeline-full.yaml || { echo "lint-iam: the full sample no longer sets mode: IRSA" >&2; exit 1; }
sed 's/mode: IRSA/mode: PodIdentity/' config/samples/pipeline-full.yaml >"$out/pipeline-pod-identity.yaml"
pipeline_policies "$out/pipeline-pod-identity.yaml" "$out/pod-identity"
rm "$out/pipeline-pod-identity.yaml"
pipeline_policies config/samples/pipeline-destinations.yaml "$out/destinations"
pipeline_policies config/samples/pipeline-archive.yaml "$out/archive"
pipeline_policies config/samples/pipeline-hotpath.yaml "$out/hotpath"
ls "$out"/hotpath-0.hotpath.inline.json >/dev/null || { echo "lint-iam: the hot path sample rendered no Fluent Bit role" >&2; exit 1; }

# "Resource": "*" in a collector policy: only the X-Ray statement, exactly as documented.
"$PY" - "$out" <<'PY'
import glob, json, os, sys
xray_seen = 0
bad = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.inline.json"))):
    for s in json.load(open(path))["Statement"]:
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        if "*" not in resources:
            continue
        cond = s.get("Condition", {}).get("StringEquals", {})
        ok = (s.get("Sid") == "XRayPutTraceSegments" and resources == ["*"]
              and s.get("Action") == ["xray:PutTraceSegments"] and s.get("Effect") == "Allow"
              and "aws:RequestedRegion" in cond and set(s["Condition"]) == {"StringEquals"})
        if ok:
            xray_seen += 1
        else:
            bad.append(f"{os.path.basename(path)}: {json.dumps(s)}")
for b in bad:
    print(f'lint-iam: "Resource": "*" outside the documented X-Ray statement: {b}')
if xray_seen == 0:
    print("lint-iam: the destinations sample no longer renders the X-Ray statement: the check above checked nothing")
sys.exit(1 if bad or xray_seen == 0 else 0)
PY

files=$(ls "$out"/*.json | paste -sd, -)
echo "lint-iam: parliament on $(ls "$out"/*.json | wc -l) policy documents"
# parliament reads a policy from stdin whenever stdin is not a terminal (as in CI), and then
# refuses --file: an empty stdin keeps it on --files everywhere.
set +e
"$PARLIAMENT" --json --files "$files" </dev/null >"$out/findings.jsonl"
rc=$?
set -e
if [[ $rc -ne 0 && ! -s "$out/findings.jsonl" ]]; then
  echo "lint-iam: parliament failed (exit $rc) without reporting a finding" >&2
  exit 1
fi

# Findings allowed on purpose: each names its finding type, the statement (by file name) and
# the exact detail, with the reason. Anything else fails, and so does an allowance that no
# longer matches anything (it would otherwise hide the next finding of its kind).
# These live here rather than in parliament's --config because parliament 1.6.4 cannot apply
# a config's ignore_locations: its make_list() turns every YAML value into [] (misc.py).
"$PY" - "$out/findings.jsonl" <<'PY'
import json, os, re, sys

def actions(f):
    return sorted(d.get("action") for d in f["detail"]) if isinstance(f["detail"], list) else None

ALLOWED = [
    (
        # kms:CreateAlias and kms:DeleteAlias are authorized twice, on the alias and on the key
        # (AWS KMS developer guide, "Controlling access to aliases", gives a statement for each).
        # parliament wants both resource types in one statement, but the key's statement needs
        # aws:ResourceTag/mlobs.io/pipeline, which never holds for an alias (aliases have no
        # tags): merged, the alias half would be denied.
        "alias operations: statement on the keys",
        lambda f: f["issue"] == "RESOURCE_MISMATCH"
        and re.fullmatch(r"operator(-boundary)?\.KmsAliasOwnKeys\.json", os.path.basename(f["location"]["filepath"]))
        and actions(f) == ["kms:CreateAlias", "kms:DeleteAlias"]
        and all(d["required_format"].endswith(":alias/*") for d in f["detail"]),
    ),
    (
        "alias operations: statement on the aliases",
        lambda f: f["issue"] == "RESOURCE_MISMATCH"
        and re.fullmatch(r"operator(-boundary)?\.KmsOwnAliases\.json", os.path.basename(f["location"]["filepath"]))
        and actions(f) == ["kms:CreateAlias", "kms:DeleteAlias"]
        and all(d["required_format"].endswith(":key/*") for d in f["detail"]),
    ),
    (
        # The operator writes the archive bucket's TLS-only policy and its lifecycle transition;
        # parliament warns that either could open or expire objects the operator may not touch
        # itself. Object Lock in COMPLIANCE mode keeps every version until its retention ends,
        # whatever a bucket policy or lifecycle rule says; the statement holds only these two.
        "archive bucket policy and lifecycle",
        lambda f: f["issue"] == "RESOURCE_POLICY_PRIVILEGE_ESCALATION"
        and re.fullmatch(r"operator(-boundary)?\.S3ArchivePolicyAndLifecycle\.json", os.path.basename(f["location"]["filepath"])),
    ),
    (
        # kms:ResourceAliases narrows the archive's key statement to the pipeline's key (its id is
        # unknown before it is created). The KMS developer guide documents the key for every
        # operation authorized on a key; parliament 1.6.4's table predates it.
        "archive key statement: kms:ResourceAliases",
        lambda f: f["issue"] == "UNKNOWN_CONDITION_FOR_ACTION"
        and f["location"]["filepath"].endswith(".inline.json")
        and f["detail"] in ("Unknown condition kms:ResourceAliases for action kms:Decrypt",
                            "Unknown condition kms:ResourceAliases for action kms:GenerateDataKey"),
    ),
    (
        # The Service Authorization Reference lists the stream as the resource type of both
        # (resource-level permissions); parliament 1.6.4's table predates that and wants "*".
        # The statement holds only these two, on the operator's stream prefix.
        "Kinesis scaling: stream resource",
        lambda f: f["issue"] == "RESOURCE_MISMATCH"
        and re.fullmatch(r"operator(-boundary)?\.KinesisScaleStreams\.json", os.path.basename(f["location"]["filepath"]))
        and actions(f) == ["kinesis:UpdateShardCount", "kinesis:UpdateStreamMode"]
        and all(d["required_format"] == "*" for d in f["detail"]),
    ),
    (
        # A role's trust policy is a resource policy (it is attached to the role): it has a
        # Principal and never a Resource. parliament checks it as an identity policy.
        "trust policy without Resource",
        lambda f: f["issue"] == "MALFORMED"
        and f["location"]["filepath"].endswith(".trust.json")
        and f["detail"] == "Statement contains neither Resource nor NotResource",
    ),
    (
        # parliament knows SAML providers and a few web identity hosts, not IAM OIDC providers
        # such as an EKS cluster's (the IRSA trust).
        "IRSA trust: EKS OIDC provider",
        lambda f: f["issue"] == "UNKNOWN_FEDERATION_SOURCE"
        and f["location"]["filepath"].endswith(".trust.json")
        and re.fullmatch(
            r"arn:aws:iam::\d{12}:oidc-provider/oidc\.eks\.[a-z0-9-]+\.amazonaws\.com/id/[A-Za-z0-9]+",
            str(f["detail"]),
        ),
    ),
]

findings = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
used = set()
bad = []
for f in findings:
    hit = next((name for name, ok in ALLOWED if ok(f)), None)
    if hit:
        used.add(hit)
    else:
        bad.append(f)
for f in bad:
    print(f"{f['severity']} {f['issue']}: {f['title']}: {f['detail']} at {f['location']}")
unused = [name for name, _ in ALLOWED if name not in used]
for name in unused:
    print(f"allowance no longer needed (remove it from scripts/lint-iam.sh): {name}")
print(f"lint-iam: {len(findings)} findings, {len(findings) - len(bad)} allowed, {len(bad)} not")
sys.exit(1 if bad or unused else 0)
PY
echo "lint-iam: ok"
