//! What the caches hold per object, counted by a global allocator that tracks the bytes in use: a
//! pipeline as the pipeline cache keeps it (its status packed) against a whole one, a store of
//! `Compact` children against a store of the same slimmed objects kept whole (what the caches
//! held before), the IAM role listing, and a sharded shard 0's `Counted` pipelines against whole
//! ones, and the log group tag index against the tags it kept before.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use mlobs::controller::child_stores::{CompactStore, Split, slim_daemon_set};

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const N: usize = 1000;

/// A collector DaemonSet as the API server returns it for pipeline `i`, slimmed as the cache
/// slims it.
fn collector(i: usize) -> DaemonSet {
    let mut ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("mlobs-collector-train-{i}"), "namespace": format!("team-{}", i % 10),
            "uid": format!("8c1d3f5e-0000-4000-8000-{i:012}"), "generation": 1,
            "resourceVersion": format!("{}", 100_000 + i),
            "labels": {"app.kubernetes.io/managed-by": "mlobs", "app.kubernetes.io/name": "mlobs-collector",
                "app.kubernetes.io/instance": format!("train-{i}"), "mlobs.io/pipeline": format!("train-{i}")},
            "annotations": {"mlobs.io/config-hash": "4f1c2a9be0d37c55", "mlobs.io/desired-hash": "9d0e8a7b6c5d4e3f",
                "deprecated.daemonset.template.generation": "1"},
            "ownerReferences": [{"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
                "name": format!("train-{i}"), "uid": format!("5b2e-{i}"), "controller": true,
                "blockOwnerDeletion": true}]},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": format!("train-{i}"),
                "app.kubernetes.io/name": "mlobs-collector"}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "mlobs-collector"}},
                "spec": {"containers": [{"name": "otelcol", "image": "otel/opentelemetry-collector-contrib:0.139.0"}]}}},
        "status": {"desiredNumberScheduled": 20, "numberReady": 20, "currentNumberScheduled": 20,
            "numberMisscheduled": 0, "observedGeneration": 1, "updatedNumberScheduled": 20, "numberAvailable": 20}
    }))
    .expect("DaemonSet");
    slim_daemon_set(&mut ds);
    ds
}

/// A ConfigMap's metadata as the cache keeps it (mlobs' labels and annotations only).
fn config_map(i: usize) -> PartialObjectMeta<ConfigMap> {
    let ds = collector(i);
    let mut metadata = ds.metadata;
    metadata.uid = None;
    metadata.generation = None;
    if let Some(a) = metadata.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("mlobs.io/"));
    }
    PartialObjectMeta {
        types: None,
        metadata,
        _phantom: Default::default(),
    }
}

/// Bytes in use per object after a store's first listing of `objs`.
fn per_object<K>(objs: &[K]) -> (isize, Store<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let before = counting_alloc::in_use();
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for o in objs {
        writer.apply_watcher_event(&Event::InitApply(o.clone()));
    }
    writer.apply_watcher_event(&Event::InitDone);
    let used = counting_alloc::in_use() - before;
    (used / objs.len() as isize, reader)
}

/// Bytes in use per child after a child cache's first listing of `objs`, applied as the child
/// watch applies it.
fn per_child<C: Split>(objs: &[C]) -> (isize, CompactStore<C>) {
    let before = counting_alloc::in_use();
    let store = CompactStore::default();
    store.apply(&Event::Init);
    for o in objs {
        store.apply(&Event::InitApply(o.clone()));
    }
    store.apply(&Event::InitDone);
    let used = counting_alloc::in_use() - before;
    (used / objs.len() as isize, store)
}

#[test]
fn a_cached_child_takes_under_a_third_of_the_whole_slimmed_object_in_kube_s_store() {
    let _alone = counting_alloc::measuring();
    let daemon_sets: Vec<DaemonSet> = (0..N).map(collector).collect();
    let (whole, whole_store) = per_object(&daemon_sets);
    let (small, small_store) = per_child(&daemon_sets);
    println!("DaemonSet: {whole} bytes whole, {small} cached");
    assert_eq!((whole_store.state().len(), small_store.len()), (N, N));
    assert!(small_store.is_ready());
    // The child caches before (run AS's heaptrack): a `Compact` DaemonSet in kube's store, 2,166
    // bytes of a whole one's 4,854; in mlobs' own store with each label, annotation and metadata
    // string an allocation of its own (run AU), 1,209 (now 977, in 12 fewer allocations).
    assert!(
        small * 3 < whole && small < 1100,
        "a cached DaemonSet takes {small} bytes, the whole slimmed one {whole}"
    );

    let metas: Vec<PartialObjectMeta<ConfigMap>> = (0..N).map(config_map).collect();
    let (whole, _w) = per_object(&metas);
    let (small, _s) = per_child(&metas);
    println!("ConfigMap metadata: {whole} bytes whole, {small} cached");
    // Before: 1,253 of 2,165; with its strings unpacked (run AU), 828 (now 652).
    assert!(
        small * 2 < whole && small < 700,
        "a cached ConfigMap's metadata takes {small} bytes, the whole one {whole}"
    );
}

/// A collector role of pipeline `i` as GetAccountAuthorizationDetails lists it: an IRSA trust
/// policy, mlobs' inline policy on the pipeline's two log groups and key, URL-encoded as IAM
/// returns them, and mlobs' tags.
fn listed_role(i: usize) -> aws_sdk_iam::types::RoleDetail {
    use aws_sdk_iam::types::{PolicyDetail, RoleDetail, Tag};
    let oidc = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Federated": format!("arn:aws:iam::123456789012:oidc-provider/{oidc}")},
        "Action": "sts:AssumeRoleWithWebIdentity", "Condition": {"StringEquals": {
            format!("{oidc}:sub"): format!("system:serviceaccount:team-{}:mlobs-train-{i}", i % 10),
            format!("{oidc}:aud"): "sts.amazonaws.com"}}}]});
    let group = |kind: &str| {
        format!(
            "arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/bench/team-{}/train-{i}/{kind}",
            i % 10
        )
    };
    let inline = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams"],
            "Resource": [group("logs"), format!("{}:*", group("logs")), group("metrics"), format!("{}:*", group("metrics"))]},
        {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "MLObs/GPU"}}}]});
    let enc = |v: &serde_json::Value| {
        v.to_string()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let tag = |k: &str, v: String| Tag::builder().key(k).value(v).build().expect("tag");
    RoleDetail::builder()
        .role_name(format!("mlobs-bench-team-{}-train-{i}", i % 10))
        .arn(format!(
            "arn:aws:iam::123456789012:role/mlobs/mlobs-bench-team-{}-train-{i}",
            i % 10
        ))
        .assume_role_policy_document(enc(&trust))
        .role_policy_list(
            PolicyDetail::builder()
                .policy_name("mlobs-collector")
                .policy_document(enc(&inline))
                .build(),
        )
        .tags(tag("mlobs.io/pipeline", format!("team-{}/train-{i}", i % 10)))
        .tags(tag("mlobs.io/cluster", "bench".into()))
        .tags(tag("mlobs.io/managed-by", "mlobs".into()))
        .tags(tag("team", format!("team-{}", i % 10)))
        .build()
}

#[test]
fn a_listed_role_keeps_less_than_its_two_documents_take_as_text() {
    let _alone = counting_alloc::measuring();
    let details: Vec<_> = (0..N).map(listed_role).collect();
    let documents: usize = details
        .iter()
        .map(|r| {
            r.assume_role_policy_document().map_or(0, str::len)
                + r.role_policy_list()
                    .iter()
                    .map(|p| p.policy_document().map_or(0, str::len))
                    .sum::<usize>()
        })
        .sum::<usize>()
        / N;
    let all = |_: &str| true;
    let before = counting_alloc::in_use();
    let snapshot: mlobs::aws::iam::RoleSnapshot = details
        .iter()
        .filter_map(|r| mlobs::aws::iam::observed_role(r, &all))
        .collect();
    let per_role = (counting_alloc::in_use() - before) / N as isize;
    // What the listing kept before: the documents as text, the tags and inline policies in maps.
    type Map = std::collections::BTreeMap<String, String>;
    let before = counting_alloc::in_use();
    let as_text: std::collections::BTreeMap<String, (String, Option<String>, Map, Map)> = details
        .iter()
        .map(|r| {
            let tags = r.tags().iter().map(|t| (t.key().to_string(), t.value().to_string()));
            let inline = (r.role_policy_list().iter())
                .filter_map(|p| Some((p.policy_name()?.to_string(), p.policy_document()?.to_string())));
            let role = (
                r.arn().unwrap_or_default().to_string(),
                r.assume_role_policy_document().map(str::to_string),
                tags.collect(),
                inline.collect(),
            );
            (r.role_name().unwrap_or_default().to_string(), role)
        })
        .collect();
    let per_role_as_text = (counting_alloc::in_use() - before) / N as isize;
    println!(
        "a listed role: {per_role} bytes in the snapshot, {per_role_as_text} with its documents as text; the two documents alone {documents} bytes"
    );
    assert_eq!((snapshot.len(), as_text.len()), (N, N));
    assert!(
        (per_role as usize) < documents && per_role * 4 < per_role_as_text,
        "a listed role takes {per_role} bytes, {per_role_as_text} as text, its documents {documents}"
    );
}

/// Pipeline `i` as the API server returns it once the operator has written its status (every
/// condition with its message, the AWS resources, the telemetry estimate), with managedFields and
/// kubectl's last-applied annotation already dropped as every pipeline cache drops them.
fn pipeline(i: usize) -> mlobs::crd::MLObservabilityPipeline {
    use mlobs::crd::conditions::pipeline::ALL;
    let ns = format!("team-{}", i % 10);
    let conditions: Vec<_> = ALL
        .iter()
        .map(|t| {
            let status = if *t == "PolicyCompliant" && i.is_multiple_of(7) {
                "False"
            } else {
                "True"
            };
            serde_json::json!({"type": t, "status": status, "reason": "Reconciled", "observedGeneration": 1,
                "lastTransitionTime": "2026-12-06T10:00:00Z",
                "message": format!("{t}: 2/2 GPU nodes of pool {} run a ready collector; nothing to do", i % 10)})
        })
        .collect();
    let arn = |kind: &str| format!("arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/prod/{ns}/train-{i}/{kind}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": format!("train-{i}"), "namespace": ns, "uid": format!("5b2e0000-0000-4000-8000-{i:012}"),
            "generation": 1, "resourceVersion": format!("{}", 200_000 + i), "finalizers": ["mlobs.io/cleanup"],
            "creationTimestamp": "2026-12-06T09:58:00Z", "labels": {"team": ns}},
        "spec": {"clusterName": "prod", "policyRef": ns, "resyncInterval": "10m", "dataFlow": {"gracePeriod": "6h"}},
        "status": {"observedGeneration": 1, "conditions": conditions,
            "aws": {"kmsKeyArn": format!("arn:aws:kms:us-east-1:123456789012:key/0c1d2e3f-0000-4000-8000-{i:012}"),
                "logGroupArns": [arn("logs"), arn("metrics")],
                "roleArn": format!("arn:aws:iam::123456789012:role/mlobs/mlobs-prod-{ns}-train-{i}")},
            "telemetry": {"gpuNodes": 2, "seriesPerNode": 128, "totalSeries": 256, "estimatedMonthlyCostUSD": 76.8}}
    }))
    .expect("pipeline")
}

#[test]
fn shard_0_keeps_each_pipeline_of_the_cluster_in_under_an_eighth_of_a_whole_one() {
    let _alone = counting_alloc::measuring();
    let pipelines: Vec<_> = (0..N).map(pipeline).collect();
    let (whole, whole_store) = per_object(&pipelines);
    let counted: Vec<_> = pipelines.iter().map(mlobs::controller::counted::Counted::of).collect();
    let (small, small_store) = per_object(&counted);
    println!("pipeline: {whole} bytes whole, {small} as shard 0 keeps it for the policy counts");
    assert_eq!((whole_store.state().len(), small_store.state().len()), (N, N));
    assert!(
        small * 8 < whole,
        "a counted-only pipeline takes {small} bytes, the whole one {whole}"
    );
}

/// Pipeline `i` as the pipeline cache reads it in the bench (`make bench`): the bench's spec and
/// the status of a pipeline rolling out (11 conditions, the AWS ids, telemetry, collector and
/// policy), from the real control plane.
fn bench_pipeline(i: usize) -> mlobs::crd::pipeline::MLObservabilityPipeline {
    let ns = format!("bench-{}", i % 10);
    let name = format!("job-{i:05}");
    let cond = |ty: &str, status: &str, reason: &str, message: String| {
        serde_json::json!({"type": ty, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-06T22:29:32Z", "observedGeneration": 1})
    };
    let groups = format!("/aws/eks/e2e/{ns}/{name}");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": name, "namespace": ns, "uid": format!("5b2e0000-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 200_000 + i), "generation": 1,
            "finalizers": ["mlobs.io/cleanup"], "creationTimestamp": "2026-12-06T22:29:30Z"},
        "spec": {"identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/E2E"},
            "deletionPolicy": "Delete", "policyRef": ns, "resyncInterval": "120s", "dataFlow": {"gracePeriod": "6h"}},
        "status": {"observedGeneration": 1,
            "aws": {"kmsKeyArn": format!("arn:aws:kms:us-east-1:123456789012:key/580be4ad-2a48-4ccc-b7d5-{i:012}"),
                "logGroupArns": [format!("arn:aws:logs:us-east-1:123456789012:log-group:{groups}/logs"),
                    format!("arn:aws:logs:us-east-1:123456789012:log-group:{groups}/metrics")],
                "roleArn": format!("arn:aws:iam::123456789012:role/mlobs-e2e-{ns}-{name}"),
                "kmsKeyCheckedAt": "2026-12-06T22:29:32Z"},
            "collector": {"desiredNodes": 2, "readyNodes": 1},
            "telemetry": {"gpuNodes": 2, "seriesPerNode": 160, "totalSeries": 320, "estimatedMonthlyCostUSD": 12.5},
            "policy": {"name": ns},
            "conditions": [
                cond("Ready", "False", "RollingOut", "CollectorReady: 1/2 GPU nodes run a ready collector".into()),
                cond("KmsKeyReady", "True", "Reconciled", format!("arn:aws:kms:us-east-1:123456789012:key/580be4ad-2a48-4ccc-b7d5-{i:012}")),
                cond("LogGroupsReady", "True", "Reconciled", "2 log groups exist with their key, retention and tags".into()),
                cond("IamRoleReady", "True", "Reconciled", format!("arn:aws:iam::123456789012:role/mlobs-e2e-{ns}-{name}")),
                cond("CollectorReady", "False", "RollingOut", "1/2 GPU nodes run a ready collector".into()),
                cond("MetricsSourceReady", "True", "Reconciled", format!("2/2 GPU nodes run a DCGM exporter pod (app.kubernetes.io/name=mlobs-dcgm-exporter,mlobs.io/policy={ns} in namespace default)")),
                cond("PolicyCompliant", "True", "Compliant", format!("complies with GpuTelemetryPolicy {ns}")),
                cond("Drifted", "False", "NoDrift", "AWS and Kubernetes match the spec".into()),
                cond("DataFlowing", "Unknown", "WaitingForData", format!("no log event in {groups}/logs yet; no metric event in {groups}/metrics yet; the collector is still rolling out (CollectorReady is not True)")),
                cond("Reconciling", "True", "RollingOut", "CollectorReady: 1/2 GPU nodes run a ready collector".into()),
                cond("Stalled", "False", "Reconciled", "see the Ready condition (RollingOut)".into())]}
    }))
    .expect("pipeline")
}

#[test]
fn a_cached_pipeline_takes_under_half_of_the_whole_one() {
    let _alone = counting_alloc::measuring();
    let pipelines: Vec<_> = (0..N).map(bench_pipeline).collect();
    let (whole, whole_store) = per_object(&pipelines);
    let cached: Vec<_> = pipelines
        .iter()
        .cloned()
        .map(mlobs::controller::cached::CachedPipeline::pack)
        .collect();
    let (used, store) = per_object(&cached);
    let inline = std::mem::size_of::<mlobs::crd::pipeline::MLObservabilityPipeline>();
    println!("a cached pipeline: {used} bytes with its status packed, {whole} whole ({inline} of them inline)");
    assert_eq!((store.state().len(), whole_store.state().len()), (N, N));
    // Absent sections of the spec and status are boxed: an absent one costs a pointer.
    assert!(inline < 1024, "a pipeline is {inline} bytes before any field is set");
    assert!(
        used * 2 < whole,
        "a cached pipeline takes {used} bytes, a whole one {whole}"
    );
    assert!(used < 2560, "a cached pipeline takes {used} bytes");
    // And it is the same pipeline.
    let back = store
        .state()
        .iter()
        .map(|c| c.unpack())
        .filter(|p| pipelines.contains(p))
        .count();
    assert_eq!(back, N);
}

/// Log group `i` of a bench pipeline as DescribeLogGroups lists it, and the tags its plan wants.
fn log_group(
    i: usize,
) -> (
    mlobs::aws::logs::ObservedGroup,
    std::collections::BTreeMap<String, String>,
) {
    let name = format!("/aws/eks/bench/team-{}/train-{i}/application", i % 10);
    let group = mlobs::aws::logs::ObservedGroup {
        arn: format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}"),
        name,
        kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/8c1d3f5e-0000-4000-8000-000000000001".into()),
        retention_days: Some(30),
        class: Some("STANDARD".into()),
        created_ms: Some(1_780_000_000_000 + i as i64),
    };
    let wanted = [
        ("mlobs.io/cluster", "bench".to_string()),
        ("mlobs.io/pipeline", format!("team-{}/train-{i}", i % 10)),
        ("mlobs.io/uid", format!("5b2e0000-0000-4000-8000-{i:012}")),
        ("mlobs.io/managed-by", "mlobs".to_string()),
        ("team", format!("team-{}", i % 10)),
    ];
    (group, wanted.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

#[test]
fn the_log_group_tag_index_keeps_a_group_in_under_a_quarter_of_its_tags() {
    let _alone = counting_alloc::measuring();
    let groups: Vec<_> = (0..N).map(log_group).collect();
    // What ListTagsForResource returns: the wanted tags and one the team added by hand.
    let read = |wanted: &std::collections::BTreeMap<String, String>| {
        let mut t = wanted.clone();
        t.insert("cost-center".into(), "ml-research".into());
        t
    };
    let reads: Vec<_> = groups.iter().map(|(_, w)| read(w)).collect();

    let index = mlobs::aws::logs::GroupTagIndex::default();
    let before = counting_alloc::in_use();
    for ((g, wanted), tags) in groups.iter().zip(&reads) {
        index.put(g, wanted, tags);
    }
    let per_group = (counting_alloc::in_use() - before) / N as isize;
    // What the index kept before: ARN → (creation time, the tags as read).
    type Tags = std::collections::BTreeMap<String, String>;
    let before = counting_alloc::in_use();
    let whole: std::collections::HashMap<String, (Option<i64>, Tags)> = groups
        .iter()
        .zip(&reads)
        .map(|((g, _), t)| (g.arn.clone(), (g.created_ms, t.clone())))
        .collect();
    let per_group_whole = (counting_alloc::in_use() - before) / N as isize;
    println!("a log group in the tag index: {per_group} bytes; with its tags kept: {per_group_whole}");
    assert_eq!(whole.len(), N);
    assert!(
        groups.iter().all(|(g, w)| index.shows(g, w)),
        "every group shows its wanted tags"
    );
    assert!(
        per_group * 4 < per_group_whole,
        "a group takes {per_group} bytes in the index, {per_group_whole} with its tags"
    );
}
