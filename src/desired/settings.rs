//! The effective settings as a printable table: field path, value, and where the value came from.
//! Each row's source is a field of [`Effective::sources`], next to the value it describes.

use super::destinations::EffTraces;
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

fn row(path: &'static str, value: String, source: Source) -> Setting {
    Setting { path, value, source }
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "[]".into() } else { v.join(", ") }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Every effective value the plan shows, in spec order.
pub fn settings(e: &Effective) -> Vec<Setting> {
    [
        placement(e),
        logs(e),
        metrics(e),
        security(e),
        collector(e),
        destinations(e),
        lifecycle(e),
    ]
    .concat()
}

fn placement(e: &Effective) -> Vec<Setting> {
    let s = &e.sources;
    let node_selector: Vec<String> = e.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        row("clusterName", e.cluster_name.clone(), s.cluster_name),
        row("region", e.region.clone(), s.region),
        row("sources.namespaces", list(&e.source_namespaces), s.placement.namespaces),
        row(
            "sources.nodeSelector",
            node_selector.join(", "),
            s.placement.node_selector,
        ),
    ]
}

fn logs(e: &Effective) -> Vec<Setting> {
    let (l, s) = (&e.logs, &e.sources.logs);
    let redactions: Vec<String> = (l.redactions.iter())
        .map(|r| r.name.clone().unwrap_or_else(|| r.pattern.clone()))
        .collect();
    let retention = l.group.retention_days.to_string();
    vec![
        row("logs.enabled", l.enabled.to_string(), s.enabled),
        row("logs.include", list(&l.include), s.include),
        row("logs.logGroup.name", l.group.name.clone(), s.group.name),
        row("logs.logGroup.retentionInDays", retention, s.group.retention_days),
        row("logs.logGroup.class", l.group.class.as_str().into(), s.group.class),
        row("logs.redaction", list(&redactions), s.redaction),
    ]
}

fn metrics(e: &Effective) -> Vec<Setting> {
    let (m, s) = (&e.metrics, &e.sources.metrics);
    let dims: Vec<String> = m.dimensions.iter().map(|d| format!("[{}]", d.join(", "))).collect();
    let scrape = format_duration_ms(m.scrape_interval_ms);
    let fields = format!("{} fields", m.metrics.len());
    let retention = m.group.retention_days.to_string();
    let otlp = e.collector.otlp_enabled.to_string();
    vec![
        row("metrics.dcgm.enabled", m.dcgm_enabled.to_string(), s.dcgm_enabled),
        row("metrics.dcgm.scrapeInterval", scrape, s.scrape_interval),
        row("metrics.dcgm.metrics", fields, s.metrics),
        row("metrics.cloudwatch.namespace", m.namespace.clone(), s.namespace),
        row("metrics.cloudwatch.dimensions", dims.join(" "), s.dimensions),
        row("metrics.cloudwatch.logGroup.name", m.group.name.clone(), s.group.name),
        row(
            "metrics.cloudwatch.logGroup.retentionInDays",
            retention,
            s.group.retention_days,
        ),
        row("traces.otlp.enabled", otlp, e.sources.collector.otlp_enabled),
    ]
}

/// The KMS key and the collector's identity.
fn security(e: &Effective) -> Vec<Setting> {
    let (id, s) = (&e.identity, &e.sources.identity);
    let kms = match &e.kms {
        EffKms::Existing { key_arn } => format!("existing {key_arn}"),
        EffKms::Create {
            alias,
            rotation,
            deletion_window_days,
        } => format!(
            "create {alias} (rotation {}, deletion window {deletion_window_days} days)",
            on(*rotation)
        ),
        EffKms::Disabled => "disabled (CloudWatch default encryption)".into(),
    };
    let role = match &id.role {
        EffRole::Create { name } => format!("create {name}"),
        EffRole::Existing { arn } => format!("existing {arn}"),
    };
    let boundary = id.permissions_boundary_arn.clone().unwrap_or_else(|| "none".into());
    vec![
        row("encryption.kms", kms, e.sources.kms),
        row("identity.mode", id.mode.as_str().into(), s.mode),
        row("identity.role", role, s.role),
        row("identity.permissionsBoundaryArn", boundary, s.permissions_boundary_arn),
    ]
}

/// The collector, where it runs, and the exporter it scrapes.
fn collector(e: &Effective) -> Vec<Setting> {
    let (c, s) = (&e.collector, &e.sources.collector);
    let x = &e.exporter;
    let memory = format!("memory limit {}Mi", c.memory_limit_mib);
    let exporter = format!("{:?} in {} (port {})", x.mode, x.namespace, x.port);
    vec![
        row("collector.image", c.image.clone(), s.image),
        row(
            "collectorNamespace",
            e.collector_namespace.clone(),
            e.sources.collector_namespace,
        ),
        row("collector.resources", memory, s.resources),
        row("collector.batch.sendBatchSize", c.batch_size.to_string(), s.batch_size),
        row(
            "collector.batch.timeout",
            format_duration_ms(c.batch_timeout_ms),
            s.batch_timeout,
        ),
        row("collector.queueHostPath", c.queue_host_path.clone(), s.queue_host_path),
        row(
            "collector.retryMaxElapsed",
            format_duration_ms(c.retry_max_elapsed_ms),
            s.retry_max_elapsed,
        ),
        row("exporter", exporter, e.sources.exporter),
    ]
}

/// Destinations beyond CloudWatch.
fn destinations(e: &Effective) -> Vec<Setting> {
    let (d, s) = (&e.destinations, &e.sources.destinations);
    let traces = match &d.traces {
        Some(EffTraces::XRay) => format!("AWS X-Ray in {}", e.region),
        Some(EffTraces::Otlp(b)) => format!("OTLP {}{}", b.endpoint, if b.insecure { " (plaintext)" } else { "" }),
        None => "none".into(),
    };
    let amp = d.prometheus.as_ref().map_or("none".into(), |p| match &p.managed {
        Some(m) if m.pending => format!("alias {:?} (created by mlobs)", m.alias),
        Some(m) => format!("{} (alias {:?}, managed by mlobs)", p.workspace_arn, m.alias),
        None => p.workspace_arn.clone(),
    });
    let datadog = (d.datadog.as_ref()).map_or("none".into(), |x| {
        format!(
            "{} (API key from secretKeyRef {}/{})",
            x.site, x.api_key.name, x.api_key.key
        )
    });
    let mut rows = vec![
        row("traces.destination", traces, s.traces),
        row("metrics.prometheus.workspaceArn", amp, s.prometheus),
        row("datadog", datadog, s.datadog),
    ];
    let a = &s.archive;
    match &d.archive {
        None => rows.push(row("archive.enabled", on(false).into(), a.enabled)),
        Some(x) => rows.extend([
            row("archive.enabled", on(true).into(), a.enabled),
            row("archive.bucket", x.bucket.clone(), a.bucket),
            row(
                "archive.retentionYears",
                format!("{} (Object Lock COMPLIANCE)", x.retention_years),
                a.retention_years,
            ),
            row(
                "archive.transition",
                format!("{} after {} days", x.storage_class.as_str(), x.transition_after_days),
                a.transition,
            ),
            row("archive.prefix", x.prefix.clone(), a.prefix),
        ]),
    }
    rows.extend(hot_path_rows(e));
    rows
}

fn lifecycle(e: &Effective) -> Vec<Setting> {
    let s = &e.sources.lifecycle;
    vec![
        row("driftPolicy", format!("{:?}", e.drift_policy), s.drift_policy),
        row("deletionPolicy", format!("{:?}", e.deletion_policy), s.deletion_policy),
        row(
            "resyncInterval",
            format_duration_ms(e.resync_interval_ms),
            s.resync_interval,
        ),
        row(
            "dataFlow.gracePeriod",
            format_duration_ms(e.data_flow_grace_ms),
            s.data_flow_grace,
        ),
    ]
}

/// `spec.hotPath`.
fn hot_path_rows(e: &Effective) -> Vec<Setting> {
    let s = &e.sources.destinations.hot_path;
    let Some(h) = &e.destinations.hot_path else {
        return vec![row("hotPath.enabled", on(false).into(), s.enabled)];
    };
    vec![
        row("hotPath.enabled", on(true).into(), s.enabled),
        row("hotPath.stream", h.stream.clone(), s.stream),
        row("hotPath.capacity", h.capacity.to_string(), s.capacity),
        row(
            "hotPath.retentionHours",
            h.retention_hours.to_string(),
            s.retention_hours,
        ),
        row("hotPath.patterns", h.patterns.join(" | "), s.patterns),
        row(
            "hotPath.memBufLimitMB",
            format!("{}MB", h.mem_buf_limit_mb),
            s.mem_buf_limit,
        ),
        row("hotPath.image", h.image.clone(), s.image),
    ]
}
