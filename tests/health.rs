//! GitOps health of the two kinds: the Argo CD Lua in config/argocd (run here in Lua 5.1, the
//! language of Argo CD's gopher-lua), Flux's healthCheckExprs in config/flux (evaluated with the
//! `cel` crate) and kstatus's generic rules (encoded below from kubernetes-sigs/cli-utils
//! pkg/kstatus/status/generic.go and status.go), over the same status samples: hand-written ones
//! for every Ready reason, and statuses computed by the controller's own `Observed::into_status`.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlobs::aws::AwsError;
use mlobs::aws::apply::{AwsOutcome, Step, StepError};
use mlobs::controller::dataflow::{DataFlowObs, GroupReading, Read, Signal};
use mlobs::controller::status::{AwsResult, Observed};
use mlobs::crd::{MLObservabilityPipeline, MLObservabilityPipelineStatus};
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Healthy,
    Progressing,
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pipeline,
    Policy,
}

impl Kind {
    fn lua(self) -> &'static str {
        match self {
            Kind::Pipeline => "config/argocd/health-mlobservabilitypipeline.lua",
            Kind::Policy => "config/argocd/health-gputelemetrypolicy.lua",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Pipeline => "MLObservabilityPipeline",
            Kind::Policy => "GpuTelemetryPolicy",
        }
    }
}

/// Runs a health script the way Argo CD does: the object as the global `obj`, a table back.
fn argocd(kind: Kind, obj: &Value) -> (Health, String) {
    let lua = Lua::new();
    // Absent and null fields are nil, as in Argo CD (not mlua's null light userdata).
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: mlua::Table = lua
        .load(repo(kind.lua()))
        .set_name(kind.lua())
        .eval()
        .unwrap_or_else(|e| panic!("{}: {e}", kind.lua()));
    let status: String = hs.get("status").unwrap();
    let message: String = hs.get("message").unwrap();
    let health = match status.as_str() {
        "Healthy" => Health::Healthy,
        "Progressing" => Health::Progressing,
        "Degraded" => Health::Degraded,
        other => panic!("{}: unexpected status {other:?}", kind.lua()),
    };
    assert!(!message.is_empty(), "{}: empty message for {obj}", kind.lua());
    (health, message)
}

/// kstatus's result for a custom resource (no type-specific rules apply to our kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KStatus {
    InProgress,
    Failed,
    Current,
    Terminating,
}

/// `checkGenericProperties` then `Compute`'s fallback: deletion → Terminating;
/// `status.observedGeneration` present and ≠ `metadata.generation` → InProgress; a
/// `Reconciling=True` condition → InProgress; `Stalled=True` → Failed; anything else → Current.
/// kstatus never reads `Ready`.
fn kstatus(obj: &Value) -> KStatus {
    if obj["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
    {
        return KStatus::Terminating;
    }
    if let (Some(g), Some(o)) = (
        obj["metadata"]["generation"].as_i64(),
        obj["status"]["observedGeneration"].as_i64(),
    ) && g != o
    {
        return KStatus::InProgress;
    }
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        if c["type"] == "Reconciling" && c["status"] == "True" {
            return KStatus::InProgress;
        }
        if c["type"] == "Stalled" && c["status"] == "True" {
            return KStatus::Failed;
        }
    }
    KStatus::Current
}

/// Flux's CEL health check of one kind from config/flux/kustomization.yaml: `inProgress`, then
/// `failed`, then `current`; the first true one decides. An expression that cannot be evaluated
/// (no status yet) leaves the object not ready, as does no expression being true.
fn flux(kind: Kind, obj: &Value) -> KStatus {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&repo("config/flux/kustomization.yaml")).unwrap();
    let exprs = docs
        .iter()
        .flat_map(|d| d["spec"]["healthCheckExprs"].as_array().cloned().unwrap_or_default())
        .find(|e| e["kind"] == kind.name() && e["apiVersion"] == "mlobs.io/v1alpha1")
        .unwrap_or_else(|| panic!("no healthCheckExprs for {}", kind.name()));
    let mut ctx = cel::Context::default();
    for (k, v) in obj.as_object().unwrap() {
        ctx.add_variable_from_value(k.as_str(), cel::to_value(v).unwrap());
    }
    for (field, result) in [
        ("inProgress", KStatus::InProgress),
        ("failed", KStatus::Failed),
        ("current", KStatus::Current),
    ] {
        let Some(src) = exprs[field].as_str() else { continue };
        let program = cel::Program::compile(src).unwrap_or_else(|e| panic!("{field}: {e:?}"));
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => return result,
            Ok(cel::Value::Bool(false)) => {}
            Ok(other) => panic!("{} {field} returned {other:?}", kind.name()),
            Err(_) => return KStatus::InProgress,
        }
    }
    KStatus::InProgress
}

fn object(kind: Kind, generation: i64, status: Option<Value>) -> Value {
    let mut o = json!({
        "apiVersion": "mlobs.io/v1alpha1",
        "kind": kind.name(),
        "metadata": {"name": "train", "generation": generation},
        "spec": {},
    });
    if kind == Kind::Pipeline {
        o["metadata"]["namespace"] = json!("team-a");
    }
    if let Some(s) = status {
        o["status"] = s;
    }
    o
}

fn condition(type_: &str, status: &str, reason: &str, generation: i64) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": format!("{type_} is {status}: {reason}"),
        "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// A status at `observed` whose Ready condition says `(status, reason)`, as the controller
/// writes it (Ready copies the reason of the first condition that is not True).
fn with_ready(observed: i64, status: &str, reason: &str) -> Value {
    json!({
        "observedGeneration": observed,
        "conditions": [
            condition("Ready", status, reason, observed),
            condition("PolicyCompliant", "True", "Compliant", observed),
        ],
    })
}

/// Ready reasons the controller writes, with the health each must map to. Ready=False reasons
/// come from the first of PolicyCompliant, KmsKeyReady, LogGroupsReady, IamRoleReady and
/// CollectorReady that is not True.
const PROGRESSING_REASONS: [&str; 10] = [
    "Reconciling",
    "RollingOut",
    "CollectorUnschedulable",
    "WaitingForAws",
    "AwsRetryable",
    "NoExporterPods",
    "NamespaceNotFound",
    "WorkspaceNotFound",
    "WorkspaceNotActive",
    "TransactionSearchDisabled",
];
const DEGRADED_REASONS: [&str; 15] = [
    "InvalidSpec",
    "NameTooLong",
    "InvalidName",
    "TooManyTags",
    "InvalidAwsPlan",
    "PolicyViolation",
    "PolicyNotFound",
    "DefaultConflict",
    "BudgetExceeded",
    "NameConflict",
    "AccessDenied",
    "AwsError",
    "AwsResourceMissing",
    "CleanupFailed",
    "PodSecurityForbidden",
];
/// Reasons only ever seen with status True, or on conditions Ready does not read (Drifted,
/// DataFlowing: informative).
const NEVER_ON_READY_FALSE: [&str; 13] = [
    "Reconciled",
    "NoGpuNodes",
    "Compliant",
    "Valid",
    "DriftDetected",
    "DriftCorrected",
    "NoDrift",
    "DataFlowing",
    "NoRecentLogs",
    "NoRecentMetrics",
    "CollectorNotReady",
    "WaitingForData",
    "DataCheckFailed",
];
/// Reasons of events and metric labels only: never a condition reason.
const NEVER_A_CONDITION: [&str; 12] = [
    "AwsReady",
    "AwsCleanedUp",
    "ArchiveRetained",
    "Created",
    "Updated",
    "Deleted",
    "UnknownInstanceType",
    "Conflict",
    "KubeError",
    "MissingField",
    "SerializeError",
    "LostLeadership",
];

/// Every pipeline sample with the health it must have.
fn pipeline_samples() -> Vec<(String, Value, Health)> {
    let mut out = vec![
        (
            "no status yet".to_string(),
            object(Kind::Pipeline, 1, None),
            Health::Progressing,
        ),
        (
            "status without conditions".into(),
            object(Kind::Pipeline, 1, Some(json!({"observedGeneration": 1}))),
            Health::Progressing,
        ),
        (
            "ready at the current generation".into(),
            object(Kind::Pipeline, 2, Some(with_ready(2, "True", "Reconciled"))),
            Health::Healthy,
        ),
        (
            "ready, but for the previous generation".into(),
            object(Kind::Pipeline, 3, Some(with_ready(2, "True", "Reconciled"))),
            Health::Progressing,
        ),
        (
            "terminal failure of the previous generation (the new spec may fix it)".into(),
            object(Kind::Pipeline, 3, Some(with_ready(2, "False", "AccessDenied"))),
            Health::Progressing,
        ),
        (
            "Ready condition older than status.observedGeneration".into(),
            object(
                Kind::Pipeline,
                3,
                Some(json!({"observedGeneration": 3, "conditions": [condition("Ready", "True", "Reconciled", 2)]})),
            ),
            Health::Progressing,
        ),
        (
            "Ready Unknown".into(),
            object(Kind::Pipeline, 1, Some(with_ready(1, "Unknown", "Reconciling"))),
            Health::Progressing,
        ),
        (
            "budget exceeded with action Warn is still running".into(),
            object(
                Kind::Pipeline,
                1,
                Some(json!({"observedGeneration": 1, "conditions": [
                    condition("Ready", "True", "Reconciled", 1),
                    condition("PolicyCompliant", "True", "BudgetExceeded", 1),
                ]})),
            ),
            Health::Healthy,
        ),
        (
            "open drift (driftPolicy Report) does not make it unhealthy".into(),
            object(
                Kind::Pipeline,
                1,
                Some(json!({"observedGeneration": 1, "conditions": [
                    condition("Ready", "True", "Reconciled", 1),
                    condition("Drifted", "True", "DriftDetected", 1),
                ]})),
            ),
            Health::Healthy,
        ),
        (
            "no data reaching CloudWatch (DataFlowing is informative) does not make it unhealthy".into(),
            object(
                Kind::Pipeline,
                1,
                Some(json!({"observedGeneration": 1, "conditions": [
                    condition("Ready", "True", "Reconciled", 1),
                    condition("DataFlowing", "False", "NoRecentLogs", 1),
                ]})),
            ),
            Health::Healthy,
        ),
        (
            "a failed data-flow check does not make it unhealthy".into(),
            object(
                Kind::Pipeline,
                1,
                Some(json!({"observedGeneration": 1, "conditions": [
                    condition("Ready", "True", "Reconciled", 1),
                    condition("DataFlowing", "Unknown", "DataCheckFailed", 1),
                ]})),
            ),
            Health::Healthy,
        ),
    ];
    for r in PROGRESSING_REASONS {
        out.push((
            format!("Ready False {r}"),
            object(Kind::Pipeline, 4, Some(with_ready(4, "False", r))),
            Health::Progressing,
        ));
    }
    for r in DEGRADED_REASONS {
        out.push((
            format!("Ready False {r}"),
            object(Kind::Pipeline, 4, Some(with_ready(4, "False", r))),
            Health::Degraded,
        ));
    }
    let mut deleting = object(Kind::Pipeline, 4, Some(with_ready(4, "False", "CleanupFailed")));
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    out.push(("cleanup failed while deleting".into(), deleting, Health::Degraded));
    out
}

fn policy_samples() -> Vec<(String, Value, Health)> {
    let policy_status = |observed: i64, ready: Value, valid: Value| json!({"observedGeneration": observed, "conditions": [valid, ready], "gpuNodes": 20});
    vec![
        (
            "no status yet".into(),
            object(Kind::Policy, 1, None),
            Health::Progressing,
        ),
        (
            "valid, exporter ready".into(),
            object(
                Kind::Policy,
                2,
                Some(policy_status(
                    2,
                    condition("Ready", "True", "Reconciled", 2),
                    condition("Valid", "True", "Valid", 2),
                )),
            ),
            Health::Healthy,
        ),
        (
            "previous generation".into(),
            object(
                Kind::Policy,
                3,
                Some(policy_status(
                    2,
                    condition("Ready", "True", "Reconciled", 2),
                    condition("Valid", "True", "Valid", 2),
                )),
            ),
            Health::Progressing,
        ),
        (
            "exporter rolling out".into(),
            object(
                Kind::Policy,
                1,
                Some(policy_status(
                    1,
                    condition("Ready", "False", "RollingOut", 1),
                    condition("Valid", "True", "Valid", 1),
                )),
            ),
            Health::Progressing,
        ),
        (
            "invalid".into(),
            object(
                Kind::Policy,
                1,
                Some(policy_status(
                    1,
                    condition("Ready", "False", "InvalidSpec", 1),
                    condition("Valid", "False", "InvalidSpec", 1),
                )),
            ),
            Health::Degraded,
        ),
        (
            "two default policies".into(),
            object(
                Kind::Policy,
                1,
                Some(policy_status(
                    1,
                    condition("Ready", "False", "DefaultConflict", 1),
                    condition("Valid", "False", "DefaultConflict", 1),
                )),
            ),
            Health::Degraded,
        ),
    ]
}

fn all_samples() -> Vec<(Kind, String, Value, Health)> {
    let p = pipeline_samples()
        .into_iter()
        .map(|(n, o, h)| (Kind::Pipeline, n, o, h));
    let q = policy_samples().into_iter().map(|(n, o, h)| (Kind::Policy, n, o, h));
    p.chain(q).collect()
}

#[test]
fn argocd_health_lua_classifies_every_sample() {
    for (kind, name, obj, want) in all_samples() {
        let (got, message) = argocd(kind, &obj);
        assert_eq!(got, want, "{} {name}: {message}", kind.name());
    }
}

#[test]
fn degraded_message_names_the_reason_and_what_to_do() {
    let obj = object(Kind::Pipeline, 1, Some(with_ready(1, "False", "AccessDenied")));
    let (_, message) = argocd(Kind::Pipeline, &obj);
    assert_eq!(message, "AccessDenied: Ready is False: AccessDenied");
    let mut invalid = object(
        Kind::Policy,
        1,
        Some(json!({"observedGeneration": 1, "conditions": [
            condition("Ready", "False", "InvalidSpec", 1),
            {"type": "Valid", "status": "False", "reason": "InvalidSpec", "message": "invalid spec: dcgm.metrics[0]: unknown field"},
        ]})),
    );
    let (_, message) = argocd(Kind::Policy, &invalid);
    assert_eq!(message, "InvalidSpec: invalid spec: dcgm.metrics[0]: unknown field");
    invalid["status"]["conditions"][0]["message"] = Value::Null;
    assert_eq!(argocd(Kind::Policy, &invalid).0, Health::Degraded);
}

fn lua_terminal_reasons(kind: Kind) -> BTreeSet<String> {
    let text = repo(kind.lua());
    let start = text.find("local terminal = {").expect("terminal table");
    let end = start + text[start..].find('}').unwrap();
    regex::Regex::new(r"(?m)^\s*([A-Za-z]+) = true,")
        .unwrap()
        .captures_iter(&text[start..end])
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn every_reason_the_operator_writes_has_a_health() {
    // The one vocabulary (src/crd/reason.rs): every reason the operator can write.
    let written: BTreeSet<String> = mlobs::crd::reason::Reason::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    assert!(written.len() > 20, "the reason list is too short: {written:?}");
    let terminal: BTreeSet<String> = mlobs::crd::reason::Reason::terminal()
        .map(|r| r.as_str().to_string())
        .collect();
    let lua = lua_terminal_reasons(Kind::Pipeline);
    let degraded: BTreeSet<String> = DEGRADED_REASONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(lua, degraded, "the Lua's terminal table and this test disagree");
    assert_eq!(terminal, degraded, "Reason::is_terminal and the Lua disagree");
    let known: BTreeSet<String> = PROGRESSING_REASONS
        .iter()
        .chain(&DEGRADED_REASONS)
        .chain(&NEVER_ON_READY_FALSE)
        .chain(&NEVER_A_CONDITION)
        .map(|s| s.to_string())
        .collect();
    let unclassified: Vec<&String> = written.difference(&known).collect();
    assert!(
        unclassified.is_empty(),
        "new reasons: decide Progressing or Degraded (config/argocd Lua, config/flux exprs, this test): {unclassified:?}"
    );
    let policy = lua_terminal_reasons(Kind::Policy);
    assert_eq!(
        policy,
        BTreeSet::from(["DefaultConflict".to_string(), "InvalidSpec".into()])
    );
}

#[test]
fn the_argocd_cm_patch_carries_the_scripts_verbatim() {
    let patch: Value = serde_saphyr::from_str(&repo("config/argocd/argocd-cm-patch.yaml")).unwrap();
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    for (key, kind) in [
        (
            "resource.customizations.health.mlobs.io_MLObservabilityPipeline",
            Kind::Pipeline,
        ),
        (
            "resource.customizations.health.mlobs.io_GpuTelemetryPolicy",
            Kind::Policy,
        ),
    ] {
        assert_eq!(
            patch["data"][key].as_str(),
            Some(repo(kind.lua()).as_str()),
            "{key} differs from {}",
            kind.lua()
        );
    }
}

#[test]
fn flux_health_check_exprs_agree_with_the_argocd_health() {
    for (kind, name, obj, want) in all_samples() {
        let expected = match want {
            Health::Healthy => KStatus::Current,
            Health::Progressing => KStatus::InProgress,
            Health::Degraded => KStatus::Failed,
        };
        assert_eq!(flux(kind, &obj), expected, "{} {name}", kind.name());
    }
}

#[test]
fn flux_terminal_reasons_are_the_luas() {
    let text = repo("config/flux/kustomization.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let list = regex::Regex::new(r"in \[([^\]]*)\]").unwrap();
    let quoted = regex::Regex::new(r"'([A-Za-z]+)'").unwrap();
    for e in docs
        .iter()
        .flat_map(|d| d["spec"]["healthCheckExprs"].as_array().cloned().unwrap_or_default())
    {
        let kind = if e["kind"] == "GpuTelemetryPolicy" {
            Kind::Policy
        } else {
            Kind::Pipeline
        };
        for field in ["inProgress", "failed"] {
            let src = e[field].as_str().unwrap();
            let lists: Vec<BTreeSet<String>> = list
                .captures_iter(src)
                .map(|c| quoted.captures_iter(&c[1]).map(|q| q[1].to_string()).collect())
                .collect();
            assert_eq!(lists.len(), 1, "{field}");
            assert_eq!(lists[0], lua_terminal_reasons(kind), "{} {field}", kind.name());
        }
    }
    // The pipeline Kustomization health-checks a pipeline and waits for it with a timeout.
    let k = &docs
        .iter()
        .find(|d| d["metadata"]["name"] == "ml-observability")
        .expect("the pipelines' Kustomization")["spec"];
    assert_eq!(k["wait"], false, "wait: true would ignore healthChecks");
    assert!(k["timeout"].as_str().is_some());
    assert!(
        k["healthChecks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "MLObservabilityPipeline")
    );
}

#[test]
fn kstatus_alone_sees_only_generation_so_a_failing_pipeline_is_current() {
    // A status with only Ready (the hand-written samples; any writer but this controller, which
    // also sets Reconciling/Stalled): kstatus (Flux healthChecks without healthCheckExprs, kpt,
    // cli-utils) says Current as soon as observedGeneration matches, whatever Ready says.
    let mut disagree = Vec::new();
    for (kind, name, obj, want) in all_samples() {
        let k = kstatus(&obj);
        if (k == KStatus::Current) != (want == Health::Healthy) {
            disagree.push(format!("{} {name}", kind.name()));
            assert_eq!(k, KStatus::Current, "{name}: kstatus only errs on the side of Current");
        }
        // Where kstatus says not current, Argo CD agrees.
        if k == KStatus::InProgress {
            assert_eq!(want, Health::Progressing, "{name}");
        }
    }
    let unhealthy_at_current_generation = all_samples()
        .into_iter()
        .filter(|(_, _, o, h)| *h != Health::Healthy && kstatus(o) == KStatus::Current)
        .count();
    assert_eq!(disagree.len(), unhealthy_at_current_generation);
    assert!(disagree.iter().any(|d| d.contains("AccessDenied")), "{disagree:?}");
}

/// The kstatus conditions a status needs for kstatus to read it like Ready: `Reconciling=True`
/// while Ready is False or Unknown for a passing reason, `Stalled=True` for a terminal one.
fn with_kstatus_conditions(kind: Kind, obj: &Value) -> Value {
    let mut o = obj.clone();
    let terminal = lua_terminal_reasons(kind);
    let Some(conds) = o["status"]["conditions"].as_array_mut() else {
        return o;
    };
    let ready = conds.iter().find(|c| c["type"] == "Ready").cloned();
    if let Some(r) = ready
        && r["status"] != "True"
    {
        let reason = r["reason"].as_str().unwrap_or_default();
        let generation = r["observedGeneration"].clone();
        let ty = if r["status"] == "False" && terminal.contains(reason) {
            "Stalled"
        } else {
            "Reconciling"
        };
        let mut c = condition(ty, "True", reason, 0);
        c["observedGeneration"] = generation;
        conds.push(c);
    }
    o
}

#[test]
fn with_reconciling_and_stalled_kstatus_would_agree_with_argocd() {
    for (kind, name, obj, want) in all_samples() {
        let has_ready = obj["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
        if !has_ready {
            // Before the operator's first status (no conditions to add), kstatus has no rule:
            // Current. Inherent to kstatus; Flux's healthCheckExprs wait instead.
            assert_eq!(kstatus(&obj), KStatus::Current);
            continue;
        }
        let expected = match want {
            Health::Healthy => KStatus::Current,
            Health::Progressing => KStatus::InProgress,
            Health::Degraded => KStatus::Failed,
        };
        let augmented = with_kstatus_conditions(kind, &obj);
        let got = match kstatus(&augmented) {
            // A deleted object is Terminating whatever its conditions say.
            KStatus::Terminating => KStatus::Failed,
            other => other,
        };
        // A stale Ready condition at a current status.observedGeneration is one more case
        // kstatus cannot see (it reads the status's generation only).
        if name.contains("older than status.observedGeneration") {
            assert_eq!(got, KStatus::Current);
            continue;
        }
        assert_eq!(got, expected, "{} {name}", kind.name());
    }
}

// Statuses as the controller computes them, so the samples above cannot drift from what runs.

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

fn controller_pipeline(generation: i64) -> MLObservabilityPipeline {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "generation": generation, "uid": "u1"},
        "spec": {}
    }))
    .unwrap()
}

fn computed(obs: Observed, p: &MLObservabilityPipeline) -> Value {
    let status: MLObservabilityPipelineStatus = obs.into_status(p, &Default::default(), at(100));
    let mut obj = serde_json::to_value(p).unwrap();
    obj["status"] = serde_json::to_value(status).unwrap();
    obj
}

fn aws_ok() -> AwsResult {
    AwsResult::Ok {
        out: Box::new(AwsOutcome {
            kms_key_id: Some("k1".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k1".into()),
            log_group_arns: vec!["a".into(), "b".into()],
            archive_bucket_arn: None,
            hot_path_stream_arn: None,
            hot_path_role_arn: None,
            hot_path_association_id: None,
            amp_workspace: None,
            role_arn: Some("arn:aws:iam::123456789012:role/r".into()),
            pod_identity_association_id: None,
            drift: vec![],
            ..Default::default()
        }),
        ready: true,
    }
}

fn aws_failed(step: Step, error: AwsError) -> AwsResult {
    AwsResult::Failed(Box::new(StepError {
        step,
        error,
        partial: Box::default(),
    }))
}

fn collector(desired: i32, ready: i32) -> DaemonSet {
    DaemonSet {
        metadata: kube::api::ObjectMeta {
            generation: Some(1),
            ..Default::default()
        },
        status: Some(DaemonSetStatus {
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(desired),
            observed_generation: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn statuses_the_controller_computes_map_to_the_expected_health() {
    let p = controller_pipeline(2);
    let denied = AwsError::AccessDenied {
        operation: "CreateRole".into(),
        resource: "iamRole:mlobs-x".into(),
        code: "AccessDenied".into(),
        message: "not authorized".into(),
    };
    let throttled = AwsError::Retryable {
        operation: "CreateLogGroup".into(),
        resource: "logGroup:/aws/eks/x".into(),
        code: "ThrottlingException".into(),
        message: "slow down".into(),
    };
    let mut cases: Vec<(&str, Observed, Health)> = Vec::new();

    let mut o = Observed::new(&p);
    o.aws = Some(aws_ok());
    o.collector(&collector(4, 4));
    cases.push(("running", o, Health::Healthy));

    let mut o = Observed::new(&p);
    o.aws = Some(aws_ok());
    o.collector(&collector(4, 4));
    o.data_flow = Some(DataFlowObs {
        read: Read::Resync,
        grace_ms: 60_000,
        result: Ok(vec![GroupReading {
            signal: Signal::Logs,
            group: "/aws/eks/c/team-a/train/logs".into(),
            newest_ms: None,
        }]),
    });
    cases.push(("running, no log event in CloudWatch yet", o, Health::Healthy));

    let mut o = Observed::new(&p);
    o.aws = Some(aws_ok());
    o.collector(&collector(4, 1));
    cases.push(("collector rolling out", o, Health::Progressing));

    cases.push((
        "first reconcile, nothing ensured yet",
        Observed::new(&p),
        Health::Progressing,
    ));

    let mut o = Observed::new(&p);
    o.aws = Some(aws_failed(Step::LogGroups, throttled));
    cases.push(("AWS throttling", o, Health::Progressing));

    let mut o = Observed::new(&p);
    o.aws = Some(aws_failed(Step::IamRole, denied));
    cases.push(("the operator may not create the role", o, Health::Degraded));

    let mut o = Observed::new(&p);
    o.aws = Some(aws_failed(
        Step::KmsKey,
        AwsError::NameConflict {
            resource: "kmsKey:alias/mlobs/x".into(),
        },
    ));
    cases.push(("alias taken by a foreign key", o, Health::Degraded));

    let mut o = Observed::new(&p);
    o.violations = vec!["budget: 1,610 metrics over the limit of 1,000".into()];
    cases.push(("policy violation (budget Deny)", o, Health::Degraded));

    let mut o = Observed::new(&p);
    o.blocked(
        "PolicyNotFound",
        "spec.policyRef: GpuTelemetryPolicy \"x\" does not exist".into(),
    );
    cases.push(("policy not found", o, Health::Degraded));

    let mut o = Observed::new(&p);
    o.invalid(
        "InvalidSpec",
        "invalid spec: spec.logs.logGroup.retentionInDays: 2".into(),
    );
    cases.push(("invalid spec", o, Health::Degraded));

    let mut o = Observed::new(&p);
    o.invalid("NameTooLong", "spec.identity.roleName: 70 characters".into());
    cases.push(("plan error", o, Health::Degraded));

    for (name, obs, want) in cases {
        let obj = computed(obs, &p);
        let (got, message) = argocd(Kind::Pipeline, &obj);
        assert_eq!(got, want, "{name}: {message}\n{:#}", obj["status"]);
        assert_eq!(flux(Kind::Pipeline, &obj), flux_of(want), "{name}");
        // The controller writes Reconciling/Stalled, so plain kstatus (no healthCheckExprs) agrees.
        assert_eq!(
            kstatus(&obj),
            flux_of(want),
            "{name}: plain kstatus\n{:#}",
            obj["status"]
        );
        assert_eq!(obj["status"]["observedGeneration"], 2, "{name}");
    }
}

fn flux_of(h: Health) -> KStatus {
    match h {
        Health::Healthy => KStatus::Current,
        Health::Progressing => KStatus::InProgress,
        Health::Degraded => KStatus::Failed,
    }
}

#[test]
fn the_operator_and_the_argocd_script_agree_on_which_reasons_are_terminal() {
    let operator: BTreeSet<String> = mlobs::crd::reason::Reason::terminal()
        .map(|r| r.as_str().to_string())
        .collect();
    assert_eq!(lua_terminal_reasons(Kind::Pipeline), operator);
}
