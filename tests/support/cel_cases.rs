//! One case per CEL rule of the CRDs: a spec the rule accepts, one it rejects and a fragment of its
//! message. tests/cel_rules.rs evaluates them client-side; e2e/tests/admission.rs sends the
//! rejected ones to the real API server.

#![allow(dead_code)]

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pipeline,
    Policy,
}

/// (the rule's text, as generated; which kind; accepted spec; rejected spec; expected message fragment)
pub struct Case {
    pub rule: &'static str,
    pub kind: Kind,
    pub ok: Value,
    pub bad: Value,
    pub message: &'static str,
}

pub const RETENTION_RULE: &str =
    "self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]";
/// A rule text built at run time (the DCGM field list, the known dimension names).
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub const GO_MAX_RULE: &str = "duration(self) <= duration('2562047h47m16s854ms')";

pub const TAGS_RULE: &str =
    "self.all(k, !k.startsWith('aws:') && !k.startsWith('mlobs.io/') && size(k) <= 128 && size(self[k]) <= 256)";

pub fn cases() -> Vec<Case> {
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
        Case {
            rule: leak(mlobs::crd::dcgm_fields::cel_rule()),
            kind: Pipeline,
            ok: json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_SM_ACTIVE"]}}}),
            bad: json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_NOPE"]}}}),
            message: "must be a DCGM field name",
        },
        Case {
            rule: "duration(self) >= duration('30s')",
            kind: Pipeline,
            ok: json!({"resyncInterval": "30s"}),
            bad: json!({"resyncInterval": "15s"}),
            message: "resyncInterval must be at least 30s",
        },
        Case {
            rule: "duration(self) >= duration('1s')",
            kind: Pipeline,
            ok: json!({"dataFlow": {"gracePeriod": "1s"}}),
            bad: json!({"dataFlow": {"gracePeriod": "999ms"}}),
            message: "gracePeriod must be at least 1s",
        },
        Case {
            rule: "duration(self) >= duration('1ms')",
            kind: Pipeline,
            ok: json!({"collector": {"batch": {"timeout": "1ms"}}}),
            bad: json!({"collector": {"batch": {"timeout": "0s"}}}),
            message: "timeout must be at least 1ms",
        },
        Case {
            rule: GO_MAX_RULE,
            kind: Pipeline,
            ok: json!({"metrics": {"dcgm": {"scrapeInterval": "2562047h47m16s854ms"}}}),
            bad: json!({"metrics": {"dcgm": {"scrapeInterval": "2562048h"}}}),
            message: "at most 2562047h47m16s854ms",
        },
        Case {
            rule: mlobs::crd::PINNED_IMAGE_RULE,
            kind: Pipeline,
            ok: json!({"collector": {"image": "registry.local:5000/otel/contrib@sha256:abc"}}),
            bad: json!({"collector": {"image": "registry.local:5000/otel/contrib"}}),
            message: "pinned by tag or digest",
        },
        Case {
            rule: mlobs::crd::NOT_LATEST_RULE,
            kind: Policy,
            ok: json!({"dcgmExporter": {"image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"}}),
            bad: json!({"dcgmExporter": {"image": "nvcr.io/nvidia/k8s/dcgm-exporter:latest"}}),
            message: "latest tag is not pinned",
        },
        Case {
            rule: mlobs::crd::CONTRIB_BEFORE_0_125_RULE,
            kind: Policy,
            ok: json!({"collectorDefaults": {"image": "otel/opentelemetry-collector-contrib:0.125.0"}}),
            bad: json!({"collectorDefaults": {"image": "otel/opentelemetry-collector-contrib:0.124.1"}}),
            message: "older than 0.125.0",
        },
        Case {
            rule: "self.all(k, size(k) > 0)",
            kind: Pipeline,
            ok: json!({"collector": {"resourceAttributes": {"team": "vision"}}}),
            bad: json!({"collector": {"resourceAttributes": {"": "vision"}}}),
            message: "must not be empty",
        },
        Case {
            rule: "self.all(s, s.all(n, s.exists_one(m, m == n)))",
            kind: Pipeline,
            ok: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "UUID"]]}}}),
            bad: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "gpu"]]}}}),
            message: "at most once in a dimension set",
        },
        Case {
            rule: "self.all(s, self.exists_one(t, size(t) == size(s) && t.all(n, n in s)))",
            kind: Pipeline,
            ok: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "UUID"], ["gpu"]]}}}),
            bad: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "UUID"], ["UUID", "gpu"]]}}}),
            message: "appears twice",
        },
        Case {
            rule: leak(mlobs::crd::validate::known_dimensions_rule()),
            kind: Pipeline,
            ok: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "team"]]}},
                       "collector": {"resourceAttributes": {"team": "vision"}}}),
            bad: json!({"metrics": {"cloudwatch": {"dimensions": [["gpu", "team"]]}}}),
            message: "every dimension name must be an attribute the collector sets",
        },
        Case {
            rule: "has(self.xray) != has(self.otlp)",
            kind: Pipeline,
            ok: json!({"traces": {"otlp": {"enabled": true}, "destination": {"xray": {}}}}),
            bad: json!({"traces": {"otlp": {"enabled": true},
                        "destination": {"xray": {}, "otlp": {"endpoint": "tempo:4318"}}}}),
            message: "exactly one of xray or otlp",
        },
        Case {
            rule: "!(has(self.insecure) && self.insecure && has(self.caConfigMap))",
            kind: Pipeline,
            ok: json!({"traces": {"otlp": {"enabled": true}, "destination": {"otlp": {"endpoint": "tempo:4318",
                       "tls": {"insecure": false, "caConfigMap": {"name": "ca", "key": "ca.crt"}}}}}}),
            bad: json!({"traces": {"otlp": {"enabled": true}, "destination": {"otlp": {"endpoint": "tempo:4318",
                        "tls": {"insecure": true, "caConfigMap": {"name": "ca", "key": "ca.crt"}}}}}}),
            message: "cannot be combined with tls.caConfigMap",
        },
        Case {
            rule: mlobs::crd::TRACES_NEED_OTLP_RULE,
            kind: Pipeline,
            ok: json!({"traces": {"otlp": {"enabled": true}, "destination": {"xray": {}}}}),
            bad: json!({"traces": {"otlp": {"enabled": false}, "destination": {"xray": {}}}}),
            message: "needs traces.otlp.enabled: true",
        },
        Case {
            rule: mlobs::crd::WORKSPACE_REGION_RULE,
            kind: Pipeline,
            ok: json!({"region": "eu-west-1",
                       "metrics": {"prometheus": {"workspaceArn": "arn:aws:aps:eu-west-1:123456789012:workspace/ws-a1"}}}),
            bad: json!({"region": "eu-west-1",
                        "metrics": {"prometheus": {"workspaceArn": "arn:aws:aps:us-east-1:123456789012:workspace/ws-a1"}}}),
            message: "the AMP workspace must be in spec.region",
        },
        Case {
            rule: mlobs::crd::ONE_WORKSPACE_RULE,
            kind: Pipeline,
            ok: json!({"metrics": {"prometheus": {"workspaceAlias": "gpu-metrics"}}}),
            bad: json!({"metrics": {"prometheus": {"workspaceAlias": "gpu-metrics",
                        "workspaceArn": "arn:aws:aps:us-east-1:123456789012:workspace/ws-a1"}}}),
            message: "set exactly one of workspaceArn",
        },
        Case {
            rule: mlobs::crd::ARCHIVE_NEEDS_LOGS_RULE,
            kind: Pipeline,
            ok: json!({"archive": {"enabled": false}, "logs": {"enabled": false}}),
            bad: json!({"archive": {"retentionYears": 7}, "logs": {"enabled": false}}),
            message: "the archive stores pod logs",
        },
        Case {
            rule: mlobs::crd::STANDARD_IA_RULE,
            kind: Pipeline,
            ok: json!({"archive": {"storageClass": "STANDARD_IA", "transitionAfterDays": 30}}),
            bad: json!({"archive": {"storageClass": "STANDARD_IA", "transitionAfterDays": 7}}),
            message: "at least 30",
        },
        Case {
            rule: mlobs::crd::BUCKET_RESERVED_RULE,
            kind: Pipeline,
            ok: json!({"archive": {"bucket": "acme-gpu-logs"}}),
            bad: json!({"archive": {"bucket": "acme-gpu-logs--ol-s3"}}),
            message: "reserved by S3",
        },
        Case {
            rule: mlobs::crd::TOPIC_REGION_RULE,
            kind: Pipeline,
            ok: json!({"region": "eu-west-1", "alerts": {"sns": {"topicArn": "arn:aws:sns:eu-west-1:123456789012:ops"}}}),
            bad: json!({"region": "eu-west-1", "alerts": {"sns": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops"}}}),
            message: "the SNS topic must be in spec.region",
        },
        Case {
            rule: mlobs::crd::TOPIC_NOT_FIFO_RULE,
            kind: Pipeline,
            ok: json!({"alerts": {"sns": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops"}}}),
            bad: json!({"alerts": {"sns": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops.fifo"}}}),
            message: "not a FIFO topic",
        },
    ]
}
