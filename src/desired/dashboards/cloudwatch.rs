//! The CloudWatch dashboard body: one metric widget per selected DCGM field, each line a SEARCH
//! over one dimension set the awsemf exporter declares (so only shipped metrics appear), limited
//! to this cluster.

use serde_json::{Value, json};

use super::panel_of;
use crate::desired::effective::Effective;

/// The SEARCH expression of one field over one declared dimension set.
pub fn search(e: &Effective, field: &str, dims: &[String], stat: &str) -> String {
    let schema: Vec<String> = std::iter::once(format!("\"{}\"", e.metrics.namespace))
        .chain(dims.iter().map(|d| format!("\"{d}\"")))
        .collect();
    format!(
        "SEARCH('{{{}}} MetricName=\"{field}\" \"k8s.cluster.name\"=\"{}\"', '{stat}', 60)",
        schema.join(","),
        e.cluster_name
    )
}

fn stat_of(field: &str) -> &'static str {
    match field {
        "DCGM_FI_DEV_XID_ERRORS" | "DCGM_FI_DEV_GPU_TEMP" | "DCGM_FI_DEV_POWER_USAGE" => "Maximum",
        f if f.ends_with("_TOTAL") || f.ends_with("_COUNTER") => "Sum",
        _ => "Average",
    }
}

/// The dashboard body (PutDashboard's DashboardBody, as JSON).
pub fn body(e: &Effective) -> Value {
    let sets: Vec<&Vec<String>> = (e.metrics.dimensions.iter())
        .filter(|s| s.iter().any(|d| d == "k8s.cluster.name"))
        .collect();
    let shipped: Vec<&String> = if e.metrics.ships() {
        e.metrics.metrics.iter().collect()
    } else {
        vec![]
    };
    let widgets: Vec<Value> = (shipped.iter().enumerate())
        .map(|(i, f)| {
            let (title, _) = panel_of(f);
            let metrics: Vec<Value> = (sets.iter().enumerate())
                .map(|(j, s)| json!([{"expression": search(e, f, s, stat_of(f)), "id": format!("e{j}"), "label": s.join(" ")}]))
                .collect();
            json!({
                "type": "metric", "x": (i % 2) * 12, "y": i / 2 * 6, "width": 12, "height": 6,
                "properties": {"title": title, "region": e.region, "view": "timeSeries", "stat": stat_of(f), "period": 60, "metrics": metrics},
            })
        })
        .collect();
    crate::desired::canonical_json(json!({"widgets": widgets}))
}
