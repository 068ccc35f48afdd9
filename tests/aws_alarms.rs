//! The alerts against moto: an SNS topic encrypted with the pipeline's key and one CloudWatch
//! alarm per rule, created after the key; a second ensure writes nothing; an alarm changed
//! outside mlobs is put back (Correct) or only reported (Report); a rule switched off loses its
//! alarm; deletion per deletionPolicy, never touching a user's topic or an alarm not ours.

mod support;

use aws_sdk_cloudwatch::types::ComparisonOperator;
use mlobs::aws::AwsClients;
use mlobs::aws::apply::{ApplyOptions, delete_all, ensure_all};
use mlobs::crd::{DeletionPolicy, DriftPolicy};
use mlobs::desired::aws_plan::AwsPlan;
use mlobs::desired::effective::Effective;
use serde_json::{Value, json};
use support::aws_pipeline::{self, plan_and_opts};
use support::moto;

fn effective_with(cluster: &str, extra: Value) -> Effective {
    aws_pipeline::effective(cluster, "train", extra)
}

fn effective(cluster: &str, alerts: Value) -> Effective {
    effective_with(cluster, json!({"alerts": alerts}))
}

/// `delete_all` of the plan with the key an ensure returned.
async fn delete(c: &AwsClients, plan: &AwsPlan, opts: &ApplyOptions, key: Option<&str>, policy: DeletionPolicy) {
    delete_all(c, plan, &opts.owner, key, policy).await.expect("delete");
}

async fn alarm_names(c: &AwsClients, prefix: &str) -> Vec<String> {
    let out = c
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(prefix)
        .send()
        .await
        .expect("describe");
    out.metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_name.clone())
        .collect()
}

async fn threshold(c: &AwsClients, name: &str) -> Option<f64> {
    let out = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .expect("describe");
    out.metric_alarms().first().and_then(|a| a.threshold)
}

#[tokio::test]
async fn alarms_and_an_encrypted_topic_are_created_with_the_key_and_a_second_ensure_writes_nothing() {
    let e = effective(&moto::unique("alarms"), json!({}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let a = plan.alerts.clone().expect("alerts planned");
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert_eq!(out.alerts_topic_arn.as_deref(), Some(a.topic.arn.as_str()));
    assert_eq!(out.alarm_count, Some(4));
    let mut names = alarm_names(&c, &a.alarm_prefix).await;
    names.sort();
    let slugs: Vec<&str> = names.iter().filter_map(|n| n.rsplit('/').next()).collect();
    assert_eq!(slugs, ["ecc-double-bit", "gpu-temperature", "idle-gpu", "xid"]);

    let attrs = c
        .sns
        .get_topic_attributes()
        .topic_arn(&a.topic.arn)
        .send()
        .await
        .expect("topic");
    let key = attrs.attributes().and_then(|m| m.get("KmsMasterKeyId")).cloned();
    assert_eq!(key, out.kms_key_arn, "the topic is encrypted with the pipeline's key");
    let tags = c
        .sns
        .list_tags_for_resource()
        .resource_arn(&a.topic.arn)
        .send()
        .await
        .expect("tags");
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key == "mlobs.io/pipeline" && t.value == "team-a/train")
    );

    let xid = c
        .cloudwatch
        .describe_alarms()
        .alarm_names(format!("{}xid", a.alarm_prefix))
        .send()
        .await
        .expect("xid");
    let xid = xid.metric_alarms().first().cloned().expect("the xid alarm");
    let expr = xid.metrics().iter().find_map(|q| q.expression.clone());
    assert_eq!(expr.as_deref(), Some("ABS(DIFF(m1))"));
    assert_eq!(xid.alarm_actions(), std::slice::from_ref(&a.topic.arn));
    let arn = xid.alarm_arn.clone().expect("arn");
    let t = c
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .expect("alarm tags");
    assert!(
        t.tags()
            .iter()
            .any(|t| t.key() == Some("mlobs.io/pipeline") && t.value() == Some("team-a/train"))
    );

    // Nothing changed since: a second ensure reads (one DescribeAlarms) and writes nothing.
    let again = moto::clients().await;
    let out2 = ensure_all(&again, &plan, &opts).await.expect("re-run");
    assert!(out2.drift.is_empty(), "{:?}", out2.drift);
    assert_eq!(again.calls.mutating(), 0, "{:?}", again.calls.snapshot());
    assert_eq!(again.calls.of("DescribeAlarms"), 1);
    assert_eq!(again.calls.of("PutMetricAlarm"), 0);
}

#[tokio::test]
async fn a_threshold_changed_outside_mlobs_is_put_back_under_correct_and_only_reported_under_report() {
    let e = effective(&moto::unique("alarmdrift"), json!({}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let a = plan.alerts.clone().expect("alerts");
    let c = moto::clients().await;
    ensure_all(&c, &plan, &opts).await.expect("ensure");
    let temp = a
        .alarms
        .iter()
        .find(|x| x.name.ends_with("gpu-temperature"))
        .expect("temperature alarm");
    let tamper = || async {
        (c.cloudwatch.put_metric_alarm())
            .alarm_name(&temp.name)
            .namespace(&temp.namespace)
            .metric_name(&temp.metric_name)
            .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .period(60)
            .evaluation_periods(5)
            .threshold(99.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .expect("changed outside mlobs");
    };
    tamper().await;

    let (_, report) = plan_and_opts(&e, DriftPolicy::Report);
    let seen = moto::clients().await;
    let out = ensure_all(&seen, &plan, &report).await.expect("report");
    let d = out
        .drift
        .iter()
        .find(|d| d.field == "threshold")
        .expect("threshold drift");
    assert_eq!(
        (d.desired.as_str(), d.actual.as_str(), d.corrected),
        ("85", "99", false)
    );
    assert_eq!(seen.calls.of("PutMetricAlarm"), 0);
    assert_eq!(threshold(&c, &temp.name).await, Some(99.0));

    let fix = moto::clients().await;
    let out = ensure_all(&fix, &plan, &opts).await.expect("correct");
    assert!(
        out.drift.iter().any(|d| d.field == "threshold" && d.corrected),
        "{:?}",
        out.drift
    );
    assert_eq!(fix.calls.of("PutMetricAlarm"), 1, "only the changed alarm is put");
    assert_eq!(threshold(&c, &temp.name).await, Some(85.0));
}

#[tokio::test]
async fn a_rule_switched_off_loses_its_alarm_and_a_foreign_alarm_under_the_prefix_stays() {
    let cluster = moto::unique("alarmoff");
    let e = effective(&cluster, json!({}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let a = plan.alerts.clone().expect("alerts");
    let c = moto::clients().await;
    ensure_all(&c, &plan, &opts).await.expect("ensure");
    let foreign = format!("{}hand-made", a.alarm_prefix);
    (c.cloudwatch.put_metric_alarm())
        .alarm_name(&foreign)
        .namespace("ML/GPU")
        .metric_name("DCGM_FI_DEV_POWER_USAGE")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Maximum)
        .period(60)
        .evaluation_periods(1)
        .threshold(400.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("a hand-made alarm without our tags");

    let off = effective(&cluster, json!({"rules": {"idleGpu": {"enabled": false}}}));
    let (plan2, _) = plan_and_opts(&off, DriftPolicy::Correct);
    let out = ensure_all(&c, &plan2, &opts)
        .await
        .expect("ensure without the idle rule");
    assert_eq!(out.alarm_count, Some(3));
    let names = alarm_names(&c, &a.alarm_prefix).await;
    assert!(!names.iter().any(|n| n.ends_with("idle-gpu")), "{names:?}");
    assert!(names.contains(&foreign), "an alarm without our tags is never deleted");
}

#[tokio::test]
async fn deletion_removes_alarms_and_the_created_topic_under_delete_and_keeps_them_under_retain() {
    let c = moto::clients().await;
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        let e = effective(&moto::unique("alarmdel"), json!({}));
        let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
        let a = plan.alerts.clone().expect("alerts");
        let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
        delete(&c, &plan, &opts, out.kms_key_id.as_deref(), policy).await;
        let (alarms, topic) = (
            alarm_names(&c, &a.alarm_prefix).await.len(),
            c.sns
                .get_topic_attributes()
                .topic_arn(&a.topic.arn)
                .send()
                .await
                .is_ok(),
        );
        match policy {
            DeletionPolicy::Retain => assert_eq!((alarms, topic), (4, true)),
            DeletionPolicy::Delete => assert_eq!((alarms, topic), (0, false)),
        }
        // Idempotent: a second deletion finds nothing more to do and succeeds.
        delete_all(&c, &plan, &opts.owner, None, policy)
            .await
            .expect("delete again");
    }
}

#[tokio::test]
async fn a_given_topic_is_used_as_it_is_never_deleted_and_must_exist() {
    let c = moto::clients().await;
    let made = c
        .sns
        .create_topic()
        .name(moto::unique("ops"))
        .send()
        .await
        .expect("a user's topic");
    let arn = made.topic_arn.clone().expect("arn");
    let e = effective(&moto::unique("alarmgiven"), json!({"sns": {"topicArn": arn}}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert_eq!(out.alerts_topic_arn.as_deref(), Some(arn.as_str()));
    delete(&c, &plan, &opts, out.kms_key_id.as_deref(), DeletionPolicy::Delete).await;
    assert!(
        c.sns.get_topic_attributes().topic_arn(&arn).send().await.is_ok(),
        "a user's topic stays"
    );

    let gone = effective(
        &moto::unique("alarmgone"),
        json!({"sns": {"topicArn": "arn:aws:sns:us-east-1:123456789012:absent"}}),
    );
    let (plan, opts) = plan_and_opts(&gone, DriftPolicy::Correct);
    let out = ensure_all(&c, &plan, &opts).await.expect("the rest is ensured");
    assert!(out.ready(&plan), "a missing topic does not hold the collector back");
    let err = out.alerts_error.expect("a missing topic");
    assert!(err.to_string().contains("absent"), "{err}");
    assert_eq!(out.alarm_count, None);
}

#[tokio::test]
async fn the_cloudwatch_dashboard_is_put_once_put_back_after_an_edit_and_deleted_under_delete() {
    let e = effective_with(&moto::unique("dash"), json!({"dashboards": {"grafana": false}}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let dash = plan.dashboard.clone().expect("a dashboard planned");
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert_eq!(out.dashboard_name.as_deref(), Some(dash.name.as_str()));
    let body = mlobs::aws::dashboards::observe(&c, &dash.name)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(mlobs::desired::canonical_json(body), dash.body);

    let again = moto::clients().await;
    ensure_all(&again, &plan, &opts).await.expect("re-run");
    assert_eq!(again.calls.of("PutDashboard"), 0, "{:?}", again.calls.snapshot());
    assert_eq!(again.calls.mutating(), 0);

    (c.cloudwatch.put_dashboard().dashboard_name(&dash.name))
        .dashboard_body(r#"{"widgets":[]}"#)
        .send()
        .await
        .expect("edited outside mlobs");
    let fix = moto::clients().await;
    let out = ensure_all(&fix, &plan, &opts).await.expect("correct");
    assert!(
        out.drift.iter().any(|d| d.field == "dashboardBody" && d.corrected),
        "{:?}",
        out.drift
    );
    assert_eq!(fix.calls.of("PutDashboard"), 1);

    delete(&c, &plan, &opts, out.kms_key_id.as_deref(), DeletionPolicy::Delete).await;
    assert!(
        mlobs::aws::dashboards::observe(&c, &dash.name)
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn switching_the_cloudwatch_dashboard_off_deletes_the_recorded_one() {
    let cluster = moto::unique("dashoff");
    let on = effective_with(&cluster, json!({"dashboards": {"grafana": false}}));
    let (plan, opts) = plan_and_opts(&on, DriftPolicy::Correct);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let name = out.dashboard_name.clone().expect("recorded");

    let off = effective_with(&cluster, json!({"dashboards": {"grafana": false, "cloudwatch": false}}));
    let (plan_off, mut opts_off) = plan_and_opts(&off, DriftPolicy::Correct);
    assert!(plan_off.dashboard.is_none());
    // Without a record nothing is read or deleted (a dashboard mlobs never made is not its own).
    let quiet = moto::clients().await;
    ensure_all(&quiet, &plan_off, &opts_off).await.expect("ensure off");
    assert_eq!(quiet.calls.of("GetDashboard") + quiet.calls.of("DeleteDashboards"), 0);
    assert!(mlobs::aws::dashboards::observe(&c, &name).await.expect("get").is_some());

    opts_off.dashboard_recorded = Some(name.clone());
    let out = ensure_all(&c, &plan_off, &opts_off).await.expect("ensure off");
    assert!(out.alerts_error.is_none(), "{:?}", out.alerts_error);
    assert_eq!(out.dashboard_name, None, "forgotten once deleted");
    assert!(mlobs::aws::dashboards::observe(&c, &name).await.expect("get").is_none());
}

#[tokio::test]
async fn switching_alerts_off_deletes_the_recorded_alarms_and_keeps_the_topic() {
    let cluster = moto::unique("alarmsoff");
    let e = effective(&cluster, json!({}));
    let (plan, opts) = plan_and_opts(&e, DriftPolicy::Correct);
    let a = plan.alerts.clone().expect("alerts");
    let c = moto::clients().await;
    ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert_eq!(alarm_names(&c, &a.alarm_prefix).await.len(), 4);

    let off = effective(&cluster, json!({"enabled": false}));
    let (plan_off, mut opts_off) = plan_and_opts(&off, DriftPolicy::Correct);
    assert!(plan_off.alerts.is_none());
    let quiet = moto::clients().await;
    ensure_all(&quiet, &plan_off, &opts_off)
        .await
        .expect("ensure without alerts");
    assert_eq!(
        quiet.calls.of("DescribeAlarms"),
        0,
        "not read unless status records alarms"
    );
    opts_off.alarms_recorded = true;
    let out = ensure_all(&c, &plan_off, &opts_off)
        .await
        .expect("ensure without alerts");
    assert!(out.alerts_error.is_none(), "{:?}", out.alerts_error);
    assert!(alarm_names(&c, &a.alarm_prefix).await.is_empty());
    assert!(
        c.sns
            .get_topic_attributes()
            .topic_arn(&a.topic.arn)
            .send()
            .await
            .is_ok(),
        "the topic stays"
    );
}
