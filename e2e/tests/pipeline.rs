//! A pipeline's life on a real cluster: AWS before the collector, the collector on GPU nodes only,
//! hand edits put back, deletion under Retain and Delete.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mlobs::crd::MLObservabilityPipeline;
use serde_json::{Value, json};

use crate::support::*;

/// The one object of a kind carrying the pipeline's label in `ns`.
async fn only_child<K>(api: &Api<K>, selector: &str) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("listing {} with {selector}", std::any::type_name::<K>()))?;
    ensure!(
        list.items.len() == 1,
        "expected exactly one {} with {selector}, found {}",
        std::any::type_name::<K>(),
        list.items.len()
    );
    list.items.into_iter().next().context("one item")
}

fn creation_secs<K: kube::Resource>(o: &K) -> Result<i64> {
    Ok(o.meta()
        .creation_timestamp
        .as_ref()
        .context("creationTimestamp")?
        .0
        .as_second())
}

/// config/samples/pipeline-minimal.yaml in namespace `ns`, with `deletionPolicy: Delete` and the
/// test's own policy.
fn sample_pipeline(ns: &str) -> Result<MLObservabilityPipeline> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/pipeline-minimal.yaml");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut v: Value = serde_saphyr::from_str(&text).with_context(|| format!("parsing {path}"))?;
    merge(
        &mut v,
        json!({"metadata": {"namespace": ns}, "spec": {"deletionPolicy": "Delete", "policyRef": ns}}),
    );
    serde_json::from_value(v).context("the sample is a pipeline")
}

#[tokio::test]
async fn sample_pipeline_gets_aws_first_then_collector_on_gpu_nodes_only_and_ready() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "sample").await?;
    let ns = ns.name.as_str();
    let p = sample_pipeline(ns)?;
    let name = p.name_any();
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, &name).await?;
    let status = p.status.clone().context("status")?;
    let st = status.aws.clone().context("status.aws")?;
    let aws = aws().await?;

    // AWS: the key, the log groups encrypted with it, the role.
    let key_arn = st.kms_key_arn.clone().context("status.aws.kmsKeyArn")?;
    let key = aws
        .kms
        .describe_key()
        .key_id(&key_arn)
        .send()
        .await
        .with_context(|| format!("DescribeKey {key_arn}"))?
        .key_metadata
        .context("key metadata")?;
    ensure!(key.enabled, "KMS key {key_arn} is not enabled: {:?}", key.key_state);
    let mut aws_created_secs = key.creation_date.map(|d| d.secs()).unwrap_or_default();
    ensure!(!st.log_group_arns.is_empty(), "status.aws.logGroupArns is empty");
    for arn in &st.log_group_arns {
        let lg_name = log_group_name(arn)?;
        ensure!(
            lg_name.contains(&format!("/{ns}/{name}/")),
            "log group {lg_name} is not named after {ns}/{name}"
        );
        let g = log_group(&aws, &lg_name)
            .await?
            .with_context(|| format!("log group {lg_name} does not exist in moto"))?;
        ensure!(
            g.kms_key_id.as_deref() == Some(key_arn.as_str()),
            "log group {lg_name} has kmsKeyId {:?}, expected {key_arn}",
            g.kms_key_id
        );
        aws_created_secs = aws_created_secs.max(g.creation_time.unwrap_or_default() / 1000);
    }
    let role_arn = st.role_arn.clone().context("status.aws.roleArn")?;
    let role = aws
        .iam
        .get_role()
        .role_name(role_name(&role_arn)?)
        .send()
        .await
        .with_context(|| format!("GetRole {role_arn}"))?
        .role
        .context("role")?;
    aws_created_secs = aws_created_secs.max(role.create_date.secs());

    // Children, found by the pipeline label.
    let sel = child_selector(ns, &name);
    let ds = only_child(&Api::<DaemonSet>::namespaced(c.clone(), ns), &sel).await?;
    only_child(&Api::<ConfigMap>::namespaced(c.clone(), ns), &sel).await?;
    only_child(&Api::<ServiceAccount>::namespaced(c.clone(), ns), &sel).await?;
    only_child(&Api::<ClusterRole>::all(c.clone()), &sel).await?;
    only_child(&Api::<ClusterRoleBinding>::all(c.clone()), &sel).await?;
    let ds_secs = creation_secs(&ds)?;
    println!("AWS side created by {aws_created_secs} s, DaemonSet at {ds_secs} s (epoch)");
    ensure!(
        ds_secs >= aws_created_secs,
        "the collector DaemonSet ({ds_secs}) was created before the AWS side was ready ({aws_created_secs})"
    );

    // Collector pods: one Running pod on every GPU node, none elsewhere.
    let gpu = gpu_nodes(&c).await?;
    ensure!(!gpu.is_empty(), "the cluster has no GPU nodes (label {GPU_NODE_LABEL})");
    let pods_api = Api::<Pod>::namespaced(c.clone(), ns);
    let (pods_api, sel, gpu) = (&pods_api, &sel, &gpu);
    wait_for("a Running collector pod on every GPU node", READY_TIMEOUT, async || {
        let pods = pods_api.list(&ListParams::default().labels(sel)).await?;
        let mut on: Vec<String> = vec![];
        for p in &pods.items {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            ensure!(
                node.is_empty() || gpu.contains(&node),
                "collector pod {} is on non-GPU node {node}",
                p.name_any()
            );
            if phase == "Running" {
                on.push(node);
            }
        }
        on.sort();
        let mut want = gpu.clone();
        want.sort();
        ensure!(on == want, "Running collector pods on {on:?}, GPU nodes {want:?}");
        Ok(())
    })
    .await?;
    let cpu_nodes: Vec<String> = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .filter(|n| !gpu.contains(n))
        .collect();
    println!("GPU nodes {gpu:?}; no collector on {cpu_nodes:?}");

    let api = pipelines(&c, ns);
    let api = &api;
    let n = i32::try_from(gpu.len())?;
    wait_for("status.collector.readyNodes == GPU nodes", READY_TIMEOUT, async || {
        let p = api.get(&name).await?;
        heal_node_flap(&c, &p).await?;
        let col = p.status.as_ref().and_then(|s| s.collector.clone()).unwrap_or_default();
        ensure!(
            col.ready_nodes == n && is_ready(&p),
            "collector {col:?} (want readyNodes {n}); {}",
            conditions_summary(&p)
        );
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn hand_edit_of_collector_is_put_back_with_one_drift_record() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "hand-edit").await?;
    let ns = ns.name.as_str();
    let name = "edited";
    create_pipeline(&c, &pipeline(ns, name, json!({}))?).await?;
    wait_ready(&c, ns, name).await?;
    let sel = child_selector(ns, name);
    let ds_api = Api::<DaemonSet>::namespaced(c.clone(), ns);
    let cm_api = Api::<ConfigMap>::namespaced(c.clone(), ns);
    let ds = only_child(&ds_api, &sel).await?;
    let cm = only_child(&cm_api, &sel).await?;
    let ds_name = ds.name_any();
    let cm_name = cm.name_any();
    let generation_before = ds.metadata.generation.unwrap_or_default();

    let container = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .context("the DaemonSet has a container")?;
    let (container_name, image) = (container.name.clone(), container.image.clone().unwrap_or_default());
    let data = cm.data.clone().unwrap_or_default();
    let (key, value) = data.iter().next().context("the ConfigMap has data")?;
    let (key, value) = (key.clone(), value.clone());

    // What `kubectl edit` does: an Update-type patch under the manager kubectl-edit.
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    ds_api
        .patch(
            &ds_name,
            &pp,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": container_name, "image": "registry.invalid/hand-edited:1"}
            ]}}}})),
        )
        .await
        .context("editing the DaemonSet")?;
    cm_api
        .patch(
            &cm_name,
            &pp,
            &Patch::Merge(json!({"data": {key.clone(): format!("{value}\n# edited by hand\n")}})),
        )
        .await
        .context("editing the ConfigMap")?;
    let start = Instant::now();

    let (ds_api, cm_api) = (&ds_api, &cm_api);
    let (ds_name, cm_name, key, value, image) = (&ds_name, &cm_name, &key, &value, &image);
    wait_for("the DaemonSet and ConfigMap put back", READY_TIMEOUT, async || {
        let ds = ds_api.get(ds_name).await?;
        let live = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        ensure!(&live == image, "DaemonSet image is {live}");
        let cm = cm_api.get(cm_name).await?;
        let live = cm.data.as_ref().and_then(|d| d.get(key)).cloned().unwrap_or_default();
        ensure!(&live == value, "ConfigMap {key} is still edited");
        Ok(())
    })
    .await?;
    println!("put back after {:.1} s", start.elapsed().as_secs_f64());

    let api = pipelines(&c, ns);
    let api = &api;
    let drift_of = |p: &MLObservabilityPipeline, kind: &str| {
        p.status
            .as_ref()
            .map(|s| s.drift.iter().filter(|d| d.resource.starts_with(kind)).count())
            .unwrap_or_default()
    };
    let p = wait_for(
        "one drift record per edited resource",
        Duration::from_secs(60),
        async || {
            let p = api.get(name).await?;
            let (d, m) = (drift_of(&p, "DaemonSet"), drift_of(&p, "ConfigMap"));
            ensure!(
                d == 1 && m == 1,
                "drift records: {d} DaemonSet, {m} ConfigMap: {:?}",
                p.status.as_ref().map(|s| &s.drift)
            );
            Ok(p)
        },
    )
    .await?;
    let drift = p.status.as_ref().map(|s| s.drift.clone()).unwrap_or_default();
    println!("drift: {drift:#?}");
    for d in &drift {
        ensure!(
            d.action.as_deref() == Some("Corrected"),
            "drift record {d:?} is not Corrected"
        );
    }

    // And it does not keep growing (no fight with the DaemonSet controller's defaults).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let later = api.get(name).await?;
    let later_drift = later.status.as_ref().map(|s| s.drift.clone()).unwrap_or_default();
    ensure!(
        later_drift == drift,
        "status.drift changed within 20 s of the correction: {later_drift:#?}"
    );
    let ds = ds_api.get(ds_name).await?;
    ensure!(
        ds.metadata.generation == Some(generation_before + 2),
        "DaemonSet generation {:?} (was {generation_before}): the edit and its correction should be its only spec changes",
        ds.metadata.generation
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_pipeline_under_retain_and_delete_handles_aws_and_children() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "deletion").await?;
    let ns = ns.name.as_str();
    let aws = aws().await?;
    create_pipeline(&c, &pipeline(ns, "retain", json!({"deletionPolicy": "Retain"}))?).await?;
    create_pipeline(&c, &pipeline(ns, "delete", json!({"deletionPolicy": "Delete"}))?).await?;
    let mut groups = vec![];
    let mut roles = vec![];
    for name in ["retain", "delete"] {
        let p = wait_ready(&c, ns, name).await?;
        let st = p.status.and_then(|s| s.aws).context("status.aws")?;
        let g: Vec<String> = st
            .log_group_arns
            .iter()
            .map(|a| log_group_name(a))
            .collect::<Result<_>>()?;
        ensure!(!g.is_empty(), "{name}: no log groups in status");
        groups.push(g);
        roles.push(role_name(&st.role_arn.context("status.aws.roleArn")?)?);
    }

    let api = pipelines(&c, ns);
    for name in ["retain", "delete"] {
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {name}"))?;
    }
    let start = Instant::now();
    let api = &api;
    for name in ["retain", "delete"] {
        wait_for(
            &format!("pipeline {name} gone (finalizer removed)"),
            READY_TIMEOUT,
            async || match api.get_opt(name).await? {
                None => Ok(()),
                Some(p) => not_yet(format!(
                    "still there with finalizers {:?}; {}",
                    p.metadata.finalizers,
                    conditions_summary(&p)
                )),
            },
        )
        .await?;
    }
    println!("both pipelines gone after {:.1} s", start.elapsed().as_secs_f64());

    for g in &groups[0] {
        ensure!(log_group(&aws, g).await?.is_some(), "Retain: log group {g} was deleted");
    }
    ensure!(
        role_exists(&aws, &roles[0]).await?,
        "Retain: role {} was deleted",
        roles[0]
    );
    for g in &groups[1] {
        ensure!(
            log_group(&aws, g).await?.is_none(),
            "Delete: log group {g} still exists"
        );
    }
    ensure!(
        !role_exists(&aws, &roles[1]).await?,
        "Delete: role {} still exists",
        roles[1]
    );

    // Children: namespaced ones by the garbage collector (owner references), the cluster-scoped
    // RBAC by the operator.
    for name in ["retain", "delete"] {
        let sel = child_selector(ns, name);
        let lp = ListParams::default().labels(&sel);
        let lp = &lp;
        wait_for(&format!("children of {name} removed"), GC_TIMEOUT, async || {
            let c = c.clone();
            let n = [
                Api::<DaemonSet>::namespaced(c.clone(), ns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
                Api::<ConfigMap>::namespaced(c.clone(), ns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
                Api::<ServiceAccount>::namespaced(c.clone(), ns)
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
                Api::<ClusterRole>::all(c.clone()).list_metadata(lp).await?.items.len(),
                Api::<ClusterRoleBinding>::all(c.clone())
                    .list_metadata(lp)
                    .await?
                    .items
                    .len(),
            ];
            ensure!(
                n == [0; 5],
                "left (DaemonSet, ConfigMap, ServiceAccount, ClusterRole, ClusterRoleBinding): {n:?}"
            );
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Shared by the serial scenarios: a pipeline Ready with its collector on every GPU node.
pub async fn ready_pipeline_with_collector(
    c: &Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<MLObservabilityPipeline> {
    let n = i32::try_from(gpu_nodes(c).await?.len())?;
    ready_pipeline_with_collector_on(c, ns, name, spec, n).await
}

/// [`ready_pipeline_with_collector`] when the collector runs on `n` nodes (a policy whose
/// `nodeSelector` selects fewer than all GPU nodes).
pub async fn ready_pipeline_with_collector_on(
    c: &Client,
    ns: &str,
    name: &str,
    spec: Value,
    n: i32,
) -> Result<MLObservabilityPipeline> {
    create_pipeline(c, &pipeline(ns, name, spec)?).await?;
    wait_ready(c, ns, name).await?;
    let api = pipelines(c, ns);
    let api = &api;
    wait_for("readyNodes == GPU nodes", READY_TIMEOUT, async || {
        let p = api.get(name).await?;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.collector.as_ref())
            .map(|c| c.ready_nodes);
        if ready != Some(n) {
            restart_pods_stuck_by_node_flap(c, ns, &ListParams::default()).await?;
        }
        ensure!(
            ready == Some(n) && is_ready(&p),
            "readyNodes {ready:?} of {n}; {}",
            conditions_summary(&p)
        );
        Ok(p)
    })
    .await
}
