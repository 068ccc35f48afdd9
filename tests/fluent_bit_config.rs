//! The rendered Fluent Bit configuration, checked against Fluent Bit's documented classic-mode
//! grammar and keys (no Fluent Bit binary is installable here: Debian has no package and no
//! package registry ships one), and the hot path's DaemonSet and role: same GPU nodes as the
//! collector, read-only logs, its own least-privilege role.
//!
//! The checker and its sources: tests/support/fluent_bit.rs.

#[path = "support/fluent_bit.rs"]
mod fluent_bit;

use std::collections::BTreeMap;

use fluent_bit::{get, parse, problems};

use k8s_openapi::api::apps::v1::DaemonSet;
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::RolePlan;
use mlobs::desired::{Context, Desired, build};
use serde_json::{Value, json};

fn pipeline(spec: Value) -> MLObservabilityPipeline {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a"},
        "spec": spec}))
    .expect("pipeline")
}

fn base(extra: Value) -> Value {
    let mut spec = json!({"clusterName": "prod-gpu", "region": "us-east-1",
        "identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST"}});
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(x.clone());
    }
    spec
}

fn built(spec: Value, policy: Option<&GpuTelemetryPolicy>) -> Desired {
    build(&pipeline(spec), policy, &Context::default()).expect("builds")
}

fn config(d: &Desired) -> String {
    let h = d.objects.hot_path.as_ref().expect("hot path objects");
    h.config_map
        .data
        .as_ref()
        .and_then(|m| m.get("fluent-bit.conf"))
        .cloned()
        .expect("config")
}

fn sample() -> Desired {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/pipeline-hotpath.yaml");
    let docs = mlobs::input::load_file(&path).expect("sample");
    let (mut pol, mut p) = (None, None);
    for d in docs {
        match d {
            mlobs::input::Document::Policy(x) => pol = Some(*x),
            mlobs::input::Document::Pipeline(x) => p = Some(*x),
        }
    }
    build(&p.expect("a pipeline"), pol.as_ref(), &Context::default()).expect("builds")
}

#[test]
fn every_rendered_config_follows_the_documented_grammar_and_keys() {
    let policy: GpuTelemetryPolicy = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": "p"}, "spec": {"hotPath": {"required": true}}}))
    .expect("policy");
    let configs = [
        ("sample", config(&sample())),
        (
            "defaults (policy-required)",
            config(&built(base(json!({})), Some(&policy))),
        ),
        (
            "three namespaces, provisioned, one pattern",
            config(&built(
                base(json!({"sources": {"namespaces": ["team-a", "team-b", "shared"]},
                    "hotPath": {"shards": 4, "patterns": ["panic: .*"], "memBufLimitMB": 1}})),
                None,
            )),
        ),
    ];
    for (case, text) in &configs {
        assert_eq!(problems(text), Vec::<String>::new(), "{case}:\n{text}");
        let sections = parse(text).expect("parses");
        let names: Vec<&str> = sections.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["SERVICE", "INPUT", "FILTER", "OUTPUT"], "{case}");
    }
    let three = parse(&configs[2].1).expect("parses");
    assert_eq!(
        get(&three[1].1, "path"),
        ["/var/log/containers/*_team-a_*.log,/var/log/containers/*_team-b_*.log,/var/log/containers/*_shared_*.log"]
    );
    assert_eq!(get(&three[1].1, "mem_buf_limit"), ["1MB"]);
    assert_eq!(get(&three[2].1, "regex"), ["log panic: .*"]);
    let defaults = parse(&configs[1].1).expect("parses");
    assert_eq!(
        get(&defaults[2].1, "regex").len(),
        mlobs::crd::DEFAULT_HOT_PATH_PATTERNS.len()
    );
    assert_eq!(get(&defaults[3].1, "stream"), ["mlobs-prod-gpu-team-a-train-hot"]);
}

#[test]
fn the_checker_refuses_what_fluent_bit_documents_as_wrong() {
    let good = config(&sample());
    assert!(problems(&good).is_empty());
    let cases = [
        (
            "    Logical_Op or\n",
            "    Logical_Op or\n    Exclude log debug\n",
            "both Regex and Exclude",
        ),
        ("    Mem_Buf_Limit 64MB\n", "    Mem_Buf_Limit lots\n", "not a size"),
        (
            "    storage.path /var/fluent-bit/state/storage\n",
            "",
            "without [SERVICE] storage.path",
        ),
        (
            "    Name kinesis_streams\n",
            "    Name kinesis_streams\n    delivery_stream x\n",
            "unknown key delivery_stream",
        ),
        ("    region us-east-1\n", "", "without region"),
        (
            "    Match hot.*\n    Logical_Op",
            "    Match other.*\n    Logical_Op",
            "matches no input tag",
        ),
        (
            "multiline.parser docker, cri",
            "multiline.parser docker, crio",
            "not built in",
        ),
        ("    Regex log NCCL", "    Regex log (NCCL", "does not compile"),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from:?} not in the sample's config");
        let bad = good.replacen(from, to, 1);
        let found = problems(&bad).join("\n");
        assert!(found.contains(want), "{want:?} not found in {found:?}");
    }
}

fn pod_spec(ds: &DaemonSet) -> k8s_openapi::api::core::v1::PodSpec {
    ds.spec.clone().and_then(|s| s.template.spec).expect("pod spec")
}

#[test]
fn fluent_bit_runs_on_the_collector_s_gpu_nodes_with_read_only_logs_and_its_own_account() {
    let d = built(
        base(
            json!({"sources": {"nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]},
            "hotPath": {}}),
        ),
        None,
    );
    let h = d.objects.hot_path.as_ref().expect("hot path");
    let (fb, col) = (pod_spec(&h.daemon_set), pod_spec(&d.objects.daemon_set));
    assert_eq!(fb.node_selector, col.node_selector);
    assert_eq!(fb.tolerations, col.tolerations);
    assert_eq!(
        fb.node_selector
            .as_ref()
            .and_then(|s| s.get("node.kubernetes.io/instance-type"))
            .map(String::as_str),
        Some("p5.48xlarge")
    );
    let c = &fb.containers[0];
    assert_eq!(
        c.security_context, col.containers[0].security_context,
        "as restricted as the collector"
    );
    let mounts: BTreeMap<String, (String, Option<bool>)> = (c.volume_mounts.iter().flatten())
        .map(|m| (m.name.clone(), (m.mount_path.clone(), m.read_only)))
        .collect();
    assert_eq!(mounts["varlog"], ("/var/log".to_string(), Some(true)));
    assert_eq!(mounts["state"].1, Some(false));
    let host: BTreeMap<String, String> = (fb.volumes.iter().flatten())
        .filter_map(|v| Some((v.name.clone(), v.host_path.clone()?.path)))
        .collect();
    assert_eq!(host["varlog"], "/var/log");
    assert_eq!(host["state"], "/var/lib/mlobs/team-a-train-hotpath");
    // Its own account, annotated with its own role, and never selected by the collector's DaemonSet.
    let sa = &h.service_account;
    assert_eq!(fb.service_account_name, sa.metadata.name);
    assert_ne!(sa.metadata.name, d.objects.service_account.metadata.name);
    let hot = d.aws.hot_path.as_ref().expect("hot path plan");
    let annotated = sa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("eks.amazonaws.com/role-arn"));
    assert_eq!(annotated.map(String::as_str), Some(hot.role.arn()));
    let selector = d
        .objects
        .daemon_set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .expect("selector");
    let labels = h
        .daemon_set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .and_then(|m| m.labels)
        .expect("labels");
    assert!(
        selector.iter().any(|(k, v)| labels.get(k) != Some(v)),
        "the collector selects Fluent Bit pods"
    );
    assert_eq!(
        labels.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a.train"),
        "pruned with the pipeline"
    );
}

#[test]
fn a_pattern_change_rolls_the_fluent_bit_pods() {
    let hash = |patterns: Value| {
        let d = built(base(json!({"hotPath": {"patterns": patterns}})), None);
        let ds = d.objects.hot_path.expect("hot path").daemon_set;
        ds.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("mlobs.io/config-hash").cloned())
    };
    let (a, b) = (hash(json!(["ERROR"])), hash(json!(["ERROR", "FATAL"])));
    assert!(a.is_some());
    assert_ne!(a, b);
}

#[test]
fn fluent_bit_may_only_put_records_on_its_stream_and_use_the_key_through_kinesis() {
    let d = sample();
    let hot = d.aws.hot_path.as_ref().expect("hot path plan");
    let RolePlan::Create { inline_policy, .. } = &hot.role else {
        panic!("a created role")
    };
    let statements = inline_policy["Statement"].as_array().expect("statements");
    let mut actions: Vec<&str> = statements
        .iter()
        .flat_map(|s| s["Action"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    actions.sort();
    assert_eq!(actions, ["kinesis:PutRecords", "kms:GenerateDataKey"]);
    let put = &statements[0];
    assert_eq!(put["Resource"], json!([hot.stream.arn]));
    assert_eq!(put["Condition"]["StringEquals"]["aws:RequestedRegion"], "us-east-1");
    let key = &statements[1];
    assert_eq!(
        key["Condition"]["StringEquals"]["kms:ViaService"],
        "kinesis.us-east-1.amazonaws.com"
    );
    for s in statements {
        for r in s["Resource"].as_array().expect("a list") {
            assert!(r.as_str().is_some_and(|r| r.starts_with("arn:aws:") && r != "*"), "{s}");
        }
    }
    // Without the hot path, no Fluent Bit role, objects or stream.
    let off = built(base(json!({})), None);
    assert!(off.aws.hot_path.is_none() && off.objects.hot_path.is_none());
}
