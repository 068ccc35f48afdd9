//! AlertsReady: present only while alerts are enabled, part of Ready, and False with the AWS
//! reason when the topic or an alarm could not be ensured (the collector is not held back).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::aws::AwsError;

fn pipeline() -> MLObservabilityPipeline {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "generation": 3, "uid": "u1"},
        "spec": {"alerts": {}}
    }))
    .expect("pipeline")
}

fn ok(alerts_error: Option<AwsError>) -> AwsResult {
    AwsResult::Ok {
        out: Box::new(AwsOutcome {
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k1".into()),
            log_group_arns: vec!["a".into(), "b".into()],
            role_arn: Some("arn:aws:iam::123456789012:role/r".into()),
            alerts_topic_arn: alerts_error
                .is_none()
                .then(|| "arn:aws:sns:us-east-1:123456789012:t".into()),
            alarm_count: alerts_error.is_none().then_some(4),
            alerts_error,
            ..Default::default()
        }),
        ready: true,
    }
}

fn status(alerts: Option<&str>, aws: AwsResult) -> MLObservabilityPipelineStatus {
    let p = pipeline();
    let mut o = Observed::new(&p);
    o.alerts = alerts.map(String::from);
    o.aws = Some(aws);
    o.into_status(&p, &Default::default(), Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

#[test]
fn alerts_ready_reports_the_alarms_and_topic_and_records_them_in_status() {
    let s = status(
        Some("4 CloudWatch alarms notify t; the PrometheusRule is applied"),
        ok(None),
    );
    let c = conditions::find(&s.conditions, ty::ALERTS_READY).expect("AlertsReady");
    assert_eq!((c.status.as_str(), c.reason.as_str()), (st::TRUE, reason::RECONCILED));
    assert!(c.message.starts_with("4 CloudWatch alarms"), "{}", c.message);
    let aws = s.aws.expect("aws status");
    assert_eq!(aws.alarm_count, Some(4));
    assert_eq!(
        aws.alerts_topic_arn.as_deref(),
        Some("arn:aws:sns:us-east-1:123456789012:t")
    );
}

#[test]
fn failed_alerts_make_alerts_ready_and_ready_false_with_the_aws_reason() {
    let e = AwsError::Missing {
        resource: "snsTopic:arn:aws:sns:us-east-1:123456789012:gone".into(),
    };
    let s = status(Some("4 CloudWatch alarms notify gone"), ok(Some(e.clone())));
    let c = conditions::find(&s.conditions, ty::ALERTS_READY).expect("AlertsReady");
    assert_eq!((c.status.as_str(), c.reason.as_str()), (st::FALSE, e.reason().as_str()));
    assert!(c.message.contains("gone"), "{}", c.message);
    // The steps the collector needs are ready all the same.
    let iam = conditions::find(&s.conditions, ty::IAM_ROLE_READY).expect("IamRoleReady");
    assert_eq!(iam.status, st::TRUE);
    let ready = conditions::find(&s.conditions, ty::READY).expect("Ready");
    assert_eq!(ready.status, st::FALSE);
}

#[test]
fn without_alerts_there_is_no_alerts_ready_condition() {
    let s = status(Some("on"), ok(None));
    assert!(conditions::find(&s.conditions, ty::ALERTS_READY).is_some());
    let p = pipeline();
    let mut o = Observed::new(&p);
    o.aws = Some(ok(None));
    let off = o.into_status(&p, &s, Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    assert!(conditions::find(&off.conditions, ty::ALERTS_READY).is_none());
}
