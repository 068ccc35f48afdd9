//! The operator's IAM policy grants exactly the AWS operations the AWS layer calls: the call list
//! is read from the source (`src/aws/*.rs`, and the rest of `src/` in case), so a new SDK call without its permission (or a
//! permission left behind by a removed call) fails here, not in a customer's account.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use mlobs::aws::operator_policy::{IMPLIED_ACTIONS, OperatorPolicyOptions, RESOURCE_STAR_ACTIONS, operator_policy};
use serde_json::Value;

/// SDK clients of `AwsClients` and the IAM service prefix of each.
const CLIENTS: [(&str, &str); 12] = [
    ("kms", "kms"),
    ("logs", "logs"),
    ("iam", "iam"),
    ("eks", "eks"),
    ("sts", "sts"),
    ("amp", "aps"),
    ("xray", "xray"),
    ("s3", "s3"),
    ("sqs", "sqs"),
    ("kinesis", "kinesis"),
    ("cloudwatch", "cloudwatch"),
    ("sns", "sns"),
];

/// S3 operations authorized under an IAM action of another name (Service Authorization
/// Reference for Amazon S3); every other operation's action has its own name.
const S3_ACTIONS: [(&str, &str); 10] = [
    ("HeadBucket", "ListBucket"),
    ("GetObjectLockConfiguration", "GetBucketObjectLockConfiguration"),
    ("PutObjectLockConfiguration", "PutBucketObjectLockConfiguration"),
    ("GetBucketEncryption", "GetEncryptionConfiguration"),
    ("PutBucketEncryption", "PutEncryptionConfiguration"),
    ("GetPublicAccessBlock", "GetBucketPublicAccessBlock"),
    ("PutPublicAccessBlock", "PutBucketPublicAccessBlock"),
    ("GetBucketLifecycleConfiguration", "GetLifecycleConfiguration"),
    ("PutBucketLifecycleConfiguration", "PutLifecycleConfiguration"),
    ("DeleteBucketTagging", "PutBucketTagging"),
];

/// The IAM action of an SDK operation.
fn action(prefix: &str, operation: &str) -> String {
    let op = camel(operation);
    let name = match prefix {
        "s3" => S3_ACTIONS
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(op.clone(), |(_, a)| a.to_string()),
        _ => op,
    };
    format!("{prefix}:{name}")
}

/// Operations AWS allows every caller, so no policy names them: `mlobs run` asks STS for its
/// account (controller/run.rs) unless `--account-id` is given.
const NEEDS_NO_PERMISSION: [&str; 1] = ["sts:GetCallerIdentity"];

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `c.kms.create_key()…send()` (chains may break across lines) → `kms:CreateKey`. The AWS layer
/// is src/aws, but all of src/ is read so that a call made from elsewhere is not missed. Only
/// chains that reach `.send()` are operations (`plan.kms.is_none()` is not).
fn called_actions() -> BTreeSet<String> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(
        files
            .iter()
            .filter(|f| f.parent().is_some_and(|d| d.ends_with("src/aws")))
            .count()
            >= 4,
        "src/aws has kms.rs, logs.rs, iam.rs and eks.rs"
    );
    let call = regex::Regex::new(
        r"\.\s*(kms|logs|iam|eks|sts|amp|xray|s3|sqs|kinesis|cloudwatch|sns)\s*\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)",
    )
    .unwrap();
    let mut out = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for c in call.captures_iter(&text) {
            let rest = &text[c.get(0).unwrap().end()..];
            let chain = &rest[..rest.find(';').unwrap_or(rest.len())];
            if !chain.contains(".send()") {
                continue;
            }
            if let Some((_, prefix)) = CLIENTS.iter().find(|(client, _)| *client == &c[1]) {
                out.insert(action(prefix, &c[2]));
            }
        }
    }
    out
}

fn opts() -> OperatorPolicyOptions {
    OperatorPolicyOptions {
        drift_events_queue_arns: vec!["arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events".into()],
        ..OperatorPolicyOptions::new("123456789012", "us-east-1")
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    policy["Statement"].as_array().cloned().unwrap_or_default()
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => vec![],
    }
}

fn policy_actions(policy: &Value) -> BTreeSet<String> {
    statements(policy).iter().flat_map(|s| list(&s["Action"])).collect()
}

#[test]
fn the_call_scan_sees_the_aws_layer() {
    let called = called_actions();
    // Spot checks in each service, including chains split over lines (`c\n.kms\n.create_key()`).
    for a in [
        "kms:CreateKey",
        "kms:ListKeys",
        "logs:PutRetentionPolicy",
        "logs:DescribeLogGroups",
        "iam:PutRolePermissionsBoundary",
        "eks:CreatePodIdentityAssociation",
        "s3:CreateBucket",
        "s3:PutBucketObjectLockConfiguration",
        "s3:ListBucket",
    ] {
        assert!(called.contains(a), "{a} not found in src/aws: {called:?}");
    }
    assert!(called.contains("sts:GetCallerIdentity"), "the scan reads all of src/");
}

#[test]
fn policy_allows_exactly_the_operations_the_aws_layer_calls() {
    let mut called = called_actions();
    called.retain(|a| !NEEDS_NO_PERMISSION.contains(&a.as_str()));
    let granted = policy_actions(&operator_policy(&opts()));
    let implied: BTreeSet<String> = IMPLIED_ACTIONS.iter().map(|s| s.to_string()).collect();
    let missing: Vec<&String> = called.difference(&granted).collect();
    let extra: Vec<&String> = granted.difference(&called).filter(|a| !implied.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "called but not allowed (add to operator_policy.rs): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "allowed but never called (remove from operator_policy.rs): {extra:?}"
    );
    // The documented exceptions are real: PassRole (pod identity) and TagResource (the tags
    // given to CreateBucket) are granted and never called.
    assert_eq!(
        IMPLIED_ACTIONS,
        [
            "cloudwatch:TagResource",
            "iam:PassRole",
            "kms:CreateGrant",
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "s3:TagResource",
            "sns:TagResource"
        ]
    );
    for a in &implied {
        assert!(granted.contains(a) && !called.contains(a), "{a}");
    }
    assert!(
        called.contains("eks:CreatePodIdentityAssociation"),
        "PassRole exists for this call"
    );
    assert!(called.contains("s3:CreateBucket"), "TagResource exists for this call");
    assert!(
        called.contains("aps:CreateWorkspace"),
        "the KMS grants exist for this call"
    );
    assert!(called.contains("cloudwatch:PutMetricAlarm") && called.contains("sns:CreateTopic"));
    // No object action: the operator never reads, writes or deletes archived logs, and no
    // bucket is ever deleted.
    let objects: Vec<&String> = granted
        .iter()
        .filter(|a| {
            a.starts_with("s3:") && (a.contains("Object") && !a.contains("ObjectLock") || a.starts_with("s3:Delete"))
        })
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

#[test]
fn no_wildcard_actions_and_no_not_elements() {
    for s in statements(&operator_policy(&opts())) {
        let obj = s.as_object().unwrap();
        for k in ["NotAction", "NotResource", "NotPrincipal", "Principal"] {
            assert!(!obj.contains_key(k), "{k} in {s}");
        }
        assert_eq!(s["Effect"], "Allow");
        for a in list(&s["Action"]) {
            assert!(!a.contains('*') && !a.contains('?'), "wildcard action {a}");
        }
    }
}

#[test]
fn resource_star_only_for_actions_that_have_no_resource_type() {
    let star: BTreeSet<&str> = RESOURCE_STAR_ACTIONS.into_iter().collect();
    // The Service Authorization Reference lists no resource type for exactly these.
    assert_eq!(
        star,
        BTreeSet::from([
            "aps:CreateWorkspace",
            "aps:ListWorkspaces",
            "cloudwatch:GetMetricData",
            "iam:GetAccountAuthorizationDetails",
            "kms:CreateKey",
            "kms:ListAliases",
            "kms:ListKeys",
            "logs:DescribeLogGroups",
            "xray:GetTraceSegmentDestination"
        ])
    );
    for s in statements(&operator_policy(&opts())) {
        let resources = list(&s["Resource"]);
        assert!(!resources.is_empty(), "{s}");
        let actions = list(&s["Action"]);
        if resources.iter().any(|r| r == "*") {
            assert_eq!(resources, ["*"], "\"*\" is never mixed with ARNs: {s}");
            assert!(
                actions.iter().all(|a| star.contains(a.as_str())),
                "\"*\" for an action that has a resource type: {s}"
            );
        } else {
            assert!(
                actions.iter().all(|a| !star.contains(a.as_str())),
                "an ARN for an action AWS authorizes only on \"*\": {s}"
            );
            for r in &resources {
                // Bucket ARNs name no account: those statements are limited by aws:ResourceAccount
                // (or create the bucket in the caller's account).
                let bucket = r.starts_with("arn:aws:s3:::");
                let account = s["Condition"]["StringEquals"]["aws:ResourceAccount"] == "123456789012"
                    || list(&s["Action"]).contains(&"s3:CreateBucket".to_string());
                assert!(
                    r.starts_with("arn:aws:") && (r.contains(":123456789012:") || bucket && account),
                    "{r} in {s}"
                );
                // The only wildcards are name prefixes or ids that are unknown in advance.
                assert!(r.ends_with('*') || !r.contains('*'), "a wildcard before the end of {r}");
            }
        }
    }
}

#[test]
fn every_regional_statement_is_limited_to_the_region_and_iam_to_nothing_regional() {
    let mut o = opts();
    o.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    for s in statements(&operator_policy(&o)) {
        let global = list(&s["Action"]).iter().all(|a| a.starts_with("iam:"));
        let region = &s["Condition"]["StringEquals"]["aws:RequestedRegion"];
        if global {
            // IAM is global: its requests name the endpoint's region, not the operator's.
            assert!(region.is_null(), "{s}");
            // The one exception: the batched role listing (GetAccountAuthorizationDetails) has
            // no resource type, so "*" and nothing else, in a statement of its own.
            if list(&s["Resource"]) == ["*"] {
                assert_eq!(list(&s["Action"]), ["iam:GetAccountAuthorizationDetails"], "{s}");
                continue;
            }
            for r in list(&s["Resource"]) {
                assert!(r.starts_with("arn:aws:iam::123456789012:role/mlobs-"), "{r}");
            }
        } else {
            assert_eq!(list(region), ["us-east-1", "eu-west-1"], "{s}");
            // Bucket and dashboard ARNs name no region: the condition above limits those statements.
            for r in list(&s["Resource"])
                .iter()
                .filter(|r| *r != "*" && !r.starts_with("arn:aws:s3:::") && !r.starts_with("arn:aws:cloudwatch::"))
            {
                assert!(r.contains(":us-east-1:") || r.contains(":eu-west-1:"), "{r}");
            }
        }
    }
}

fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["Sid"] == sid))
        .unwrap_or_else(|| panic!("no statement {sid}"))
}

#[test]
fn keys_are_created_and_changed_only_with_our_tags() {
    let p = operator_policy(&opts());
    let create = statement(&p, "KmsCreateTaggedKeys");
    assert_eq!(create["Condition"]["Null"]["aws:RequestTag/mlobs.io/pipeline"], "false");
    assert_eq!(
        list(&create["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]),
        ["mlobs.io/cluster", "mlobs.io/pipeline", "mlobs.io/uid"]
    );
    for sid in ["KmsManageOwnKeys", "KmsTagOwnKeys", "KmsAliasOwnKeys"] {
        assert_eq!(
            statement(&p, sid)["Condition"]["Null"]["aws:ResourceTag/mlobs.io/pipeline"],
            "false",
            "{sid}"
        );
    }
    assert_eq!(
        list(&statement(&p, "KmsOwnAliases")["Resource"]),
        ["arn:aws:kms:us-east-1:123456789012:alias/mlobs/*"]
    );
    // Destructive log-group calls need our tag: other groups under /aws/eks/ (EKS control-plane
    // logs) stay out of reach.
    let own = statement(&p, "LogsManageOwnGroups");
    assert!(list(&own["Action"]).contains(&"logs:DeleteLogGroup".to_string()));
    assert_eq!(own["Condition"]["Null"]["aws:ResourceTag/mlobs.io/pipeline"], "false");
    assert_eq!(
        list(&own["Resource"]),
        ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/*"]
    );
}

#[test]
fn a_permissions_boundary_is_required_on_every_role_permission_write() {
    let boundary = "arn:aws:iam::123456789012:policy/mlobs-collector-boundary";
    let mut o = opts();
    o.permissions_boundary_arn = Some(boundary.into());
    o.role_path = "/mlobs/".into();
    o.role_name_prefix = "collector-".into();
    let p = operator_policy(&o);
    for s in statements(&p) {
        let actions = list(&s["Action"]);
        let writes = actions
            .iter()
            .any(|a| ["iam:CreateRole", "iam:PutRolePolicy", "iam:PutRolePermissionsBoundary"].contains(&a.as_str()));
        let cond = &s["Condition"]["ArnEquals"]["iam:PermissionsBoundary"];
        if writes {
            assert_eq!(cond, boundary, "{s}");
        } else {
            assert!(cond.is_null(), "{s}");
        }
        // Except the batched role listing, which has no resource type ("*", read-only).
        if actions.iter().all(|a| a.starts_with("iam:")) && actions != ["iam:GetAccountAuthorizationDetails"] {
            assert_eq!(
                list(&s["Resource"]),
                ["arn:aws:iam::123456789012:role/mlobs/collector-*"]
            );
        }
    }
    let none = operator_policy(&opts());
    assert!(!none.to_string().contains("iam:PermissionsBoundary"));
}

#[test]
fn pod_identity_resources_name_the_cluster_and_pass_role_only_to_eks_pods() {
    let mut o = opts();
    o.cluster_name = Some("prod-gpu".into());
    let p = operator_policy(&o);
    assert_eq!(
        list(&statement(&p, "EksFindAndCreateAssociations")["Resource"]),
        ["arn:aws:eks:us-east-1:123456789012:cluster/prod-gpu"]
    );
    assert_eq!(
        list(&statement(&p, "EksManageAssociations")["Resource"]),
        ["arn:aws:eks:us-east-1:123456789012:podidentityassociation/prod-gpu/*"]
    );
    let pass = statement(&p, "IamPassRolesToPodIdentity");
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"],
        "pods.eks.amazonaws.com"
    );
}

#[test]
fn statement_ids_are_unique_and_alphanumeric() {
    let sids: Vec<String> = statements(&operator_policy(&opts()))
        .iter()
        .map(|s| s["Sid"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = sids.iter().collect();
    assert_eq!(unique.len(), sids.len(), "{sids:?}");
    assert!(sids.iter().all(|s| s.chars().all(|c| c.is_ascii_alphanumeric())));
}

/// `mlobs plan --operator-policy --account-id 123456789012 --region <region> <more>`, with no
/// region or cluster name from the environment.
fn plan_operator_policy(region: &str, more: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args([
            "plan",
            "--operator-policy",
            "--account-id",
            "123456789012",
            "--region",
            region,
        ])
        .args(more)
        .env_remove("AWS_REGION")
        .env_remove("MLOBS_CLUSTER_NAME")
        .output()
        .unwrap()
}

#[test]
fn plan_operator_policy_prints_the_policy_without_a_pipeline_file() {
    let out = plan_operator_policy(
        "us-east-1",
        &[
            "--drift-events-queue-arn",
            "arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, operator_policy(&opts()));

    // --drift-events: the policy, the EventBridge rule and the queue policy in one document.
    let all = plan_operator_policy(
        "us-east-1",
        &[
            "--drift-events-queue-arn",
            "arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events",
            "--drift-events",
        ],
    );
    let doc: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(doc["operatorPolicy"], operator_policy(&opts()));
    assert_eq!(
        doc["eventRule"]["eventPattern"],
        mlobs::aws::drift_events::event_pattern()
    );
    assert_eq!(
        doc["queuePolicy"]["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        "arn:aws:events:us-east-1:123456789012:rule/mlobs-drift-events"
    );
    // One queue per shard (`{shard}`, as `mlobs run --shard I/M` reads it): the policy names
    // each shard's queue, and each gets its own rule (the same pattern: every event reaches every
    // shard) and a queue policy that only its rule may send to.
    let sharded = plan_operator_policy(
        "us-east-1",
        &[
            "--drift-events-queue-arn",
            "arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events-{shard}",
            "--shards",
            "3",
            "--drift-events",
        ],
    );
    assert!(sharded.status.success(), "{}", String::from_utf8_lossy(&sharded.stderr));
    let doc: Value = serde_json::from_slice(&sharded.stdout).unwrap();
    let queues: Vec<String> = (0..3)
        .map(|i| format!("arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events-{i}"))
        .collect();
    let per_shard = OperatorPolicyOptions {
        drift_events_queue_arns: queues.clone(),
        ..OperatorPolicyOptions::new("123456789012", "us-east-1")
    };
    assert_eq!(doc["operatorPolicy"], operator_policy(&per_shard));
    let sqs = statements(&doc["operatorPolicy"])
        .into_iter()
        .find(|s| s["Sid"] == "SqsReadDriftEvents")
        .expect("the SQS statement");
    assert_eq!(list(&sqs["Resource"]), queues);
    let shards = doc["shards"].as_array().expect("one entry per shard");
    assert_eq!(shards.len(), 3);
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(
            (s["shard"].as_u64(), s["queueArn"].as_str()),
            (Some(i as u64), Some(queues[i].as_str()))
        );
        assert_eq!(s["eventRule"]["target"], queues[i]);
        assert_eq!(
            s["eventRule"]["eventPattern"],
            mlobs::aws::drift_events::event_pattern()
        );
        assert_eq!(
            s["queuePolicy"]["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
            format!("arn:aws:events:us-east-1:123456789012:rule/mlobs-drift-events-{i}")
        );
        assert_eq!(s["queuePolicy"]["Statement"][0]["Resource"], queues[i]);
    }
    // A queue outside the operator's regions is refused with the flag's meaning.
    let elsewhere = plan_operator_policy(
        "eu-west-1",
        &[
            "--drift-events-queue-arn",
            "arn:aws:sqs:us-east-1:123456789012:mlobs-drift-events",
        ],
    );
    assert!(!elsewhere.status.success());
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("not one of the operator's regions"));

    // Without --operator-policy, -f is still required; the account is never guessed.
    let no_file = Command::new(env!("CARGO_BIN_EXE_mlobs")).arg("plan").output().unwrap();
    assert_eq!(no_file.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_file.stderr).contains("--file"));
    let no_account = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args(["plan", "--operator-policy", "--region", "us-east-1"])
        .output()
        .unwrap();
    assert_eq!(no_account.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_account.stderr).contains("--account-id"));
    // The policy flags mean nothing without --operator-policy.
    let stray = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args([
            "plan",
            "-f",
            "config/samples/pipeline-minimal.yaml",
            "--role-path",
            "/x/",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(stray.status.code(), Some(2));
}

#[test]
fn log_streams_are_read_only_on_the_pipeline_log_groups_in_the_region() {
    assert!(
        called_actions().contains("logs:DescribeLogStreams"),
        "the DataFlowing read"
    );
    let p = operator_policy(&opts());
    let holders: Vec<Value> = statements(&p)
        .into_iter()
        .filter(|s| list(&s["Action"]).contains(&"logs:DescribeLogStreams".to_string()))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    let s = &holders[0];
    assert_eq!(list(&s["Action"]), ["logs:DescribeLogStreams"], "a read, nothing else");
    // The same resources as the other log-group statements: the prefix, never "*".
    assert_eq!(
        list(&s["Resource"]),
        list(&statement(&p, "LogsReadAndTagGroups")["Resource"])
    );
    assert_eq!(
        list(&s["Resource"]),
        ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/*"]
    );
    assert_eq!(
        s["Condition"]["StringEquals"]["aws:RequestedRegion"],
        serde_json::json!(["us-east-1"])
    );
}

#[test]
fn archive_buckets_are_scoped_to_the_prefix_and_the_account_and_never_deleted() {
    let mut o = opts();
    o.archive_bucket_prefix = "acme-archive-".into();
    let p = operator_policy(&o);
    let s3: Vec<Value> = statements(&p)
        .into_iter()
        .filter(|s| list(&s["Action"]).iter().any(|a| a.starts_with("s3:")))
        .collect();
    assert_eq!(s3.len(), 4, "{s3:?}");
    for s in &s3 {
        assert_eq!(list(&s["Resource"]), ["arn:aws:s3:::acme-archive-*"], "{s}");
        assert!(list(&s["Action"]).iter().all(|a| a.starts_with("s3:")), "{s}");
    }
    // PutBucketPolicy and PutLifecycleConfiguration sit alone (lint-iam.sh allows exactly their
    // RESOURCE_POLICY_PRIVILEGE_ESCALATION finding, by statement).
    assert_eq!(
        list(&statement(&p, "S3ArchivePolicyAndLifecycle")["Action"]),
        ["s3:PutBucketPolicy", "s3:PutLifecycleConfiguration"]
    );
    let mut bad = opts();
    bad.archive_bucket_prefix = "".into();
    assert!(bad.problems().iter().any(|m| m.contains("archive bucket prefix")));
    bad.archive_bucket_prefix = "Mlobs_*".into();
    assert!(bad.problems().len() >= 2, "{:?}", bad.problems());
}

#[test]
fn hot_path_streams_are_scoped_to_the_prefix_and_region() {
    let mut o = opts();
    o.hot_path_stream_prefix = "acme-hot-".into();
    o.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    let p = operator_policy(&o);
    let kinesis: Vec<Value> = statements(&p)
        .into_iter()
        .filter(|s| list(&s["Action"]).iter().any(|a| a.starts_with("kinesis:")))
        .collect();
    assert_eq!(kinesis.len(), 6, "{kinesis:?}");
    for s in &kinesis {
        let resources = list(&s["Resource"]);
        let streams: Vec<&str> = (resources.iter().map(String::as_str))
            .filter(|r| r.contains(":kinesis:"))
            .collect();
        let keys: Vec<&str> = (resources.iter().map(String::as_str))
            .filter(|r| !r.contains(":kinesis:"))
            .collect();
        // Only StartStreamEncryption also names the keys it encrypts with.
        if s["Sid"] == "KinesisEncryptStreams" {
            assert_eq!(
                keys,
                [
                    "arn:aws:kms:us-east-1:123456789012:key/*",
                    "arn:aws:kms:eu-west-1:123456789012:key/*"
                ]
            );
            assert_eq!(list(&s["Action"]), ["kinesis:StartStreamEncryption"]);
        } else {
            assert!(keys.is_empty(), "{s}");
        }
        assert_eq!(
            streams,
            [
                "arn:aws:kinesis:us-east-1:123456789012:stream/acme-hot-*",
                "arn:aws:kinesis:eu-west-1:123456789012:stream/acme-hot-*"
            ],
            "{s}"
        );
        assert!(list(&s["Action"]).iter().all(|a| a.starts_with("kinesis:")), "{s}");
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:RequestedRegion"],
            serde_json::json!(["us-east-1", "eu-west-1"])
        );
    }
    let mut bad = opts();
    bad.hot_path_stream_prefix = "".into();
    assert!(bad.problems().iter().any(|m| m.contains("hot path stream prefix")));
    bad.hot_path_stream_prefix = "mlobs-*".into();
    assert!(bad.problems().iter().any(|m| m.contains("must not contain *")));
}

#[test]
fn alarms_topics_and_dashboards_are_scoped_to_names_mlobs_derives() {
    let p = operator_policy(&opts());
    let alarms = statement(&p, "CloudWatchManageAlarms");
    assert_eq!(
        list(&alarms["Resource"]),
        ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:mlobs/*"]
    );
    let topics = statement(&p, "SnsManageAlertTopics");
    assert_eq!(
        list(&topics["Resource"]),
        ["arn:aws:sns:us-east-1:123456789012:mlobs-*"]
    );
    assert!(list(&topics["Action"]).contains(&"sns:DeleteTopic".to_string()));
    // A topic given by ARN is only read: no write reaches a topic outside the prefix.
    assert_eq!(
        list(&statement(&p, "SnsReadTopics")["Action"]),
        ["sns:GetTopicAttributes"]
    );
    let dash = statement(&p, "CloudWatchManageDashboards");
    assert_eq!(
        list(&dash["Resource"]),
        ["arn:aws:cloudwatch::123456789012:dashboard/mlobs-*"]
    );
}
