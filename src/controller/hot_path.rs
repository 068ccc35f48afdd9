//! The controller's side of the hot path: the `HotPathReady` message, and retiring the stream
//! and Fluent Bit's role when the hot path is turned off (per `deletionPolicy`, as at deletion).

use crate::crd::{DeletionPolicy, MLObservabilityPipeline};
use crate::desired::Desired;
use crate::desired::aws_plan::hot_path::HotPathPlan;
use crate::desired::hot_path::Capacity;

/// The `HotPathReady` message of a ready stream (after its ARN).
pub fn summary(h: &HotPathPlan, deletion: DeletionPolicy) -> String {
    let x = &h.stream;
    let encryption = if x.kms_key.is_some() {
        "SSE-KMS with the pipeline's key"
    } else {
        "unencrypted (encryption.kms.disabled)"
    };
    let capacity = match x.capacity {
        Capacity::OnDemand => "on-demand".to_string(),
        Capacity::Provisioned { shards } => format!("{shards} shards"),
    };
    let fate = match deletion {
        DeletionPolicy::Delete => "deleted with the pipeline",
        DeletionPolicy::Retain => "retained when the pipeline is deleted",
    };
    format!(
        "{capacity}, retention {} hours, {encryption}; Fluent Bit writes with role {}; {fate}",
        x.retention_hours,
        h.role.arn()
    )
}

/// The stream (and Fluent Bit's role) to retire: status records a stream but the plan has no hot
/// path any more. Only resources carrying the pipeline's tags are touched by the delete.
pub fn retired(p: &MLObservabilityPipeline, d: &Desired) -> Option<HotPathPlan> {
    if d.aws.hot_path.is_some() {
        return None;
    }
    let arn = p.status.as_ref()?.aws.as_ref()?.hot_path_stream_arn.as_deref()?;
    crate::desired::aws_plan::hot_path::retired(&d.effective, arn)
}
