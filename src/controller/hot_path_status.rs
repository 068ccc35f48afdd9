//! What the status says about the hot path: its stream's settings for `HotPathReady`.

use crate::crd::DeletionPolicy;
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
