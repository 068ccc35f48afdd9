//! An AMP workspace mlobs manages (`spec.metrics.prometheus.workspaceAlias`): the merge and plan
//! while it is pending and once its ARN is recorded in status, and ensure/delete against moto
//! (created once with the pipeline's tags, a foreign workspace of the alias refused unless
//! adopted, deleted only when ours under `Delete`). moto drops CreateWorkspace's kmsKeyArn, so
//! the key in the request is checked with aws-smithy-mocks.

mod support;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_amp::Client as Amp;
use aws_sdk_amp::operation::create_workspace::CreateWorkspaceOutput;
use aws_sdk_amp::operation::list_workspaces::ListWorkspacesOutput;
use aws_sdk_amp::types::{WorkspaceStatus, WorkspaceStatusCode};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use mlobs::aws::{AwsClients, AwsError, Owner, amp};
use mlobs::crd::{DeletionPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::destinations::AmpWorkspacePlan;
use mlobs::desired::aws_plan::{self, RolePlan};
use mlobs::desired::destinations::PENDING_WORKSPACE_ID;
use mlobs::desired::effective::{Context, Effective};
use mlobs::desired::merge::merge;
use serde_json::{Value, json};
use support::moto;

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A pipeline writing to the workspace of `alias`, with `status` as the API server returns it.
fn pipeline(cluster: &str, alias: &str, status: Value) -> MLObservabilityPipeline {
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1"},
        "spec": {"clusterName": cluster, "region": "us-east-1", "identity": {"mode": "PodIdentity"},
                 "metrics": {"prometheus": {"workspaceAlias": alias}}},
        "status": status}))
    .expect("pipeline")
}

fn effective(p: &MLObservabilityPipeline) -> Effective {
    merge(p, None, &Context::default()).expect("merge").effective
}

fn role_statement_sids(e: &Effective) -> Vec<String> {
    let plan = aws_plan::build(e).expect("plan");
    let RolePlan::Create { inline_policy, .. } = plan.role else {
        panic!("a created role")
    };
    (inline_policy["Statement"].as_array().cloned().unwrap_or_default())
        .iter()
        .filter_map(|s| s["Sid"].as_str().map(String::from))
        .collect()
}

fn owner(e: &Effective) -> Owner {
    Owner {
        cluster: e.cluster_name.clone(),
        pipeline: e.pipeline_id(),
    }
}

fn workspace_plan(e: &Effective) -> AmpWorkspacePlan {
    aws_plan::build(e)
        .expect("plan")
        .amp_workspace
        .expect("the plan ensures a workspace")
}

#[test]
fn a_pending_workspace_gets_no_remote_write_grant_until_its_arn_is_recorded_for_that_alias() {
    let pending = effective(&pipeline("prod", "gpu-metrics", json!({})));
    let p = pending.destinations.prometheus.clone().expect("prometheus");
    assert!(p.pending());
    assert!(p.remote_write_url("aws").contains(PENDING_WORKSPACE_ID));
    assert!(!role_statement_sids(&pending).contains(&"AmpRemoteWrite".to_string()));
    let plan = workspace_plan(&pending);
    assert_eq!(plan.alias, "gpu-metrics");
    assert_eq!(plan.tags["mlobs.io/pipeline"], "team-a/train");
    assert!(plan.kms_key.is_some(), "encrypted with the pipeline's key");

    let arn = "arn:aws:aps:us-east-1:123456789012:workspace/ws-5f1e";
    let recorded = json!({"aws": {"ampWorkspaceArn": arn, "ampWorkspaceAlias": "gpu-metrics"}});
    let resolved = effective(&pipeline("prod", "gpu-metrics", recorded));
    let r = resolved.destinations.prometheus.clone().expect("prometheus");
    assert!(!r.pending());
    assert_eq!(
        r.remote_write_url("aws"),
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-5f1e/api/v1/remote_write"
    );
    let plan = aws_plan::build(&resolved).expect("plan");
    let RolePlan::Create { inline_policy, .. } = plan.role else {
        panic!("a created role")
    };
    let amp = (inline_policy["Statement"].as_array().cloned().unwrap_or_default())
        .into_iter()
        .find(|s| s["Sid"] == "AmpRemoteWrite")
        .expect("the remote write grant");
    assert_eq!(amp["Resource"], json!([arn]));

    // An ARN recorded for another alias (the spec changed) is not this workspace.
    let other = json!({"aws": {"ampWorkspaceArn": arn, "ampWorkspaceAlias": "old-alias"}});
    assert!(
        (effective(&pipeline("prod", "gpu-metrics", other))
            .destinations
            .prometheus)
            .is_some_and(|p| p.pending())
    );
}

#[test]
fn both_or_neither_workspace_field_is_refused_offline_with_the_field() {
    for prom in [
        json!({}),
        json!({"workspaceAlias": "a", "workspaceArn": "arn:aws:aps:us-east-1:123456789012:workspace/ws-1"}),
    ] {
        let p: MLObservabilityPipeline = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "train", "namespace": "team-a"},
            "spec": {"clusterName": "prod", "region": "us-east-1", "metrics": {"prometheus": prom}}}))
        .expect("pipeline");
        let err = merge(&p, None, &Context::default()).expect_err("refused");
        let text = format!("{err:?}");
        assert!(
            text.contains("spec.metrics.prometheus") && text.contains("exactly one of workspaceArn"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_workspace_by_alias_is_created_once_with_the_pipeline_tags() {
    let e = effective(&pipeline(&moto::unique("amp"), &moto::unique("gpu"), json!({})));
    let plan = workspace_plan(&e);
    let c = moto::clients().await;
    let first = amp::ensure(&c, &plan, None, &owner(&e), false).await.expect("create");
    assert_eq!(c.calls.of("CreateWorkspace"), 1);
    let again = amp::ensure(&c, &plan, None, &owner(&e), false).await.expect("find");
    assert_eq!(again, first, "the same workspace, found by alias and tags");
    assert_eq!(c.calls.of("CreateWorkspace"), 1, "no second workspace");
    assert_eq!(c.calls.of("ListWorkspaces"), 2, "one listing per ensure");
    let tags = c
        .amp
        .list_tags_for_resource()
        .resource_arn(&first.arn)
        .send()
        .await
        .expect("tags");
    let tags = tags.tags().cloned().unwrap_or_default();
    assert_eq!(tags.get("mlobs.io/pipeline").map(String::as_str), Some("team-a/train"));
    assert_eq!(tags.get("mlobs.io/cluster"), Some(&e.cluster_name));
}

#[tokio::test]
async fn a_foreign_workspace_of_the_alias_is_a_name_conflict_unless_adopted() {
    let e = effective(&pipeline(&moto::unique("amp"), &moto::unique("shared"), json!({})));
    let plan = workspace_plan(&e);
    let c = moto::clients().await;
    let theirs = c
        .amp
        .create_workspace()
        .alias(&plan.alias)
        .send()
        .await
        .expect("someone else's workspace");
    c.calls.reset();
    let err = amp::ensure(&c, &plan, None, &owner(&e), false)
        .await
        .expect_err("not ours");
    assert!(
        matches!(&err, AwsError::NameConflict { resource } if resource.contains(theirs.arn())),
        "{err:?}"
    );
    assert_eq!(c.calls.of("CreateWorkspace"), 0, "no second workspace beside theirs");
    // Not deleted even under Delete: it carries no tag of ours.
    let gone = amp::delete(&c, &plan, &owner(&e), DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert!(gone.is_empty());

    let adopted = amp::ensure(&c, &plan, None, &owner(&e), true).await.expect("adopt");
    assert_eq!(adopted.arn, theirs.arn());
    assert_eq!(c.calls.of("TagResource"), 1);
    let found = amp::ensure(&c, &plan, None, &owner(&e), false).await.expect("ours now");
    assert_eq!(found, adopted);
}

#[tokio::test]
async fn deletion_removes_our_workspace_under_delete_and_keeps_it_under_retain() {
    let e = effective(&pipeline(&moto::unique("amp"), &moto::unique("del"), json!({})));
    let plan = workspace_plan(&e);
    let c = moto::clients().await;
    let ws = amp::ensure(&c, &plan, None, &owner(&e), false).await.expect("create");
    let kept = amp::delete(&c, &plan, &owner(&e), DeletionPolicy::Retain)
        .await
        .expect("retain");
    assert!(kept.is_empty());
    assert!(c.amp.describe_workspace().workspace_id(&ws.id).send().await.is_ok());
    let deleted = amp::delete(&c, &plan, &owner(&e), DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert_eq!(deleted, vec![ws.arn.clone()]);
    // Idempotent: nothing of that alias is left to delete.
    let again = amp::delete(&c, &plan, &owner(&e), DeletionPolicy::Delete)
        .await
        .expect("again");
    assert!(again.is_empty());
}

#[tokio::test]
async fn the_workspace_is_created_with_the_pipeline_key() {
    let e = effective(&pipeline("prod", "gpu-metrics", json!({})));
    let plan = workspace_plan(&e);
    let conf = SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .behavior_version(BehaviorVersion::latest())
        .build();
    let mut c = AwsClients::new(&conf);
    let list = mock!(Amp::list_workspaces).then_output(|| {
        ListWorkspacesOutput::builder()
            .set_workspaces(Some(vec![]))
            .build()
            .expect("output")
    });
    let create = mock!(Amp::create_workspace)
        .match_requests(|r| r.kms_key_arn() == Some(KEY) && r.alias() == Some("gpu-metrics"))
        .then_output(|| {
            CreateWorkspaceOutput::builder()
                .workspace_id("ws-1")
                .arn("arn:aws:aps:us-east-1:123456789012:workspace/ws-1")
                .status(
                    WorkspaceStatus::builder()
                        .status_code(WorkspaceStatusCode::Creating)
                        .build()
                        .expect("status"),
                )
                .build()
                .expect("output")
        });
    c.amp = mock_client!(aws_sdk_amp, RuleMode::Sequential, [&list, &create]);
    let ws = amp::ensure(&c, &plan, Some(KEY), &owner(&e), false)
        .await
        .expect("create");
    assert_eq!(ws.id, "ws-1");
    assert_eq!(create.num_calls(), 1);
}
