//! EKS Pod Identity association: binds the collector's ServiceAccount to its role.
//!
//! EKS allows one association per (cluster, namespace, service account), so that triple is the
//! association's identity; the role ARN is its only reconciled field. The association is wiring,
//! not data: it is updated in place and deleted under both deletion policies.
//! ListPodIdentityAssociations returns summaries without the role, hence the Describe.

use aws_sdk_eks::operation::create_pod_identity_association::CreatePodIdentityAssociationError;
use aws_sdk_eks::operation::delete_pod_identity_association::DeletePodIdentityAssociationError;
use aws_sdk_eks::operation::describe_pod_identity_association::DescribePodIdentityAssociationError;
use aws_sdk_eks::operation::list_pod_identity_associations::ListPodIdentityAssociationsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::classify;
use super::{AwsClients, AwsError};
use crate::desired::aws_plan::PodIdentityPlan;

type ListError = SdkError<ListPodIdentityAssociationsError, HttpResponse>;

fn resource(p: &PodIdentityPlan) -> String {
    format!(
        "podIdentityAssociation:{}/{}/{}",
        p.cluster_name, p.namespace, p.service_account
    )
}

/// Ensures the association points at the plan's role and returns its id.
/// Unchanged: List + Describe, no write. Different role: UpdatePodIdentityAssociation.
pub async fn ensure_pod_identity(c: &AwsClients, plan: &PodIdentityPlan) -> Result<String, AwsError> {
    let res = resource(plan);
    let found = find(c, plan)
        .await
        .map_err(|e| classify("ListPodIdentityAssociations", &res, e))?;
    if let Some(id) = found {
        match describe_role(c, plan, &id).await? {
            Some(role) if role == plan.role_arn => return Ok(id),
            Some(_) => {
                c.eks
                    .update_pod_identity_association()
                    .cluster_name(&plan.cluster_name)
                    .association_id(&id)
                    .role_arn(&plan.role_arn)
                    .send()
                    .await
                    .map_err(|e| classify("UpdatePodIdentityAssociation", &res, e))?;
                return Ok(id);
            }
            // Deleted between List and Describe: create it below.
            None => {}
        }
    }
    let out = c
        .eks
        .create_pod_identity_association()
        .cluster_name(&plan.cluster_name)
        .namespace(&plan.namespace)
        .service_account(&plan.service_account)
        .role_arn(&plan.role_arn)
        .send()
        .await
        .map_err(|e| {
            // Listed as absent a moment ago: another writer raced us; the next pass reconciles.
            if is_kind(&e, CreatePodIdentityAssociationError::is_resource_in_use_exception) {
                AwsError::Retryable {
                    operation: "CreatePodIdentityAssociation".into(),
                    resource: res.clone(),
                    code: "ResourceInUseException".into(),
                    message: e.message().unwrap_or_default().to_string(),
                }
            } else {
                classify("CreatePodIdentityAssociation", &res, e)
            }
        })?;
    out.association()
        .and_then(|a| a.association_id())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Terminal {
            operation: "CreatePodIdentityAssociation".into(),
            resource: res,
            code: "InvalidResponse".into(),
            message: "no associationId in the response".into(),
        })
}

/// Deletes the association of the plan's service account. Absent (or the cluster gone) is success.
pub async fn delete_pod_identity(c: &AwsClients, plan: &PodIdentityPlan) -> Result<(), AwsError> {
    let id = match find(c, plan).await {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(()),
        // The cluster is gone, and its associations with it.
        Err(e) if is_kind(&e, ListPodIdentityAssociationsError::is_resource_not_found_exception) => return Ok(()),
        Err(e) => return Err(classify("ListPodIdentityAssociations", &resource(plan), e)),
    };
    match c
        .eks
        .delete_pod_identity_association()
        .cluster_name(&plan.cluster_name)
        .association_id(&id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_kind(&e, DeletePodIdentityAssociationError::is_resource_not_found_exception) => Ok(()),
        Err(e) => Err(classify("DeletePodIdentityAssociation", &resource(plan), e)),
    }
}

/// The id of the association for the plan's service account, if any.
/// Unclassified error: a missing cluster is a failure for ensure but success for delete.
async fn find(c: &AwsClients, plan: &PodIdentityPlan) -> Result<Option<String>, ListError> {
    let mut token = None;
    loop {
        let out = c
            .eks
            .list_pod_identity_associations()
            .cluster_name(&plan.cluster_name)
            .namespace(&plan.namespace)
            .service_account(&plan.service_account)
            .set_next_token(token)
            .send()
            .await?;
        // The filters are server-side; re-check so a looser server never hands us someone else's.
        let hit = out
            .associations()
            .iter()
            .filter(|a| a.namespace().is_none_or(|n| n == plan.namespace))
            .filter(|a| a.service_account().is_none_or(|s| s == plan.service_account))
            .find_map(|a| a.association_id());
        if let Some(id) = hit {
            return Ok(Some(id.to_string()));
        }
        match out.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(None),
        }
    }
}

/// The role an association grants; `None` when it vanished meanwhile.
async fn describe_role(c: &AwsClients, plan: &PodIdentityPlan, id: &str) -> Result<Option<String>, AwsError> {
    match c
        .eks
        .describe_pod_identity_association()
        .cluster_name(&plan.cluster_name)
        .association_id(id)
        .send()
        .await
    {
        Ok(out) => Ok(Some(
            out.association()
                .and_then(|a| a.role_arn())
                .unwrap_or_default()
                .to_string(),
        )),
        Err(e) if is_kind(&e, DescribePodIdentityAssociationError::is_resource_not_found_exception) => Ok(None),
        Err(e) => Err(classify("DescribePodIdentityAssociation", &resource(plan), e)),
    }
}

/// Whether a service error is of the given modeled kind.
fn is_kind<E>(e: &SdkError<E, HttpResponse>, kind: fn(&E) -> bool) -> bool {
    e.as_service_error().is_some_and(kind)
}
