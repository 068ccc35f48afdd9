//! The committed CRDs are the generated ones, structural, and every CEL rule in them compiles
//! within the API server's scope and cost budget.

use std::path::Path;

use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline, crd_files, validate::crd_schema};
use serde_json::Value;

#[test]
fn committed_crds_match_the_types() {
    for (name, yaml) in crd_files().expect("CRDs serialize") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(name);
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        assert!(
            on_disk == yaml,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
}

/// Keys Kubernetes forbids anywhere in a structural schema.
const FORBIDDEN: [&str; 6] = ["$ref", "definitions", "$schema", "id", "readOnly", "uniqueItems"];

/// Collects violations of the structural schema rules of apiextensions.k8s.io/v1.
fn structural_violations(schema: &Value, path: &str, in_combinator: bool, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    for k in FORBIDDEN {
        if obj.contains_key(k) {
            out.push(format!("{path}: forbidden key {k}"));
        }
    }
    let bool_flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    if in_combinator {
        for k in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
            "x-kubernetes-preserve-unknown-fields",
        ] {
            if obj.contains_key(k) {
                out.push(format!("{path}: {k} is not allowed inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if !obj.contains_key("type")
        && !bool_flag("x-kubernetes-int-or-string")
        && !bool_flag("x-kubernetes-preserve-unknown-fields")
    {
        out.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!("{path}: additionalProperties: false is not allowed"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_violations(v, &format!("{path}.{k}"), in_combinator, out);
        }
    }
    if let Some(items) = obj.get("items") {
        if items.is_array() {
            out.push(format!("{path}: items must be a single schema"));
        } else {
            structural_violations(items, &format!("{path}[]"), in_combinator, out);
        }
        if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let required: Vec<&str> = items
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in obj
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = key.as_str().unwrap_or_default();
                if !required.contains(&key) {
                    out.push(format!("{path}: list-map key {key} must be required in the items"));
                }
            }
        }
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        structural_violations(ap, &format!("{path}{{}}"), in_combinator, out);
    }
    for comb in ["allOf", "anyOf", "oneOf"] {
        for (i, s) in obj
            .get(comb)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural_violations(s, &format!("{path}.{comb}[{i}]"), true, out);
        }
    }
    if let Some(not) = obj.get("not") {
        structural_violations(not, &format!("{path}.not"), true, out);
    }
}

fn assert_structural(schema: &Value) {
    let mut out = vec![];
    structural_violations(schema, "", false, &mut out);
    // The root must only describe metadata by name/generateName if at all.
    if let Some(meta) = schema
        .pointer("/properties/metadata/properties")
        .and_then(Value::as_object)
    {
        for k in meta.keys() {
            if k != "name" && k != "generateName" {
                out.push(format!("metadata.{k}: only name and generateName may be constrained"));
            }
        }
    }
    assert!(out.is_empty(), "non-structural schema:\n{}", out.join("\n"));
}

#[test]
fn pipeline_schema_is_structural() {
    assert_structural(&crd_schema::<MLObservabilityPipeline>());
}

#[test]
fn policy_schema_is_structural() {
    assert_structural(&crd_schema::<GpuTelemetryPolicy>());
}

#[test]
fn structural_check_catches_a_missing_type() {
    // The checker itself must be able to fail.
    let bad = serde_json::json!({"type": "object", "properties": {"x": {"description": "no type"}}});
    let mut out = vec![];
    structural_violations(&bad, "", false, &mut out);
    assert_eq!(out, vec![".x: no type".to_string()]);
    let bad = serde_json::json!({"type": "object", "anyOf": [{"type": "string"}], "properties": {"y": {"type": "string", "$ref": "#/d"}}});
    let mut out = vec![];
    structural_violations(&bad, "", false, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
}

/// Walks a schema and returns every CEL rule with the schema node it is attached to.
pub fn rules(schema: &Value, path: &str, out: &mut Vec<(String, String, Value)>) {
    for v in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = v.get("rule").and_then(Value::as_str).unwrap_or_default().to_string();
        out.push((path.to_string(), rule, schema.clone()));
    }
    for (k, v) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        rules(v, &format!("{path}.{k}"), out);
    }
    if let Some(items) = schema.get("items") {
        rules(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        rules(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_cel_rule_compiles_within_scope_and_cost() {
    let mut all = vec![];
    rules(&crd_schema::<MLObservabilityPipeline>(), "", &mut all);
    rules(&crd_schema::<GpuTelemetryPolicy>(), "", &mut all);
    assert!(
        all.len() >= 15,
        "expected the CEL rules of both kinds, found {}",
        all.len()
    );
    // The dimension-name rule sits on `spec` (it reads collector.resourceAttributes too), where
    // kube's estimator cannot see the lists' bounds and takes 1000 items per comprehension. Its
    // real bound is 10 sets × 30 names × (9 comparisons of ≤255 characters + 1 map lookup) ≈ 71k;
    // the bounds it relies on are checked here.
    let known_dimensions = mlobs::crd::validate::known_dimensions_rule();
    let pipeline = crd_schema::<MLObservabilityPipeline>();
    let dims = &pipeline["properties"]["spec"]["properties"]["metrics"]["properties"]["cloudwatch"]["properties"]["dimensions"];
    assert_eq!(dims["maxItems"], 10);
    assert_eq!(dims["items"]["maxItems"], 30);
    assert_eq!(dims["items"]["items"]["maxLength"], 255);
    let mut problems = vec![];
    let macro_var = regex::Regex::new(r"\.(?:all|exists|exists_one|map|filter)\((\w+),").expect("static regex");
    for (path, rule, node) in &all {
        let compiled = compile_schema(node);
        for v in &compiled.validations {
            if let Err(e) = v {
                problems.push(format!("{path}: {rule}: does not compile: {e:?}"));
            }
        }
        // The scope analysis does not know macro-bound variables (`self.all(k, ...)`): drop those.
        let bound: Vec<String> = macro_var
            .captures_iter(rule)
            .map(|c| format!("variable '{}'", &c[1]))
            .collect();
        for w in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
            if w.kind == WarningKind::WrongScope && bound.iter().any(|b| w.message.contains(b.as_str())) {
                continue;
            }
            if w.kind == WarningKind::CostExceeded && *rule == known_dimensions {
                continue; // bounded below
            }
            problems.push(format!("{path}: {rule}: {}", w.message));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// (name, jsonPath) of each printer column: what `kubectl get` shows.
fn printer_columns<K: kube::CustomResourceExt>() -> Vec<(String, String)> {
    K::crd().spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.json_path))
        .collect()
}

#[test]
fn kubectl_get_shows_readiness_series_cost_data_flow_and_drift_for_pipelines_and_rollout_for_policies() {
    let cols = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(
        printer_columns::<MLObservabilityPipeline>(),
        cols(&[
            ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
            ("Series", ".status.telemetry.totalSeries"),
            ("Est $/mo", ".status.telemetry.estimatedMonthlyCostUSD"),
            ("Data", r#".status.conditions[?(@.type=="DataFlowing")].status"#),
            ("Drift", r#".status.conditions[?(@.type=="Drifted")].status"#),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
    assert_eq!(
        printer_columns::<GpuTelemetryPolicy>(),
        cols(&[
            ("Default", ".spec.default"),
            ("GPU Nodes", ".status.gpuNodes"),
            ("Exporter Ready", ".status.exporter.ready"),
            ("Pipelines", ".status.pipelines.total"),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
    // Every column's path exists in the schema of what the operator writes.
    let status = serde_json::to_value(mlobs::crd::MLObservabilityPipelineStatus {
        telemetry: Some(Default::default()),
        ..Default::default()
    })
    .expect("status");
    assert!(
        status["telemetry"].get("totalSeries").is_some()
            && status["telemetry"].get("estimatedMonthlyCostUSD").is_some()
    );
}
