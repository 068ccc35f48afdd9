//! The Grafana dashboard: one time series per selected DCGM field by node and GPU, GPU use by
//! pod (when utilisation or framebuffer memory is selected), and the collector's delivery. It
//! reads a Prometheus data source chosen in the dashboard (`$datasource`), as dcgm-exporter's
//! series (labels `Hostname`, `gpu`, `namespace`, `pod`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::panel_of;
use crate::desired::alerts::slo::SIGNALS;
use crate::desired::effective::{Effective, common_labels};

/// The Grafana sidecar loads ConfigMaps with this label.
pub const SIDECAR_LABEL: (&str, &str) = ("grafana_dashboard", "1");
/// Fields shown per pod too.
const PER_POD: [&str; 2] = ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"];

fn panel(id: usize, title: &str, unit: &str, targets: Vec<(String, &str)>, y: usize) -> Value {
    let targets: Vec<Value> = (targets.into_iter().enumerate())
        .map(|(i, (expr, legend))| json!({"refId": ((b'A' + i as u8) as char).to_string(), "expr": expr, "legendFormat": legend, "datasource": {"type": "prometheus", "uid": "${datasource}"}}))
        .collect();
    json!({
        "id": id, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"h": 8, "w": 12, "x": (id % 2) * 12, "y": y},
        "targets": targets,
    })
}

/// The dashboard JSON.
pub fn dashboard(e: &Effective) -> Value {
    let mut panels = Vec::new();
    let shipped: Vec<&String> = if e.metrics.ships() {
        e.metrics.metrics.iter().collect()
    } else {
        vec![]
    };
    for f in &shipped {
        let (title, unit) = panel_of(f);
        let t = vec![(format!("max by (Hostname, gpu) ({f})"), "{{Hostname}} GPU {{gpu}}")];
        panels.push(panel(
            panels.len(),
            &format!("{title} per node and GPU"),
            unit,
            t,
            panels.len() / 2 * 8,
        ));
    }
    for f in shipped.iter().filter(|f| PER_POD.contains(&f.as_str())) {
        let (title, unit) = panel_of(f);
        let t = vec![(
            format!("avg by (namespace, pod) ({f}{{pod!=\"\"}})"),
            "{{namespace}}/{{pod}}",
        )];
        panels.push(panel(
            panels.len(),
            &format!("{title} per pod"),
            unit,
            t,
            panels.len() / 2 * 8,
        ));
    }
    let sel = crate::desired::self_monitoring::series_selector(e);
    for (signal, failed, sent) in SIGNALS {
        let t = vec![
            (format!("sum(rate({sent}{sel}[5m]))"), "sent"),
            (format!("sum(rate({failed}{sel}[5m]))"), "failed"),
        ];
        panels.push(panel(
            panels.len(),
            &format!("Collector delivery: {signal} per second"),
            "short",
            t,
            panels.len() / 2 * 8,
        ));
    }
    let q = vec![(crate::desired::alerts::slo::queue_fill(&sel), "fill")];
    panels.push(panel(
        panels.len(),
        "Collector sending queue fill",
        "percentunit",
        q,
        panels.len() / 2 * 8,
    ));
    crate::desired::canonical_json(json!({
        "uid": uid(e),
        "title": format!("mlobs GPU health: {}", e.pipeline_id()),
        "tags": ["mlobs", "gpu", "dcgm"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }))
}

/// A stable uid (Grafana allows 40 characters): `mlobs-` and a hash of the pipeline.
fn uid(e: &Effective) -> String {
    let d = Sha256::digest(format!("{}/{}", e.cluster_name, e.pipeline_id()).as_bytes());
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("mlobs-{hex}")
}

/// The ConfigMap the Grafana sidecar loads, in the pipeline's namespace.
pub fn config_map(e: &Effective) -> ConfigMap {
    let mut labels: BTreeMap<String, String> = common_labels(e);
    labels.insert(SIDECAR_LABEL.0.into(), SIDECAR_LABEL.1.into());
    let name = format!("{}-dashboard", e.child_name());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.clone());
    cm.metadata.namespace = Some(e.namespace.clone());
    cm.metadata.labels = Some(labels);
    cm.data = Some(BTreeMap::from([(format!("{name}.json"), dashboard(e).to_string())]));
    cm
}
