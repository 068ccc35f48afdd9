//! The hot path's AWS side as one apply step: stream (SSE-KMS with the pipeline's key) → Fluent
//! Bit's role (its policy names the stream) → its pod identity association. Deletion in reverse.

use super::apply::{ApplyOptions, AwsOutcome};
use super::{AwsClients, AwsError, Drift, Owner, eks, iam, kinesis};
use crate::crd::DeletionPolicy;
use crate::desired::aws_plan::hot_path::HotPathPlan;

/// Ensures the stream, then the role and association; records each in `out` as it exists.
pub async fn ensure(
    c: &AwsClients,
    plan: &HotPathPlan,
    key_arn: Option<&str>,
    opts: &ApplyOptions,
    out: &mut AwsOutcome,
) -> Result<Vec<Drift>, AwsError> {
    let (arn, mut drift) = kinesis::ensure(c, &plan.stream, key_arn, &opts.owner, opts.adopt, opts.drift).await?;
    out.hot_path_stream_arn = Some(arn);
    let (role, role_drift) = iam::ensure(c, &plan.role, &opts.owner, opts.adopt, opts.drift).await?;
    out.hot_path_role_arn = Some(role);
    drift.extend(role_drift);
    if let Some(pi) = &plan.pod_identity {
        out.hot_path_association_id = Some(eks::ensure_pod_identity(c, pi).await?);
    }
    Ok(drift)
}

/// The association always goes (pure wiring); role and stream per `policy`.
pub async fn delete(c: &AwsClients, plan: &HotPathPlan, owner: &Owner, policy: DeletionPolicy) -> Result<(), AwsError> {
    if let Some(pi) = &plan.pod_identity {
        eks::delete_pod_identity(c, pi).await?;
    }
    iam::delete(c, &plan.role, owner, policy).await?;
    kinesis::delete(c, &plan.stream, owner, policy).await
}
