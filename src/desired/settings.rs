//! The effective settings as a printable table: field path, value, and where the value came from.
//! Each row's source is a field of [`Effective::sources`], next to the value it describes.

use super::effective::{EffKms, EffRole, Effective};
use super::sources::Source;
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
    let s = &e.sources;
    let (logs, metrics, collector) = (&s.logs, &s.metrics, &s.collector);
    let lifecycle = &s.lifecycle;
    let node_selector: Vec<String> = e.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let row = |path: &'static str, value: String, source: Source| Setting { path, value, source };
    vec![
        row("clusterName", e.cluster_name.clone(), s.cluster_name),
        row("region", e.region.clone(), s.region),
        row("sources.namespaces", list(&e.source_namespaces), s.placement.namespaces),
        row(
            "sources.nodeSelector",
            node_selector.join(", "),
            s.placement.node_selector,
        ),
        row("logs.enabled", e.logs.enabled.to_string(), logs.enabled),
        row("logs.include", list(&e.logs.include), logs.include),
        row("logs.logGroup.name", e.logs.group.name.clone(), logs.group.name),
        row(
            "logs.logGroup.retentionInDays",
            e.logs.group.retention_days.to_string(),
            logs.group.retention_days,
        ),
        row(
            "logs.logGroup.class",
            e.logs.group.class.as_str().into(),
            logs.group.class,
        ),
        row("logs.redaction", list(&redactions), logs.redaction),
        row(
            "metrics.dcgm.enabled",
            e.metrics.dcgm_enabled.to_string(),
            metrics.dcgm_enabled,
        ),
        row(
            "metrics.dcgm.scrapeInterval",
            format_duration_ms(e.metrics.scrape_interval_ms),
            metrics.scrape_interval,
        ),
        row(
            "metrics.dcgm.metrics",
            format!("{} fields", e.metrics.metrics.len()),
            metrics.metrics,
        ),
        row(
            "metrics.cloudwatch.namespace",
            e.metrics.namespace.clone(),
            metrics.namespace,
        ),
        row("metrics.cloudwatch.dimensions", dims.join(" "), metrics.dimensions),
        row(
            "metrics.cloudwatch.logGroup.name",
            e.metrics.group.name.clone(),
            metrics.group.name,
        ),
        row(
            "metrics.cloudwatch.logGroup.retentionInDays",
            e.metrics.group.retention_days.to_string(),
            metrics.group.retention_days,
        ),
        row(
            "traces.otlp.enabled",
            e.collector.otlp_enabled.to_string(),
            collector.otlp_enabled,
        ),
        row("encryption.kms", kms, s.kms),
        row("identity.mode", e.identity.mode.as_str().into(), s.identity.mode),
        row("identity.role", role, s.identity.role),
        row(
            "identity.permissionsBoundaryArn",
            (e.identity.permissions_boundary_arn.clone()).unwrap_or_else(|| "none".into()),
            s.identity.permissions_boundary_arn,
        ),
        row("collector.image", e.collector.image.clone(), collector.image),
        row(
            "collectorNamespace",
            e.collector_namespace.clone(),
            s.collector_namespace,
        ),
        row(
            "collector.resources",
            format!("memory limit {}Mi", e.collector.memory_limit_mib),
            collector.resources,
        ),
        row(
            "collector.batch.sendBatchSize",
            e.collector.batch_size.to_string(),
            collector.batch_size,
        ),
        row(
            "collector.batch.timeout",
            format_duration_ms(e.collector.batch_timeout_ms),
            collector.batch_timeout,
        ),
        row(
            "collector.queueHostPath",
            e.collector.queue_host_path.clone(),
            collector.queue_host_path,
        ),
        row(
            "collector.retryMaxElapsed",
            format_duration_ms(e.collector.retry_max_elapsed_ms),
            collector.retry_max_elapsed,
        ),
        row(
            "exporter",
            format!(
                "{:?} in {} (port {})",
                e.exporter.mode, e.exporter.namespace, e.exporter.port
            ),
            s.exporter,
        ),
        row("driftPolicy", format!("{:?}", e.drift_policy), lifecycle.drift_policy),
        row(
            "deletionPolicy",
            format!("{:?}", e.deletion_policy),
            lifecycle.deletion_policy,
        ),
        row(
            "resyncInterval",
            format_duration_ms(e.resync_interval_ms),
            lifecycle.resync_interval,
        ),
        row(
            "dataFlow.gracePeriod",
            format_duration_ms(e.data_flow_grace_ms),
            lifecycle.data_flow_grace,
        ),
    ]
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
