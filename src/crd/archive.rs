//! The long-term archive of pod logs (pipeline spec) and its guardrails (policy spec): an S3
//! bucket with Object Lock in COMPLIANCE mode, written by the collector's `awss3` exporter.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a bucket name mlobs accepts: S3's rules for a general purpose bucket without dots
/// (a dotted name breaks TLS on virtual-hosted requests): 3–63 lowercase letters, digits and
/// hyphens, starting and ending with a letter or digit.
pub const BUCKET_PATTERN: &str = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$";

/// CEL (at `spec.archive.bucket`): the prefixes and suffixes S3 reserves.
pub const BUCKET_RESERVED_RULE: &str = "!self.startsWith('xn--') && !self.startsWith('sthree-') && !self.startsWith('amzn-s3-demo-') && !self.endsWith('-s3alias') && !self.endsWith('--ol-s3') && !self.endsWith('--x-s3') && !self.endsWith('--table-s3')";
/// The message of [`BUCKET_RESERVED_RULE`].
pub const BUCKET_RESERVED_MESSAGE: &str = "bucket must not start with xn--, sthree- or amzn-s3-demo-, nor end with -s3alias, --ol-s3, --x-s3 or --table-s3 (reserved by S3)";

/// Pattern of an object key prefix: path segments of S3's safe characters, each ending in `/`.
/// No `*` or `?`: the prefix is also the resource of the collector's IAM statement.
pub const PREFIX_PATTERN: &str = r"^([A-Za-z0-9!_.'()-]+/)+$";

/// CEL (at `spec.archive`): S3 refuses a transition to STANDARD_IA sooner than 30 days.
pub const STANDARD_IA_RULE: &str = "!has(self.storageClass) || self.storageClass != 'STANDARD_IA' || !has(self.transitionAfterDays) || self.transitionAfterDays >= 30";
/// The message of [`STANDARD_IA_RULE`].
pub const STANDARD_IA_MESSAGE: &str =
    "a transition to STANDARD_IA needs transitionAfterDays of at least 30 (an S3 lifecycle rule)";

/// CEL (at `spec`, reported at `spec.archive`): the archive stores pod logs.
pub const ARCHIVE_NEEDS_LOGS_RULE: &str = "!has(self.archive) || (has(self.archive.enabled) && !self.archive.enabled) || !has(self.logs) || !has(self.logs.enabled) || self.logs.enabled";
/// The message of [`ARCHIVE_NEEDS_LOGS_RULE`].
pub const ARCHIVE_NEEDS_LOGS_MESSAGE: &str =
    "the archive stores pod logs: it needs spec.logs.enabled (default true), not false";

/// The colder storage class objects move to after `transitionAfterDays`: `STANDARD_IA`,
/// `GLACIER_IR` (default), `GLACIER` or `DEEP_ARCHIVE`. Objects smaller than 128 KB are billed as
/// 128 KB in the first two, and carry 40 KB of index in the Glacier ones (`mlobs plan` shows it).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ArchiveStorageClass {
    /// S3 Standard-Infrequent Access (millisecond reads; at least 30 days in STANDARD first).
    #[serde(rename = "STANDARD_IA")]
    StandardIa,
    /// S3 Glacier Instant Retrieval (millisecond reads, 90-day minimum storage).
    #[default]
    #[serde(rename = "GLACIER_IR")]
    GlacierIr,
    /// S3 Glacier Flexible Retrieval (restores take minutes to hours, 90-day minimum).
    #[serde(rename = "GLACIER")]
    Glacier,
    /// S3 Glacier Deep Archive (restores take up to 12 hours, 180-day minimum; the cheapest).
    #[serde(rename = "DEEP_ARCHIVE")]
    DeepArchive,
}

impl ArchiveStorageClass {
    /// The S3 API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveStorageClass::StandardIa => "STANDARD_IA",
            ArchiveStorageClass::GlacierIr => "GLACIER_IR",
            ArchiveStorageClass::Glacier => "GLACIER",
            ArchiveStorageClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }
}

/// Every pod log record, also written to an S3 bucket with Object Lock for long-term retention.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(STANDARD_IA_RULE).message(STANDARD_IA_MESSAGE).reason(Reason::FieldValueInvalid))]
pub struct ArchiveSpec {
    /// Archive every pod log record to S3 as well as CloudWatch (default true when this section is
    /// present; the policy's `archive.required` turns it on for every pipeline and refuses `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Name of the bucket mlobs creates, or adopts when its tags say it is this pipeline's (or
    /// `spec.adopt` is set). 3–63 lowercase letters, digits and hyphens (no dots). Default:
    /// `mlobs-<cluster>-<namespace>-<pipeline>-<hash>`, unique per account, region, cluster,
    /// namespace and pipeline. The operator's IAM policy covers names starting with `mlobs-`
    /// (`mlobs plan --operator-policy --archive-bucket-prefix` to change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63), regex(pattern = BUCKET_PATTERN))]
    #[x_kube(validation = Rule::new(BUCKET_RESERVED_RULE).message(BUCKET_RESERVED_MESSAGE).reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("archive.bucket is fixed once set: a bucket with Object Lock cannot be deleted or renamed").reason(Reason::FieldValueForbidden))]
    pub bucket: Option<String>,

    /// Years every archived object is locked in COMPLIANCE mode: nobody, not even the account's
    /// root user, can delete or overwrite it before then. 1–100 (default: the policy's
    /// `archive.minRetentionYears`, else 7). Raising it applies to objects written afterwards;
    /// mlobs never lowers the bucket's default retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub retention_years: Option<i32>,

    /// Days after which objects move to `storageClass` (a lifecycle rule), 1–36500 (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub transition_after_days: Option<i32>,

    /// The colder class objects move to: `STANDARD_IA`, `GLACIER_IR` (default), `GLACIER` or
    /// `DEEP_ARCHIVE`. Small objects cost more than they weigh there (`mlobs plan` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<ArchiveStorageClass>,

    /// Key prefix of the archived objects, ending in `/` (default `logs/<namespace>/<pipeline>/`).
    /// The collector adds `year=YYYY/month=MM/day=DD/hour=HH/` and may write only under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 256), regex(pattern = PREFIX_PATTERN))]
    pub prefix: Option<String>,
}

/// Policy: archive guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyArchiveSpec {
    /// Every governed pipeline archives its logs: the archive is on unless the pipeline sets
    /// `archive.enabled: false`, which is then a violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,

    /// Fewest years of COMPLIANCE retention a pipeline may set; also the default. 1–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_retention_years: Option<i32>,
}
