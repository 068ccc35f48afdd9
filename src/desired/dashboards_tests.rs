//! A panel never shows a metric the pipeline does not ship, in Grafana or CloudWatch.

use serde_json::Value;

use super::dashboards::{cloudwatch, grafana};
use crate::desired::effective::{Effective, test_fixture};

/// Every DCGM field named anywhere in a JSON text.
fn fields_in(v: &Value) -> Vec<String> {
    let text = v.to_string();
    let re = regex::Regex::new(r"DCGM_FI_[A-Z0-9_]+").expect("regex");
    let mut out: Vec<String> = re.find_iter(&text).map(|m| m.as_str().to_string()).collect();
    out.sort();
    out.dedup();
    out
}

fn fewer_fields() -> Effective {
    let mut e = test_fixture();
    e.metrics.metrics = vec!["DCGM_FI_DEV_GPU_TEMP".into(), "DCGM_FI_DEV_GPU_UTIL".into()];
    e
}

#[test]
fn grafana_panels_show_exactly_the_selected_fields() {
    for e in [test_fixture(), fewer_fields()] {
        assert_eq!(fields_in(&grafana::dashboard(&e)), e.metrics.metrics);
    }
    let mut off = test_fixture();
    off.metrics.dcgm_enabled = false;
    assert!(
        fields_in(&grafana::dashboard(&off)).is_empty(),
        "DCGM off: pipeline health only"
    );
    let d = grafana::dashboard(&off);
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert!(titles.iter().all(|t| t.starts_with("Collector")), "{titles:?}");
}

#[test]
fn grafana_shows_gpu_use_per_node_and_per_pod() {
    let d = grafana::dashboard(&fewer_fields());
    let exprs: Vec<&str> = (d["panels"].as_array().into_iter().flatten())
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(
        exprs.contains(&"max by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL)"),
        "{exprs:?}"
    );
    assert!(
        exprs.contains(&"avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL{pod!=\"\"})"),
        "{exprs:?}"
    );
    assert!(
        exprs
            .iter()
            .any(|x| x.contains("otelcol_exporter_send_failed_log_records_total"))
    );
}

#[test]
fn cloudwatch_widgets_search_only_shipped_fields_over_declared_dimension_sets() {
    let e = fewer_fields();
    let body = cloudwatch::body(&e);
    assert_eq!(fields_in(&body), e.metrics.metrics);
    let widgets = body["widgets"].as_array().cloned().unwrap_or_default();
    assert_eq!(widgets.len(), 2);
    for w in &widgets {
        for (line, set) in w["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(&e.metrics.dimensions)
        {
            let expr = line[0]["expression"].as_str().unwrap_or_default();
            let schema: Vec<String> = std::iter::once(format!("\"{}\"", e.metrics.namespace))
                .chain(set.iter().map(|d| format!("\"{d}\"")))
                .collect();
            assert!(expr.contains(&format!("{{{}}}", schema.join(","))), "{expr}");
            assert!(expr.contains("\"k8s.cluster.name\"=\"prod-gpu\""), "{expr}");
        }
    }
}

#[test]
fn the_config_map_is_labelled_for_the_grafana_sidecar_and_for_pruning() {
    let e = test_fixture();
    let cm = grafana::config_map(&e);
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("grafana_dashboard").map(String::as_str), Some("1"));
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("mlobs")
    );
    let data = cm.data.unwrap_or_default();
    let (key, json) = data.iter().next().expect("one dashboard");
    assert!(key.ends_with(".json"));
    let parsed: Value = serde_json::from_str(json).expect("dashboard JSON");
    assert_eq!(parsed["title"], "mlobs GPU health: team-a/train");
    assert!(parsed["uid"].as_str().is_some_and(|u| u.len() <= 40));
}
