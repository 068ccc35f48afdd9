//! The collector components of the destinations beyond CloudWatch: one exporter each, a SigV4
//! extension for each AWS one, and the traces pipeline. Called by [`super::build`], which owns
//! the layout.

use serde_json::{Map, Value, json};

use super::{STORAGE, lit, node_env};
use crate::crd::format_duration_ms;
use crate::desired::destinations::{
    DD_API_KEY_ENV, EffArchive, EffDatadog, EffOtlpBackend, EffPrometheus, EffTraces, xray_traces_endpoint,
};
use crate::desired::effective::Effective;

pub const XRAY_EXPORTER: &str = "otlphttp/xray";
pub const XRAY_AUTH: &str = "sigv4auth/xray";
pub const OTLP_TRACES_EXPORTER: &str = "otlphttp/traces";
pub const AMP_EXPORTER: &str = "prometheusremotewrite/aps";
pub const AMP_AUTH: &str = "sigv4auth/aps";
pub const DATADOG_EXPORTER: &str = "datadog";
pub const ARCHIVE_EXPORTER: &str = "awss3/archive";
/// Hourly partitions under the archive prefix (the exporter's default adds minutes).
pub const ARCHIVE_PARTITION_FORMAT: &str = "year=%Y/month=%m/day=%d/hour=%H";
/// Where a traces backend's CA bundle is mounted in the collector.
pub const TRACES_CA_DIR: &str = "/etc/mlobs/traces-ca";

/// The processors of the traces pipeline: memory_limiter first, batch last, the same enrichment
/// as logs and metrics in between.
pub const TRACES_PROCESSORS: [&str; 4] = ["memory_limiter", "k8sattributes", "resource", "batch"];

/// The exporter's persistent queue and retries, as the CloudWatch exporters have them.
fn queue_and_retry(e: &Effective, exporter: &mut Value) {
    exporter["sending_queue"] = json!({"enabled": true, "storage": STORAGE});
    exporter["retry_on_failure"] = retry(e);
}

fn retry(e: &Effective) -> Value {
    json!({"enabled": true, "max_elapsed_time": format_duration_ms(e.collector.retry_max_elapsed_ms)})
}

fn sigv4(region: &str, service: &str) -> Value {
    json!({"region": lit(region), "service": service})
}

/// X-Ray's OTLP endpoint: HTTP only, gzip or none, SigV4 with service `xray`.
fn xray(e: &Effective) -> Value {
    let endpoint = xray_traces_endpoint(&e.region, &e.partition);
    let mut x = json!({
        "traces_endpoint": lit(&endpoint),
        "compression": "gzip",
        "auth": {"authenticator": XRAY_AUTH},
    });
    queue_and_retry(e, &mut x);
    x
}

/// OTLP over HTTP (Tempo and Jaeger serve it on 4318): plaintext `http://` when insecure, else
/// `https://` verified against the mounted CA bundle or the image's system roots.
fn otlp_backend(e: &Effective, b: &EffOtlpBackend) -> Value {
    let tls = match (&b.ca, b.insecure) {
        (_, true) => json!({"insecure": true}),
        (Some(ca), false) => json!({"ca_file": lit(&format!("{TRACES_CA_DIR}/{}", ca.key))}),
        (None, false) => json!({"insecure": false}),
    };
    let mut x = json!({"traces_endpoint": lit(&b.traces_endpoint()), "compression": "gzip", "tls": tls});
    queue_and_retry(e, &mut x);
    x
}

/// Remote write of the selected fields under their DCGM names (no unit or `_total` suffixes, so
/// dashboards written for dcgm-exporter work unchanged). This exporter has no persistent queue.
fn amp(e: &Effective, p: &EffPrometheus) -> Value {
    json!({
        "endpoint": lit(&p.remote_write_url(&e.partition)),
        "auth": {"authenticator": AMP_AUTH},
        "add_metric_suffixes": false,
        "resource_to_telemetry_conversion": {"enabled": true},
        // Off: the exporter would add a `target_info` series per resource (the e2e remote-write
        // sink saw it), a series nobody selected; resource attributes are labels already.
        "target_info": {"enabled": false},
        "retry_on_failure": retry(e),
    })
}

/// The key is an environment reference the collector expands at start; it never appears here.
/// One Datadog host per node: Datadog bills by host.
fn datadog(e: &Effective, d: &EffDatadog) -> Value {
    let mut x = json!({
        "api": {"key": format!("${{env:{DD_API_KEY_ENV}}}"), "site": lit(&d.site), "fail_on_invalid_key": true},
        "hostname": node_env(),
    });
    queue_and_retry(e, &mut x);
    x
}

/// The S3 archive: gzip'd OTLP JSON objects under `<prefix>year=/month=/day=/hour=/`, one per
/// batch, named after the node. The bucket's default encryption (SSE-KMS) and Object Lock apply
/// to every object without a header here. The exporter's S3 client (aws-sdk-go-v2 s3 v1.79 in
/// contrib 0.124.1) sends `x-amz-checksum-crc32` (pinned by the DaemonSet's
/// `AWS_REQUEST_CHECKSUM_CALCULATION`) but neither `Content-MD5` nor
/// `x-amz-sdk-checksum-algorithm`, which the S3 API reference names for PUTs into a bucket with a
/// default retention, and which moto requires (tests/archive_dataflow.rs records the headers;
/// README "S3 archive"). No exporter option of this version adds them. It has no
/// `retry_on_failure` either: its S3 client retries (3 attempts), then the batch is dropped.
fn archive(e: &Effective, a: &EffArchive) -> Value {
    json!({
        "s3uploader": {
            "region": lit(&e.region),
            "s3_bucket": lit(&a.bucket),
            // The exporter joins prefix and partition with a `/` of its own.
            "s3_prefix": lit(a.prefix.trim_end_matches('/')),
            "s3_partition_format": ARCHIVE_PARTITION_FORMAT,
            "file_prefix": format!("{}_", node_env()),
            "compression": "gzip",
        },
        "marshaler": "otlp_json",
        "sending_queue": {"enabled": true, "storage": STORAGE},
    })
}

/// Adds the logs destinations' exporters (the archive) and returns their names, after
/// `awscloudwatchlogs`: the logs pipeline fans out, so the archive gets every redacted record.
pub fn logs_exporters(e: &Effective, exporters: &mut Map<String, Value>) -> Vec<&'static str> {
    let Some(a) = &e.destinations.archive else {
        return vec![];
    };
    exporters.insert(ARCHIVE_EXPORTER.into(), archive(e, a));
    vec![ARCHIVE_EXPORTER]
}

/// The destinations' extensions (SigV4 signers), by name.
pub fn extensions(e: &Effective, metrics: bool, traces: bool) -> Vec<(&'static str, Value)> {
    let d = &e.destinations;
    let mut out = vec![];
    if traces && d.traces == Some(EffTraces::XRay) {
        out.push((XRAY_AUTH, sigv4(&e.region, "xray")));
    }
    if let (true, Some(p)) = (metrics, &d.prometheus) {
        out.push((AMP_AUTH, sigv4(&p.region, "aps")));
    }
    out
}

/// Adds the metrics destinations' exporters and returns their names, after `awsemf`'s: the
/// metrics pipeline fans out to each, so every one gets exactly the filtered fields.
pub fn metrics_exporters(e: &Effective, exporters: &mut Map<String, Value>) -> Vec<&'static str> {
    let d = &e.destinations;
    let mut names = vec![];
    if let Some(p) = &d.prometheus {
        exporters.insert(AMP_EXPORTER.into(), amp(e, p));
        names.push(AMP_EXPORTER);
    }
    if let Some(x) = &d.datadog {
        exporters.insert(DATADOG_EXPORTER.into(), datadog(e, x));
        names.push(DATADOG_EXPORTER);
    }
    names
}

/// Adds the traces exporter and returns the traces pipeline (OTLP in, the exporter out).
pub fn traces_pipeline(e: &Effective, exporters: &mut Map<String, Value>) -> Option<Value> {
    let (name, exporter) = match e.destinations.traces.as_ref()? {
        EffTraces::XRay => (XRAY_EXPORTER, xray(e)),
        EffTraces::Otlp(b) => (OTLP_TRACES_EXPORTER, otlp_backend(e, b)),
    };
    exporters.insert(name.into(), exporter);
    Some(json!({"receivers": ["otlp"], "processors": TRACES_PROCESSORS, "exporters": [name]}))
}
