//! Alerts and dashboards on the real control plane: with the Prometheus operator's CRD installed
//! (a minimal one, when the cluster has none), a pipeline with `spec.alerts` and
//! `spec.dashboards` gets its PrometheusRule and its Grafana dashboard ConfigMap as children, its
//! SNS topic, four CloudWatch alarms and a CloudWatch dashboard in moto, and AlertsReady=True.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use mlobs::desired::alerts::prometheus::{CRD_NAME, PrometheusRule};
use serde_json::json;

use crate::support::*;

/// Installs a minimal monitoring.coreos.com/v1 PrometheusRule CRD unless one exists, and waits
/// until it is served.
async fn ensure_prometheus_rule_crd(c: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    if crds.get_opt(CRD_NAME).await?.is_none() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": CRD_NAME},
            "spec": {
                "group": "monitoring.coreos.com",
                "names": {"kind": "PrometheusRule", "listKind": "PrometheusRuleList", "plural": "prometheusrules", "singular": "prometheusrule"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        }))?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => println!("installed a minimal {CRD_NAME}"),
            // Another test installed it meanwhile.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating the PrometheusRule CRD"),
        }
    }
    wait_for("the PrometheusRule API", Duration::from_secs(60), async || {
        let served = c.list_api_group_resources("monitoring.coreos.com/v1").await;
        let ok = served.is_ok_and(|l| l.resources.iter().any(|r| r.kind == "PrometheusRule"));
        ensure!(ok, "monitoring.coreos.com/v1 does not serve PrometheusRule yet");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pipeline_with_alerts_gets_its_prometheus_rule_dashboard_config_map_and_alarms() -> Result<()> {
    let c = client().await?;
    ensure_prometheus_rule_crd(&c).await?;
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
    Ok(())
}
