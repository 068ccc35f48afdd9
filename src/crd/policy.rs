//! `GpuTelemetryPolicy`: the platform team's defaults and guardrails for every pipeline.

// printcolumn(...) repeats `type_ = ...` by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::alerts::PolicyAlertsSpec;
use super::archive::PolicyArchiveSpec;
use super::common::{IdentityMode, Redaction};
use super::destinations::{PolicyDestinationsSpec, PolicyTracesSpec};
use super::hot_path::PolicyHotPathSpec;

/// Cluster-wide defaults and guardrails for MLObservabilityPipelines: GPU node selection, the DCGM
/// exporter, which metrics may be shipped and how often, encryption and retention minimums,
/// required redactions, allowed identity modes and a cost budget.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "mlobs.io",
    version = "v1alpha1",
    kind = "GpuTelemetryPolicy",
    doc = "Cluster-wide defaults and guardrails for MLObservabilityPipelines, and the DCGM exporter they scrape.",
    plural = "gputelemetrypolicies",
    shortname = "gtp",
    category = "mlobs",
    status = "GpuTelemetryPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(name = "GPU Nodes", type_ = "integer", json_path = ".status.gpuNodes"),
    printcolumn(name = "Exporter Ready", type_ = "integer", json_path = ".status.exporter.ready"),
    printcolumn(name = "Pipelines", type_ = "integer", json_path = ".status.pipelines.total"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuTelemetryPolicySpec {
    /// Govern pipelines that name no `policyRef`. At most one policy may be the default; two
    /// defaults both report `Valid=False` (DefaultConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,

    /// Node labels that identify GPU nodes. Default `nvidia.com/gpu.present: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Namespace the collectors of governed pipelines run in (their ServiceAccount, ConfigMap and
    /// DaemonSet), e.g. the operator's `mlobs-system`. Default: each pipeline's own namespace. The
    /// collector reads `/var/log/pods` and keeps its queue on the node through hostPath volumes,
    /// which Pod Security `baseline` and `restricted` forbid: set this when team namespaces enforce
    /// those levels, to a namespace that allows `privileged`. Children there carry no owner
    /// reference (Kubernetes forbids cross-namespace owners); mlobs finds them by label and removes
    /// them with the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub collector_namespace: Option<String>,

    /// Tolerations for exporter and collector pods. Default: tolerate any `nvidia.com/gpu` taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// The DCGM exporter the collectors scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcgm_exporter: Option<DcgmExporterSpec>,

    /// Which DCGM metrics pipelines may ship, and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<PolicyMetricsSpec>,

    /// Log encryption, retention, naming and redaction rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<PolicyLogsSpec>,

    /// Allowed collector identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PolicyIdentitySpec>,

    /// Which pipelines may collect logs from other namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<PolicySourcesSpec>,

    /// Collector defaults for pipelines that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_defaults: Option<CollectorDefaultsSpec>,

    /// Monthly CloudWatch budget per pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,

    /// Which traces backends pipelines may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<PolicyTracesSpec>,

    /// Where telemetry may leave AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<PolicyDestinationsSpec>,

    /// Whether pipelines must archive their logs to S3 with Object Lock, and for how long at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<PolicyArchiveSpec>,

    /// Whether pipelines must run the hot path (critical log lines to Kinesis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_path: Option<PolicyHotPathSpec>,
    /// Alert defaults (thresholds, rules on or off) and guardrails (alerts required, hottest
    /// temperature threshold allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<PolicyAlertsSpec>,
}

/// Who runs the DCGM exporter.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExporterMode {
    /// mlobs runs a DCGM exporter DaemonSet with exactly the allowed metrics.
    #[default]
    Managed,
    /// An exporter already runs (e.g. NVIDIA gpu-operator's `nvidia-dcgm-exporter`); mlobs creates
    /// none and the collectors scrape the pods matched by `namespace` and `podSelector`.
    External,
}

/// The DCGM exporter.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'External' || (has(self.__namespace__) && has(self.podSelector))").message("dcgmExporter.mode External needs namespace and podSelector of the existing exporter pods").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.podSelector) || (has(self.mode) && self.mode == 'External')").message("dcgmExporter.podSelector applies only to mode External").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'External' || !(has(self.image) || has(self.collectIntervalMs))").message("dcgmExporter.image and collectIntervalMs apply only to mode Managed").reason(Reason::FieldValueForbidden))]
pub struct DcgmExporterSpec {
    /// `Managed` (default) or `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ExporterMode>,

    /// Managed: exporter image, pinned by tag (not `latest`) or digest, e.g.
    /// `nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(super::common::PINNED_IMAGE_RULE).message(super::common::PINNED_IMAGE_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(super::common::NOT_LATEST_RULE).message(super::common::NOT_LATEST_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub image: Option<String>,

    /// Managed: where the exporter runs (default: the operator's namespace). External: where the
    /// existing exporter runs, e.g. `gpu-operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,

    /// Managed: DCGM collection interval in milliseconds (default 30000, minimum 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub collect_interval_ms: Option<i32>,

    /// External: labels of the existing exporter pods, e.g. `app: nvidia-dcgm-exporter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1))]
    pub pod_selector: Option<BTreeMap<String, String>>,

    /// Port the exporter serves `/metrics` on (default 9400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Metric guardrails and defaults.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.allowed) || !has(self.defaults) || self.defaults.all(m, m in self.allowed)").message("every metrics.defaults entry must be in metrics.allowed").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.defaults) || !has(self.maxMetricsPerGpu) || size(self.defaults) <= self.maxMetricsPerGpu").message("metrics.defaults must not list more than metrics.maxMetricsPerGpu fields").reason(Reason::FieldValueInvalid))]
pub struct PolicyMetricsSpec {
    /// DCGM fields pipelines may select; anything else is a violation. Absent: any field. In
    /// Managed mode the exporter collects exactly these (or the defaults when absent). Each name
    /// must be a field of DCGM's `dcgm_fields.h` (DCGM 4.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        inner(length(min = 8, max = 80), regex(pattern = r"^DCGM_FI_[A-Z0-9_]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = Rule::new(super::dcgm_fields::cel_rule()).message(super::dcgm_fields::CEL_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub allowed: Option<Vec<String>>,

    /// DCGM fields for pipelines that select none. Default: the ten built-in fields. Each name
    /// must be a field of DCGM's `dcgm_fields.h` (DCGM 4.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        inner(length(min = 8, max = 80), regex(pattern = r"^DCGM_FI_[A-Z0-9_]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = Rule::new(super::dcgm_fields::cel_rule()).message(super::dcgm_fields::CEL_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub defaults: Option<Vec<String>>,

    /// Shortest scrape interval a pipeline may ask for, e.g. `15s`; at least `1s`, at most
    /// `2562047h47m16s854ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("metrics.minScrapeInterval must be at least 1s").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub min_scrape_interval: Option<String>,

    /// Most DCGM fields one pipeline may select (each is one series per GPU per dimension set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_metrics_per_gpu: Option<i32>,
}

/// Log guardrails.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyLogsSpec {
    /// Refuse pipelines that set `encryption.kms.disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_kms: Option<bool>,

    /// Shortest retention a pipeline may set; also the default retention. One of the values
    /// CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    /// 1096, 1827, 2192, 2557, 2922, 3288, 3653.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3653))]
    #[x_kube(validation = Rule::new(
        "self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
    ).message("minRetentionInDays must be one of the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653").reason(Reason::FieldValueInvalid))]
    pub min_retention_in_days: Option<i32>,

    /// Every log group name must start with this, e.g. `/aws/eks/prod/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_\-/.#]+$"))]
    pub log_group_prefix: Option<String>,

    /// Redactions every pipeline gets, added to its own (matched by name, else by pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub required_redactions: Option<Vec<Redaction>>,
}

/// Identity guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyIdentitySpec {
    /// Identity modes pipelines may use; the first is the default. Absent: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_modes: Option<Vec<IdentityMode>>,

    /// Permissions boundary every created collector role must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/[A-Za-z0-9+=,.@_/-]+$"))]
    pub permissions_boundary_arn: Option<String>,
}

/// Source guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySourcesSpec {
    /// Namespaces whose pipelines may collect logs from namespaces other than their own (e.g. a
    /// platform team's). Pipelines elsewhere collect only their own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub cross_namespace_from: Option<Vec<String>>,
}

/// Collector defaults.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectorDefaultsSpec {
    /// Default collector image, pinned by tag (not `latest`) or digest. A contrib release older
    /// than 0.125.0 is refused: the per-pod log streams every logs pipeline renders need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(super::common::PINNED_IMAGE_RULE).message(super::common::PINNED_IMAGE_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(super::common::NOT_LATEST_RULE).message(super::common::NOT_LATEST_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(super::common::CONTRIB_BEFORE_0_125_RULE).message("a contrib collector release older than 0.125.0 is refused: every pipeline that ships logs renders per-pod log streams (awscloudwatchlogs log_stream_name \"{PodName}\"), which need 0.125.0 or newer").reason(Reason::FieldValueInvalid))]
    pub image: Option<String>,

    /// Default collector resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What a budget breach does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BudgetAction {
    /// Refuse to create or change anything; running resources stay as they are.
    #[default]
    Deny,
    /// Apply, and emit a Warning event.
    Warn,
}

/// Monthly budget per pipeline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// Estimated CloudWatch USD per month a pipeline may cost.
    #[serde(rename = "monthlyUSD")]
    #[schemars(range(min = 0.0))]
    pub monthly_usd: f64,

    /// `Deny` (default) or `Warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<BudgetAction>,
}

/// Observed state of a policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuTelemetryPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Nodes matching the GPU node selector.
    #[serde(default)]
    pub gpu_nodes: i32,

    /// Managed exporter rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterStatus>,

    /// Pipelines this policy governs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<PipelineCounts>,
}

/// Exporter rollout.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExporterStatus {
    /// Nodes that should run an exporter pod.
    #[serde(default)]
    pub desired: i32,
    /// Nodes with a ready exporter pod.
    #[serde(default)]
    pub ready: i32,
}

/// Governed pipelines.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineCounts {
    /// Pipelines governed.
    #[serde(default)]
    pub total: i32,
    /// Pipelines with PolicyCompliant=False.
    #[serde(default)]
    pub non_compliant: i32,
}
