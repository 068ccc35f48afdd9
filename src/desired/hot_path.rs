//! The hot path's effective spec and its Fluent Bit configuration (classic mode), pure.
//!
//! One tail input over the pipeline's namespaces' container logs (memory-bounded, buffered on the
//! node's disk), one grep filter with the patterns OR'ed, one `kinesis_streams` output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::effective::Effective;
use crate::conventions;

/// Fluent Bit image when the spec names none.
pub const DEFAULT_FLUENT_BIT_IMAGE: &str = "cr.fluentbit.io/fluent/fluent-bit:4.0.3";
/// `Mem_Buf_Limit` when the spec sets none (the design's OOM warning: bound the tail input).
pub const DEFAULT_MEM_BUF_LIMIT_MB: i32 = 50;
/// Kinesis' minimum (and default) retention.
pub const DEFAULT_RETENTION_HOURS: i32 = 24;
/// Prefix of every derived stream name; the operator's IAM policy is scoped to it.
pub const STREAM_PREFIX: &str = "mlobs-";
/// Kinesis' limit on a stream name.
pub const STREAM_NAME_MAX: usize = 128;
/// Tag of the tail input's records (and what the filter and output match).
pub const TAG: &str = "hot.*";
/// Where the DaemonSet mounts the config.
pub const CONFIG_DIR: &str = "/fluent-bit/etc";
/// The config file's key in the ConfigMap.
pub const CONFIG_FILE: &str = "fluent-bit.conf";
/// Where the DaemonSet mounts its state (tail offsets, filesystem buffer) from the node.
pub const STATE_DIR: &str = "/var/fluent-bit/state";
/// The Fluent Bit HTTP server (health and metrics).
pub const HTTP_PORT: u16 = 2020;

pub use super::destinations::{Capacity, EffHotPath};

impl EffHotPath {
    /// `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
    pub fn stream_arn(&self, e: &Effective) -> String {
        stream_arn(&e.partition, &e.region, &e.account_id, &self.stream)
    }
}

pub fn stream_arn(partition: &str, region: &str, account: &str, name: &str) -> String {
    format!("arn:{partition}:kinesis:{region}:{account}:stream/{name}")
}

/// The stream of a pipeline when the spec names none: `mlobs-<cluster>-<namespace>-<name>-hot`,
/// hash-suffixed when it had to be cut to Kinesis' 128 characters.
pub fn derived_stream_name(cluster: &str, namespace: &str, name: &str) -> String {
    let raw = format!("{STREAM_PREFIX}{cluster}-{namespace}-{name}-hot");
    conventions::bounded_name(&raw, STREAM_NAME_MAX, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    })
}

/// Fluent Bit's role: the collector's derived name with `-hotpath`, cut to IAM's 64 characters.
pub fn derived_role_name(cluster: &str, namespace: &str, name: &str) -> String {
    let raw = format!("mlobs-{cluster}-{namespace}-{name}-hotpath");
    conventions::bounded_name(&raw, 64, |c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// Name of the Fluent Bit children (DaemonSet, ConfigMap, ServiceAccount): the collector's
/// child name with `-hotpath`, kept within a DNS label.
pub fn child_name(e: &Effective) -> String {
    conventions::bounded_name(&format!("{}-hotpath", e.child_name()), 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

/// The node directory holding tail offsets and the filesystem buffer: next to the collector's queue.
pub fn state_host_path(e: &Effective) -> String {
    format!("{}-hotpath", e.collector.queue_host_path.trim_end_matches('/'))
}

/// `/var/log/containers/*_<ns>_*.log` for each source namespace: the kubelet's symlinks are named
/// `<pod>_<namespace>_<container>-<id>.log`.
pub fn tail_paths(e: &Effective) -> Vec<String> {
    e.source_namespaces
        .iter()
        .map(|ns| format!("/var/log/containers/*_{ns}_*.log"))
        .collect()
}

/// The classic-mode configuration, byte-identical for the same input.
pub fn config(e: &Effective, h: &EffHotPath) -> String {
    let mut sections: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "SERVICE",
            vec![
                ("Flush", "1".into()),
                ("Daemon", "off".into()),
                ("Log_Level", "info".into()),
                ("HTTP_Server", "On".into()),
                ("HTTP_Listen", "0.0.0.0".into()),
                ("HTTP_Port", HTTP_PORT.to_string()),
                ("Health_Check", "On".into()),
                ("storage.path", format!("{STATE_DIR}/storage")),
                ("storage.sync", "normal".into()),
                ("storage.backlog.mem_limit", "5M".into()),
            ],
        ),
        (
            "INPUT",
            vec![
                ("Name", "tail".into()),
                ("Tag", TAG.into()),
                ("Path", tail_paths(e).join(",")),
                ("multiline.parser", "docker, cri".into()),
                ("DB", format!("{STATE_DIR}/tail.db")),
                ("Mem_Buf_Limit", format!("{}MB", h.mem_buf_limit_mb)),
                ("storage.type", "filesystem".into()),
                ("Skip_Long_Lines", "On".into()),
                ("Refresh_Interval", "5".into()),
            ],
        ),
    ];
    let mut grep = vec![
        ("Name", "grep".to_string()),
        ("Match", TAG.into()),
        ("Logical_Op", "or".into()),
    ];
    grep.extend(h.patterns.iter().map(|p| ("Regex", format!("log {p}"))));
    sections.push(("FILTER", grep));
    sections.push((
        "OUTPUT",
        vec![
            ("Name", "kinesis_streams".into()),
            ("Match", TAG.into()),
            ("region", e.region.clone()),
            ("stream", h.stream.clone()),
            ("time_key", "time".into()),
            ("time_key_format", "%Y-%m-%dT%H:%M:%S.%3N".into()),
        ],
    ));
    let mut out = String::new();
    for (i, (name, entries)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "[{name}]");
        for (k, v) in entries {
            let _ = writeln!(out, "    {k} {v}");
        }
    }
    out
}

/// The ConfigMap's data.
pub fn config_data(e: &Effective, h: &EffHotPath) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_FILE.to_string(), config(e, h))])
}

/// The effective-spec fixture with the hot path on (derived stream, on-demand, 24 hours, the
/// default patterns).
#[cfg(test)]
pub(crate) fn test_hot_path() -> Effective {
    let mut e = crate::desired::effective::test_fixture();
    e.destinations.hot_path = Some(EffHotPath {
        stream: derived_stream_name(&e.cluster_name, &e.namespace, &e.name),
        derived_name: true,
        capacity: Capacity::OnDemand,
        retention_hours: DEFAULT_RETENTION_HOURS,
        patterns: crate::crd::DEFAULT_HOT_PATH_PATTERNS
            .iter()
            .map(|p| p.to_string())
            .collect(),
        mem_buf_limit_mb: DEFAULT_MEM_BUF_LIMIT_MB,
        image: DEFAULT_FLUENT_BIT_IMAGE.into(),
        role_name: derived_role_name(&e.cluster_name, &e.namespace, &e.name),
    });
    e
}
