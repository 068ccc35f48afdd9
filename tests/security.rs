//! Security properties of everything mlobs generates, checked on the generated artefacts:
//! - IAM: every policy (collector inline and trust policies for IRSA and EKS Pod Identity, with
//!   and without sourceVpc and a permissions boundary, the KMS key policy, the operator's own
//!   policy, with and without the X-Ray and AMP destinations) has no Not* element, no
//!   `"Resource": "*"` outside the documented exceptions (a KMS key policy's "this key"; the one
//!   X-Ray statement, `xray:PutTraceSegments` only, as X-Ray has no resource types), every
//!   permission statement conditioned on the region (IAM, a global service, excepted), and every
//!   trust policy names exactly one ServiceAccount; parliament finds nothing unexplained.
//! - Pods: the operator's manifests (Helm chart, kustomize base) meet Pod Security "restricted";
//!   the collector's and the DCGM exporter's exceptions to it are pinned, exactly.
//! - Secrets and data: the operator never reads Secrets, no credentials reach a ConfigMap, a
//!   rendered object or status, and a log line's `customer_id=12345` is redacted by the
//!   generated configuration before any exporter.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlobs::aws::apply::{AwsOutcome, Step, StepError};
use mlobs::aws::operator_policy::{OperatorPolicyOptions, RESOURCE_STAR_ACTIONS, operator_policy};
use mlobs::aws::{AwsError, Drift};
use mlobs::controller::status::{AwsResult, Observed};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::archive::{
    ARCHIVE_ACTIONS, ARCHIVE_KMS_ACTIONS, ARCHIVE_KMS_SID, ARCHIVE_SID, KEY_POLICY_SID,
};
use mlobs::desired::aws_plan::destinations::{AMP_ACTIONS, AMP_SID, XRAY_ACTIONS, XRAY_SID};
use mlobs::desired::aws_plan::{COLLECTOR_ACTIONS, KmsKeyPlan, RolePlan};
use mlobs::desired::{Context, Desired, build, dcgm_exporter};
use regex::Regex;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const OIDC: &str =
    "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";
const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/platform/ml-boundary";
const VPC: &str = "vpc-0a1b2c3d4e5f60718";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => vec![],
    }
}

/// Every Not* element anywhere in a document.
fn not_elements(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if matches!(k.as_str(), "NotAction" | "NotResource" | "NotPrincipal") {
                    out.push(format!("{path}.{k}"));
                }
                not_elements(child, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| not_elements(x, &format!("{path}[{i}]"), out)),
        _ => {}
    }
}

fn assert_no_not_elements(what: &str, policy: &Value) {
    let mut found = Vec::new();
    not_elements(policy, "", &mut found);
    assert!(found.is_empty(), "{what}: {found:?} in {policy}");
}

// ---------------------------------------------------------------------------------------------
// IAM

/// One collector pipeline of every identity shape mlobs generates.
#[derive(Debug, Clone, Copy)]
struct Variant {
    pod_identity: bool,
    vpc: bool,
    boundary: bool,
    /// 0: a key mlobs creates, 1: the user's key, 2: no KMS key.
    kms: u8,
    /// 0: logs and metrics, 1: logs only, 2: metrics only.
    signals: u8,
    region: &'static str,
    /// Spans to X-Ray and, with metrics, remote write to an AMP workspace; with logs, the S3
    /// archive.
    destinations: bool,
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for pod_identity in [false, true] {
        for vpc in [false, true] {
            for boundary in [false, true] {
                for kms in 0..3 {
                    for signals in 0..3 {
                        for region in ["us-east-1", "eu-west-1"] {
                            for destinations in [false, true] {
                                out.push(Variant {
                                    pod_identity,
                                    vpc,
                                    boundary,
                                    kms,
                                    signals,
                                    region,
                                    destinations,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn pipeline_of(v: Variant) -> MLObservabilityPipeline {
    let mut identity = json!({"mode": if v.pod_identity { "PodIdentity" } else { "IRSA" }});
    if !v.pod_identity {
        identity["oidcProviderArn"] = json!(OIDC);
    }
    if v.vpc {
        identity["sourceVpc"] = json!(VPC);
    }
    if v.boundary {
        identity["permissionsBoundaryArn"] = json!(BOUNDARY);
    }
    let kms = match v.kms {
        0 => json!({"create": {}}),
        1 => json!({"keyArn": format!("arn:aws:kms:{}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab", v.region)}),
        _ => json!({"disabled": true}),
    };
    let mut spec = json!({
        "clusterName": "prod-gpu", "region": v.region, "identity": identity,
        "encryption": {"kms": kms},
        "logs": {"enabled": v.signals != 2},
        "metrics": {"dcgm": {"enabled": v.signals != 1}},
    });
    if v.destinations {
        spec["traces"] = json!({"otlp": {"enabled": true}, "destination": {"xray": {}}});
        if v.signals != 1 {
            spec["metrics"]["prometheus"] = json!({"workspaceArn": workspace(v)});
        }
        if v.signals != 2 {
            spec["archive"] = json!({"enabled": true});
        }
    }
    serde_json::from_value(
        json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1"}, "spec": spec}),
    )
    .expect("pipeline")
}

fn workspace(v: Variant) -> String {
    format!("arn:aws:aps:{}:{ACCOUNT}:workspace/ws-0a1b2c3d", v.region)
}

fn built(v: Variant) -> Desired {
    let p = pipeline_of(v);
    mlobs::crd::validate::validate_pipeline(&p).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    build(&p, None, &Context::default()).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

fn role(d: &Desired) -> (&Value, &Value, Option<&String>) {
    match &d.aws.role {
        RolePlan::Create {
            trust_policy,
            inline_policy,
            permissions_boundary,
            ..
        } => (trust_policy, inline_policy, permissions_boundary.as_ref()),
        RolePlan::Existing { .. } => panic!("mlobs creates the role"),
    }
}

#[test]
fn collector_inline_policies_are_three_log_actions_on_own_groups_in_one_region() {
    for v in variants() {
        let d = built(v);
        let (_, inline, boundary) = role(&d);
        assert_no_not_elements("inline", inline);
        assert_eq!(inline["Version"], "2012-10-17");
        let groups: BTreeSet<String> = d.aws.log_groups.iter().map(|g| format!("{}:*", g.arn)).collect();
        assert_eq!(groups.len(), if v.signals == 0 { 2 } else { 1 }, "{v:?}");
        let mut sids = vec![];
        for s in statements(inline) {
            assert_eq!(s["Effect"], "Allow", "{v:?}");
            let sid = s["Sid"].as_str().unwrap_or_default().to_string();
            let resources: BTreeSet<String> = list(&s["Resource"]).into_iter().collect();
            match sid.as_str() {
                "WriteOwnLogGroups" => {
                    assert_eq!(list(&s["Action"]), COLLECTOR_ACTIONS, "{v:?}");
                    assert_eq!(resources, groups, "{v:?}: exactly this pipeline's groups");
                    let prefix = format!(
                        "arn:aws:logs:{}:{ACCOUNT}:log-group:/aws/eks/prod-gpu/team-a/train/",
                        v.region
                    );
                    assert!(resources.iter().all(|r| r.starts_with(&prefix)), "{resources:?}");
                }
                // The documented exception: X-Ray has no resource types, so "*" and only its action.
                XRAY_SID => {
                    assert_eq!(list(&s["Action"]), XRAY_ACTIONS, "{v:?}");
                    assert_eq!(s["Resource"], "*", "{v:?}");
                }
                AMP_SID => {
                    assert_eq!(list(&s["Action"]), AMP_ACTIONS, "{v:?}");
                    assert_eq!(resources, BTreeSet::from([workspace(v)]), "{v:?}");
                }
                ARCHIVE_SID => {
                    assert_eq!(list(&s["Action"]), ARCHIVE_ACTIONS, "{v:?}");
                    let bucket = d.aws.archive.as_ref().map(|a| a.arn.clone()).unwrap_or_default();
                    assert_eq!(
                        resources,
                        BTreeSet::from([format!("{bucket}/logs/team-a/train/*")]),
                        "{v:?}"
                    );
                }
                // The key, used by S3 on the collector's behalf: from AWS's network, so with no
                // aws:SourceVpc, but only through S3 in the region (and, for a created key whose id
                // is unknown in advance, only the key carrying the pipeline's alias).
                ARCHIVE_KMS_SID => {
                    assert_eq!(list(&s["Action"]), ARCHIVE_KMS_ACTIONS, "{v:?}");
                    let eq = s["Condition"]["StringEquals"].as_object().cloned().unwrap_or_default();
                    assert_eq!(
                        eq.get("kms:ViaService"),
                        Some(&json!(format!("s3.{}.amazonaws.com", v.region)))
                    );
                    assert_eq!(eq.get("aws:RequestedRegion"), Some(&json!(v.region)), "{v:?}");
                    assert_eq!(eq.len(), 2, "{v:?}: {s}");
                    let key_resource = format!("arn:aws:kms:{}:{ACCOUNT}:key/", v.region);
                    assert!(resources.iter().all(|r| r.starts_with(&key_resource)), "{resources:?}");
                    let aliases = &s["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"];
                    assert_eq!(v.kms == 0, !aliases.is_null(), "{v:?}: {s}");
                    assert_ne!(v.kms, 2, "no key, no key statement");
                    sids.push(sid);
                    continue;
                }
                other => panic!("{v:?}: unexpected statement {other:?} in {inline}"),
            }
            if sid != XRAY_SID {
                assert!(!resources.contains("*"), "{v:?}: {s}");
            }
            let cond = s["Condition"]["StringEquals"].as_object().cloned().unwrap_or_default();
            assert_eq!(cond.get("aws:RequestedRegion"), Some(&json!(v.region)), "{v:?}");
            assert_eq!(cond.get("aws:SourceVpc"), v.vpc.then(|| json!(VPC)).as_ref(), "{v:?}");
            assert_eq!(cond.len(), 1 + usize::from(v.vpc), "{v:?}: no other condition");
            assert_eq!(
                s.as_object().map(|o| o.len()),
                Some(5),
                "Sid, Effect, Action, Resource, Condition: {s}"
            );
            sids.push(sid);
        }
        let mut want = vec!["WriteOwnLogGroups"];
        if v.destinations {
            want.push(XRAY_SID);
            if v.signals != 2 {
                want.push(ARCHIVE_SID);
                if v.kms != 2 {
                    want.push(ARCHIVE_KMS_SID);
                }
            }
            if v.signals != 1 {
                want.push(AMP_SID);
            }
        }
        assert_eq!(sids, want, "{v:?}");
        assert_eq!(boundary.map(String::as_str), v.boundary.then_some(BOUNDARY), "{v:?}");
    }
}

#[test]
fn every_trust_policy_names_exactly_one_service_account() {
    for v in variants() {
        let d = built(v);
        let (trust, _, _) = role(&d);
        assert_no_not_elements("trust", trust);
        let sa = d
            .objects
            .service_account
            .metadata
            .name
            .clone()
            .expect("ServiceAccount name");
        let ns = d.objects.service_account.metadata.namespace.clone().expect("namespace");
        let s = statements(trust);
        assert_eq!(s.len(), 1, "{v:?}: {trust}");
        let s = &s[0];
        assert!(s.get("Resource").is_none(), "a trust policy has no Resource: {s}");
        assert_eq!(s["Effect"], "Allow");
        let cond = s["Condition"].as_object().cloned().unwrap_or_default();
        // Only exact matches: StringLike (or any other operator) could match many accounts.
        assert_eq!(cond.keys().collect::<Vec<_>>(), ["StringEquals"], "{v:?}: {s}");
        let eq = cond["StringEquals"].as_object().cloned().unwrap_or_default();
        for value in eq.values() {
            assert!(value.is_string(), "one value per key, not a list: {s}");
            assert!(!value.as_str().unwrap_or_default().contains(['*', '?']), "{s}");
        }
        if v.pod_identity {
            assert_eq!(s["Principal"], json!({"Service": "pods.eks.amazonaws.com"}));
            assert_eq!(list(&s["Action"]), ["sts:AssumeRole", "sts:TagSession"]);
            assert_eq!(eq["aws:RequestTag/kubernetes-service-account"], json!(sa));
            assert_eq!(eq["aws:RequestTag/kubernetes-namespace"], json!(ns));
            assert_eq!(eq["aws:RequestTag/eks-cluster-name"], json!("prod-gpu"));
            assert_eq!(eq.len(), 3);
            let pi = d.aws.pod_identity.as_ref().expect("association");
            assert_eq!(
                (pi.namespace.as_str(), pi.service_account.as_str()),
                (ns.as_str(), sa.as_str())
            );
        } else {
            assert_eq!(s["Principal"], json!({"Federated": OIDC}));
            assert_eq!(list(&s["Action"]), ["sts:AssumeRoleWithWebIdentity"]);
            let issuer = OIDC.split_once(":oidc-provider/").map(|x| x.1).expect("issuer");
            let subs: Vec<&String> = eq.keys().filter(|k| k.ends_with(":sub")).collect();
            assert_eq!(subs, [&format!("{issuer}:sub")], "{s}");
            assert_eq!(
                eq[&format!("{issuer}:sub")],
                json!(format!("system:serviceaccount:{ns}:{sa}"))
            );
            assert_eq!(eq[&format!("{issuer}:aud")], json!("sts.amazonaws.com"));
            assert_eq!(eq.len(), 2);
            assert!(d.aws.pod_identity.is_none());
        }
    }
}

#[test]
fn key_policies_use_star_only_as_this_key_and_bind_logs_to_our_groups_in_the_region() {
    for v in variants().into_iter().filter(|v| v.kms == 0) {
        let d = built(v);
        let Some(KmsKeyPlan::Create { policy, .. }) = &d.aws.kms else {
            panic!("{v:?} creates a key")
        };
        assert_no_not_elements("key policy", policy);
        let groups: Vec<String> = d.aws.log_groups.iter().map(|g| g.arn.clone()).collect();
        let st = statements(policy);
        let archive = v.destinations && v.signals != 2;
        assert_eq!(st.len(), 2 + usize::from(archive), "{v:?}");
        for s in &st {
            // Documented exception: in a key policy "*" is the key itself, the only allowed form.
            assert_eq!(s["Resource"], "*", "{s}");
            match s["Sid"].as_str() {
                Some("AccountRoot") => {
                    assert_eq!(s["Principal"], json!({"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}));
                    assert_eq!(s["Action"], "kms:*");
                }
                Some("CloudWatchLogs") => {
                    assert_eq!(
                        s["Principal"],
                        json!({"Service": format!("logs.{}.amazonaws.com", v.region)})
                    );
                    assert_eq!(
                        list(&s["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]),
                        groups
                    );
                    assert!(list(&s["Action"]).iter().all(|a| a.starts_with("kms:") && a != "kms:*"));
                }
                // The account as principal (the role does not exist yet when the key is made),
                // narrowed to the collector role, and to S3 in the region.
                Some(KEY_POLICY_SID) => {
                    assert!(archive, "{v:?}");
                    assert_eq!(s["Principal"], json!({"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}));
                    assert_eq!(list(&s["Action"]), ARCHIVE_KMS_ACTIONS);
                    assert_eq!(s["Condition"]["ArnEquals"]["aws:PrincipalArn"], json!(d.aws.role.arn()));
                    assert_eq!(
                        s["Condition"]["StringEquals"]["kms:ViaService"],
                        json!(format!("s3.{}.amazonaws.com", v.region))
                    );
                }
                other => panic!("unexpected statement {other:?}"),
            }
        }
    }
}

fn operator_variants() -> Vec<(String, OperatorPolicyOptions)> {
    let mut out = Vec::new();
    let base = OperatorPolicyOptions::new(ACCOUNT, "us-east-1");
    out.push(("default".into(), base.clone()));
    let mut b = base.clone();
    b.permissions_boundary_arn = Some(BOUNDARY.into());
    b.cluster_name = Some("prod-gpu".into());
    out.push(("boundary".into(), b));
    let mut r = base;
    r.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    out.push(("two-regions".into(), r));
    out
}

#[test]
fn the_operator_policy_has_star_only_where_aws_has_no_resource_and_region_conditions_everywhere_but_iam() {
    let star: BTreeSet<&str> = RESOURCE_STAR_ACTIONS.into_iter().collect();
    for (name, o) in operator_variants() {
        let p = operator_policy(&o);
        assert_no_not_elements(&name, &p);
        for s in statements(&p) {
            assert!(s.get("Principal").is_none(), "{name}: an identity policy: {s}");
            assert_eq!(s["Effect"], "Allow", "{name}: {s}");
            let actions = list(&s["Action"]);
            let resources = list(&s["Resource"]);
            if resources.iter().any(|r| r == "*") {
                // Documented exceptions: actions the Service Authorization Reference gives no
                // resource type (they can only be granted on "*").
                assert!(actions.iter().all(|a| star.contains(a.as_str())), "{name}: {s}");
            }
            let region = list(&s["Condition"]["StringEquals"]["aws:RequestedRegion"]);
            if actions.iter().all(|a| a.starts_with("iam:")) {
                // IAM is global: conditioned on the role path and tags instead (its requests name
                // us-east-1 whatever the operator's region), and only on mlobs' roles.
                assert!(region.is_empty(), "{name}: {s}");
                // Documented exception: iam:GetAccountAuthorizationDetails (the batched role
                // listing of a resync) has no resource type, so it is granted on "*", alone in
                // its statement. It only reads; without it mlobs reads each role by name.
                let listing = actions == ["iam:GetAccountAuthorizationDetails"] && resources == ["*"];
                assert!(
                    listing
                        || resources
                            .iter()
                            .all(|r| r.starts_with(&format!("arn:aws:iam::{ACCOUNT}:"))),
                    "{s}"
                );
            } else {
                assert!(
                    actions.iter().all(|a| !a.starts_with("iam:")),
                    "{name}: IAM mixed in {s}"
                );
                assert_eq!(region, o.regions, "{name}: {s}");
            }
        }
    }
}

fn parliament() -> PathBuf {
    let p = root().join(".venv/bin/parliament");
    assert!(p.exists(), "{} is missing: run `make venv`", p.display());
    p
}

/// Findings parliament may report, each with its reason (the same allowances as
/// scripts/lint-iam.sh): a trust policy is a resource policy with a Principal and no Resource,
/// and parliament does not know EKS OIDC providers; kms:CreateAlias/DeleteAlias are authorized
/// on the key and on the alias in two statements on purpose; parliament 1.6.4 does not know
/// `kms:ResourceAliases` on key operations (the archive's key statement), which the KMS developer
/// guide documents for every operation authorized on a key; the operator's bucket policy and
/// lifecycle writes (Object Lock COMPLIANCE keeps every version whatever they say); Kinesis
/// UpdateShardCount/UpdateStreamMode on the stream, which parliament 1.6.4's table predates.
fn allowed(f: &Value) -> bool {
    let file = f["location"]["filepath"].as_str().unwrap_or_default();
    let issue = f["issue"].as_str().unwrap_or_default();
    (file.ends_with(".trust.json")
        && (issue == "UNKNOWN_FEDERATION_SOURCE"
            || (issue == "MALFORMED" && f["detail"] == "Statement contains neither Resource nor NotResource")))
        || (issue == "RESOURCE_MISMATCH" && (file.contains(".KmsAliasOwnKeys.") || file.contains(".KmsOwnAliases.")))
        || (issue == "UNKNOWN_CONDITION_FOR_ACTION"
            && file.ends_with(".inline.json")
            && ["kms:Decrypt", "kms:GenerateDataKey"]
                .iter()
                .any(|a| f["detail"] == format!("Unknown condition kms:ResourceAliases for action {a}")))
        || (issue == "RESOURCE_POLICY_PRIVILEGE_ESCALATION" && file.contains(".S3ArchivePolicyAndLifecycle."))
        || (issue == "RESOURCE_MISMATCH" && file.contains(".KinesisScaleStreams."))
}

#[test]
fn parliament_finds_nothing_unexplained_in_any_generated_policy() {
    let dir = std::env::temp_dir().join(format!("mlobs-security-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut files = Vec::new();
    let mut write = |name: String, doc: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(doc).expect("json")).expect("write");
        files.push(path.display().to_string());
    };
    for (i, v) in variants().into_iter().filter(|v| v.kms == 0).enumerate() {
        let d = built(v);
        let (trust, inline, _) = role(&d);
        write(format!("collector-{i}.trust.json"), trust);
        write(format!("collector-{i}.inline.json"), inline);
    }
    for (name, o) in operator_variants() {
        let p = operator_policy(&o);
        for s in statements(&p) {
            let sid = s["Sid"].as_str().unwrap_or("NoSid").to_string();
            write(
                format!("operator-{name}.{sid}.json"),
                &json!({"Version": p["Version"], "Statement": [s]}),
            );
        }
    }
    let out = Command::new(parliament())
        .args(["--json", "--files", &files.join(",")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("parliament runs");
    let _ = std::fs::remove_dir_all(&dir);
    let findings: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("parliament --json line"))
        .collect();
    assert!(
        out.status.success() || !findings.is_empty(),
        "parliament failed without a finding: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad: Vec<&Value> = findings.iter().filter(|f| !allowed(f)).collect();
    println!(
        "parliament: {} policy documents, {} findings, {} explained, {} not",
        files.len(),
        findings.len(),
        findings.len() - bad.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "{bad:#?}");
}

// ---------------------------------------------------------------------------------------------
// Pods

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn docs(yaml: &str) -> Vec<Value> {
    let all: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML");
    all.into_iter().filter(|d| !d.is_null()).collect()
}

/// The operator's install artefacts: the chart with default values, with every option on, and
/// the kustomize base.
fn operator_manifests() -> Vec<(String, Vec<Value>)> {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make venv`", python.display());
    let chart = |args: &[&str]| {
        docs(&run(
            Command::new(&python)
                .args(["scripts/chart.py", "template", "charts/mlobs-operator"])
                .args(args),
            "scripts/chart.py",
        ))
    };
    vec![
        ("chart (defaults)".into(), chart(&[])),
        (
            "chart (all options)".into(),
            chart(&["-f", "charts/mlobs-operator/ci/all-on-values.yaml"]),
        ),
        (
            "kustomize".into(),
            docs(&run(
                Command::new(kubectl()).args(["kustomize", "config/default"]),
                "kubectl kustomize",
            )),
        ),
    ]
}

/// The pod spec of a workload object, if it has one.
fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Pod" => doc.get("spec"),
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => doc.pointer("/spec/template/spec"),
        "CronJob" => doc.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// What the Pod Security Standards' "restricted" profile (baseline included) refuses in a pod,
/// one line per violation. Follows kubernetes.io/docs/concepts/security/pod-security-standards.
fn pss_restricted_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let psc = &pod["securityContext"];
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[k] == json!(true) {
            out.push(format!("pod: {k}"));
        }
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default();
        let kinds: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        for k in kinds {
            if k == "hostPath" {
                out.push(format!(
                    "hostPath volume {name} ({})",
                    v["hostPath"]["path"].as_str().unwrap_or_default()
                ));
            } else if !RESTRICTED_VOLUMES.contains(&k.as_str()) {
                out.push(format!("volume {name}: type {k}"));
            }
        }
    }
    if let Some(sysctls) = psc["sysctls"].as_array()
        && !sysctls.is_empty()
    {
        out.push("pod: sysctls".into());
    }
    let pod_non_root = psc["runAsNonRoot"] == json!(true);
    let pod_seccomp = psc["seccompProfile"]["type"].as_str();
    if pod_seccomp == Some("Unconfined") {
        out.push("pod: seccomp Unconfined".into());
    }
    if psc["runAsUser"] == json!(0) {
        out.push("pod: runAsUser 0".into());
    }
    if psc["windowsOptions"]["hostProcess"] == json!(true) {
        out.push("pod: hostProcess".into());
    }
    check_selinux(&psc["seLinuxOptions"], "pod", &mut out);
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let sc = &c["securityContext"];
        let who = format!("container {name}");
        if sc["privileged"] == json!(true) {
            out.push(format!("{who}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != json!(false) {
            out.push(format!("{who}: allowPrivilegeEscalation is not false"));
        }
        let non_root = match &sc["runAsNonRoot"] {
            Value::Bool(b) => *b,
            _ => pod_non_root,
        };
        if !non_root {
            out.push(format!("{who}: runAsNonRoot is not true"));
        }
        if sc["runAsUser"] == json!(0) {
            out.push(format!("{who}: runAsUser 0"));
        }
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{who}: seccomp {seccomp:?}"));
        }
        let drop = list(&sc["capabilities"]["drop"]);
        if !drop.iter().any(|d| d == "ALL") {
            out.push(format!("{who}: capabilities do not drop ALL"));
        }
        for add in list(&sc["capabilities"]["add"]) {
            if add != "NET_BIND_SERVICE" {
                out.push(format!("{who}: capability {add} added"));
            }
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            out.push(format!("{who}: procMount"));
        }
        if sc["windowsOptions"]["hostProcess"] == json!(true) {
            out.push(format!("{who}: hostProcess"));
        }
        check_selinux(&sc["seLinuxOptions"], &who, &mut out);
        for p in c["ports"].as_array().into_iter().flatten() {
            if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                out.push(format!("{who}: hostPort"));
            }
        }
    }
    out.sort();
    out
}

fn check_selinux(se: &Value, who: &str, out: &mut Vec<String>) {
    if se.is_null() {
        return;
    }
    let allowed = [
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    if se["type"].as_str().is_some_and(|t| !allowed.contains(&t)) || !se["user"].is_null() || !se["role"].is_null() {
        out.push(format!("{who}: seLinuxOptions"));
    }
}

#[test]
fn the_operators_manifests_meet_pod_security_restricted() {
    let mut pods = 0;
    for (name, objects) in operator_manifests() {
        let workloads: Vec<&Value> = objects.iter().filter(|d| pod_spec(d).is_some()).collect();
        assert!(!workloads.is_empty(), "{name}: no workload rendered");
        for w in workloads {
            pods += 1;
            let v = pss_restricted_violations(pod_spec(w).expect("pod spec"));
            assert!(v.is_empty(), "{name}: {} {}: {v:?}", w["kind"], w["metadata"]["name"]);
        }
    }
    println!("{pods} operator pod templates checked against Pod Security restricted");
}

#[test]
fn the_checker_catches_what_restricted_forbids() {
    // The checker above is only as good as this: a pod breaking each rule once.
    let bad = json!({
        "hostNetwork": true, "hostPID": true,
        "securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}]},
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "x", "path": "/"}}],
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
            "securityContext": {"privileged": true, "runAsUser": 0, "procMount": "Unmasked",
                "capabilities": {"add": ["NET_ADMIN", "NET_BIND_SERVICE"]}, "seccompProfile": {"type": "Unconfined"},
                "seLinuxOptions": {"type": "spc_t"}}}]
    });
    assert_eq!(
        pss_restricted_violations(&bad),
        [
            "container c: allowPrivilegeEscalation is not false",
            "container c: capabilities do not drop ALL",
            "container c: capability NET_ADMIN added",
            "container c: hostPort",
            "container c: privileged",
            "container c: procMount",
            "container c: runAsNonRoot is not true",
            "container c: runAsUser 0",
            "container c: seLinuxOptions",
            "container c: seccomp Some(\"Unconfined\")",
            "hostPath volume h (/)",
            "pod: hostNetwork",
            "pod: hostPID",
            "pod: sysctls",
            "volume n: type nfs",
        ]
    );
}

fn collector_pod(spec: Value) -> (Value, Value) {
    let mut s = json!({"clusterName": "prod-gpu", "region": "us-east-1",
        "identity": {"mode": "IRSA", "oidcProviderArn": OIDC}});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    let p: MLObservabilityPipeline = serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1",
        "kind": "MLObservabilityPipeline", "metadata": {"name": "train", "namespace": "team-a"}, "spec": s}))
    .expect("pipeline");
    let d = build(&p, None, &Context::default()).expect("build");
    let ds = serde_json::to_value(&d.objects.daemon_set).expect("json");
    (pod_spec(&ds).cloned().expect("pod"), ds)
}

#[test]
fn the_collectors_exceptions_to_restricted_are_exactly_its_host_paths_and_uid_0() {
    // uid 0 (every capability dropped) reads the root:root 0640 files under /var/log/pods, which
    // it mounts read-only, and owns its queue directory on the node; nothing else is relaxed.
    let (pod, _) = collector_pod(json!({}));
    assert_eq!(
        pss_restricted_violations(&pod),
        [
            "container otel-collector: runAsNonRoot is not true",
            "container otel-collector: runAsUser 0",
            "hostPath volume pod-logs (/var/log/pods)",
            "hostPath volume queue (/var/lib/mlobs/team-a-train)",
        ]
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mount = |n: &str| mounts.iter().find(|m| m["name"] == n).cloned().unwrap_or_default();
    assert_eq!(mount("pod-logs")["readOnly"], true);
    assert_eq!(mount("pod-logs")["mountPath"], "/var/log/pods");
    assert_eq!(mount("queue")["mountPath"], "/var/lib/mlobs/team-a-train");
    assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(pod["automountServiceAccountToken"] != json!(true) || pod["serviceAccountName"].is_string());

    // Without logs there is no /var/log/pods mount at all.
    let (pod, _) = collector_pod(json!({"logs": {"enabled": false}}));
    assert_eq!(
        pss_restricted_violations(&pod),
        [
            "container otel-collector: runAsNonRoot is not true",
            "container otel-collector: runAsUser 0",
            "hostPath volume queue (/var/lib/mlobs/team-a-train)",
        ]
    );
}

fn exporter_pod(metrics: &[&str]) -> Value {
    let policy: GpuTelemetryPolicy = serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1",
        "kind": "GpuTelemetryPolicy", "metadata": {"name": "platform"},
        "spec": {"dcgmExporter": {"mode": "Managed"}, "metrics": {"allowed": metrics}}}))
    .expect("policy");
    let x = dcgm_exporter::from_policy(&policy, "mlobs-system").expect("managed");
    let (ds, _, _) = dcgm_exporter::build(&x, None);
    pod_spec(&serde_json::to_value(&ds).expect("json"))
        .cloned()
        .expect("pod")
}

#[test]
fn the_dcgm_exporters_exceptions_are_its_pod_resources_socket_and_sys_admin_only_for_profiling() {
    // The exporter runs as its image's user (root): the kubelet's pod-resources socket it maps
    // GPUs to pods through is root-only. It is not documented in dcgm_exporter.rs; pinned here.
    let base = [
        "container dcgm-exporter: runAsNonRoot is not true",
        "hostPath volume pod-resources (/var/lib/kubelet/pod-resources)",
    ];
    let device = exporter_pod(&["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"]);
    assert_eq!(pss_restricted_violations(&device), base);
    let profiling = exporter_pod(&["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_SM_ACTIVE"]);
    let mut with_prof: Vec<&str> = base.to_vec();
    with_prof.extend([
        // The API server refuses allowPrivilegeEscalation=false next to CAP_SYS_ADMIN.
        "container dcgm-exporter: allowPrivilegeEscalation is not false",
        "container dcgm-exporter: capability SYS_ADMIN added",
    ]);
    with_prof.sort();
    assert_eq!(pss_restricted_violations(&profiling), with_prof);
    let mount = device["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "pod-resources").cloned())
        .expect("mount");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        device["automountServiceAccountToken"], false,
        "no API token in the exporter"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets and data

#[test]
fn no_shipped_rbac_grants_anything_on_secrets_or_wildcards() {
    let mut roles: Vec<(String, Value)> = Vec::new();
    for entry in std::fs::read_dir(root().join("config/rbac")).expect("config/rbac") {
        let path = entry.expect("entry").path();
        for d in docs(&std::fs::read_to_string(&path).expect("read")) {
            roles.push((path.display().to_string(), d));
        }
    }
    for (name, objects) in operator_manifests() {
        roles.extend(objects.into_iter().map(|d| (name.clone(), d)));
    }
    // The collector's own ClusterRole, built per pipeline.
    let p = pipeline_of(variants()[0]);
    let d = build(&p, None, &Context::default()).expect("build");
    roles.push((
        "collector ClusterRole".into(),
        serde_json::to_value(&d.objects.cluster_role).expect("json"),
    ));
    let mut rules = 0;
    for (from, role) in roles
        .iter()
        .filter(|(_, d)| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
    {
        assert!(
            role.get("aggregationRule").is_none(),
            "{from}: aggregated roles grant what others add"
        );
        for rule in role["rules"].as_array().into_iter().flatten() {
            rules += 1;
            let resources = list(&rule["resources"]);
            assert!(
                !resources
                    .iter()
                    .any(|r| r == "*" || r == "secrets" || r.starts_with("secrets/")),
                "{from}: {rule}"
            );
            assert!(!list(&rule["verbs"]).iter().any(|v| v == "*"), "{from}: {rule}");
            assert!(!list(&rule["apiGroups"]).iter().any(|g| g == "*"), "{from}: {rule}");
        }
    }
    println!("{rules} RBAC rules checked: none on secrets, no wildcard");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_source_file_uses_the_secret_api() {
    // The operator reads no Secret, so it needs no RBAC on them and holds no credentials of
    // others: any use of the Secret API types (or a "secrets" resource) in src/ fails here.
    let secret_api = Regex::new(
        r#"\b(Secret|SecretList|SecretVolumeSource|SecretKeySelector|SecretEnvSource|SecretProjection|SecretReference)\b|"secrets""#,
    )
    .expect("regex");
    // The one exception: the collector pod's environment names the Datadog API key by a
    // `SecretKeySelector`, which the kubelet resolves when the pod starts. The operator writes
    // only that reference (name and key from the spec) and never reads the Secret.
    let reference_only = |f: &Path, line: &str| {
        f.ends_with("src/desired/collector_daemonset/destinations.rs")
            && secret_api.find_iter(line).all(|m| m.as_str() == "SecretKeySelector")
    };
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 20, "{files:?}");
    let mut hits = Vec::new();
    let mut references = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for (i, line) in text.lines().enumerate() {
            // Comments may name Secrets (documentation of the reference above).
            if line.trim_start().starts_with("//") || !secret_api.is_match(line) {
                continue;
            }
            if reference_only(f, line) {
                references += 1;
            } else {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
    assert!(references > 0, "the Datadog key reference moved: update the exception");
}

/// Patterns of AWS credentials (access key ids, secret key names and values, session tokens).
fn credential_patterns() -> Vec<Regex> {
    [
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
        r"(?i)aws_secret_access_key",
        r"(?i)secret_?access_?key",
        r"(?i)aws_session_token",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("regex"))
    .collect()
}

fn credentials_in(text: &str) -> Vec<String> {
    credential_patterns()
        .iter()
        .flat_map(|re| re.find_iter(text).map(|m| m.as_str().to_string()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn no_credentials_in_config_maps_rendered_objects_or_status() {
    let pol = |f: &str| -> GpuTelemetryPolicy {
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("config/samples").join(f)).expect("sample"))
            .expect("policy")
    };
    let policies = [
        None,
        Some(pol("policy-default.yaml")),
        Some(pol("policy-gpu-operator.yaml")),
    ];
    for v in variants().into_iter().step_by(7) {
        for policy in &policies {
            let p = pipeline_of(v);
            let d = build(&p, policy.as_ref(), &Context::default()).expect("build");
            let cm = serde_json::to_string(&d.objects.config_map).expect("json");
            let ds = serde_json::to_value(&d.objects.daemon_set).expect("json");
            for (what, text) in [
                ("ConfigMap", cm),
                ("DaemonSet", ds.to_string()),
                (
                    "ServiceAccount",
                    serde_json::to_string(&d.objects.service_account).expect("json"),
                ),
            ] {
                assert!(
                    credentials_in(&text).is_empty(),
                    "{v:?} {what}: {:?}",
                    credentials_in(&text)
                );
            }
            // Credentials come from the pod's identity (IRSA or Pod Identity), never from the spec.
            let c = &ds["spec"]["template"]["spec"]["containers"][0];
            for e in c["env"].as_array().into_iter().flatten() {
                let name = e["name"].as_str().unwrap_or_default();
                // The archive's checksum switch is an SDK setting with a literal value, not a credential.
                let setting = ["AWS_REGION", "AWS_REQUEST_CHECKSUM_CALCULATION"].contains(&name);
                assert!(!name.starts_with("AWS_") || setting, "{name}");
                assert!(e["valueFrom"]["secretKeyRef"].is_null(), "{e}");
            }
            assert!(c["envFrom"].is_null());
            let pod = &ds["spec"]["template"]["spec"];
            assert!(
                !pod["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v.get("secret").is_some()),
                "no Secret volume"
            );
        }
    }
    // A status with everything the operator writes in it, including an AWS error message.
    let p = pipeline_of(variants()[0]);
    let d = build(&p, None, &Context::default()).expect("build");
    let out = AwsOutcome {
        kms_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
        kms_key_arn: Some(format!(
            "arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        )),
        log_group_arns: d.aws.log_groups.iter().map(|g| g.arn.clone()).collect(),
        archive_bucket_arn: None,
        hot_path_stream_arn: None,
        hot_path_role_arn: None,
        hot_path_association_id: None,
        amp_workspace: None,
        role_arn: Some(d.aws.role.arn().to_string()),
        pod_identity_association_id: None,
        drift: vec![Drift {
            resource: "logGroup:/aws/eks/prod-gpu/team-a/train/logs".into(),
            field: "retentionInDays".into(),
            desired: "30".into(),
            actual: "1".into(),
            corrected: true,
        }],
        ..Default::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let mut ok = Observed::new(&p);
    ok.aws = Some(AwsResult::Ok {
        out: Box::new(out),
        ready: true,
    });
    let status = ok.into_status(&p, &Default::default(), now.clone());
    let mut failed = Observed::new(&p);
    failed.aws = Some(AwsResult::Failed(Box::new(StepError {
        step: Step::IamRole,
        error: AwsError::AccessDenied {
            operation: "PutRolePolicy".into(),
            resource: "iamRole:mlobs-prod-gpu-team-a-train".into(),
            code: "AccessDenied".into(),
            message: "User: arn:aws:sts::123456789012:assumed-role/mlobs-operator/i-0abc is not authorized".into(),
        },
        partial: Box::default(),
    })));
    let status2 = failed.into_status(&p, &status, now);
    for s in [&status, &status2] {
        let text = serde_json::to_string(s).expect("json");
        assert!(credentials_in(&text).is_empty(), "{:?}", credentials_in(&text));
    }
    // The status schema has no field that could hold one.
    let crd =
        serde_json::to_string(&mlobs::crd::validate::crd_schema::<MLObservabilityPipeline>()["properties"]["status"])
            .expect("json")
            .to_lowercase();
    for word in ["secret", "password", "token", "credential", "accesskey"] {
        assert!(!crd.contains(word), "status schema mentions {word}");
    }
}

#[test]
fn mlobs_render_never_prints_the_credentials_it_runs_with() {
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let out = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args([
            "render",
            "-f",
            "config/samples/pipeline-full.yaml",
            "--policy",
            "config/samples/policy-default.yaml",
        ])
        .current_dir(root())
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN")
        .output()
        .expect("mlobs render");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind: ConfigMap"), "rendered the ConfigMap");
    for s in [key_id, secret, "FwoGZXIvYXdzEXAMPLETOKEN"] {
        assert!(!text.contains(s), "render printed {s}");
    }
    assert!(credentials_in(&text).is_empty(), "{:?}", credentials_in(&text));
}

/// The OTTL string literal starting at `s` (after its opening quote): unescaped, and the rest.
fn ottl_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// `replace_pattern(body, "<regex>", "<replacement>")` → (regex, replacement), both as the
/// collector sees them after its `$$` → `$` config unescaping.
fn replace_pattern(statement: &str) -> (String, String) {
    let unescaped = statement.replace("$$", "$");
    let rest = unescaped
        .strip_prefix("replace_pattern(body, \"")
        .unwrap_or_else(|| panic!("not a replace_pattern on body: {statement}"));
    let (pattern, rest) = ottl_string(rest).expect("pattern literal");
    let rest = rest.strip_prefix(", \"").expect("second argument");
    let (replacement, rest) = ottl_string(rest).expect("replacement literal");
    assert_eq!(rest, ")", "{statement}");
    (pattern, replacement)
}

/// The collector config of a pipeline, parsed from the ConfigMap the operator applies.
fn collector_config(spec: Value, policy: Option<&GpuTelemetryPolicy>) -> Value {
    let mut s = json!({"clusterName": "prod-gpu", "region": "us-east-1",
        "identity": {"mode": "IRSA", "oidcProviderArn": OIDC}});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    let p: MLObservabilityPipeline = serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1",
        "kind": "MLObservabilityPipeline", "metadata": {"name": "train", "namespace": "team-a"}, "spec": s}))
    .expect("pipeline");
    mlobs::crd::validate::validate_pipeline(&p).expect("valid");
    let d = build(&p, policy, &Context::default()).expect("build");
    let yaml = d
        .objects
        .config_map
        .data
        .as_ref()
        .and_then(|m| m.values().next().cloned())
        .expect("config in the ConfigMap");
    serde_saphyr::from_str(&yaml).expect("collector config is YAML")
}

/// Applies every redaction statement of the config to `line`, in order, as the collector would.
fn redact(config: &Value, line: &str) -> String {
    let t = &config["processors"]["transform/redact"];
    assert_eq!(
        t["error_mode"], "propagate",
        "a failing statement drops the record, never ships it"
    );
    let mut out = line.to_string();
    for group in t["log_statements"].as_array().expect("log_statements") {
        assert_eq!(group["context"], "log");
        for st in group["statements"].as_array().expect("statements") {
            let (pattern, replacement) = replace_pattern(st.as_str().expect("string"));
            let re = Regex::new(&pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            out = re.replace_all(&out, replacement.as_str()).into_owned();
        }
    }
    out
}

/// Every pipeline that carries logs runs the redaction processor, and nothing routes logs
/// around it (no connectors, no logs pipeline without it).
fn assert_redaction_precedes_every_log_exporter(config: &Value) {
    assert!(
        config.get("connectors").is_none(),
        "a connector could route logs around the processor"
    );
    let pipelines = config["service"]["pipelines"].as_object().expect("pipelines");
    let logs: Vec<(&String, &Value)> = pipelines
        .iter()
        .filter(|(name, _)| *name == "logs" || name.starts_with("logs/"))
        .collect();
    assert!(!logs.is_empty(), "no logs pipeline");
    let mut log_exporters = BTreeSet::new();
    for (name, p) in &logs {
        let processors = list(&p["processors"]);
        assert!(
            processors.contains(&"transform/redact".to_string()),
            "{name}: {processors:?}"
        );
        // Processors run in list order, all before the pipeline's exporters.
        let at = processors
            .iter()
            .position(|x| x == "transform/redact")
            .expect("present");
        assert!(at < processors.len() - 1 && processors.last().map(String::as_str) == Some("batch"));
        log_exporters.extend(list(&p["exporters"]));
    }
    assert!(!log_exporters.is_empty());
    // An exporter of log records is used by no pipeline without the processor.
    for (name, p) in pipelines {
        let exporters = list(&p["exporters"]);
        if exporters.iter().any(|e| log_exporters.contains(e)) {
            assert!(
                list(&p["processors"]).contains(&"transform/redact".to_string()),
                "{name}"
            );
        }
    }
}

const LINE: &str = r#"2024-05-01T10:00:00Z INFO order placed customer_id=12345 amount=30 note="customer_id=99 again""#;

#[test]
fn customer_ids_are_redacted_before_any_exporter() {
    let redaction =
        json!([{"name": "customer-ids", "pattern": "customer_id=[0-9]+", "replacement": "customer_id=<redacted>"}]);
    for otlp in [false, true] {
        let c = collector_config(
            json!({"logs": {"redaction": redaction}, "traces": {"otlp": {"enabled": otlp}}}),
            None,
        );
        assert_redaction_precedes_every_log_exporter(&c);
        let out = redact(&c, LINE);
        assert_eq!(
            out,
            r#"2024-05-01T10:00:00Z INFO order placed customer_id=<redacted> amount=30 note="customer_id=<redacted> again""#
        );
        assert!(!out.contains("12345") && !out.contains("=99"));
    }
    // A replacement that keeps a capture group: `$1` must reach the collector as `$$1`.
    let keep = json!([{"pattern": "customer_id=([0-9]{2})[0-9]*", "replacement": "customer_id=$1***"}]);
    let c = collector_config(json!({"logs": {"redaction": keep}}), None);
    let statement = c["processors"]["transform/redact"]["log_statements"][0]["statements"][0]
        .as_str()
        .expect("statement")
        .to_string();
    assert!(statement.contains("$$1***"), "{statement}");
    assert_eq!(redact(&c, "customer_id=12345"), "customer_id=12***");
}

#[test]
fn a_policys_required_redaction_reaches_a_pipeline_that_sets_none() {
    let policy: GpuTelemetryPolicy = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("config/samples/policy-default.yaml")).expect("sample"),
    )
    .expect("policy");
    let c = collector_config(
        json!({"logs": {"logGroup": {"name": "/aws/eks/prod-gpu/team-a/train/logs"}}}),
        Some(&policy),
    );
    assert_redaction_precedes_every_log_exporter(&c);
    let out = redact(&c, &format!("{LINE} Authorization: Bearer abc.def-ghi"));
    assert!(
        !out.contains("12345") && out.contains("customer_id=<redacted>"),
        "{out}"
    );
    assert!(out.contains("Bearer ***") && !out.contains("abc.def-ghi"), "{out}");
}

/// The venv's kubectl (`make venv` installs one), else the machine's.
fn kubectl() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubectl");
    if venv.exists() { venv } else { "kubectl".into() }
}
