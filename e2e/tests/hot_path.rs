//! The hot path on the real control plane: the Kinesis stream exists in moto (KMS-encrypted with
//! the pipeline's key, the spec's retention) before Fluent Bit runs; the Fluent Bit DaemonSet runs
//! on the GPU nodes only; turning the hot path off prunes its children and its condition, and
//! deleting the pipeline (`deletionPolicy: Delete`) deletes the stream.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::placement::running_pods_by_node;
use crate::support::*;

/// Fluent Bit's children of a pipeline: the pipeline's label and the hot path's app name.
fn hot_selector(ns: &str, name: &str) -> String {
    format!("{},app.kubernetes.io/name=mlobs-hotpath", child_selector(ns, name))
}

/// How many (DaemonSets, ConfigMaps, ServiceAccounts) of the hot path exist.
async fn hot_children(c: &Client, ns: &str, name: &str) -> Result<[usize; 3]> {
    let lp = ListParams::default().labels(&hot_selector(ns, name));
    Ok([
        Api::<DaemonSet>::namespaced(c.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        Api::<ConfigMap>::namespaced(c.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
        Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .len(),
    ])
}

#[tokio::test]
async fn the_stream_exists_before_fluent_bit_runs_on_the_gpu_nodes_only_and_both_go_when_turned_off() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "hotpath").await?;
    let ns = guard.name.as_str();
    let aws = aws().await?;
    let name = "hot";
    let p = pipeline(
        ns,
        name,
        json!({"hotPath": {"retentionHours": 48, "patterns": ["ERROR", "OOMKilled"]}}),
    )?;
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, name).await?;
    ensure!(
        condition_status(&p, "HotPathReady") == "True",
        "{}",
        conditions_summary(&p)
    );

    // The stream, as the operator recorded it, exists in moto with the pipeline's key.
    let recorded = p.status.as_ref().and_then(|s| s.aws.clone()).context("status.aws")?;
    let arn = recorded
        .hot_path_stream_arn
        .clone()
        .context("status.aws.hotPathStreamArn")?;
    let stream = arn.rsplit('/').next().context("a stream ARN")?.to_string();
    let o = mlobs::aws::kinesis::observe(&aws, &stream)
        .await?
        .with_context(|| format!("stream {stream} in moto"))?;
    ensure!(o.active(), "{o:?}");
    ensure!(o.retention_hours == 48, "{o:?}");
    ensure!(o.kms_key == recorded.kms_key_arn, "{o:?} vs {recorded:?}");

    // Fluent Bit runs where the collector runs: on every GPU node and nowhere else.
    let mut want = gpu_nodes(&c).await?;
    want.sort();
    let sel = hot_selector(ns, name);
    wait_for("Fluent Bit on every GPU node", READY_TIMEOUT, async || {
        let mut on = running_pods_by_node(&c, ns, &sel).await?;
        on.dedup();
        ensure!(on == want, "Fluent Bit pods run on {on:?}, want {want:?}");
        Ok(())
    })
    .await?;

    // Off: its DaemonSet, ConfigMap and ServiceAccount are pruned and HotPathReady is gone.
    pipelines(&c, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hotPath": {"enabled": false}}})),
        )
        .await?;
    wait_for("hot path children pruned", READY_TIMEOUT, async || {
        let n = hot_children(&c, ns, name).await?;
        ensure!(n == [0; 3], "left (DaemonSet, ConfigMap, ServiceAccount): {n:?}");
        let p = pipelines(&c, ns).get(name).await?;
        ensure!(condition(&p, "HotPathReady").is_none(), "{}", conditions_summary(&p));
        Ok(())
    })
    .await?;

    // Deleting the pipeline (deletionPolicy Delete) deletes the stream.
    pipelines(&c, ns).delete(name, &DeleteParams::default()).await?;
    wait_for("stream deleted", Duration::from_secs(120), async || {
        let left = mlobs::aws::kinesis::observe(&aws, &stream).await?;
        ensure!(left.is_none(), "stream {stream} still exists: {left:?}");
        Ok(())
    })
    .await?;
    Ok(())
}
