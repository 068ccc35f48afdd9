//! `spec.archive` and the policy's `archive` guardrails (`required`, `minRetentionYears`).

use super::Merger;
use super::placement::Placement;
use crate::conventions;
use crate::crd::{ArchiveStorageClass, MLObservabilityPipelineSpec};
use crate::desired::destinations::EffArchive;
use crate::desired::effective::Context;
use crate::desired::sources::{ArchiveSources, Source, Sourced};

/// COMPLIANCE retention when neither the pipeline nor its policy sets one: the design's 7 years.
pub const DEFAULT_RETENTION_YEARS: i32 = 7;
/// Days in STANDARD before the lifecycle transition, when the spec sets none.
pub const DEFAULT_TRANSITION_DAYS: i32 = 90;

/// The archive, when enabled: by the pipeline's section, or by the policy's `required`.
pub(super) fn archive(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
    ctx: &Context,
    logs_enabled: bool,
) -> (Option<EffArchive>, ArchiveSources) {
    let a = spec.archive.as_ref();
    let pol = m.policy_spec().and_then(|p| p.archive.as_ref());
    let required = pol.and_then(|p| p.required) == Some(true);
    let enabled = super::section_enabled(a.and_then(|a| a.enabled), a.is_some(), required);
    let mut sources = ArchiveSources {
        enabled: enabled.source,
        ..Default::default()
    };
    if required && !enabled.value {
        m.violate(
            "spec.archive.enabled",
            "archive.required",
            "the policy requires every pipeline to archive its logs to S3 with Object Lock",
        );
    }
    if !enabled.value {
        return (None, sources);
    }
    if !logs_enabled {
        m.error(
            "spec.archive",
            "logsRequired",
            "the archive stores pod logs: enable spec.logs",
        );
    }
    let min = pol.and_then(|p| p.min_retention_years);
    let years = Sourced::pick(a.and_then(|a| a.retention_years), min, DEFAULT_RETENTION_YEARS);
    if let Some(min) = min
        && years.value < min
    {
        m.violate(
            "spec.archive.retentionYears",
            "archive.minRetentionYears",
            format!("{} years is below the policy minimum of {min}", years.value),
        );
    }
    let derived = conventions::archive_bucket_name(
        &ctx.account_id,
        &at.region.value,
        &at.cluster_name.value,
        &at.namespace,
        &at.name,
    );
    let bucket = Sourced::pipeline_or(a.and_then(|a| a.bucket.clone()), derived);
    let days = Sourced::pipeline_or(a.and_then(|a| a.transition_after_days), DEFAULT_TRANSITION_DAYS);
    let class = Sourced::pipeline_or(a.and_then(|a| a.storage_class), ArchiveStorageClass::default());
    if days.value >= years.value.saturating_mul(365) {
        // Not wrong, but the lifecycle rule would never matter while the lock holds.
        m.error(
            "spec.archive.transitionAfterDays",
            "transitionBeforeRetentionEnds",
            format!(
                "{} days is not before the {}-year retention ends: objects would stay in STANDARD for the whole retention",
                days.value, years.value
            ),
        );
    }
    let prefix = Sourced::pipeline_or(
        a.and_then(|a| a.prefix.clone()),
        conventions::archive_prefix(&at.namespace, &at.name),
    );
    sources = ArchiveSources {
        enabled: enabled.source,
        bucket: if bucket.source == Source::BuiltIn {
            Source::Derived
        } else {
            bucket.source
        },
        retention_years: years.source,
        transition: if days.source == Source::Pipeline || class.source == Source::Pipeline {
            Source::Pipeline
        } else {
            Source::BuiltIn
        },
        prefix: if prefix.source == Source::BuiltIn {
            Source::Derived
        } else {
            prefix.source
        },
    };
    let eff = EffArchive {
        derived_name: bucket.source == Source::BuiltIn,
        bucket: bucket.value,
        retention_years: years.value,
        transition_after_days: days.value,
        storage_class: class.value,
        prefix: prefix.value,
    };
    (Some(eff), sources)
}
