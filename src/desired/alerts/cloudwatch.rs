//! The GPU rules as CloudWatch alarms (PutMetricAlarm inputs) on the EMF metrics the collector
//! ships: namespace `spec.metrics.cloudwatch.namespace`, metric name = the DCGM field, dimensions
//! `[k8s.cluster.name]` = the cluster. [`breaches`] evaluates CloudWatch's alarm semantics so each
//! rule can be tested with values that fire and values that do not.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{EffAlerts, GpuRule, RuleKind};
use crate::desired::effective::Effective;

/// Every alarm of a pipeline is named `mlobs/<cluster>/<namespace>/<pipeline>/<rule>`: the
/// operator's IAM policy covers `alarm:mlobs/*`, and deletion lists this prefix only.
pub const ALARM_NAME_PREFIX: &str = "mlobs/";
/// One-minute periods: DCGM is scraped every 30 s by default.
pub const PERIOD_SECONDS: i32 = 60;
/// The ECC rule sums the counter's increase over this period (awsemf ships a Prometheus counter
/// as the delta since its previous scrape).
pub const ECC_PERIOD_SECONDS: i32 = 300;

/// CloudWatch statistics the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Statistic {
    Maximum,
    Sum,
}

impl Statistic {
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Maximum => "Maximum",
            Statistic::Sum => "Sum",
        }
    }
}

/// Comparison operators the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    GreaterThanThreshold,
    LessThanThreshold,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::GreaterThanThreshold => "GreaterThanThreshold",
            Comparison::LessThanThreshold => "LessThanThreshold",
        }
    }

    /// Whether one datapoint breaches the threshold.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThanThreshold => value > threshold,
            Comparison::LessThanThreshold => value < threshold,
        }
    }
}

/// One alarm as PutMetricAlarm takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmPlan {
    pub rule: RuleKind,
    pub name: String,
    pub arn: String,
    pub description: String,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: Statistic,
    pub period_seconds: i32,
    /// A metric-math expression over the metric (id `m1`) the alarm watches instead of the
    /// metric itself: `ABS(DIFF(m1))` turns the latched XID gauge into "it changed".
    pub expression: Option<String>,
    pub evaluation_periods: i32,
    pub datapoints_to_alarm: i32,
    pub threshold: f64,
    pub comparison: Comparison,
    /// `notBreaching`: no GPU reporting is no alarm (nodes scale to zero).
    pub treat_missing_data: String,
    /// The topic notified on ALARM and on OK.
    pub actions: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// `mlobs/<cluster>/<namespace>/<pipeline>/`: the name prefix of one pipeline's alarms.
pub fn pipeline_prefix(e: &Effective) -> String {
    owner_prefix(&e.cluster_name, &e.pipeline_id())
}

/// The same prefix from the cluster and the `<namespace>/<pipeline>` id.
pub fn owner_prefix(cluster: &str, pipeline_id: &str) -> String {
    format!("{ALARM_NAME_PREFIX}{cluster}/{pipeline_id}/")
}

/// The ARN of an alarm of this account and region.
pub fn alarm_arn(e: &Effective, name: &str) -> String {
    format!(
        "arn:{}:cloudwatch:{}:{}:alarm:{name}",
        e.partition, e.region, e.account_id
    )
}

/// One alarm per enabled rule, notifying `topic_arn`.
pub fn alarms(e: &Effective, a: &EffAlerts, topic_arn: &str, tags: &BTreeMap<String, String>) -> Vec<AlarmPlan> {
    let dimensions: BTreeMap<String, String> = (a.alarm_dimensions.iter())
        .map(|d| (d.clone(), dimension_value(e, d)))
        .collect();
    (a.rules.iter())
        .map(|r| alarm(e, r, &dimensions, topic_arn, tags))
        .collect()
}

/// The value of a dimension whose value is known before any metric arrives.
fn dimension_value(e: &Effective, dimension: &str) -> String {
    match dimension {
        "k8s.cluster.name" => e.cluster_name.clone(),
        other => e.collector.resource_attributes.get(other).cloned().unwrap_or_default(),
    }
}

fn alarm(
    e: &Effective,
    r: &GpuRule,
    dimensions: &BTreeMap<String, String>,
    topic_arn: &str,
    tags: &BTreeMap<String, String>,
) -> AlarmPlan {
    let name = format!("{}{}", pipeline_prefix(e), r.kind.slug());
    let minutes = r.minutes.max(1) as i32;
    let (statistic, period, expression, periods, threshold, comparison) = match r.kind {
        // Any change of the last-XID value within a minute, on any GPU of the cluster.
        RuleKind::Xid => (
            Statistic::Maximum,
            PERIOD_SECONDS,
            Some("ABS(DIFF(m1))".to_string()),
            1,
            0.0,
            Comparison::GreaterThanThreshold,
        ),
        RuleKind::EccDoubleBit => (
            Statistic::Sum,
            ECC_PERIOD_SECONDS,
            None,
            1,
            0.0,
            Comparison::GreaterThanThreshold,
        ),
        // The hottest GPU of the cluster, above the threshold in each of N one-minute periods.
        RuleKind::Temperature => (
            Statistic::Maximum,
            PERIOD_SECONDS,
            None,
            minutes,
            r.threshold,
            Comparison::GreaterThanThreshold,
        ),
        // The busiest GPU reporting under the threshold for M minutes: every GPU of the cluster
        // idle. Per pod it is the PrometheusRule's job (EMF dimension values must be known here).
        RuleKind::IdleGpu => (
            Statistic::Maximum,
            PERIOD_SECONDS,
            None,
            minutes,
            r.threshold,
            Comparison::LessThanThreshold,
        ),
    };
    AlarmPlan {
        rule: r.kind,
        arn: alarm_arn(e, &name),
        name,
        description: format!("mlobs {}: {}", e.pipeline_id(), r.describe()),
        namespace: e.metrics.namespace.clone(),
        metric_name: r.kind.field().to_string(),
        dimensions: dimensions.clone(),
        statistic,
        period_seconds: period,
        expression,
        evaluation_periods: periods,
        datapoints_to_alarm: periods,
        threshold,
        comparison,
        treat_missing_data: "notBreaching".into(),
        actions: vec![topic_arn.to_string()],
        tags: tags.clone(),
    }
}

/// CloudWatch's decision for the newest evaluation window: `values` are the statistic of each
/// period, oldest first (`None`: no data). The expression, when set, is applied first (DIFF of
/// the first period has no predecessor: no data). The alarm fires when at least
/// `datapoints_to_alarm` of the last `evaluation_periods` breach; missing data does not breach.
pub fn breaches(a: &AlarmPlan, values: &[Option<f64>]) -> bool {
    let series: Vec<Option<f64>> = match a.expression.as_deref() {
        Some("ABS(DIFF(m1))") => std::iter::once(None)
            .chain(values.windows(2).map(|w| match (w[0], w[1]) {
                (Some(p), Some(c)) => Some((c - p).abs()),
                _ => None,
            }))
            .take(values.len())
            .collect(),
        Some(_) => return false,
        None => values.to_vec(),
    };
    let n = a.evaluation_periods.max(1) as usize;
    let window = &series[series.len().saturating_sub(n)..];
    let breaching = (window.iter())
        .filter(|v| v.is_some_and(|v| a.comparison.breaches(v, a.threshold)))
        .count();
    breaching >= a.datapoints_to_alarm.max(1) as usize
}
