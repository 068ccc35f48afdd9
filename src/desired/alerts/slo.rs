//! Pipeline-health SLO: the collector's own telemetry (exporter send failures against sends, for
//! log records and metric points; sending-queue fill) as multi-window, multi-burn-rate alerts
//! (the SRE workbook's: 14.4× over 1 h and 5 m pages, 6× over 6 h and 30 m opens a ticket).
//! Every expression selects the pipeline's own collectors by the label its PodMonitor puts on
//! their series (`desired::self_monitoring`).

use serde_json::{Value, json};

use super::EffSlo;
use crate::desired::effective::Effective;
use crate::desired::self_monitoring::series_selector;

/// (long window, short window, burn rate, severity).
pub const WINDOWS: [(&str, &str, f64, &str); 2] = [("1h", "5m", 14.4, "critical"), ("6h", "30m", 6.0, "warning")];
/// The queue alert fires above this fill ratio for 10 minutes.
pub const QUEUE_FILL_RATIO: f64 = 0.8;

/// The collector's counters per signal: (signal, failed counter, sent counter), as its
/// Prometheus telemetry names them (counters end in `_total`; tests/otelcol_telemetry.rs reads
/// them off the real collector).
pub const SIGNALS: [(&str, &str, &str); 2] = [
    (
        "LogRecords",
        "otelcol_exporter_send_failed_log_records_total",
        "otelcol_exporter_sent_log_records_total",
    ),
    (
        "MetricPoints",
        "otelcol_exporter_send_failed_metric_points_total",
        "otelcol_exporter_sent_metric_points_total",
    ),
];

/// The error budget as a ratio: 1 − objective.
pub fn budget(s: &EffSlo) -> f64 {
    // Rounded to 1e-9 so 100 − 99.9 prints as 0.001, not 0.0010000000000000009.
    ((100.0 - s.objective_percent) / 100.0 * 1e9).round() / 1e9
}

/// The failed share of records over a window, of the series `sel` matches (the pipeline's own
/// collectors: [`series_selector`]).
pub fn error_ratio(failed: &str, sent: &str, sel: &str, window: &str) -> String {
    format!(
        "(sum(rate({failed}{sel}[{window}])) / (sum(rate({sent}{sel}[{window}])) + sum(rate({failed}{sel}[{window}]))))"
    )
}

/// The fullest sending queue of the series `sel` matches, as a ratio.
pub fn queue_fill(sel: &str) -> String {
    format!("max(otelcol_exporter_queue_size{sel} / otelcol_exporter_queue_capacity{sel})")
}

/// The alert threshold of a burn rate: burn × budget.
pub fn threshold(s: &EffSlo, burn: f64) -> f64 {
    ((burn * budget(s)) * 1e9).round() / 1e9
}

/// The burn-rate alerts and the queue alert.
pub fn rules(e: &Effective, s: &EffSlo) -> Vec<Value> {
    let sel = series_selector(e);
    let mut out = Vec::new();
    for (signal, failed, sent) in SIGNALS {
        for (long, short, burn, severity) in WINDOWS {
            let t = threshold(s, burn);
            let expr = format!(
                "{} > {t} and {} > {t}",
                error_ratio(failed, sent, &sel, long),
                error_ratio(failed, sent, &sel, short)
            );
            out.push(json!({
                "alert": format!("MlobsDelivery{signal}BudgetBurn"),
                "expr": expr,
                "labels": {"severity": severity, "mlobs_pipeline": e.pipeline_label(), "window": long},
                "annotations": {"summary": format!(
                    "the collector fails to deliver {signal} {burn}× faster than a {}% objective allows ({long}/{short})",
                    s.objective_percent
                )},
            }));
        }
    }
    out.push(json!({
        "alert": "MlobsSendingQueueFilling",
        "expr": format!("{} > {QUEUE_FILL_RATIO}", queue_fill(&sel)),
        "for": "10m",
        "labels": {"severity": "warning", "mlobs_pipeline": e.pipeline_label()},
        "annotations": {"summary": "a collector's sending queue is over 80% full: its destination is too slow or failing"},
    }));
    out
}
