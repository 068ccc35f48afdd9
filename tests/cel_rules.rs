//! Every CEL rule in the CRDs, evaluated client-side (kube's `cel` feature) against an object it
//! must accept and one it must reject. A rule without a case here fails the coverage test, so a
//! rule that can never fire cannot slip in.

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

enum Kind {
    Pipeline,
    Policy,
}

/// (the rule's text, as generated; which kind; accepted spec; rejected spec; expected message fragment)
struct Case {
    rule: &'static str,
    kind: Kind,
    ok: Value,
    bad: Value,
    message: &'static str,
}

const RETENTION_RULE: &str =
    "self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]";
const TAGS_RULE: &str =
    "self.all(k, !k.startsWith('aws:') && !k.startsWith('mlobs.io/') && size(k) <= 128 && size(self[k]) <= 256)";

fn cases() -> Vec<Case> {
    use Kind::*;
    vec![
        Case {
            rule: "!(has(self.logs) && has(self.logs.logGroup) && has(self.logs.logGroup.name) && has(self.metrics) && has(self.metrics.cloudwatch) && has(self.metrics.cloudwatch.logGroup) && has(self.metrics.cloudwatch.logGroup.name)) || self.logs.logGroup.name != self.metrics.cloudwatch.logGroup.name",
            kind: Pipeline,
            ok: json!({"logs": {"logGroup": {"name": "/a"}}, "metrics": {"cloudwatch": {"logGroup": {"name": "/b"}}}}),
            bad: json!({"logs": {"logGroup": {"name": "/a"}}, "metrics": {"cloudwatch": {"logGroup": {"name": "/a"}}}}),
            message: "must differ",
        },
        Case {
            rule: RETENTION_RULE,
            kind: Pipeline,
            ok: json!({"logs": {"logGroup": {"retentionInDays": 731}}}),
            bad: json!({"logs": {"logGroup": {"retentionInDays": 42}}}),
            message: "retentionInDays must be one of",
        },
        Case {
            rule: TAGS_RULE,
            kind: Pipeline,
            ok: json!({"logs": {"logGroup": {"tags": {"team": "a"}}}}),
            bad: json!({"logs": {"logGroup": {"tags": {"mlobs.io/pipeline": "spoofed"}}}}),
            message: "reserved",
        },
        Case {
            rule: "!has(self.class) || self.class == 'STANDARD'",
            kind: Pipeline,
            ok: json!({"metrics": {"cloudwatch": {"logGroup": {"class": "STANDARD"}}}}),
            bad: json!({"metrics": {"cloudwatch": {"logGroup": {"class": "INFREQUENT_ACCESS"}}}}),
            message: "must be STANDARD",
        },
        Case {
            rule: "!self.startsWith('AWS/')",
            kind: Pipeline,
            ok: json!({"metrics": {"cloudwatch": {"namespace": "ML/GPU"}}}),
            bad: json!({"metrics": {"cloudwatch": {"namespace": "AWS/EC2"}}}),
            message: "must not start with AWS/",
        },
        Case {
            rule: "!(has(self.keyArn) && has(self.create))",
            kind: Pipeline,
            ok: json!({"encryption": {"kms": {"keyArn": "arn:aws:kms:us-east-1:123456789012:key/k"}}}),
            bad: json!({"encryption": {"kms": {"keyArn": "arn:aws:kms:us-east-1:123456789012:key/k", "create": {}}}}),
            message: "not both",
        },
        Case {
            rule: "!(has(self.disabled) && self.disabled && (has(self.keyArn) || has(self.create)))",
            kind: Pipeline,
            ok: json!({"encryption": {"kms": {"disabled": false, "create": {}}}}),
            bad: json!({"encryption": {"kms": {"disabled": true, "create": {}}}}),
            message: "kms.disabled cannot be combined",
        },
        Case {
            rule: "!self.startsWith('alias/aws/')",
            kind: Pipeline,
            ok: json!({"encryption": {"kms": {"create": {"alias": "alias/mlobs/a"}}}}),
            bad: json!({"encryption": {"kms": {"create": {"alias": "alias/aws/logs"}}}}),
            message: "alias/aws/",
        },
        Case {
            rule: "!has(self.mode) || self.mode != 'IRSA' || has(self.oidcProviderArn) || has(self.existingRoleArn)",
            kind: Pipeline,
            ok: json!({"identity": {"mode": "PodIdentity"}}),
            bad: json!({"identity": {"mode": "IRSA"}}),
            message: "needs identity.oidcProviderArn",
        },
        Case {
            rule: "!(has(self.roleName) && has(self.existingRoleArn))",
            kind: Pipeline,
            ok: json!({"identity": {"mode": "PodIdentity", "roleName": "r"}}),
            bad: json!({"identity": {"mode": "PodIdentity", "roleName": "r", "existingRoleArn": "arn:aws:iam::123456789012:role/r"}}),
            message: "not both",
        },
        Case {
            rule: "!(has(self.existingRoleArn) && has(self.permissionsBoundaryArn))",
            kind: Pipeline,
            ok: json!({"identity": {"mode": "PodIdentity", "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/b"}}),
            bad: json!({"identity": {"mode": "PodIdentity", "existingRoleArn": "arn:aws:iam::123456789012:role/r", "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/b"}}),
            message: "only to a role mlobs creates",
        },
        Case {
            rule: "!has(self.mode) || self.mode != 'External' || (has(self.__namespace__) && has(self.podSelector))",
            kind: Policy,
            ok: json!({"dcgmExporter": {"mode": "External", "namespace": "gpu-operator", "podSelector": {"app": "nvidia-dcgm-exporter"}}}),
            bad: json!({"dcgmExporter": {"mode": "External", "namespace": "gpu-operator"}}),
            message: "needs namespace and podSelector",
        },
        Case {
            rule: "!has(self.podSelector) || (has(self.mode) && self.mode == 'External')",
            kind: Policy,
            ok: json!({"dcgmExporter": {"mode": "Managed"}}),
            bad: json!({"dcgmExporter": {"mode": "Managed", "podSelector": {"app": "x"}}}),
            message: "only to mode External",
        },
        Case {
            rule: "!has(self.mode) || self.mode != 'External' || !(has(self.image) || has(self.collectIntervalMs))",
            kind: Policy,
            ok: json!({"dcgmExporter": {"mode": "Managed", "collectIntervalMs": 5000}}),
            bad: json!({"dcgmExporter": {"mode": "External", "namespace": "g", "podSelector": {"a": "b"}, "collectIntervalMs": 5000}}),
            message: "only to mode Managed",
        },
        Case {
            rule: "!has(self.allowed) || !has(self.defaults) || self.defaults.all(m, m in self.allowed)",
            kind: Policy,
            ok: json!({"metrics": {"allowed": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"], "defaults": ["DCGM_FI_DEV_GPU_UTIL"]}}),
            bad: json!({"metrics": {"allowed": ["DCGM_FI_DEV_GPU_UTIL"], "defaults": ["DCGM_FI_DEV_FB_USED"]}}),
            message: "must be in metrics.allowed",
        },
        Case {
            rule: "!has(self.defaults) || !has(self.maxMetricsPerGpu) || size(self.defaults) <= self.maxMetricsPerGpu",
            kind: Policy,
            ok: json!({"metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL"], "maxMetricsPerGpu": 1}}),
            bad: json!({"metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"], "maxMetricsPerGpu": 1}}),
            message: "maxMetricsPerGpu",
        },
    ]
}

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
