//! GPU alerts (pipeline spec) and their defaults and guardrails (policy spec): CloudWatch alarms
//! on the EMF metrics the pipeline ships, actions to an SNS topic, the same rules as a
//! `PrometheusRule`, and burn-rate alerts on the collector's own delivery (an SLO).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of an SNS topic ARN: `arn:<partition>:sns:<region>:<account>:<topic>`.
pub const TOPIC_ARN_PATTERN: &str =
    r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$";

/// CEL (at `spec`, reported at `spec.alerts.sns.topicArn`): the topic is in the pipeline's region.
pub const TOPIC_REGION_RULE: &str = "!has(self.region) || !has(self.alerts) || !has(self.alerts.sns) || !has(self.alerts.sns.topicArn) || self.alerts.sns.topicArn.contains(':sns:' + self.region + ':')";
/// The message of [`TOPIC_REGION_RULE`].
pub const TOPIC_REGION_MESSAGE: &str =
    "the SNS topic must be in spec.region: CloudWatch alarms notify only topics of their own region";

/// CEL (at `spec.alerts.sns.topicArn`): a FIFO topic cannot be an alarm action.
pub const TOPIC_NOT_FIFO_RULE: &str = "!self.endsWith('.fifo')";
/// The message of [`TOPIC_NOT_FIFO_RULE`].
pub const TOPIC_NOT_FIFO_MESSAGE: &str = "CloudWatch alarm actions need a standard SNS topic, not a FIFO topic";

/// A rule on a fault counter: on unless switched off.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRuleSpec {
    /// Raise this alarm. Default: on when its DCGM field is among the selected metrics
    /// (`spec.metrics.dcgm.metrics`), else left out; `true` with the field not selected is an
    /// error (the alarm would watch a metric that is never shipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// GPU temperature over a threshold for a number of minutes (`DCGM_FI_DEV_GPU_TEMP`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemperatureRuleSpec {
    /// Raise this alarm (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Degrees Celsius above which a GPU is too hot, 40–110 (default 85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 40, max = 110))]
    pub threshold_celsius: Option<i32>,
    /// Minutes the temperature must stay above the threshold, 1–60 (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub for_minutes: Option<i32>,
}

/// A GPU held by a pod but (nearly) unused (`DCGM_FI_DEV_GPU_UTIL`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdleRuleSpec {
    /// Raise this alarm (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Utilisation in percent under which a GPU counts as idle, 1–50 (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub threshold_percent: Option<i32>,
    /// Minutes the utilisation must stay under the threshold, 5–1440 (default 30; CloudWatch
    /// evaluates at most one day of one-minute periods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 1440))]
    pub for_minutes: Option<i32>,
}

/// Burn-rate alerts on the collector's own delivery: failed against sent log records and metric
/// points, and its sending queue filling up. The collectors serve their telemetry on port
/// `metrics` (8888) of the pod IP; where the Prometheus operator serves PodMonitors, mlobs applies
/// one that scrapes exactly this pipeline's collectors and labels their series
/// `mlobs_io_pipeline`, which the rules select on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineHealthSpec {
    /// Render the pipeline-health alerts in the PrometheusRule (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Delivery objective in percent, 90–99.99 (default 99.9): the error budget is what is left
    /// to 100. Alerts fire when the budget burns 14.4× too fast over 1 h and 5 m, or 6× over 6 h
    /// and 30 m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 90.0, max = 99.99))]
    pub objective_percent: Option<f64>,
}

/// The alert rules; every one of them is on by default when its DCGM field is selected.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRulesSpec {
    /// Any XID error (`DCGM_FI_DEV_XID_ERRORS` changes): a driver-reported GPU fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<FaultRuleSpec>,
    /// Any uncorrectable double-bit ECC error (`DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` increases): the
    /// GPU's memory is failing and its jobs' results are suspect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_double_bit: Option<FaultRuleSpec>,
    /// A GPU too hot for too long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<TemperatureRuleSpec>,
    /// A GPU held by a pod but idle for too long (paid for, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_gpu: Option<IdleRuleSpec>,
    /// Delivery SLO of the pipeline itself (PrometheusRule only; its series come from the
    /// collectors' telemetry on port 8888, scraped through the PodMonitor mlobs applies where the
    /// Prometheus operator serves one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_health: Option<PipelineHealthSpec>,
}

/// Where alarms notify.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsSnsSpec {
    /// An existing standard SNS topic in the pipeline's region and account
    /// (`arn:aws:sns:<region>:<account>:<name>`). Absent: mlobs creates the topic
    /// `mlobs-<cluster>-<namespace>-<pipeline>-alerts`, encrypted with the pipeline's KMS key, and
    /// deletes it with the pipeline under `deletionPolicy: Delete`. Subscribe to it yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 20, max = 512), regex(pattern = TOPIC_ARN_PATTERN))]
    #[x_kube(validation = Rule::new(TOPIC_NOT_FIFO_RULE).message(TOPIC_NOT_FIFO_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub topic_arn: Option<String>,
}

/// GPU alarms in CloudWatch (on the metrics this pipeline ships), the same rules as a
/// PrometheusRule when the Prometheus operator's CRD is installed, and pipeline-health
/// burn-rate alerts.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertsSpec {
    /// Create the alerts (default true when this section is present; the policy's
    /// `alerts.required` turns them on for every pipeline and refuses `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Thresholds and which rules are on (default: the policy's `alerts.defaults`, else built-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<AlertRulesSpec>,
    /// The SNS topic alarms notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<AlertsSnsSpec>,
}

/// Dashboards of GPU and pipeline health, generated from the selected DCGM fields (a panel never
/// shows a metric the pipeline does not ship).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DashboardsSpec {
    /// A Grafana dashboard (utilisation, memory, temperature, power, XID/ECC per node and GPU,
    /// GPU use per pod, pipeline health) in a ConfigMap labelled `grafana_dashboard: "1"`, which
    /// the Grafana sidecar loads (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<bool>,
    /// A CloudWatch dashboard `mlobs-<cluster>-<namespace>-<pipeline>` on the EMF metrics
    /// (default true; $3 per month beyond the account's first 3 dashboards). Deleted with the
    /// pipeline under `deletionPolicy: Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<bool>,
}

/// Policy: alert defaults and guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyAlertsSpec {
    /// Every governed pipeline has alerts: on unless the pipeline sets `alerts.enabled: false`,
    /// which is then a violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Rule settings a pipeline gets when it sets none itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<AlertRulesSpec>,
    /// Highest temperature threshold a pipeline may set, 40–110: a hotter one is a violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 40, max = 110))]
    pub max_temperature_celsius: Option<i32>,
}
