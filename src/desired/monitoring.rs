//! The alerting and dashboard settings of the effective spec, as plain types: the GPU rule kinds
//! and their DCGM fields, the topic, the SLO, which dashboards. No builder lives here (they are in
//! `desired::alerts` and `desired::dashboards`), so the effective spec can hold these types
//! without importing the builders that read it.

use serde::Serialize;

/// `DCGM_FI_DEV_XID_ERRORS`: a latched gauge holding the last XID error code.
pub const XID_FIELD: &str = "DCGM_FI_DEV_XID_ERRORS";
/// `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL`: a counter of uncorrectable (double-bit) ECC errors.
pub const ECC_DBE_FIELD: &str = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL";
/// `DCGM_FI_DEV_GPU_TEMP`: a gauge in degrees Celsius.
pub const TEMPERATURE_FIELD: &str = "DCGM_FI_DEV_GPU_TEMP";
/// `DCGM_FI_DEV_GPU_UTIL`: a gauge in percent.
pub const UTILISATION_FIELD: &str = "DCGM_FI_DEV_GPU_UTIL";

/// Built-in temperature threshold (°C) and duration (minutes).
pub const DEFAULT_TEMPERATURE_CELSIUS: i32 = 85;
pub const DEFAULT_TEMPERATURE_MINUTES: i32 = 5;
/// Built-in idle threshold (%) and duration (minutes).
pub const DEFAULT_IDLE_PERCENT: i32 = 5;
pub const DEFAULT_IDLE_MINUTES: i32 = 30;
/// Built-in delivery objective of the pipeline-health SLO, in percent.
pub const DEFAULT_OBJECTIVE_PERCENT: f64 = 99.9;

/// The GPU alert rules mlobs knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RuleKind {
    /// An XID error was reported (the latched last-XID value changed).
    Xid,
    /// The double-bit ECC error counter increased.
    EccDoubleBit,
    /// The temperature stayed above a threshold for N minutes.
    Temperature,
    /// A GPU held by a pod stayed under a utilisation threshold for M minutes.
    IdleGpu,
}

impl RuleKind {
    /// Every rule, in the order alarms and rules are rendered.
    pub const ALL: [RuleKind; 4] = [
        RuleKind::Xid,
        RuleKind::EccDoubleBit,
        RuleKind::Temperature,
        RuleKind::IdleGpu,
    ];

    /// The DCGM field the rule reads: it must be among the selected metrics.
    pub fn field(self) -> &'static str {
        match self {
            RuleKind::Xid => XID_FIELD,
            RuleKind::EccDoubleBit => ECC_DBE_FIELD,
            RuleKind::Temperature => TEMPERATURE_FIELD,
            RuleKind::IdleGpu => UTILISATION_FIELD,
        }
    }

    /// The rule's section in the pipeline spec.
    pub fn spec_path(self) -> &'static str {
        match self {
            RuleKind::Xid => "spec.alerts.rules.xid",
            RuleKind::EccDoubleBit => "spec.alerts.rules.eccDoubleBit",
            RuleKind::Temperature => "spec.alerts.rules.temperature",
            RuleKind::IdleGpu => "spec.alerts.rules.idleGpu",
        }
    }

    /// The last part of the alarm name.
    pub fn slug(self) -> &'static str {
        match self {
            RuleKind::Xid => "xid",
            RuleKind::EccDoubleBit => "ecc-double-bit",
            RuleKind::Temperature => "gpu-temperature",
            RuleKind::IdleGpu => "idle-gpu",
        }
    }

    /// The Prometheus alert name.
    pub fn alert_name(self) -> &'static str {
        match self {
            RuleKind::Xid => "GpuXidError",
            RuleKind::EccDoubleBit => "GpuEccDoubleBitError",
            RuleKind::Temperature => "GpuTemperatureHigh",
            RuleKind::IdleGpu => "GpuIdleHeldByPod",
        }
    }

    /// `critical` for hardware faults, `warning` otherwise.
    pub fn severity(self) -> &'static str {
        match self {
            RuleKind::Xid | RuleKind::EccDoubleBit => "critical",
            RuleKind::Temperature | RuleKind::IdleGpu => "warning",
        }
    }
}

/// One enabled rule with its settings. Thresholds are in the field's unit (°C, %); fault rules
/// fire above 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuRule {
    pub kind: RuleKind,
    pub threshold: f64,
    /// How long the condition must hold (1 for the fault rules: at once).
    pub minutes: u32,
}

impl GpuRule {
    /// A sentence for the alarm description and the alert's summary.
    pub fn describe(&self) -> String {
        let (t, m) = (self.threshold, self.minutes);
        match self.kind {
            RuleKind::Xid => "a GPU reported an XID error (driver-detected fault)".into(),
            RuleKind::EccDoubleBit => "a GPU reported an uncorrectable double-bit ECC error".into(),
            RuleKind::Temperature => format!("a GPU stayed above {t} °C for {m} minutes"),
            RuleKind::IdleGpu => format!("GPU utilisation stayed under {t}% for {m} minutes"),
        }
    }
}

/// The SNS topic alarms notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum EffTopic {
    /// mlobs creates (and owns) a topic of this name.
    Create { name: String },
    /// The user's topic; verified only.
    Existing { arn: String },
}

/// The pipeline-health delivery SLO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffSlo {
    pub objective_percent: f64,
}

/// Alerts, when enabled.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffAlerts {
    /// Enabled GPU rules, in [`RuleKind::ALL`] order; each one's field is selected.
    pub rules: Vec<GpuRule>,
    pub topic: EffTopic,
    pub slo: Option<EffSlo>,
    /// The EMF dimension set the alarms read: `[k8s.cluster.name]`, the only one whose values
    /// are known before metrics arrive.
    pub alarm_dimensions: Vec<String>,
}

/// `raw` with every character but `[A-Za-z0-9_-]` as `-` (a `.` in a pipeline name), cut to
/// `max` characters: what SNS topic and CloudWatch dashboard names accept.
pub fn aws_name(raw: &str, max: usize) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    raw.chars().map(|c| if keep(c) { c } else { '-' }).take(max).collect()
}

/// `mlobs-<cluster>-<namespace>-<pipeline>-alerts`, within SNS's 256 characters.
pub fn topic_name(cluster: &str, namespace: &str, name: &str) -> String {
    aws_name(&format!("mlobs-{cluster}-{namespace}-{name}-alerts"), 256)
}

/// Which dashboards a pipeline has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EffDashboards {
    pub grafana: bool,
    pub cloudwatch: bool,
}

/// `mlobs-<cluster>-<namespace>-<pipeline>`, within CloudWatch's 255 characters.
pub fn dashboard_name(cluster: &str, namespace: &str, name: &str) -> String {
    aws_name(&format!("mlobs-{cluster}-{namespace}-{name}"), 255)
}
