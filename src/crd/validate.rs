//! One validation entry point for the operator and the CLI.
//!
//! Three layers, in the order the API server applies them: the CRD's OpenAPI schema (types,
//! patterns, ranges, unknown fields), its CEL rules (evaluated client-side with kube's `cel`
//! feature), then checks Kubernetes cannot express (regexes compile, images are pinned, ...).
//! Schema and CEL come from the generated CRD itself, so the CLI can never be laxer than admission.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, compile_schema};
use regex::Regex;
use serde_json::Value;

use super::common::parse_duration_ms;
use super::dialect::{self, GO_DURATION_MAX_MS};
use super::{GpuTelemetryPolicy, MLObservabilityPipeline, Redaction};

/// One rejected value: where, which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the object root, e.g. `spec.logs.logGroup.retentionInDays`.
    pub path: String,
    /// Short name of the rule, e.g. `pattern`, `cel`, `pinnedImage`.
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [rule: {}]", self.path, self.message, self.rule)
    }
}

/// All errors found in one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

fn field(path: &str, rule: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        rule: rule.to_string(),
        message: message.into(),
    }
}

/// The openAPIV3Schema of a generated CRD. Generated once per kind: generating it is far
/// dearer than checking a document against it, and every document read is checked. Shared, not
/// copied: the schema is a few hundred KiB, and every reconcile validates its pipeline.
pub fn crd_schema<K: CustomResourceExt>() -> std::sync::Arc<Value> {
    static CACHE: Mutex<BTreeMap<&'static str, std::sync::Arc<Value>>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(K::crd_name())
        .or_insert_with(|| {
            let crd = K::crd();
            crd.spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .map_or_else(|| std::sync::Arc::new(Value::Null), std::sync::Arc::new)
        })
        .clone()
}

/// A schema pattern, compiled once: the schema has a few dozen, each checked on every value.
fn pattern_regex(pattern: &str) -> Result<Regex, String> {
    static CACHE: Mutex<BTreeMap<String, Result<Regex, String>>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()))
        .clone()
}

/// Checks `value` against a structural OpenAPI v3 schema the way the API server would.
pub fn schema_errors(schema: &Value, value: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let s = |k: &str| schema.get(k);
    let here = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if s("nullable") != Some(&Value::Bool(true)) {
            errors.push(field(here, "type", "must not be null"));
        }
        return;
    }
    let int_or_string = s("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        if !(value.is_string() || type_name(value) == "integer") {
            errors.push(field(
                here,
                "type",
                format!("must be an integer or a string, got {}", type_name(value)),
            ));
        }
        return;
    }
    if let Some(Value::String(want)) = s("type") {
        let got = type_name(value);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            errors.push(field(here, "type", format!("must be {want}, got {got}")));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = s("enum")
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        errors.push(field(
            here,
            "enum",
            format!("must be one of {}, got {value}", names.join(", ")),
        ));
    }
    match value {
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(min) = s("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(field(here, "minLength", format!("must be at least {min} characters")));
            }
            if let Some(max) = s("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(field(
                    here,
                    "maxLength",
                    format!("must be at most {max} characters, got {len}"),
                ));
            }
            if let Some(Value::String(pattern)) = s("pattern") {
                match pattern_regex(pattern) {
                    Ok(re) if !re.is_match(text) => {
                        errors.push(field(here, "pattern", format!("{text:?} does not match {pattern}")))
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(field(here, "pattern", format!("schema pattern does not compile: {e}"))),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = s("minimum").and_then(Value::as_f64)
                && x < min
            {
                errors.push(field(here, "minimum", format!("must be at least {min}, got {n}")));
            }
            if let Some(max) = s("maximum").and_then(Value::as_f64)
                && x > max
            {
                errors.push(field(here, "maximum", format!("must be at most {max}, got {n}")));
            }
        }
        Value::Array(items) => {
            if let Some(min) = s("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(field(here, "minItems", format!("must have at least {min} items")));
            }
            if let Some(max) = s("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(field(
                    here,
                    "maxItems",
                    format!("must have at most {max} items, got {}", items.len()),
                ));
            }
            if s("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(field(
                            &format!("{path}[{i}]"),
                            "uniqueItems",
                            format!("duplicate entry {item}"),
                        ));
                    }
                }
            }
            if let Some(item_schema) = s("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(min) = s("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < min
            {
                errors.push(field(
                    here,
                    "minProperties",
                    format!("must have at least {min} entries"),
                ));
            }
            if let Some(max) = s("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(field(
                    here,
                    "maxProperties",
                    format!("must have at most {max} entries, got {}", map.len()),
                ));
            }
            if let Some(Value::Array(required)) = s("required") {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(field(&join(path, r), "required", "is required"));
                    }
                }
            }
            let props = s("properties").and_then(Value::as_object);
            let additional = s("additionalProperties").filter(|a| a.is_object());
            let preserve = s("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            // apiVersion, kind and metadata are validated by the API server itself, not by the CRD.
            let implicit = |k: &str| path.is_empty() && matches!(k, "apiVersion" | "kind" | "metadata");
            let is_metadata = path == "metadata";
            for (k, v) in map {
                if implicit(k) {
                    continue;
                }
                let sub = join(path, k);
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    check(p, v, &sub, errors);
                } else if let Some(a) = additional {
                    check(a, v, &sub, errors);
                } else if !(preserve || is_metadata) && (props.is_some() || path.is_empty()) {
                    errors.push(field(&sub, "unknownField", "unknown field"));
                }
            }
        }
        _ => {}
    }
}

/// The schema's CEL rules compiled once (compiling them is most of the cost of a validation).
fn cel_errors(compiled: &CompiledSchema, object: &Value) -> Vec<FieldError> {
    match kube::core::cel::Validator::new().validate_compiled(compiled, object, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| {
                let path = if e.field_path.is_empty() {
                    "<root>".to_string()
                } else {
                    e.field_path.clone()
                };
                field(&path, "cel", format!("{} (rule: {})", e.message, e.rule))
            })
            .collect(),
    }
}

/// An image reference pinned by tag or digest, never `latest`.
pub fn check_pinned_image(path: &str, image: &str, errors: &mut Vec<FieldError>) {
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned = image.contains("@sha256:") || (last.contains(':') && !last.ends_with(':'));
    if !pinned {
        errors.push(field(
            path,
            "pinnedImage",
            format!("{image:?} must be pinned by tag or digest"),
        ));
    } else if last.ends_with(":latest") {
        errors.push(field(
            path,
            "pinnedImage",
            format!("{image:?}: the latest tag is not pinned; name a version"),
        ));
    }
}

fn check_redactions(path: &str, list: &[Redaction], errors: &mut Vec<FieldError>) {
    for (i, r) in list.iter().enumerate() {
        if let Some(e) = dialect::re2_error(&r.pattern) {
            errors.push(field(&format!("{path}[{i}].pattern"), "regex", e));
        }
    }
}

/// Globs the filelog receiver parses (doublestar syntax).
fn check_globs(path: &str, list: Option<&Vec<String>>, errors: &mut Vec<FieldError>) {
    for (i, glob) in list.into_iter().flatten().enumerate() {
        if let Some(e) = dialect::glob_error(glob) {
            errors.push(field(&format!("{path}[{i}]"), "glob", format!("{glob:?}: {e}")));
        }
    }
}

/// A duration of at least `min_ms`; one the collector reads (`max_ms` = [`dialect::GO_DURATION_MAX_MS`])
/// must also fit Go's `time.Duration`.
fn check_duration(path: &str, value: Option<&String>, min_ms: u64, max_ms: u64, errors: &mut Vec<FieldError>) {
    let format = super::common::format_duration_ms;
    if let Some(v) = value {
        match parse_duration_ms(v) {
            Ok(ms) if ms < min_ms => errors.push(field(
                path,
                "minimum",
                format!("{v} is shorter than {}", format(min_ms)),
            )),
            Ok(ms) if ms > max_ms => errors.push(field(
                path,
                "maximum",
                format!(
                    "{v} is longer than {}, the longest duration the collector reads",
                    format(max_ms)
                ),
            )),
            Ok(_) => {}
            Err(e) => errors.push(field(path, "duration", e)),
        }
    }
}

/// The shortest `spec.collector.retryMaxElapsed`: the collector's exporters back off up to 30s
/// between attempts (`max_interval`) and refuse a total retry time shorter than that.
pub const MIN_RETRY_MAX_ELAPSED_MS: u64 = 30_000;

/// Dimension names a pipeline may use in `metrics.cloudwatch.dimensions` (plus its own resource
/// attribute keys). Anything else would make EMF drop the metric for a missing dimension.
/// `k8s.pod.name`, `k8s.namespace.name` and `k8s.container.name` are those of the pod using each
/// GPU (dcgm-exporter's pod mapping), not the exporter's.
pub const KNOWN_DIMENSIONS: [&str; 9] = [
    "k8s.cluster.name",
    "k8s.node.name",
    "gpu.node.type",
    "gpu",
    "UUID",
    "modelName",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
];

/// CEL (at `spec`, reported at `spec.metrics.cloudwatch.dimensions`): every dimension name is one
/// of [`KNOWN_DIMENSIONS`] or a key of `spec.collector.resourceAttributes`.
pub fn known_dimensions_rule() -> String {
    let known: Vec<String> = KNOWN_DIMENSIONS.iter().map(|d| format!("'{d}'")).collect();
    format!(
        "!has(self.metrics) || !has(self.metrics.cloudwatch) || !has(self.metrics.cloudwatch.dimensions) || self.metrics.cloudwatch.dimensions.all(s, s.all(n, n in [{}] || (has(self.collector) && has(self.collector.resourceAttributes) && n in self.collector.resourceAttributes)))",
        known.join(", ")
    )
}

/// The admission message of [`known_dimensions_rule`].
pub const KNOWN_DIMENSIONS_MESSAGE: &str = "every dimension name must be an attribute the collector sets (k8s.cluster.name, k8s.node.name, gpu.node.type, gpu, UUID, modelName, k8s.namespace.name, k8s.pod.name, k8s.container.name) or a key of spec.collector.resourceAttributes; ml.job.id is set on logs only";

/// Why `ml.job.id` cannot be a GPU metric dimension.
pub const JOB_ID_ON_METRICS: &str = "\"ml.job.id\" is set on logs only: dcgm-exporter names the pod using each GPU (k8s.pod.name, k8s.namespace.name) but not that pod's labels, so the dimension set would never be filled; use k8s.pod.name";

fn finish(errors: Vec<FieldError>) -> Result<(), Invalid> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(errors))
    }
}

/// What the API server would answer: the CRD's OpenAPI schema, then (on a schema-valid object,
/// as CEL rules assume) its CEL rules. No mlobs-only check.
pub fn admission_errors<K>(object: &K) -> Vec<FieldError>
where
    K: CustomResourceExt + serde::Serialize,
{
    // Generating the schema and compiling its CEL rules are the expensive parts; the operator
    // validates on every reconcile.
    type Compiled = (std::sync::Arc<Value>, std::sync::Arc<CompiledSchema>);
    static COMPILED: Mutex<BTreeMap<&'static str, Compiled>> = Mutex::new(BTreeMap::new());
    let (schema, cel) = {
        let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.entry(K::crd_name()).or_insert_with(|| {
            let schema = crd_schema::<K>();
            let cel = std::sync::Arc::new(compile_schema(&schema));
            (schema, cel)
        });
        (entry.0.clone(), entry.1.clone())
    };
    let object = serde_json::to_value(object).unwrap_or(Value::Null);
    let mut errors = schema_errors(&schema, &object);
    if errors.is_empty() {
        errors.extend(cel_errors(&cel, &object));
    }
    errors
}

/// Admission's errors followed by mlobs' own. Most own checks mirror a CEL rule with a more precise
/// answer (the list entry, the closest known names): a CEL error on the same field, or on the list
/// holding an entry an own check explains, is dropped so each problem is reported once.
fn merged(admission: Vec<FieldError>, own: Vec<FieldError>) -> Result<(), Invalid> {
    let explained = |cel: &FieldError| {
        cel.rule == "cel"
            && own
                .iter()
                .any(|o| o.path == cel.path || o.path.starts_with(&format!("{}[", cel.path)))
    };
    let mut errors: Vec<FieldError> = admission.into_iter().filter(|e| !explained(e)).collect();
    errors.extend(own);
    finish(errors)
}

/// Known DCGM field names, each unknown one with the closest known names.
fn check_dcgm_fields(path: &str, list: Option<&Vec<String>>, errors: &mut Vec<FieldError>) {
    for (i, name) in list.into_iter().flatten().enumerate() {
        // A name outside the CRD pattern already has its schema error.
        let shaped = name.starts_with("DCGM_FI_")
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if shaped && !super::dcgm_fields::is_known(name) {
            errors.push(field(
                &format!("{path}[{i}]"),
                "dcgmField",
                super::dcgm_fields::unknown_message(name),
            ));
        }
    }
}

/// Validates a pipeline as admission would, plus the checks only mlobs can make.
pub fn validate_pipeline(p: &MLObservabilityPipeline) -> Result<(), Invalid> {
    let admission = admission_errors(p);
    let mut errors = Vec::new();
    let spec = &p.spec;
    if let Some(logs) = &spec.logs {
        if let Some(list) = &logs.redaction {
            check_redactions("spec.logs.redaction", list, &mut errors);
        }
        check_globs("spec.logs.include", logs.include.as_ref(), &mut errors);
        check_globs("spec.logs.exclude", logs.exclude.as_ref(), &mut errors);
    }
    if let Some(h) = &spec.hot_path {
        for (i, pattern) in h.patterns.iter().flatten().enumerate() {
            if let Some(e) = super::hot_path::pattern_error(pattern) {
                errors.push(field(&format!("spec.hotPath.patterns[{i}]"), "regex", e));
            }
        }
        if let Some(image) = &h.image {
            check_pinned_image("spec.hotPath.image", image, &mut errors);
        }
    }
    if let Some(c) = &spec.collector {
        if let Some(image) = &c.image {
            check_pinned_image("spec.collector.image", image, &mut errors);
        }
        check_duration(
            "spec.collector.retryMaxElapsed",
            c.retry_max_elapsed.as_ref(),
            MIN_RETRY_MAX_ELAPSED_MS,
            GO_DURATION_MAX_MS,
            &mut errors,
        );
        if let Some(b) = &c.batch {
            check_duration(
                "spec.collector.batch.timeout",
                b.timeout.as_ref(),
                1,
                GO_DURATION_MAX_MS,
                &mut errors,
            );
        }
        // The resource processor refuses an action without a key.
        if c.resource_attributes.as_ref().is_some_and(|a| a.contains_key("")) {
            errors.push(field(
                "spec.collector.resourceAttributes",
                "emptyKey",
                "an attribute key must not be empty",
            ));
        }
    }
    check_duration(
        "spec.resyncInterval",
        spec.resync_interval.as_ref(),
        30_000,
        u64::MAX,
        &mut errors,
    );
    // Longer than scrape interval + batch timeout, too: checked by the merge, which knows both
    // effective values (the policy can raise the scrape interval).
    check_duration(
        "spec.dataFlow.gracePeriod",
        spec.data_flow.as_ref().and_then(|f| f.grace_period.as_ref()),
        1_000,
        u64::MAX,
        &mut errors,
    );
    if let Some(m) = &spec.metrics {
        if let Some(d) = &m.dcgm {
            check_dcgm_fields("spec.metrics.dcgm.metrics", d.metrics.as_ref(), &mut errors);
            check_duration(
                "spec.metrics.dcgm.scrapeInterval",
                d.scrape_interval.as_ref(),
                1_000,
                GO_DURATION_MAX_MS,
                &mut errors,
            );
        }
        if let Some(cw) = &m.cloudwatch
            && let Some(sets) = &cw.dimensions
        {
            let extra: Vec<&String> = spec
                .collector
                .as_ref()
                .and_then(|c| c.resource_attributes.as_ref())
                .map(|a| a.keys().collect())
                .unwrap_or_default();
            for (i, set) in sets.iter().enumerate() {
                for (j, name) in set.iter().enumerate() {
                    if name == "ml.job.id" && !extra.contains(&name) {
                        errors.push(field(
                            &format!("spec.metrics.cloudwatch.dimensions[{i}][{j}]"),
                            "knownDimension",
                            JOB_ID_ON_METRICS,
                        ));
                    } else if !KNOWN_DIMENSIONS.contains(&name.as_str()) && !extra.contains(&name) {
                        errors.push(field(
                            &format!("spec.metrics.cloudwatch.dimensions[{i}][{j}]"),
                            "knownDimension",
                            format!(
                                "{name:?} is not an attribute the collector sets; use one of {} or a key of spec.collector.resourceAttributes",
                                KNOWN_DIMENSIONS.join(", ")
                            ),
                        ));
                    }
                    if set[..j].contains(name) {
                        errors.push(field(
                            &format!("spec.metrics.cloudwatch.dimensions[{i}][{j}]"),
                            "uniqueItems",
                            format!("{name:?} appears twice in one dimension set"),
                        ));
                    }
                }
                if sets[..i].iter().any(|s| same_set(s, set)) {
                    errors.push(field(
                        &format!("spec.metrics.cloudwatch.dimensions[{i}]"),
                        "uniqueItems",
                        "the same dimension set appears twice (it would be billed twice for nothing)",
                    ));
                }
            }
        }
    }
    merged(admission, errors)
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// Validates a policy as admission would, plus the checks only mlobs can make.
pub fn validate_policy(p: &GpuTelemetryPolicy) -> Result<(), Invalid> {
    let admission = admission_errors(p);
    let mut errors = Vec::new();
    let spec = &p.spec;
    if let Some(logs) = &spec.logs {
        if let Some(list) = &logs.required_redactions {
            check_redactions("spec.logs.requiredRedactions", list, &mut errors);
        }
        if let Some(days) = logs.min_retention_in_days
            && !super::ALLOWED_RETENTION_DAYS.contains(&days)
        {
            errors.push(field(
                "spec.logs.minRetentionInDays",
                "retentionValue",
                format!("{days} is not a retention CloudWatch Logs accepts"),
            ));
        }
    }
    if let Some(m) = &spec.metrics {
        check_dcgm_fields("spec.metrics.allowed", m.allowed.as_ref(), &mut errors);
        check_dcgm_fields("spec.metrics.defaults", m.defaults.as_ref(), &mut errors);
        check_duration(
            "spec.metrics.minScrapeInterval",
            m.min_scrape_interval.as_ref(),
            1_000,
            GO_DURATION_MAX_MS,
            &mut errors,
        );
    }
    if let Some(image) = spec.collector_defaults.as_ref().and_then(|c| c.image.as_ref()) {
        check_pinned_image("spec.collectorDefaults.image", image, &mut errors);
        // Every pipeline that ships logs would be refused with this default.
        let needed = crate::collector_version::FEATURES;
        if let Err(message) = crate::collector_version::check_image(image, &needed) {
            errors.push(FieldError {
                path: "spec.collectorDefaults.image".into(),
                rule: "collectorVersion".into(),
                message,
            });
        }
    }
    if let Some(image) = spec.dcgm_exporter.as_ref().and_then(|d| d.image.as_ref()) {
        check_pinned_image("spec.dcgmExporter.image", image, &mut errors);
    }
    merged(admission, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline_errors(spec: Value) -> Vec<(String, String)> {
        let mut base =
            serde_json::json!({"clusterName": "c", "region": "us-east-1", "identity": {"mode": "PodIdentity"}});
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            base[k] = v;
        }
        let p: MLObservabilityPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "p", "namespace": "team-a"}, "spec": base}))
        .expect("pipeline");
        validate_pipeline(&p)
            .err()
            .map(|inv| inv.0.into_iter().map(|e| (e.path, e.rule)).collect())
            .unwrap_or_default()
    }

    fn one(path: &str, rule: &str) -> Vec<(String, String)> {
        vec![(path.to_string(), rule.to_string())]
    }

    /// Each of these passed validation and then crash-looped the collector (tests/otelcol_validate.rs).
    #[test]
    fn values_the_collector_refuses_are_rejected_naming_their_field() {
        let redaction = |p: &str| {
            serde_json::json!({"logs": {"redaction": [
                {"pattern": "ok", "replacement": ""}, {"pattern": p, "replacement": ""}]}})
        };
        for p in [r"\u{e9}", r"\p{Emoji}", "a{1001}", "(?x)a", "[[a]]"] {
            assert_eq!(
                pipeline_errors(redaction(p)),
                one("spec.logs.redaction[1].pattern", "regex"),
                "{p}"
            );
        }
        assert_eq!(pipeline_errors(redaction(r"\x{e9}\p{Greek}a{1000}(?i)a[a]")), vec![]);
        assert_eq!(
            pipeline_errors(
                serde_json::json!({"logs": {"include": ["/var/log/pods/team-a_[/*.log"], "exclude": ["a", "{"]}})
            ),
            vec![
                ("spec.logs.include[0]".to_string(), "glob".to_string()),
                ("spec.logs.exclude[1]".to_string(), "glob".to_string())
            ]
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"collector": {"retryMaxElapsed": "29s"}})),
            one("spec.collector.retryMaxElapsed", "minimum")
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"collector": {"retryMaxElapsed": "30s"}})),
            vec![]
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"collector": {"batch": {"timeout": "2562048h"}}})),
            one("spec.collector.batch.timeout", "maximum")
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"metrics": {"dcgm": {"scrapeInterval": "999999999h999999999h"}}})),
            one("spec.metrics.dcgm.scrapeInterval", "maximum")
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"collector": {"batch": {"timeout": "2562047h"}}})),
            vec![]
        );
        assert_eq!(
            pipeline_errors(serde_json::json!({"collector": {"resourceAttributes": {"": "x", " ": "y"}}})),
            one("spec.collector.resourceAttributes", "emptyKey")
        );
    }

    #[test]
    fn policy_redactions_and_scrape_minimum_get_the_same_checks() {
        let p: GpuTelemetryPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy", "metadata": {"name": "x"},
            "spec": {"logs": {"requiredRedactions": [{"pattern": "(?x) a", "replacement": ""}]},
                     "metrics": {"minScrapeInterval": "2562048h"}}}))
        .expect("policy");
        let paths: Vec<String> = validate_policy(&p)
            .err()
            .map(|inv| inv.0.into_iter().map(|e| format!("{} {}", e.path, e.rule)).collect())
            .unwrap_or_default();
        assert_eq!(
            paths,
            [
                "spec.logs.requiredRedactions[0].pattern regex",
                "spec.metrics.minScrapeInterval maximum"
            ]
        );
    }
}
