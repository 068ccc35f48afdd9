//! The real controllers (kube-runtime Controllers, watches, finalizers) against the in-process
//! API fake and moto: AWS first, then children; no writes on a no-op reconcile; hand edits put
//! back; AWS drift reported then corrected; deletion under Retain and Delete; policies.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mlobs::crd::GpuTelemetryPolicy;
use serde_json::json;
use support::operator::{NS, Operator, WAIT};
use support::{faults, moto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_is_created_before_the_collector_and_a_second_reconcile_writes_nothing() {
    let op = Operator::start().await;
    op.create("train", json!({})).await;
    op.ready("train").await;

    // AWS: key, two log groups (with that key), role — all before the collector existed.
    let groups = op.log_groups().await;
    assert_eq!(groups.len(), 2, "{groups:?}");
    let status = op.pipeline("train").and_then(|p| p.status).expect("status");
    let aws = status.aws.clone().expect("aws status");
    assert!(aws.kms_key_arn.is_some() && aws.role_arn.is_some());
    assert_eq!(aws.log_group_arns.len(), 2);
    assert!(aws.kms_key_create_started.is_some(), "marker written before CreateKey");
    // A first create never scans the account's keys (no create was interrupted).
    assert_eq!(op.aws.calls.of("ListKeys"), 0, "{:?}", op.aws.calls.snapshot());
    let telemetry = status.telemetry.clone().expect("telemetry");
    assert_eq!(telemetry.gpu_nodes, 2);
    assert!(telemetry.total_series > 0 && telemetry.estimated_monthly_cost_usd > 0.0);

    // Children carry the pipeline as controlling owner, and the collector runs as its ServiceAccount.
    let uid = op.pipeline("train").and_then(|p| p.metadata.uid).expect("uid");
    for (plural, api_version) in [
        ("configmaps", "v1"),
        ("serviceaccounts", "v1"),
        ("daemonsets", "apps/v1"),
    ] {
        let o = op
            .fake
            .object(api_version, plural, Some(NS), "mlobs-train")
            .expect(plural);
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], json!(uid), "{plural}");
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["controller"],
            json!(true),
            "{plural}"
        );
    }
    let sa: ServiceAccount = op.fake.get(Some(NS), "mlobs-train").expect("sa");
    assert_eq!(
        sa.metadata
            .annotations
            .and_then(|a| a.get("eks.amazonaws.com/role-arn").cloned()),
        aws.role_arn
    );
    // Every write of a child is server-side apply with our field manager.
    for r in op.fake.requests() {
        if r.method == "PATCH" && r.path.contains("/daemonsets/") {
            assert!(r.query.contains("fieldManager=mlobs"), "{r:?}");
        }
    }

    // A no-op reconcile (a node label changed; heartbeats and annotations do not reconcile): zero writes.
    let wrote = op.no_op_reconcile_writes().await;
    println!("writes per no-op reconcile: {}", wrote.len());
    assert!(wrote.is_empty(), "a no-op reconcile wrote: {wrote:?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_reconcile_reads_children_from_the_watch_caches_not_the_api_server() {
    let op = Operator::start().await;
    op.create("train", json!({})).await;
    op.ready("train").await;
    // The first no-op reconcile verifies the children at their live resourceVersions (the caches
    // may not have caught up with the creating writes yet); the next finds them in the caches.
    op.no_op_reconcile_requests().await;
    let requests = op.no_op_reconcile_requests().await;
    let seen: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    println!("requests of a no-op reconcile: {seen:#?}");
    let child_reads: Vec<&String> = (requests.iter().zip(&seen))
        .filter(|(r, _)| r.method == "GET")
        .filter(|(r, _)| {
            [
                "configmaps",
                "serviceaccounts",
                "services",
                "clusterroles",
                "clusterrolebindings",
                "nodes",
            ]
            .iter()
            .any(|k| r.path.contains(&format!("/{k}")))
                || (r.path.contains("/daemonsets") && !r.path.ends_with("/daemonsets/mlobs-train"))
        })
        .map(|(_, s)| s)
        .collect();
    assert!(
        child_reads.is_empty(),
        "children and nodes are read from the watch caches: {child_reads:#?}"
    );
    let ds_gets = (requests.iter())
        .filter(|r| r.method == "GET" && r.path.ends_with("/daemonsets/mlobs-train"))
        .count();
    assert_eq!(
        ds_gets, 0,
        "the collector DaemonSet, status included, comes from its watch cache: {seen:#?}"
    );
    op.stop().await;
}

/// The requests since `from` that read or dry-run the collector DaemonSet `name`.
fn daemon_set_requests(op: &Operator, from: usize, name: &str) -> Vec<String> {
    (op.fake.requests().into_iter().skip(from))
        .filter(|r| r.path.ends_with(&format!("/daemonsets/{name}")) && matches!(r.method.as_str(), "GET" | "PATCH"))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_readiness_comes_from_the_cached_daemon_set_and_hand_edits_of_it_are_still_put_back() {
    let op = Operator::start().await;
    op.create("train", json!({})).await;
    op.ready("train").await;
    op.no_op_reconcile_requests().await;
    let ds_of = |f: &support::apifake::ApiFake| f.object("apps/v1", "daemonsets", Some(NS), "mlobs-train");
    let ready_nodes = |n: i32| {
        op.pipeline("train")
            .and_then(|p| p.status)
            .and_then(|s| s.collector)
            .is_some_and(|c| c.ready_nodes == n)
    };

    // A status write (a collector pod stops being ready): the pipeline's status follows it
    // without a read or a dry run of the DaemonSet.
    let from = op.fake.requests().len();
    let mut ds = ds_of(&op.fake).expect("DaemonSet");
    ds["status"]["numberReady"] = json!(1);
    op.fake.put_object("apps/v1", "daemonsets", ds);
    op.wait("status.collector.readyNodes 1", |_| ready_nodes(1)).await;
    let reads = daemon_set_requests(&op, from, "mlobs-train");
    assert!(
        reads.is_empty(),
        "a status write made the operator read the DaemonSet: {reads:#?}"
    );

    // A hand edit of a label mlobs sets changes no generation: it is still found and put back.
    let mut ds = ds_of(&op.fake).expect("DaemonSet");
    let generation = ds["metadata"]["generation"].clone();
    let label = "app.kubernetes.io/name";
    let original = ds["metadata"]["labels"][label].clone();
    assert!(original.is_string(), "the collector DaemonSet carries {label}: {ds}");
    ds["metadata"]["labels"][label] = json!("edited-by-hand");
    op.fake.put_object("apps/v1", "daemonsets", ds);
    op.wait("the label put back", |f| {
        ds_of(f).is_some_and(|d| d["metadata"]["labels"][label] == original)
    })
    .await;
    assert_eq!(
        ds_of(&op.fake).map(|d| d["metadata"]["generation"].clone()),
        Some(generation),
        "the label edit and its correction are metadata only"
    );

    // A hand edit of the spec bumps the generation: put back too.
    let mut ds = ds_of(&op.fake).expect("DaemonSet");
    let image = ds["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.invalid/hand-edited:1");
    op.fake.put_object("apps/v1", "daemonsets", ds);
    op.wait("the image put back", |f| {
        ds_of(f).is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == image)
    })
    .await;
    op.wait("both corrections in status", |_| {
        op.pipeline("train").and_then(|p| p.status).is_some_and(|s| {
            let fields: Vec<&str> = (s.drift.iter())
                .filter(|d| {
                    d.resource == format!("DaemonSet/{NS}/mlobs-train") && d.action.as_deref() == Some("Corrected")
                })
                .map(|d| d.field.as_str())
                .collect();
            fields.iter().any(|f| f.contains("labels")) && fields.iter().any(|f| f.contains("image"))
        })
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_read_the_managed_exporters_pods_and_their_namespace_from_watch_caches() {
    let op = Operator::start().await;
    for name in ["one", "two", "three"] {
        op.create(name, json!({})).await;
    }
    for name in ["one", "two", "three"] {
        op.ready(name).await;
    }
    let requests = op.no_op_reconciles_requests(3).await;
    let seen: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    println!("requests of three no-op reconciles: {seen:#?}");
    let namespace_reads = (requests.iter())
        .filter(|r| {
            r.method == "GET"
                && r.path.contains("/api/v1/namespaces/")
                && !r.path.contains(&format!("/namespaces/{NS}/"))
        })
        .count();
    assert_eq!(namespace_reads, 0, "namespaces come from the watch cache: {seen:#?}");
    let pod_lists = (requests.iter())
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods"))
        .count();
    assert_eq!(
        pod_lists, 0,
        "a Managed exporter's pods come from their watch, not a listing: {seen:#?}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_pod_the_scheduler_cannot_place_is_reported_from_the_pod_watch_without_a_listing() {
    let op = Operator::start().await;
    op.create("waits", json!({})).await;
    op.ready("waits").await;
    let mut ds = op
        .fake
        .object("apps/v1", "daemonsets", Some(NS), "mlobs-waits")
        .expect("DaemonSet");
    let (labels, uid) = (
        ds["spec"]["template"]["metadata"]["labels"].clone(),
        ds["metadata"]["uid"].clone(),
    );
    let before = op.fake.requests().len();
    // A node's collector is gone and its new pod waits: the DaemonSet says so first...
    ds["status"]["numberReady"] = json!(1);
    op.fake.put_object("apps/v1", "daemonsets", ds);
    op.wait_reason("waits", "CollectorReady", "False", "RollingOut").await;
    // ...then the scheduler marks the pod unschedulable, which changes no DaemonSet.
    op.fake.put_object(
        "v1",
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mlobs-waits-x7k2p", "namespace": NS,
            "labels": labels, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "mlobs-waits", "uid": uid, "controller": true}]},
            "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Too many pods."}]}}),
    );
    let message = op
        .wait_reason("waits", "CollectorReady", "False", "CollectorUnschedulable")
        .await;
    assert!(
        message.contains("mlobs-waits-x7k2p") && message.contains("2 Too many pods"),
        "the message names the pod and quotes the scheduler: {message}"
    );
    let listings: Vec<String> = (op.fake.requests().into_iter().skip(before))
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods") && r.query.contains("mlobs.io%2Fpipeline"))
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    assert!(
        listings.is_empty(),
        "the collector's pods come from the watch: {listings:#?}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_whose_status_write_loses_a_race_is_still_recorded() {
    // The reconcile that puts the edit back loses its status write (409); the retry finds the
    // child as desired, so only what the first one found can say that it was edited.
    let op = Operator::start().await;
    op.create("raced", json!({})).await;
    op.ready("raced").await;
    op.fake
        .fail_next("PATCH", "/mlobservabilitypipelines/raced/status", 409, 1);
    let mut cm = op.fake.object("v1", "configmaps", Some(NS), "mlobs-raced").expect("cm");
    let original = cm["data"].clone();
    cm["data"] = json!({"config.yaml": "receivers: {}\n"});
    op.fake.put_object("v1", "configmaps", cm);
    op.wait("the ConfigMap put back", |f| {
        f.object("v1", "configmaps", Some(NS), "mlobs-raced")
            .is_some_and(|c| c["data"] == original)
    })
    .await;
    op.wait("the correction in status after the lost race", |_| {
        op.pipeline("raced").and_then(|p| p.status).is_some_and(|s| {
            s.drift.iter().any(|d| {
                d.resource == format!("ConfigMap/{NS}/mlobs-raced") && d.action.as_deref() == Some("Corrected")
            })
        })
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_child_is_put_back_and_recorded_as_drift() {
    let op = Operator::start().await;
    op.create("edit", json!({})).await;
    op.ready("edit").await;
    let mut cm = op.fake.object("v1", "configmaps", Some(NS), "mlobs-edit").expect("cm");
    let original = cm["data"].clone();
    cm["data"] = json!({"config.yaml": "receivers: {}\n"});
    op.fake.put_object("v1", "configmaps", cm);
    op.wait("the ConfigMap put back", |f| {
        f.object("v1", "configmaps", Some(NS), "mlobs-edit")
            .is_some_and(|c| c["data"] == original)
    })
    .await;
    op.wait("the correction in status", |_| {
        op.pipeline("edit").and_then(|p| p.status).is_some_and(|s| {
            s.drift
                .iter()
                .any(|d| d.resource == format!("ConfigMap/{NS}/mlobs-edit") && d.action.as_deref() == Some("Corrected"))
        })
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_drift_is_reported_under_report_and_corrected_under_correct() {
    let op = Operator::start().await;
    op.create("drift", json!({"driftPolicy": "Report"})).await;
    op.ready("drift").await;
    let group = op
        .log_groups()
        .await
        .into_iter()
        .find(|g| g.name.ends_with("/drift/logs"))
        .expect("logs group");
    let desired_retention = group.retention_days;
    op.aws
        .logs
        .put_retention_policy()
        .log_group_name(&group.name)
        .retention_in_days(1)
        .send()
        .await
        .expect("tamper retention");

    op.request_reconcile("drift", 1).await;
    op.wait_condition("drift", "Drifted", "True").await;
    let after_report = op
        .log_groups()
        .await
        .into_iter()
        .find(|g| g.name == group.name)
        .expect("group");
    assert_eq!(after_report.retention_days, Some(1), "Report changes nothing");

    let patch = json!({"spec": {"driftPolicy": "Correct"}});
    op.pipelines()
        .patch("drift", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switch to Correct");
    op.wait_condition("drift", "Drifted", "False").await;
    let fixed = op
        .log_groups()
        .await
        .into_iter()
        .find(|g| g.name == group.name)
        .expect("group");
    assert_eq!(fixed.retention_days, desired_retention);
    let s = op.pipeline("drift").and_then(|p| p.status).expect("status");
    assert!(
        s.drift
            .iter()
            .any(|d| d.action.as_deref() == Some("Corrected") && d.field.contains("etention")),
        "{:?}",
        s.drift
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_retains_aws_under_retain_and_removes_it_under_delete() {
    let op = Operator::start().await;
    op.create("keep", json!({"deletionPolicy": "Retain"})).await;
    op.create("drop", json!({"deletionPolicy": "Delete"})).await;
    op.ready("keep").await;
    op.ready("drop").await;
    assert_eq!(op.log_groups().await.len(), 4);
    for name in ["keep", "drop"] {
        op.pipelines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    op.wait("both pipelines gone", |f| {
        f.object("mlobs.io/v1alpha1", "mlobservabilitypipelines", Some(NS), "keep")
            .is_none()
            && f.object("mlobs.io/v1alpha1", "mlobservabilitypipelines", Some(NS), "drop")
                .is_none()
    })
    .await;
    let names: Vec<String> = op.log_groups().await.into_iter().map(|g| g.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.contains("/keep/")), "{names:?}");
    // Cluster-scoped RBAC has no owner reference: the finalizer removed it.
    let roles: Vec<ClusterRole> = op
        .fake
        .list("rbac.authorization.k8s.io/v1", "clusterroles")
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    assert!(roles.is_empty(), "{roles:?}");
    // Namespaced children went with their owner.
    assert!(op.fake.get::<DaemonSet>(Some(NS), "mlobs-keep").is_none());
    assert!(op.fake.get::<ConfigMap>(Some(NS), "mlobs-drop").is_none());
    op.stop().await;
}

fn policy(name: &str, allowed: &[&str]) -> GpuTelemetryPolicy {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": name},
        "spec": {"default": true, "dcgmExporter": {"mode": "External", "namespace": "gpu-operator",
            "podSelector": {"app": "nvidia-dcgm-exporter"}},
            "metrics": {"allowed": allowed}}
    }))
    .expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_requeues_its_pipelines_and_two_defaults_conflict() {
    let op = Operator::start().await;
    op.create(
        "gov",
        json!({"metrics": {"dcgm": {"metrics": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"]}}}),
    )
    .await;
    op.ready("gov").await;
    let policies: Api<GpuTelemetryPolicy> = Api::all(op.fake.client());
    policies
        .create(&PostParams::default(), &policy("strict", &["DCGM_FI_DEV_GPU_UTIL"]))
        .await
        .expect("create policy");
    op.wait_condition("gov", "PolicyCompliant", "False").await;
    assert_eq!(
        op.condition("gov", "PolicyCompliant").map(|c| c.1).as_deref(),
        Some("PolicyViolation")
    );
    // Nothing running was removed.
    assert!(op.fake.get::<DaemonSet>(Some(NS), "mlobs-gov").is_some());

    policies
        .create(
            &PostParams::default(),
            &policy("other", &["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"]),
        )
        .await
        .expect("second default");
    op.wait("both policies invalid", |f| {
        ["strict", "other"].iter().all(|n| {
            f.get::<GpuTelemetryPolicy>(None, n)
                .and_then(|p| p.status)
                .is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Valid" && c.status == "False" && c.reason == "DefaultConflict")
                })
        })
    })
    .await;
    op.wait("the pipeline names the conflict", |_| {
        op.condition("gov", "PolicyCompliant")
            .is_some_and(|c| c.1 == "DefaultConflict")
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_waits_while_aws_fails() {
    // Two mutating AWS calls succeed (key, alias); every later one fails.
    let (aws, _crash) = faults::crashing_clients(2).await;
    let op = Operator::start_with(aws).await;
    op.create("wait", json!({})).await;
    op.wait_condition("wait", "LogGroupsReady", "False").await;
    op.wait("a couple more reconciles", |_| op.reconciles() >= 3).await;
    assert_eq!(
        op.condition("wait", "CollectorReady").map(|c| c.1).as_deref(),
        Some("WaitingForAws")
    );
    assert!(
        op.fake.get::<DaemonSet>(Some(NS), "mlobs-wait").is_none(),
        "no collector before AWS is ready"
    );
    op.stop().await;
}

/// The default policy `platform`, its DCGM exporter Managed in `mlobs-system`.
async fn create_managed_default_policy(op: &Operator) {
    let managed: GpuTelemetryPolicy = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": "platform"},
        "spec": {"default": true, "dcgmExporter": {"mode": "Managed", "namespace": "mlobs-system"}}
    }))
    .expect("policy");
    let policies: Api<GpuTelemetryPolicy> = Api::all(op.fake.client());
    policies
        .create(&PostParams::default(), &managed)
        .await
        .expect("create policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_policy_runs_its_exporter_and_counts_what_it_governs() {
    let op = Operator::start().await;
    create_managed_default_policy(&op).await;
    op.create("gpu", json!({})).await;
    op.ready("gpu").await;

    let name = "mlobs-dcgm-exporter-platform";
    let uid = op
        .fake
        .get::<GpuTelemetryPolicy>(None, "platform")
        .and_then(|p| p.metadata.uid)
        .expect("uid");
    for (api_version, plural) in [("apps/v1", "daemonsets"), ("v1", "configmaps"), ("v1", "services")] {
        let o = op
            .fake
            .object(api_version, plural, Some("mlobs-system"), name)
            .unwrap_or_else(|| panic!("exporter {plural}"));
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], json!(uid), "{plural}");
    }
    // The kubelet brings up one of two exporter pods: the policy is rolling out.
    let mut ds = op
        .fake
        .object("apps/v1", "daemonsets", Some("mlobs-system"), name)
        .expect("ds");
    ds["status"] =
        json!({"desiredNumberScheduled": 2, "numberReady": 1, "currentNumberScheduled": 2, "numberMisscheduled": 0});
    op.fake.put_object("apps/v1", "daemonsets", ds);
    op.wait("policy status", |f| {
        f.get::<GpuTelemetryPolicy>(None, "platform")
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.gpu_nodes == 2
                    && s.exporter.as_ref().is_some_and(|x| (x.desired, x.ready) == (2, 1))
                    && s.pipelines
                        .as_ref()
                        .is_some_and(|c| (c.total, c.non_compliant) == (1, 0))
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "RollingOut")
            })
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_exporter_pod_that_goes_away_is_reported_by_its_pipelines_before_any_status_says_so() {
    let op = Operator::start().await;
    create_managed_default_policy(&op).await;
    op.create("gpu", json!({})).await;
    op.ready("gpu").await;
    let message = |op: &Operator| {
        op.condition_full("gpu", "MetricsSourceReady")
            .map(|c| c.2)
            .unwrap_or_default()
    };
    op.wait("both exporter pods counted", |_| {
        message(&op).starts_with("2/2 GPU nodes")
    })
    .await;
    // Data flows: no re-check is scheduled, and the next resync is minutes away. Whatever
    // reconciles the pipeline below is an event.
    op.log_once("gpu").await;
    op.request_reconcile("gpu", 1).await;
    op.wait_reason("gpu", "DataFlowing", "True", "DataFlowing").await;
    op.quiet(Duration::from_secs(3)).await;
    // The pod is deleted (a node drained, an eviction) and nothing else changes yet: neither the
    // exporter's DaemonSet status nor the policy. Only the pod watch's DELETED event tells.
    let pods = op.fake.list("v1", "pods");
    let exporter_pods: Vec<String> = (pods.iter())
        .filter(|p| p["metadata"]["namespace"] == "mlobs-system")
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    assert_eq!(exporter_pods.len(), 2, "{exporter_pods:?}");
    op.fake
        .remove("v1", "pods", Some("mlobs-system"), &exporter_pods[1])
        .expect("exporter pod");
    op.wait("the pipeline to count one exporter pod", |_| {
        message(&op).starts_with("1/2 GPU nodes")
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_children_are_pruned_by_label_and_owner_and_nothing_else_is_deleted() {
    let op = Operator::start().await;
    op.create("prune", json!({})).await;
    op.ready("prune").await;
    let uid = op.pipeline("prune").and_then(|p| p.metadata.uid).expect("uid");
    let labels = json!({"app.kubernetes.io/managed-by": "mlobs", "mlobs.io/pipeline": "team-a.prune"});
    op.fake.put_object(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mlobs-prune-old", "namespace": NS,
            "labels": labels, "ownerReferences": [{"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "name": "prune", "uid": uid, "controller": true}]}}),
    );
    // Same labels, but not owned by the pipeline: somebody else's, never deleted.
    op.fake.put_object(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users-own", "namespace": NS, "labels": labels}}),
    );
    let patch = json!({"spec": {"collector": {"batch": {"sendBatchSize": 500}}}});
    op.pipelines()
        .patch("prune", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("spec change");
    op.wait("the stale ConfigMap pruned", |f| {
        f.object("v1", "configmaps", Some(NS), "mlobs-prune-old").is_none()
    })
    .await;
    assert!(op.fake.object("v1", "configmaps", Some(NS), "users-own").is_some());
    assert!(op.fake.object("v1", "configmaps", Some(NS), "mlobs-prune").is_some());
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_child_is_pruned_by_the_next_reconcile_without_a_spec_change() {
    // Pruning used to run only when the generation (or policy) changed: a child left behind by a
    // generation whose first reconcile stopped early stayed forever. Now every reconcile prunes.
    let op = Operator::start().await;
    op.create("steady", json!({})).await;
    op.ready("steady").await;
    let uid = op.pipeline("steady").and_then(|p| p.metadata.uid).expect("uid");
    let labels = json!({"app.kubernetes.io/managed-by": "mlobs", "mlobs.io/pipeline": "team-a.steady"});
    op.fake.put_object(
        "v1",
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mlobs-steady-left-over", "namespace": NS,
            "labels": labels, "ownerReferences": [{"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "name": "steady", "uid": uid, "controller": true}]}}),
    );
    let generation = op.pipeline("steady").and_then(|p| p.metadata.generation);
    op.request_reconcile("steady", 1).await;
    op.wait("the left-over ConfigMap pruned", |f| {
        f.object("v1", "configmaps", Some(NS), "mlobs-steady-left-over")
            .is_none()
    })
    .await;
    assert_eq!(op.pipeline("steady").and_then(|p| p.metadata.generation), generation);
    assert!(op.fake.object("v1", "configmaps", Some(NS), "mlobs-steady").is_some());
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_stop_counts_as_a_failed_reconcile_with_its_reason() {
    // A pipeline stuck on a terminal reason used to count as result="ok".
    let op = Operator::start().await;
    op.create("orphan", json!({"policyRef": "no-such-policy"})).await;
    op.wait_reason("orphan", "Ready", "False", "PolicyNotFound").await;
    let errors = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("mlobs_reconcile_errors_total{")
                    && l.contains(r#"controller="pipeline""#)
                    && l.contains(r#"reason="PolicyNotFound""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while errors(&op.metrics.encode()).is_none_or(|n| n < 1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stop was not counted as an error"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = op.metrics.encode();
    assert!(
        text.contains(r#"mlobs_reconciles_total{controller="pipeline",result="error"}"#),
        "{text}"
    );
    // No backoff retries: once the reconciles its own writes trigger are done (a retry loop
    // never is), the count stays put while nothing changes. Quiet for 3 s (a 1 s lull let a
    // straggler of those writes land in the window under load); a retry every 3 to 6 s would
    // fall in the 6 s window, one more often would keep `quiet` from returning.
    op.quiet(Duration::from_secs(3)).await;
    let before = errors(&op.metrics.encode());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(errors(&op.metrics.encode()), before);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_with_its_field_and_nothing_is_created() {
    let op = Operator::start().await;
    // Admission would refuse this; the operator checks the same rules (e.g. after a CRD downgrade).
    op.create("bad", json!({"resyncInterval": "1s"})).await;
    op.wait("the InvalidSpec condition", |_| {
        op.pipeline("bad").and_then(|p| p.status).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec" && c.message.contains("spec.resyncInterval"))
        })
    })
    .await;
    assert!(op.log_groups().await.is_empty(), "nothing created in AWS");
    assert!(op.fake.get::<DaemonSet>(Some(NS), "mlobs-bad").is_none());
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_conflicts_and_an_api_outage_are_survived_without_duplicates() {
    let op = Operator::start().await;
    // The first status write loses a race (409): the reconcile backs off and retries.
    op.fake
        .fail_next("PATCH", "/mlobservabilitypipelines/flaky/status", 409, 1);
    op.create("flaky", json!({})).await;
    op.ready("flaky").await;

    // The API server goes away for a while: watches end and every request fails with 503.
    op.fake.set_unavailable(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.fake.set_unavailable(false);

    // After recovery a spec change is still seen and acted on.
    let patch = json!({"spec": {"collector": {"batch": {"sendBatchSize": 700}}}});
    op.pipelines()
        .patch("flaky", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("spec change");
    op.wait("the new generation observed", |_| {
        op.pipeline("flaky")
            .is_some_and(|p| p.status.and_then(|s| s.observed_generation) == p.metadata.generation)
    })
    .await;
    let cm = op.fake.object("v1", "configmaps", Some(NS), "mlobs-flaky").expect("cm");
    assert!(
        cm["data"]["config.yaml"]
            .as_str()
            .is_some_and(|c| c.contains("send_batch_size: 700"))
    );
    let owned = |plural: &str, api_version: &str| {
        op.fake
            .list(api_version, plural)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["mlobs.io/pipeline"] == "team-a.flaky")
            .count()
    };
    assert_eq!(owned("configmaps", "v1"), 1);
    assert_eq!(owned("daemonsets", "apps/v1"), 1);
    assert_eq!(owned("serviceaccounts", "v1"), 1);
    assert_eq!(op.log_groups().await.len(), 2, "no duplicate AWS resources");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_an_interrupted_key_create_finds_the_key_instead_of_creating_another() {
    // CreateKey succeeds, then every mutating call fails: the operator "dies" mid-create.
    let (crashing, crash) = faults::crashing_clients(1).await;
    let op = Operator::start_with(crashing).await;
    op.create("crash", json!({})).await;
    op.wait_condition("crash", "KmsKeyReady", "False").await;
    assert!(crash.crashed());
    let cluster = op.cluster.clone();
    let fake = op.stop().await;

    let op = Operator::start_on(fake, moto::clients().await, cluster, 2).await;
    op.ready("crash").await;
    assert_eq!(op.our_keys().await, 1, "exactly one key after the restart");
    op.stop().await;
}

/// (apiGroup, resource[/subresource], verb) of a request, as RBAC sees it.
fn rbac_attributes(method: &str, path: &str, query: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _v, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest.to_vec()),
        _ => return None,
    };
    let rest = match rest.as_slice() {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail.to_vec(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub] => (format!("{r}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group, resource, verb.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_operator_makes_is_allowed_by_its_shipped_rbac() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |f: &str| std::fs::read_to_string(root.join("config/rbac").join(f)).expect(f);
    let cluster: ClusterRole = serde_saphyr::from_str(&read("cluster_role.yaml")).expect("ClusterRole");
    let lease: k8s_openapi::api::rbac::v1::Role =
        serde_saphyr::from_str(&read("leader_election_role.yaml")).expect("Role");
    let rules: Vec<_> = cluster
        .rules
        .unwrap_or_default()
        .into_iter()
        .chain(lease.rules.unwrap_or_default())
        .collect();

    // A full life: managed exporter, pipeline created, edited by hand, changed, deleted.
    let op = Operator::start().await;
    let managed: GpuTelemetryPolicy = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy", "metadata": {"name": "platform"},
        "spec": {"default": true, "dcgmExporter": {"mode": "Managed", "namespace": "mlobs-system"}}
    }))
    .expect("policy");
    Api::<GpuTelemetryPolicy>::all(op.fake.client())
        .create(&PostParams::default(), &managed)
        .await
        .expect("policy");
    op.create("life", json!({"deletionPolicy": "Delete"})).await;
    op.ready("life").await;
    let mut cm = op.fake.object("v1", "configmaps", Some(NS), "mlobs-life").expect("cm");
    cm["data"] = json!({"config.yaml": "edited"});
    op.fake.put_object("v1", "configmaps", cm);
    let patch = json!({"spec": {"collector": {"batch": {"sendBatchSize": 900}}}});
    op.pipelines()
        .patch("life", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("change");
    op.wait("the change applied", |f| {
        f.object("v1", "configmaps", Some(NS), "mlobs-life")
            .is_some_and(|c| c["data"]["config.yaml"].as_str().is_some_and(|y| y.contains("900")))
    })
    .await;
    op.pipelines()
        .delete("life", &DeleteParams::default())
        .await
        .expect("delete");
    op.wait("deleted", |f| {
        f.object("mlobs.io/v1alpha1", "mlobservabilitypipelines", Some(NS), "life")
            .is_none()
    })
    .await;

    // The test's own requests (creating the pipeline and policy, the spec change, the delete) are
    // made through the same fake; they are allowed to a user, not to the operator, so skip them.
    let own = |r: &support::apifake::RecordedRequest| {
        (r.method == "POST"
            && (r.path.ends_with("/mlobservabilitypipelines") || r.path.ends_with("/gputelemetrypolicies")))
            || (r.method == "DELETE" && r.path.contains("/mlobservabilitypipelines/"))
            || (r.method == "PATCH" && r.path.ends_with("/mlobservabilitypipelines/life") && r.body["spec"].is_object())
    };
    // API discovery (`GET /apis/<group>/<version>`: which monitoring kinds are served) is granted
    // to every authenticated user by the built-in system:discovery role, not by ours.
    let discovery = |r: &support::apifake::RecordedRequest| {
        r.method == "GET" && r.path.starts_with("/apis/") && r.path.trim_matches('/').split('/').count() == 3
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in op.fake.requests().iter().filter(|r| !own(r) && !discovery(r)) {
        let Some((group, resource, verb)) = rbac_attributes(&r.method, &r.path, &r.query) else {
            panic!("unrecognised request {} {}", r.method, r.path);
        };
        let allowed = rules.iter().any(|rule| {
            rule.api_groups.as_deref().unwrap_or_default().contains(&group)
                && rule.resources.as_deref().unwrap_or_default().contains(&resource)
                && rule.verbs.contains(&verb)
        });
        assert!(
            allowed,
            "{verb} {group}/{resource} ({} {}) is not in config/rbac",
            r.method, r.path
        );
        seen.insert(format!("{verb} {group}/{resource}"));
    }
    println!("requests covered by RBAC: {seen:?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_of_many_pipelines_reads_aws_in_shared_listings_not_per_pipeline() {
    let op = Operator::start().await;
    let n = 8;
    for i in 0..n {
        op.create(&format!("r{i}"), json!({})).await;
    }
    for i in 0..n {
        op.ready(&format!("r{i}")).await;
    }
    op.aws.calls.reset();
    for i in 0..n {
        op.request_reconcile(&format!("r{i}"), 7).await;
    }
    // Every pipeline's AWS step runs again; each ends with the data-flow look at its two groups.
    let deadline = tokio::time::Instant::now() + WAIT;
    while op.aws.calls.of("DescribeLogStreams") < 2 * n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resync did not happen: {:?}",
            op.aws.calls.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("resync of {n} pipelines: {:?}", op.aws.calls.snapshot());
    // The keys were read in full when created (new to this process): not again in this resync.
    // Roles come from the shared listing.
    for per_pipeline in [
        "DescribeKey",
        "ListResourceTags",
        "GetKeyRotationStatus",
        "GetKeyPolicy",
        "GetRole",
        "GetRolePolicy",
    ] {
        assert_eq!(op.aws.calls.of(per_pipeline), 0, "{per_pipeline} in a resync");
    }
    let pages = op.aws.calls.of("DescribeLogGroups");
    // Without drift events, the listing is taken each resync period.
    assert!(
        (1..=n / 50 + 3).contains(&pages),
        "{pages} DescribeLogGroups calls for {n} pipelines"
    );
    let listings = op.aws.calls.of("ListAliases") + op.aws.calls.of("GetAccountAuthorizationDetails");
    assert!((2..=4).contains(&listings), "{listings} listings in one resync");
    assert_eq!(op.aws.calls.mutating(), 0, "an unchanged resync changes nothing in AWS");
    let checked = op
        .pipeline("r0")
        .and_then(|p| p.status?.aws?.kms_key_checked_at)
        .expect("status.aws.kmsKeyCheckedAt");
    println!("r0: key last read in full at {}", checked.0);
    op.stop().await;
}

/// What CloudWatch Logs publishes for a group that received `events` in the minute of `at`.
async fn incoming_log_events(op: &Operator, group: &str, at: std::time::SystemTime, events: f64) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let datum = MetricDatum::builder()
        .metric_name("IncomingLogEvents")
        .dimensions(Dimension::builder().name("LogGroupName").value(group).build())
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(at))
        .value(events)
        .build();
    (op.aws.cloudwatch.put_metric_data())
        .namespace("AWS/Logs")
        .metric_data(datum)
        .send()
        .await
        .expect("put metric data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_takes_flowing_groups_from_one_metric_listing_and_reads_streams_only_for_the_others() {
    let op = Operator::start().await;
    // 30 s resync periods (the shortest allowed): the listing of one period names the groups of
    // the pipelines that read in the one before.
    let names = ["flowing-a", "flowing-b", "quiet", "stale"];
    for name in names {
        op.create(name, json!({"resyncInterval": "30s"})).await;
    }
    for name in names {
        op.ready(name).await;
    }
    // CloudWatch's per-group metric says the flowing pipelines' groups received events a minute
    // ago; their streams hold none. The stale one's last events are older than the 5 min grace.
    let now = std::time::SystemTime::now();
    for g in op.log_groups().await.into_iter().map(|g| g.name) {
        if g.contains("/flowing-") {
            incoming_log_events(&op, &g, now - Duration::from_secs(60), 12.0).await;
        } else if g.contains("/stale/") {
            incoming_log_events(&op, &g, now - Duration::from_secs(600), 12.0).await;
        }
    }
    op.aws.calls.reset();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for name in ["flowing-a", "flowing-b"] {
        let msg = loop {
            if let Some((status, reason, msg)) = op.condition_full(name, "DataFlowing")
                && status == "True"
            {
                assert_eq!(reason, "DataFlowing");
                break msg;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {:?}; calls {:?}",
                op.condition_full(name, "DataFlowing"),
                op.aws.calls.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            msg.contains("newest log event") && msg.contains("newest metric event"),
            "{msg}"
        );
        let t = op.pipeline(name).and_then(|p| p.status?.telemetry).expect("telemetry");
        let at: k8s_openapi::jiff::Timestamp = t
            .last_log_event_time
            .as_deref()
            .expect("recorded")
            .parse()
            .expect("RFC 3339");
        let seeded = (now - Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        let minute_start = seeded.as_secs() as i64 / 60 * 60;
        assert_eq!(at.as_second(), minute_start, "the start of the minute with events");
    }
    for name in ["quiet", "stale"] {
        let (status, reason, msg) = op.condition_full(name, "DataFlowing").expect("DataFlowing");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("Unknown", "WaitingForData"),
            "{name}: {msg}"
        );
        assert!(msg.contains("no log event"), "{name}: read from its streams: {msg}");
    }
    let calls = op.aws.calls.snapshot();
    println!("calls while the flowing pipelines turned True: {calls:?}");
    // One listing per 30 s period for the four pipelines: one call, not one per pipeline.
    let listings = op.aws.calls.of("GetMetricData");
    let periods = 120 / 30 + 1;
    assert!((1..=periods).contains(&listings), "{listings} GetMetricData calls");
    op.stop().await;
}

/// Waits until `n` more metric listings (GetMetricData calls, one per 30 s resync period here)
/// than `from` were taken, then for the period's slots (its first tenth, 3 s) to pass.
async fn wait_listings(op: &Operator, from: u64, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30 * (n + 2));
    while op.aws.calls.of("GetMetricData") < from + n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no listing: {:?}",
            op.aws.calls.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
}

/// Waits for the pipeline's slower checks that run once after its data stopped (they rewrite
/// `status.aws.kmsKeyCheckedAt`), so that they do not fall into a window that counts reads.
async fn wait_checked_after_stop(op: &Operator, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = op.pipeline(name).and_then(|p| p.status);
        let stopped = (status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "DataFlowing"))
            .map(|c| c.last_transition_time.0);
        let checked = (status.as_ref())
            .and_then(|s| s.aws.as_ref()?.kms_key_checked_at.as_ref())
            .map(|t| t.0);
        if let (Some(stopped), Some(checked)) = (stopped, checked)
            && checked >= stopped
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: the key was not checked after data stopped (stopped {stopped:?}, checked {checked:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_groups_streams_are_not_read_again_while_the_metric_listing_shows_nothing_new() {
    let op = Operator::start().await;
    // `silent`'s groups never receive an event, so CloudWatch never publishes their metric.
    let names = ["quiet-a", "quiet-b", "silent"];
    for name in names {
        // A 3 s grace period needs 1 s scrapes and 500 ms batches (see `short_grace_pipeline`).
        let spec = json!({"resyncInterval": "30s", "dataFlow": {"gracePeriod": "3s"},
            "metrics": {"dcgm": {"scrapeInterval": "1s"}}, "collector": {"batch": {"timeout": "500ms"}}});
        op.create(name, spec).await;
    }
    for name in names {
        op.ready(name).await;
        op.wait_reason(name, "DataFlowing", "False", "NoRecentLogs").await;
        wait_checked_after_stop(&op, name).await;
    }
    // Their groups received events ten minutes ago (CloudWatch's metric shows them: it is
    // published for these groups), their streams were read when the collectors became ready,
    // and nothing arrived since: the resyncs keep what the streams said, without reading them.
    // So do `silent`'s: the metric is published in this account (the listing shows the other
    // groups), and its silence says that nothing arrived there either.
    let seeded = std::time::SystemTime::now() - Duration::from_secs(600);
    for g in op.log_groups().await.into_iter().map(|g| g.name) {
        if g.contains("/quiet-") {
            incoming_log_events(&op, &g, seeded, 3.0).await;
        }
    }
    // The current period's listing may have been taken before the seeding (clean-clone CI: the
    // pipelines whose slots came after it read their streams, the metric not yet shown to be
    // published): count from the first period whose listing was taken after it.
    let listed = op.aws.calls.of("GetMetricData");
    wait_listings(&op, listed, 1).await;
    op.aws.calls.reset();
    wait_listings(&op, 0, 2).await;
    let calls = op.aws.calls.snapshot();
    println!("two resync periods of three quiet pipelines: {calls:?}");
    assert_eq!(
        op.aws.calls.of("DescribeLogStreams"),
        0,
        "quiet groups read again although nothing arrived: {calls:?}"
    );
    let silent = op.condition_full("silent", "DataFlowing").expect("DataFlowing");
    assert_eq!((silent.0.as_str(), silent.1.as_str()), ("False", "NoRecentLogs"));
    let silent_last = op
        .pipeline("silent")
        .and_then(|p| p.status?.telemetry?.last_log_event_time);
    let last_log = |name: &str| -> Option<k8s_openapi::jiff::Timestamp> {
        let t = op.pipeline(name)?.status?.telemetry?.last_log_event_time?;
        t.parse().ok()
    };
    let seeded_minute = seeded
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 60 * 60)
        .expect("after 1970");
    for name in ["quiet-a", "quiet-b"] {
        let (status, reason, _) = op.condition_full(name, "DataFlowing").expect("DataFlowing");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "NoRecentLogs"), "{name}");
        let at = last_log(name).map(|t| t.as_second());
        assert_eq!(
            at,
            Some(seeded_minute),
            "{name}: the metric's minute, newer than the streams'"
        );
    }

    // An event, and its minute in the metric: the next resync reads the streams and records it.
    op.log_once("quiet-a").await;
    let now = std::time::SystemTime::now();
    for g in op.log_groups().await.into_iter().map(|g| g.name) {
        if g.contains("/quiet-a/") {
            incoming_log_events(&op, &g, now, 1.0).await;
        }
    }
    let listed = op.aws.calls.of("GetMetricData");
    wait_listings(&op, listed, 1).await;
    assert!(
        op.aws.calls.of("DescribeLogStreams") >= 1,
        "{:?}",
        op.aws.calls.snapshot()
    );
    let at = last_log("quiet-a").map(|t| t.as_second()).unwrap_or_default();
    assert!(at > seeded_minute + 300, "the new event is recorded: {at}");
    let other = last_log("quiet-b").map(|t| t.as_second());
    assert_eq!(other, Some(seeded_minute), "quiet-b received nothing");
    let silent_now = op
        .pipeline("silent")
        .and_then(|p| p.status?.telemetry?.last_log_event_time);
    assert_eq!(silent_now, silent_last, "silent received nothing");
    op.stop().await;
}

/// Types (Normal/Warning) of the events published with `reason`, once there is one (events are
/// published after the status write).
async fn event_types(op: &Operator, reason: &str) -> Vec<String> {
    let published = |f: &support::apifake::ApiFake| -> Vec<String> {
        f.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events") && r.body["reason"] == reason)
            .map(|r| r.body["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    op.wait(&format!("a {reason} event"), |f| !published(f).is_empty())
        .await;
    published(&op.fake)
}

/// A pipeline with a 3 s grace period (1 s scrapes, 500 ms batches), once its DaemonSet exists.
async fn short_grace_pipeline(op: &Operator, name: &str) {
    let spec = json!({"dataFlow": {"gracePeriod": "3s"}, "metrics": {"dcgm": {"scrapeInterval": "1s"}},
        "collector": {"batch": {"timeout": "500ms"}}});
    op.create(name, spec).await;
    let ds = format!("mlobs-{name}");
    op.wait("the collector DaemonSet", |f| {
        f.object("apps/v1", "daemonsets", Some(NS), &ds).is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_flowing_waits_for_the_collector_turns_true_with_events_and_false_after_the_grace_period() {
    let op = Operator::start().await;
    short_grace_pipeline(&op, "flow").await;
    op.wait_reason("flow", "DataFlowing", "Unknown", "CollectorNotReady")
        .await;
    op.daemon_set_ready("flow");
    op.wait_condition("flow", "Ready", "True").await;
    // Ready, and no event in either group yet: one grace period to deliver a first one.
    op.wait_reason("flow", "DataFlowing", "Unknown", "WaitingForData").await;

    // The collector ships: events keep arriving in both groups until the operator has seen them
    // at a resync (requested here instead of waiting for spec.resyncInterval).
    let groups: Vec<String> = op
        .log_groups()
        .await
        .into_iter()
        .map(|g| g.name)
        .filter(|n| n.contains("/flow/"))
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let aws = op.aws.clone();
    let writer = tokio::spawn(async move {
        for i in 0.. {
            for g in &groups {
                let _ = aws
                    .logs
                    .create_log_stream()
                    .log_group_name(g)
                    .log_stream_name("gpu-0")
                    .send()
                    .await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_default();
                let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(now)
                    .message(format!("line {i}"))
                    .build()
                    .expect("event");
                aws.logs
                    .put_log_events()
                    .log_group_name(g)
                    .log_stream_name("gpu-0")
                    .log_events(event)
                    .send()
                    .await
                    .expect("put log events");
            }
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    op.request_reconcile("flow", 1).await;
    let msg = op.wait_reason("flow", "DataFlowing", "True", "DataFlowing").await;
    let _ = stop.send(());
    writer.await.expect("writer");
    let stopped_at = k8s_openapi::jiff::Timestamp::now();
    assert!(
        msg.contains("newest log event") && msg.contains("newest metric event"),
        "{msg}"
    );
    let t = op
        .pipeline("flow")
        .and_then(|p| p.status)
        .and_then(|s| s.telemetry)
        .expect("telemetry");
    for time in [&t.last_log_event_time, &t.last_metric_event_time] {
        let at: k8s_openapi::jiff::Timestamp = time.as_deref().expect("recorded").parse().expect("RFC 3339");
        let age = stopped_at.duration_since(at).as_secs();
        assert!((0..60).contains(&age), "{time:?} is {age}s before the writer stopped");
    }
    assert_eq!(event_types(&op, "DataFlowing").await, ["Normal"]);
    assert!(
        op.metrics
            .encode()
            .contains(r#"mlobs_pipeline_data_flowing{status="True",reason="DataFlowing"} 1"#)
    );

    // The collector stops: after the grace period the next look says so. Ready does not change.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    op.request_reconcile("flow", 2).await;
    let msg = op.wait_reason("flow", "DataFlowing", "False", "NoRecentLogs").await;
    assert!(msg.contains("/flow/logs") && msg.contains("/flow/metrics"), "{msg}");
    assert_eq!(
        op.condition("flow", "Ready"),
        Some(("True".into(), "Reconciled".into()))
    );
    assert_eq!(event_types(&op, "NoRecentLogs").await, ["Warning"]);
    let text = op.metrics.encode();
    assert!(
        text.contains(r#"mlobs_pipeline_data_flowing{status="False",reason="NoRecentLogs"} 1"#),
        "{text}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_data_turns_false_when_the_grace_period_ends_not_at_a_later_recheck() {
    let op = Operator::start().await;
    short_grace_pipeline(&op, "late").await;
    op.daemon_set_ready("late");
    op.wait_reason("late", "DataFlowing", "Unknown", "WaitingForData").await;
    // Nothing is ever sent. The re-check after a read that found nothing is 30 s away
    // (FIRST_RECHECK, then doubling), but the grace period ends within 3 s: the next read is due
    // then, and finds False. Nothing else asks for a read here (the resync is 10 minutes away).
    let waiting = std::time::Instant::now();
    let bound = Duration::from_secs(15);
    loop {
        let c = op.condition("late", "DataFlowing");
        if c.as_ref().is_some_and(|(s, r)| s == "False" && r == "NoRecentLogs") {
            break;
        }
        assert!(
            waiting.elapsed() < bound,
            "DataFlowing still {c:?} {:?} after WaitingForData, with a grace period of 3 s",
            waiting.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_by_alias_is_created_once_recorded_and_named_by_the_collector_config() {
    let op = Operator::start().await;
    let alias = moto::unique("gpu");
    op.create("byalias", json!({"metrics": {"prometheus": {"workspaceAlias": alias}}}))
        .await;
    op.wait_reason("byalias", "PrometheusReady", "True", "Reconciled").await;
    op.daemon_set_ready("byalias");
    op.ready("byalias").await;
    let aws = op
        .pipeline("byalias")
        .and_then(|p| p.status)
        .and_then(|s| s.aws)
        .expect("status.aws");
    assert_eq!(aws.amp_workspace_alias.as_deref(), Some(alias.as_str()));
    let arn = aws.amp_workspace_arn.expect("status.aws.ampWorkspaceArn");
    let listed = moto::clients()
        .await
        .amp
        .list_workspaces()
        .alias(&alias)
        .send()
        .await
        .expect("list");
    let arns: Vec<&str> = listed.workspaces().iter().map(|w| w.arn()).collect();
    assert_eq!(arns, vec![arn.as_str()], "exactly one workspace of the alias");
    let id = arn.rsplit('/').next().unwrap_or_default();
    let cm = op
        .fake
        .object("v1", "configmaps", Some(NS), "mlobs-byalias")
        .expect("the collector config");
    let config = cm["data"]["config.yaml"].as_str().unwrap_or_default().to_string();
    assert!(
        config.contains(&format!("/workspaces/{id}/api/v1/remote_write")),
        "{config}"
    );
    assert!(!config.contains("once created"), "{config}");
    // The role gained aps:RemoteWrite because the plan changed (the id became known): an update,
    // not drift.
    let drift = op
        .pipeline("byalias")
        .and_then(|p| p.status)
        .map(|s| s.drift)
        .unwrap_or_default();
    assert!(drift.is_empty(), "{drift:?}");
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_ready_follows_the_amp_workspace_and_ready_waits_for_it() {
    let op = Operator::start().await;
    let amp = moto::clients().await.amp;
    let ws = amp
        .create_workspace()
        .alias(moto::unique("ws"))
        .send()
        .await
        .expect("moto creates a workspace");
    op.create("amp", json!({"metrics": {"prometheus": {"workspaceArn": ws.arn()}}}))
        .await;
    op.wait_reason("amp", "PrometheusReady", "True", "Reconciled").await;
    let status = op.pipeline("amp").and_then(|p| p.status).expect("status");
    let d = status.destinations.expect("status.destinations");
    assert_eq!(d.prometheus_workspace_arn.as_deref(), Some(ws.arn()));
    let url = d.remote_write_url.unwrap_or_default();
    assert!(
        url.ends_with(&format!("/workspaces/{}/api/v1/remote_write", ws.workspace_id())),
        "{url}"
    );

    let missing = "arn:aws:aps:us-east-1:123456789012:workspace/ws-00000000-0000-0000-0000-000000000000";
    op.create("gone", json!({"metrics": {"prometheus": {"workspaceArn": missing}}}))
        .await;
    let msg = op
        .wait_reason("gone", "PrometheusReady", "False", "WorkspaceNotFound")
        .await;
    assert!(msg.contains(missing), "{msg}");
    assert_eq!(op.condition("gone", "Ready").map(|c| c.0).as_deref(), Some("False"));
    // A pipeline without the destination has no such condition.
    op.create("plain", json!({})).await;
    op.wait_condition("plain", "LogGroupsReady", "True").await;
    assert_eq!(op.condition("plain", "PrometheusReady"), None);
    op.stop().await;
}

/// Status is written with the resourceVersion it was computed against: a reconcile handed an
/// older copy by the cache (the real server showed one writing back a PrometheusReady observed
/// two reconciles earlier) is refused with 409 and reconciles again from the newer copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_are_conditional_on_the_copy_they_were_computed_from() {
    let op = Operator::start().await;
    // The first status write is refused as if the object had changed meanwhile.
    op.fake
        .fail_next("PATCH", "/mlobservabilitypipelines/rv/status", 409, 1);
    op.create("rv", json!({})).await;
    op.ready("rv").await;
    // The computed status; not the kmsKeyCreateStarted marker, written unconditionally before
    // CreateKey on purpose.
    let patches: Vec<_> = (op.fake.requests().into_iter())
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/mlobservabilitypipelines/rv/status"))
        .filter(|r| r.body.pointer("/status/conditions").is_some())
        .collect();
    assert!(patches.len() >= 2, "{patches:?}");
    for r in &patches {
        assert!(
            r.body
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty()),
            "a status write without its base version: {}",
            r.body
        );
    }
    op.stop().await;
}
