//! The hot path (pipeline spec) and its guardrail (policy spec): a Fluent Bit DaemonSet that
//! greps the pipeline's container logs for critical lines and puts them on a Kinesis data stream,
//! so an alert path sees them in seconds instead of after the collector's batches.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a Kinesis data stream name (the Kinesis API's own).
pub const STREAM_PATTERN: &str = r"^[a-zA-Z0-9_.-]+$";

/// Patterns grepped when the spec lists none: error levels, OOM kills, failed checkpoints and
/// NCCL errors (the design sources' "critical lines"). Onigmo and Rust's `regex` read them alike.
pub const DEFAULT_HOT_PATH_PATTERNS: [&str; 4] = [
    r"(?i)\b(error|fatal|critical|panic)\b",
    r"OOMKilled|(?i:out of memory)",
    r"(?i)checkpoint\S*\s.*(fail|error|corrupt)",
    r"NCCL (WARN|ERROR)|nccl\w*Error",
];

/// Critical log lines to a Kinesis data stream within seconds, through a light Fluent Bit
/// DaemonSet on the pipeline's GPU nodes.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HotPathSpec {
    /// Run the hot path (default true when this section is present; the policy's
    /// `hotPath.required` turns it on for every pipeline and refuses `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Name of the Kinesis data stream mlobs creates, or adopts when its tags say it is this
    /// pipeline's (or `spec.adopt` is set). 1–128 of `[a-zA-Z0-9_.-]`. Default:
    /// `mlobs-<cluster>-<namespace>-<pipeline>-hot`. The operator's IAM policy covers names
    /// starting with `mlobs-` (`mlobs plan --operator-policy --hot-path-stream-prefix` to change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = STREAM_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("hotPath.stream is fixed once set: rename by creating a new pipeline").reason(Reason::FieldValueForbidden))]
    pub stream: Option<String>,

    /// Provisioned shards, 1–500. Absent: ON_DEMAND capacity (billed per stream-hour and per GB;
    /// `mlobs plan` shows both). One shard takes 1 MB/s or 1,000 records/s of writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub shards: Option<i32>,

    /// Hours records stay readable on the stream, 24 (default) to 8760 (365 days). Beyond 24
    /// hours Kinesis bills extended retention per shard-hour (`mlobs plan` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 24, max = 8760))]
    pub retention_hours: Option<i32>,

    /// Regular expressions (Fluent Bit's Onigmo syntax, also compilable by RE2-style engines) a
    /// container log line must match to be sent; a line matching any of them is sent. Default:
    /// error levels (`error`, `fatal`, `critical`, `panic`), `OOMKilled` and "out of memory",
    /// checkpoint failures and NCCL errors. At most 32, each 1–1024 characters on one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 1024)))]
    pub patterns: Option<Vec<String>>,

    /// Fluent Bit's `Mem_Buf_Limit` of the tail input in MB, 1–1024 (default 50): above it the
    /// input pauses and buffers on the node's disk (`storage.type filesystem`) instead of being
    /// OOM-killed. The container's memory limit is this plus 100 MiB.
    #[serde(default, rename = "memBufLimitMB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub mem_buf_limit_mb: Option<i32>,

    /// Fluent Bit image, pinned by tag or digest (`:latest` is refused; default
    /// `cr.fluentbit.io/fluent/fluent-bit:4.0.3`). It must have the `kinesis_streams` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(super::common::PINNED_IMAGE_RULE).message(super::common::PINNED_IMAGE_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new(super::common::NOT_LATEST_RULE).message(super::common::NOT_LATEST_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub image: Option<String>,
}

/// Policy: hot path guardrail.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyHotPathSpec {
    /// Every governed pipeline runs the hot path: it is on unless the pipeline sets
    /// `hotPath.enabled: false`, which is then a violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// Why Fluent Bit's grep filter could not use `pattern`, with the character position of the error,
/// or `None`. Compiled with Rust's `regex` (Onigmo is a superset for these constructs: what this
/// accepts, Onigmo accepts). A classic-mode config value is one line with no surrounding
/// whitespace, so newlines and leading/trailing blanks are refused too.
pub fn pattern_error(pattern: &str) -> Option<String> {
    if let Some(at) = pattern.find(['\n', '\r']) {
        return Some(format!(
            "{pattern:?}: line break at position {at}: a Fluent Bit config value is one line"
        ));
    }
    if pattern.trim() != pattern {
        return Some(format!(
            "{pattern:?}: leading or trailing whitespace is dropped by Fluent Bit's config reader"
        ));
    }
    let parsed = regex_syntax::ast::parse::Parser::new().parse(pattern);
    if let Err(e) = parsed {
        return Some(format!(
            "{pattern:?} is not a valid regular expression: {} at position {}",
            e.kind(),
            e.span().start.offset
        ));
    }
    regex::Regex::new(pattern)
        .err()
        .map(|e| format!("{pattern:?} is not a valid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_compile_and_match_the_lines_they_are_for() {
        let res: Vec<regex::Regex> = DEFAULT_HOT_PATH_PATTERNS
            .iter()
            .map(|p| regex::Regex::new(p).expect("default pattern compiles"))
            .collect();
        let hit = |line: &str| res.iter().any(|r| r.is_match(line));
        for line in [
            "2026-01-01T00:00:00Z ERROR train.py:12 loss is nan",
            "Fatal: cannot open dataset",
            "reason: OOMKilled",
            "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "checkpoint save failed: disk full",
            "node-3:123:456 [0] NCCL WARN Net : Connection closed",
            "ncclSystemError: System call (e.g. socket, malloc) failed",
        ] {
            assert!(hit(line), "{line:?} should be sent");
        }
        for line in [
            "step 100 loss 0.12",
            "saved checkpoint step-100",
            "errorless run",
            "NCCL INFO Bootstrap",
        ] {
            assert!(!hit(line), "{line:?} should not be sent");
        }
    }

    #[test]
    fn a_bad_pattern_is_refused_with_its_text_and_position() {
        let e = pattern_error("ok|(unclosed").expect("refused");
        assert!(e.contains("\"ok|(unclosed\"") && e.contains("position 3"), "{e}");
        let e = pattern_error("a{2,1}").expect("refused");
        assert!(e.contains("position"), "{e}");
        assert!(pattern_error("two\nlines").expect("refused").contains("position 3"));
        assert!(pattern_error(" padded").is_some());
        assert_eq!(pattern_error(r"NCCL (WARN|ERROR)"), None);
    }
}
