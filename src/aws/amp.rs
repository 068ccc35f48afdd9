//! An Amazon Managed Service for Prometheus workspace that mlobs manages
//! (`spec.metrics.prometheus.workspaceAlias`). Aliases are not unique in AMP, so a workspace is
//! ours by its ownership tags, never by its alias alone: ensure lists the workspaces of the alias
//! (one call, the summaries carry their tags), returns ours, and creates one (with the pipeline's
//! key and tags in the same call) only when none of that alias exists. A workspace of that alias
//! that is not ours is a NameConflict unless adoption is opted in.

use std::collections::BTreeMap;

use aws_sdk_amp::types::{WorkspaceStatusCode, WorkspaceSummary};

use super::error::{AwsError, classify};
use super::{AwsClients, Owner};
use crate::crd::DeletionPolicy;
use crate::desired::aws_plan::destinations::AmpWorkspacePlan;

/// A workspace's ARN and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub arn: String,
    pub id: String,
}

fn resource(alias: &str) -> String {
    format!("AMP workspace alias {alias:?}")
}

/// Live workspaces of `alias` (being deleted or failed ones excluded), oldest first.
async fn by_alias(c: &AwsClients, alias: &str) -> Result<Vec<WorkspaceSummary>, AwsError> {
    let mut out = vec![];
    let mut token = None;
    loop {
        let page = c
            .amp
            .list_workspaces()
            .alias(alias)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ListWorkspaces", &resource(alias), e))?;
        out.extend(page.workspaces().iter().cloned());
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    out.retain(|w| {
        let code = w.status().map(|s| s.status_code().clone());
        w.alias() == Some(alias)
            && !matches!(
                code,
                Some(WorkspaceStatusCode::Deleting | WorkspaceStatusCode::CreationFailed)
            )
    });
    out.sort_by_key(|w| w.created_at().secs());
    Ok(out)
}

fn tags_of(w: &WorkspaceSummary) -> BTreeMap<String, String> {
    w.tags().cloned().unwrap_or_default().into_iter().collect()
}

fn workspace(w: &WorkspaceSummary) -> Workspace {
    Workspace {
        arn: w.arn().to_string(),
        id: w.workspace_id().to_string(),
    }
}

/// Ensures the workspace of the plan's alias; returns it. `key_arn`: the pipeline's KMS key
/// (created or given), used only when the workspace is created (AMP cannot change it later).
pub async fn ensure(
    c: &AwsClients,
    plan: &AmpWorkspacePlan,
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
) -> Result<Workspace, AwsError> {
    let found = by_alias(c, &plan.alias).await?;
    if let Some(w) = found.iter().find(|w| owner.owns_tags(&tags_of(w))) {
        return Ok(workspace(w));
    }
    if let Some(w) = found.first() {
        if !adopt {
            return Err(AwsError::NameConflict {
                resource: format!("{} ({})", resource(&plan.alias), w.arn()),
            });
        }
        c.amp
            .tag_resource()
            .resource_arn(w.arn())
            .set_tags(Some(plan.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| classify("TagResource", w.arn(), e))?;
        return Ok(workspace(w));
    }
    let out = c
        .amp
        .create_workspace()
        .alias(&plan.alias)
        .set_kms_key_arn(key_arn.map(String::from))
        .set_tags(Some(plan.tags.clone().into_iter().collect()))
        .send()
        .await
        .map_err(|e| classify("CreateWorkspace", &resource(&plan.alias), e))?;
    Ok(Workspace {
        arn: out.arn().to_string(),
        id: out.workspace_id().to_string(),
    })
}

/// Under `Delete`, deletes the workspaces of the alias that carry our tags (their samples with
/// them); under `Retain`, keeps them. A workspace without our tags is never touched. NotFound is
/// success. Returns the ARNs deleted.
pub async fn delete(
    c: &AwsClients,
    plan: &AmpWorkspacePlan,
    owner: &Owner,
    policy: DeletionPolicy,
) -> Result<Vec<String>, AwsError> {
    if policy == DeletionPolicy::Retain {
        return Ok(vec![]);
    }
    let mut deleted = vec![];
    for w in by_alias(c, &plan.alias).await? {
        if !owner.owns_tags(&tags_of(&w)) {
            continue;
        }
        match c.amp.delete_workspace().workspace_id(w.workspace_id()).send().await {
            Ok(_) => deleted.push(w.arn().to_string()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(classify("DeleteWorkspace", w.arn(), e)),
        }
    }
    Ok(deleted)
}
