//! The policy reconcile's pure steps: plan and status, without any server.

use k8s_openapi::api::apps::v1::DaemonSetStatus;
use serde_json::{Value, json};

use super::*;

fn policy(spec: Value) -> GpuTelemetryPolicy {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": "gpu", "generation": 4, "uid": "pol-uid"},
        "spec": spec
    }))
    .expect("policy")
}

fn world(nodes: usize) -> World {
    World {
        nodes: (0..nodes).map(|i| format!("gpu-{i}")).collect(),
        exporter_namespace_exists: true,
        ..Default::default()
    }
}

fn at() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("valid"))
}

fn cond<'a>(s: &'a GpuTelemetryPolicyStatus, t: &str) -> (&'a str, &'a str) {
    let c = conditions::find(&s.conditions, t).unwrap_or_else(|| panic!("no {t}"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn managed_plans_the_exporter_set_owned_by_the_policy() {
    let p = policy(json!({}));
    let Exporter::Managed(set) = plan(&p, &world(2), "mlobs-system").exporter else {
        panic!("Managed is the default")
    };
    let keys = set.keys();
    assert_eq!(keys.len(), 3);
    assert!(keys[2].starts_with("DaemonSet/mlobs-system/"), "{keys:?}");
    assert_eq!(set.selector, crate::conventions::policy_selector("gpu"));
    assert_eq!(
        (set.owner.uid.as_str(), set.owner.ref_namespace.as_deref()),
        ("pol-uid", None)
    );
}

#[test]
fn external_plans_no_children_and_the_pods_to_look_for() {
    let p = policy(json!({"dcgmExporter": {"mode": "External", "namespace": "gpu-operator",
        "podSelector": {"app": "nvidia-dcgm-exporter"}}}));
    let Exporter::External { namespace, selector } = plan(&p, &world(2), "mlobs-system").exporter else {
        panic!("External")
    };
    assert_eq!(
        (namespace.as_str(), selector.as_str()),
        ("gpu-operator", "app=nvidia-dcgm-exporter")
    );
}

#[test]
fn a_missing_exporter_namespace_touches_nothing_and_says_so() {
    let p = policy(json!({}));
    let mut w = world(2);
    w.exporter_namespace_exists = false;
    let plan = plan(&p, &w, "mlobs-system");
    assert!(matches!(&plan.exporter, Exporter::NamespaceMissing(ns) if ns == "mlobs-system"));
}

#[test]
fn an_invalid_policy_touches_nothing_and_stops_with_invalid_spec() {
    let p = policy(json!({"metrics": {"minScrapeInterval": "500ms"}}));
    let w = world(2);
    let plan = plan(&p, &w, "mlobs-system");
    assert!(matches!(plan.exporter, Exporter::Untouched));
    let (s, stop) = status(&p, &w, &plan, None, at());
    assert_eq!(cond(&s, ty::VALID), (st::FALSE, "InvalidSpec"));
    assert_eq!(cond(&s, ty::READY), (st::FALSE, "InvalidSpec"));
    assert_eq!(stop.map(|(r, _)| r), Some(Reason::InvalidSpec));
}

#[test]
fn a_second_default_policy_is_a_terminal_conflict_naming_the_other() {
    let p = policy(json!({"default": true}));
    let mut w = world(0);
    w.other_defaults = vec!["older".into()];
    let plan = plan(&p, &w, "mlobs-system");
    let (s, stop) = status(&p, &w, &plan, None, at());
    assert_eq!(cond(&s, ty::VALID), (st::FALSE, "DefaultConflict"));
    let (r, _) = stop.expect("terminal");
    assert_eq!(r, Reason::DefaultConflict);
    let valid = conditions::find(&s.conditions, ty::VALID).expect("Valid");
    assert!(valid.message.contains("older"), "{}", valid.message);
}

#[test]
fn the_exporter_rollout_sets_metrics_source_and_ready() {
    let p = policy(json!({}));
    let w = world(4);
    let plan = plan(&p, &w, "mlobs-system");
    let mut ds = DaemonSet::default();
    ds.metadata.generation = Some(2);
    ds.status = Some(DaemonSetStatus {
        desired_number_scheduled: 4,
        number_ready: 3,
        observed_generation: Some(2),
        ..Default::default()
    });
    let rolling = managed_source(&ds);
    let (s, stop) = status(&p, &w, &plan, Some(&rolling), at());
    assert_eq!(cond(&s, ty::METRICS_SOURCE_READY), (st::FALSE, "RollingOut"));
    assert_eq!(cond(&s, ty::READY), (st::FALSE, "RollingOut"));
    assert_eq!(stop, None, "rolling out is no terminal stop");
    if let Some(x) = ds.status.as_mut() {
        x.number_ready = 4;
    }
    let (s, _) = status(&p, &w, &plan, Some(&managed_source(&ds)), at());
    assert_eq!(cond(&s, ty::READY), (st::TRUE, "Reconciled"));
    assert_eq!(s.exporter, Some(ExporterStatus { desired: 4, ready: 4 }));
}

#[test]
fn an_external_exporter_without_pods_on_gpu_nodes_is_not_ready() {
    let none = external_source("gpu-operator", "app=x", 3, 0);
    assert_eq!((none.status, none.reason), (st::FALSE, "NoExporterPods"));
    assert!(none.message.contains("app=x"), "{}", none.message);
    let no_nodes = external_source("gpu-operator", "app=x", 0, 0);
    assert_eq!((no_nodes.status, no_nodes.reason), (st::TRUE, "NoGpuNodes"));
    let some = external_source("gpu-operator", "app=x", 3, 2);
    assert_eq!((some.status, some.rollout.ready), (st::TRUE, 2));
}

#[test]
fn an_unchanged_observation_gives_an_identical_status() {
    let p = policy(json!({}));
    let w = world(1);
    let plan = plan(&p, &w, "mlobs-system");
    let src = external_source("ns", "a=b", 1, 1);
    let (first, _) = status(&p, &w, &plan, Some(&src), at());
    let mut again = p.clone();
    again.status = Some(first.clone());
    let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_600).expect("valid"));
    let (second, _) = status(&again, &w, &plan, Some(&src), later);
    assert_eq!(first, second, "nothing to write");
}
