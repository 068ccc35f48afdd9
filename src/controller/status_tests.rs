use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::aws::AwsError;

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
}

fn pipeline(status: Option<MLObservabilityPipelineStatus>) -> MLObservabilityPipeline {
    let mut p: MLObservabilityPipeline = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "generation": 3, "uid": "u1"},
        "spec": {}
    }))
    .expect("pipeline");
    p.status = status;
    p
}

fn outcome(drift: Vec<Drift>) -> AwsResult {
    AwsResult::Ok {
        out: Box::new(AwsOutcome {
            amp_workspace: None,
            kms_key_id: Some("k1".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k1".into()),
            log_group_arns: vec!["a".into(), "b".into()],
            archive_bucket_arn: None,
            hot_path_stream_arn: None,
            hot_path_role_arn: None,
            hot_path_association_id: None,
            role_arn: Some("arn:aws:iam::123456789012:role/r".into()),
            pod_identity_association_id: None,
            drift,
            ..Default::default()
        }),
        ready: true,
    }
}

fn daemon_set(desired: i32, ready: i32) -> DaemonSet {
    DaemonSet {
        metadata: kube::api::ObjectMeta {
            generation: Some(1),
            ..Default::default()
        },
        status: Some(DaemonSetStatus {
            desired_number_scheduled: desired,
            number_ready: ready,
            updated_number_scheduled: Some(desired),
            observed_generation: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cond<'a>(
    s: &'a MLObservabilityPipelineStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::find(&s.conditions, t).unwrap_or_else(|| panic!("no {t} condition"))
}

fn observe(p: &MLObservabilityPipeline, aws: Option<AwsResult>, ds: Option<DaemonSet>) -> Observed {
    let mut o = Observed::new(p);
    o.aws = aws;
    if let Some(ds) = ds {
        o.gpu_nodes = ds.status.as_ref().map_or(0, |s| s.desired_number_scheduled);
        o.no_gpu_nodes = o.gpu_nodes == 0;
        o.collector(&ds);
    }
    o
}

fn source(nodes_with_exporter: usize) -> MetricsSource {
    MetricsSource {
        namespace: "gpu-operator".into(),
        selector: "app=nvidia-dcgm-exporter".into(),
        nodes_with_exporter,
    }
}

#[test]
fn no_gpu_node_is_ready_with_a_message_not_rolling_out_forever() {
    let p = pipeline(None);
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(0, 0)));
    o.metrics_source = Some(source(0));
    let s = o.into_status(&p, &Default::default(), at(1));
    let c = cond(&s, ty::COLLECTOR_READY);
    assert_eq!((c.status.as_str(), c.reason.as_str()), (st::TRUE, reason::NO_GPU_NODES));
    assert!(c.message.contains("nothing runs yet"), "{}", c.message);
    assert_eq!(cond(&s, ty::METRICS_SOURCE_READY).status, st::TRUE);
    assert_eq!(cond(&s, ty::READY).status, st::TRUE);
    assert!(cond(&s, ty::READY).message.contains("nothing runs yet"));
    assert_eq!(cond(&s, "Reconciling").status, st::FALSE);
}

/// CI: two GPU nodes matched, both went NotReady (kwok) and got the `unreachable` NoSchedule
/// taint, and the DaemonSet controller counted 0 nodes for the collector: "0/0 GPU nodes run a
/// ready collector" was CollectorReady True while nothing collected.
#[test]
fn matching_gpu_nodes_the_collector_is_scheduled_on_none_of_is_not_ready() {
    let p = pipeline(None);
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(0, 0)));
    (o.gpu_nodes, o.no_gpu_nodes) = (2, false);
    o.metrics_source = Some(source(2));
    assert!(!o.collector_all_ready());
    let s = o.into_status(&p, &Default::default(), at(1));
    let c = cond(&s, ty::COLLECTOR_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (st::FALSE, reason::COLLECTOR_UNSCHEDULABLE)
    );
    assert!(
        c.message.starts_with("2 GPU node(s) match") && c.message.contains("taint"),
        "{}",
        c.message
    );
    assert_eq!(cond(&s, ty::READY).status, st::FALSE);
    // Once the DaemonSet runs on them again, it is ready as before.
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    o.metrics_source = Some(source(2));
    let s = o.into_status(&p, &Default::default(), at(2));
    assert_eq!(cond(&s, ty::COLLECTOR_READY).status, st::TRUE);
}

#[test]
fn no_exporter_pod_on_the_gpu_nodes_is_not_ready() {
    let p = pipeline(None);
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 4)));
    o.metrics_source = Some(source(0));
    let s = o.into_status(&p, &Default::default(), at(1));
    let c = cond(&s, ty::METRICS_SOURCE_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (st::FALSE, reason::NO_EXPORTER_PODS)
    );
    assert!(c.message.contains("app=nvidia-dcgm-exporter") && c.message.contains("gpu-operator"));
    assert_eq!(cond(&s, ty::READY).reason, reason::NO_EXPORTER_PODS);

    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 4)));
    o.metrics_source = Some(source(3));
    let s = o.into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&s, ty::METRICS_SOURCE_READY).status, st::TRUE);
    assert!(cond(&s, ty::METRICS_SOURCE_READY).message.starts_with("3/4"));
    assert_eq!(cond(&s, ty::READY).status, st::TRUE);
}

#[test]
fn a_pod_security_rejection_is_a_terminal_collector_condition() {
    let p = pipeline(None);
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 0)));
    o.collector_blocked = Some((
        reason::POD_SECURITY_FORBIDDEN,
        "namespace team-b enforces Pod Security \"baseline\"".into(),
    ));
    let s = o.into_status(&p, &Default::default(), at(1));
    let c = cond(&s, ty::COLLECTOR_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (st::FALSE, reason::POD_SECURITY_FORBIDDEN)
    );
    assert_eq!(cond(&s, ty::READY).reason, reason::POD_SECURITY_FORBIDDEN);
    assert_eq!(cond(&s, "Stalled").status, st::TRUE, "waits for a change, not a retry");
}

#[test]
fn ready_only_when_every_child_is_ready_and_an_unchanged_observation_changes_nothing() {
    let p = pipeline(None);
    let rolling =
        observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 3))).into_status(&p, &Default::default(), at(10));
    assert_eq!(cond(&rolling, ty::READY).status, st::FALSE);
    assert_eq!(cond(&rolling, ty::READY).reason, reason::ROLLING_OUT);
    assert_eq!(rolling.observed_generation, Some(3));

    let p = pipeline(Some(rolling.clone()));
    let ready = observe(&p, None, Some(daemon_set(4, 4))).into_status(&p, &rolling, at(20));
    assert_eq!(cond(&ready, ty::READY).status, st::TRUE);
    assert_eq!(
        cond(&ready, ty::KMS_KEY_READY).status,
        st::TRUE,
        "kept from the last AWS ensure"
    );

    let p = pipeline(Some(ready.clone()));
    let again = observe(&p, None, Some(daemon_set(4, 4))).into_status(&p, &ready, at(30));
    assert_eq!(again, ready, "same observation, later clock: nothing to write");
}

#[test]
fn a_failed_aws_step_marks_later_steps_and_the_collector_as_waiting() {
    let p = pipeline(None);
    let e = StepError {
        step: Step::LogGroups,
        error: AwsError::AccessDenied {
            operation: "CreateLogGroup".into(),
            resource: "logGroup:/x".into(),
            code: "AccessDeniedException".into(),
            message: "no".into(),
        },
        partial: Box::new(AwsOutcome {
            kms_key_arn: Some("arn:k".into()),
            ..Default::default()
        }),
    };
    let s = observe(&p, Some(AwsResult::Failed(Box::new(e))), None).into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&s, ty::KMS_KEY_READY).status, st::TRUE);
    assert_eq!(cond(&s, ty::LOG_GROUPS_READY).reason, "AccessDenied");
    assert_eq!(cond(&s, ty::IAM_ROLE_READY).reason, reason::WAITING_FOR_AWS);
    assert_eq!(cond(&s, ty::COLLECTOR_READY).reason, reason::WAITING_FOR_AWS);
    assert_eq!(cond(&s, ty::READY).reason, "AccessDenied");
    assert_eq!(
        s.aws.and_then(|a| a.kms_key_arn).as_deref(),
        Some("arn:k"),
        "the created key is recorded"
    );
}

#[test]
fn reported_drift_stays_open_with_its_first_detection_time_until_it_is_gone() {
    let d = Drift {
        resource: "logGroup:/x".into(),
        field: "retentionInDays".into(),
        desired: "30".into(),
        actual: "7".into(),
        corrected: false,
    };
    let p = pipeline(None);
    let first = observe(&p, Some(outcome(vec![d.clone()])), None).into_status(&p, &Default::default(), at(100));
    assert_eq!(cond(&first, ty::DRIFTED).status, st::TRUE);
    assert_eq!(first.drift.len(), 1);

    let p = pipeline(Some(first.clone()));
    let second = observe(&p, Some(outcome(vec![d])), None).into_status(&p, &first, at(200));
    assert_eq!(
        second.drift, first.drift,
        "same drift again: same record, first detection time"
    );

    let p = pipeline(Some(second.clone()));
    let gone = observe(&p, Some(outcome(vec![])), None).into_status(&p, &second, at(300));
    assert_eq!(cond(&gone, ty::DRIFTED).status, st::FALSE);
    assert!(gone.drift.is_empty());
}

#[test]
fn corrected_drift_is_history_and_does_not_open_drifted() {
    let d = Drift {
        resource: "DaemonSet/team-a/mlobs-train".into(),
        field: "spec.template.spec.containers[0].image".into(),
        desired: "a".into(),
        actual: "b".into(),
        corrected: true,
    };
    let p = pipeline(None);
    let mut o = observe(&p, None, None);
    o.k8s_drift = vec![d; MAX_DRIFT_RECORDS + 5];
    let s = o.into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&s, ty::DRIFTED).status, st::FALSE);
    assert_eq!(s.drift.len(), MAX_DRIFT_RECORDS, "bounded");
    assert!(s.drift.iter().all(|r| r.action.as_deref() == Some("Corrected")));
}

#[test]
fn a_violation_blocks_readiness_and_names_the_rule() {
    let p = pipeline(None);
    let mut o = observe(&p, None, None);
    o.violations = vec!["spec.metrics.dcgm.metrics[0]: not allowed [policy p rule metrics.allowed]".into()];
    let s = o.into_status(&p, &Default::default(), at(1));
    let c = cond(&s, ty::POLICY_COMPLIANT);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (st::FALSE, reason::POLICY_VIOLATION)
    );
    assert!(c.message.contains("metrics.allowed"));
    assert_eq!(cond(&s, ty::READY).reason, reason::POLICY_VIOLATION);
}

#[test]
fn kstatus_conditions_follow_ready_stalled_when_terminal_reconciling_otherwise() {
    let p = pipeline(None);
    let rolling =
        observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 3))).into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&rolling, "Reconciling").status, st::TRUE);
    assert_eq!(cond(&rolling, "Stalled").status, st::FALSE);

    let e = StepError {
        step: Step::IamRole,
        error: AwsError::AccessDenied {
            operation: "CreateRole".into(),
            resource: "iamRole:r".into(),
            code: "AccessDenied".into(),
            message: "no".into(),
        },
        partial: Box::default(),
    };
    let denied = observe(&p, Some(AwsResult::Failed(Box::new(e))), None).into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&denied, "Stalled").status, st::TRUE);
    assert_eq!(cond(&denied, "Stalled").reason, "AccessDenied");
    assert_eq!(cond(&denied, "Reconciling").status, st::FALSE);

    let ready = observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 4))).into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&ready, "Reconciling").status, st::FALSE);
    assert_eq!(cond(&ready, "Stalled").status, st::FALSE);
}

#[test]
fn a_terminal_reason_is_announced_once_when_it_starts() {
    let p = pipeline(None);
    let mut o = observe(&p, None, None);
    o.blocked(
        reason::POLICY_NOT_FOUND,
        "spec.policyRef: GpuTelemetryPolicy \"x\" does not exist".into(),
    );
    let stalled = o.clone().into_status(&p, &Default::default(), at(1));
    let (r, m) = became_stalled(&Default::default(), &stalled).expect("announced");
    assert_eq!(r.as_str(), reason::POLICY_NOT_FOUND);
    assert!(m.contains("spec.policyRef"), "{m}");
    let p = pipeline(Some(stalled.clone()));
    let again = o.into_status(&p, &stalled, at(2));
    assert_eq!(became_stalled(&stalled, &again), None, "not again while it lasts");
    let rolling =
        observe(&p, Some(outcome(vec![])), Some(daemon_set(4, 3))).into_status(&p, &Default::default(), at(3));
    assert_eq!(
        became_stalled(&Default::default(), &rolling),
        None,
        "RollingOut is not terminal"
    );
}

fn flow_read(newest_s: Option<i64>) -> super::dataflow::DataFlowObs {
    use super::dataflow::{DataFlowObs, GroupReading, Read, Signal};
    DataFlowObs {
        read: Read::Resync,
        grace_ms: 60_000,
        result: Ok(vec![GroupReading {
            signal: Signal::Logs,
            group: "/aws/eks/c/team-a/train/logs".into(),
            newest_ms: newest_s.map(|s| s * 1000),
        }]),
    }
}

#[test]
fn data_not_flowing_is_informative_and_leaves_ready_and_kstatus_alone() {
    let p = pipeline(None);
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    o.metrics_source = Some(source(2));
    let s = o.into_status(&p, &Default::default(), at(100));
    assert_eq!(cond(&s, ty::DATA_FLOWING).reason, reason::WAITING_FOR_DATA.to_string());
    let p = pipeline(Some(s.clone()));
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    o.metrics_source = Some(source(2));
    o.data_flow = Some(flow_read(Some(5)));
    let s = o.into_status(&p, &s, at(10_000));
    let c = cond(&s, ty::DATA_FLOWING);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (st::FALSE, reason::NO_RECENT_LOGS)
    );
    assert_eq!(cond(&s, ty::READY).status, st::TRUE, "DataFlowing is not part of Ready");
    assert_eq!(cond(&s, "Stalled").status, st::FALSE);
    assert_eq!(cond(&s, "Reconciling").status, st::FALSE);
    // Reported with the other conditions, in ALL's order.
    let order: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    let drifted = order.iter().position(|t| *t == ty::DRIFTED);
    assert_eq!(
        order.iter().position(|t| *t == ty::DATA_FLOWING),
        drifted.map(|i| i + 1),
        "{order:?}"
    );
}

#[test]
fn the_cost_estimate_keeps_the_recorded_event_times() {
    let p = pipeline(None);
    let estimate = || {
        let fleet = crate::desired::cost::Fleet {
            nodes: 2,
            instance_type: "p4d.24xlarge".into(),
            gpus_per_node: None,
        };
        crate::desired::cost::estimate(
            &crate::desired::effective::test_fixture(),
            &fleet,
            &Default::default(),
            None,
        )
        .ok()
    };
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    o.estimate = estimate();
    o.data_flow = Some(flow_read(Some(95)));
    let s = o.into_status(&p, &Default::default(), at(100));
    let t = s.telemetry.clone().expect("telemetry");
    assert!(t.total_series > 0);
    assert_eq!(t.last_log_event_time.as_deref(), Some("1970-01-01T00:01:35Z"));
    // The next reconcile recomputes the estimate without reading the streams.
    let p = pipeline(Some(s.clone()));
    let mut o = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    o.estimate = estimate();
    let again = o.into_status(&p, &s, at(200));
    assert_eq!(again.telemetry, s.telemetry);
    assert_eq!(again, s, "an unchanged observation changes nothing");
}

#[test]
fn hot_path_ready_is_part_of_ready_only_while_the_hot_path_is_on() {
    let p = pipeline(None);
    let mut ok = outcome(vec![]);
    if let AwsResult::Ok { out, .. } = &mut ok {
        out.hot_path_stream_arn = Some("arn:aws:kinesis:us-east-1:123456789012:stream/s".into());
        out.hot_path_role_arn = Some("arn:aws:iam::123456789012:role/fluent-bit".into());
    }
    let mut on = observe(&p, Some(ok), Some(daemon_set(2, 2)));
    on.hot_path = Some("on-demand".into());
    on.metrics_source = Some(source(2));
    let s = on.into_status(&p, &Default::default(), at(1));
    assert_eq!(cond(&s, ty::HOT_PATH_READY).status, st::TRUE);
    assert!(cond(&s, ty::HOT_PATH_READY).message.starts_with("arn:aws:kinesis:"));
    assert_eq!(cond(&s, ty::READY).status, st::TRUE, "{:?}", s.conditions);
    assert_eq!(
        s.aws.as_ref().and_then(|a| a.hot_path_stream_arn.as_deref()),
        Some("arn:aws:kinesis:us-east-1:123456789012:stream/s")
    );
    // Recorded once created with its policy: a later ensure tells a create to finish by it.
    assert_eq!(
        s.aws.as_ref().and_then(|a| a.hot_path_role_arn.as_deref()),
        Some("arn:aws:iam::123456789012:role/fluent-bit")
    );
    let json = serde_json::to_value(&s).expect("status JSON");
    assert_eq!(
        json["aws"]["hotPathRoleArn"],
        "arn:aws:iam::123456789012:role/fluent-bit"
    );

    // The stream's step fails: HotPathReady and Ready say why, the role after it waits.
    let e = StepError {
        step: Step::HotPath,
        error: AwsError::Retryable {
            operation: "DescribeStreamSummary".into(),
            resource: "stream:s".into(),
            code: "StreamNotActive".into(),
            message: "the stream is CREATING".into(),
        },
        partial: Box::default(),
    };
    let mut failed = observe(&p, Some(AwsResult::Failed(Box::new(e))), None);
    failed.hot_path = Some("on-demand".into());
    let f = failed.into_status(&p, &s, at(2));
    assert_eq!(cond(&f, ty::HOT_PATH_READY).reason, "AwsRetryable");
    assert_eq!(cond(&f, ty::IAM_ROLE_READY).reason, reason::WAITING_FOR_AWS);
    assert_eq!(cond(&f, ty::READY).status, st::FALSE);

    // Turned off: the condition goes, and Ready no longer waits for it.
    let mut off = observe(&p, Some(outcome(vec![])), Some(daemon_set(2, 2)));
    off.metrics_source = Some(source(2));
    let o = off.into_status(&p, &f, at(3));
    assert!(conditions::find(&o.conditions, ty::HOT_PATH_READY).is_none());
    assert_eq!(o.aws.as_ref().and_then(|a| a.hot_path_stream_arn.clone()), None);
    assert_eq!(o.aws.as_ref().and_then(|a| a.hot_path_role_arn.clone()), None);
    // Written as null, so the merge patch removes what was recorded.
    let json = serde_json::to_value(&o).expect("status JSON");
    assert!(json["aws"]["hotPathRoleArn"].is_null() && json["aws"].get("hotPathRoleArn").is_some());
    assert_eq!(cond(&o, ty::READY).status, st::TRUE, "{:?}", o.conditions);
}
