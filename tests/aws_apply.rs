//! The ordered AWS apply of whole pipelines against moto: order, readiness, no-op re-runs, crash
//! safety across every mutating call, deletion policies, and read cost of a large resync.

mod support;

use mlobs::aws::apply::{ApplyOptions, delete_all, ensure_all};
use mlobs::aws::{AwsClients, logs};
use mlobs::crd::{DeletionPolicy, DriftPolicy};
use mlobs::desired::aws_plan::{self, AwsPlan};
use mlobs::desired::effective::Effective;
use serde_json::json;
use support::{aws_pipeline, faults, moto};

fn effective(cluster: &str, name: &str) -> Effective {
    aws_pipeline::effective(cluster, name, json!({}))
}

/// The first ensure's plan and options, with the key scan on.
fn plan_and_opts(e: &Effective) -> (AwsPlan, ApplyOptions) {
    let (plan, mut opts) = aws_pipeline::plan_and_opts(e, DriftPolicy::Correct);
    opts.scan_for_key = true;
    (plan, opts)
}

/// Resources in moto that carry this pipeline's ownership tag: (keys, aliases, groups, roles).
async fn count_owned(c: &AwsClients, e: &Effective) -> (usize, usize, usize, usize) {
    let pipeline = e.pipeline_id();
    let mut keys = 0;
    let listed = c.kms.list_keys().limit(1000).send().await.expect("list keys");
    for k in listed.keys() {
        let Some(id) = k.key_id() else { continue };
        let tags = c.kms.list_resource_tags().key_id(id).send().await.expect("tags");
        let ours = tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == "mlobs.io/pipeline" && t.tag_value() == pipeline)
            && tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == "mlobs.io/cluster" && t.tag_value() == e.cluster_name);
        let meta = c.kms.describe_key().key_id(id).send().await.expect("describe");
        let pending = meta
            .key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str() == "PendingDeletion");
        if ours && pending != Some(true) {
            keys += 1;
        }
    }
    let alias_prefix = format!("alias/mlobs/{}/", e.cluster_name);
    let aliases = c.kms.list_aliases().limit(100).send().await.expect("aliases");
    let aliases = aliases
        .aliases()
        .iter()
        .filter(|a| a.alias_name().is_some_and(|n| n.starts_with(&alias_prefix)))
        .count();
    let groups = logs::observe_many(c, &format!("/aws/eks/{}/", e.cluster_name))
        .await
        .expect("groups")
        .len();
    let roles = c.iam.list_roles().send().await.expect("roles");
    let roles = roles
        .roles()
        .iter()
        .filter(|r| r.role_name().contains(&e.cluster_name))
        .count();
    (keys, aliases, groups, roles)
}

#[tokio::test]
async fn aws_side_is_created_in_order_and_a_rerun_changes_nothing() {
    let cluster = moto::unique("order");
    let e = effective(&cluster, "train");
    let (plan, opts) = plan_and_opts(&e);
    let c = moto::clients().await;
    let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
    assert!(out.ready(&plan), "{out:?}");
    assert_eq!(out.log_group_arns.len(), 2);
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    // KMS before logs before IAM: the first call of each service comes in that order.
    let first = |op: &str| c.calls.snapshot().keys().position(|k| k.operation == op);
    assert!(first("CreateKey").is_some() && first("CreateLogGroup").is_some() && first("CreateRole").is_some());
    assert_eq!(count_owned(&c, &e).await, (1, 1, 2, 1));

    let again = moto::clients().await;
    let out2 = ensure_all(&again, &plan, &opts).await.expect("re-run");
    assert_eq!(
        again.calls.mutating(),
        0,
        "no-op ensure made mutating calls: {:?}",
        again.calls.snapshot()
    );
    assert_eq!(out2.kms_key_arn, out.kms_key_arn);
    println!(
        "create: {} calls ({} mutating); no-op re-run: {} reads",
        c.calls.count(|_| true),
        c.calls.mutating(),
        again.calls.count(|_| true)
    );
}

#[tokio::test]
async fn a_crash_after_any_mutating_call_converges_without_duplicates() {
    let cluster = moto::unique("crash");
    // How many mutating calls a clean create takes.
    let total = {
        let probe_cluster = moto::unique("probe");
        let pe = effective(&probe_cluster, "train");
        let (pp, po) = plan_and_opts(&pe);
        let c = moto::clients().await;
        ensure_all(&c, &pp, &po).await.expect("probe");
        c.calls.mutating() as i64
    };
    assert!(
        total >= 6,
        "expected at least CreateKey, CreateAlias, rotation, 2 groups, role: {total}"
    );
    for n in 0..total {
        let cl = format!("{cluster}-{n}");
        let e = effective(&cl, "train");
        let (plan, opts) = plan_and_opts(&e);
        let (crashing, crash) = faults::crashing_clients(n).await;
        let first = ensure_all(&crashing, &plan, &opts).await;
        assert!(
            crash.crashed() && first.is_err(),
            "crash point {n} of {total} was not reached"
        );
        // The key id recorded right after CreateKey survives in status; simulate both cases.
        let mut opts = opts.clone();
        if n % 2 == 0 {
            opts.known_key_id = first.err().and_then(|e| e.partial.kms_key_id.clone());
        }
        let fresh = moto::clients().await;
        let out = ensure_all(&fresh, &plan, &opts)
            .await
            .unwrap_or_else(|e| panic!("after crash at {n}: {e}"));
        assert!(out.ready(&plan));
        assert_eq!(
            count_owned(&fresh, &e).await,
            (1, 1, 2, 1),
            "after crash at mutating call {n}"
        );
    }
}

#[tokio::test]
async fn delete_retain_keeps_everything_and_delete_removes_only_ours() {
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        let cluster = moto::unique("del");
        let e = effective(&cluster, "train");
        let (plan, opts) = plan_and_opts(&e);
        let c = moto::clients().await;
        let out = ensure_all(&c, &plan, &opts).await.expect("ensure");
        delete_all(&c, &plan, &opts.owner, out.kms_key_id.as_deref(), policy)
            .await
            .expect("delete");
        delete_all(&c, &plan, &opts.owner, out.kms_key_id.as_deref(), policy)
            .await
            .expect("delete is idempotent");
        let groups = logs::observe_many(&c, &format!("/aws/eks/{cluster}/"))
            .await
            .expect("groups")
            .len();
        match policy {
            DeletionPolicy::Retain => assert_eq!(groups, 2, "Retain keeps the log groups"),
            DeletionPolicy::Delete => assert_eq!(groups, 0, "Delete removes the log groups"),
        }
        // Under both policies no resource carries our ownership tag any more.
        let (keys, _, _, _) = count_owned(&c, &e).await;
        assert_eq!(
            keys, 0,
            "{policy:?}: the key is untagged (Retain) or pending deletion (Delete)"
        );
    }
}

#[tokio::test]
async fn resync_of_many_pipelines_reads_log_groups_fifty_at_a_time() {
    let cluster = moto::unique("scale");
    let c = moto::clients().await;
    let n = 60;
    for i in 0..n {
        let e = effective(&cluster, &format!("p{i:03}"));
        for g in aws_plan::build(&e).expect("plan").log_groups {
            c.logs
                .create_log_group()
                .log_group_name(&g.name)
                .send()
                .await
                .expect("create");
        }
    }
    let reader = moto::clients().await;
    let seen = logs::observe_many(&reader, &format!("/aws/eks/{cluster}/"))
        .await
        .expect("observe");
    assert_eq!(seen.len(), 2 * n);
    let reads = reader.calls.of("DescribeLogGroups");
    let groups = (2 * n) as u64;
    assert!(
        reads <= groups.div_ceil(50),
        "{reads} DescribeLogGroups for {groups} groups"
    );
    println!(
        "resync of {n} pipelines ({groups} log groups): {reads} DescribeLogGroups calls (per-resource baseline: {groups})"
    );
}
