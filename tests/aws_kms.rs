//! The pipeline's KMS key against moto: create, no-op re-run, crash safety across every mutating
//! call, name conflicts, each kind of drift under Correct and Report, deletion policies and a
//! user's existing key.

mod support;

use mlobs::aws::{AwsClients, AwsError, kms};
use mlobs::crd::{DeletionPolicy, DriftPolicy};
use mlobs::desired::aws_plan::KmsKeyPlan;
use serde_json::{Value, json};
use support::fixture::Fixture;
use support::{faults, moto};

impl Fixture {
    fn key(&self) -> &KmsKeyPlan {
        self.plan.kms.as_ref().expect("the plan has a key")
    }

    fn alias(&self) -> &str {
        match self.key() {
            KmsKeyPlan::Create { alias, .. } => alias,
            KmsKeyPlan::Existing { .. } => panic!("not a created key"),
        }
    }

    async fn ensure(
        &self,
        c: &AwsClients,
        known: Option<&str>,
        drift: DriftPolicy,
    ) -> Result<(kms::KmsKey, Vec<mlobs::aws::Drift>), AwsError> {
        kms::ensure(c, self.key(), &self.owner, known, drift).await
    }
}

async fn tags(c: &AwsClients, key_id: &str) -> Vec<(String, String)> {
    let out = c.kms.list_resource_tags().key_id(key_id).send().await.expect("tags");
    out.tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect()
}

async fn state(c: &AwsClients, key_id: &str) -> String {
    let out = c.kms.describe_key().key_id(key_id).send().await.expect("describe");
    out.key_metadata()
        .and_then(|m| m.key_state())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

async fn rotation(c: &AwsClients, key_id: &str) -> bool {
    c.kms
        .get_key_rotation_status()
        .key_id(key_id)
        .send()
        .await
        .expect("rotation")
        .key_rotation_enabled()
}

async fn policy(c: &AwsClients, key_id: &str) -> Value {
    let out = c
        .kms
        .get_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .send()
        .await
        .expect("policy");
    serde_json::from_str(out.policy().unwrap_or("{}")).expect("policy JSON")
}

fn sids(policy: &Value) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["Sid"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

async fn aliases_of(c: &AwsClients, key_id: &str) -> Vec<String> {
    let out = c.kms.list_aliases().key_id(key_id).send().await.expect("aliases");
    out.aliases()
        .iter()
        .filter_map(|a| a.alias_name().map(String::from))
        .filter(|a| !a.starts_with("alias/aws/"))
        .collect()
}

/// Keys tagged for this pipeline and cluster that are not pending deletion.
async fn owned_keys(c: &AwsClients, f: &Fixture) -> Vec<String> {
    let listed = c.kms.list_keys().limit(1000).send().await.expect("list keys");
    let mut ours = Vec::new();
    for id in listed.keys().iter().filter_map(|k| k.key_id()) {
        let t = tags(c, id).await;
        let has = |k: &str, v: &str| t.iter().any(|(tk, tv)| tk == k && tv == v);
        if has("mlobs.io/pipeline", &f.owner.pipeline)
            && has("mlobs.io/cluster", &f.owner.cluster)
            && state(c, id).await != "PendingDeletion"
        {
            ours.push(id.to_string());
        }
    }
    ours
}

/// A key in moto that mlobs did not create (no tags), like a user's or another tool's.
async fn foreign_key(c: &AwsClients) -> (String, String) {
    let out = c
        .kms
        .create_key()
        .description("someone else's")
        .send()
        .await
        .expect("create key");
    let m = out.key_metadata().expect("metadata");
    (m.key_id().to_string(), m.arn().expect("arn").to_string())
}

#[tokio::test]
async fn key_is_created_with_alias_rotation_policy_and_ownership_tags() {
    let f = Fixture::new(json!({}));
    let c = moto::clients().await;
    let (key, drift) = f.ensure(&c, None, DriftPolicy::Correct).await.expect("ensure");
    assert!(drift.is_empty(), "{drift:?}");
    assert_eq!(aliases_of(&c, &key.key_id).await, [f.alias()]);
    assert!(key.key_arn.ends_with(&format!(":key/{}", key.key_id)));
    assert_eq!(state(&c, &key.key_id).await, "Enabled");
    assert!(rotation(&c, &key.key_id).await);
    let KmsKeyPlan::Create {
        policy: want,
        description,
        ..
    } = f.key()
    else {
        unreachable!()
    };
    assert_eq!(&policy(&c, &key.key_id).await, want);
    assert_eq!(sids(want), ["AccountRoot", "CloudWatchLogs"]);
    let d = c.kms.describe_key().key_id(&key.key_id).send().await.expect("describe");
    assert_eq!(
        d.key_metadata().and_then(|m| m.description()),
        Some(description.as_str())
    );
    let t = tags(&c, &key.key_id).await;
    assert!(t.contains(&("mlobs.io/pipeline".into(), f.e.pipeline_id())), "{t:?}");
    assert!(
        t.contains(&("mlobs.io/cluster".into(), f.e.cluster_name.clone())),
        "{t:?}"
    );
    for op in ["CreateKey", "EnableKeyRotation", "CreateAlias"] {
        assert_eq!(c.calls.of(op), 1, "{op}");
    }
    assert_eq!(c.calls.mutating(), 3, "{:?}", c.calls.snapshot());
    // Reads: DescribeKey by alias, then the tag scan (ListKeys + ListResourceTags per key in the account).
    println!(
        "KMS create: 3 mutating, {} reads ({} ListResourceTags over the account's keys)",
        c.calls.count(|k| !mlobs::aws::calls::is_mutating(&k.operation)),
        c.calls.of("ListResourceTags")
    );
    assert_eq!(owned_keys(&c, &f).await, [key.key_id.as_str()]);
}

#[tokio::test]
async fn rerun_on_a_converged_key_makes_no_mutating_call() {
    let f = Fixture::new(json!({}));
    let (key, _) = f
        .ensure(&moto::clients().await, None, DriftPolicy::Correct)
        .await
        .expect("create");
    for known in [None, Some(key.key_id.as_str())] {
        let again = moto::clients().await;
        let (same, drift) = f.ensure(&again, known, DriftPolicy::Correct).await.expect("re-run");
        assert_eq!(same, key);
        assert!(drift.is_empty(), "{drift:?}");
        assert_eq!(again.calls.mutating(), 0, "{:?}", again.calls.snapshot());
        println!(
            "no-op KMS ensure: {} reads, 0 mutating ({:?})",
            again.calls.count(|_| true),
            again
                .calls
                .snapshot()
                .keys()
                .map(|k| k.operation.clone())
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn crash_after_each_mutating_call_converges_to_one_key_with_one_alias() {
    const CREATE_CALLS: i64 = 3;
    for drift in [DriftPolicy::Correct, DriftPolicy::Report] {
        for n in 0..CREATE_CALLS {
            let f = Fixture::new(json!({}));
            let (crashing, crash) = faults::crashing_clients(n).await;
            let first = f.ensure(&crashing, None, drift).await;
            assert!(
                crash.crashed() && first.is_err(),
                "crash point {n} not reached: {first:?}"
            );
            drop(crashing);
            // A restarted operator: fresh clients, no recorded key id.
            let fresh = moto::clients().await;
            let (key, found_drift) = f
                .ensure(&fresh, None, drift)
                .await
                .unwrap_or_else(|e| panic!("after crash at {n}: {e}"));
            assert!(
                found_drift.is_empty(),
                "finishing a create is not drift: {found_drift:?}"
            );
            assert_eq!(owned_keys(&fresh, &f).await, [key.key_id.as_str()], "crash at {n}");
            assert_eq!(aliases_of(&fresh, &key.key_id).await, [f.alias()], "crash at {n}");
            assert!(rotation(&fresh, &key.key_id).await, "crash at {n} ({drift:?})");
            let third = moto::clients().await;
            f.ensure(&third, Some(&key.key_id), drift).await.expect("third run");
            assert_eq!(third.calls.mutating(), 0, "crash at {n}: {:?}", third.calls.snapshot());
        }
    }
}

#[tokio::test]
async fn key_found_by_its_recorded_id_gets_its_missing_alias_without_a_tag_scan() {
    let f = Fixture::new(json!({}));
    let c = moto::clients().await;
    let KmsKeyPlan::Create {
        policy,
        tags: plan_tags,
        ..
    } = f.key()
    else {
        unreachable!()
    };
    let tags = plan_tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_kms::types::Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .expect("tag")
        })
        .collect();
    let out = c
        .kms
        .create_key()
        .policy(policy.to_string())
        .set_tags(Some(tags))
        .send()
        .await
        .expect("create key");
    let id = out.key_metadata().expect("metadata").key_id().to_string();
    c.kms.enable_key_rotation().key_id(&id).send().await.expect("rotation");

    for drift in [DriftPolicy::Report, DriftPolicy::Correct] {
        let run = moto::clients().await;
        let (key, found_drift) = f.ensure(&run, Some(&id), drift).await.expect("ensure");
        assert_eq!(key.key_id, id);
        assert!(found_drift.is_empty(), "{found_drift:?}");
        assert_eq!(run.calls.of("ListKeys"), 0, "the recorded id spares the tag scan");
        assert_eq!(run.calls.of("CreateKey"), 0);
    }
    assert_eq!(aliases_of(&c, &id).await, [f.alias()], "completed even under Report");
}

#[tokio::test]
async fn alias_on_a_foreign_key_is_a_name_conflict_and_nothing_changes() {
    let f = Fixture::new(json!({}));
    let c = moto::clients().await;
    let (id, _) = foreign_key(&c).await;
    c.kms
        .create_alias()
        .alias_name(f.alias())
        .target_key_id(&id)
        .send()
        .await
        .expect("alias");
    let run = moto::clients().await;
    let err = f.ensure(&run, None, DriftPolicy::Correct).await.expect_err("conflict");
    assert_eq!(
        err,
        AwsError::NameConflict {
            resource: format!("kmsKey:{}", f.alias())
        }
    );
    assert_eq!(err.reason().as_str(), "NameConflict");
    assert_eq!(run.calls.mutating(), 0, "{:?}", run.calls.snapshot());
    kms::delete(&run, f.key(), &f.owner, None, DeletionPolicy::Delete)
        .await
        .expect("delete skips it");
    assert_eq!(run.calls.mutating(), 0, "a foreign key is never deleted");
    assert_eq!(state(&c, &id).await, "Enabled");
    assert!(tags(&c, &id).await.is_empty());
}

#[derive(Debug, Clone, Copy)]
enum Sabotage {
    Disable,
    ScheduleDeletion,
    RotationOff,
    PolicyLostLogsStatement,
    OwnershipTagRemoved,
}

impl Sabotage {
    fn field(self) -> &'static str {
        match self {
            Sabotage::Disable | Sabotage::ScheduleDeletion => "keyState",
            Sabotage::RotationOff => "keyRotation",
            Sabotage::PolicyLostLogsStatement => "policy",
            Sabotage::OwnershipTagRemoved => "tags",
        }
    }

    async fn apply(self, c: &AwsClients, f: &Fixture, id: &str) {
        match self {
            Sabotage::Disable => drop(c.kms.disable_key().key_id(id).send().await.expect("disable")),
            Sabotage::ScheduleDeletion => drop(
                c.kms
                    .schedule_key_deletion()
                    .key_id(id)
                    .pending_window_in_days(7)
                    .send()
                    .await
                    .expect("schedule"),
            ),
            Sabotage::RotationOff => drop(
                c.kms
                    .disable_key_rotation()
                    .key_id(id)
                    .send()
                    .await
                    .expect("rotation off"),
            ),
            Sabotage::PolicyLostLogsStatement => {
                let KmsKeyPlan::Create { policy, .. } = f.key() else {
                    unreachable!()
                };
                let root_only = json!({"Version": "2012-10-17", "Statement": [policy["Statement"][0].clone()]});
                c.kms
                    .put_key_policy()
                    .key_id(id)
                    .policy_name("default")
                    .policy(root_only.to_string())
                    .send()
                    .await
                    .expect("put policy");
            }
            Sabotage::OwnershipTagRemoved => drop(
                c.kms
                    .untag_resource()
                    .key_id(id)
                    .tag_keys("mlobs.io/cluster")
                    .send()
                    .await
                    .expect("untag"),
            ),
        }
    }

    /// Whether the key is as the plan wants it in this respect.
    async fn healed(self, c: &AwsClients, id: &str) -> bool {
        match self {
            Sabotage::Disable | Sabotage::ScheduleDeletion => state(c, id).await == "Enabled",
            Sabotage::RotationOff => rotation(c, id).await,
            Sabotage::PolicyLostLogsStatement => sids(&policy(c, id).await).contains(&"CloudWatchLogs".to_string()),
            Sabotage::OwnershipTagRemoved => tags(c, id).await.iter().any(|(k, _)| k == "mlobs.io/cluster"),
        }
    }
}

/// Correct: recorded with corrected=true, healed, and the next run is a no-op.
/// Report: recorded with corrected=false, no mutating call, still drifted.
async fn drift_is_corrected_or_reported(kind: Sabotage) {
    for mode in [DriftPolicy::Correct, DriftPolicy::Report] {
        let f = Fixture::new(json!({}));
        let c = moto::clients().await;
        let (key, _) = f.ensure(&c, None, mode).await.expect("create");
        kind.apply(&c, &f, &key.key_id).await;
        assert!(!kind.healed(&c, &key.key_id).await, "{kind:?} sabotage took");

        let run = moto::clients().await;
        let (same, drift) = f.ensure(&run, None, mode).await.expect("ensure");
        assert_eq!(same.key_id, key.key_id);
        let correct = mode == DriftPolicy::Correct;
        assert_eq!(drift.len(), 1, "{kind:?} {mode:?}: {drift:?}");
        assert_eq!(drift[0].resource, format!("kmsKey:{}", f.alias()));
        assert_eq!(
            (drift[0].field.as_str(), drift[0].corrected),
            (kind.field(), correct),
            "{drift:?}"
        );
        assert_eq!(kind.healed(&c, &key.key_id).await, correct, "{kind:?} {mode:?}");
        if correct {
            let next = moto::clients().await;
            let (_, drift) = f.ensure(&next, None, mode).await.expect("after correction");
            assert!(drift.is_empty(), "{drift:?}");
            assert_eq!(next.calls.mutating(), 0, "{:?}", next.calls.snapshot());
        } else {
            assert_eq!(
                run.calls.mutating(),
                0,
                "Report changes nothing: {:?}",
                run.calls.snapshot()
            );
        }
    }
}

#[tokio::test]
async fn disabled_key_is_enabled_under_correct_and_only_reported_under_report() {
    drift_is_corrected_or_reported(Sabotage::Disable).await;
}

#[tokio::test]
async fn key_pending_deletion_is_cancelled_and_enabled_under_correct_and_only_reported_under_report() {
    drift_is_corrected_or_reported(Sabotage::ScheduleDeletion).await;
}

#[tokio::test]
async fn rotation_turned_off_is_turned_back_on_under_correct_and_only_reported_under_report() {
    drift_is_corrected_or_reported(Sabotage::RotationOff).await;
}

#[tokio::test]
async fn policy_without_the_logs_statement_is_restored_under_correct_and_only_reported_under_report() {
    drift_is_corrected_or_reported(Sabotage::PolicyLostLogsStatement).await;
}

#[tokio::test]
async fn removed_ownership_tag_is_put_back_under_correct_and_only_reported_under_report() {
    drift_is_corrected_or_reported(Sabotage::OwnershipTagRemoved).await;
}

#[tokio::test]
async fn restored_policy_keeps_a_statement_the_user_added() {
    let f = Fixture::new(json!({}));
    let c = moto::clients().await;
    let (key, _) = f.ensure(&c, None, DriftPolicy::Correct).await.expect("create");
    let KmsKeyPlan::Create { policy: want, .. } = f.key() else {
        unreachable!()
    };
    let user = json!({"Sid": "AuditRead", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/audit"}, "Action": "kms:DescribeKey", "Resource": "*"});
    let edited = json!({"Version": "2012-10-17", "Statement": [want["Statement"][0].clone(), user]});
    c.kms
        .put_key_policy()
        .key_id(&key.key_id)
        .policy_name("default")
        .policy(edited.to_string())
        .send()
        .await
        .expect("put");
    let (_, drift) = f.ensure(&c, None, DriftPolicy::Correct).await.expect("ensure");
    assert_eq!(drift.len(), 1);
    assert_eq!(
        sids(&policy(&c, &key.key_id).await),
        ["AuditRead", "AccountRoot", "CloudWatchLogs"]
    );
}

#[tokio::test]
async fn delete_under_retain_removes_only_ownership_tags_and_keeps_key_and_alias() {
    let f = Fixture::new(json!({}));
    let c = moto::clients().await;
    let (key, _) = f.ensure(&c, None, DriftPolicy::Correct).await.expect("create");
    for _ in 0..2 {
        kms::delete(&c, f.key(), &f.owner, Some(&key.key_id), DeletionPolicy::Retain)
            .await
            .expect("retain is idempotent");
    }
    assert_eq!(
        c.calls.of("UntagResource"),
        1,
        "the second delete finds nothing of ours"
    );
    assert!(
        tags(&c, &key.key_id)
            .await
            .iter()
            .all(|(k, _)| !k.starts_with("mlobs.io/"))
    );
    assert_eq!(state(&c, &key.key_id).await, "Enabled");
    assert_eq!(aliases_of(&c, &key.key_id).await, [f.alias()]);
    assert!(owned_keys(&c, &f).await.is_empty());
}

#[tokio::test]
async fn delete_removes_the_alias_and_schedules_key_deletion_once() {
    for known in [true, false] {
        let f = Fixture::new(json!({}));
        let c = moto::clients().await;
        let (key, _) = f.ensure(&c, None, DriftPolicy::Correct).await.expect("create");
        let known_id = known.then_some(key.key_id.as_str());
        for _ in 0..2 {
            kms::delete(&c, f.key(), &f.owner, known_id, DeletionPolicy::Delete)
                .await
                .expect("delete is idempotent");
        }
        assert_eq!(state(&c, &key.key_id).await, "PendingDeletion");
        assert!(aliases_of(&c, &key.key_id).await.is_empty());
        assert_eq!(c.calls.of("DeleteAlias"), 1);
        assert_eq!(
            c.calls.of("ScheduleKeyDeletion"),
            1,
            "a pending key is not scheduled again"
        );
        assert!(owned_keys(&c, &f).await.is_empty());
    }
}

#[tokio::test]
async fn existing_key_arn_is_described_reported_and_never_changed() {
    let c = moto::clients().await;
    let (id, arn) = foreign_key(&c).await;
    let f = Fixture::new(json!({"encryption": {"kms": {"keyArn": arn}}}));
    assert!(matches!(f.key(), KmsKeyPlan::Existing { .. }));

    let run = moto::clients().await;
    let (key, drift) = f.ensure(&run, None, DriftPolicy::Correct).await.expect("ensure");
    assert_eq!((key.key_id.as_str(), key.key_arn.as_str()), (id.as_str(), arn.as_str()));
    assert!(drift.is_empty());
    assert_eq!(run.calls.mutating(), 0);

    c.kms.disable_key().key_id(&id).send().await.expect("disable");
    let run = moto::clients().await;
    let (_, drift) = f.ensure(&run, None, DriftPolicy::Correct).await.expect("ensure");
    assert_eq!(drift.len(), 1);
    assert_eq!((drift[0].field.as_str(), drift[0].corrected), ("keyState", false));
    assert_eq!(state(&c, &id).await, "Disabled", "a user's key is never changed");

    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        kms::delete(&run, f.key(), &f.owner, Some(&id), policy)
            .await
            .expect("delete");
    }
    assert_eq!(run.calls.mutating(), 0);
    assert_eq!(state(&c, &id).await, "Disabled");
}

#[tokio::test]
async fn missing_existing_key_is_an_error_that_names_it() {
    let arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000";
    let f = Fixture::new(json!({"encryption": {"kms": {"keyArn": arn}}}));
    let err = f
        .ensure(&moto::clients().await, None, DriftPolicy::Correct)
        .await
        .expect_err("missing");
    assert_eq!(
        err,
        AwsError::Missing {
            resource: format!("kmsKey:{arn}")
        }
    );
}

/// Tag scans share what they read: after one pipeline's scan read every key's tags, another
/// pipeline's scan in the same process reads only the keys created since (its own, here none),
/// not the whole account again. Without the shared index each scan reads every key (the scale
/// bench's 1,000 interrupted creates made 90,588 ListResourceTags calls).
#[tokio::test]
async fn a_second_tag_scan_reads_no_tags_the_first_one_read() {
    let c = moto::clients().await;
    for _ in 0..3 {
        foreign_key(&c).await;
    }
    let (first, second) = (Fixture::new(json!({})), Fixture::new(json!({})));
    let scan = |f: &Fixture| {
        let c = c.clone();
        let (plan, owner) = (f.key().clone(), f.owner.clone());
        async move { kms::ensure_with(&c, &plan, &owner, None, DriftPolicy::Correct, true).await }
    };
    scan(&first).await.expect("first ensure");
    let indexed = c.kms_key_tags.len();
    let tag_reads = c.calls.of("ListResourceTags");
    assert!(indexed >= 3, "the first scan indexed the account's keys: {indexed}");
    assert!(tag_reads >= 3, "{tag_reads}");

    let (key, _) = scan(&second).await.expect("second ensure");
    let again = c.calls.of("ListResourceTags") - tag_reads;
    // Only keys created since the first scan (the first pipeline's, and any other test's on the
    // shared moto) are read, never the indexed ones: at most the keys now less those indexed.
    let listed = moto::clients()
        .await
        .kms
        .list_keys()
        .limit(1000)
        .send()
        .await
        .expect("list keys");
    let now = listed.keys().len() as u64;
    assert!(
        again <= now - indexed as u64,
        "the second scan read {again} key tags; {indexed} of the {now} keys were already indexed"
    );
    assert_eq!(owned_keys(&c, &second).await, [key.key_id.as_str()]);

    // A key the index holds as ours is read again before use: tags removed outside mlobs are seen.
    c.kms
        .untag_resource()
        .key_id(&key.key_id)
        .tag_keys("mlobs.io/pipeline")
        .send()
        .await
        .expect("untag");
    let before = c.calls.of("ListResourceTags");
    let (again_key, drift) = kms::ensure(&c, second.key(), &second.owner, Some(&key.key_id), DriftPolicy::Correct)
        .await
        .expect("third ensure");
    assert_eq!(again_key.key_id, key.key_id);
    assert!(drift.iter().any(|d| d.field == "tags"), "{drift:?}");
    assert!(c.calls.of("ListResourceTags") > before);
}
