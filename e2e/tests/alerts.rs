//! Alerts and dashboards on the real control plane: with the Prometheus operator's CRDs installed
//! (minimal ones, when the cluster has none), a pipeline with `spec.alerts` and
//! `spec.dashboards` gets its PrometheusRule, the PodMonitor that scrapes its collectors for the
//! pipeline-health rules and its Grafana dashboard ConfigMap as children, its SNS topic, four
//! CloudWatch alarms and a CloudWatch dashboard in moto, and AlertsReady=True.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mlobs::desired::alerts::prometheus::PrometheusRule;
use mlobs::desired::self_monitoring::{PodMonitor, TELEMETRY_PORT_NAME};
use serde_json::json;

use crate::support::*;

/// Installs a minimal monitoring.coreos.com/v1 CRD of `kind` unless one exists, and waits until
/// it is served.
async fn ensure_monitoring_crd(c: &kube::Client, kind: &str) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let singular = kind.to_lowercase();
    let plural = format!("{singular}s");
    let crd_name = format!("{plural}.monitoring.coreos.com");
    if crds.get_opt(&crd_name).await?.is_none() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": crd_name},
            "spec": {
                "group": "monitoring.coreos.com",
                "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        }))?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => println!("installed a minimal {crd_name}"),
            // Another test installed it meanwhile.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating the {kind} CRD")),
        }
    }
    wait_for(&format!("the {kind} API"), Duration::from_secs(60), async || {
        let served = c.list_api_group_resources("monitoring.coreos.com/v1").await;
        let ok = served.is_ok_and(|l| l.resources.iter().any(|r| r.kind == kind));
        ensure!(ok, "monitoring.coreos.com/v1 does not serve {kind} yet");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pipeline_with_alerts_gets_its_prometheus_rule_dashboard_config_map_and_alarms() -> Result<()> {
    let c = client().await?;
    ensure_monitoring_crd(&c, "PrometheusRule").await?;
    ensure_monitoring_crd(&c, "PodMonitor").await?;
    let guard = TestNs::create(&c, "alerts").await?;
    let ns = guard.name.as_str();
    let name = "alerted";
    let p = pipeline(ns, name, json!({"alerts": {}, "dashboards": {}}))?;
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, name).await?;
    ensure!(
        condition_status(&p, "AlertsReady") == "True",
        "{}",
        conditions_summary(&p)
    );
    let aws_status = p.status.as_ref().and_then(|s| s.aws.clone()).context("status.aws")?;
    ensure!(aws_status.alarm_count == Some(4), "{aws_status:?}");
    let topic = aws_status
        .alerts_topic_arn
        .clone()
        .context("status.aws.alertsTopicArn")?;

    let selector = child_selector(ns, name);
    let rules: Api<PrometheusRule> = Api::namespaced(c.clone(), ns);
    let found = rules.list(&ListParams::default().labels(&selector)).await?;
    ensure!(found.items.len() == 1, "{} PrometheusRules", found.items.len());
    let groups = serde_json::to_string(&found.items[0].spec.groups)?;
    ensure!(groups.contains("changes(DCGM_FI_DEV_XID_ERRORS[5m]) > 0"), "{groups}");
    // The pipeline-health rules read this pipeline's collectors only, by the label the PodMonitor
    // copies from their pods.
    let label = pod_label(&c, ns, name).await?;
    ensure!(
        groups.contains(&format!(
            "otelcol_exporter_sent_log_records_total{{mlobs_io_pipeline=\\\"{label}\\\"}}"
        )),
        "{groups}"
    );
    // A kwok node flap can leave a replaced pod behind for a moment: looked at until it holds.
    let label = &label;
    wait_for(
        "the PodMonitor scrapes the collectors",
        Duration::from_secs(60),
        async || scraped_pods_are_the_collectors(&c, ns, name, label).await,
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let dash = cms
        .list(&ListParams::default().labels(&format!("{selector},grafana_dashboard=1")))
        .await?;
    ensure!(dash.items.len() == 1, "{} dashboard ConfigMaps", dash.items.len());

    let aws = aws().await?;
    let prefix = format!("mlobs/{CLUSTER_NAME}/{ns}/{name}/");
    let alarms = aws
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(&prefix)
        .send()
        .await?;
    ensure!(
        alarms.metric_alarms().len() == 4,
        "{} alarms under {prefix}",
        alarms.metric_alarms().len()
    );
    ensure!(
        alarms
            .metric_alarms()
            .iter()
            .all(|a| a.alarm_actions() == std::slice::from_ref(&topic))
    );
    aws.sns
        .get_topic_attributes()
        .topic_arn(&topic)
        .send()
        .await
        .context("the topic exists in moto")?;

    // Nothing reads the collectors' telemetry any more: the PodMonitor is pruned, the rule stays.
    let pipes = pipelines(&c, ns);
    let off = json!({"spec": {"alerts": {"rules": {"pipelineHealth": {"enabled": false}}},
                              "dashboards": {"grafana": false}}});
    pipes.patch(name, &PatchParams::default(), &Patch::Merge(&off)).await?;
    let monitors: Api<PodMonitor> = Api::namespaced(c.clone(), ns);
    let (monitors, rules, selector) = (&monitors, &rules, &selector);
    wait_for(
        "the PodMonitor pruned, the PrometheusRule kept",
        READY_TIMEOUT,
        async || {
            let m = monitors
                .list(&ListParams::default().labels(selector))
                .await?
                .items
                .len();
            let r = rules.list(&ListParams::default().labels(selector)).await?.items.len();
            ensure!(m == 0 && r == 1, "{m} PodMonitors, {r} PrometheusRules");
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// The `mlobs.io/pipeline` label of the pipeline's collector pods (one value for all of them).
async fn pod_label(c: &kube::Client, ns: &str, name: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&child_selector(ns, name)))
        .await?;
    let pod = list.items.first().context("no collector pod")?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    labels
        .get("mlobs.io/pipeline")
        .cloned()
        .context("mlobs.io/pipeline on the pod")
}

/// The pipeline's PodMonitor selects exactly its collector pods (one per GPU node, not the Fluent
/// Bit or another pipeline's), names a port each of them exposes, and copies `mlobs.io/pipeline`.
async fn scraped_pods_are_the_collectors(c: &kube::Client, ns: &str, name: &str, label: &str) -> Result<()> {
    let monitors: Api<PodMonitor> = Api::namespaced(c.clone(), ns);
    let found = monitors
        .list(&ListParams::default().labels(&child_selector(ns, name)))
        .await?;
    ensure!(found.items.len() == 1, "{} PodMonitors", found.items.len());
    let m = &found.items[0];
    ensure!(m.spec.pod_target_labels == ["mlobs.io/pipeline"], "{:?}", m.spec);
    let sel = m.spec.selector.match_labels.clone().unwrap_or_default();
    let sel: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let scraped = pods.list(&ListParams::default().labels(&sel.join(","))).await?.items;
    let gpu = gpu_nodes(c).await?;
    ensure!(
        scraped.len() == gpu.len(),
        "the PodMonitor selects {} pods, {} GPU nodes",
        scraped.len(),
        gpu.len()
    );
    let port = m.spec.pod_metrics_endpoints[0]["port"].as_str().unwrap_or_default();
    ensure!(port == TELEMETRY_PORT_NAME, "{port}");
    for p in &scraped {
        let spec = p.spec.clone().unwrap_or_default();
        let named = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .any(|x| x.name.as_deref() == Some(port));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        ensure!(named, "pod {:?} has no port {port}", p.metadata.name);
        ensure!(
            labels.get("mlobs.io/pipeline").map(String::as_str) == Some(label),
            "{labels:?}"
        );
        ensure!(
            labels.get("app.kubernetes.io/name").map(String::as_str) == Some("mlobs-collector"),
            "only collectors: {labels:?}"
        );
    }
    println!(
        "the PodMonitor scrapes the {} collector pods on port {port}",
        scraped.len()
    );
    Ok(())
}
