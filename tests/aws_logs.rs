//! The pipeline's log groups against moto (and aws-smithy-mocks where moto falls short):
//! encrypted create in one call, no-op re-run, crash safety together with the key, adoption,
//! drift under Correct and Report, deletion policies, and the read cost of observing many groups.

mod support;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_cloudwatchlogs::operation::associate_kms_key::AssociateKmsKeyOutput;
use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupOutput;
use aws_sdk_cloudwatchlogs::operation::describe_log_groups::DescribeLogGroupsOutput;
use aws_sdk_cloudwatchlogs::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_cloudwatchlogs::operation::put_retention_policy::PutRetentionPolicyOutput;
use aws_sdk_cloudwatchlogs::types::{LogGroup, LogGroupClass as SdkClass};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use mlobs::aws::logs::{self, ObservedGroup};
use mlobs::aws::{AwsClients, AwsError, Drift, kms};
use mlobs::crd::{DeletionPolicy, DriftPolicy, LogGroupClass};
use mlobs::desired::aws_plan::LogGroupPlan;
use serde_json::{Value, json};
use support::fixture::Fixture;
use support::{faults, moto};

/// The logs group is INFREQUENT_ACCESS with a user tag; the metrics group keeps the defaults.
const LOGS_SPEC: &str =
    r#"{"logs": {"logGroup": {"retentionInDays": 7, "class": "INFREQUENT_ACCESS", "tags": {"team": "ml"}}}}"#;

impl Fixture {
    fn with_groups() -> Fixture {
        Fixture::new(serde_json::from_str(LOGS_SPEC).expect("spec"))
    }

    fn groups(&self) -> &[LogGroupPlan] {
        &self.plan.log_groups
    }

    fn prefix(&self) -> String {
        format!("/aws/eks/{}/", self.e.cluster_name)
    }

    async fn key(&self, c: &AwsClients) -> kms::KmsKey {
        let plan = self.plan.kms.as_ref().expect("a key");
        kms::ensure(c, plan, &self.owner, None, DriftPolicy::Correct)
            .await
            .expect("key")
            .0
    }

    async fn ensure(
        &self,
        c: &AwsClients,
        key: &str,
        adopt: bool,
        drift: DriftPolicy,
    ) -> Result<(Vec<String>, Vec<Drift>), AwsError> {
        logs::ensure(c, self.groups(), Some(key), &self.owner, adopt, drift).await
    }

    async fn observe(&self, c: &AwsClients) -> BTreeMap<String, ObservedGroup> {
        logs::observe_many(c, &self.prefix()).await.expect("observe")
    }
}

async fn group_tags(c: &AwsClients, arn: &str) -> BTreeMap<String, String> {
    let out = c
        .logs
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("tags");
    out.tags().cloned().unwrap_or_default().into_iter().collect()
}

async fn create_untagged(c: &AwsClients, name: &str, key: Option<&str>, retention: Option<i32>) {
    c.logs
        .create_log_group()
        .log_group_name(name)
        .set_kms_key_id(key.map(String::from))
        .send()
        .await
        .expect("create");
    if let Some(days) = retention {
        c.logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await
            .expect("retention");
    }
}

#[tokio::test]
async fn log_groups_are_created_encrypted_with_retention_class_and_tags() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    c.calls.reset();
    let (arns, drift) = f
        .ensure(&c, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("ensure");
    assert!(drift.is_empty(), "{drift:?}");
    let planned: Vec<&str> = f.groups().iter().map(|g| g.arn.as_str()).collect();
    assert_eq!(arns, planned);
    let seen = f.observe(&c).await;
    assert_eq!(seen.len(), 2);
    for g in f.groups() {
        let o = &seen[&g.name];
        assert_eq!(o.kms_key_id.as_deref(), Some(key.key_arn.as_str()), "{}", g.name);
        assert_eq!(o.retention_days, Some(g.retention_days));
        assert_eq!(o.arn, g.arn);
        assert_eq!(group_tags(&c, &o.arn).await, g.tags);
    }
    assert_eq!(f.groups()[0].retention_days, 7);
    assert_eq!(f.groups()[0].class, LogGroupClass::InfrequentAccess);
    assert_eq!(f.groups()[0].tags.get("team").map(String::as_str), Some("ml"));
    assert_eq!(c.calls.of("CreateLogGroup"), 2);
    assert_eq!(c.calls.of("PutRetentionPolicy"), 2);
    assert_eq!(
        c.calls.of("AssociateKmsKey"),
        0,
        "encrypted at creation, never afterwards"
    );
    assert_eq!(c.calls.mutating(), 4, "{:?}", c.calls.snapshot());
    println!(
        "log groups create: {} mutating, {} reads",
        c.calls.mutating(),
        c.calls.count(|k| !mlobs::aws::calls::is_mutating(&k.operation))
    );
}

#[tokio::test]
async fn rerun_on_unchanged_groups_makes_no_mutating_call() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    let (arns, _) = f
        .ensure(&c, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("create");
    let again = moto::clients().await;
    let (same, drift) = f
        .ensure(&again, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("re-run");
    assert_eq!(same, arns);
    assert!(drift.is_empty(), "{drift:?}");
    assert_eq!(again.calls.mutating(), 0, "{:?}", again.calls.snapshot());
    assert_eq!(again.calls.of("DescribeLogGroups"), 1, "both groups in one read");
    assert_eq!(again.calls.of("ListTagsForResource"), 2);
    println!("no-op log groups ensure: {} reads", again.calls.count(|_| true));
}

/// The request CreateLogGroup must carry for this group: key, class and our tags together.
fn create_rule(g: &LogGroupPlan, key: &str) -> Rule {
    let (name, key, tags) = (g.name.clone(), key.to_string(), g.tags.clone());
    let class = SdkClass::from(g.class.as_str());
    mock!(LogsClient::create_log_group)
        .match_requests(move |r| {
            let sent: Option<BTreeMap<String, String>> = r.tags().map(|t| t.clone().into_iter().collect());
            r.log_group_name() == Some(name.as_str())
                && r.kms_key_id() == Some(key.as_str())
                && r.log_group_class() == Some(&class)
                && sent.as_ref() == Some(&tags)
        })
        .then_output(|| CreateLogGroupOutput::builder().build())
}

#[tokio::test]
async fn log_group_is_created_with_kms_key_class_and_tags_in_the_same_call() {
    let f = Fixture::with_groups();
    let key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    let describe = mock!(LogsClient::describe_log_groups).then_output(|| DescribeLogGroupsOutput::builder().build());
    let creates: Vec<Rule> = f.groups().iter().map(|g| create_rule(g, key)).collect();
    let retention = mock!(LogsClient::put_retention_policy).then_output(|| PutRetentionPolicyOutput::builder().build());
    let associate = mock!(LogsClient::associate_kms_key).then_output(|| AssociateKmsKeyOutput::builder().build());
    let mut c = moto::clients().await;
    c.logs = mock_client!(
        aws_sdk_cloudwatchlogs,
        RuleMode::MatchAny,
        [&describe, &creates[0], &creates[1], &retention, &associate]
    );
    f.ensure(&c, key, false, DriftPolicy::Correct).await.expect("ensure");
    assert_eq!((creates[0].num_calls(), creates[1].num_calls()), (1, 1));
    assert_eq!(retention.num_calls(), 2);
    assert_eq!(associate.num_calls(), 0);
}

/// A mocked logs client whose two groups are `observed`, tagged as planned, plus the
/// AssociateKmsKey rule that matches exactly (logs group name, key ARN).
fn mocked(f: &Fixture, observed: Vec<LogGroup>, key: &str) -> (LogsClient, Rule, Rule) {
    let describe = mock!(LogsClient::describe_log_groups).then_output(move || {
        DescribeLogGroupsOutput::builder()
            .set_log_groups(Some(observed.clone()))
            .build()
    });
    let by_arn: HashMap<String, HashMap<String, String>> = f
        .groups()
        .iter()
        .map(|g| (g.arn.clone(), g.tags.clone().into_iter().collect()))
        .collect();
    let tags = mock!(LogsClient::list_tags_for_resource).then_compute_output(move |r| {
        let t = r.resource_arn().and_then(|a| by_arn.get(a)).cloned();
        ListTagsForResourceOutput::builder().set_tags(t).build()
    });
    let (name, key) = (f.groups()[0].name.clone(), key.to_string());
    let associate = mock!(LogsClient::associate_kms_key)
        .match_requests(move |r| r.log_group_name() == Some(name.as_str()) && r.kms_key_id() == Some(key.as_str()))
        .then_output(|| AssociateKmsKeyOutput::builder().build());
    let any_associate = mock!(LogsClient::associate_kms_key).then_output(|| AssociateKmsKeyOutput::builder().build());
    let client = mock_client!(
        aws_sdk_cloudwatchlogs,
        RuleMode::MatchAny,
        [&describe, &tags, &associate, &any_associate]
    );
    (client, associate, any_associate)
}

fn observed(g: &LogGroupPlan, key: Option<&str>, class: &str) -> LogGroup {
    LogGroup::builder()
        .log_group_name(&g.name)
        .arn(format!("{}:*", g.arn))
        .log_group_arn(&g.arn)
        .set_kms_key_id(key.map(String::from))
        .retention_in_days(g.retention_days)
        .log_group_class(SdkClass::from(class))
        .build()
}

#[tokio::test]
async fn group_that_lost_its_kms_key_gets_associate_kms_key_with_the_key_arn() {
    let key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    let other = "arn:aws:kms:us-east-1:123456789012:key/99999999-2222-3333-4444-555555555555";
    // moto answers AssociateKmsKey with HTTP 500: this path runs against aws-smithy-mocks.
    for (lost_to, mode) in [
        (None, DriftPolicy::Correct),
        (Some(other), DriftPolicy::Correct),
        (None, DriftPolicy::Report),
    ] {
        let f = Fixture::with_groups();
        let [logs_group, metrics_group] = f.groups() else {
            panic!("two groups")
        };
        // The logs group also came back STANDARD: the class is reported, never "corrected".
        let seen = vec![
            observed(logs_group, lost_to, "STANDARD"),
            observed(metrics_group, Some(key), "STANDARD"),
        ];
        let (client, associate, any_associate) = mocked(&f, seen, key);
        let mut c = moto::clients().await;
        c.logs = client;
        let (_, drift) = f.ensure(&c, key, false, mode).await.expect("ensure");
        let correct = mode == DriftPolicy::Correct;
        let fields: Vec<(&str, &str, bool)> = drift
            .iter()
            .map(|d| (d.field.as_str(), d.desired.as_str(), d.corrected))
            .collect();
        assert_eq!(
            fields,
            [
                ("kmsKeyId", key, correct),
                ("logGroupClass", "INFREQUENT_ACCESS", false)
            ],
            "{lost_to:?} {mode:?}"
        );
        assert_eq!(drift[0].actual, lost_to.unwrap_or("none"));
        assert_eq!(drift[0].resource, format!("logGroup:{}", logs_group.name));
        assert_eq!(associate.num_calls(), usize::from(correct), "{lost_to:?} {mode:?}");
        assert_eq!(any_associate.num_calls(), 0, "no other AssociateKmsKey request");
    }
}

#[tokio::test]
async fn crash_after_any_key_or_group_call_converges_without_duplicates() {
    const CREATE_CALLS: i64 = 7; // CreateKey, EnableKeyRotation, CreateAlias, 2 × (CreateLogGroup, PutRetentionPolicy)
    for n in 0..CREATE_CALLS {
        let f = Fixture::with_groups();
        let kms_plan = f.plan.kms.as_ref().expect("a key");
        let (crashing, crash) = faults::crashing_clients(n).await;
        let first = match kms::ensure(&crashing, kms_plan, &f.owner, None, DriftPolicy::Correct).await {
            Ok((key, _)) => f
                .ensure(&crashing, &key.key_arn, false, DriftPolicy::Correct)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        assert!(crash.crashed() && first.is_err(), "crash point {n} not reached");
        drop(crashing);

        let fresh = moto::clients().await;
        let (key, _) = kms::ensure(&fresh, kms_plan, &f.owner, None, DriftPolicy::Correct)
            .await
            .unwrap_or_else(|e| panic!("key after crash at {n}: {e}"));
        f.ensure(&fresh, &key.key_arn, false, DriftPolicy::Correct)
            .await
            .unwrap_or_else(|e| panic!("groups after crash at {n}: {e}"));

        let (mut keys, mut aliases) = (0, 0);
        let listed = fresh.kms.list_keys().limit(1000).send().await.expect("keys");
        for id in listed.keys().iter().filter_map(|k| k.key_id()) {
            let t = fresh.kms.list_resource_tags().key_id(id).send().await.expect("tags");
            let has = |k: &str, v: &str| t.tags().iter().any(|x| x.tag_key() == k && x.tag_value() == v);
            if has("mlobs.io/pipeline", &f.owner.pipeline) && has("mlobs.io/cluster", &f.owner.cluster) {
                keys += 1;
                let a = fresh.kms.list_aliases().key_id(id).send().await.expect("aliases");
                aliases += a
                    .aliases()
                    .iter()
                    .filter(|a| !a.alias_name().unwrap_or_default().starts_with("alias/aws/"))
                    .count();
            }
        }
        assert_eq!((keys, aliases), (1, 1), "crash at {n}");
        let seen = f.observe(&fresh).await;
        assert_eq!(seen.len(), 2, "crash at {n}");
        for g in f.groups() {
            let o = &seen[&g.name];
            assert_eq!(o.kms_key_id.as_deref(), Some(key.key_arn.as_str()), "crash at {n}");
            assert_eq!(o.retention_days, Some(g.retention_days), "crash at {n}");
        }
        let third = moto::clients().await;
        f.ensure(&third, &key.key_arn, false, DriftPolicy::Correct)
            .await
            .expect("third run");
        assert_eq!(third.calls.mutating(), 0, "crash at {n}");
    }
}

#[tokio::test]
async fn foreign_group_is_a_name_conflict_and_no_group_is_touched() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    // The second group in plan order: the first must not be created before the conflict is seen.
    let taken = &f.groups()[1];
    create_untagged(&c, &taken.name, None, Some(1)).await;
    let run = moto::clients().await;
    let err = f
        .ensure(&run, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect_err("conflict");
    assert_eq!(
        err,
        AwsError::NameConflict {
            resource: format!("logGroup:{}", taken.name)
        }
    );
    assert_eq!(run.calls.mutating(), 0, "{:?}", run.calls.snapshot());
    let seen = f.observe(&c).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), [&taken.name]);
    assert_eq!(seen[&taken.name].retention_days, Some(1));
    assert!(group_tags(&c, &taken.arn).await.is_empty());
    logs::delete(&run, f.groups(), &f.owner, DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert_eq!(f.observe(&c).await.len(), 1, "a foreign group is never deleted");
}

#[tokio::test]
async fn adopted_group_is_tagged_and_reconciled() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    let g = &f.groups()[0];
    // Encrypted already (moto cannot AssociateKmsKey), but with another retention and a user tag.
    create_untagged(&c, &g.name, Some(&key.key_arn), Some(1)).await;
    c.logs
        .tag_resource()
        .resource_arn(&g.arn)
        .tags("owner", "legacy")
        .send()
        .await
        .expect("tag");

    let (_, drift) = f
        .ensure(&c, &key.key_arn, true, DriftPolicy::Correct)
        .await
        .expect("adopt");
    assert_eq!(drift.len(), 1, "adoption tagging is not drift: {drift:?}");
    assert_eq!(
        (drift[0].field.as_str(), drift[0].actual.as_str(), drift[0].corrected),
        ("retentionInDays", "1", true)
    );
    let tags = group_tags(&c, &g.arn).await;
    assert!(g.tags.iter().all(|(k, v)| tags.get(k) == Some(v)), "{tags:?}");
    assert_eq!(
        tags.get("owner").map(String::as_str),
        Some("legacy"),
        "the owner's tags stay"
    );
    assert_eq!(f.observe(&c).await[&g.name].retention_days, Some(g.retention_days));

    let again = moto::clients().await;
    f.ensure(&again, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("now ours");
    assert_eq!(again.calls.mutating(), 0);
}

#[tokio::test]
async fn changed_retention_is_put_back_under_correct_and_only_reported_under_report() {
    for mode in [DriftPolicy::Correct, DriftPolicy::Report] {
        let f = Fixture::with_groups();
        let c = moto::clients().await;
        let key = f.key(&c).await;
        f.ensure(&c, &key.key_arn, false, mode).await.expect("create");
        let g = &f.groups()[1];
        c.logs
            .put_retention_policy()
            .log_group_name(&g.name)
            .retention_in_days(3653)
            .send()
            .await
            .expect("change");
        let run = moto::clients().await;
        let (_, drift) = f.ensure(&run, &key.key_arn, false, mode).await.expect("ensure");
        let correct = mode == DriftPolicy::Correct;
        assert_eq!(
            drift,
            [Drift {
                resource: format!("logGroup:{}", g.name),
                field: "retentionInDays".into(),
                desired: g.retention_days.to_string(),
                actual: "3653".into(),
                corrected: correct,
            }]
        );
        let now = f.observe(&c).await[&g.name].retention_days;
        assert_eq!(now, Some(if correct { g.retention_days } else { 3653 }));
        assert_eq!(run.calls.mutating(), u64::from(correct));
    }
}

#[tokio::test]
async fn removed_tags_are_put_back_under_correct_and_only_reported_under_report() {
    for mode in [DriftPolicy::Correct, DriftPolicy::Report] {
        let f = Fixture::with_groups();
        let c = moto::clients().await;
        let key = f.key(&c).await;
        f.ensure(&c, &key.key_arn, false, mode).await.expect("create");
        let g = &f.groups()[0];
        // The pipeline tag stays (else the group is no longer ours); a user and an ownership tag go.
        c.logs
            .untag_resource()
            .resource_arn(&g.arn)
            .tag_keys("team")
            .tag_keys("mlobs.io/cluster")
            .send()
            .await
            .expect("untag");
        let run = moto::clients().await;
        let (_, drift) = f.ensure(&run, &key.key_arn, false, mode).await.expect("ensure");
        let correct = mode == DriftPolicy::Correct;
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!((drift[0].field.as_str(), drift[0].corrected), ("tags", correct));
        assert_eq!(
            drift[0].desired,
            format!("mlobs.io/cluster={}, team=ml", f.owner.cluster)
        );
        let tags = group_tags(&c, &g.arn).await;
        assert_eq!(tags == g.tags, correct, "{tags:?}");
        assert_eq!(run.calls.mutating(), u64::from(correct));
    }
}

#[tokio::test]
async fn delete_under_retain_keeps_groups_and_user_tags_and_removes_ownership_tags() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    f.ensure(&c, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("create");
    for _ in 0..2 {
        logs::delete(&c, f.groups(), &f.owner, DeletionPolicy::Retain)
            .await
            .expect("retain is idempotent");
    }
    assert_eq!(
        c.calls.of("UntagResource"),
        2,
        "once per group; the second delete finds nothing of ours"
    );
    let seen = f.observe(&c).await;
    assert_eq!(seen.len(), 2, "data is kept");
    let tags = group_tags(&c, &f.groups()[0].arn).await;
    assert_eq!(tags, BTreeMap::from([("team".to_string(), "ml".to_string())]));
    assert!(group_tags(&c, &f.groups()[1].arn).await.is_empty());
}

#[tokio::test]
async fn delete_removes_our_groups_and_is_idempotent() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let key = f.key(&c).await;
    f.ensure(&c, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("create");
    for _ in 0..2 {
        logs::delete(&c, f.groups(), &f.owner, DeletionPolicy::Delete)
            .await
            .expect("delete is idempotent");
    }
    assert_eq!(c.calls.of("DeleteLogGroup"), 2);
    assert!(f.observe(&c).await.is_empty());
}

#[tokio::test]
async fn observe_many_reads_fifty_groups_per_call() {
    let prefix = format!("/mlobs/scale/{}/", moto::unique("s"));
    let c = moto::clients().await;
    for i in 0..120 {
        c.logs
            .create_log_group()
            .log_group_name(format!("{prefix}g{i:03}"))
            .send()
            .await
            .expect("create");
    }
    let reader = moto::clients().await;
    let seen = logs::observe_many(&reader, &prefix).await.expect("observe");
    assert_eq!(seen.len(), 120);
    assert_eq!(reader.calls.of("DescribeLogGroups"), 3);
    assert_eq!(reader.calls.count(|_| true), 3);
    println!(
        "observe_many over 120 groups: {} DescribeLogGroups calls",
        reader.calls.of("DescribeLogGroups")
    );
}

#[tokio::test]
async fn pipeline_with_an_existing_key_arn_encrypts_its_groups_with_that_key() {
    let c = moto::clients().await;
    let out = c
        .kms
        .create_key()
        .description("team key")
        .send()
        .await
        .expect("create key");
    let arn = out.key_metadata().and_then(|m| m.arn()).expect("arn").to_string();
    let mut spec: Value = serde_json::from_str(LOGS_SPEC).expect("spec");
    spec["encryption"] = json!({"kms": {"keyArn": arn}});
    let f = Fixture::new(spec);
    let (key, _) = kms::ensure(
        &c,
        f.plan.kms.as_ref().expect("key"),
        &f.owner,
        None,
        DriftPolicy::Correct,
    )
    .await
    .expect("existing key");
    assert_eq!(key.key_arn, arn);
    f.ensure(&c, &key.key_arn, false, DriftPolicy::Correct)
        .await
        .expect("groups");
    let seen = f.observe(&c).await;
    assert!(
        seen.values().all(|o| o.kms_key_id.as_deref() == Some(arn.as_str())),
        "{seen:?}"
    );
    // Without the applied key, the plan's own keyArn is the desired key: still a no-op.
    let run = moto::clients().await;
    logs::ensure(&run, f.groups(), None, &f.owner, false, DriftPolicy::Correct)
        .await
        .expect("re-run");
    assert_eq!(run.calls.mutating(), 0);
    assert!(
        c.kms
            .list_resource_tags()
            .key_id(&arn)
            .send()
            .await
            .expect("tags")
            .tags()
            .is_empty(),
        "the key is untouched"
    );
}

#[tokio::test]
async fn groups_are_not_created_before_the_created_key_is_known() {
    let f = Fixture::with_groups();
    let c = moto::clients().await;
    let err = logs::ensure(&c, f.groups(), None, &f.owner, false, DriftPolicy::Correct)
        .await
        .expect_err("no key yet");
    assert!(
        matches!(&err, AwsError::Terminal { code, .. } if code == "KmsKeyNotReady"),
        "{err:?}"
    );
    assert_eq!(c.calls.count(|_| true), 0);
}

#[test]
fn diff_reports_key_retention_and_class_differences() {
    let f = Fixture::with_groups();
    let g = &f.groups()[0];
    let key = "arn:aws:kms:us-east-1:123456789012:key/abc";
    let same = ObservedGroup {
        name: g.name.clone(),
        arn: g.arn.clone(),
        kms_key_id: Some(key.into()),
        retention_days: Some(g.retention_days),
        class: Some("INFREQUENT_ACCESS".into()),
        created_ms: None,
    };
    assert!(logs::diff(g, &same, Some(key)).is_empty());
    let by_id = ObservedGroup {
        kms_key_id: Some("abc".into()),
        ..same.clone()
    };
    assert!(
        logs::diff(g, &by_id, Some(key)).is_empty(),
        "a key id names the same key as its ARN"
    );
    let drifted = ObservedGroup {
        kms_key_id: None,
        retention_days: None,
        class: Some("STANDARD".into()),
        ..same.clone()
    };
    let d: Vec<(String, String, String)> = logs::diff(g, &drifted, Some(key))
        .into_iter()
        .map(|d| (d.field, d.desired, d.actual))
        .collect();
    let expect = |f: &str, w: &str, a: &str| (f.to_string(), w.to_string(), a.to_string());
    assert_eq!(
        d,
        [
            expect("kmsKeyId", key, "none"),
            expect("retentionInDays", "7", "never expire"),
            expect("logGroupClass", "INFREQUENT_ACCESS", "STANDARD"),
        ]
    );
    let unencrypted_plan = LogGroupPlan {
        kms_key: None,
        ..g.clone()
    };
    assert!(
        logs::diff(&unencrypted_plan, &same, None).is_empty(),
        "mlobs never removes a key"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// One event with timestamp `at_ms` into `stream` (created on first use).
async fn put_event(c: &AwsClients, group: &str, stream: &str, at_ms: i64) {
    let _ = c
        .logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
        .timestamp(at_ms)
        .message("line")
        .build()
        .expect("event");
    c.logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .log_events(event)
        .send()
        .await
        .expect("put log events");
}

/// (lastEventTimestamp, lastIngestionTime) of a stream as moto reports it.
async fn stream_times(c: &AwsClients, group: &str, stream: &str) -> (Option<i64>, Option<i64>) {
    let out = c
        .logs
        .describe_log_streams()
        .log_group_name(group)
        .log_stream_name_prefix(stream)
        .send()
        .await
        .expect("describe streams");
    let s = out.log_streams().first().expect("the stream");
    (s.last_event_timestamp(), s.last_ingestion_time())
}

#[tokio::test]
async fn newest_event_is_none_in_an_empty_group_and_else_the_newest_ingestion_of_its_streams() {
    let c = moto::clients().await;
    let group = format!("/aws/eks/{}/team-a/train/logs", moto::unique("flow"));
    c.logs
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .expect("group");
    assert_eq!(
        logs::newest_event_ms(&c, &group).await.expect("read"),
        None,
        "no stream"
    );
    c.logs
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name("idle")
        .send()
        .await
        .expect("stream");
    assert_eq!(
        logs::newest_event_ms(&c, &group).await.expect("read"),
        None,
        "a stream without events"
    );

    let before = now_ms();
    put_event(&c, &group, "pod-a", before).await;
    let a = logs::newest_event_ms(&c, &group)
        .await
        .expect("read")
        .expect("an event");
    assert!((before..=now_ms()).contains(&a), "{a} not between {before} and now");
    // What moto reports: the event's own timestamp and the wall-clock time of PutLogEvents.
    let (a_event, a_ingest) = stream_times(&c, &group, "pod-a").await;
    println!("moto: lastEventTimestamp {a_event:?}, lastIngestionTime {a_ingest:?} (event sent with {before})");
    assert_eq!(a_event, Some(before));
    assert_eq!(Some(a), a_ingest);

    // pod-b sends a line written a minute ago: by LastEventTime it ranks after pod-a, yet it
    // holds the newest ingestion, and that is what is reported.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    put_event(&c, &group, "pod-b", now_ms() - 60_000).await;
    let (_, b_ingest) = stream_times(&c, &group, "pod-b").await;
    assert!(b_ingest > a_ingest, "{b_ingest:?} {a_ingest:?}");
    assert_eq!(logs::newest_event_ms(&c, &group).await.expect("read"), b_ingest);

    // A node whose clock is an hour ahead does not make the group look fresh for an hour.
    put_event(&c, &group, "pod-c", now_ms() + 3_600_000).await;
    let newest = logs::newest_event_ms(&c, &group)
        .await
        .expect("read")
        .expect("an event");
    assert!(newest <= now_ms(), "{newest} is in the future");

    // A group that does not exist is an error, not "no data".
    let err = logs::newest_event_ms(&c, &format!("{group}-gone"))
        .await
        .expect_err("no such group");
    assert!(err.to_string().contains("DescribeLogStreams"), "{err}");
}
