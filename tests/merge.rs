//! Effective spec: defaults, precedence, guardrails and their sources.

use std::collections::BTreeSet;

use mlobs::conventions::bounded_name;
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::effective::{Context, EffKms, EffRole, Source};
use mlobs::desired::merge::{Merged, merge, quantity_mib};
use mlobs::input::{Document, load_file};
use proptest::prelude::*;
use serde_json::{Value, json};

fn sample(name: &str) -> Document {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/samples")
        .join(name);
    load_file(&path).expect("sample is valid").remove(0)
}

fn sample_pipeline(name: &str) -> MLObservabilityPipeline {
    match sample(name) {
        Document::Pipeline(p) => *p,
        Document::Policy(_) => panic!("{name} is a policy"),
    }
}

fn sample_policy(name: &str) -> GpuTelemetryPolicy {
    match sample(name) {
        Document::Policy(p) => *p,
        Document::Pipeline(_) => panic!("{name} is a pipeline"),
    }
}

#[path = "support/specs.rs"]
mod specs;
use specs::{merged, pipeline, policy};

fn violation_rules(m: &Merged) -> Vec<(String, String)> {
    m.violations.iter().map(|v| (v.path.clone(), v.rule.clone())).collect()
}

#[test]
fn minimal_sample_gets_builtin_defaults_with_their_source() {
    let m = merged(&sample_pipeline("pipeline-minimal.yaml"), None);
    let e = &m.effective;
    assert!(m.violations.is_empty());
    assert_eq!(e.logs.group.name, "/aws/eks/prod-gpu/team-a/training/logs");
    assert_eq!(e.metrics.group.name, "/aws/eks/prod-gpu/team-a/training/metrics");
    assert_eq!(e.logs.group.retention_days, 30);
    assert_eq!(e.logs.include, vec!["/var/log/pods/team-a_*/*/*.log"]);
    assert_eq!(e.metrics.metrics.len(), 10);
    assert!(
        e.metrics.metrics.windows(2).all(|w| w[0] < w[1]),
        "metrics sorted and unique"
    );
    assert_eq!(e.metrics.scrape_interval_ms, 30_000);
    assert_eq!(e.collector.memory_limit_mib, 512);
    assert!(
        matches!(&e.kms, EffKms::Create { alias, rotation: true, deletion_window_days: 30 } if alias == "alias/mlobs/prod-gpu/team-a/training")
    );
    assert!(matches!(&e.identity.role, EffRole::Create { name } if name == "mlobs-prod-gpu-team-a-training"));
    assert_eq!(
        e.logs.group.tags.get("mlobs.io/pipeline").map(String::as_str),
        Some("team-a/training")
    );
    assert_eq!(e.sources.logs.group.retention_days, Source::BuiltIn);
    assert_eq!(e.sources.cluster_name, Source::Pipeline);
    assert_eq!(e.sources.metrics.metrics, Source::BuiltIn);
}

#[test]
fn full_sample_under_default_policy_is_compliant_and_gets_required_redactions() {
    let pol = sample_policy("policy-default.yaml");
    let m = merged(&sample_pipeline("pipeline-full.yaml"), Some(&pol));
    assert_eq!(m.violations, vec![], "full sample must comply with the default policy");
    let names: Vec<_> = m
        .effective
        .logs
        .redactions
        .iter()
        .filter_map(|r| r.name.clone())
        .collect();
    // bearer-tokens is the pipeline's own (same name: not duplicated); customer-ids is added.
    assert_eq!(names, vec!["bearer-tokens", "emails", "customer-ids"]);
    assert_eq!(m.effective.sources.logs.redaction, Source::PolicyGuardrail);
    assert_eq!(m.effective.policy, Some(("platform-default".to_string(), None)));
}

#[test]
fn policy_defaults_beat_builtins_and_pipeline_beats_policy() {
    let pol = policy(
        json!({"metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL"]}, "logs": {"minRetentionInDays": 90},
        "collectorDefaults": {"image": "registry.local/otelcol-contrib:0.114.0"}}),
    );
    let m = merged(&pipeline(json!({})), Some(&pol));
    assert_eq!(m.effective.metrics.metrics, vec!["DCGM_FI_DEV_GPU_UTIL"]);
    assert_eq!(m.effective.sources.metrics.metrics, Source::PolicyDefault);
    assert_eq!(m.effective.logs.group.retention_days, 90);
    assert_eq!(m.effective.collector.image, "registry.local/otelcol-contrib:0.114.0");
    let m = merged(
        &pipeline(json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_FB_USED"]}}})),
        Some(&pol),
    );
    assert_eq!(m.effective.metrics.metrics, vec!["DCGM_FI_DEV_FB_USED"]);
    assert_eq!(m.effective.sources.metrics.metrics, Source::Pipeline);
}

#[test]
fn each_guardrail_reports_its_field_and_rule() {
    let pol = policy(json!({
        "metrics": {"allowed": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"], "minScrapeInterval": "30s", "maxMetricsPerGpu": 1},
        "logs": {"requireKms": true, "minRetentionInDays": 30, "logGroupPrefix": "/aws/eks/prod-gpu/"},
        "identity": {"allowedModes": ["IRSA"], "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/b"},
    }));
    let p = pipeline(json!({
        "sources": {"namespaces": ["team-a", "team-b"]},
        "metrics": {"dcgm": {"scrapeInterval": "10s", "metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_SM_ACTIVE"]}},
        "logs": {"include": ["/var/log/pods/team-a_*/*/*.log"], "logGroup": {"name": "/other/logs", "retentionInDays": 7}},
        "encryption": {"kms": {"disabled": true}},
        "identity": {"mode": "PodIdentity", "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/other"},
    }));
    let m = merged(&p, Some(&pol));
    let got = violation_rules(&m);
    let want: Vec<(String, String)> = [
        ("spec.sources.namespaces[1]", "sources.crossNamespaceFrom"),
        ("spec.logs.logGroup.retentionInDays", "logs.minRetentionInDays"),
        ("spec.logs.logGroup.name", "logs.logGroupPrefix"),
        ("spec.metrics.dcgm.scrapeInterval", "metrics.minScrapeInterval"),
        ("spec.metrics.dcgm.metrics[1]", "metrics.allowed"),
        ("spec.metrics.dcgm.metrics", "metrics.maxMetricsPerGpu"),
        ("spec.encryption.kms.disabled", "logs.requireKms"),
        ("spec.identity.mode", "identity.allowedModes"),
        (
            "spec.identity.permissionsBoundaryArn",
            "identity.permissionsBoundaryArn",
        ),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(m.violations.iter().all(|v| v.policy == "guard"));
}

#[test]
fn a_default_scrape_interval_is_raised_to_the_policy_minimum_silently() {
    let pol = policy(json!({"metrics": {"minScrapeInterval": "1m"}}));
    let m = merged(&pipeline(json!({})), Some(&pol));
    assert!(m.violations.is_empty());
    assert_eq!(m.effective.metrics.scrape_interval_ms, 60_000);
    assert_eq!(m.effective.sources.metrics.scrape_interval, Source::PolicyGuardrail);
}

#[test]
fn cross_namespace_collection_is_allowed_from_listed_namespaces() {
    let pol = policy(json!({"sources": {"crossNamespaceFrom": ["team-a"]}}));
    let m = merged(
        &pipeline(json!({"sources": {"namespaces": ["team-a", "team-b"]}})),
        Some(&pol),
    );
    assert!(m.violations.is_empty());
    assert_eq!(
        m.effective.logs.include,
        vec!["/var/log/pods/team-a_*/*/*.log", "/var/log/pods/team-b_*/*/*.log"]
    );
}

#[test]
fn unresolvable_values_are_errors_naming_the_field() {
    let err = |p: MLObservabilityPipeline| -> Vec<String> {
        match merge(&p, None, &Context::default()) {
            Ok(_) => panic!("merge accepted an unresolvable spec"),
            Err(e) => e.0.into_iter().map(|f| f.path).collect(),
        }
    };
    let mut p = pipeline(json!({}));
    p.spec.cluster_name = None;
    p.spec.region = None;
    assert_eq!(err(p), vec!["spec.clusterName", "spec.region"]);
    assert_eq!(
        err(pipeline(json!({"identity": {"mode": "IRSA", "existingRoleArn": null}}))),
        vec!["spec.identity.oidcProviderArn"]
    );
    assert_eq!(
        err(pipeline(
            json!({"collector": {"resources": {"requests": {"memory": "1Gi"}}}})
        )),
        vec!["spec.collector.resources.limits.memory"]
    );
    assert_eq!(
        err(pipeline(json!({"logs": {"include": ["/var/log/pods/*/*/*.log"]}}))),
        vec!["spec.logs.include[0]"]
    );
    // The operator's flags fill what the pipeline leaves out.
    let mut p = pipeline(json!({}));
    p.spec.cluster_name = None;
    let ctx = Context {
        cluster_name: Some("from-flag".into()),
        ..Context::default()
    };
    let m = merge(&p, None, &ctx).expect("flag supplies the cluster");
    assert_eq!(m.effective.cluster_name, "from-flag");
    assert_eq!(m.effective.sources.cluster_name, Source::Operator);
}

#[test]
fn a_pinned_collector_older_than_a_rendered_feature_is_refused_naming_both() {
    let old = "otel/opentelemetry-collector-contrib:0.124.1";
    let refused =
        |p: &MLObservabilityPipeline, pol: Option<&GpuTelemetryPolicy>| match merge(p, pol, &Context::default()) {
            Ok(_) => panic!("merge accepted {old} for a pipeline that ships logs"),
            Err(e) => e.0,
        };
    let errors = refused(&pipeline(json!({"collector": {"image": old}})), None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (path, rule, message) = (&errors[0].path, &errors[0].rule, &errors[0].message);
    assert_eq!(
        (path.as_str(), rule.as_str()),
        ("spec.collector.image", "collectorVersion")
    );
    assert!(
        message.contains("0.124.1") && message.contains("{PodName}") && message.contains("0.125.0"),
        "{message}"
    );
    // Through a policy default (policies are admitted by the CRD schema alone, or by an older mlobs).
    let pol = policy(json!({"collectorDefaults": {"image": old}}));
    let errors = refused(&pipeline(json!({})), Some(&pol));
    assert!(
        errors[0]
            .message
            .contains("policy \"guard\"'s spec.collectorDefaults.image"),
        "{errors:?}"
    );
    let invalid = mlobs::crd::validate::validate_policy(&pol).expect_err("validate_policy refuses it");
    assert!(
        invalid
            .0
            .iter()
            .any(|f| f.path == "spec.collectorDefaults.image" && f.rule == "collectorVersion")
    );
    // Without logs no placeholder is rendered, so the older release is fine.
    let m = merged(
        &pipeline(json!({"collector": {"image": old}, "logs": {"enabled": false}})),
        None,
    );
    assert_eq!(m.effective.collector.image, old);
    // Newer, or another distribution's own numbering: accepted.
    merged(
        &pipeline(json!({"collector": {"image": "otel/opentelemetry-collector-contrib:0.130.0"}})),
        None,
    );
    merged(
        &pipeline(json!({"collector": {"image": "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.0"}})),
        None,
    );
}

#[test]
fn bounded_names_fit_and_never_collide() {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
    assert_eq!(bounded_name("mlobs-a-b", 64, ok), "mlobs-a-b");
    let long = "x".repeat(100);
    let a = bounded_name(&long, 64, ok);
    assert_eq!(a.len(), 64);
    assert_ne!(a, bounded_name(&format!("{long}y"), 64, ok));
    // Sanitising changes the name, so the hash keeps a.b and a-b apart.
    assert_ne!(bounded_name("a.b", 64, ok), bounded_name("a-b", 64, ok));
}

#[test]
fn memory_quantities_parse_to_mib() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let q = |s: &str| quantity_mib(&Quantity(s.into()));
    assert_eq!(q("512Mi"), Some(512));
    assert_eq!(q("1Gi"), Some(1024));
    assert_eq!(q("1.5Gi"), Some(1536));
    assert_eq!(q("1G"), Some(953));
    assert_eq!(q("1048576"), Some(1));
    assert_eq!(q("lots"), None);
    assert_eq!(q("5Xi"), None);
}

// ---- properties ----

const METRICS: [&str; 8] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_DEV_SM_CLOCK",
];
const RETENTIONS: [i32; 8] = [1, 7, 14, 30, 90, 365, 731, 3653];

fn metric_list() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(METRICS.to_vec(), 1..=METRICS.len())
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn arb_pipeline() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(metric_list()),
        proptest::option::of(proptest::sample::select(RETENTIONS.to_vec())),
        proptest::option::of(prop_oneof![Just("IRSA"), Just("PodIdentity")]),
        proptest::option::of(prop_oneof![Just("5s"), Just("30s"), Just("2m")]),
        proptest::option::of(any::<bool>()),
        proptest::option::of("[a-z]{1,8}"),
        proptest::option::of(prop_oneof![Just("128Mi"), Just("2Gi"), Just("weird"), Just("0")]),
    )
        .prop_map(|(metrics, retention, mode, scrape, kms_off, ns2, mem)| {
            let mut spec = json!({"clusterName": "c", "region": "us-east-1"});
            let s = spec.as_object_mut().expect("object");
            if let Some(m) = metrics {
                s.insert(
                    "metrics".into(),
                    json!({"dcgm": {"metrics": m, "scrapeInterval": scrape}}),
                );
            }
            if let Some(r) = retention {
                s.insert("logs".into(), json!({"logGroup": {"retentionInDays": r}}));
            }
            let mut id = json!({"oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.example/id/X"});
            if let Some(m) = mode {
                id["mode"] = json!(m);
            }
            s.insert("identity".into(), id);
            if let Some(off) = kms_off {
                s.insert("encryption".into(), json!({"kms": {"disabled": off}}));
            }
            if let Some(ns) = ns2 {
                s.insert("sources".into(), json!({"namespaces": ["team-a", ns]}));
            }
            if let Some(mem) = mem {
                s.insert("collector".into(), json!({"resources": {"limits": {"memory": mem}}}));
            }
            spec
        })
}

fn arb_policy() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(metric_list()),
        proptest::option::of(proptest::sample::select(RETENTIONS.to_vec())),
        proptest::option::of(any::<bool>()),
        proptest::option::of(1i32..6),
        proptest::option::of(prop_oneof![Just(vec!["IRSA"]), Just(vec!["PodIdentity"])]),
    )
        .prop_map(|(allowed, min_ret, require_kms, max, modes)| {
            json!({
                "metrics": {"allowed": allowed, "maxMetricsPerGpu": max},
                "logs": {"minRetentionInDays": min_ret, "requireKms": require_kms},
                "identity": {"allowedModes": modes},
            })
        })
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_never_panics_and_is_deterministic(p in arb_pipeline(), pol in proptest::option::of(arb_policy())) {
        let p = pipeline(strip_nulls(p));
        let pol = pol.map(|v| policy(strip_nulls(v)));
        let a = merge(&p, pol.as_ref(), &Context::default());
        let b = merge(&p, pol.as_ref(), &Context::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn guardrails_always_win(p in arb_pipeline(), pol in arb_policy()) {
        let p = pipeline(strip_nulls(p));
        let pol = policy(strip_nulls(pol));
        let Ok(m) = merge(&p, Some(&pol), &Context::default()) else { return Ok(()) };
        let e = &m.effective;
        let has = |rule: &str| m.violations.iter().any(|v| v.rule == rule);
        if let Some(allowed) = pol.spec.metrics.as_ref().and_then(|x| x.allowed.as_ref()) {
            let outside = e.metrics.metrics.iter().any(|x| !allowed.contains(x));
            prop_assert_eq!(outside, has("metrics.allowed"));
        }
        if let Some(min) = pol.spec.logs.as_ref().and_then(|l| l.min_retention_in_days) {
            prop_assert_eq!(e.logs.group.retention_days < min, has("logs.minRetentionInDays"));
        }
        if pol.spec.logs.as_ref().and_then(|l| l.require_kms) == Some(true) {
            prop_assert_eq!(matches!(e.kms, EffKms::Disabled), has("logs.requireKms"));
        }
        if let Some(max) = pol.spec.metrics.as_ref().and_then(|x| x.max_metrics_per_gpu) {
            prop_assert_eq!(e.metrics.metrics.len() > max as usize, has("metrics.maxMetricsPerGpu"));
        }
        if let Some(modes) = pol.spec.identity.as_ref().and_then(|i| i.allowed_modes.as_ref()) {
            prop_assert_eq!(!modes.contains(&e.identity.mode), has("identity.allowedModes"));
        }
        // A compliant result never carries a value the policy forbids.
        if m.violations.is_empty()
            && let Some(min) = pol.spec.logs.as_ref().and_then(|l| l.min_retention_in_days)
        {
            prop_assert!(e.logs.group.retention_days >= min && e.metrics.group.retention_days >= min);
        }
    }

    #[test]
    fn merging_the_effective_values_back_gives_the_same_result(p in arb_pipeline(), pol in proptest::option::of(arb_policy())) {
        let p = pipeline(strip_nulls(p));
        let pol = pol.map(|v| policy(strip_nulls(v)));
        let Ok(first) = merge(&p, pol.as_ref(), &Context::default()) else { return Ok(()) };
        let e = &first.effective;
        // Write every effective value back into the spec explicitly, then merge again.
        let mut again = p.clone();
        let s = &mut again.spec;
        let dcgm = s.metrics.get_or_insert_default().dcgm.get_or_insert_default();
        dcgm.metrics = Some(e.metrics.metrics.clone());
        dcgm.scrape_interval = Some(mlobs::crd::format_duration_ms(e.metrics.scrape_interval_ms));
        let lg = s.logs.get_or_insert_default().log_group.get_or_insert_default();
        lg.retention_in_days = Some(e.logs.group.retention_days);
        lg.name = Some(e.logs.group.name.clone());
        s.identity.get_or_insert_default().mode = Some(e.identity.mode);
        s.logs.get_or_insert_default().redaction = Some(e.logs.redactions.clone());
        let second = merge(&again, pol.as_ref(), &Context::default()).expect("re-merge of a merged spec");
        prop_assert_eq!(&second.effective.metrics, &e.metrics);
        prop_assert_eq!(&second.effective.logs, &e.logs);
        prop_assert_eq!(&second.effective.identity, &e.identity);
        prop_assert_eq!(&second.effective.kms, &e.kms);
        let rules = |m: &Merged| m.violations.iter().map(|v| v.rule.clone()).collect::<BTreeSet<_>>();
        prop_assert_eq!(rules(&second), rules(&first));
    }
}

#[test]
fn a_metric_the_managed_exporter_does_not_collect_is_a_violation() {
    // Managed exporter, no allowed list: it collects the policy's defaults only.
    let pol = policy(json!({"dcgmExporter": {"mode": "Managed"}, "metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL"]}}));
    let p = pipeline(json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"]}}}));
    assert_eq!(
        violation_rules(&merged(&p, Some(&pol))),
        vec![(
            "spec.metrics.dcgm.metrics[1]".to_string(),
            "dcgmExporter.mode".to_string()
        )]
    );
    // An External exporter (someone else's) is not ours to judge.
    let external = policy(json!({"dcgmExporter": {"mode": "External", "namespace": "gpu-operator",
        "podSelector": {"app": "nvidia-dcgm-exporter"}}, "metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL"]}}));
    assert!(violation_rules(&merged(&p, Some(&external))).is_empty());
    // With an allowed list the exporter collects it all; `metrics.allowed` is the rule.
    let allowed = policy(json!({"metrics": {"allowed": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"]}}));
    assert!(violation_rules(&merged(&p, Some(&allowed))).is_empty());
}

#[test]
fn a_policy_collector_namespace_moves_the_collector_with_unique_names_and_identity_bound_there() {
    let pol = policy(json!({"collectorNamespace": "mlobs-system"}));
    let ctx = Context::default();
    for mode in ["PodIdentity", "IRSA"] {
        let mut p = pipeline(json!({}));
        p.spec.identity = serde_json::from_value(json!({"mode": mode,
            "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X"}))
        .expect("identity");
        let d = mlobs::desired::build(&p, Some(&pol), &ctx).expect("builds");
        let e = &d.effective;
        assert_eq!(e.collector_namespace, "mlobs-system");
        assert_eq!(e.sources.collector_namespace, Source::PolicyGuardrail);
        let o = &d.objects;
        for (kind, meta) in [
            ("ServiceAccount", &o.service_account.metadata),
            ("ConfigMap", &o.config_map.metadata),
            ("DaemonSet", &o.daemon_set.metadata),
        ] {
            assert_eq!(meta.namespace.as_deref(), Some("mlobs-system"), "{kind}");
            // Two pipelines named `train` in different team namespaces share mlobs-system.
            assert_eq!(meta.name.as_deref(), Some("mlobs-team-a-train"), "{kind}");
        }
        let subject = &o.cluster_role_binding.subjects.as_ref().expect("subjects")[0];
        assert_eq!(
            (subject.namespace.as_deref(), subject.name.as_str()),
            (Some("mlobs-system"), "mlobs-team-a-train")
        );
        let trust = match &d.aws.role {
            mlobs::desired::aws_plan::RolePlan::Create { trust_policy, .. } => trust_policy.to_string(),
            other => panic!("role is created: {other:?}"),
        };
        match mode {
            "IRSA" => assert!(
                trust.contains("system:serviceaccount:mlobs-system:mlobs-team-a-train"),
                "{trust}"
            ),
            _ => {
                let a = d.aws.pod_identity.as_ref().expect("association");
                assert_eq!(
                    (a.namespace.as_str(), a.service_account.as_str()),
                    ("mlobs-system", "mlobs-team-a-train")
                );
            }
        }
    }
    // Without the setting the collector stays in the pipeline's namespace under its short name.
    let d = mlobs::desired::build(&pipeline(json!({})), Some(&policy(json!({}))), &ctx).expect("builds");
    assert_eq!(d.objects.daemon_set.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(d.objects.daemon_set.metadata.name.as_deref(), Some("mlobs-train"));
}

#[test]
fn the_grace_period_must_outlast_a_scrape_and_a_batch_and_its_default_always_does() {
    let grace = |spec: Value, pol: Option<&GpuTelemetryPolicy>| {
        merge(&pipeline(spec), pol, &Context::default()).map(|m| {
            let e = m.effective;
            (e.data_flow_grace_ms, Some(e.sources.lifecycle.data_flow_grace))
        })
    };
    assert_eq!(grace(json!({}), None), Ok((300_000, Some(Source::BuiltIn))));
    // What the end-to-end test runs with.
    let e2e = json!({"dataFlow": {"gracePeriod": "20s"}, "metrics": {"dcgm": {"scrapeInterval": "5s"}},
        "collector": {"batch": {"timeout": "1s"}}});
    assert_eq!(grace(e2e, None), Ok((20_000, Some(Source::Pipeline))));

    let short = json!({"dataFlow": {"gracePeriod": "40s"}});
    let err = grace(short.clone(), None).expect_err("40s is not longer than 30s + 10s");
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, "spec.dataFlow.gracePeriod");
    assert_eq!(
        err.0[0].message,
        "must be longer than the scrape interval plus the batch timeout (30s + 10s = 40s), got 40s"
    );
    // The scrape interval counts only when metrics are scraped.
    let logs_only = json!({"dataFlow": {"gracePeriod": "40s"}, "metrics": {"dcgm": {"enabled": false}}});
    assert_eq!(grace(logs_only, None), Ok((40_000, Some(Source::Pipeline))));
    // The policy's minimum raises the effective scrape interval, and the check follows it.
    let ok = json!({"dataFlow": {"gracePeriod": "50s"}});
    assert!(grace(ok.clone(), None).is_ok());
    let slow = policy(json!({"metrics": {"minScrapeInterval": "1m"}}));
    let err = grace(ok, Some(&slow)).expect_err("1m + 10s");
    assert!(err.0[0].message.contains("(1m + 10s = 1m10s)"), "{err}");
    // Without a pipeline value a slow scrape stretches the default instead of failing.
    let slow_scrape = json!({"metrics": {"dcgm": {"scrapeInterval": "10m"}}});
    assert_eq!(grace(slow_scrape, None), Ok((1_220_000, Some(Source::Derived))));
}
