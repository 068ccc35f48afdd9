//! What the status and events say about the archive bucket: its settings for `ArchiveReady`, and
//! that it outlives the pipeline whatever the deletion policy (Object Lock forbids deleting it).

use crate::crd::DeletionPolicy;
use crate::desired::aws_plan::archive::ArchiveBucketPlan;

/// The `ArchiveReady` message of a ready bucket (after its ARN).
pub fn summary(a: &ArchiveBucketPlan, deletion: DeletionPolicy) -> String {
    let encryption = if a.kms_key.is_some() {
        "SSE-KMS with the pipeline's key"
    } else {
        "SSE-S3"
    };
    let kept = match deletion {
        DeletionPolicy::Delete => {
            "under deletionPolicy Delete it will be retained with its KMS key when the pipeline is deleted: Object Lock forbids deleting it"
        }
        DeletionPolicy::Retain => "retained with its KMS key when the pipeline is deleted",
    };
    format!(
        "Object Lock COMPLIANCE {} years, {encryption}, public access blocked, TLS only, {} after {} days, logs under {}; {kept}",
        a.retention_years,
        a.storage_class.as_str(),
        a.transition_after_days,
        a.prefix
    )
}

/// The event message when the pipeline is deleted and the bucket stays.
pub fn retained_message(bucket_message: &str, key_retained: bool) -> String {
    if key_retained {
        format!("{bucket_message}; the KMS key that encrypts it is retained too")
    } else {
        bucket_message.to_string()
    }
}
