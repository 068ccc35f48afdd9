//! Destinations beyond CloudWatch as effective values: spans to AWS X-Ray or an OTLP backend, the
//! selected GPU metrics to Amazon Managed Service for Prometheus (AMP) and to Datadog. A leaf of
//! `desired`: each builder renders its own part next to the rest of what it builds —
//! `collector_config::destinations` (exporters, SigV4 extensions, the traces pipeline),
//! `collector_daemonset::destinations` (the Datadog key from its Secret, a CA bundle),
//! `aws_plan::destinations` (the role's statements), `cost::destinations` (a monthly line each).

use crate::crd::{ArchiveStorageClass, KeyRef};

/// Environment variable of the collector that holds the Datadog API key (from its Secret).
pub const DD_API_KEY_ENV: &str = "DD_API_KEY";
/// Datadog's default site.
pub const DEFAULT_DATADOG_SITE: &str = "datadoghq.com";

/// Where spans go.
#[derive(Debug, Clone, PartialEq)]
pub enum EffTraces {
    /// AWS X-Ray's OTLP endpoint in the pipeline's region.
    XRay,
    /// An OTLP/HTTP backend.
    Otlp(EffOtlpBackend),
}

/// An OTLP/HTTP backend (Tempo, Jaeger).
#[derive(Debug, Clone, PartialEq)]
pub struct EffOtlpBackend {
    /// `host:port`.
    pub endpoint: String,
    /// Plaintext HTTP.
    pub insecure: bool,
    /// ConfigMap key with the CA bundle, mounted into the collector.
    pub ca: Option<KeyRef>,
}

/// Stands for the id of a workspace mlobs has yet to create, in what `mlobs render` prints; the
/// operator applies no collector while it stands in the configuration.
pub const PENDING_WORKSPACE_ID: &str = "<workspace id once created>";

/// An AMP workspace: one given by ARN, or one mlobs manages by alias.
#[derive(Debug, Clone, PartialEq)]
pub struct EffPrometheus {
    /// The workspace's ARN; ends in [`PENDING_WORKSPACE_ID`] while a managed one is pending.
    pub workspace_arn: String,
    pub region: String,
    pub workspace_id: String,
    /// Some: mlobs creates (or adopts) the workspace of this alias.
    pub managed: Option<ManagedWorkspace>,
}

/// A workspace mlobs manages.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedWorkspace {
    pub alias: String,
    /// Not created yet (no ARN recorded in status for this alias): the role gets no
    /// `aps:RemoteWrite` and no collector is applied until it is.
    pub pending: bool,
}

impl EffPrometheus {
    /// A managed workspace whose id is not known yet.
    pub fn pending(&self) -> bool {
        self.managed.as_ref().is_some_and(|m| m.pending)
    }

    /// The workspace's remote write URL.
    pub fn remote_write_url(&self, partition: &str) -> String {
        format!(
            "https://aps-workspaces.{}.{}/workspaces/{}/api/v1/remote_write",
            self.region,
            dns_suffix(partition),
            self.workspace_id
        )
    }
}

/// Datadog.
#[derive(Debug, Clone, PartialEq)]
pub struct EffDatadog {
    pub site: String,
    pub api_key: KeyRef,
}

/// The S3 archive of pod logs, with Object Lock.
#[derive(Debug, Clone, PartialEq)]
pub struct EffArchive {
    pub bucket: String,
    /// Whether `bucket` is mlobs' derived name (not the spec's).
    pub derived_name: bool,
    /// COMPLIANCE default retention.
    pub retention_years: i32,
    pub transition_after_days: i32,
    pub storage_class: ArchiveStorageClass,
    /// Ends in `/`.
    pub prefix: String,
}

impl EffArchive {
    /// `arn:<partition>:s3:::<bucket>`: bucket ARNs name neither region nor account.
    pub fn bucket_arn(&self, partition: &str) -> String {
        format!("arn:{partition}:s3:::{}", self.bucket)
    }
}

/// Kinesis capacity: on-demand, or a fixed number of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capacity {
    OnDemand,
    Provisioned { shards: i32 },
}

impl std::fmt::Display for Capacity {
    /// `ON_DEMAND`, or `PROVISIONED, <n> shards`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::OnDemand => f.write_str("ON_DEMAND"),
            Capacity::Provisioned { shards } => write!(f, "PROVISIONED, {shards} shards"),
        }
    }
}

/// The hot path, when enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct EffHotPath {
    pub stream: String,
    /// Whether `stream` is mlobs' derived name (not the spec's).
    pub derived_name: bool,
    pub capacity: Capacity,
    pub retention_hours: i32,
    /// Regexes on the `log` key, OR'ed.
    pub patterns: Vec<String>,
    pub mem_buf_limit_mb: i32,
    pub image: String,
    /// Fluent Bit's own IAM role (created): `mlobs-<cluster>-<namespace>-<pipeline>-hotpath`.
    pub role_name: String,
}

/// Every destination beyond CloudWatch; `None` is off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EffDestinations {
    pub traces: Option<EffTraces>,
    pub prometheus: Option<EffPrometheus>,
    pub datadog: Option<EffDatadog>,
    pub archive: Option<EffArchive>,
    /// The hot path (Fluent Bit → Kinesis): a destination of critical log lines.
    pub hot_path: Option<EffHotPath>,
}

/// The parts of an ARN: partition, service, region, account, resource.
pub struct ArnParts<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Splits `arn:<partition>:<service>:<region>:<account>:<resource>`; None for anything else.
pub fn parse_arn(arn: &str) -> Option<ArnParts<'_>> {
    let mut it = arn.splitn(6, ':');
    if it.next()? != "arn" {
        return None;
    }
    Some(ArnParts {
        partition: it.next()?,
        service: it.next()?,
        region: it.next()?,
        account: it.next()?,
        resource: it.next()?,
    })
}

/// X-Ray's OTLP traces endpoint in a region.
pub fn xray_traces_endpoint(region: &str, partition: &str) -> String {
    format!("https://xray.{region}.{}/v1/traces", dns_suffix(partition))
}

impl EffOtlpBackend {
    /// The backend's OTLP/HTTP traces URL: plaintext `http://` when insecure, else `https://`.
    pub fn traces_endpoint(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/v1/traces", self.endpoint)
    }
}

/// DNS suffix of AWS service endpoints in a partition.
pub fn dns_suffix(partition: &str) -> &'static str {
    match partition {
        "aws-cn" => "amazonaws.com.cn",
        _ => "amazonaws.com",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_split_into_their_six_parts_and_the_resource_keeps_its_colons() {
        let a = parse_arn("arn:aws:aps:eu-west-1:123456789012:workspace/ws-1").expect("an ARN");
        assert_eq!(
            (a.partition, a.service, a.region, a.account, a.resource),
            ("aws", "aps", "eu-west-1", "123456789012", "workspace/ws-1")
        );
        assert_eq!(
            parse_arn("arn:aws:logs:r:1:log-group:a:b").map(|a| a.resource),
            Some("log-group:a:b")
        );
        assert!(parse_arn("aws:aps:r:1:w").is_none() && parse_arn("arn:aws:aps").is_none());
    }

    #[test]
    fn remote_write_url_follows_region_partition_and_workspace() {
        let p = EffPrometheus {
            workspace_arn: "arn:aws-cn:aps:cn-north-1:123456789012:workspace/ws-a1".into(),
            region: "cn-north-1".into(),
            workspace_id: "ws-a1".into(),
            managed: None,
        };
        assert_eq!(
            p.remote_write_url("aws-cn"),
            "https://aps-workspaces.cn-north-1.amazonaws.com.cn/workspaces/ws-a1/api/v1/remote_write"
        );
    }
}
