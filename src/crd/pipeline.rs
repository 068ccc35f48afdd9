//! `MLObservabilityPipeline`: one team's telemetry pipeline.
//!
//! Every spec field is optional: an absent field takes the platform policy's default, then the
//! built-in default (see `desired::effective`), so the merge can tell where each value came from.

// printcolumn(...) repeats `type_ = ...` by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::alerts::{AlertsSpec, DashboardsSpec};
use super::archive::ArchiveSpec;
use super::common::{DeletionPolicy, DriftPolicy, IdentityMode, LogGroupClass, Redaction};
use super::destinations::{DatadogSpec, PrometheusSpec, TracesSpec};
use super::hot_path::HotPathSpec;

/// A team's ML observability pipeline: pre-created, KMS-encrypted CloudWatch log groups, a
/// least-privilege IAM role, and an OpenTelemetry collector DaemonSet on the GPU nodes that ships
/// pod logs and a selected set of DCGM GPU metrics.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "mlobs.io",
    version = "v1alpha1",
    kind = "MLObservabilityPipeline",
    doc = "A team's ML observability pipeline on EKS: KMS key, pre-created CloudWatch log groups, collector IAM role and OpenTelemetry collector DaemonSet on GPU nodes.",
    plural = "mlobservabilitypipelines",
    shortname = "mlop",
    category = "mlobs",
    namespaced,
    status = "MLObservabilityPipelineStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Series", type_ = "integer", json_path = ".status.telemetry.totalSeries"),
    printcolumn(
        name = "Est $/mo",
        type_ = "number",
        json_path = ".status.telemetry.estimatedMonthlyCostUSD"
    ),
    printcolumn(
        name = "Data",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="DataFlowing")].status"#
    ),
    printcolumn(
        name = "Drift",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Drifted")].status"#
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
// Reason FieldValueInvalid, not FieldValueDuplicate: for Duplicate the API server answers only
// "Duplicate value" and drops the message (seen on kube-apiserver 1.36).
#[x_kube(validation = Rule::new(
    "!(has(self.logs) && has(self.logs.logGroup) && has(self.logs.logGroup.name) && has(self.metrics) && has(self.metrics.cloudwatch) && has(self.metrics.cloudwatch.logGroup) && has(self.metrics.cloudwatch.logGroup.name)) || self.logs.logGroup.name != self.metrics.cloudwatch.logGroup.name"
).message("spec.logs.logGroup.name and spec.metrics.cloudwatch.logGroup.name must differ").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(super::validate::known_dimensions_rule()).message(super::validate::KNOWN_DIMENSIONS_MESSAGE).field_path(".metrics.cloudwatch.dimensions").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(super::destinations::WORKSPACE_REGION_RULE).message(super::destinations::WORKSPACE_REGION_MESSAGE).field_path(".metrics.prometheus.workspaceArn").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(super::destinations::TRACES_NEED_OTLP_RULE).message(super::destinations::TRACES_NEED_OTLP_MESSAGE).field_path(".traces.destination").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(super::alerts::TOPIC_REGION_RULE).message(super::alerts::TOPIC_REGION_MESSAGE).field_path(".alerts.sns.topicArn").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new(super::archive::ARCHIVE_NEEDS_LOGS_RULE).message(super::archive::ARCHIVE_NEEDS_LOGS_MESSAGE).field_path(".archive").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MLObservabilityPipelineSpec {
    /// Name of the EKS cluster. Used in default log group names, the `k8s.cluster.name` resource
    /// attribute and the EKS pod identity association. Default: the operator's `--cluster-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[0-9A-Za-z][A-Za-z0-9_-]*$"))]
    pub cluster_name: Option<String>,

    /// AWS region of the log groups, key and collector endpoint. Default: the operator's `--region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// Name of the GpuTelemetryPolicy that governs this pipeline. Absent: the policy with
    /// `default: true`, if exactly one exists; with none, built-in defaults and no guardrails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub policy_ref: Option<String>,

    /// Where telemetry is collected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Box<SourcesSpec>>,

    /// Pod log collection and the CloudWatch log group it is shipped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Box<LogsSpec>>,

    /// DCGM GPU metrics and how they become CloudWatch metrics (EMF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Box<MetricsSpec>>,

    /// OTLP intake for applications that emit their own telemetry, and where their spans go
    /// (AWS X-Ray or an OTLP backend such as Tempo or Jaeger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<Box<TracesSpec>>,

    /// Datadog (SaaS) as a further destination of the selected GPU metrics. Refused unless the
    /// governing policy sets `destinations.allowSaaS: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<Box<DatadogSpec>>,

    /// Long-term archive of every pod log record in an S3 bucket with Object Lock (COMPLIANCE
    /// mode, default 7 years), SSE-KMS with the pipeline's key, public access blocked, TLS only,
    /// moved to a colder storage class after a number of days. The bucket is created before the
    /// collector starts and is never deleted by mlobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Box<ArchiveSpec>>,

    /// Critical log lines (errors, OOM kills, checkpoint failures, NCCL errors) to a Kinesis data
    /// stream within seconds: mlobs creates the stream (KMS-encrypted with the pipeline's key)
    /// before any collector starts, and runs a Fluent Bit DaemonSet on the pipeline's GPU nodes
    /// that may only put records on it. Off unless this section is present or the policy requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_path: Option<Box<HotPathSpec>>,
    /// GPU alarms: XID errors, double-bit ECC errors, temperature and idle GPUs as CloudWatch
    /// alarms on the metrics this pipeline ships (each rule's DCGM field must be selected),
    /// notifying an SNS topic; the same rules plus pipeline-health burn-rate alerts as a
    /// PrometheusRule when the Prometheus operator is installed. Off unless present or the
    /// policy requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Box<AlertsSpec>>,

    /// Dashboards of GPU and pipeline health generated from the selected metrics: a Grafana
    /// dashboard ConfigMap and a CloudWatch dashboard. Off unless present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboards: Option<DashboardsSpec>,

    /// Encryption at rest of the log groups (and of the archive bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Box<EncryptionSpec>>,

    /// The AWS identity the collector runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Box<IdentitySpec>>,

    /// The OpenTelemetry collector DaemonSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<Box<CollectorSpec>>,

    /// `Correct` (default) puts drifted AWS and Kubernetes resources back; `Report` only records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_policy: Option<DriftPolicy>,

    /// `Retain` (default) keeps the key, log groups and role when the pipeline is deleted and only
    /// removes mlobs ownership tags; `Delete` removes them (the key is scheduled for deletion).
    /// An archive bucket is retained under both: Object Lock forbids deleting its objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// How often AWS resources are re-read to detect drift, e.g. `10m` (default). At least `30s`
    /// (refused at admission), at most `2562047h47m16s854ms`. Resyncs run in step: each pipeline
    /// of an interval resyncs once per period (periods start at whole multiples of the interval
    /// since the Unix epoch), at its own offset within the period's first tenth, so a change made
    /// outside mlobs is found within 1.1 intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("resyncInterval must be at least 30s").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub resync_interval: Option<String>,

    /// How the operator checks that telemetry reaches CloudWatch (the `DataFlowing` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_flow: Option<DataFlowSpec>,

    /// Take over an existing log group, archive bucket or IAM role that has the desired name but no mlobs ownership
    /// tags (it is tagged and reconciled). Without it such a name is a `NameConflict` and nothing is
    /// touched. The annotation `mlobs.io/adopt: "true"` has the same effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<bool>,
}

/// The data-flow check: at each resync (and sooner while data is missing) the operator reads when
/// the newest event reached each of the pipeline's log groups and reports the `DataFlowing`
/// condition. It is informative: it never makes `Ready` False.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataFlowSpec {
    /// How old the newest event of a log group may be before `DataFlowing` turns False
    /// (`NoRecentLogs` / `NoRecentMetrics`), e.g. `20m`. Must be longer than the scrape interval
    /// plus the batch timeout (the longest a healthy collector waits between two sends). Default
    /// `5m`, or twice the scrape interval plus the batch timeout when that is longer.
    /// A pod that logs nothing for this long also makes the logs group look idle. A stop is seen at
    /// the next check: within `resyncInterval` after the grace period ran out. At least `1s`, at
    /// most `2562047h47m16s854ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("dataFlow.gracePeriod must be at least 1s").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub grace_period: Option<String>,
}

/// Where telemetry is collected from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcesSpec {
    /// Namespaces whose pod logs are collected. Default: the pipeline's own namespace. Other
    /// namespaces need the policy's `sources.crossNamespaceFrom` to list this pipeline's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub namespaces: Option<Vec<String>>,

    /// Node labels that select the GPU nodes the collector runs on.
    /// Default: the policy's, else `nvidia.com/gpu.present: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the collector pods. Default: the policy's, else tolerate any `nvidia.com/gpu` taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

/// Pod log collection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsSpec {
    /// Collect pod logs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Globs under `/var/log/pods` to read. Default: every container of the source namespaces,
    /// `/var/log/pods/<namespace>_*/*/*.log`. Glob syntax: `*`, `**`, `?`, `[abc]`, `{a,b}`;
    /// `\` escapes a literal `[`, `{` or `}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 1024), regex(pattern = r"^/var/log/pods/"))
    )]
    pub include: Option<Vec<String>>,

    /// Globs to skip, e.g. a noisy sidecar: `/var/log/pods/*/istio-proxy/*.log` (syntax as in `include`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub exclude: Option<Vec<String>>,

    /// The log group logs are written to. It is created before the collector starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<LogGroupSpec>,

    /// Redactions applied to every log body before it leaves the node. The policy's
    /// `logs.requiredRedactions` are added to these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub redaction: Option<Vec<Redaction>>,

    /// Pod label whose value becomes the `ml.job.id` attribute of log records, e.g.
    /// `training.kubeflow.org/job-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 317),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        )
    )]
    pub job_id_label: Option<String>,
}

/// A CloudWatch Logs log group created ahead of time by the operator.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogGroupSpec {
    /// Log group name. Default: `/aws/eks/<cluster>/<namespace>/<pipeline>/logs` (or `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[A-Za-z0-9_\-/.#]+$"))]
    pub name: Option<String>,

    /// Days to keep events: one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    /// 1096, 1827, 2192, 2557, 2922, 3288, 3653. Default: the policy's minimum, else 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
    ).message("retentionInDays must be one of the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653").reason(Reason::FieldValueInvalid))]
    pub retention_in_days: Option<i32>,

    /// `STANDARD` (default) or `INFREQUENT_ACCESS` (half the ingestion price, no EMF extraction).
    /// Set at creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("class is set when the log group is created and cannot change"))]
    pub class: Option<LogGroupClass>,

    /// Extra tags on the log group (up to 47: mlobs adds 3 ownership tags; CloudWatch allows 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 47))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('mlobs.io/') && size(k) <= 128 && size(self[k]) <= 256)")
        .message("tag keys must not start with aws: or mlobs.io/ (reserved), keys are at most 128 and values at most 256 characters"))]
    pub tags: Option<BTreeMap<String, String>>,
}

/// GPU metrics.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// DCGM exporter scraping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcgm: Option<DcgmSpec>,

    /// CloudWatch metrics through the embedded metric format (EMF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<CloudWatchMetricsSpec>,

    /// Amazon Managed Service for Prometheus: the same selected fields, remote-written to a
    /// workspace as well as to CloudWatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
}

/// Which DCGM fields are scraped, and how often.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DcgmSpec {
    /// Scrape the node-local DCGM exporter (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Scrape interval, e.g. `30s` (default); at least `1s`, at most `2562047h47m16s854ms`. Not
    /// below the policy's `metrics.minScrapeInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("dcgm.scrapeInterval must be at least 1s").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub scrape_interval: Option<String>,

    /// DCGM field names to ship, e.g. `DCGM_FI_DEV_GPU_UTIL`. Every other series is dropped on the
    /// node. Default: the policy's `metrics.defaults`, else ten fields that need no profiling
    /// capability (utilisation, memory, temperature, power, XID, ECC, NVLink, PCIe replays).
    /// Each name must be a field of DCGM's `dcgm_fields.h` (DCGM 4.x); a misspelled one is
    /// refused at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        inner(length(min = 8, max = 80), regex(pattern = r"^DCGM_FI_[A-Z0-9_]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = Rule::new(super::dcgm_fields::cel_rule()).message(super::dcgm_fields::CEL_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub metrics: Option<Vec<String>>,
}

/// CloudWatch metrics via EMF.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudWatchMetricsSpec {
    /// CloudWatch namespace (default `ML/GPU`). Must not start with `AWS/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9 ._#:/-]+$"))]
    #[x_kube(validation = Rule::new("!self.startsWith('AWS/')").message("namespace must not start with AWS/ (reserved for AWS services)"))]
    pub namespace: Option<String>,

    /// Dimension sets. Each set makes one CloudWatch metric per distinct combination of its values,
    /// so each set multiplies cost. Names: `k8s.cluster.name`, `k8s.node.name`, `gpu.node.type`,
    /// `gpu`, `UUID`, `modelName`, `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`
    /// (the pod using each GPU, from dcgm-exporter's pod mapping), or a key of
    /// `spec.collector.resourceAttributes`. Not `ml.job.id`: the exporter does not carry the
    /// GPU pod's labels.
    /// Default: `[[k8s.cluster.name, k8s.node.name, gpu], [k8s.cluster.name]]`. A name appears
    /// at most once in a set, and a set at most once (in any order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 10),
        inner(length(min = 1, max = 30), inner(length(min = 1, max = 255)))
    )]
    #[x_kube(validation = Rule::new("self.all(s, s.all(n, s.exists_one(m, m == n)))").message("a name appears at most once in a dimension set").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, size(t) == size(s) && t.all(n, n in s)))").message("the same dimension set appears twice (it would be billed twice for nothing)").reason(Reason::FieldValueInvalid))]
    pub dimensions: Option<Vec<Vec<String>>>,

    /// The log group EMF events are written to. Must be `STANDARD`: CloudWatch extracts no
    /// metrics from `INFREQUENT_ACCESS` groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.class) || self.class == 'STANDARD'").message("the EMF log group must be STANDARD: CloudWatch does not extract metrics from INFREQUENT_ACCESS log groups"))]
    pub log_group: Option<LogGroupSpec>,
}

/// Encryption at rest.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionSpec {
    /// The KMS key of both log groups. Default: a key created for this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsSpec>,
}

/// Which KMS key encrypts the log groups: an existing one, or one the operator creates.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.keyArn) && has(self.create))").message("set either kms.keyArn (an existing key) or kms.create, not both").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!(has(self.disabled) && self.disabled && (has(self.keyArn) || has(self.create)))").message("kms.disabled cannot be combined with kms.keyArn or kms.create").reason(Reason::FieldValueForbidden))]
pub struct KmsSpec {
    /// ARN of an existing customer-managed key. Its key policy must let
    /// `logs.<region>.amazonaws.com` use it for these log groups (`mlobs plan` prints the statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$"))]
    pub key_arn: Option<String>,

    /// Create a key for this pipeline (the default when keyArn is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<KmsCreateSpec>,

    /// Use CloudWatch's default encryption instead of a customer-managed key. Refused when the
    /// policy sets `logs.requireKms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// A KMS key created and owned by the operator.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KmsCreateSpec {
    /// Alias, e.g. `alias/mlobs/team-a`. Default: `alias/mlobs/<cluster>/<namespace>/<pipeline>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 7, max = 256), regex(pattern = r"^alias/[A-Za-z0-9/_-]+$"))]
    #[x_kube(validation = Rule::new("!self.startsWith('alias/aws/')").message("alias must not start with alias/aws/ (reserved for AWS managed keys)"))]
    pub alias: Option<String>,

    /// Rotate the key material yearly (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<bool>,

    /// Days between a `Delete` of the pipeline and the key's deletion, 7–30 (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 7, max = 30))]
    pub deletion_window_in_days: Option<i32>,
}

/// The collector's AWS identity.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'IRSA' || has(self.oidcProviderArn) || has(self.existingRoleArn)").message("identity.mode IRSA needs identity.oidcProviderArn (or an existingRoleArn whose trust you manage)").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!(has(self.roleName) && has(self.existingRoleArn))").message("set either identity.roleName (a role mlobs creates) or identity.existingRoleArn, not both").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!(has(self.existingRoleArn) && has(self.permissionsBoundaryArn))").message("identity.permissionsBoundaryArn applies only to a role mlobs creates, not to existingRoleArn").reason(Reason::FieldValueForbidden))]
pub struct IdentitySpec {
    /// `IRSA` or `PodIdentity`. Default: the policy's first allowed mode, else IRSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<IdentityMode>,

    /// ARN of the cluster's IAM OIDC provider (IRSA), e.g.
    /// `arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[A-Za-z0-9./_-]+$"))]
    pub oidc_provider_arn: Option<String>,

    /// Name of the role mlobs creates (≤ 64 chars). Default: derived from cluster, namespace and
    /// pipeline name, hash-suffixed when it would be longer than 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9+=,.@_-]+$"))]
    pub role_name: Option<String>,

    /// Use this role instead of creating one; mlobs only verifies it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"))]
    pub existing_role_arn: Option<String>,

    /// Permissions boundary attached to the created role. Default: the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/[A-Za-z0-9+=,.@_/-]+$"))]
    pub permissions_boundary_arn: Option<String>,

    /// When the collector reaches CloudWatch through VPC endpoints: the VPC id, added as an
    /// `aws:SourceVpc` condition to every statement of the role's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^vpc-[0-9a-f]{8,17}$"))]
    pub source_vpc: Option<String>,
}

/// The OpenTelemetry collector.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectorSpec {
    /// Collector image, pinned by tag or digest (`:latest` is refused). Must be a contrib build
    /// (it needs filelog, prometheus, awscloudwatchlogs and awsemf). Default: the policy's, else
    /// `otel/opentelemetry-collector-contrib:0.125.0`, the first release with everything mlobs
    /// renders. A contrib release older than a rendered feature is refused: per-pod log streams
    /// (`{PodName}`, used whenever logs are shipped) need 0.125.0. Tags of other distributions
    /// and bare digests are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(super::common::PINNED_IMAGE_RULE).message(super::common::PINNED_IMAGE_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(super::common::NOT_LATEST_RULE).message(super::common::NOT_LATEST_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub image: Option<String>,

    /// Container resources. The memory limit also sets memory_limiter (80%) and GOMEMLIMIT.
    /// Default: the policy's, else requests 100m/256Mi, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Batching before export (batch is always the last processor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,

    /// Host directory for file-backed queues and log read offsets, so a restart neither loses nor
    /// re-sends data. Default `/var/lib/mlobs/<namespace>-<pipeline>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256), regex(pattern = r"^/[A-Za-z0-9._/-]+$"))]
    pub queue_host_path: Option<String>,

    /// How long an exporter retries a failed send before dropping it, e.g. `300s` (default); at
    /// least `30s`, the longest pause between two attempts; at most `2562047h47m16s854ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("collector.retryMaxElapsed must be at least 30s, the longest pause between two attempts").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub retry_max_elapsed: Option<String>,

    /// Extra resource attributes set on every log and metric, e.g. `team: vision` (keys not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) > 0)").message("a resource attribute key must not be empty").reason(Reason::FieldValueInvalid))]
    pub resource_attributes: Option<BTreeMap<String, String>>,
}

/// Batch processor settings.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchSpec {
    /// Items per batch (default 1000). PutLogEvents takes at most 10,000 events per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub send_batch_size: Option<i32>,

    /// Send a partial batch after this long, e.g. `10s` (default); at least `1ms`, at most
    /// `2562047h47m16s854ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^([0-9]{1,9}(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1ms')").message("collector.batch.timeout must be at least 1ms").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2562047h47m16s854ms')").message("must be at most 2562047h47m16s854ms, the longest duration Go's time.Duration holds").reason(Reason::FieldValueInvalid))]
    pub timeout: Option<String>,
}

// The larger optional sections of the spec and the status are boxed (same JSON, same schema): the
// operator's pipeline cache keeps every pipeline of its shard, and an absent `Option<T>` takes
// `size_of::<T>()` all the same. Inline, a pipeline was 2,472 bytes before any field was set
// (spec 1,480, status 632); boxed, an absent section is 8 bytes and a pipeline 736. A pipeline of
// the bench (`make bench`) as the cache keeps it: 4,532 bytes instead of 5,740
// (`tests/cache_memory.rs`).

/// Observed state of a pipeline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MLObservabilityPipelineStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, KmsKeyReady, LogGroupsReady, IamRoleReady, CollectorReady, MetricsSourceReady,
    /// TracesReady and PrometheusReady (with those destinations), ArchiveReady (with an archive),
    /// HotPathReady (with the hot path), PolicyCompliant, Drifted, DataFlowing (informative: not part of Ready), Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// AWS resources in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Box<AwsStatus>>,

    /// Collector rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<CollectorStatus>,

    /// Cardinality and cost estimate for the GPU nodes that match the selector now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Box<TelemetryStatus>>,

    /// Open drift records: where an AWS or Kubernetes resource differs from the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftRecord>,

    /// The policy that governed the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRefStatus>,

    /// Where telemetry goes besides CloudWatch (traces, Prometheus remote write, Datadog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Box<DestinationsStatus>>,
}

/// Destinations beyond CloudWatch in use, as the last AWS step saw them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationsStatus {
    /// Where spans are exported (the X-Ray OTLP endpoint or the OTLP backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces_endpoint: Option<String>,
    /// The AMP workspace the selected GPU metrics are remote-written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_workspace_arn: Option<String>,
    /// Its remote write URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_write_url: Option<String>,
    /// The Datadog site metrics are sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog_site: Option<String>,
}

/// AWS resources in use.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwsStatus {
    /// The KMS key encrypting the log groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// The logs and metrics log groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_group_arns: Vec<String>,
    /// The collector's role, once created with its inline policy (a role of mlobs that is not
    /// recorded here and lacks the policy is a create to finish, also under `driftPolicy: Report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The archive bucket (`arn:aws:s3:::<bucket>`), when an archive is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_bucket_arn: Option<String>,
    /// The hot path's Kinesis data stream, when the hot path is enabled. Written as null when
    /// it is not (status is merge-patched: null removes it once the stream is retired).
    #[serde(default)]
    pub hot_path_stream_arn: Option<String>,
    /// Fluent Bit's role on the hot path, once created with its policy. Written as null when the
    /// hot path is not enabled.
    #[serde(default)]
    pub hot_path_role_arn: Option<String>,
    /// The SNS topic the alarms notify, when alerts are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_topic_arn: Option<String>,
    /// How many CloudWatch alarms mlobs keeps for this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_count: Option<i32>,
    /// The CloudWatch dashboard mlobs created (`spec.dashboards.cloudwatch`). Written as null
    /// when there is none, so that turning dashboards off forgets it once it is deleted.
    #[serde(default)]
    pub dashboard_name: Option<String>,
    /// EKS pod identity association id (PodIdentity mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity_association_id: Option<String>,
    /// The AMP workspace mlobs created (or adopted) for `spec.metrics.prometheus.workspaceAlias`.
    /// The collector's remote write endpoint and role are built from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amp_workspace_arn: Option<String>,
    /// The alias `ampWorkspaceArn` was created for; another alias in the spec means another
    /// workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amp_workspace_alias: Option<String>,
    /// When mlobs started creating the KMS key (written before CreateKey). While no kmsKeyArn is
    /// recorded, it tells mlobs that a key may exist from an interrupted create, to be found by its
    /// ownership tags instead of created twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_create_started: Option<String>,
    /// When mlobs last read the KMS key in full: its state, tags, rotation and policy (and put
    /// them back under driftPolicy Correct). Each resync finds the key through its alias; the full
    /// read happens when the operator starts, when a drift event or a change by mlobs names the
    /// key, once after data stopped flowing, and otherwise once per the operator's
    /// `--kms-check-interval` (default 24h; while drift events are read, `--event-backstop-interval`,
    /// default 168h). Absent without a key, or before the first full read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_checked_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Collector rollout.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CollectorStatus {
    /// Nodes that should run a collector pod.
    #[serde(default)]
    pub desired_nodes: i32,
    /// Nodes with a ready collector pod of the current config.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Hash of the collector configuration rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Cardinality and cost estimate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryStatus {
    /// GPU nodes matching the selector.
    #[serde(default)]
    pub gpu_nodes: i32,
    /// CloudWatch metrics (series) per node from the selected DCGM fields and dimension sets.
    #[serde(default)]
    pub series_per_node: i64,
    /// CloudWatch metrics in total.
    #[serde(default)]
    pub total_series: i64,
    /// Estimated CloudWatch cost per month in USD (us-east-1 list prices).
    #[serde(default, rename = "estimatedMonthlyCostUSD")]
    pub estimated_monthly_cost_usd: f64,
    /// When the newest event reached the logs group (RFC 3339): CloudWatch's ingestion time of the
    /// newest stream, or, at a resync of a group whose data flows, the start of the newest minute
    /// in which CloudWatch counted events for it (`AWS/Logs` `IncomingLogEvents`). Recorded at
    /// each resync (`spec.resyncInterval`) and when `DataFlowing` changes, so it can be up to one
    /// resync interval old; absent until a first event is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log_event_time: Option<String>,
    /// When the newest EMF event reached the metrics group (RFC 3339), recorded like
    /// `lastLogEventTime`: up to one resync interval old; absent until a first event is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_metric_event_time: Option<String>,
}

/// One difference between the spec and a live resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DriftRecord {
    /// The resource, e.g. `logGroup:/aws/eks/prod/team-a/train/logs`.
    pub resource: String,
    /// The field that differs, e.g. `kmsKeyId`.
    pub field: String,
    /// What the spec asks for.
    pub desired: String,
    /// What was found.
    pub actual: String,
    /// When it was first seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<String>,
    /// `Corrected` or `Reported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// The policy that governed the last reconcile.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRefStatus {
    /// Policy name.
    pub name: String,
    /// Its metadata.generation at that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}
