//! What the S3 archive adds to the collector configuration, the pod, the role, the key policy and
//! the AWS plan.

use serde_json::{Value, json};

use super::aws_plan::archive::{ARCHIVE_ACTIONS, ARCHIVE_KMS_ACTIONS, ARCHIVE_KMS_SID, ARCHIVE_SID, KEY_POLICY_SID};
use super::aws_plan::{self, KmsKeyPlan};
use super::collector_config::build;
use super::collector_config::destinations::{ARCHIVE_EXPORTER, ARCHIVE_PARTITION_FORMAT};
use super::collector_daemonset::daemon_set;
use super::collector_daemonset::destinations::CHECKSUM_ENV;
use super::destinations_tests::{inline_statements as statements, strs};
use super::effective::{EffKms, Effective, test_archive, test_fixture};

fn sid<'a>(all: &'a [Value], sid: &str) -> Option<&'a Value> {
    all.iter().find(|s| s["Sid"] == sid)
}

#[test]
fn the_logs_pipeline_fans_out_to_the_archive_after_cloudwatch_with_hourly_partitions() {
    let e = test_archive();
    let c = build(&e);
    let logs = &c["service"]["pipelines"]["logs"];
    assert_eq!(strs(&logs["exporters"]), ["awscloudwatchlogs", ARCHIVE_EXPORTER]);
    // Archived after redaction, like CloudWatch: the same processors.
    assert!(strs(&logs["processors"]).contains(&"transform/redact".to_string()));
    let x = &c["exporters"][ARCHIVE_EXPORTER];
    let up = &x["s3uploader"];
    assert_eq!(up["region"], "us-east-1");
    assert_eq!(
        up["s3_bucket"],
        json!(e.destinations.archive.as_ref().map(|a| a.bucket.clone()))
    );
    assert_eq!(
        up["s3_prefix"], "logs/team-a/train",
        "the exporter adds the separating /"
    );
    assert_eq!(up["s3_partition_format"], ARCHIVE_PARTITION_FORMAT);
    assert_eq!(ARCHIVE_PARTITION_FORMAT, "year=%Y/month=%m/day=%d/hour=%H");
    assert_eq!(up["compression"], "gzip");
    assert_eq!(up["file_prefix"], "${env:KUBE_NODE_NAME}_");
    assert_eq!(x["marshaler"], "otlp_json");
    assert_eq!(x["sending_queue"], json!({"enabled": true, "storage": "file_storage"}));
    // This exporter version refuses retry_on_failure; the metrics pipeline never gets it.
    assert!(x.get("retry_on_failure").is_none());
    assert!(!strs(&c["service"]["pipelines"]["metrics"]["exporters"]).contains(&ARCHIVE_EXPORTER.to_string()));
    let plain = build(&test_fixture());
    assert!(plain["exporters"].get(ARCHIVE_EXPORTER).is_none());
    assert_eq!(
        strs(&plain["service"]["pipelines"]["logs"]["exporters"]),
        ["awscloudwatchlogs"]
    );
}

#[test]
fn the_collector_pins_checksummed_puts_only_with_an_archive() {
    let env_of = |e: &Effective| -> Vec<(String, Option<String>)> {
        let ds = daemon_set(e, "h");
        let spec = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
        (spec.containers[0].env.clone().unwrap_or_default().into_iter())
            .map(|v| (v.name, v.value))
            .collect()
    };
    let want = (CHECKSUM_ENV.0.to_string(), Some(CHECKSUM_ENV.1.to_string()));
    assert!(env_of(&test_archive()).contains(&want));
    assert!(!env_of(&test_fixture()).iter().any(|(n, _)| n == CHECKSUM_ENV.0));
}

#[test]
fn the_role_may_put_objects_under_the_prefix_only_and_use_the_key_only_through_s3() {
    let mut e = test_archive();
    e.identity.source_vpc = Some("vpc-0abc1234".into());
    let all = statements(&e);
    let bucket = e
        .destinations
        .archive
        .as_ref()
        .map(|a| a.bucket.clone())
        .unwrap_or_default();
    let put = sid(&all, ARCHIVE_SID).expect("put statement");
    assert_eq!(put["Action"], json!(ARCHIVE_ACTIONS));
    assert_eq!(
        put["Resource"],
        json!([format!("arn:aws:s3:::{bucket}/logs/team-a/train/*")])
    );
    assert_eq!(put["Condition"]["StringEquals"]["aws:SourceVpc"], "vpc-0abc1234");
    let key = sid(&all, ARCHIVE_KMS_SID).expect("key statement");
    assert_eq!(key["Action"], json!(ARCHIVE_KMS_ACTIONS));
    assert_eq!(key["Resource"], json!(["arn:aws:kms:us-east-1:123456789012:key/*"]));
    let cond = &key["Condition"];
    assert_eq!(cond["StringEquals"]["kms:ViaService"], "s3.us-east-1.amazonaws.com");
    assert_eq!(
        cond["ForAnyValue:StringEquals"]["kms:ResourceAliases"],
        json!(["alias/mlobs/prod-gpu/team-a/train"])
    );
    // S3 calls KMS from AWS's network: a SourceVpc condition would never hold there.
    assert!(cond["StringEquals"].get("aws:SourceVpc").is_none());

    e.kms = EffKms::Existing {
        key_arn: "arn:aws:kms:us-east-1:123456789012:key/abc".into(),
    };
    let all = statements(&e);
    let key = sid(&all, ARCHIVE_KMS_SID).expect("key statement");
    assert_eq!(key["Resource"], json!(["arn:aws:kms:us-east-1:123456789012:key/abc"]));
    assert!(key["Condition"].get("ForAnyValue:StringEquals").is_none());
    e.kms = EffKms::Disabled;
    let all = statements(&e);
    assert!(sid(&all, ARCHIVE_KMS_SID).is_none() && sid(&all, ARCHIVE_SID).is_some());
    assert!(sid(&statements(&test_fixture()), ARCHIVE_SID).is_none());
}

#[test]
fn the_key_policy_lets_the_collector_role_use_the_key_through_s3_only_with_an_archive() {
    let key_policy = |e: &Effective| match aws_plan::build(e).expect("plan").kms {
        Some(KmsKeyPlan::Create { policy, .. }) => policy["Statement"].as_array().cloned().unwrap_or_default(),
        other => panic!("{other:?}"),
    };
    let all = key_policy(&test_archive());
    let s = sid(&all, KEY_POLICY_SID).expect("archive statement");
    // The role does not exist when the key is created: the account is the principal, the role
    // is named in the condition.
    assert_eq!(s["Principal"]["AWS"], "arn:aws:iam::123456789012:root");
    assert_eq!(
        s["Condition"]["ArnEquals"]["aws:PrincipalArn"],
        "arn:aws:iam::123456789012:role/mlobs-prod-gpu-team-a-train"
    );
    assert_eq!(
        s["Condition"]["StringEquals"]["kms:ViaService"],
        "s3.us-east-1.amazonaws.com"
    );
    assert_eq!(s["Action"], json!(ARCHIVE_KMS_ACTIONS));
    assert!(sid(&key_policy(&test_fixture()), KEY_POLICY_SID).is_none());
}

#[test]
fn the_bucket_comes_after_the_log_groups_and_before_the_role_with_a_tls_only_policy() {
    let e = test_archive();
    let plan = aws_plan::build(&e).expect("plan");
    let a = plan.archive.as_ref().expect("bucket plan");
    assert_eq!(a.arn, format!("arn:aws:s3:::{}", a.name));
    assert_eq!((a.retention_years, a.transition_after_days), (7, 90));
    assert_eq!(a.tags["mlobs.io/pipeline"], "team-a/train");
    let deny = &a.bucket_policy["Statement"][0];
    assert_eq!(
        (deny["Effect"].as_str(), deny["Principal"].as_str()),
        (Some("Deny"), Some("*"))
    );
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    assert_eq!(deny["Resource"], json!([a.arn.clone(), format!("{}/*", a.arn)]));
    // Serialized in apply order (the JSON plan lists fields as declared).
    let text = serde_json::to_string(&plan).unwrap_or_default();
    let at = |k: &str| text.find(&format!("\"{k}\":"));
    assert!(
        at("logGroups").is_some() && at("logGroups") < at("archive") && at("archive") < at("role"),
        "{text}"
    );
    let none = serde_json::to_value(aws_plan::build(&test_fixture()).expect("plan")).unwrap_or_default();
    assert!(
        none.get("archive").is_none(),
        "absent, not null: plans without an archive are unchanged"
    );
    let mut long = test_archive();
    if let Some(x) = long.destinations.archive.as_mut() {
        x.bucket = "a".repeat(64);
    }
    assert!(matches!(
        aws_plan::build(&long),
        Err(aws_plan::PlanError::TooLong { .. })
    ));
}
