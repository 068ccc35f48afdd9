//! The collector's IAM role against moto: create (IRSA and Pod Identity), no-op re-runs, crash
//! safety after every write, adoption, drift under Correct and Report, deletion policies and
//! existing roles.

mod support;

use std::collections::BTreeMap;

use mlobs::aws::iam::{self, TAG_PENDING, decode_policy, normalize};
use mlobs::aws::{AwsClients, AwsError, Drift, Owner};
use mlobs::crd::{DeletionPolicy, DriftPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::{self, RolePlan};
use mlobs::desired::effective::Context;
use mlobs::desired::merge::merge;
use serde_json::{Value, json};
use support::{faults, moto};

const OIDC: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST";
const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/platform-boundary";
const OTHER_BOUNDARY: &str = "arn:aws:iam::123456789012:policy/other-boundary";
/// A trust policy that is not ours (EC2 may assume the role).
const FOREIGN_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

struct Case {
    plan: RolePlan,
    owner: Owner,
    /// The role name (unique per test).
    name: String,
    /// What the pipeline's status would record: the ARN an ensure returned (`status.aws.roleArn`
    /// is written only after a create finished).
    recorded: std::sync::Mutex<Vec<String>>,
}

impl Case {
    fn trust(&self) -> &Value {
        match &self.plan {
            RolePlan::Create { trust_policy, .. } => trust_policy,
            RolePlan::Existing { .. } => panic!("existing role has no planned trust"),
        }
    }
    fn inline(&self) -> &Value {
        match &self.plan {
            RolePlan::Create { inline_policy, .. } => inline_policy,
            RolePlan::Existing { .. } => panic!("existing role has no planned policy"),
        }
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        match &self.plan {
            RolePlan::Create { tags, .. } => tags,
            RolePlan::Existing { .. } => panic!("existing role has no planned tags"),
        }
    }
}

fn irsa() -> Value {
    json!({"mode": "IRSA", "oidcProviderArn": OIDC, "permissionsBoundaryArn": BOUNDARY})
}

fn pod_identity() -> Value {
    json!({"mode": "PodIdentity"})
}

/// A pipeline with a unique name and role name (≤ 64 chars), merged and planned.
fn case(mut identity: Value) -> Case {
    let name = moto::unique("mlobs-it-");
    if identity.get("existingRoleArn").is_none() {
        identity["roleName"] = json!(name);
    }
    let p: MLObservabilityPipeline = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": moto::unique("train"), "namespace": "team-a"},
        "spec": {"clusterName": "prod-gpu", "region": "us-east-1", "identity": identity}
    }))
    .expect("pipeline");
    let e = merge(&p, None, &Context::default()).expect("merge").effective;
    let plan = aws_plan::build(&e).expect("plan").role;
    let owner = Owner {
        cluster: e.cluster_name.clone(),
        pipeline: e.pipeline_id(),
    };
    Case {
        plan,
        owner,
        name,
        recorded: Default::default(),
    }
}

/// An ensure as the controller makes it: with the ARNs status records, recording the returned one.
async fn ensure(c: &AwsClients, k: &Case, adopt: bool, drift: DriftPolicy) -> Result<(String, Vec<Drift>), AwsError> {
    let recorded = k.recorded.lock().map(|r| r.clone()).unwrap_or_default();
    let out = iam::ensure(c, &k.plan, &k.owner, adopt, drift, &recorded).await;
    if let (Ok((arn, _)), Ok(mut r)) = (&out, k.recorded.lock()) {
        *r = vec![arn.clone()];
    }
    out
}

// --- Reading moto state (through separate clients, so the counters under test stay exact). ---

async fn exists(c: &AwsClients, name: &str) -> bool {
    c.iam.get_role().role_name(name).send().await.is_ok()
}

async fn tags(c: &AwsClients, name: &str) -> BTreeMap<String, String> {
    let out = c.iam.get_role().role_name(name).send().await.expect("get role");
    let role = out.role.expect("role");
    role.tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

async fn trust(c: &AwsClients, name: &str) -> Value {
    let out = c.iam.get_role().role_name(name).send().await.expect("get role");
    let raw = out
        .role
        .and_then(|r| r.assume_role_policy_document)
        .expect("trust document");
    decode_policy(&raw).expect("trust is JSON")
}

async fn boundary(c: &AwsClients, name: &str) -> Option<String> {
    let out = c.iam.get_role().role_name(name).send().await.expect("get role");
    out.role
        .and_then(|r| r.permissions_boundary)
        .and_then(|b| b.permissions_boundary_arn)
}

async fn inline(c: &AwsClients, name: &str, policy: &str) -> Option<Value> {
    let out = c
        .iam
        .get_role_policy()
        .role_name(name)
        .policy_name(policy)
        .send()
        .await
        .ok()?;
    Some(decode_policy(out.policy_document()).expect("policy is JSON"))
}

async fn inline_names(c: &AwsClients, name: &str) -> Vec<String> {
    let out = c.iam.list_role_policies().role_name(name).send().await.expect("list");
    out.policy_names().to_vec()
}

/// A role created outside mlobs (no tags), with an inline policy of its own.
async fn foreign_role(c: &AwsClients, name: &str) {
    c.iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(FOREIGN_TRUST)
        .send()
        .await
        .expect("create foreign role");
    put_theirs(c, name).await;
}

async fn put_theirs(c: &AwsClients, name: &str) {
    c.iam
        .put_role_policy()
        .role_name(name)
        .policy_name("theirs")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
        )
        .send()
        .await
        .expect("put foreign policy");
}

/// Asserts the role exists exactly as planned: trust, inline policy, boundary, our tags, no pending marker.
async fn assert_as_planned(c: &AwsClients, k: &Case, want_boundary: Option<&str>) {
    assert_eq!(
        normalize(&trust(c, &k.name).await),
        normalize(k.trust()),
        "trust of {}",
        k.name
    );
    let policy = inline(c, &k.name, "mlobs-collector")
        .await
        .expect("inline policy present");
    assert_eq!(normalize(&policy), normalize(k.inline()));
    assert_eq!(boundary(c, &k.name).await.as_deref(), want_boundary);
    let have = tags(c, &k.name).await;
    for (key, v) in k.tags() {
        assert_eq!(have.get(key), Some(v), "tag {key}");
    }
    assert!(!have.contains_key(TAG_PENDING), "pending marker left on {}", k.name);
}

#[tokio::test]
async fn irsa_role_is_created_with_planned_trust_policy_boundary_and_tags_and_rerun_writes_nothing() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(irsa());
    let (arn, drift) = ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    assert_eq!(arn, k.plan.arn());
    assert_eq!(arn, format!("arn:aws:iam::123456789012:role/{}", k.name));
    assert!(drift.is_empty(), "{drift:?}");
    assert_as_planned(&probe, &k, Some(BOUNDARY)).await;
    let t = trust(&probe, &k.name).await;
    assert_eq!(t["Statement"][0]["Principal"]["Federated"], OIDC);
    assert_eq!(t["Statement"][0]["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(
        t["Statement"][0]["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/TEST:sub"],
        format!(
            "system:serviceaccount:team-a:{}",
            k.owner.pipeline.replace("team-a/", "mlobs-")
        )
    );
    assert_eq!(
        tags(&probe, &k.name).await.get("mlobs.io/pipeline"),
        Some(&k.owner.pipeline)
    );
    eprintln!(
        "IRSA create: {} calls ({} mutating) {:?}",
        c.calls.count(|_| true),
        c.calls.mutating(),
        c.calls.snapshot().keys().map(|k| &k.operation).collect::<Vec<_>>()
    );
    assert_eq!(c.calls.mutating(), 2, "CreateRole, PutRolePolicy");
    assert_eq!(c.calls.of("GetRole"), 1);

    let again = moto::clients().await;
    let (arn2, drift) = ensure(&again, &k, false, DriftPolicy::Correct).await.expect("re-run");
    assert_eq!((arn2, drift), (arn, vec![]));
    eprintln!("IRSA no-op re-run: {} calls", again.calls.count(|_| true));
    assert_eq!(again.calls.mutating(), 0, "{:?}", again.calls.snapshot());
    assert_eq!((again.calls.of("GetRole"), again.calls.of("GetRolePolicy")), (1, 1));
}

#[tokio::test]
async fn pod_identity_role_trusts_eks_pods_without_boundary_and_rerun_writes_nothing() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    let (arn, drift) = ensure(&c, &k, false, DriftPolicy::Report).await.expect("create");
    assert_eq!(arn, k.plan.arn());
    assert!(drift.is_empty());
    assert_as_planned(&probe, &k, None).await;
    let t = trust(&probe, &k.name).await;
    assert_eq!(t["Statement"][0]["Principal"]["Service"], "pods.eks.amazonaws.com");
    assert_eq!(t["Statement"][0]["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
    assert_eq!(c.calls.mutating(), 2);

    let again = moto::clients().await;
    let (_, drift) = ensure(&again, &k, false, DriftPolicy::Report).await.expect("re-run");
    assert!(drift.is_empty());
    assert_eq!(again.calls.mutating(), 0);
}

#[tokio::test]
async fn a_crash_after_any_mutating_call_converges_to_one_complete_role_even_under_report() {
    let probe = moto::clients().await;
    let mut crashes = 0;
    for n in 0.. {
        let k = case(irsa());
        let (c, crash) = faults::crashing_clients(n).await;
        let first = ensure(&c, &k, false, DriftPolicy::Correct).await;
        if !crash.crashed() {
            first.expect("no crash: plain success");
            break;
        }
        crashes += 1;
        assert!(first.is_err(), "crash at write {n} must surface as an error");
        // A restarted operator: fresh clients, nothing remembered. Finishing our own create is not
        // drift, so it happens under Report too and reports nothing.
        let fresh = moto::clients().await;
        let (arn, drift) = ensure(&fresh, &k, false, DriftPolicy::Report)
            .await
            .unwrap_or_else(|e| panic!("recovery after crash at write {n}: {e}"));
        assert_eq!(arn, k.plan.arn());
        assert!(drift.is_empty(), "after crash at write {n}: {drift:?}");
        assert_as_planned(&probe, &k, Some(BOUNDARY)).await;
        assert_eq!(inline_names(&probe, &k.name).await, vec!["mlobs-collector"]);
        let settled = moto::clients().await;
        ensure(&settled, &k, false, DriftPolicy::Report).await.expect("settled");
        assert_eq!(settled.calls.mutating(), 0, "after crash at write {n}");
    }
    assert_eq!(crashes, 2, "a create is two writes, each one a crash point");
}

#[tokio::test]
async fn a_role_an_earlier_version_left_pending_is_finished_and_untagged_even_under_report() {
    // Earlier versions created roles tagged `mlobs.io/pending` and removed the tag once the inline
    // policy was in place. A role still carrying it, without the policy, crashed in between.
    let probe = moto::clients().await;
    let k = case(irsa());
    let mut tags: Vec<aws_sdk_iam::types::Tag> = (k.tags().iter())
        .map(|(key, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(key)
                .value(v)
                .build()
                .expect("tag")
        })
        .collect();
    tags.push(
        aws_sdk_iam::types::Tag::builder()
            .key(TAG_PENDING)
            .value("inline-policy")
            .build()
            .expect("tag"),
    );
    (probe.iam.create_role())
        .role_name(&k.name)
        .assume_role_policy_document(k.trust().to_string())
        .permissions_boundary(BOUNDARY)
        .set_tags(Some(tags))
        .send()
        .await
        .expect("create as an earlier version did");
    // Its status recorded the role (a later version wrote it): the pending tag alone says unfinished.
    k.recorded.lock().expect("lock").push(k.plan.arn().to_string());
    let c = moto::clients().await;
    let (_, drift) = ensure(&c, &k, false, DriftPolicy::Report).await.expect("finish");
    assert!(drift.is_empty(), "{drift:?}");
    assert_eq!(
        (c.calls.of("PutRolePolicy"), c.calls.of("UntagRole")),
        (1, 1),
        "{:?}",
        c.calls.snapshot()
    );
    assert_as_planned(&probe, &k, Some(BOUNDARY)).await;
}

#[tokio::test]
async fn an_untagged_role_with_our_name_is_a_conflict_left_untouched_until_adopted() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    foreign_role(&probe, &k.name).await;

    let err = ensure(&c, &k, false, DriftPolicy::Correct).await.expect_err("conflict");
    assert!(matches!(&err, AwsError::NameConflict { resource } if resource == &format!("iamRole:{}", k.name)));
    assert_eq!(err.reason().as_str(), "NameConflict");
    assert_eq!(c.calls.mutating(), 0);
    assert!(tags(&probe, &k.name).await.is_empty());
    assert_eq!(
        normalize(&trust(&probe, &k.name).await),
        normalize(&serde_json::from_str(FOREIGN_TRUST).unwrap())
    );
    assert_eq!(inline_names(&probe, &k.name).await, vec!["theirs"]);

    let adopter = moto::clients().await;
    let (arn, drift) = ensure(&adopter, &k, true, DriftPolicy::Correct).await.expect("adopt");
    assert_eq!(arn, k.plan.arn());
    let fields: Vec<&str> = drift.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["assumeRolePolicyDocument", "inlinePolicy/mlobs-collector"]);
    assert!(drift.iter().all(|d| d.corrected));
    assert_eq!(drift[1].actual, "<absent>");
    assert_as_planned(&probe, &k, None).await;
    let mut names = inline_names(&probe, &k.name).await;
    names.sort();
    assert_eq!(names, ["mlobs-collector", "theirs"], "a policy that is not ours stays");
    assert_eq!(adopter.calls.of("TagRole"), 1);

    let again = moto::clients().await;
    let (_, drift) = ensure(&again, &k, false, DriftPolicy::Correct)
        .await
        .expect("owned now");
    assert!(drift.is_empty());
    assert_eq!(again.calls.mutating(), 0);
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Trust,
    InlineChanged,
    InlineDeleted,
    BoundaryRemoved,
    BoundaryChanged,
    ClusterTagRemoved,
}

async fn tamper(c: &AwsClients, k: &Case, how: Tamper) -> &'static str {
    let name = k.name.as_str();
    match how {
        Tamper::Trust => {
            c.iam
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(FOREIGN_TRUST)
                .send()
                .await
                .expect("update trust");
            "assumeRolePolicyDocument"
        }
        Tamper::InlineChanged => {
            let mut p = k.inline().clone();
            p["Statement"][0]["Resource"] = json!("arn:aws:logs:us-east-1:123456789012:log-group:*");
            c.iam
                .put_role_policy()
                .role_name(name)
                .policy_name("mlobs-collector")
                .policy_document(p.to_string())
                .send()
                .await
                .expect("put policy");
            "inlinePolicy/mlobs-collector"
        }
        Tamper::InlineDeleted => {
            c.iam
                .delete_role_policy()
                .role_name(name)
                .policy_name("mlobs-collector")
                .send()
                .await
                .expect("delete policy");
            "inlinePolicy/mlobs-collector"
        }
        Tamper::BoundaryRemoved => {
            c.iam
                .delete_role_permissions_boundary()
                .role_name(name)
                .send()
                .await
                .expect("delete boundary");
            "permissionsBoundary"
        }
        Tamper::BoundaryChanged => {
            c.iam
                .put_role_permissions_boundary()
                .role_name(name)
                .permissions_boundary(OTHER_BOUNDARY)
                .send()
                .await
                .expect("put boundary");
            "permissionsBoundary"
        }
        Tamper::ClusterTagRemoved => {
            c.iam
                .untag_role()
                .role_name(name)
                .tag_keys("mlobs.io/cluster")
                .send()
                .await
                .expect("untag");
            "tags/mlobs.io/cluster"
        }
    }
}

const TAMPERS: [Tamper; 6] = [
    Tamper::Trust,
    Tamper::InlineChanged,
    Tamper::InlineDeleted,
    Tamper::BoundaryRemoved,
    Tamper::BoundaryChanged,
    Tamper::ClusterTagRemoved,
];

#[tokio::test]
async fn drift_is_corrected_with_one_write_under_correct() {
    let probe = moto::clients().await;
    for how in TAMPERS {
        let k = case(irsa());
        ensure(&moto::clients().await, &k, false, DriftPolicy::Correct)
            .await
            .expect("create");
        let field = tamper(&probe, &k, how).await;

        let c = moto::clients().await;
        let (_, drift) = ensure(&c, &k, false, DriftPolicy::Correct).await.expect("correct");
        assert_eq!(drift.len(), 1, "{how:?}: {drift:?}");
        assert_eq!(drift[0].resource, format!("iamRole:{}", k.name));
        assert_eq!(drift[0].field, field, "{how:?}");
        assert!(drift[0].corrected);
        assert_ne!(drift[0].desired, drift[0].actual);
        assert_eq!(c.calls.mutating(), 1, "{how:?}: {:?}", c.calls.snapshot());
        assert_as_planned(&probe, &k, Some(BOUNDARY)).await;

        let again = moto::clients().await;
        let (_, drift) = ensure(&again, &k, false, DriftPolicy::Correct).await.expect("settled");
        assert!(drift.is_empty(), "{how:?}: {drift:?}");
        assert_eq!(again.calls.mutating(), 0, "{how:?}");
    }
}

#[tokio::test]
async fn drift_is_only_reported_under_report_and_reported_again_until_fixed() {
    let probe = moto::clients().await;
    for how in TAMPERS {
        let k = case(irsa());
        ensure(&moto::clients().await, &k, false, DriftPolicy::Correct)
            .await
            .expect("create");
        let field = tamper(&probe, &k, how).await;
        let before = (
            trust(&probe, &k.name).await,
            inline(&probe, &k.name, "mlobs-collector").await,
            boundary(&probe, &k.name).await,
            tags(&probe, &k.name).await,
        );
        for pass in 0..2 {
            let c = moto::clients().await;
            let (_, drift) = ensure(&c, &k, false, DriftPolicy::Report).await.expect("report");
            assert_eq!(drift.len(), 1, "{how:?} pass {pass}: {drift:?}");
            assert_eq!(drift[0].field, field);
            assert!(!drift[0].corrected);
            assert_eq!(c.calls.mutating(), 0, "{how:?} pass {pass}: {:?}", c.calls.snapshot());
        }
        let after = (
            trust(&probe, &k.name).await,
            inline(&probe, &k.name, "mlobs-collector").await,
            boundary(&probe, &k.name).await,
            tags(&probe, &k.name).await,
        );
        assert_eq!(before, after, "{how:?}: Report changed the role");
    }
}

#[tokio::test]
async fn reordered_or_reformatted_policies_are_not_drift() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    // Same trust: actions reversed, keys reordered, pretty-printed.
    let mut t = k.trust().clone();
    t["Statement"][0]["Action"] = json!(["sts:TagSession", "sts:AssumeRole"]);
    probe
        .iam
        .update_assume_role_policy()
        .role_name(&k.name)
        .policy_document(serde_json::to_string_pretty(&t).unwrap())
        .send()
        .await
        .expect("update trust");
    // Same policy: one resource order reversed, a single action as a plain string would differ.
    let mut p = k.inline().clone();
    if let Some(r) = p["Statement"][0]["Resource"].as_array_mut() {
        r.reverse();
    }
    probe
        .iam
        .put_role_policy()
        .role_name(&k.name)
        .policy_name("mlobs-collector")
        .policy_document(serde_json::to_string_pretty(&p).unwrap())
        .send()
        .await
        .expect("put policy");
    let again = moto::clients().await;
    let (_, drift) = ensure(&again, &k, false, DriftPolicy::Correct).await.expect("re-run");
    assert!(drift.is_empty(), "{drift:?}");
    assert_eq!(again.calls.mutating(), 0);
}

#[tokio::test]
async fn moto_returns_policy_documents_percent_encoded_and_plus_is_literal() {
    let c = moto::clients().await;
    let name = moto::unique("mlobs-enc-");
    let doc = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:a+b c%d:*"}]}"#;
    c.iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(FOREIGN_TRUST)
        .send()
        .await
        .expect("create");
    c.iam
        .put_role_policy()
        .role_name(&name)
        .policy_name("p")
        .policy_document(doc)
        .send()
        .await
        .expect("put");
    let raw = c
        .iam
        .get_role_policy()
        .role_name(&name)
        .policy_name("p")
        .send()
        .await
        .expect("get")
        .policy_document()
        .to_string();
    assert!(raw.starts_with("%7B%22Version%22"), "percent-encoded: {raw}");
    assert!(raw.contains("a%2Bb%20c%25d"), "`+` is escaped, space is %20: {raw}");
    assert_eq!(decode_policy(&raw), Ok(serde_json::from_str::<Value>(doc).unwrap()));
    let role = c.iam.get_role().role_name(&name).send().await.expect("get role");
    let trust_raw = role.role.and_then(|r| r.assume_role_policy_document).expect("trust");
    assert!(trust_raw.starts_with("%7B"), "{trust_raw}");
    assert_eq!(
        decode_policy(&trust_raw),
        Ok(serde_json::from_str::<Value>(FOREIGN_TRUST).unwrap())
    );
    c.iam
        .delete_role_policy()
        .role_name(&name)
        .policy_name("p")
        .send()
        .await
        .expect("cleanup");
    c.iam.delete_role().role_name(&name).send().await.expect("cleanup");
}

#[tokio::test]
async fn removing_the_pipeline_tag_makes_the_role_foreign() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    probe
        .iam
        .untag_role()
        .role_name(&k.name)
        .tag_keys("mlobs.io/pipeline")
        .send()
        .await
        .expect("untag");
    let again = moto::clients().await;
    let err = ensure(&again, &k, false, DriftPolicy::Correct)
        .await
        .expect_err("not ours any more");
    assert!(matches!(err, AwsError::NameConflict { .. }));
    assert_eq!(again.calls.mutating(), 0);
}

#[tokio::test]
async fn retain_removes_only_our_tags_and_keeps_the_role() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(irsa());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    probe
        .iam
        .tag_role()
        .role_name(&k.name)
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("team")
                .value("a")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("user tag");

    let d = moto::clients().await;
    iam::delete(&d, &k.plan, &k.owner, DeletionPolicy::Retain)
        .await
        .expect("retain");
    assert_eq!(d.calls.mutating(), 1, "one UntagRole");
    assert!(exists(&probe, &k.name).await);
    assert_eq!(
        tags(&probe, &k.name).await,
        BTreeMap::from([("team".into(), "a".into())])
    );
    assert!(
        inline(&probe, &k.name, "mlobs-collector").await.is_some(),
        "retained as is"
    );

    // No longer ours: a second delete (either policy) does nothing.
    let again = moto::clients().await;
    iam::delete(&again, &k.plan, &k.owner, DeletionPolicy::Retain)
        .await
        .expect("again");
    iam::delete(&again, &k.plan, &k.owner, DeletionPolicy::Delete)
        .await
        .expect("again");
    assert_eq!(again.calls.mutating(), 0);
    assert!(exists(&probe, &k.name).await);
}

#[tokio::test]
async fn delete_removes_our_role_and_a_second_delete_is_fine() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(irsa());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    let d = moto::clients().await;
    iam::delete(&d, &k.plan, &k.owner, DeletionPolicy::Delete)
        .await
        .expect("delete");
    assert!(!exists(&probe, &k.name).await);
    assert_eq!((d.calls.of("DeleteRolePolicy"), d.calls.of("DeleteRole")), (1, 1));
    let again = moto::clients().await;
    iam::delete(&again, &k.plan, &k.owner, DeletionPolicy::Delete)
        .await
        .expect("idempotent");
    assert_eq!(again.calls.mutating(), 0);
}

#[tokio::test]
async fn a_role_not_tagged_ours_is_never_deleted() {
    let probe = moto::clients().await;
    let k = case(pod_identity());
    foreign_role(&probe, &k.name).await;
    // Tagged by another pipeline: not ours either.
    let other = case(pod_identity());
    ensure(&probe, &other, false, DriftPolicy::Correct)
        .await
        .expect("other pipeline's role");
    let stolen = Case {
        plan: other.plan.clone(),
        owner: k.owner.clone(),
        name: other.name.clone(),
        recorded: Default::default(),
    };
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Retain] {
        let d = moto::clients().await;
        iam::delete(&d, &k.plan, &k.owner, policy)
            .await
            .expect("not ours: nothing to do");
        iam::delete(&d, &stolen.plan, &stolen.owner, policy)
            .await
            .expect("not ours: nothing to do");
        assert_eq!(d.calls.mutating(), 0, "{policy:?}");
    }
    assert!(exists(&probe, &k.name).await && exists(&probe, &other.name).await);
    assert_eq!(
        tags(&probe, &other.name).await.get("mlobs.io/pipeline"),
        Some(&other.owner.pipeline)
    );
}

#[tokio::test]
async fn delete_keeps_policies_it_did_not_add_and_fails_terminally() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    put_theirs(&probe, &k.name).await;
    let err = iam::delete(&moto::clients().await, &k.plan, &k.owner, DeletionPolicy::Delete)
        .await
        .expect_err("DeleteConflict");
    assert!(
        matches!(&err, AwsError::Terminal { code, message, .. } if code == "DeleteConflict" && message.contains("deletionPolicy: Retain")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(exists(&probe, &k.name).await);
    assert_eq!(inline_names(&probe, &k.name).await, vec!["theirs"]);
}

#[tokio::test]
async fn an_existing_role_is_only_verified_and_never_touched() {
    let probe = moto::clients().await;
    let name = moto::unique("mlobs-byo-");
    foreign_role(&probe, &name).await;
    let arn = format!("arn:aws:iam::123456789012:role/{name}");
    let k = case(json!({"mode": "PodIdentity", "existingRoleArn": arn}));
    assert!(matches!(&k.plan, RolePlan::Existing { .. }));

    let c = moto::clients().await;
    let (got, drift) = ensure(&c, &k, false, DriftPolicy::Correct).await.expect("verified");
    assert_eq!((got.as_str(), drift.len()), (arn.as_str(), 0));
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        iam::delete(&c, &k.plan, &k.owner, policy)
            .await
            .expect("nothing to delete");
    }
    assert_eq!(c.calls.mutating(), 0, "{:?}", c.calls.snapshot());
    assert_eq!(c.calls.of("GetRole"), 1, "delete of an existing role makes no call");
    assert_eq!(inline_names(&probe, &name).await, vec!["theirs"]);
    assert!(tags(&probe, &name).await.is_empty());
}

#[tokio::test]
async fn an_absent_existing_role_is_missing() {
    let arn = format!("arn:aws:iam::123456789012:role/{}", moto::unique("mlobs-none-"));
    let k = case(json!({"mode": "PodIdentity", "existingRoleArn": arn}));
    let c = moto::clients().await;
    let err = ensure(&c, &k, false, DriftPolicy::Correct).await.expect_err("missing");
    assert_eq!(
        err,
        AwsError::Missing {
            resource: format!("iamRole:{arn}")
        }
    );
    assert_eq!(err.reason().as_str(), "AwsResourceMissing");
    assert_eq!(c.calls.mutating(), 0);
}

#[tokio::test]
async fn a_boundary_added_by_someone_else_is_reported_but_never_removed() {
    let (c, probe) = (moto::clients().await, moto::clients().await);
    let k = case(pod_identity());
    ensure(&c, &k, false, DriftPolicy::Correct).await.expect("create");
    probe
        .iam
        .put_role_permissions_boundary()
        .role_name(&k.name)
        .permissions_boundary(OTHER_BOUNDARY)
        .send()
        .await
        .expect("put boundary");
    let again = moto::clients().await;
    let (_, drift) = ensure(&again, &k, false, DriftPolicy::Correct).await.expect("re-run");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (
            drift[0].field.as_str(),
            drift[0].desired.as_str(),
            drift[0].actual.as_str()
        ),
        ("permissionsBoundary", "<absent>", OTHER_BOUNDARY)
    );
    assert!(!drift[0].corrected, "removing a boundary would widen the role");
    assert_eq!(again.calls.mutating(), 0);
    assert_eq!(boundary(&probe, &k.name).await.as_deref(), Some(OTHER_BOUNDARY));
}
