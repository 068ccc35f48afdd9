//! Batched resync reads against moto: a resync of many pipelines reads KMS aliases, IAM roles and
//! log groups in shared listings (no per-pipeline read), and drift made outside mlobs is still
//! found: a role's from the next listing, a key's when its full check is due.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use mlobs::aws::apply::{ApplyOptions, AwsOutcome, Batched, ensure_all};
use mlobs::aws::calls::is_mutating;
use mlobs::aws::{AwsClients, iam, kms, logs};
use mlobs::crd::DriftPolicy;
use mlobs::desired::aws_plan::{self, AwsPlan, RolePlan};
use mlobs::desired::effective::Effective;
use serde_json::json;
use support::{aws_pipeline, moto};

/// Reads that name one pipeline's resource: none of them belongs in a resync of unchanged pipelines.
const PER_PIPELINE_READS: [&str; 7] = [
    "DescribeKey",
    "ListTagsForResource",
    "ListResourceTags",
    "GetKeyRotationStatus",
    "GetKeyPolicy",
    "GetRole",
    "GetRolePolicy",
];

fn effective(cluster: &str, name: &str) -> Effective {
    aws_pipeline::effective(cluster, name, json!({}))
}

fn plan_and_opts(e: &Effective) -> (AwsPlan, ApplyOptions) {
    aws_pipeline::plan_and_opts(e, DriftPolicy::Correct)
}

/// The options of a resync after `first`: the key id recorded in status, and what the controller
/// reads once for all pipelines.
fn resync_opts(
    opts: &ApplyOptions,
    first: &AwsOutcome,
    groups: &Arc<BTreeMap<String, logs::ObservedGroup>>,
    batched: &Batched,
) -> ApplyOptions {
    let mut o = opts.clone();
    o.known_key_id = first.kms_key_id.clone();
    o.recorded_roles = first.role_arn.iter().cloned().collect();
    o.log_group_snapshot = Some(groups.clone());
    o.batched = batched.clone();
    o
}

/// The shared listings of a resync, read with `c` (so they are counted there).
async fn listings(c: &AwsClients, cluster: &str) -> (Arc<BTreeMap<String, logs::ObservedGroup>>, Batched) {
    let groups = logs::observe_many(c, &format!("/aws/eks/{cluster}/"))
        .await
        .expect("log groups");
    let batched = Batched {
        kms_aliases: Some(Arc::new(kms::observe_aliases(c).await.expect("ListAliases"))),
        iam_roles: Some(Arc::new(
            iam::observe_roles(c, &|_| true)
                .await
                .expect("GetAccountAuthorizationDetails"),
        )),
        skip_slow_checks: true,
    };
    (Arc::new(groups), batched)
}

fn reads(c: &AwsClients) -> BTreeMap<String, u64> {
    let mut by_op = BTreeMap::new();
    for (k, n) in c.calls.snapshot() {
        if !is_mutating(&k.operation) {
            *by_op.entry(k.operation).or_default() += n;
        }
    }
    by_op
}

#[tokio::test]
async fn a_resync_of_sixty_pipelines_reads_shared_listings_and_nothing_per_pipeline() {
    let cluster = moto::unique("batch");
    let n: u64 = 60;
    let c = moto::clients().await;
    let mut pipelines = Vec::new();
    for i in 0..n {
        let e = effective(&cluster, &format!("p{i:03}"));
        let (plan, opts) = plan_and_opts(&e);
        let first = ensure_all(&c, &plan, &opts).await.expect("first ensure");
        assert!(first.ready(&plan) && first.kms_key_checked, "{first:?}");
        pipelines.push((plan, opts, first));
    }

    // The resync, by the same process (its clients remember what they read in full): the
    // listings once, then every pipeline's ensure against them.
    c.calls.reset();
    let (groups, batched) = listings(&c, &cluster).await;
    for (plan, opts, first) in &pipelines {
        let opts = resync_opts(opts, first, &groups, &batched);
        let out = ensure_all(&c, plan, &opts).await.expect("resync");
        assert_eq!(out.kms_key_arn, first.kms_key_arn);
        assert_eq!(out.role_arn, first.role_arn);
        assert!(!out.kms_key_checked && out.drift.is_empty(), "{out:?}");
    }
    let by_op = reads(&c);
    let total: u64 = by_op.values().sum();
    let aliases = batched.kms_aliases.as_ref().map_or(0, |a| a.len()) as u64;
    let roles = batched.iam_roles.as_ref().map_or(0, |r| r.len()) as u64;
    // What listing pages cost at most: DescribeLogGroups 50 groups a page (two groups per
    // pipeline), ListAliases 100 aliases, GetAccountAuthorizationDetails `ROLES_PAGE` roles.
    let floor = (2 * n).div_ceil(50) + aliases.div_ceil(100).max(1) + roles.div_ceil(iam::ROLES_PAGE as u64).max(1);
    let goal = n / 50 + 3;
    println!(
        "resync of {n} pipelines: {total} reads {by_op:?}; listing floor {floor}; issue #18 goal N/50+3 = {goal}: {}",
        if total <= goal {
            "met"
        } else {
            "missed (the log groups alone take 2N/50 pages)"
        }
    );
    assert_eq!(c.calls.mutating(), 0, "{:?}", c.calls.snapshot());
    for op in PER_PIPELINE_READS {
        assert_eq!(by_op.get(op), None, "{op}: a per-pipeline read in the resync");
    }
    assert!(
        total <= floor,
        "{total} reads for {n} pipelines (floor {floor}): {by_op:?}"
    );

    // The same resync as the controller made it before the batched reads: log groups from the
    // shared listing, everything else read per pipeline.
    c.calls.reset();
    for (plan, opts, first) in &pipelines {
        let mut opts = resync_opts(opts, first, &groups, &Batched::default());
        opts.batched = Batched::default();
        ensure_all(&c, plan, &opts).await.expect("per-pipeline resync");
    }
    let before = reads(&c);
    let before_total: u64 = before.values().sum();
    println!("the same resync reading per pipeline: {before_total} reads {before:?}");
    assert!(before_total > 5 * n, "{before:?}");
}

#[tokio::test]
async fn a_key_disabled_or_its_rotation_turned_off_outside_mlobs_is_found_when_its_check_is_due() {
    let cluster = moto::unique("keydrift");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    let first = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let key = first.kms_key_id.clone().expect("key");
    c.kms
        .disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .expect("rotation off");
    c.kms.disable_key().key_id(&key).send().await.expect("disable");

    // Not due: the alias still points to the recorded key, so nothing of the key is read.
    let (groups, batched) = listings(&c, &cluster).await;
    c.calls.reset();
    let quiet = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &batched))
        .await
        .expect("resync, check not due");
    assert!(!quiet.kms_key_checked && quiet.drift.is_empty(), "{quiet:?}");
    assert_eq!(c.calls.of("DescribeKey"), 0);

    // Due (its interval passed, a drift event named it, or data stopped): found and put back.
    let due = Batched {
        skip_slow_checks: false,
        ..batched.clone()
    };
    let out = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &due))
        .await
        .expect("resync, check due");
    assert!(out.kms_key_checked);
    let fields: Vec<&str> = out.drift.iter().map(|d| d.field.as_str()).collect();
    assert!(
        fields.contains(&"keyState") && fields.contains(&"keyRotation"),
        "{:?}",
        out.drift
    );
    let meta = c.kms.describe_key().key_id(&key).send().await.expect("describe");
    assert_eq!(
        meta.key_metadata().and_then(|m| m.key_state()).map(|s| s.as_str()),
        Some("Enabled")
    );
    let rotation = c
        .kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .expect("rotation");
    assert!(rotation.key_rotation_enabled());
}

#[tokio::test]
async fn an_alias_moved_to_another_key_outside_mlobs_is_read_in_full_even_when_the_check_is_not_due() {
    let cluster = moto::unique("aliasmove");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    let first = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let Some(aws_plan::KmsKeyPlan::Create { alias, .. }) = &plan.kms else {
        panic!("a created key")
    };
    let other = c.kms.create_key().send().await.expect("another key");
    let other_id = other.key_metadata().map(|m| m.key_id().to_string()).expect("id");
    // moto answers UpdateAlias with a 500: delete and create it instead.
    c.kms
        .delete_alias()
        .alias_name(alias)
        .send()
        .await
        .expect("delete alias");
    c.kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(&other_id)
        .send()
        .await
        .expect("alias to another key");
    let (groups, batched) = listings(&c, &cluster).await;
    let err = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &batched))
        .await
        .expect_err("the alias names a key that is not ours");
    assert_eq!(err.error.reason().as_str(), "NameConflict", "{err}");
}

#[tokio::test]
async fn a_role_trust_or_inline_policy_changed_outside_mlobs_is_found_from_the_next_listing() {
    let cluster = moto::unique("roledrift");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e);
    let RolePlan::Create {
        name,
        inline_policy_name,
        ..
    } = &plan.role
    else {
        panic!("a created role")
    };
    let c = moto::clients().await;
    let first = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let other_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    c.iam
        .update_assume_role_policy()
        .role_name(name)
        .policy_document(other_trust.to_string())
        .send()
        .await
        .expect("trust changed");
    let wider =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]});
    c.iam
        .put_role_policy()
        .role_name(name)
        .policy_name(inline_policy_name)
        .policy_document(wider.to_string())
        .send()
        .await
        .expect("inline policy changed");

    let (groups, batched) = listings(&c, &cluster).await;
    c.calls.reset();
    let out = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &batched))
        .await
        .expect("resync");
    let fields: Vec<&str> = out.drift.iter().map(|d| d.field.as_str()).collect();
    assert!(
        fields.contains(&"assumeRolePolicyDocument") && fields.iter().any(|f| f.starts_with("inlinePolicy/")),
        "{:?}",
        out.drift
    );
    assert!(out.drift.iter().all(|d| d.corrected), "{:?}", out.drift);
    // The listing keeps digests: a role whose documents differ is read once, so that the drift
    // records show what it held.
    assert_eq!(
        (c.calls.of("GetRole"), c.calls.of("GetRolePolicy")),
        (1, 1),
        "found by the listing, read to report it"
    );
    let actual = |prefix: &str| {
        (out.drift.iter())
            .find(|d| d.field.starts_with(prefix))
            .map(|d| d.actual.clone())
            .unwrap_or_default()
    };
    assert!(
        actual("assumeRolePolicyDocument").contains("ec2.amazonaws.com"),
        "{:?}",
        out.drift
    );
    assert!(actual("inlinePolicy/").contains("logs:*"), "{:?}", out.drift);
    assert_eq!(c.calls.of("UpdateAssumeRolePolicy"), 1);
    assert_eq!(c.calls.of("PutRolePolicy"), 1);

    // Put back: the next listing shows the role as planned.
    let (groups, batched) = listings(&c, &cluster).await;
    let again = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &batched))
        .await
        .expect("resync after the correction");
    assert!(again.drift.is_empty(), "{:?}", again.drift);
}

/// Runs `create(0..n)` 16 at a time (moto serves requests in parallel) and returns the names.
async fn create_many<F, Fut>(n: usize, create: F) -> Vec<String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(create)
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test]
async fn more_roles_than_a_page_are_listed_page_by_page_with_none_lost() {
    // IAM pages GetAccountAuthorizationDetails by MaxItems; the test server does as well
    // (scripts/moto_server.py: moto alone answers every role in one response). More roles than
    // one page: the listing follows the markers, each role once, in ceil(n / ROLES_PAGE) calls
    // or more (other tests of this binary add roles of their own).
    let c = moto::clients().await;
    let prefix = moto::unique("paged");
    let n = iam::ROLES_PAGE as usize + 7;
    let tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("tag");
    let created = create_many(n, |i| {
        let (c, name, value) = (&c, format!("{prefix}-{i:03}"), format!("{prefix}/{i}"));
        async move {
            c.iam
                .create_role()
                .role_name(&name)
                .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
                .tags(tag("mlobs.io/pipeline", &value))
                .send()
                .await
                .expect("create role");
            name
        }
    })
    .await;
    c.calls.reset();
    let ours = format!("{prefix}/");
    let roles = iam::observe_roles(&c, &|p| p.starts_with(&ours))
        .await
        .expect("listing");
    let listed: std::collections::BTreeSet<&String> = roles.keys().collect();
    assert_eq!(listed, created.iter().collect(), "every role of ours, once");
    let calls = c.calls.of("GetAccountAuthorizationDetails");
    assert!(
        calls >= 2,
        "{n} roles fit no page of {}: {calls} call(s)",
        iam::ROLES_PAGE
    );
}

#[tokio::test]
async fn more_aliases_than_a_page_are_listed_page_by_page_with_none_lost() {
    // KMS pages ListAliases by Limit (mlobs asks for 100); the test server does as well
    // (scripts/moto_server.py: moto alone answers every alias in one response).
    let c = moto::clients().await;
    let prefix = format!("alias/{}", moto::unique("paged"));
    let key = c.kms.create_key().send().await.expect("key");
    let key_id = key.key_metadata().map(|m| m.key_id().to_string()).expect("key id");
    let n = 103;
    let created = create_many(n, |i| {
        let (c, name, key_id) = (&c, format!("{prefix}-{i:03}"), key_id.clone());
        async move {
            c.kms
                .create_alias()
                .alias_name(&name)
                .target_key_id(key_id)
                .send()
                .await
                .expect("create alias");
            name
        }
    })
    .await;
    c.calls.reset();
    let aliases = kms::observe_aliases(&c).await.expect("listing");
    for name in &created {
        assert_eq!(
            aliases.get(name).map(|t| t.key_id.as_str()),
            Some(key_id.as_str()),
            "{name}"
        );
    }
    let calls = c.calls.of("ListAliases");
    assert!(calls >= 2, "{n} aliases fit no page of 100: {calls} call(s)");
}

#[tokio::test]
async fn the_role_listing_has_trust_inline_policies_tags_and_boundary() {
    // What moto's GetAccountAuthorizationDetails returns is what the snapshot compares: pinned
    // here so that a moto without one of these fields fails loudly instead of reading as drift.
    let c = moto::clients().await;
    let name = moto::unique("listed");
    let boundary = "arn:aws:iam::123456789012:policy/mlobs-boundary";
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]});
    c.iam
        .create_policy()
        .policy_name("mlobs-boundary")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .ok();
    let tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("tag");
    c.iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .permissions_boundary(boundary)
        .tags(tag("mlobs.io/pipeline", "team-a/listed"))
        .send()
        .await
        .expect("create role");
    let inline = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}]});
    c.iam
        .put_role_policy()
        .role_name(&name)
        .policy_name("mlobs")
        .policy_document(inline.to_string())
        .send()
        .await
        .expect("inline");
    c.iam
        .create_role()
        .role_name(moto::unique("untagged"))
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("untagged role");
    let roles = iam::observe_roles(&c, &|_| true).await.expect("listing");
    assert!(
        roles.values().all(|r| r.tag("mlobs.io/pipeline").is_some()),
        "untagged roles are left out"
    );
    let r = roles.get(&name).expect("our role is listed");
    assert_eq!(r.boundary.as_deref(), Some(boundary));
    assert_eq!(r.tag("mlobs.io/pipeline"), Some("team-a/listed"));
    assert_eq!(r.trust, Some(iam::DocDigest::of(&trust)));
    assert_eq!(r.inline("mlobs"), Some(iam::DocDigest::of(&inline)));
    assert_eq!(r.inline("other"), None);
}

#[tokio::test]
async fn a_log_group_tag_removed_outside_mlobs_is_found_when_the_slower_checks_are_due() {
    let cluster = moto::unique("tagdrift");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    let first = ensure_all(&c, &plan, &opts).await.expect("ensure");
    let group = &plan.log_groups[0];
    c.logs
        .untag_resource()
        .resource_arn(&group.arn)
        .tag_keys("mlobs.io/cluster")
        .send()
        .await
        .expect("untag");

    // Not due: the tags this process wrote at create stand in for a read.
    let (groups, batched) = listings(&c, &cluster).await;
    c.calls.reset();
    let quiet = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &batched))
        .await
        .expect("resync, checks not due");
    assert!(quiet.drift.is_empty(), "{:?}", quiet.drift);
    assert_eq!(c.calls.of("ListTagsForResource"), 0);

    let due = Batched {
        skip_slow_checks: false,
        ..batched
    };
    let out = ensure_all(&c, &plan, &resync_opts(&opts, &first, &groups, &due))
        .await
        .expect("resync, checks due");
    let tags: Vec<_> = out.drift.iter().filter(|d| d.field == "tags").collect();
    assert_eq!(tags.len(), 1, "{:?}", out.drift);
    assert!(tags[0].corrected && tags[0].resource.ends_with(&group.name), "{tags:?}");
    let now = c
        .logs
        .list_tags_for_resource()
        .resource_arn(&group.arn)
        .send()
        .await
        .expect("tags");
    assert!(now.tags().is_some_and(|t| t.contains_key("mlobs.io/cluster")));
}

#[tokio::test]
async fn both_listings_follow_their_markers_to_the_last_page() {
    use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
    use aws_sdk_iam::types::{RoleDetail, Tag};
    use aws_sdk_kms::operation::list_aliases::ListAliasesOutput;
    use aws_sdk_kms::types::AliasListEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let alias = |n: usize| {
        AliasListEntry::builder()
            .alias_name(format!("alias/mlobs/c/p{n}"))
            .alias_arn(format!("arn:aws:kms:us-east-1:123456789012:alias/mlobs/c/p{n}"))
            .target_key_id(format!("key-{n}"))
            .build()
    };
    let first = mock!(aws_sdk_kms::Client::list_aliases)
        .match_requests(|r| r.marker().is_none() && r.limit() == Some(100))
        .then_output(move || {
            ListAliasesOutput::builder()
                .set_aliases(Some((0..100).map(alias).collect()))
                .truncated(true)
                .next_marker("m1")
                .build()
        });
    let last = mock!(aws_sdk_kms::Client::list_aliases)
        .match_requests(|r| r.marker() == Some("m1"))
        .then_output(move || {
            let managed = AliasListEntry::builder()
                .alias_name("alias/aws/logs")
                .target_key_id("aws-key")
                .build();
            ListAliasesOutput::builder()
                .set_aliases(Some((100..130).map(alias).chain([managed]).collect()))
                .truncated(false)
                .build()
        });
    let role = |n: usize, tagged: bool| {
        let mut b = RoleDetail::builder()
            .role_name(format!("r{n}"))
            .arn(format!("arn:aws:iam::123456789012:role/r{n}"));
        if tagged {
            b = b.tags(
                Tag::builder()
                    .key("mlobs.io/pipeline")
                    .value(format!("ns/p{n}"))
                    .build()
                    .expect("tag"),
            );
        }
        b.build()
    };
    let roles_first = mock!(aws_sdk_iam::Client::get_account_authorization_details)
        .match_requests(|r| r.marker().is_none() && r.max_items() == Some(iam::ROLES_PAGE))
        .then_output(move || {
            GetAccountAuthorizationDetailsOutput::builder()
                .role_detail_list(role(1, true))
                .role_detail_list(role(2, false))
                .is_truncated(true)
                .marker("r-m1")
                .build()
        });
    let roles_last = mock!(aws_sdk_iam::Client::get_account_authorization_details)
        .match_requests(|r| r.marker() == Some("r-m1"))
        .then_output(move || {
            GetAccountAuthorizationDetailsOutput::builder()
                .role_detail_list(role(3, true))
                .is_truncated(false)
                .build()
        });

    let mut c = moto::clients().await;
    c.kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&first, &last]);
    c.iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles_first, &roles_last]);
    let aliases = kms::observe_aliases(&c).await.expect("aliases");
    assert_eq!(aliases.len(), 130, "AWS managed aliases are left out");
    assert_eq!((first.num_calls(), last.num_calls()), (1, 1));
    let p129 = aliases.get("alias/mlobs/c/p129").expect("last page read");
    assert_eq!(
        p129.key_arn().as_deref(),
        Some("arn:aws:kms:us-east-1:123456789012:key/key-129")
    );
    let roles = iam::observe_roles(&c, &|_| true).await.expect("roles");
    assert_eq!(
        roles.keys().collect::<Vec<_>>(),
        ["r1", "r3"],
        "untagged roles are left out"
    );
    assert_eq!((roles_first.num_calls(), roles_last.num_calls()), (1, 1));
}
