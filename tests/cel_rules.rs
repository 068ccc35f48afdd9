//! Every CEL rule in the CRDs, evaluated client-side (kube's `cel` feature) against an object it
//! must accept and one it must reject. A rule without a case here fails the coverage test, so a
//! rule that can never fire cannot slip in.
//!
//! Then every rule the operator enforces on one object (src/crd/validate.rs) is shown to be
//! refused at admission too, by the CRD's own schema and CEL rules evaluated client-side; the
//! rules CEL cannot express are listed with the reason.

use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use serde_json::{Value, json};

mod crds_walk {
    use serde_json::Value;
    pub fn rules(schema: &Value, out: &mut Vec<String>) {
        for v in schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(v.get("rule").and_then(Value::as_str).unwrap_or_default().to_string());
        }
        for (_, v) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            rules(v, out);
        }
        if let Some(items) = schema.get("items") {
            rules(items, out);
        }
        if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            rules(ap, out);
        }
    }
}

fn pipeline(spec: Value) -> MLObservabilityPipeline {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "p", "namespace": "team-a"}, "spec": spec
    }))
    .expect("test spec deserializes")
}

fn policy(spec: Value) -> GpuTelemetryPolicy {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": "p"}, "spec": spec
    }))
    .expect("test spec deserializes")
}

#[path = "support/cel_cases.rs"]
mod cel_cases;
use cel_cases::*;

fn evaluate(kind: &Kind, spec: &Value) -> Result<(), String> {
    match kind {
        Kind::Pipeline => pipeline(spec.clone()).validate_cel().map_err(|e| e.to_string()),
        Kind::Policy => policy(spec.clone()).validate_cel().map_err(|e| e.to_string()),
    }
}

#[test]
fn every_cel_rule_accepts_its_good_case_and_rejects_its_bad_case() {
    for case in cases() {
        if let Err(e) = evaluate(&case.kind, &case.ok) {
            panic!("rule {:?} rejected its passing object {}: {e}", case.rule, case.ok);
        }
        match evaluate(&case.kind, &case.bad) {
            Ok(()) => panic!("rule {:?} accepted its failing object {}", case.rule, case.bad),
            Err(e) => assert!(
                e.contains(case.message),
                "rule {:?}: message {e:?} lacks {:?}",
                case.rule,
                case.message
            ),
        }
    }
}

#[test]
fn every_cel_rule_in_the_crds_has_a_case() {
    let mut in_crds = vec![];
    crds_walk::rules(
        &mlobs::crd::validate::crd_schema::<MLObservabilityPipeline>(),
        &mut in_crds,
    );
    crds_walk::rules(&mlobs::crd::validate::crd_schema::<GpuTelemetryPolicy>(), &mut in_crds);
    in_crds.sort();
    in_crds.dedup();
    let mut covered: Vec<String> = cases().iter().map(|c| c.rule.to_string()).collect();
    covered.push("self == oldSelf".into()); // transition rule: tested below
    covered.sort();
    covered.dedup();
    let missing: Vec<&String> = in_crds.iter().filter(|r| !covered.contains(r)).collect();
    let stale: Vec<&String> = covered.iter().filter(|r| !in_crds.contains(r)).collect();
    assert!(missing.is_empty(), "CEL rules without a test case: {missing:#?}");
    assert!(
        stale.is_empty(),
        "test cases for rules the CRDs no longer have: {stale:#?}"
    );
}

#[test]
fn the_hot_path_stream_cannot_be_renamed_once_set() {
    let old = pipeline(json!({"hotPath": {"stream": "team-a-hot"}}));
    let same = pipeline(json!({"hotPath": {"stream": "team-a-hot", "retentionHours": 48}}));
    let renamed = pipeline(json!({"hotPath": {"stream": "team-a-hot-2"}}));
    same.validate_cel_update(&old).expect("unchanged stream is accepted");
    let err = renamed
        .validate_cel_update(&old)
        .expect_err("a rename is rejected")
        .to_string();
    assert!(err.contains("hotPath.stream is fixed once set"), "{err}");
}

#[test]
fn log_group_class_cannot_change_after_creation() {
    let old = pipeline(json!({"logs": {"logGroup": {"class": "STANDARD"}}}));
    let same = pipeline(json!({"logs": {"logGroup": {"class": "STANDARD", "retentionInDays": 30}}}));
    let changed = pipeline(json!({"logs": {"logGroup": {"class": "INFREQUENT_ACCESS"}}}));
    same.validate_cel_update(&old).expect("unchanged class is accepted");
    let err = changed
        .validate_cel_update(&old)
        .expect_err("class change is rejected")
        .to_string();
    assert!(err.contains("cannot change"), "{err}");
}

// ---- The operator's single-object rules, at admission ----

use mlobs::crd::validate::{FieldError, admission_errors, validate_pipeline, validate_policy};

/// One rule the operator enforces (validate.rs): a spec that violates it, the field path and the
/// rule name validate.rs reports.
struct OperatorRule {
    kind: Kind,
    spec: Value,
    path: &'static str,
    rule: &'static str,
}

fn operator_rules() -> Vec<OperatorRule> {
    use Kind::*;
    let r = |kind, spec, path, rule| OperatorRule { kind, spec, path, rule };
    vec![
        r(
            Pipeline,
            json!({"resyncInterval": "15s"}),
            "spec.resyncInterval",
            "minimum",
        ),
        r(
            Pipeline,
            json!({"dataFlow": {"gracePeriod": "500ms"}}),
            "spec.dataFlow.gracePeriod",
            "minimum",
        ),
        r(
            Pipeline,
            json!({"metrics": {"dcgm": {"scrapeInterval": "999ms"}}}),
            "spec.metrics.dcgm.scrapeInterval",
            "minimum",
        ),
        r(
            Pipeline,
            json!({"metrics": {"dcgm": {"scrapeInterval": "2562048h"}}}),
            "spec.metrics.dcgm.scrapeInterval",
            "maximum",
        ),
        r(
            Pipeline,
            json!({"collector": {"retryMaxElapsed": "29s"}}),
            "spec.collector.retryMaxElapsed",
            "minimum",
        ),
        r(
            Pipeline,
            json!({"collector": {"retryMaxElapsed": "999999999h"}}),
            "spec.collector.retryMaxElapsed",
            "maximum",
        ),
        r(
            Pipeline,
            json!({"collector": {"batch": {"timeout": "0ms"}}}),
            "spec.collector.batch.timeout",
            "minimum",
        ),
        r(
            Pipeline,
            json!({"collector": {"batch": {"timeout": "2562048h"}}}),
            "spec.collector.batch.timeout",
            "maximum",
        ),
        r(
            Pipeline,
            json!({"collector": {"image": "otel/opentelemetry-collector-contrib"}}),
            "spec.collector.image",
            "pinnedImage",
        ),
        r(
            Pipeline,
            json!({"collector": {"image": "otel/opentelemetry-collector-contrib:latest"}}),
            "spec.collector.image",
            "pinnedImage",
        ),
        r(
            Pipeline,
            json!({"collector": {"resourceAttributes": {"": "x"}}}),
            "spec.collector.resourceAttributes",
            "emptyKey",
        ),
        r(
            Pipeline,
            json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_NOPE"]}}}),
            "spec.metrics.dcgm.metrics[1]",
            "dcgmField",
        ),
        r(
            Pipeline,
            json!({"metrics": {"cloudwatch": {"dimensions": [["k8s.cluster.name", "team"]]}}}),
            "spec.metrics.cloudwatch.dimensions[0][1]",
            "knownDimension",
        ),
        r(
            Pipeline,
            json!({"metrics": {"cloudwatch": {"dimensions": [["ml.job.id"]]}}}),
            "spec.metrics.cloudwatch.dimensions[0][0]",
            "knownDimension",
        ),
        r(
            Pipeline,
            json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "gpu"]]}}}),
            "spec.metrics.cloudwatch.dimensions[0][1]",
            "uniqueItems",
        ),
        r(
            Pipeline,
            json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "UUID"], ["UUID", "gpu"]]}}}),
            "spec.metrics.cloudwatch.dimensions[1]",
            "uniqueItems",
        ),
        r(
            Policy,
            json!({"logs": {"minRetentionInDays": 42}}),
            "spec.logs.minRetentionInDays",
            "retentionValue",
        ),
        r(
            Policy,
            json!({"metrics": {"minScrapeInterval": "500ms"}}),
            "spec.metrics.minScrapeInterval",
            "minimum",
        ),
        r(
            Policy,
            json!({"metrics": {"minScrapeInterval": "2562048h"}}),
            "spec.metrics.minScrapeInterval",
            "maximum",
        ),
        r(
            Policy,
            json!({"metrics": {"allowed": ["DCGM_FI_NOPE"]}}),
            "spec.metrics.allowed[0]",
            "dcgmField",
        ),
        r(
            Policy,
            json!({"metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTILL"]}}),
            "spec.metrics.defaults[0]",
            "dcgmField",
        ),
        r(
            Policy,
            json!({"collectorDefaults": {"image": "otel/opentelemetry-collector-contrib:0.124.1"}}),
            "spec.collectorDefaults.image",
            "collectorVersion",
        ),
        r(
            Policy,
            json!({"collectorDefaults": {"image": "otel/opentelemetry-collector-contrib"}}),
            "spec.collectorDefaults.image",
            "pinnedImage",
        ),
        r(
            Policy,
            json!({"dcgmExporter": {"image": "nvcr.io/nvidia/k8s/dcgm-exporter:latest"}}),
            "spec.dcgmExporter.image",
            "pinnedImage",
        ),
        r(
            Pipeline,
            json!({"hotPath": {"image": "cr.fluentbit.io/fluent/fluent-bit"}}),
            "spec.hotPath.image",
            "pinnedImage",
        ),
    ]
}

/// Rules CEL cannot express, checked only by the operator and the CLI (both read the same
/// validate.rs), and why. Each is also shown to be an operator rule by a violating spec.
fn not_expressible() -> Vec<(OperatorRule, &'static str)> {
    use Kind::*;
    let r = |kind, spec, path, rule| OperatorRule { kind, spec, path, rule };
    const REGEX: &str = "RE2 dialect (src/crd/dialect.rs): CEL's matches() compiles with the evaluator's engine, Go RE2 in the API server but Rust's regex in kube's client-side CEL, so one rule would accept different patterns at admission and in `mlobs plan`; and CEL has no 'is this a valid regex' function";
    const GLOB: &str = "doublestar glob grammar of the filelog receiver (src/crd/dialect.rs): CEL has no glob parser, and a regex imitation of the grammar would itself be a second dialect";
    vec![
        (
            r(
                Pipeline,
                json!({"logs": {"redaction": [{"pattern": "(?x)a", "replacement": ""}]}}),
                "spec.logs.redaction[0].pattern",
                "regex",
            ),
            REGEX,
        ),
        (
            r(
                Policy,
                json!({"logs": {"requiredRedactions": [{"pattern": "a{1001}", "replacement": ""}]}}),
                "spec.logs.requiredRedactions[0].pattern",
                "regex",
            ),
            REGEX,
        ),
        (
            r(
                Pipeline,
                json!({"hotPath": {"patterns": ["ok", "NCCL (WARN"]}}),
                "spec.hotPath.patterns[1]",
                "regex",
            ),
            "Fluent Bit's grep filter (Onigmo): CEL has no 'is this a valid regex' function, and its matches() would compile with another engine at admission than in `mlobs plan`",
        ),
        (
            r(
                Pipeline,
                json!({"logs": {"include": ["/var/log/pods/a_[/*.log"]}}),
                "spec.logs.include[0]",
                "glob",
            ),
            GLOB,
        ),
        (
            r(
                Pipeline,
                json!({"logs": {"exclude": ["{"]}}),
                "spec.logs.exclude[0]",
                "glob",
            ),
            GLOB,
        ),
    ]
}

/// What validate.rs reports, as (path, rule).
fn operator_errors(kind: &Kind, spec: &Value) -> Vec<(String, String)> {
    let errors = match kind {
        Kind::Pipeline => validate_pipeline(&pipeline(spec.clone())).err(),
        Kind::Policy => validate_policy(&policy(spec.clone())).err(),
    };
    errors
        .map(|inv| inv.0.into_iter().map(|e| (e.path, e.rule)).collect())
        .unwrap_or_default()
}

/// What the API server would report (schema + CEL of the generated CRD), evaluated client-side.
fn admission(kind: &Kind, spec: &Value) -> Vec<FieldError> {
    match kind {
        Kind::Pipeline => admission_errors(&pipeline(spec.clone())),
        Kind::Policy => admission_errors(&policy(spec.clone())),
    }
}

/// An admission error on the field, or on the list or map that holds it, from a rule that ran
/// (a rule that does not compile or errors would refuse every object, good ones included).
fn admission_names(errors: &[FieldError], path: &str) -> bool {
    errors.iter().any(|e| {
        (path == e.path || path.starts_with(&format!("{}[", e.path)))
            && !e.message.contains("failed to compile")
            && !e.message.contains("rule evaluation error")
    })
}

#[test]
fn every_rule_the_operator_enforces_on_one_object_is_refused_at_admission() {
    for case in operator_rules() {
        let operator = operator_errors(&case.kind, &case.spec);
        assert!(
            operator.contains(&(case.path.to_string(), case.rule.to_string())),
            "validate.rs does not report {} {} for {}: {operator:?}",
            case.path,
            case.rule,
            case.spec
        );
        let admitted = admission(&case.kind, &case.spec);
        assert!(
            admission_names(&admitted, case.path),
            "admitted by the CRD although the operator refuses it ({} {}): {}; admission said {admitted:?}",
            case.path,
            case.rule,
            case.spec
        );
    }
    for (case, why) in not_expressible() {
        let operator = operator_errors(&case.kind, &case.spec);
        assert!(
            operator.contains(&(case.path.to_string(), case.rule.to_string())),
            "validate.rs does not report {} {} for {}: {operator:?}",
            case.path,
            case.rule,
            case.spec
        );
        assert!(
            admission(&case.kind, &case.spec).is_empty(),
            "{} is listed as not expressible in CEL ({why}) but admission refuses {}: move it to operator_rules",
            case.path,
            case.spec
        );
    }
}

#[test]
fn a_valid_spec_of_each_table_field_is_admitted() {
    // The table's violations are refused for the rule's reason, not because the test object
    // is invalid otherwise: the same fields with good values pass admission and the operator.
    let fine = [
        (
            Kind::Pipeline,
            json!({"resyncInterval": "30s", "dataFlow": {"gracePeriod": "1s"},
            "metrics": {"dcgm": {"scrapeInterval": "1s", "metrics": ["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]},
                        "cloudwatch": {"dimensions": [["gpu", "team"], ["ml.job.id"]]}},
            "collector": {"retryMaxElapsed": "30s", "batch": {"timeout": "1ms"},
                          "image": "otel/opentelemetry-collector-contrib:0.125.0",
                          "resourceAttributes": {"team": "a", "ml.job.id": "j"}}}),
        ),
        (
            Kind::Policy,
            json!({"logs": {"minRetentionInDays": 30}, "metrics": {"minScrapeInterval": "1s",
            "allowed": ["DCGM_FI_DEV_GPU_UTIL"], "defaults": ["DCGM_FI_DEV_GPU_UTIL"]},
            "collectorDefaults": {"image": "otel/opentelemetry-collector-contrib:v0.130.1-amd64"},
            "dcgmExporter": {"image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"}}),
        ),
    ];
    for (kind, spec) in fine {
        assert_eq!(admission(&kind, &spec), vec![], "{spec}");
        assert_eq!(operator_errors(&kind, &spec), vec![], "{spec}");
    }
}

/// The string literals `"spec.…"` of validate.rs outside its tests: every field an operator check
/// names. A check added for a new field without a row above fails here.
fn fields_validate_rs_checks() -> Vec<String> {
    let text = include_str!("../src/crd/validate.rs");
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = vec![];
    for (i, _) in code.match_indices("\"spec.") {
        let rest = &code[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches('.').to_string());
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_tables_cover_every_field_validate_rs_checks() {
    let base = |p: &str| p.split('[').next().unwrap_or(p).to_string();
    let mut covered: Vec<String> = operator_rules().iter().map(|c| base(c.path)).collect();
    covered.extend(not_expressible().iter().map(|(c, _)| base(c.path)));
    let checked = fields_validate_rs_checks();
    assert!(checked.len() >= 15, "found too few checked fields: {checked:?}");
    let missing: Vec<&String> = checked.iter().filter(|f| !covered.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "operator checks without an admission case (or a reason CEL cannot express them): {missing:?}"
    );
}

#[test]
fn a_misspelled_dcgm_field_is_reported_once_with_the_closest_names() {
    let p = pipeline(json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TMP"]}}}));
    let errors = validate_pipeline(&p).expect_err("refused").0;
    assert_eq!(
        errors.len(),
        1,
        "the CEL error on the list is folded into the entry's: {errors:?}"
    );
    assert_eq!(errors[0].path, "spec.metrics.dcgm.metrics[1]");
    assert!(
        errors[0].message.contains("closest known: DCGM_FI_DEV_GPU_TEMP"),
        "{}",
        errors[0].message
    );
}

#[test]
fn the_contrib_release_rule_agrees_with_the_operators_version_check() {
    use mlobs::collector_version::{FEATURES, check_image};
    // The CEL rule is written for 0.125.0: a feature needing a newer release must update it.
    let newest = FEATURES.iter().map(|f| f.since).max();
    assert_eq!(newest, Some((0, 125, 0)), "update CONTRIB_BEFORE_0_125_RULE");
    let images = [
        "otel/opentelemetry-collector-contrib:0.124.1",
        "otel/opentelemetry-collector-contrib:0.125.0",
        "otel/opentelemetry-collector-contrib:v0.99.0",
        "otel/opentelemetry-collector-contrib:0.124",
        "otel/opentelemetry-collector-contrib:0.124.1-amd64",
        "otel/opentelemetry-collector-contrib:0.5.0",
        "otel/opentelemetry-collector-contrib:0.0124.0",
        "otel/opentelemetry-collector-contrib:00.124.0",
        "otel/opentelemetry-collector-contrib:0.124.1.5",
        "otel/opentelemetry-collector-contrib:1.0.0",
        "otel/opentelemetry-collector-contrib:0.200.0",
        "docker.io/otel/opentelemetry-collector-contrib:0.100.0",
        "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.123.0@sha256:abc",
        "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.126.0",
        "public.ecr.aws/aws-observability/aws-otel-collector:v0.40.0",
        "registry.local:5000/otel/opentelemetry-collector-contrib:0.100.0",
        "otel/opentelemetry-collector-contrib:0.124.1+build",
    ];
    for image in images {
        let operator = check_image(image, &FEATURES).is_err();
        let spec = json!({"collectorDefaults": {"image": image}});
        let at_admission = !admission(&Kind::Policy, &spec).is_empty();
        assert_eq!(
            at_admission, operator,
            "{image}: admission refuses = {at_admission}, operator refuses = {operator}"
        );
    }
}
