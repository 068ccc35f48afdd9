//! Where collectors and exporters run, and what a pipeline says when they cannot: the exporter
//! mode switched, no matching GPU node yet, a namespace that enforces Pod Security `baseline`, a
//! collector no GPU node can fit; and the policy's counts of the pipelines it governs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use serde_json::json;

use crate::support::*;

/// Merge-patches the spec of the test's own policy (named like its namespace).
async fn patch_policy(c: &Client, name: &str, spec: serde_json::Value) -> Result<()> {
    policies(c)
        .patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec})))
        .await
        .with_context(|| format!("patching GpuTelemetryPolicy {name}"))?;
    Ok(())
}

fn policy_condition(p: &GpuTelemetryPolicy, t: &str) -> Option<(String, String, String)> {
    let c = p.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// (status, reason, message) of a pipeline condition, or an error naming what is there.
fn cond(p: &MLObservabilityPipeline, t: &str) -> Result<(String, String, String)> {
    let c = condition(p, t).with_context(|| format!("no {t}; {}", conditions_summary(p)))?;
    Ok((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// `status.collector`'s (desiredNodes, readyNodes).
fn collector_nodes(p: &MLObservabilityPipeline) -> Option<(i32, i32)> {
    let c = p.status.as_ref()?.collector.as_ref()?;
    Some((c.desired_nodes, c.ready_nodes))
}

/// Waits until `check` accepts the pipeline.
async fn wait_pipeline(
    c: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&MLObservabilityPipeline) -> Result<()>,
) -> Result<MLObservabilityPipeline> {
    let api = pipelines(c, ns);
    let (api, check) = (&api, &check);
    let start = Instant::now();
    let p = wait_for(what, READY_TIMEOUT, async || {
        let p = api.get(name).await?;
        heal_node_flap(c, &p).await?;
        check(&p)?;
        Ok(p)
    })
    .await?;
    println!("{ns}/{name}: {what} after {:.1} s", start.elapsed().as_secs_f64());
    Ok(p)
}

/// Running pods with `selector` in `ns`, by node.
pub(crate) async fn running_pods_by_node(c: &Client, ns: &str, selector: &str) -> Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?;
    let mut nodes: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// Objects of kind `K` with `selector`, in every namespace, as `namespace/name`.
async fn everywhere<K>(c: &Client, selector: &str) -> Result<Vec<String>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(Api::<K>::all(c.clone())
        .list_metadata(&ListParams::default().labels(selector))
        .await?
        .items
        .iter()
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
        .collect())
}

#[tokio::test]
async fn managed_to_external_deletes_the_exporter_and_external_without_pods_is_not_ready() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "exporter-mode").await?;
    let ns = guard.name.as_str();
    // The test's policy is Managed (the default): its exporter runs in the operator's namespace.
    create_pipeline(&c, &pipeline(ns, "scrape", json!({}))?).await?;
    wait_ready(&c, ns, "scrape").await?;
    let exporter = format!("mlobs.io/policy={ns},app.kubernetes.io/name=mlobs-dcgm-exporter");
    let exporter = exporter.as_str();
    let managed = [
        everywhere::<DaemonSet>(&c, exporter).await?,
        everywhere::<ConfigMap>(&c, exporter).await?,
        everywhere::<Service>(&c, exporter).await?,
    ];
    ensure!(
        managed.iter().all(|x| x.len() == 1),
        "the Managed exporter is one DaemonSet, ConfigMap and Service: {managed:?}"
    );

    // Switch to an existing exporter that does not exist yet.
    let app = format!("fake-dcgm-{}", random_suffix());
    patch_policy(
        &c,
        ns,
        json!({"dcgmExporter": {"mode": "External", "namespace": ns, "podSelector": {"app": app}}}),
    )
    .await?;
    let start = Instant::now();
    wait_for("the Managed exporter's objects deleted", GC_TIMEOUT, async || {
        let left = [
            everywhere::<DaemonSet>(&c, exporter).await?,
            everywhere::<ConfigMap>(&c, exporter).await?,
            everywhere::<Service>(&c, exporter).await?,
        ];
        ensure!(left.iter().all(Vec::is_empty), "still there: {left:?}");
        Ok(())
    })
    .await?;
    println!(
        "Managed exporter deleted {:.1} s after the switch",
        start.elapsed().as_secs_f64()
    );

    let pols = policies(&c);
    let pols = &pols;
    wait_for(
        "policy MetricsSourceReady=False NoExporterPods",
        READY_TIMEOUT,
        async || {
            let p = pols.get(ns).await?;
            let got = policy_condition(&p, "MetricsSourceReady");
            ensure!(
                got.as_ref()
                    .is_some_and(|(s, r, _)| s == "False" && r == "NoExporterPods"),
                "policy MetricsSourceReady {got:?}"
            );
            Ok(())
        },
    )
    .await?;
    let p = wait_pipeline(&c, ns, "scrape", "MetricsSourceReady=False NoExporterPods", |p| {
        let (s, r, _) = cond(p, "MetricsSourceReady")?;
        ensure!(s == "False" && r == "NoExporterPods", "{}", conditions_summary(p));
        ensure!(condition_status(p, "Ready") == "False", "{}", conditions_summary(p));
        Ok(())
    })
    .await?;
    let (_, _, msg) = cond(&p, "MetricsSourceReady")?;
    ensure!(
        msg.contains(&app) && msg.contains(ns),
        "the message names selector and namespace: {msg}"
    );

    // The existing exporter appears on the GPU nodes: the pipeline becomes Ready by itself.
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "dcgm", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                "spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "containers": [{"name": "exporter", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"}]}}}
    }))?;
    Api::<DaemonSet>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &ds)
        .await?;
    wait_pipeline(
        &c,
        ns,
        "scrape",
        "MetricsSourceReady=True with the external exporter",
        |p| {
            let (s, _, _) = cond(p, "MetricsSourceReady")?;
            ensure!(s == "True", "{}", conditions_summary(p));
            Ok(())
        },
    )
    .await?;
    // The new scrape target changed the collector config: its pods roll one node at a time, which
    // takes kwok and the DaemonSet controller a while on a loaded machine.
    let api = pipelines(&c, ns);
    let api = &api;
    wait_for(
        "Ready=True after the collector rolled out",
        READY_TIMEOUT * 2,
        async || {
            let p = api.get("scrape").await?;
            heal_node_flap(&c, &p).await?;
            ensure!(is_ready(&p), "{}", conditions_summary(&p));
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// A kwok node carrying `label` and deleted when dropped.
struct PoolNode {
    name: String,
}

impl PoolNode {
    async fn create(c: &Client, label: (&str, &str)) -> Result<PoolNode> {
        PoolNode::create_with_taints(c, label, json!([])).await
    }

    /// A node with `taints` (`spec.taints`), as a dedicated GPU node group has.
    async fn create_with_taints(c: &Client, label: (&str, &str), taints: serde_json::Value) -> Result<PoolNode> {
        let name = format!("e2e-pool-{}", random_suffix());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "node.kubernetes.io/instance-type": "g5.xlarge", label.0: label.1}},
            "spec": {"taints": taints},
            "status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "1"},
                "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "1"}}
        }))?;
        Api::<Node>::all(c.clone())
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating node {name}"))?;
        Ok(PoolNode { name })
    }
}

impl Drop for PoolNode {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let c = Client::try_default().await?;
                let r = Api::<Node>::all(c).delete(&name, &DeleteParams::background()).await;
                ignore_not_found(r.map(|_| ()))?;
                Ok(())
            })
        })
        .join();
    }
}

#[tokio::test]
async fn no_matching_gpu_node_is_ready_with_a_message_and_a_new_node_gets_the_collector() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "no-gpu-nodes").await?;
    let ns = guard.name.as_str();
    // A node group of this test's own, scaled to zero: no node carries the label yet.
    let pool = ("mlobs-e2e/pool", ns);
    patch_policy(&c, ns, json!({"nodeSelector": {pool.0: pool.1}})).await?;
    create_pipeline(&c, &pipeline(ns, "idle", json!({}))?).await?;
    let p = wait_pipeline(&c, ns, "idle", "Ready=True with no GPU node", |p| {
        ensure!(is_ready(p), "{}", conditions_summary(p));
        let (s, r, _) = cond(p, "CollectorReady")?;
        ensure!(s == "True" && r == "NoGpuNodes", "{}", conditions_summary(p));
        Ok(())
    })
    .await?;
    let (_, _, msg) = cond(&p, "Ready")?;
    ensure!(msg.contains("nothing runs yet"), "Ready says nothing runs yet: {msg}");
    ensure!(
        condition_status(&p, "Reconciling") == "False",
        "{}",
        conditions_summary(&p)
    );
    ensure!(
        collector_nodes(&p) == Some((0, 0)),
        "status.collector (desiredNodes, readyNodes) {:?}",
        collector_nodes(&p)
    );

    // The node group scales up: one node joins.
    let node = PoolNode::create(&c, pool).await?;
    let start = Instant::now();
    let p = wait_pipeline(&c, ns, "idle", "readyNodes 1 on the new node", |p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.collector.as_ref())
            .map(|x| x.ready_nodes);
        let (_, r, _) = cond(p, "CollectorReady")?;
        ensure!(
            ready == Some(1) && r == "Reconciled" && is_ready(p),
            "readyNodes {ready:?}; {}",
            conditions_summary(p)
        );
        Ok(())
    })
    .await?;
    println!(
        "collector ready on the new node {:.1} s after it joined",
        start.elapsed().as_secs_f64()
    );
    let on = running_pods_by_node(&c, ns, &child_selector(ns, "idle")).await?;
    ensure!(
        on == vec![node.name.clone()],
        "collector pods run on {on:?}, not only {}",
        node.name
    );
    ensure!(
        p.status.and_then(|s| s.telemetry).map(|t| t.gpu_nodes) == Some(1),
        "telemetry counts the node"
    );
    Ok(())
}

#[tokio::test]
async fn a_baseline_namespace_reports_the_rejection_and_a_collector_namespace_runs_the_collector() -> Result<()> {
    let c = client().await?;
    let team = TestNs::create(&c, "baseline-team").await?;
    let ns = team.name.as_str();
    let collectors = TestNs::create(&c, "collectors").await?;
    let cns = collectors.name.as_str();
    Api::<Namespace>::all(c.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}})),
        )
        .await?;
    create_pipeline(&c, &pipeline(ns, "train", json!({}))?).await?;
    let p = wait_pipeline(&c, ns, "train", "CollectorReady=False PodSecurityForbidden", |p| {
        let (s, r, _) = cond(p, "CollectorReady")?;
        ensure!(s == "False" && r == "PodSecurityForbidden", "{}", conditions_summary(p));
        Ok(())
    })
    .await?;
    let (_, _, msg) = cond(&p, "CollectorReady")?;
    ensure!(
        msg.contains("baseline") && msg.contains("hostPath") && msg.contains("collectorNamespace"),
        "the message says why and what to do: {msg}"
    );
    ensure!(
        condition_status(&p, "Ready") == "False" && condition_status(&p, "Stalled") == "True",
        "{}",
        conditions_summary(&p)
    );
    println!("reported: {msg}");

    // The platform team runs collectors in a namespace that allows hostPath.
    patch_policy(&c, ns, json!({"collectorNamespace": cns})).await?;
    let gpus = gpu_nodes(&c).await?.len();
    wait_pipeline(&c, ns, "train", "Ready=True with the collector elsewhere", |p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.collector.as_ref())
            .map(|x| x.ready_nodes);
        ensure!(
            is_ready(p) && ready == Some(i32::try_from(gpus)?),
            "readyNodes {ready:?} of {gpus}; {}",
            conditions_summary(p)
        );
        Ok(())
    })
    .await?;
    let sel = child_selector(ns, "train");
    let mut on = running_pods_by_node(&c, cns, &sel).await?;
    on.dedup();
    let mut want = gpu_nodes(&c).await?;
    want.sort();
    ensure!(on == want, "collector pods in {cns} run on {on:?}, want {want:?}");
    let left = Api::<DaemonSet>::namespaced(c.clone(), ns)
        .list_metadata(&ListParams::default().labels(&sel))
        .await?;
    ensure!(left.items.is_empty(), "the rejected DaemonSet in {ns} was pruned");

    // Deleting the pipeline removes what runs in the other namespace (no owner reference there).
    pipelines(&c, ns).delete("train", &DeleteParams::default()).await?;
    let lp = ListParams::default().labels(&sel);
    let lp = &lp;
    wait_for(
        "collector objects in the collector namespace removed",
        GC_TIMEOUT,
        async || {
            let n = [
                Api::<DaemonSet>::namespaced(c.clone(), cns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
                Api::<ConfigMap>::namespaced(c.clone(), cns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
                Api::<ServiceAccount>::namespaced(c.clone(), cns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
            ];
            ensure!(n == [0; 3], "left (DaemonSet, ConfigMap, ServiceAccount): {n:?}");
            Ok(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_collector_no_gpu_node_can_fit_reports_the_schedulers_reason_and_runs_once_it_fits() -> Result<()> {
    let c = client().await?;
    let team = TestNs::create(&c, "unschedulable").await?;
    let ns = team.name.as_str();
    // More CPU than a GPU node has (the test cluster's GPU nodes have 96).
    let resources = |cpu: &str| json!({"collector": {"resources": {"requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"memory": "512Mi"}}}});
    create_pipeline(&c, &pipeline(ns, "train", resources("500"))?).await?;
    let p = wait_pipeline(&c, ns, "train", "CollectorReady=False CollectorUnschedulable", |p| {
        let (s, r, _) = cond(p, "CollectorReady")?;
        ensure!(
            s == "False" && r == "CollectorUnschedulable",
            "{}",
            conditions_summary(p)
        );
        Ok(())
    })
    .await?;
    let (_, _, msg) = cond(&p, "CollectorReady")?;
    ensure!(
        msg.contains("cannot be scheduled") && msg.contains("Insufficient cpu"),
        "the message quotes the scheduler: {msg}"
    );
    let (ready, ready_reason, _) = cond(&p, "Ready")?;
    ensure!(
        ready == "False" && ready_reason == "CollectorUnschedulable",
        "{}",
        conditions_summary(&p)
    );
    ensure!(
        condition_status(&p, "Stalled") != "True",
        "not terminal: the scheduler keeps trying; {}",
        conditions_summary(&p)
    );
    println!("reported: {msg}");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let warned = events.items.iter().any(|e| {
        e.type_.as_deref() == Some("Warning")
            && e.reason.as_deref() == Some("CollectorUnschedulable")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("train")
    });
    ensure!(warned, "a Warning event CollectorUnschedulable on the pipeline");

    // A request the nodes can fit: the collector runs and the pipeline is Ready.
    pipelines(&c, ns)
        .patch(
            "train",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": resources("100m")})),
        )
        .await?;
    wait_pipeline(&c, ns, "train", "Ready=True once the collector fits", |p| {
        ensure!(is_ready(p), "{}", conditions_summary(p));
        Ok(())
    })
    .await?;
    Ok(())
}

/// A GPU node group with a taint the collector does not tolerate: the node matches the selector,
/// but the DaemonSet controller schedules the collector on no node (`desiredNumberScheduled` 0).
/// Before, "0/0 GPU nodes run a ready collector" was CollectorReady True while nothing collected
/// (CI showed it when both of a test's nodes went NotReady and got the `unreachable` taint).
/// Now CollectorReady is False (`CollectorUnschedulable`) naming the taint as the likely cause,
/// and the collector runs once the policy tolerates it.
#[tokio::test]
async fn a_gpu_node_whose_taint_the_collector_does_not_tolerate_is_reported_until_tolerated() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "tainted").await?;
    let ns = guard.name.as_str();
    let pool = ("mlobs-e2e/pool", ns);
    let taint = json!({"key": "mlobs-e2e/dedicated", "value": ns, "effect": "NoSchedule"});
    patch_policy(&c, ns, json!({"nodeSelector": {pool.0: pool.1}})).await?;
    let node = PoolNode::create_with_taints(&c, pool, json!([taint])).await?;
    create_pipeline(&c, &pipeline(ns, "train", json!({}))?).await?;
    let p = wait_pipeline(&c, ns, "train", "CollectorReady=False CollectorUnschedulable", |p| {
        let (s, r, m) = cond(p, "CollectorReady")?;
        ensure!(
            s == "False" && r == "CollectorUnschedulable" && m.starts_with("1 GPU node(s) match"),
            "{}",
            conditions_summary(p)
        );
        Ok(())
    })
    .await?;
    ensure!(
        !is_ready(&p),
        "Ready with the collector on no node: {}",
        conditions_summary(&p)
    );
    ensure!(
        collector_nodes(&p) == Some((0, 0)),
        "status.collector (desiredNodes, readyNodes) {:?}",
        collector_nodes(&p)
    );
    let (_, _, m) = cond(&p, "CollectorReady")?;
    ensure!(m.contains("taint"), "the message names the likely cause: {m}");
    println!("reported: {m}");

    // The platform team tolerates the node group's taint: the collector runs there.
    let tolerate = json!([{"key": "mlobs-e2e/dedicated", "operator": "Exists", "effect": "NoSchedule"}]);
    patch_policy(&c, ns, json!({"tolerations": tolerate})).await?;
    wait_pipeline(
        &c,
        ns,
        "train",
        "Ready=True with the collector on the tainted node",
        |p| {
            let ready = collector_nodes(p);
            let (_, r, _) = cond(p, "CollectorReady")?;
            ensure!(
                ready == Some((1, 1)) && r == "Reconciled" && is_ready(p),
                "collector (desired, ready) {ready:?}; {}",
                conditions_summary(p)
            );
            Ok(())
        },
    )
    .await?;
    let on = running_pods_by_node(&c, ns, &child_selector(ns, "train")).await?;
    ensure!(
        on == vec![node.name.clone()],
        "collector pods run on {on:?}, not only {}",
        node.name
    );
    Ok(())
}

/// The policy's `status.pipelines` as (total, nonCompliant), once it is `expected`.
async fn wait_counts(c: &Client, policy: &str, expected: (i32, i32), what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(60), async || {
        let p = policies(c).get(policy).await?;
        let counts = p.status.and_then(|s| s.pipelines).map(|x| (x.total, x.non_compliant));
        ensure!(
            counts == Some(expected),
            "status.pipelines (total, nonCompliant) {counts:?}"
        );
        Ok(())
    })
    .await
}

/// The policy controller is triggered only by pipeline changes that move its counts (created,
/// deleted, `PolicyCompliant` turned, `policyRef` changed), from the cache the counts are read
/// from: each such change must still show in the counts, with no later write of the pipeline to
/// carry it.
#[tokio::test]
async fn policy_counts_follow_pipelines_created_made_compliant_and_deleted() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "counts").await?;
    let ns = guard.name.as_str();
    patch_policy(&c, ns, json!({"logs": {"minRetentionInDays": 7}})).await?;
    create_pipeline(&c, &pipeline(ns, "train", json!({}))?).await?;
    let short = json!({"logs": {"logGroup": {"retentionInDays": 3}}});
    create_pipeline(&c, &pipeline(ns, "short", short)?).await?;
    wait_counts(
        &c,
        ns,
        (2, 1),
        "2 pipelines counted, the short-retention one non-compliant",
    )
    .await?;

    // Made compliant: its PolicyCompliant turns True, and that change alone moves the count.
    let longer = json!({"spec": {"logs": {"logGroup": {"retentionInDays": 14}}}});
    (pipelines(&c, ns).patch("short", &PatchParams::default(), &Patch::Merge(&longer)))
        .await
        .context("retention 14 on short")?;
    wait_counts(&c, ns, (2, 0), "both pipelines compliant").await?;

    // Moved to no policy of this test (another policy's name): it leaves this policy's count.
    let elsewhere = json!({"spec": {"policyRef": "no-such-policy"}});
    (pipelines(&c, ns).patch("short", &PatchParams::default(), &Patch::Merge(&elsewhere)))
        .await
        .context("policyRef no-such-policy on short")?;
    wait_counts(&c, ns, (1, 0), "short moved to another policy").await?;

    pipelines(&c, ns).delete("train", &DeleteParams::default()).await?;
    wait_counts(&c, ns, (0, 0), "train deleted").await?;
    Ok(())
}
