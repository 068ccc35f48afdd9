//! EKS Pod Identity associations with aws-smithy-mocks (moto answers 404 for these APIs).
//!
//! Rules run in `Sequential` mode: every request must match the next rule exactly (cluster,
//! namespace, service account, association id, role ARN), and a request beyond the last rule
//! panics — so each test pins the whole conversation, not only the result.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_eks::Client;
use aws_sdk_eks::operation::create_pod_identity_association::CreatePodIdentityAssociationOutput;
use aws_sdk_eks::operation::delete_pod_identity_association::{
    DeletePodIdentityAssociationError, DeletePodIdentityAssociationOutput,
};
use aws_sdk_eks::operation::describe_pod_identity_association::{
    DescribePodIdentityAssociationError, DescribePodIdentityAssociationOutput,
};
use aws_sdk_eks::operation::list_pod_identity_associations::{
    ListPodIdentityAssociationsError, ListPodIdentityAssociationsOutput,
};
use aws_sdk_eks::operation::update_pod_identity_association::UpdatePodIdentityAssociationOutput;
use aws_sdk_eks::types::error::ResourceNotFoundException;
use aws_sdk_eks::types::{PodIdentityAssociation, PodIdentityAssociationSummary};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use mlobs::aws::{AwsClients, AwsError, CallCounter, eks};
use mlobs::desired::aws_plan::PodIdentityPlan;

const CLUSTER: &str = "prod-gpu";
const NS: &str = "team-a";
const SA: &str = "mlobs-train";
const ROLE: &str = "arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train";
const OTHER_ROLE: &str = "arn:aws:iam::123456789012:role/someone-elses";

fn plan() -> PodIdentityPlan {
    PodIdentityPlan {
        cluster_name: CLUSTER.into(),
        namespace: NS.into(),
        service_account: SA.into(),
        role_arn: ROLE.into(),
    }
}

/// AwsClients whose EKS client answers from `rules`, in order, counted by the usual counter.
fn clients(rules: &[&Rule]) -> AwsClients {
    let conf = SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .behavior_version(BehaviorVersion::latest())
        .build();
    let mut c = AwsClients::new(&conf);
    let calls = CallCounter::default();
    c.eks = mock_client!(aws_sdk_eks, RuleMode::Sequential, rules, |b| b
        .interceptor(calls.clone()));
    c.calls = calls;
    c
}

fn not_found() -> ResourceNotFoundException {
    // Real responses carry the code in the error metadata; classify() reads it from there.
    ResourceNotFoundException::builder()
        .message("not found")
        .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
        .build()
}

/// ListPodIdentityAssociations filtered by exactly our cluster, namespace and service account.
fn list(ids: &[&str], next: Option<&str>, token: Option<&'static str>) -> Rule {
    let summaries: Vec<PodIdentityAssociationSummary> = ids
        .iter()
        .map(|id| {
            PodIdentityAssociationSummary::builder()
                .cluster_name(CLUSTER)
                .namespace(NS)
                .service_account(SA)
                .association_id(*id)
                .build()
        })
        .collect();
    let next = next.map(str::to_string);
    mock!(Client::list_pod_identity_associations)
        .match_requests(move |r| {
            r.cluster_name() == Some(CLUSTER)
                && r.namespace() == Some(NS)
                && r.service_account() == Some(SA)
                && r.next_token() == token
        })
        .then_output(move || {
            ListPodIdentityAssociationsOutput::builder()
                .set_associations(Some(summaries.clone()))
                .set_next_token(next.clone())
                .build()
        })
}

fn describe(id: &'static str, role: &'static str) -> Rule {
    mock!(Client::describe_pod_identity_association)
        .match_requests(move |r| r.cluster_name() == Some(CLUSTER) && r.association_id() == Some(id))
        .then_output(move || {
            DescribePodIdentityAssociationOutput::builder()
                .association(
                    PodIdentityAssociation::builder()
                        .cluster_name(CLUSTER)
                        .namespace(NS)
                        .service_account(SA)
                        .association_id(id)
                        .role_arn(role)
                        .build(),
                )
                .build()
        })
}

fn create(id: &'static str) -> Rule {
    mock!(Client::create_pod_identity_association)
        .match_requests(|r| {
            r.cluster_name() == Some(CLUSTER)
                && r.namespace() == Some(NS)
                && r.service_account() == Some(SA)
                && r.role_arn() == Some(ROLE)
        })
        .then_output(move || {
            CreatePodIdentityAssociationOutput::builder()
                .association(
                    PodIdentityAssociation::builder()
                        .cluster_name(CLUSTER)
                        .association_id(id)
                        .role_arn(ROLE)
                        .build(),
                )
                .build()
        })
}

fn delete(id: &'static str) -> Rule {
    mock!(Client::delete_pod_identity_association)
        .match_requests(move |r| r.cluster_name() == Some(CLUSTER) && r.association_id() == Some(id))
        .then_output(|| DeletePodIdentityAssociationOutput::builder().build())
}

#[tokio::test]
async fn absent_association_is_created_for_our_cluster_namespace_service_account_and_role() {
    let (l, cr) = (list(&[], None, None), create("a-new"));
    let c = clients(&[&l, &cr]);
    let id = eks::ensure_pod_identity(&c, &plan()).await.expect("created");
    assert_eq!(id, "a-new");
    assert_eq!((l.num_calls(), cr.num_calls()), (1, 1));
    assert_eq!(c.calls.mutating(), 1);
    assert_eq!(c.calls.of("CreatePodIdentityAssociation"), 1);
}

#[tokio::test]
async fn association_with_our_role_is_a_no_op() {
    let (l, d) = (list(&["a-1"], None, None), describe("a-1", ROLE));
    let c = clients(&[&l, &d]);
    let id = eks::ensure_pod_identity(&c, &plan()).await.expect("no-op");
    assert_eq!(id, "a-1");
    assert_eq!((l.num_calls(), d.num_calls()), (1, 1));
    assert_eq!(c.calls.mutating(), 0, "{:?}", c.calls.snapshot());
    assert_eq!(c.calls.count(|_| true), 2, "List + Describe");
}

#[tokio::test]
async fn association_with_another_role_is_updated_in_place() {
    let update = mock!(Client::update_pod_identity_association)
        .match_requests(|r| {
            r.cluster_name() == Some(CLUSTER) && r.association_id() == Some("a-1") && r.role_arn() == Some(ROLE)
        })
        .then_output(|| UpdatePodIdentityAssociationOutput::builder().build());
    let (l, d) = (list(&["a-1"], None, None), describe("a-1", OTHER_ROLE));
    let c = clients(&[&l, &d, &update]);
    let id = eks::ensure_pod_identity(&c, &plan()).await.expect("updated");
    assert_eq!(id, "a-1");
    assert_eq!(update.num_calls(), 1);
    assert_eq!(c.calls.mutating(), 1);
}

#[tokio::test]
async fn association_on_a_later_page_is_found() {
    let first = list(&[], Some("page-2"), None);
    let second = list(&["a-2"], None, Some("page-2"));
    let d = describe("a-2", ROLE);
    let c = clients(&[&first, &second, &d]);
    assert_eq!(eks::ensure_pod_identity(&c, &plan()).await.expect("found"), "a-2");
    assert_eq!(c.calls.mutating(), 0);
}

#[tokio::test]
async fn association_that_vanished_after_listing_is_created() {
    let gone = mock!(Client::describe_pod_identity_association)
        .match_requests(|r| r.association_id() == Some("a-old"))
        .then_error(|| DescribePodIdentityAssociationError::ResourceNotFoundException(not_found()));
    let (l, cr) = (list(&["a-old"], None, None), create("a-new"));
    let c = clients(&[&l, &gone, &cr]);
    assert_eq!(eks::ensure_pod_identity(&c, &plan()).await.expect("created"), "a-new");
}

#[tokio::test]
async fn a_missing_cluster_fails_ensure_terminally() {
    let l = mock!(Client::list_pod_identity_associations)
        .then_error(|| ListPodIdentityAssociationsError::ResourceNotFoundException(not_found()));
    let c = clients(&[&l]);
    let err = eks::ensure_pod_identity(&c, &plan()).await.expect_err("no cluster");
    assert!(
        matches!(&err, AwsError::Terminal { operation, code, resource, .. }
            if operation == "ListPodIdentityAssociations" && code == "ResourceNotFoundException"
            && resource == "podIdentityAssociation:prod-gpu/team-a/mlobs-train"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn delete_removes_the_association_of_our_service_account() {
    let (l, d) = (list(&["a-1"], None, None), delete("a-1"));
    let c = clients(&[&l, &d]);
    eks::delete_pod_identity(&c, &plan()).await.expect("deleted");
    assert_eq!(d.num_calls(), 1);
    assert_eq!(c.calls.mutating(), 1);
}

#[tokio::test]
async fn delete_when_absent_is_success_without_a_write() {
    let l = list(&[], None, None);
    let c = clients(&[&l]);
    eks::delete_pod_identity(&c, &plan()).await.expect("absent");
    assert_eq!(c.calls.mutating(), 0);

    // Gone between List and Delete.
    let l = list(&["a-1"], None, None);
    let d = mock!(Client::delete_pod_identity_association)
        .match_requests(|r| r.association_id() == Some("a-1"))
        .then_error(|| DeletePodIdentityAssociationError::ResourceNotFoundException(not_found()));
    let c = clients(&[&l, &d]);
    eks::delete_pod_identity(&c, &plan()).await.expect("already gone");

    // The cluster itself is gone, and its associations with it.
    let l = mock!(Client::list_pod_identity_associations)
        .then_error(|| ListPodIdentityAssociationsError::ResourceNotFoundException(not_found()));
    let c = clients(&[&l]);
    eks::delete_pod_identity(&c, &plan()).await.expect("cluster gone");
    assert_eq!(c.calls.mutating(), 0);
}
