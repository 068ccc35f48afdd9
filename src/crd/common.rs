//! Spec pieces shared by both kinds, and the fixed facts they are validated against.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Retention values CloudWatch Logs accepts (days).
pub const ALLOWED_RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/// The default DCGM field set: no profiling fields, so the exporter needs no SYS_ADMIN.
pub const DEFAULT_DCGM_METRICS: [&str; 10] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
];

/// CEL: an image reference pinned by tag or digest (the same test as `validate::check_pinned_image`).
pub const PINNED_IMAGE_RULE: &str =
    "self.contains('@sha256:') || (self.substring(self.lastIndexOf('/') + 1).contains(':') && !self.endsWith(':'))";
/// The message of [`PINNED_IMAGE_RULE`].
pub const PINNED_IMAGE_MESSAGE: &str = "the image must be pinned by tag or digest";
/// CEL: a tag-pinned image is not `:latest`.
pub const NOT_LATEST_RULE: &str = "self.contains('@sha256:') || !self.endsWith(':latest')";
/// The message of [`NOT_LATEST_RULE`].
pub const NOT_LATEST_MESSAGE: &str = "the latest tag is not pinned; name a version";

/// CEL: the image is not a contrib collector release older than 0.125.0 (the repositories and tag
/// forms `collector_version::contrib_version` reads; a test keeps the two in step).
pub const CONTRIB_BEFORE_0_125_RULE: &str = r"!self.matches('^(docker\\.io/)?(otel/opentelemetry-collector-contrib|ghcr\\.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib):v?0+\\.0*([0-9]{1,2}|1[01][0-9]|12[0-4])(\\.[0-9]+)?([-+][^@]*)?(@.*)?$')";

/// CloudWatch Logs log group class. Set at creation only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogGroupClass {
    /// Full feature set; required for EMF metric extraction.
    #[default]
    Standard,
    /// Half the ingestion price; no metric filters and no EMF extraction.
    InfrequentAccess,
}

impl LogGroupClass {
    pub fn as_str(self) -> &'static str {
        match self {
            LogGroupClass::Standard => "STANDARD",
            LogGroupClass::InfrequentAccess => "INFREQUENT_ACCESS",
        }
    }
}

/// How the collector gets AWS credentials.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdentityMode {
    /// IAM Roles for Service Accounts: the role trusts the cluster's OIDC provider for exactly the
    /// collector's ServiceAccount, which carries the `eks.amazonaws.com/role-arn` annotation.
    #[serde(rename = "IRSA")]
    Irsa,
    /// EKS Pod Identity: the role trusts `pods.eks.amazonaws.com` and the operator creates the pod
    /// identity association. Needs the EKS Pod Identity Agent add-on.
    PodIdentity,
}

impl IdentityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Irsa => "IRSA",
            IdentityMode::PodIdentity => "PodIdentity",
        }
    }
}

/// One log redaction: every match of `pattern` in a log body is replaced before any exporter.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redaction {
    /// Optional name, used to match the platform's required redactions and in messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// RE2 regular expression (the collector's OTTL `replace_pattern`). Write `$` plainly: the
    /// operator escapes it for the collector configuration. Rust-only syntax is refused: `\u`
    /// escapes (write `\x{..}`), flags other than `imsU`, `\p{..}` other than general categories
    /// and script names, nested classes, counts above 1000.
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
    /// Replacement text; `$1`-style group references are allowed.
    #[schemars(length(max = 1024))]
    pub replacement: String,
}

/// What the operator does when an AWS or Kubernetes resource no longer matches the spec.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DriftPolicy {
    /// Record the drift and put the resource back.
    #[default]
    Correct,
    /// Record the drift in status and events only.
    Report,
}

/// What happens to AWS resources when the pipeline is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the KMS key, log groups (and their data) and role; only mlobs ownership tags are removed.
    #[default]
    Retain,
    /// Delete the role, the log groups and the alias, and schedule the key's deletion.
    Delete,
}

/// Parses a duration such as `30s`, `1m30s`, `250ms` or `2h` into milliseconds.
///
/// The accepted grammar is the subset of Go durations the collector and the CRD pattern agree on.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("{s:?}: expected a number at position {start}"));
        }
        let n: u64 = s[start..i].parse().map_err(|_| format!("{s:?}: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("{s:?}: missing unit (ms, s, m or h)")),
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?}: duration too large"))?;
    }
    Ok(total)
}

/// Formats milliseconds the way the collector expects (`1m30s`, `250ms`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1_000, rest % 1_000);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if milli > 0 {
        out.push_str(&format!("{milli}ms"));
    }
    out
}

/// The CRD pattern for durations; [`parse_duration_ms`] accepts exactly these strings.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(ms|s|m|h))+$";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("30").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("5d").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999999s").is_err());
    }

    proptest! {
        #[test]
        fn duration_format_round_trips(ms in 1u64..10_000_000_000) {
            prop_assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }

        #[test]
        fn duration_parse_never_panics(s in "\\PC{0,20}") {
            let _ = parse_duration_ms(&s);
        }
    }
}
