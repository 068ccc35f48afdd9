//! Every row of `mlobs plan`'s effective settings names where its value really came from.
//!
//! The expected source is worked out here from the input documents alone (is the field set in
//! the pipeline? does the policy set a default or a guardrail for it?), not from the merge code,
//! for every sample pipeline × sample policy and a few variants.

use std::collections::BTreeSet;
use std::path::Path;

use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline, parse_duration_ms};
use mlobs::desired::effective::Context;
use mlobs::desired::merge::merge;
use mlobs::desired::settings::settings;
use mlobs::desired::sources::Source;
use mlobs::input::{Document, load_file};
use serde_json::{Value, json};

fn load(path: &str) -> Document {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    load_file(&path).expect("sample is valid").remove(0)
}

fn pipeline(path: &str) -> Value {
    match load(path) {
        Document::Pipeline(p) => serde_json::to_value(*p).expect("serializes"),
        Document::Policy(_) => panic!("{path} is a policy"),
    }
}

fn policy(path: &str) -> Value {
    match load(path) {
        Document::Policy(p) => serde_json::to_value(*p).expect("serializes"),
        Document::Pipeline(_) => panic!("{path} is a pipeline"),
    }
}

/// Every document of a file, as JSON.
fn load_all(path: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    (load_file(&path).expect("sample is valid").into_iter())
        .map(|d| match d {
            Document::Pipeline(p) => serde_json::to_value(*p).expect("serializes"),
            Document::Policy(p) => serde_json::to_value(*p).expect("serializes"),
        })
        .collect()
}

fn set(doc: &Value, pointer: &str) -> bool {
    doc.pointer(pointer).is_some_and(|v| !v.is_null())
}

fn names(doc: Option<&Value>, pointer: &str) -> BTreeSet<String> {
    let list = doc.and_then(|d| d.pointer(pointer)).and_then(Value::as_array);
    (list.into_iter().flatten())
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect()
}

/// How a row's value is chosen: (row, pipeline fields, policy default fields, otherwise). The
/// first pipeline field set wins, then the first policy default set, else `otherwise` (the
/// built-in default, the operator's flag, or a derived value).
type Rule = (&'static str, &'static [&'static str], &'static [&'static str], Source);

use Source::{BuiltIn, Derived, Operator};

#[rustfmt::skip]
const RULES: &[Rule] = &[
    ("clusterName", &["/spec/clusterName"], &[], Operator),
    ("region", &["/spec/region"], &[], Operator),
    ("sources.namespaces", &["/spec/sources/namespaces"], &[], BuiltIn),
    ("sources.nodeSelector", &["/spec/sources/nodeSelector"], &["/spec/nodeSelector"], BuiltIn),
    ("logs.enabled", &["/spec/logs/enabled"], &[], BuiltIn),
    ("logs.include", &["/spec/logs/include"], &[], BuiltIn),
    ("logs.logGroup.name", &["/spec/logs/logGroup/name"], &[], BuiltIn),
    ("logs.logGroup.retentionInDays", &["/spec/logs/logGroup/retentionInDays"], &["/spec/logs/minRetentionInDays"], BuiltIn),
    ("logs.logGroup.class", &["/spec/logs/logGroup/class"], &[], BuiltIn),
    ("logs.redaction", &["/spec/logs/redaction"], &[], BuiltIn),
    ("metrics.dcgm.enabled", &["/spec/metrics/dcgm/enabled"], &[], BuiltIn),
    ("metrics.dcgm.scrapeInterval", &["/spec/metrics/dcgm/scrapeInterval"], &[], BuiltIn),
    ("metrics.dcgm.metrics", &["/spec/metrics/dcgm/metrics"], &["/spec/metrics/defaults"], BuiltIn),
    ("metrics.cloudwatch.namespace", &["/spec/metrics/cloudwatch/namespace"], &[], BuiltIn),
    ("metrics.cloudwatch.dimensions", &["/spec/metrics/cloudwatch/dimensions"], &[], BuiltIn),
    ("metrics.cloudwatch.logGroup.name", &["/spec/metrics/cloudwatch/logGroup/name"], &[], BuiltIn),
    ("metrics.cloudwatch.logGroup.retentionInDays", &["/spec/metrics/cloudwatch/logGroup/retentionInDays"], &["/spec/logs/minRetentionInDays"], BuiltIn),
    ("traces.otlp.enabled", &["/spec/traces/otlp/enabled"], &[], BuiltIn),
    ("encryption.kms", &["/spec/encryption/kms/keyArn", "/spec/encryption/kms/disabled", "/spec/encryption/kms/create/alias", "/spec/encryption/kms/create/rotation", "/spec/encryption/kms/create/deletionWindowInDays"], &[], BuiltIn),
    ("identity.mode", &["/spec/identity/mode"], &["/spec/identity/allowedModes/0"], BuiltIn),
    ("identity.role", &["/spec/identity/existingRoleArn", "/spec/identity/roleName"], &[], Derived),
    ("identity.permissionsBoundaryArn", &["/spec/identity/permissionsBoundaryArn"], &["/spec/identity/permissionsBoundaryArn"], BuiltIn),
    ("collector.image", &["/spec/collector/image"], &["/spec/collectorDefaults/image"], BuiltIn),
    ("collectorNamespace", &[], &[], Derived),
    ("collector.resources", &["/spec/collector/resources"], &["/spec/collectorDefaults/resources"], BuiltIn),
    ("collector.batch.sendBatchSize", &["/spec/collector/batch/sendBatchSize"], &[], BuiltIn),
    ("collector.batch.timeout", &["/spec/collector/batch/timeout"], &[], BuiltIn),
    ("collector.queueHostPath", &["/spec/collector/queueHostPath"], &[], BuiltIn),
    ("collector.retryMaxElapsed", &["/spec/collector/retryMaxElapsed"], &[], BuiltIn),
    ("exporter", &[], &[], BuiltIn),
    ("traces.destination", &["/spec/traces/destination"], &[], BuiltIn),
    ("metrics.prometheus.workspaceArn", &["/spec/metrics/prometheus"], &[], BuiltIn),
    ("datadog", &["/spec/datadog"], &[], BuiltIn),
    ("archive.enabled", &["/spec/archive"], &["/spec/archive/required"], BuiltIn),
    ("hotPath.enabled", &["/spec/hotPath"], &["/spec/hotPath/required"], BuiltIn),
    ("hotPath.stream", &["/spec/hotPath/stream"], &[], Derived),
    ("hotPath.capacity", &["/spec/hotPath/shards"], &[], BuiltIn),
    ("hotPath.retentionHours", &["/spec/hotPath/retentionHours"], &[], BuiltIn),
    ("hotPath.patterns", &["/spec/hotPath/patterns"], &[], BuiltIn),
    ("hotPath.memBufLimitMB", &["/spec/hotPath/memBufLimitMB"], &[], BuiltIn),
    ("hotPath.image", &["/spec/hotPath/image"], &[], BuiltIn),
    ("driftPolicy", &["/spec/driftPolicy"], &[], BuiltIn),
    ("deletionPolicy", &["/spec/deletionPolicy"], &[], BuiltIn),
    ("resyncInterval", &["/spec/resyncInterval"], &[], BuiltIn),
    ("dataFlow.gracePeriod", &["/spec/dataFlow/gracePeriod"], &[], BuiltIn),
];

/// The source a row must show for this pipeline and policy, read from the documents.
fn expected(&(row, pipeline, policy, otherwise): &Rule, p: &Value, pol: Option<&Value>) -> Source {
    let by_precedence = if pipeline.iter().any(|ptr| set(p, ptr)) {
        Source::Pipeline
    } else if pol.is_some_and(|pol| policy.iter().any(|ptr| set(pol, ptr))) {
        Source::PolicyDefault
    } else {
        otherwise
    };
    // Guardrails and values that other choices decide.
    match row {
        // A required redaction the pipeline lacks is added.
        "logs.redaction" => {
            let own = names(Some(p), "/spec/logs/redaction");
            let required = names(pol, "/spec/logs/requiredRedactions");
            if required.difference(&own).next().is_some() {
                return Source::PolicyGuardrail;
            }
        }
        // An unset scrape interval (30s) is raised to the policy's minimum.
        "metrics.dcgm.scrapeInterval" if by_precedence == BuiltIn => {
            let min = pol.and_then(|x| x.pointer("/spec/metrics/minScrapeInterval"));
            let min_ms = min.and_then(Value::as_str).and_then(|m| parse_duration_ms(m).ok());
            if min_ms.is_some_and(|ms| ms > 30_000) {
                return Source::PolicyGuardrail;
            }
        }
        "collectorNamespace" if pol.is_some_and(|x| set(x, "/spec/collectorNamespace")) => {
            return Source::PolicyGuardrail;
        }
        // Every governed pipeline scrapes its policy's exporter.
        "exporter" if pol.is_some() => return Source::PolicyDefault,
        // An existing role keeps its own boundary: none is set, whatever the policy says.
        "identity.permissionsBoundaryArn" if set(p, "/spec/identity/existingRoleArn") => return Derived,
        _ => {}
    }
    by_precedence
}

fn typed_pipeline(v: &Value) -> MLObservabilityPipeline {
    serde_json::from_value(v.clone()).expect("pipeline deserializes")
}

fn typed_policy(v: &Value) -> GpuTelemetryPolicy {
    serde_json::from_value(v.clone()).expect("policy deserializes")
}

/// (name, pipeline, policy): every sample pipeline under every sample policy and none, plus
/// variants for the rows the samples leave at one source.
fn cases() -> Vec<(String, Value, Option<Value>)> {
    let pipelines = [
        ("minimal", pipeline("config/samples/pipeline-minimal.yaml")),
        ("full", pipeline("config/samples/pipeline-full.yaml")),
        ("gpu-operator", pipeline("tests/fixtures/pipeline-gpu-operator.yaml")),
    ];
    let policies = [
        ("no policy", None),
        ("default policy", Some(policy("config/samples/policy-default.yaml"))),
        (
            "gpu-operator policy",
            Some(policy("config/samples/policy-gpu-operator.yaml")),
        ),
    ];
    let mut out = vec![];
    for (p_name, p) in &pipelines {
        for (pol_name, pol) in &policies {
            out.push((format!("{p_name} pipeline, {pol_name}"), p.clone(), pol.clone()));
        }
    }
    // Every destination (the sample's pipeline is its second document).
    let destinations = load_all("config/samples/pipeline-destinations.yaml");
    out.push((
        "destinations pipeline, its policy".into(),
        destinations[1].clone(),
        Some(destinations[0].clone()),
    ));
    // The operator's flags, an existing role and key, a shared collector namespace, a slow
    // scrape default raised by the policy.
    let mut flags = pipelines[0].1.clone();
    if let Some(spec) = flags["spec"].as_object_mut() {
        spec.remove("clusterName");
        spec.remove("region");
    }
    out.push(("minimal pipeline on the operator's flags".into(), flags, None));
    let mut existing = pipelines[1].1.clone();
    existing["spec"]["identity"] = json!({"mode": "PodIdentity",
        "existingRoleArn": "arn:aws:iam::123456789012:role/mine"});
    existing["spec"]["encryption"] = json!({"kms": {"keyArn": "arn:aws:kms:us-east-1:123456789012:key/k"}});
    out.push((
        "existing role and key, default policy".into(),
        existing,
        policies[1].1.clone(),
    ));
    // The hot path: set by the pipeline (its sample), and turned on by a policy alone.
    let hot = load_all("config/samples/pipeline-hotpath.yaml");
    out.push((
        "hot path pipeline, its policy".into(),
        hot[1].clone(),
        Some(hot[0].clone()),
    ));
    out.push((
        "minimal pipeline, hot path required by the policy".into(),
        pipelines[0].1.clone(),
        Some(hot[0].clone()),
    ));
    if let Some(mut shared) = policies[2].1.clone() {
        shared["spec"]["collectorNamespace"] = json!("observability");
        shared["spec"]["metrics"]["minScrapeInterval"] = json!("1m");
        out.push((
            "minimal pipeline, shared namespace policy".into(),
            pipelines[0].1.clone(),
            Some(shared),
        ));
    }
    out
}

#[test]
fn every_settings_row_names_where_its_value_came_from() {
    let ctx = Context {
        cluster_name: Some("flag-cluster".into()),
        region: Some("eu-west-1".into()),
        ..Context::default()
    };
    let rows: BTreeSet<&str> = RULES.iter().map(|r| r.0).collect();
    assert_eq!(rows.len(), RULES.len(), "one rule per row");
    let mut checked = 0;
    let mut seen: BTreeSet<(&str, Source)> = BTreeSet::new();
    // Rows of a section that is off (the hot path's stream, ...) are not shown.
    let optional = |row: &str| row.starts_with("hotPath.") && row != "hotPath.enabled";
    for (case, p, pol) in cases() {
        let typed_pol = pol.as_ref().map(typed_policy);
        let merged = merge(&typed_pipeline(&p), typed_pol.as_ref(), &ctx)
            .unwrap_or_else(|e| panic!("{case}: merge failed: {e}"));
        let table = settings(&merged.effective);
        let shown: BTreeSet<&str> = table.iter().map(|s| s.path).collect();
        let required: BTreeSet<&str> = rows.iter().copied().filter(|r| !optional(r)).collect();
        assert!(
            shown.is_subset(&rows),
            "{case}: a row without a rule: {:?}",
            shown.difference(&rows)
        );
        assert!(
            required.is_subset(&shown),
            "{case}: a rule without its row: {:?}",
            required.difference(&shown)
        );
        for s in &table {
            let rule = RULES.iter().find(|r| r.0 == s.path).expect("checked above");
            let want = expected(rule, &p, pol.as_ref());
            assert_eq!(s.source, want, "{case}: {} = {:?}", s.path, s.value);
            seen.insert((s.path, s.source));
            checked += 1;
        }
    }
    assert!(checked >= 12 * RULES.len(), "{checked} rows checked");
    let shown_somewhere: BTreeSet<&str> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        shown_somewhere, rows,
        "every rule is checked against a row in some case"
    );
    // The cases reach every kind of source, so none of the branches above goes untested.
    let kinds: BTreeSet<Source> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}

/// Issue #15: merge recorded `identity.roleName` while the table read `identity.role`, so a role
/// name the pipeline set was shown as derived.
#[test]
fn a_role_name_the_pipeline_sets_is_shown_as_the_pipeline_s() {
    let full = typed_pipeline(&pipeline("config/samples/pipeline-full.yaml"));
    let pol = typed_policy(&policy("config/samples/policy-default.yaml"));
    let merged = merge(&full, Some(&pol), &Context::default()).expect("merges");
    let role = settings(&merged.effective)
        .into_iter()
        .find(|s| s.path == "identity.role")
        .expect("identity.role row");
    assert_eq!(role.value, "create mlobs-prod-gpu-research-llm-pretrain");
    assert_eq!(role.source, Source::Pipeline);
}
