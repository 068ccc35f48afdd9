//! Each decision of the plan step, without any server: the plan is a function of the pipeline and
//! what the dereference step read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node};
use serde_json::{Value, json};

use super::*;
use crate::controller::resync;
use crate::crd::GpuTelemetryPolicy;
use crate::crd::conditions::{pipeline as pty, status as st};

const OIDC: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE";

/// A pipeline with `spec` over an IRSA identity (the one setting the operator cannot default).
fn pipeline(spec: Value) -> MLObservabilityPipeline {
    let mut full = json!({"identity": {"oidcProviderArn": OIDC}});
    if let (Some(f), Value::Object(extra)) = (full.as_object_mut(), spec) {
        f.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "generation": 2, "uid": "u1"},
        "spec": full
    }))
    .expect("pipeline")
}

fn policy(name: &str, spec: Value) -> Arc<GpuTelemetryPolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
            "metadata": {"name": name, "generation": 1, "uid": format!("pol-{name}")},
            "spec": spec
        }))
        .expect("policy"),
    )
}

fn gpu_nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node::default();
            node.metadata.name = Some(format!("gpu-{i}"));
            node.metadata.labels = Some(
                [(
                    "node.kubernetes.io/instance-type".to_string(),
                    "p4d.24xlarge".to_string(),
                )]
                .into(),
            );
            node
        })
        .collect()
}

fn world(gov: Governing) -> World {
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team-a".into());
    World {
        gov,
        nodes: gpu_nodes(2),
        collector_namespace: Some(ns),
        aws_memory: None,
        stop_check_due: false,
        now: SystemTime::now(),
        monitoring: MonitoringApis::default(),
    }
}

fn run(p: &MLObservabilityPipeline, w: &World) -> Plan {
    let ctx = desired::Context {
        cluster_name: Some("c1".into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    plan(
        p,
        w,
        &Inputs {
            desired: &ctx,
            prices: &Prices::default(),
        },
    )
}

fn stop_of(plan: Plan) -> Stop {
    match plan.next {
        Err(stop) => stop,
        Ok(_) => panic!("the plan goes on; a stop was expected"),
    }
}

fn go_of(plan: Plan) -> Go {
    match plan.next {
        Ok(go) => go,
        Err(stop) => panic!("the plan stopped: {stop:?}"),
    }
}

#[test]
fn a_missing_policy_stops_with_policy_not_found() {
    let p = pipeline(json!({"policyRef": "strict"}));
    let stop = stop_of(run(&p, &world(Governing::NotFound("strict".into()))));
    assert_eq!(stop, Stop::PolicyNotFound("strict".into()));
    assert_eq!(stop.reason(), Reason::PolicyNotFound);
    assert!(stop.reason().is_terminal());
}

#[test]
fn two_default_policies_stop_with_default_conflict() {
    let p = pipeline(json!({}));
    let stop = stop_of(run(
        &p,
        &world(Governing::DefaultConflict(vec!["a".into(), "b".into()])),
    ));
    assert_eq!(stop.reason(), Reason::DefaultConflict);
    let mut obs = Observed::new(&p);
    stop.record(&mut obs);
    let s = obs.into_status(&p, &Default::default(), crate::controller::now());
    let ready = crate::crd::conditions::find(&s.conditions, pty::READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        (st::FALSE, "DefaultConflict")
    );
    assert!(ready.message.contains("a, b"), "{}", ready.message);
}

#[test]
fn an_invalid_spec_stops_before_the_build_with_the_field() {
    let p = pipeline(json!({"resyncInterval": "15s"}));
    let stop = stop_of(run(&p, &world(Governing::None)));
    let Stop::InvalidSpec(r, msg) = &stop else {
        panic!("{stop:?}")
    };
    assert_eq!(*r, Reason::InvalidSpec);
    assert!(msg.contains("spec.resyncInterval"), "{msg}");
}

#[test]
fn an_invalid_policy_stops_the_pipeline_naming_the_policy() {
    let pol = policy("bad", json!({"metrics": {"minScrapeInterval": "500ms"}}));
    let p = pipeline(json!({}));
    let stop = stop_of(run(&p, &world(Governing::One(pol))));
    let Stop::InvalidPolicy(msg) = &stop else {
        panic!("{stop:?}")
    };
    assert!(msg.contains("GpuTelemetryPolicy bad is invalid"), "{msg}");
}

#[test]
fn a_guardrail_violation_stops_with_the_policy_rule_and_keeps_the_estimate() {
    let pol = policy("strict", json!({"logs": {"minRetentionInDays": 365}}));
    let p = pipeline(json!({"logs": {"logGroup": {"retentionInDays": 30}}}));
    let plan = run(&p, &world(Governing::One(pol)));
    assert!(
        plan.obs.estimate.is_some(),
        "the live estimate is reported next to the violation: {plan:?}"
    );
    assert!(plan.resync_ms.is_some());
    let Stop::Violations(v) = stop_of(plan) else {
        panic!("violations expected")
    };
    assert!(
        v.iter().any(|x| x.contains("spec.logs.logGroup.retentionInDays")),
        "{v:?}"
    );
}

#[test]
fn a_budget_with_deny_stops_and_with_warn_goes_on_with_a_warning() {
    let p = pipeline(json!({}));
    let deny = policy("cheap", json!({"budget": {"monthlyUSD": 1, "action": "Deny"}}));
    let Stop::Violations(v) = stop_of(run(&p, &world(Governing::One(deny)))) else {
        panic!("a Deny budget stops")
    };
    assert!(v.iter().any(|x| x.contains("budget")), "{v:?}");
    let warn = policy("cheap", json!({"budget": {"monthlyUSD": 1, "action": "Warn"}}));
    let plan = run(&p, &world(Governing::One(warn)));
    assert!(plan.obs.budget_warning.is_some());
    go_of(plan);
}

#[test]
fn aws_is_due_until_this_process_ensured_this_plan_since_its_resync_slot() {
    let mut p = pipeline(json!({}));
    // Recorded status says the AWS side is ready.
    p.status = Some(serde_json::from_value(json!({"conditions": [
        {"type": "KmsKeyReady", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "LogGroupsReady", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "IamRoleReady", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]})).expect("status"));
    let mut w = world(Governing::None);
    assert!(go_of(run(&p, &w)).aws_due, "never ensured by this process");
    let d = go_of(run(&p, &w)).desired;
    // The pipeline's resync slot, and the clock 5 s after it.
    let key = p.uid().unwrap_or_else(|| p.name_any());
    let slot = resync::last_slot(SystemTime::now(), Duration::from_secs(600), &key);
    w.now = slot + Duration::from_secs(5);
    w.aws_memory = Some((plan_fingerprint(&p, &d), slot));
    assert!(!go_of(run(&p, &w)).aws_due, "same plan, ensured at its slot 5 s ago");
    w.stop_check_due = true;
    assert!(
        go_of(run(&p, &w)).aws_due,
        "data stopped since the slower checks last ran"
    );
    w.stop_check_due = false;
    w.now = slot + Duration::from_secs(600);
    assert!(go_of(run(&p, &w)).aws_due, "the next slot, 10 min later, came");
    w.aws_memory = Some((plan_fingerprint(&p, &d), slot - Duration::from_secs(1)));
    w.now = slot + Duration::from_secs(1);
    assert!(go_of(run(&p, &w)).aws_due, "ensured 2 s ago, but before its slot");
    w.now = slot + Duration::from_secs(5);
    w.aws_memory = Some((PlanFingerprint::default(), slot));
    assert!(go_of(run(&p, &w)).aws_due, "the plan changed");
    let mut requested = p.clone();
    requested.metadata.annotations = Some([(RECONCILE_REQUESTED_ANNOTATION.to_string(), "1".to_string())].into());
    w.aws_memory = Some((plan_fingerprint(&p, &d), slot));
    assert!(go_of(run(&requested, &w)).aws_due, "a requested reconcile");
    p.status = None;
    assert!(go_of(run(&p, &w)).aws_due, "recorded status does not say ready");
}

#[test]
fn the_child_set_is_owned_and_ordered_with_the_collector_last() {
    let p = pipeline(json!({}));
    let set = go_of(run(&p, &world(Governing::None))).children.expect("children");
    let keys = set.keys();
    assert_eq!(keys.len(), 5);
    assert!(keys[0].starts_with("ServiceAccount/team-a/"), "{keys:?}");
    assert!(keys[4].starts_with("DaemonSet/team-a/"), "{keys:?}");
    assert_eq!(set.selector, crate::conventions::pipeline_selector("team-a", "train"));
    assert_eq!(set.owner.uid, "u1");
    assert_eq!(set.kinds, CHILD_KINDS);
    assert_eq!(MonitoringApis::default().child_kinds(), CHILD_KINDS);
}

#[test]
fn a_missing_collector_namespace_blocks_the_children_after_aws() {
    let p = pipeline(json!({}));
    let mut w = world(Governing::None);
    w.collector_namespace = None;
    let go = go_of(run(&p, &w));
    let (r, msg) = go.children.expect_err("no namespace");
    assert_eq!(r, "NamespaceNotFound");
    assert!(msg.contains("team-a"), "{msg}");
}

#[test]
fn a_workspace_by_alias_blocks_the_children_until_its_arn_is_recorded() {
    let spec = json!({"metrics": {"prometheus": {"workspaceAlias": "gpu"}}});
    let go = go_of(run(&pipeline(spec.clone()), &world(Governing::None)));
    assert!(go.aws_due, "the AWS step creates it");
    let (r, msg) = go.children.expect_err("no collector while pending");
    assert_eq!(r, "WaitingForAws");
    assert!(msg.contains("\"gpu\""), "{msg}");

    let mut p = pipeline(spec);
    p.status = serde_json::from_value(json!({"aws": {
        "ampWorkspaceArn": "arn:aws:aps:us-east-1:123456789012:workspace/ws-1", "ampWorkspaceAlias": "gpu"}}))
    .ok();
    let go = go_of(run(&p, &world(Governing::None)));
    assert!(go.children.is_ok());
}

#[test]
fn the_prometheus_rule_is_a_child_before_the_collector_only_where_the_cluster_serves_it() {
    let p = pipeline(json!({"alerts": {}}));
    let keys_and_kinds = |served: bool| {
        let mut w = world(Governing::None);
        w.monitoring.prometheus_rules = served;
        let set = go_of(run(&p, &w)).children.expect("children");
        (set.keys(), set.kinds.contains(&Kind::PrometheusRule))
    };
    let (keys, pruned) = keys_and_kinds(true);
    let rule = keys.iter().position(|k| k.starts_with("PrometheusRule/team-a/"));
    assert_eq!(rule, Some(keys.len() - 2), "{keys:?}: the rule, then the DaemonSet");
    assert!(
        !keys.iter().any(|k| k.starts_with("PodMonitor/")),
        "{keys:?}: not served"
    );
    assert!(pruned, "listed for pruning where served");
    let (keys, pruned) = keys_and_kinds(false);
    assert!(!keys.iter().any(|k| k.starts_with("PrometheusRule/")), "{keys:?}");
    assert!(!pruned, "never listed where the API is not served");
    let plain = go_of(run(&pipeline(json!({})), &{
        let mut w = world(Governing::None);
        w.monitoring.prometheus_rules = true;
        w
    }));
    let keys = plain.children.expect("children").keys();
    assert!(
        !keys.iter().any(|k| k.starts_with("PrometheusRule/")),
        "no alerts, no rule"
    );
}

#[test]
fn the_collectors_pod_monitor_is_a_child_where_served_and_the_pipeline_reads_their_telemetry() {
    let served = |spec: serde_json::Value, pod_monitors: bool| {
        let mut w = world(Governing::None);
        w.monitoring.pod_monitors = pod_monitors;
        let set = go_of(run(&pipeline(spec), &w)).children.expect("children");
        let monitor = set.children.iter().find_map(|c| match c {
            Child::PodMonitor(m) => Some(m.clone()),
            _ => None,
        });
        let ds = set.children.iter().rev().find_map(|c| match c {
            Child::DaemonSet(d) => Some(d.clone()),
            _ => None,
        });
        (set.keys(), set.kinds.contains(&Kind::PodMonitor), monitor, ds)
    };
    // The SLO (on by default with alerts) reads the collectors' telemetry.
    let (keys, pruned, monitor, ds) = served(json!({"alerts": {}}), true);
    let at = keys.iter().position(|k| k.starts_with("PodMonitor/team-a/"));
    assert_eq!(at, Some(keys.len() - 2), "{keys:?}: the PodMonitor, then the DaemonSet");
    assert!(pruned);
    let (monitor, ds) = (monitor.expect("PodMonitor"), ds.expect("DaemonSet"));
    let ds_spec = ds.spec.expect("spec");
    assert_eq!(
        monitor.spec.selector, ds_spec.selector,
        "it scrapes exactly the collector's pods"
    );
    let pod_labels = ds_spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
    for l in &monitor.spec.pod_target_labels {
        assert!(pod_labels.contains_key(l), "the pods carry {l}: {pod_labels:?}");
    }
    let port = monitor.spec.pod_metrics_endpoints[0]["port"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let container = &ds_spec.template.spec.expect("pod").containers[0];
    assert!(
        container
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some(port.as_str())),
        "the collector container exposes port {port}"
    );
    // The Grafana dashboard's delivery panels read it too.
    assert!(served(json!({"dashboards": {}}), true).2.is_some());
    // Not served: neither applied nor listed for pruning.
    let (keys, pruned, _, _) = served(json!({"alerts": {}}), false);
    assert!(
        !pruned && !keys.iter().any(|k| k.starts_with("PodMonitor/")),
        "{keys:?}"
    );
    // Nothing reads it: not applied, but still pruned (turning alerts off removes it).
    let (keys, pruned, _, _) = served(
        json!({"alerts": {"rules": {"pipelineHealth": {"enabled": false}}}}),
        true,
    );
    assert!(pruned && !keys.iter().any(|k| k.starts_with("PodMonitor/")), "{keys:?}");
    let (keys, _, _, _) = served(json!({}), true);
    assert!(!keys.iter().any(|k| k.starts_with("PodMonitor/")), "{keys:?}");
}
