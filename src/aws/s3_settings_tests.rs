use aws_sdk_s3::types::{ExpirationStatus, LifecycleRule, LifecycleRuleFilter};

use super::*;
use crate::desired::aws_plan;
use crate::desired::effective::test_archive;

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd";

fn plan() -> ArchiveBucketPlan {
    aws_plan::build(&test_archive())
        .expect("plan")
        .archive
        .expect("an archive")
}

fn rule(id: &str, prefix: &str) -> ObservedRule {
    let raw = LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
        .build()
        .expect("rule");
    ObservedRule {
        id: Some(id.into()),
        enabled: true,
        prefix: Some(prefix.into()),
        transitions: vec![],
        raw,
    }
}

/// The bucket exactly as the plan wants it.
fn as_planned(p: &ArchiveBucketPlan) -> ObservedBucket {
    let mut ours = rule(LIFECYCLE_RULE_ID, &p.prefix);
    ours.transitions = vec![(Some(p.transition_after_days), Some(p.storage_class.as_str().into()))];
    ObservedBucket {
        tags: p.tags.clone(),
        versioning: Some("Enabled".into()),
        lock_enabled: true,
        retention: Some(desired_retention(p)),
        encryption: Some(("aws:kms".into(), Some("1234abcd".into()), true)),
        public_access_block: Some([true; 4]),
        policy: Some(p.bucket_policy.clone()),
        lifecycle: vec![ours],
    }
}

fn fields(d: &[Drift]) -> Vec<&str> {
    d.iter().map(|x| x.field.as_str()).collect()
}

#[test]
fn a_bucket_as_planned_has_no_drift_and_a_key_id_matches_its_arn() {
    let p = plan();
    assert!(diff(&p, &as_planned(&p), Some(KEY)).is_empty());
    // S3 may return the policy reformatted: a one-element Action list, keys reordered.
    let mut o = as_planned(&p);
    let mut policy = p.bucket_policy.clone();
    policy["Statement"][0]["Action"] = serde_json::json!(["s3:*"]);
    o.policy = Some(policy);
    assert!(diff(&p, &o, Some(KEY)).is_empty());
}

/// A change someone makes to the bucket.
type Change = fn(&mut ObservedBucket);

#[test]
fn each_changed_setting_is_one_drift_record() {
    let p = plan();
    let cases: Vec<(&str, Change)> = vec![
        ("objectLock", |o| {
            o.retention = Some(Retention {
                mode: "GOVERNANCE".into(),
                years: Some(7),
                days: None,
            })
        }),
        ("objectLock", |o| {
            o.retention = Some(Retention {
                mode: LOCK_MODE.into(),
                years: Some(3),
                days: None,
            })
        }),
        ("encryption", |o| o.encryption = Some(("AES256".into(), None, false))),
        ("encryption", |o| {
            o.encryption = Some(("aws:kms".into(), Some("other".into()), true))
        }),
        ("encryption", |o| {
            o.encryption = Some(("aws:kms".into(), Some("1234abcd".into()), false))
        }),
        ("publicAccessBlock", |o| {
            o.public_access_block = Some([true, true, false, true])
        }),
        ("publicAccessBlock", |o| o.public_access_block = None),
        ("bucketPolicy", |o| o.policy = None),
        ("bucketPolicy", |o| {
            o.policy = Some(serde_json::json!({"Version": "2012-10-17", "Statement": []}))
        }),
        ("lifecycle", |o| o.lifecycle.clear()),
        ("lifecycle", |o| {
            o.lifecycle[0].transitions = vec![(Some(30), Some("GLACIER_IR".into()))]
        }),
        ("versioning", |o| o.versioning = Some("Suspended".into())),
    ];
    for (field, change) in cases {
        let mut o = as_planned(&p);
        change(&mut o);
        let d = diff(&p, &o, Some(KEY));
        assert_eq!(fields(&d), [field], "{d:?}");
        assert!(
            d.iter()
                .all(|x| !x.corrected && x.resource == format!("s3Bucket:{}", p.name))
        );
    }
}

#[test]
fn a_compliance_retention_is_raised_but_never_lowered() {
    let p = plan();
    let mut o = as_planned(&p);
    o.retention = Some(Retention {
        mode: LOCK_MODE.into(),
        years: Some(3),
        days: None,
    });
    assert!(retention_may_be_raised(&p, &o));
    o.retention = Some(Retention {
        mode: "GOVERNANCE".into(),
        years: Some(10),
        days: None,
    });
    assert!(
        retention_may_be_raised(&p, &o),
        "GOVERNANCE can be replaced by COMPLIANCE"
    );
    o.retention = Some(Retention {
        mode: LOCK_MODE.into(),
        years: Some(10),
        days: None,
    });
    assert_eq!(
        fields(&diff(&p, &o, Some(KEY))),
        ["objectLock"],
        "longer than the spec: reported"
    );
    assert!(!retention_may_be_raised(&p, &o), "never shortened");
    o.retention = Some(Retention {
        mode: LOCK_MODE.into(),
        years: None,
        days: Some(7 * 365),
    });
    assert!(
        diff(&p, &o, Some(KEY)).is_empty(),
        "7 years written as days is the same period"
    );
}

#[test]
fn our_lifecycle_rule_and_policy_statement_join_what_others_put_there() {
    let p = plan();
    let other = rule("team-expiry", "tmp/");
    let stale = rule(LIFECYCLE_RULE_ID, "old/");
    let conf = lifecycle(&p, &[other, stale]).expect("lifecycle");
    let ids: Vec<Option<&str>> = conf.rules().iter().map(|r| r.id()).collect();
    assert_eq!(ids, [Some("team-expiry"), Some(LIFECYCLE_RULE_ID)]);
    let ours = &conf.rules()[1];
    assert_eq!(ours.filter().and_then(|f| f.prefix()), Some(p.prefix.as_str()));
    assert_eq!(ours.transitions()[0].days(), Some(90));
    let theirs = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": "Audit", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]});
    let merged = merged_policy(Some(&theirs), &p.bucket_policy);
    let sids: Vec<&str> = merged["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert_eq!(sids, ["Audit", "DenyInsecureTransport"]);
    assert_eq!(merged_policy(None, &p.bucket_policy), p.bucket_policy);
}

#[test]
fn encryption_is_sse_kms_with_a_bucket_key_or_sse_s3_without_a_key() {
    let kms = encryption(Some(KEY)).expect("conf");
    let rule = &kms.rules()[0];
    let by_default = rule.apply_server_side_encryption_by_default().expect("default");
    assert_eq!(by_default.sse_algorithm().as_str(), "aws:kms");
    assert_eq!(by_default.kms_master_key_id(), Some(KEY));
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    let s3 = encryption(None).expect("conf");
    let by_default = s3.rules()[0]
        .apply_server_side_encryption_by_default()
        .expect("default");
    assert_eq!(by_default.sse_algorithm().as_str(), "AES256");
    let lock = lock_configuration(&plan());
    let retention = lock.rule().and_then(|r| r.default_retention()).expect("retention");
    assert_eq!(
        (retention.mode().map(|m| m.as_str()), retention.years()),
        (Some("COMPLIANCE"), Some(7))
    );
    assert_eq!(lock.object_lock_enabled().map(|e| e.as_str()), Some("Enabled"));
    let pab = public_access_block();
    assert_eq!(
        [
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ],
        [Some(true); 4]
    );
}
