//! `spec.hotPath` and the policy's `hotPath.required` guardrail.

use super::Merger;
use super::placement::Placement;
use crate::crd::{DEFAULT_HOT_PATH_PATTERNS, MLObservabilityPipelineSpec};
use crate::desired::hot_path::{
    Capacity, DEFAULT_FLUENT_BIT_IMAGE, DEFAULT_MEM_BUF_LIMIT_MB, DEFAULT_RETENTION_HOURS, EffHotPath,
    derived_role_name, derived_stream_name,
};
use crate::desired::sources::{HotPathSources, Source, Sourced};

/// The hot path, when enabled: by the pipeline's section, or by the policy's `required`.
pub(super) fn hot_path(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
) -> (Option<EffHotPath>, HotPathSources) {
    let h = spec.hot_path.as_ref();
    let required = m
        .policy_spec()
        .and_then(|p| p.hot_path.as_ref())
        .and_then(|p| p.required)
        == Some(true);
    let enabled = super::section_enabled(h.and_then(|h| h.enabled), h.is_some(), required);
    if required && !enabled.value {
        m.violate(
            "spec.hotPath.enabled",
            "hotPath.required",
            "the policy requires every pipeline to send critical log lines to Kinesis",
        );
    }
    if !enabled.value {
        return (
            None,
            HotPathSources {
                enabled: enabled.source,
                ..Default::default()
            },
        );
    }
    let derived = derived_stream_name(&at.cluster_name.value, &at.namespace, &at.name);
    let stream = Sourced::pipeline_or(h.and_then(|h| h.stream.clone()), derived);
    let shards = h.and_then(|h| h.shards);
    let retention = Sourced::pipeline_or(h.and_then(|h| h.retention_hours), DEFAULT_RETENTION_HOURS);
    let default_patterns = DEFAULT_HOT_PATH_PATTERNS.iter().map(|p| p.to_string()).collect();
    let patterns = Sourced::pipeline_or(h.and_then(|h| h.patterns.clone()), default_patterns);
    let buf = Sourced::pipeline_or(h.and_then(|h| h.mem_buf_limit_mb), DEFAULT_MEM_BUF_LIMIT_MB);
    let image = Sourced::pipeline_or(h.and_then(|h| h.image.clone()), DEFAULT_FLUENT_BIT_IMAGE.to_string());
    let sources = HotPathSources {
        enabled: enabled.source,
        stream: if stream.source == Source::BuiltIn {
            Source::Derived
        } else {
            stream.source
        },
        capacity: if shards.is_some() {
            Source::Pipeline
        } else {
            Source::BuiltIn
        },
        retention_hours: retention.source,
        patterns: patterns.source,
        mem_buf_limit: buf.source,
        image: image.source,
    };
    let eff = EffHotPath {
        derived_name: stream.source == Source::BuiltIn,
        stream: stream.value,
        capacity: shards.map_or(Capacity::OnDemand, |shards| Capacity::Provisioned { shards }),
        retention_hours: retention.value,
        patterns: patterns.value,
        mem_buf_limit_mb: buf.value,
        image: image.value,
        role_name: derived_role_name(&at.cluster_name.value, &at.namespace, &at.name),
    };
    (Some(eff), sources)
}
