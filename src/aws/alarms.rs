//! The GPU alarms: one PutMetricAlarm per planned alarm, observed with DescribeAlarms (one call
//! for the pipeline's name prefix), put back under `Correct` when changed outside mlobs; alarms
//! under the prefix that are no longer planned, and every alarm on deletion under `Delete`, go
//! with DeleteAlarms — only those whose tags say they are ours.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic, Tag,
};

use super::error::classify;
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::alerts::cloudwatch::AlarmPlan;

fn resource(name: &str) -> String {
    format!("alarm:{name}")
}

/// The settings of an alarm that mlobs compares, as strings, by field.
pub fn settings_of_plan(p: &AlarmPlan) -> BTreeMap<&'static str, String> {
    let dims: Vec<String> = p.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
    BTreeMap::from([
        ("namespace", p.namespace.clone()),
        ("metricName", p.metric_name.clone()),
        ("dimensions", dims.join(",")),
        ("statistic", p.statistic.as_str().to_string()),
        ("period", p.period_seconds.to_string()),
        ("expression", p.expression.clone().unwrap_or_default()),
        ("evaluationPeriods", p.evaluation_periods.to_string()),
        ("datapointsToAlarm", p.datapoints_to_alarm.to_string()),
        ("threshold", p.threshold.to_string()),
        ("comparisonOperator", p.comparison.as_str().to_string()),
        ("treatMissingData", p.treat_missing_data.clone()),
        ("alarmActions", p.actions.join(",")),
        ("okActions", p.actions.join(",")),
    ])
}

/// The same settings read back from DescribeAlarms (metric-math alarms keep the metric in
/// `Metrics`, not at the top level).
pub fn settings_of_alarm(a: &MetricAlarm) -> BTreeMap<&'static str, String> {
    let stat = (a.metrics()).iter().find_map(|q| q.metric_stat.as_ref()).cloned();
    let expression = (a.metrics().iter())
        .find_map(|q| q.expression.clone())
        .unwrap_or_default();
    let (namespace, metric_name, dims, statistic, period) = match &stat {
        Some(s) => {
            let m = s.metric.as_ref();
            (
                m.and_then(|m| m.namespace.clone()),
                m.and_then(|m| m.metric_name.clone()),
                m.map(|m| m.dimensions().to_vec()).unwrap_or_default(),
                s.stat.clone(),
                s.period,
            )
        }
        None => (
            a.namespace.clone(),
            a.metric_name.clone(),
            a.dimensions().to_vec(),
            a.statistic.as_ref().map(|s| s.as_str().to_string()),
            a.period,
        ),
    };
    let mut dims: Vec<String> = (dims.iter())
        .map(|d| format!("{}={}", d.name().unwrap_or_default(), d.value().unwrap_or_default()))
        .collect();
    dims.sort();
    let num = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
    BTreeMap::from([
        ("namespace", namespace.unwrap_or_default()),
        ("metricName", metric_name.unwrap_or_default()),
        ("dimensions", dims.join(",")),
        ("statistic", statistic.unwrap_or_default()),
        ("period", num(period)),
        ("expression", expression),
        ("evaluationPeriods", num(a.evaluation_periods)),
        ("datapointsToAlarm", num(a.datapoints_to_alarm)),
        ("threshold", a.threshold.map(|t| t.to_string()).unwrap_or_default()),
        (
            "comparisonOperator",
            a.comparison_operator
                .as_ref()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
        ),
        ("treatMissingData", a.treat_missing_data.clone().unwrap_or_default()),
        ("alarmActions", a.alarm_actions().join(",")),
        ("okActions", a.ok_actions().join(",")),
    ])
}

/// The differences between a planned alarm and the one AWS has.
pub fn diff(p: &AlarmPlan, a: &MetricAlarm) -> Vec<Drift> {
    let (want, have) = (settings_of_plan(p), settings_of_alarm(a));
    (want.iter())
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| {
            Drift::found(
                &resource(&p.name),
                k,
                v.clone(),
                have.get(k).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// Every alarm whose name starts with `prefix`, by name.
pub async fn observe(c: &AwsClients, prefix: &str) -> Result<BTreeMap<String, MetricAlarm>, AwsError> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = (c.cloudwatch.describe_alarms())
            .alarm_name_prefix(prefix)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| classify("DescribeAlarms", &resource(prefix), e))?;
        for a in page.metric_alarms() {
            if let Some(n) = &a.alarm_name {
                out.insert(n.clone(), a.clone());
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

async fn tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = (c.cloudwatch.list_tags_for_resource().resource_arn(arn).send().await)
        .map_err(|e| classify("ListTagsForResource", arn, e))?;
    Ok((out.tags().iter())
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

async fn put(c: &AwsClients, p: &AlarmPlan) -> Result<(), AwsError> {
    let dims: Vec<Dimension> = (p.dimensions.iter())
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let tags: Vec<Tag> = p
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    // A metric-math alarm names its metric inside `Metrics`; a plain one at the top level.
    let math = p.expression.as_ref().map(|expr| {
        let metric = (Metric::builder().namespace(&p.namespace))
            .metric_name(&p.metric_name)
            .set_dimensions(Some(dims.clone()))
            .build();
        let stat = (MetricStat::builder().metric(metric))
            .period(p.period_seconds)
            .stat(p.statistic.as_str())
            .build();
        let m1 = MetricDataQuery::builder()
            .id("m1")
            .metric_stat(stat)
            .return_data(false)
            .build();
        let e1 = (MetricDataQuery::builder().id("e1"))
            .expression(expr)
            .label(&p.metric_name)
            .return_data(true)
            .build();
        vec![m1, e1]
    });
    let plain = math.is_none();
    let sent = (c.cloudwatch.put_metric_alarm())
        .alarm_name(&p.name)
        .alarm_description(&p.description)
        .evaluation_periods(p.evaluation_periods)
        .datapoints_to_alarm(p.datapoints_to_alarm)
        .threshold(p.threshold)
        .comparison_operator(ComparisonOperator::from(p.comparison.as_str()))
        .treat_missing_data(&p.treat_missing_data)
        .actions_enabled(true)
        .set_alarm_actions(Some(p.actions.clone()))
        .set_ok_actions(Some(p.actions.clone()))
        .set_tags(Some(tags))
        .set_metrics(math)
        .set_namespace(plain.then(|| p.namespace.clone()))
        .set_metric_name(plain.then(|| p.metric_name.clone()))
        .set_dimensions(plain.then_some(dims))
        .set_statistic(plain.then(|| Statistic::from(p.statistic.as_str())))
        .set_period(plain.then_some(p.period_seconds))
        .send()
        .await;
    sent.map(drop)
        .map_err(|e| classify("PutMetricAlarm", &resource(&p.name), e))
}

/// Ensures the planned alarms under `prefix` and removes ours that are no longer planned.
/// Returns the drift found (alarms changed outside mlobs). An alarm of a planned name without our
/// tags is a `NameConflict` unless adoption is opted in.
pub async fn ensure(
    c: &AwsClients,
    prefix: &str,
    plans: &[AlarmPlan],
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
) -> Result<Vec<Drift>, AwsError> {
    let existing = observe(c, prefix).await?;
    let mut drifts = Vec::new();
    for p in plans {
        let Some(a) = existing.get(&p.name) else {
            put(c, p).await?;
            continue;
        };
        let found = diff(p, a);
        if found.is_empty() {
            continue;
        }
        if !(adopt || owner.owns_tags(&tags(c, &p.arn).await?)) {
            return Err(AwsError::NameConflict {
                resource: resource(&p.name),
            });
        }
        let correct = drift == DriftPolicy::Correct;
        if correct {
            put(c, p).await?;
        }
        drifts.extend(found.into_iter().map(|d| Drift {
            corrected: correct,
            ..d
        }));
    }
    let stale: Vec<&String> = existing
        .keys()
        .filter(|n| !plans.iter().any(|p| &p.name == *n))
        .collect();
    delete_ours(c, &existing, &stale, owner).await?;
    Ok(drifts)
}

async fn delete_ours(
    c: &AwsClients,
    existing: &BTreeMap<String, MetricAlarm>,
    names: &[&String],
    owner: &Owner,
) -> Result<usize, AwsError> {
    let mut ours = Vec::new();
    for n in names {
        let Some(arn) = existing.get(*n).and_then(|a| a.alarm_arn.as_deref()) else {
            continue;
        };
        if owner.owns_tags(&tags(c, arn).await?) {
            ours.push((*n).clone());
        }
    }
    // DeleteAlarms takes up to 100 names per call.
    for chunk in ours.chunks(100) {
        (c.cloudwatch.delete_alarms())
            .set_alarm_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| classify("DeleteAlarms", &resource(&chunk[0]), e))?;
    }
    Ok(ours.len())
}

/// Under `Delete`, deletes every alarm of ours under `prefix`; under `Retain` leaves them (they
/// keep notifying a retained topic). Returns how many were deleted.
pub async fn delete(c: &AwsClients, prefix: &str, owner: &Owner, policy: DeletionPolicy) -> Result<usize, AwsError> {
    if policy == DeletionPolicy::Retain {
        return Ok(0);
    }
    let existing = observe(c, prefix).await?;
    let names: Vec<&String> = existing.keys().collect();
    delete_ours(c, &existing, &names, owner).await
}
