//! The collector's own telemetry, made scrapeable: its Prometheus endpoint on the pod's IP at
//! [`TELEMETRY_PORT`] (container port `metrics`), and a `PodMonitor` (monitoring.coreos.com/v1)
//! that makes the Prometheus operator scrape exactly this pipeline's collector pods and label
//! their series with [`SERIES_LABEL`]. The pipeline-health SLO rules and the Grafana delivery
//! panels select on that label, so each pipeline's alerts read its own collectors, not the
//! cluster's.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::conventions::PIPELINE_LABEL;
use crate::desired::effective::{Effective, common_labels};

/// Port of the collector's Prometheus telemetry endpoint (the collector's customary 8888).
pub const TELEMETRY_PORT: u16 = 8888;
/// Name of that container port: what the PodMonitor's endpoint names.
pub const TELEMETRY_PORT_NAME: &str = "metrics";
/// The environment variable holding the pod's IP (downward API `status.podIP`): the telemetry
/// endpoint listens there only, not on every interface.
pub const POD_IP_ENV: &str = "POD_IP";
/// The label the PodMonitor copies from the pod (`podTargetLabels`) onto every scraped series:
/// `mlobs.io/pipeline`, sanitised by Prometheus to `mlobs_io_pipeline`.
pub const SERIES_LABEL: &str = "mlobs_io_pipeline";
/// How often Prometheus scrapes the collector.
pub const SCRAPE_INTERVAL: &str = "30s";

/// The kind discovery looks for in monitoring.coreos.com/v1 (`alerts::prometheus::API_VERSION`).
pub const KIND: &str = "PodMonitor";

/// The Prometheus operator's PodMonitor, typed for the child applier; the endpoints stay JSON.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// The pods scraped: the collector DaemonSet's own selector.
    pub selector: LabelSelector,
    /// Pod labels copied onto every series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_target_labels: Vec<String>,
    pub pod_metrics_endpoints: Vec<Value>,
}

/// The collector's `service.telemetry` section: the basic metrics level, served by a Prometheus
/// reader on `${env:POD_IP}:8888`.
pub fn telemetry() -> Value {
    json!({"metrics": {
        "level": "basic",
        "readers": [{"pull": {"exporter": {"prometheus": {
            "host": format!("${{env:{POD_IP_ENV}}}"),
            "port": TELEMETRY_PORT,
        }}}}],
    }})
}

/// The PromQL label matcher of this pipeline's collector series, `{mlobs_io_pipeline="…"}`.
pub fn series_selector(e: &Effective) -> String {
    format!("{{{SERIES_LABEL}=\"{}\"}}", e.pipeline_label())
}

/// Whether the pipeline reads its collectors' telemetry: the pipeline-health SLO or the Grafana
/// dashboard's delivery panels. Only then is a PodMonitor applied (where its CRD is served).
pub fn wanted(e: &Effective) -> bool {
    e.alerts.as_ref().is_some_and(|a| a.slo.is_some()) || e.dashboards.grafana
}

/// The PodMonitor of the pipeline's collector: in the collector's namespace, selecting its pods
/// by the DaemonSet's selector `selector`, scraping port `metrics`, with the common labels.
pub fn pod_monitor(e: &Effective, selector: LabelSelector) -> PodMonitor {
    let labels: BTreeMap<String, String> = common_labels(e);
    let endpoint = crate::desired::canonical_json(json!({
        "port": TELEMETRY_PORT_NAME,
        "path": "/metrics",
        "interval": SCRAPE_INTERVAL,
    }));
    let mut m = PodMonitor::new(
        &e.child_name(),
        PodMonitorSpec {
            selector,
            pod_target_labels: vec![PIPELINE_LABEL.to_string()],
            pod_metrics_endpoints: vec![endpoint],
        },
    );
    m.metadata.namespace = Some(e.collector_namespace.clone());
    m.metadata.labels = Some(labels);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::effective::test_fixture;

    #[test]
    fn the_series_label_is_the_pod_label_as_prometheus_sanitises_it() {
        // Prometheus replaces every character outside [a-zA-Z0-9_] with `_`.
        let sanitised: String = PIPELINE_LABEL
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        assert_eq!(sanitised, SERIES_LABEL);
    }

    #[test]
    fn the_pod_monitor_lives_with_the_collector_and_copies_the_pipeline_label() {
        let mut e = test_fixture();
        e.collector_namespace = "observability".into();
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
            ..Default::default()
        };
        let m = pod_monitor(&e, sel.clone());
        assert_eq!(m.metadata.namespace.as_deref(), Some("observability"));
        assert_eq!(m.spec.selector, sel);
        assert_eq!(m.spec.pod_target_labels, [PIPELINE_LABEL]);
        let v = serde_json::to_value(&m).expect("json");
        assert_eq!(v["kind"], "PodMonitor");
        assert_eq!(v["spec"]["podMetricsEndpoints"][0]["port"], TELEMETRY_PORT_NAME);
        assert_eq!(v["spec"]["podTargetLabels"][0], PIPELINE_LABEL);
        assert_eq!(
            series_selector(&e),
            format!("{{mlobs_io_pipeline=\"{}\"}}", e.pipeline_label())
        );
    }
}
