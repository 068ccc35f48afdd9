//! The effective settings as a printable table: field path, value, and where the value came from.

use super::effective::{EffKms, EffRole, Effective, Source};
use crate::crd::format_duration_ms;

/// One row of `mlobs plan`'s "effective settings".
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting {
    pub path: &'static str,
    pub value: String,
    pub source: Source,
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "[]".into() } else { v.join(", ") }
}

/// Every effective value the plan shows, in spec order.
pub fn settings(e: &Effective) -> Vec<Setting> {
    let kms = match &e.kms {
        EffKms::Existing { key_arn } => format!("existing {key_arn}"),
        EffKms::Create {
            alias,
            rotation,
            deletion_window_days,
        } => {
            format!(
                "create {alias} (rotation {}, deletion window {deletion_window_days} days)",
                on(*rotation)
            )
        }
        EffKms::Disabled => "disabled (CloudWatch default encryption)".into(),
    };
    let role = match &e.identity.role {
        EffRole::Create { name } => format!("create {name}"),
        EffRole::Existing { arn } => format!("existing {arn}"),
    };
    let dims: Vec<String> = e
        .metrics
        .dimensions
        .iter()
        .map(|d| format!("[{}]", d.join(", ")))
        .collect();
    let redactions: Vec<String> = e
        .logs
        .redactions
        .iter()
        .map(|r| r.name.clone().unwrap_or_else(|| r.pattern.clone()))
        .collect();
    let rows: Vec<(&'static str, String)> = vec![
        ("clusterName", e.cluster_name.clone()),
        ("region", e.region.clone()),
        ("sources.namespaces", list(&e.source_namespaces)),
        (
            "sources.nodeSelector",
            e.node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("logs.enabled", e.logs.enabled.to_string()),
        ("logs.include", list(&e.logs.include)),
        ("logs.logGroup.name", e.logs.group.name.clone()),
        ("logs.logGroup.retentionInDays", e.logs.group.retention_days.to_string()),
        ("logs.logGroup.class", e.logs.group.class.as_str().into()),
        ("logs.redaction", list(&redactions)),
        ("metrics.dcgm.enabled", e.metrics.dcgm_enabled.to_string()),
        (
            "metrics.dcgm.scrapeInterval",
            format_duration_ms(e.metrics.scrape_interval_ms),
        ),
        ("metrics.dcgm.metrics", format!("{} fields", e.metrics.metrics.len())),
        ("metrics.cloudwatch.namespace", e.metrics.namespace.clone()),
        ("metrics.cloudwatch.dimensions", dims.join(" ")),
        ("metrics.cloudwatch.logGroup.name", e.metrics.group.name.clone()),
        (
            "metrics.cloudwatch.logGroup.retentionInDays",
            e.metrics.group.retention_days.to_string(),
        ),
        ("traces.otlp.enabled", e.collector.otlp_enabled.to_string()),
        ("encryption.kms", kms),
        ("identity.mode", e.identity.mode.as_str().into()),
        ("identity.role", role),
        (
            "identity.permissionsBoundaryArn",
            e.identity
                .permissions_boundary_arn
                .clone()
                .unwrap_or_else(|| "none".into()),
        ),
        ("collector.image", e.collector.image.clone()),
        ("collectorNamespace", e.collector_namespace.clone()),
        (
            "collector.resources",
            format!("memory limit {}Mi", e.collector.memory_limit_mib),
        ),
        ("collector.batch.sendBatchSize", e.collector.batch_size.to_string()),
        (
            "collector.batch.timeout",
            format_duration_ms(e.collector.batch_timeout_ms),
        ),
        ("collector.queueHostPath", e.collector.queue_host_path.clone()),
        (
            "collector.retryMaxElapsed",
            format_duration_ms(e.collector.retry_max_elapsed_ms),
        ),
        (
            "exporter",
            format!(
                "{:?} in {} (port {})",
                e.exporter.mode, e.exporter.namespace, e.exporter.port
            ),
        ),
        ("driftPolicy", format!("{:?}", e.drift_policy)),
        ("deletionPolicy", format!("{:?}", e.deletion_policy)),
        ("resyncInterval", format_duration_ms(e.resync_interval_ms)),
        ("dataFlow.gracePeriod", format_duration_ms(e.data_flow_grace_ms)),
    ];
    rows.into_iter()
        .map(|(path, value)| {
            let source = lookup(e, path);
            Setting { path, value, source }
        })
        .collect()
}

fn lookup(e: &Effective, path: &str) -> Source {
    if let Some(s) = e.sources.get(path) {
        return *s;
    }
    // A group of fields (e.g. `encryption.kms`) takes the strongest source among its members.
    let prefix = format!("{path}.");
    e.sources
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(Source::Derived)
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
