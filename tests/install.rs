//! The install artefacts: the Helm chart (charts/mlobs-operator, rendered through
//! scripts/chart.py and helm-python-sdk) and the kustomize base (config/default, rendered by
//! `kubectl kustomize`). Both carry the generated CRDs unchanged, render the same objects, render
//! only valid Kubernetes objects, and grant the operator exactly the API calls it makes.
//!
//! Needs `.venv` with helm-python-sdk (`make venv`) and kubectl; without them the tests fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use mlobs::crd::GpuTelemetryPolicy;
use mlobs::crd::validate::validate_policy;
use serde_json::{Value, json};

const CHART: &str = "charts/mlobs-operator";
const ALL_ON: &str = "charts/mlobs-operator/ci/all-on-values.yaml";

/// Every (API group, resource) the controller calls and the verbs it uses: the operator's
/// ClusterRole must grant exactly this. `create` next to `patch` because a server-side apply that
/// creates an object is also authorized as `create`; pods, namespaces and replicasets only
/// because RBAC forbids granting (to each collector's ClusterRole) what the operator lacks.
const CLUSTER_RULES: &[(&str, &str, &[&str])] = &[
    ("mlobs.io", "mlobservabilitypipelines", PIPELINE),
    ("mlobs.io", "mlobservabilitypipelines/status", &["patch"]),
    ("mlobs.io", "gputelemetrypolicies", READ),
    ("mlobs.io", "gputelemetrypolicies/status", &["patch"]),
    ("apps", "daemonsets", CHILD),
    ("", "configmaps", CHILD),
    ("", "serviceaccounts", CHILD),
    ("", "services", CHILD),
    ("rbac.authorization.k8s.io", "clusterroles", CHILD),
    ("rbac.authorization.k8s.io", "clusterrolebindings", CHILD),
    ("", "pods", READ),
    ("", "namespaces", READ),
    ("", "nodes", READ),
    ("apps", "replicasets", READ),
    ("events.k8s.io", "events", &["create", "patch"]),
    ("", "events", &["list"]),
    // The alert rules (spec.alerts) and the collectors' PodMonitor, where the Prometheus
    // operator's CRDs are installed: not watched.
    ("monitoring.coreos.com", "prometheusrules", UNWATCHED_CHILD),
    ("monitoring.coreos.com", "podmonitors", UNWATCHED_CHILD),
];
const READ: &[&str] = &["get", "list", "watch"];
/// Watched; the finalizer is added and removed by merge patch.
const PIPELINE: &[&str] = &["get", "list", "watch", "patch"];
/// Read before apply, applied (server-side), watched as owned children (metadata only, the
/// applier's cache), pruned by label.
const CHILD: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
/// Children of kinds served only where the Prometheus operator is: not watched.
const UNWATCHED_CHILD: &[&str] = &["get", "list", "create", "patch", "delete"];

/// The leader-election Role in the operator's namespace: (group, resource, resourceNames, verbs).
const LEASE_RULES: &[(&str, &str, &[&str], &[&str])] = &[
    ("coordination.k8s.io", "leases", &[], &["create"]),
    (
        "coordination.k8s.io",
        "leases",
        &["mlobs-operator-leader"],
        &["get", "update"],
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<String, String> {
    let out = cmd
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run ({e}): {hint}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("UTF-8 output"))
    } else {
        Err(stderr)
    }
}

/// `scripts/chart.py template` with the project's venv; Err(stderr) when it exits non-zero.
fn try_chart(args: &[&str]) -> Result<String, String> {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (installs helm-python-sdk, which renders the chart)",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.args(["scripts/chart.py", "template", CHART]).args(args);
    run(&mut cmd, "scripts/chart.py", "run `make venv`")
}

fn chart(args: &[&str]) -> Vec<Value> {
    let out = try_chart(args).unwrap_or_else(|e| {
        panic!("scripts/chart.py template {args:?} failed (if helm-python-sdk is missing: run `make venv`):\n{e}")
    });
    docs(&out)
}

fn kustomize() -> Vec<Value> {
    let out = run(
        Command::new(kubectl()).args(["kustomize", "config/default"]),
        "kubectl",
        "kubectl (with its built-in kustomize) is required",
    )
    .unwrap_or_else(|e| panic!("kubectl kustomize config/default failed:\n{e}"));
    docs(&out)
}

fn docs(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("rendered output is YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn key(doc: &Value) -> (String, String, String) {
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

fn only<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == k).collect();
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| kind(d).to_string()).collect()
}

/// The first path where two JSON values differ, for a readable failure. Numbers compare by value:
/// `0` and `0.0` are the same number to the API server (kustomize and f64 fields rewrite them).
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .find_map(|k| {
                    first_difference(
                        &x.get(k).cloned().unwrap_or(Value::Null),
                        &y.get(k).cloned().unwrap_or(Value::Null),
                        &format!("{path}.{k}"),
                    )
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}

/// Deserializes into the typed object and back: a field the type does not know is lost, so any
/// difference means an unknown (or mistyped) field.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(doc, &back, "") {
        None => Ok(()),
        Some(d) => Err(format!("field lost or changed in the round trip: {d}")),
    }
}

fn check_object(doc: &Value) -> Result<(), String> {
    match kind(doc) {
        "Deployment" => round_trips::<Deployment>(doc),
        "ServiceAccount" => round_trips::<ServiceAccount>(doc),
        "Service" => round_trips::<Service>(doc),
        "ClusterRole" => round_trips::<ClusterRole>(doc),
        "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(doc),
        "Role" => round_trips::<Role>(doc),
        "RoleBinding" => round_trips::<RoleBinding>(doc),
        "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(doc),
        "NetworkPolicy" => round_trips::<NetworkPolicy>(doc),
        "Namespace" => round_trips::<Namespace>(doc),
        "CustomResourceDefinition" => round_trips::<CustomResourceDefinition>(doc),
        "GpuTelemetryPolicy" => {
            round_trips::<GpuTelemetryPolicy>(doc)?;
            let policy: GpuTelemetryPolicy = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            validate_policy(&policy).map_err(|e| format!("invalid GpuTelemetryPolicy:{e}"))
        }
        "ServiceMonitor" => check_service_monitor(doc),
        other => Err(format!("unexpected kind {other:?}: add it to check_object")),
    }
}

/// No ServiceMonitor type here: check the fields we write against monitoring.coreos.com/v1.
fn check_service_monitor(doc: &Value) -> Result<(), String> {
    let allowed_top = ["apiVersion", "kind", "metadata", "spec"];
    let allowed_spec = ["selector", "endpoints"];
    let allowed_endpoint = ["port", "path", "interval"];
    let obj = doc.as_object().ok_or("not an object")?;
    let spec = doc["spec"].as_object().ok_or("no spec")?;
    let endpoints = doc["spec"]["endpoints"].as_array().ok_or("no spec.endpoints")?;
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !allowed_top.contains(&k.as_str()))
        .chain(spec.keys().filter(|k| !allowed_spec.contains(&k.as_str())))
        .chain(
            endpoints
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|e| e.keys())
                .filter(|k| !allowed_endpoint.contains(&k.as_str())),
        )
        .collect();
    if doc["apiVersion"] != "monitoring.coreos.com/v1" || !unknown.is_empty() {
        return Err(format!("unexpected ServiceMonitor fields {unknown:?} in {doc}"));
    }
    if endpoints.len() != 1 || endpoints[0]["port"] != "metrics" || endpoints[0]["path"] != "/metrics" {
        return Err(format!("the endpoint must scrape the metrics port at /metrics: {doc}"));
    }
    Ok(())
}

fn container(docs: &[Value]) -> &Value {
    &only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

#[test]
fn chart_and_kustomize_carry_the_generated_crds_unchanged() {
    let generated: BTreeSet<String> = std::fs::read_dir(root().join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(generated.len(), 2, "{generated:?}");
    for copy in [format!("{CHART}/crds"), "config/crd".to_string()] {
        let dir = root().join(&copy);
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "kustomization.yaml")
            .collect();
        assert_eq!(names, generated, "{copy} must hold exactly the files of crds/");
        for name in &generated {
            let want = std::fs::read(root().join("crds").join(name)).expect("read crds/");
            let have = std::fs::read(dir.join(name)).expect("read copy");
            assert!(
                want == have,
                "{copy}/{name} differs from crds/{name}: run `cp crds/*.yaml {copy}/` (after `make crds`)"
            );
        }
    }
}

#[test]
fn kustomize_base_renders_the_same_objects_as_the_chart_defaults() {
    let chart: BTreeMap<_, _> = chart(&["--include-crds"]).into_iter().map(|d| (key(&d), d)).collect();
    let mut kust: BTreeMap<_, _> = kustomize().into_iter().map(|d| (key(&d), d)).collect();
    // The one object only kustomize has: Helm installs into a namespace it is given.
    let ns = kust
        .remove(&("Namespace".into(), String::new(), "mlobs-system".into()))
        .expect("config/default creates the mlobs-system Namespace");
    assert!(check_object(&ns).is_ok());
    let only_chart: Vec<_> = chart.keys().filter(|k| !kust.contains_key(*k)).collect();
    let only_kust: Vec<_> = kust.keys().filter(|k| !chart.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_kust.is_empty(),
        "only in the chart: {only_chart:?}\nonly in config/default: {only_kust:?}"
    );
    for (k, c) in &chart {
        if let Some(d) = first_difference(c, &kust[k], "") {
            panic!("{k:?} differs between the chart (default values) and config/default at {d}");
        }
    }
    assert_eq!(chart.len(), 9, "{:?}", chart.keys());
}

#[test]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    let renders = [
        ("chart defaults", chart(&["--include-crds"])),
        ("chart all-on", chart(&["--include-crds", "-f", ALL_ON])),
        ("config/default", kustomize()),
    ];
    for (name, docs) in &renders {
        for doc in docs {
            if let Err(e) = check_object(doc) {
                panic!("{name}: {:?}: {e}", key(doc));
            }
        }
    }
    let all_on = kinds(&renders[1].1);
    for k in [
        "GpuTelemetryPolicy",
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(all_on.contains(k), "ci/all-on-values.yaml renders a {k}: {all_on:?}");
    }
}

#[test]
fn optional_objects_are_off_by_default() {
    let defaults = kinds(&chart(&[]));
    assert_eq!(
        defaults,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>()
    );
}

fn granted(rules: &Value) -> BTreeMap<(String, String, Vec<String>), BTreeSet<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
            .unwrap_or_default()
    };
    let mut out: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for rule in rules.as_array().expect("rules") {
        let mut names = strings(&rule["resourceNames"]);
        names.sort();
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                out.entry((g.clone(), r, names.clone()))
                    .or_default()
                    .extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

#[test]
fn cluster_role_grants_exactly_what_the_controller_calls() {
    let expected: BTreeMap<_, BTreeSet<String>> = CLUSTER_RULES
        .iter()
        .map(|(g, r, v)| {
            (
                (g.to_string(), r.to_string(), vec![]),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    for (name, docs) in [("chart", chart(&[])), ("config/default", kustomize())] {
        let role = only(&docs, "ClusterRole");
        let have = granted(&role["rules"]);
        for ((g, r, _), verbs) in &have {
            assert!(
                g != "*" && r != "*" && !verbs.contains("*"),
                "{name}: wildcard in the ClusterRole"
            );
            assert!(!r.starts_with("secrets"), "{name}: the operator never reads Secrets");
        }
        assert_eq!(have, expected, "{name}: ClusterRole rules differ from CLUSTER_RULES");

        let binding = only(&docs, "ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "mlobs-operator", "namespace": "mlobs-system"}])
        );
    }
}

#[test]
fn leases_are_granted_only_in_the_operator_namespace() {
    let expected: BTreeMap<_, BTreeSet<String>> = LEASE_RULES
        .iter()
        .map(|(g, r, n, v)| {
            (
                (g.to_string(), r.to_string(), n.iter().map(|s| s.to_string()).collect()),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    for (name, docs) in [("chart", chart(&[])), ("config/default", kustomize())] {
        let role = only(&docs, "Role");
        assert_eq!(role["metadata"]["namespace"], "mlobs-system", "{name}");
        assert_eq!(
            granted(&role["rules"]),
            expected,
            "{name}: Role rules differ from LEASE_RULES"
        );
        let binding = only(&docs, "RoleBinding");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]})
        );
        assert_eq!(binding["subjects"][0]["name"], "mlobs-operator");
    }
}

#[test]
fn deployment_runs_restricted_and_probes_the_metrics_port() {
    let docs = chart(&[]);
    let c = container(&docs);
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        c["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], "mlobs-operator");
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    for (var, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        let env = c["env"].as_array().expect("env").iter().find(|e| e["name"] == var);
        assert_eq!(
            env.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&json!(field)),
            "{var} from the downward API"
        );
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        c["image"], "ghcr.io/mlobs/mlobs:0.1.0",
        "the tag defaults to appVersion"
    );
    assert_eq!(
        args(&docs),
        ["run", "--metrics-addr=0.0.0.0:8080", "--leader-elect=true"]
    );
    let svc = only(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        svc["spec"]["selector"],
        only(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn values_become_operator_flags_and_the_role_annotation() {
    let docs = chart(&["-f", ALL_ON, "--set", "metrics.port=9090"]);
    assert_eq!(
        args(&docs),
        [
            "run",
            "--metrics-addr=0.0.0.0:9090",
            "--leader-elect=true",
            "--max-concurrent-reconciles=16",
            "--drift-events-queue=https://sqs.us-east-1.amazonaws.com/123456789012/mlobs-drift-events",
            "--kms-check-interval=12h",
            "--event-backstop-interval=72h",
            "--stream-reads-per-second=2.5",
            "--heap-release-interval=10s",
            "--cluster-name=prod-gpu",
            "--region=us-east-1",
            "--account-id=123456789012",
            "--partition=aws",
            "--aws-endpoint-url=https://vpce.example.internal",
        ]
    );
    assert_eq!(container(&docs)["ports"][0]["containerPort"], 9090);
    assert_eq!(only(&docs, "Service")["spec"]["ports"][0]["port"], 9090);
    assert_eq!(
        only(&docs, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/mlobs-operator"
    );
    assert!(
        container(&docs)["image"]
            .as_str()
            .is_some_and(|i| i.contains("@sha256:"))
    );
}

#[test]
fn two_replicas_force_leader_election_and_get_a_disruption_budget() {
    let docs = chart(&["--set", "replicas=2", "--set", "leaderElection.enabled=false"]);
    assert!(args(&docs).contains(&"--leader-elect=true".to_string()));
    let pdb = only(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], only(&docs, "Deployment")["spec"]["selector"]);

    let single = chart(&["--set", "leaderElection.enabled=false"]);
    assert!(args(&single).contains(&"--leader-elect=false".to_string()));
    assert!(!kinds(&single).contains("PodDisruptionBudget"));
}

#[test]
fn kubernetes_http2_false_sets_client_gos_disable_http2() {
    let env_of = |docs: &[Value]| -> Vec<(String, String)> {
        container(docs)["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("name"), s("value"))
            })
            .collect()
    };
    let disable = mlobs::controller::client::DISABLE_HTTP2;
    let default = env_of(&chart(&[]));
    assert!(!default.iter().any(|(k, _)| k == disable), "{default:?}");
    let off = env_of(&chart(&["--set", "kubernetesHttp2=false"]));
    assert!(off.contains(&(disable.to_string(), "true".to_string())), "{off:?}");
    // The schema takes a boolean only.
    assert!(try_chart(&["--set-string", "kubernetesHttp2=no"]).is_err());
}

#[test]
fn shards_render_one_deployment_lease_and_budget_per_shard() {
    use mlobs::controller::shard::Shard;
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/mlobs-drift-events-{shard}";
    let docs = chart(&[
        "--set",
        "shards=3",
        "--set",
        "replicas=2",
        "--set",
        "maxConcurrentReconciles=8",
        "--set",
        &format!("driftEventsQueue={queue}"),
    ]);
    let of = |k: &str| docs.iter().filter(|d| kind(d) == k).collect::<Vec<_>>();
    let (deployments, pdbs) = (of("Deployment"), of("PodDisruptionBudget"));
    assert_eq!((deployments.len(), pdbs.len()), (3, 3));
    let mut selectors = BTreeSet::new();
    for (i, d) in deployments.iter().enumerate() {
        let shard = Shard {
            index: i as u32,
            count: 3,
        };
        assert_eq!(d["metadata"]["name"], format!("mlobs-operator-shard-{i}"));
        let args: Vec<String> =
            serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone()).expect("args");
        // The flag the binary parses, and nothing that turns election off with a standby.
        assert!(args.contains(&format!("--shard={shard}")), "{args:?}");
        assert!(args.contains(&"--leader-elect=true".to_string()), "{args:?}");
        assert!(args.contains(&"--max-concurrent-reconciles=8".to_string()), "{args:?}");
        // `{shard}` reaches the binary as it is, and the shard reads its own queue.
        use clap::Parser;
        let cli = mlobs::cli::Cli::try_parse_from(std::iter::once("mlobs".to_string()).chain(args.clone()))
            .unwrap_or_else(|e| panic!("mlobs does not parse {args:?}: {e}"));
        let mlobs::cli::Command::Run(run) = cli.command else {
            panic!("not `mlobs run`: {args:?}")
        };
        assert_eq!(run.shard, shard);
        let (own, shared) = mlobs::controller::drift_events::shard_queue(
            run.drift_events_queue.as_deref().expect("--drift-events-queue"),
            &run.shard,
        );
        assert_eq!(
            (own.as_str(), shared),
            (
                format!("https://sqs.us-east-1.amazonaws.com/123456789012/mlobs-drift-events-{i}").as_str(),
                false
            )
        );
        let sel = &d["spec"]["selector"];
        assert_eq!(sel["matchLabels"]["mlobs.io/shard"], i.to_string());
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["mlobs.io/shard"],
            i.to_string()
        );
        assert!(
            selectors.insert(sel.to_string()),
            "two shards select the same pods: {sel}"
        );
        assert!(
            pdbs.iter().any(|p| p["spec"]["selector"] == *sel),
            "no budget for shard {i}"
        );
    }
    // The Role names exactly the Leases the shards' replicas take (`Shard::lease_name`).
    let role = only(&docs, "Role");
    let names: BTreeSet<String> = serde_json::from_value(role["rules"][1]["resourceNames"].clone()).expect("names");
    let want: BTreeSet<String> = (0..3).map(|index| Shard { index, count: 3 }.lease_name()).collect();
    assert_eq!(names, want);
    // Unsharded: one Deployment that keeps its name, selector and Lease (upgrades in place).
    let one = chart(&[]);
    assert_eq!(only(&one, "Deployment")["metadata"]["name"], "mlobs-operator");
    assert!(!args(&one).iter().any(|a| a.starts_with("--shard")));
    assert_eq!(Shard::default().lease_name(), "mlobs-operator-leader");
    assert!(
        try_chart(&["--set", "shards=0"]).is_err(),
        "shards=0 must be refused by the schema"
    );
}

/// The operator flags the chart passes reach `mlobs run` as the binary parses them: drift events,
/// the slower checks' interval, sharding and concurrency, and none when left empty.
#[test]
fn operator_flags_from_values_parse_as_mlobs_run_arguments() {
    use clap::Parser;
    use mlobs::cli::{Cli, Command};
    let queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/mlobs-drift";
    let docs = chart(&[
        "--set",
        &format!("driftEventsQueue={queue}"),
        "--set",
        "kmsCheckInterval=90m",
        "--set",
        "eventBackstopInterval=48h",
        "--set",
        "heapReleaseInterval=0s",
        "--set",
        "maxConcurrentReconciles=8",
        "--set",
        "streamReadsPerSecond=0.5",
    ]);
    let rendered = args(&docs);
    let cli = Cli::try_parse_from(std::iter::once("mlobs".to_string()).chain(rendered.clone()))
        .unwrap_or_else(|e| panic!("mlobs does not parse the chart's args {rendered:?}: {e}"));
    let Command::Run(run) = cli.command else {
        panic!("the chart runs something else than `mlobs run`: {rendered:?}")
    };
    assert_eq!(run.drift_events_queue.as_deref(), Some(queue));
    assert_eq!(run.kms_check_interval, std::time::Duration::from_secs(90 * 60));
    assert_eq!(run.event_backstop_interval, std::time::Duration::from_secs(48 * 3600));
    assert_eq!(run.max_concurrent_reconciles, 8);
    assert_eq!(run.heap_release_interval, std::time::Duration::ZERO);
    assert_eq!(run.stream_reads_per_second, 0.5);
    // Left empty, neither flag is passed and the binary's defaults hold.
    let plain = args(&chart(&[]));
    assert!(
        !plain.iter().any(|a| a.starts_with("--drift-events-queue")
            || a.contains("-interval")
            || a.starts_with("--stream-reads-per-second")),
        "{plain:?}"
    );
    let Command::Run(run) = Cli::try_parse_from(std::iter::once("mlobs".to_string()).chain(plain))
        .expect("default args")
        .command
    else {
        panic!("not `mlobs run`")
    };
    assert_eq!(run.drift_events_queue, None);
    assert_eq!(run.kms_check_interval, std::time::Duration::from_secs(24 * 3600));
    assert_eq!(
        run.event_backstop_interval,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(run.heap_release_interval, std::time::Duration::from_secs(5));
    assert_eq!(run.stream_reads_per_second, 5.0);
    // The schema refuses what the binary would refuse at start.
    for bad in [
        "kmsCheckInterval=daily",
        "kmsCheckInterval=24",
        "eventBackstopInterval=7d",
        "heapReleaseInterval=often",
        "driftEventsQueue=mlobs-drift",
        "streamReadsPerSecond=-1",
        "streamReadsPerSecond=5000",
        "streamReadsPerSecond=fast",
    ] {
        assert!(
            try_chart(&["--set", bad]).is_err(),
            "{bad} must be refused by the schema"
        );
    }
}

#[test]
fn network_policy_admits_only_metrics_and_allows_only_dns_api_server_and_https() {
    let docs = chart(&["--set", "networkPolicy.enabled=true"]);
    let np = &only(&docs, "NetworkPolicy")["spec"];
    assert_eq!(np["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["podSelector"], only(&docs, "Deployment")["spec"]["selector"]);
    assert_eq!(np["ingress"], json!([{"ports": [{"port": 8080, "protocol": "TCP"}]}]));
    let ports: BTreeSet<(i64, String)> = np["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["port"].as_i64().expect("numeric port"),
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(i64, String)> = [(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")]
        .into_iter()
        .map(|(p, t)| (p, t.to_string()))
        .collect();
    assert_eq!(ports, expected);
    assert!(
        np["egress"]
            .as_array()
            .expect("egress")
            .iter()
            .all(|r| r.get("to").is_none()),
        "no destination restriction unless configured"
    );
}

#[test]
fn default_policy_from_values_is_checked_with_the_operators_validation() {
    let docs = chart(&["-f", ALL_ON]);
    let policy: GpuTelemetryPolicy =
        serde_json::from_value(only(&docs, "GpuTelemetryPolicy").clone()).expect("a GpuTelemetryPolicy");
    assert_eq!(policy.metadata.name.as_deref(), Some("platform-default"));
    assert_eq!(policy.spec.default, Some(true));
    validate_policy(&policy).unwrap_or_else(|e| panic!("the all-on default policy is invalid:{e}"));

    // The same check rejects a spec the API server would reject.
    let bad = chart(&["-f", ALL_ON, "--set", "defaultPolicy.spec.logs.minRetentionInDays=8"]);
    let err = check_object(only(&bad, "GpuTelemetryPolicy")).expect_err("8 days is not a CloudWatch retention");
    assert!(err.contains("minRetentionInDays"), "{err}");
}

#[test]
fn values_schema_rejects_unknown_keys_and_mistyped_values() {
    for (set, needle) in [
        ("replica=2", "replica"),
        ("image.tags=v1", "tags"),
        ("accountId=123456789012", "accountId"),
        ("replicas=3", "replicas"),
        ("networkPolicy.bogus=true", "bogus"),
    ] {
        let err = try_chart(&["--set", set]).expect_err(set);
        assert!(err.contains(needle), "{set}: {err}");
    }
    // An account id must be given as a string.
    assert!(try_chart(&["--set-string", "accountId=123456789012"]).is_ok());
}

#[test]
fn chart_metadata_is_pinned() {
    let text = std::fs::read_to_string(root().join(CHART).join("Chart.yaml")).expect("Chart.yaml");
    let meta: Value = serde_saphyr::from_str(&text).expect("Chart.yaml is YAML");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "mlobs-operator");
    assert_eq!(meta["version"], "0.1.0");
    assert_eq!(
        meta["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "appVersion follows Cargo.toml"
    );
    assert!(Path::new(&root().join(CHART).join("templates/NOTES.txt")).exists());
}

/// The venv's kubectl (`make venv` installs one), else the machine's.
fn kubectl() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubectl");
    if venv.exists() { venv } else { "kubectl".into() }
}

/// The glibc versions `bin` needs (`readelf -V`: the `GLIBC_*` names of its version needs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_needs(bin: &Path) -> BTreeSet<String> {
    let out = Command::new("readelf")
        .arg("-V")
        .arg(bin)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -V {}", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let re = regex::Regex::new(r"Name: (GLIBC_[A-Z0-9_.]+)").expect("regex");
    re.captures_iter(&text).map(|c| c[1].to_string()).collect()
}

/// The binary `cargo build` makes (the CLI people run on their machines and in CI) starts on
/// glibc 2.34 (Amazon Linux 2023, RHEL 9): no packed relocations (build.rs packs them only with
/// `MLOBS_PACK_RELOCS=1`, which the image build sets) and no symbol newer than 2.34.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_default_binary_needs_no_glibc_newer_than_2_34() {
    let needs = glibc_needs(Path::new(env!("CARGO_BIN_EXE_mlobs")));
    assert!(needs.contains("GLIBC_2.2.5"), "readelf listed the needs: {needs:?}");
    assert!(
        !needs.contains("GLIBC_ABI_DT_RELR"),
        "the default build is linked with packed relocations (glibc 2.36): {needs:?}"
    );
    let newest = needs
        .iter()
        .filter_map(|n| n.strip_prefix("GLIBC_2.")?.split('.').next()?.parse::<u32>().ok())
        .max();
    assert!(newest <= Some(34), "the binary needs glibc 2.{newest:?}: {needs:?}");
}

/// The image build packs the binary's relocations (see build.rs); the bench measures that build.
#[test]
fn the_image_and_the_bench_build_with_packed_relocations() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("MLOBS_PACK_RELOCS=1"),
        "Dockerfile sets MLOBS_PACK_RELOCS=1"
    );
    let run = std::fs::read_to_string(root().join("e2e/run.sh")).expect("e2e/run.sh");
    assert!(run.contains("MLOBS_PACK_RELOCS=1 cargo build --release --bin mlobs"));
}
