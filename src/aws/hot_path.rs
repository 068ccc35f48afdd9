//! The hot path's AWS side, deleted in reverse order of its ensure (`apply::ensure_hot_path`):
//! stream (SSE-KMS with the pipeline's key) → Fluent Bit's role (its policy names the stream) →
//! its pod identity association.

use super::{AwsClients, AwsError, Owner, eks, iam, kinesis};
use crate::crd::DeletionPolicy;
use crate::desired::aws_plan::hot_path::HotPathPlan;

/// The association always goes (pure wiring); role and stream per `policy`.
pub async fn delete(c: &AwsClients, plan: &HotPathPlan, owner: &Owner, policy: DeletionPolicy) -> Result<(), AwsError> {
    if let Some(pi) = &plan.pod_identity {
        eks::delete_pod_identity(c, pi).await?;
    }
    iam::delete(c, &plan.role, owner, policy).await?;
    kinesis::delete(c, &plan.stream, owner, policy).await
}
