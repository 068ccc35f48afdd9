//! Scenarios that look at the operator as a whole: run alone, after the others (e2e/run.sh runs
//! `cargo test --test e2e serial:: -- --test-threads=1`), so no other test's pipeline writes
//! while they count writes or move the Lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::pipeline::{ready_pipeline_with_collector, ready_pipeline_with_collector_on};
use crate::support::*;

/// `Kind/name` → resourceVersion of the pipeline and every child carrying its label.
async fn resource_versions(c: &Client, ns: &str, name: &str) -> Result<BTreeMap<String, String>> {
    let lp = ListParams::default().labels(&child_selector(ns, name));
    let mut out = BTreeMap::new();
    let p = pipelines(c, ns).get(name).await?;
    out.insert(
        format!("MLObservabilityPipeline/{name}"),
        p.resource_version().unwrap_or_default(),
    );
    macro_rules! add {
        ($kind:ty, $api:expr) => {
            let list = $api.list_metadata(&lp).await?;
            ensure!(
                list.items.len() == 1,
                "{} children: {}",
                stringify!($kind),
                list.items.len()
            );
            for o in list.items {
                out.insert(
                    format!("{}/{}", stringify!($kind), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    add!(DaemonSet, Api::<DaemonSet>::namespaced(c.clone(), ns));
    add!(ConfigMap, Api::<ConfigMap>::namespaced(c.clone(), ns));
    add!(ServiceAccount, Api::<ServiceAccount>::namespaced(c.clone(), ns));
    add!(ClusterRole, Api::<ClusterRole>::all(c.clone()));
    add!(ClusterRoleBinding, Api::<ClusterRoleBinding>::all(c.clone()));
    Ok(out)
}

/// Every pipeline on the cluster but `ns/name`, as `namespace/name`.
async fn other_pipelines(all: &Api<mlobs::crd::MLObservabilityPipeline>, ns: &str, name: &str) -> Result<Vec<String>> {
    Ok(all
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .filter(|p| p != &format!("{ns}/{name}"))
        .collect())
}

/// How long the pipeline must go unwritten before a window is measured.
const QUIET: Duration = Duration::from_secs(20);

/// How long [`settle`] waits for that: a flap restarts a grace period (45 s in these scenarios)
/// and the quiet time after it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits until the cluster around the pipeline holds still: its collector DaemonSet and its
/// policy's Managed exporter DaemonSet fully rolled out and ready (pods a kwok node flap left
/// stuck are restarted), and then the pipeline unwritten for [`QUIET`] and not waiting out a
/// DataFlowing grace period. CI showed a window right after a flap catch the pipeline's status
/// following the restarted pods one by one, and (later) the grace period the flap restarted
/// ending in it.
async fn settle(c: &Client, ns: &str, name: &str) -> Result<()> {
    let collector = Api::<DaemonSet>::namespaced(c.clone(), ns);
    let exporter = Api::<DaemonSet>::namespaced(c.clone(), OPERATOR_NAMESPACE);
    let exporter_name = mlobs::conventions::exporter_object_name(ns);
    let sel = child_selector(ns, name);
    let (collector, exporter, exporter_name, sel) = (&collector, &exporter, &exporter_name, &sel);
    wait_for("DaemonSet statuses settled", READY_TIMEOUT, async || {
        let list = collector.list(&ListParams::default().labels(sel)).await?;
        let mut sets: Vec<DaemonSet> = list.items;
        ensure!(sets.len() == 1, "{} collector DaemonSets", sets.len());
        // The steady-state policy's exporter is Managed; an External one has no DaemonSet here.
        sets.extend(exporter.get_opt(exporter_name).await?);
        for ds in &sets {
            if !daemon_set_settled(ds) {
                restart_pipeline_pods_stuck_by_node_flap(c, ns).await?;
                anyhow::bail!("DaemonSet {} status {:?}", ds.name_any(), ds.status);
            }
        }
        Ok(())
    })
    .await?;
    let api = pipelines(c, ns);
    let start = Instant::now();
    loop {
        let before = api.get(name).await?;
        tokio::time::sleep(QUIET).await;
        let after = api.get(name).await?;
        // A collector ready again after a flap starts a new grace period: DataFlowing waits in
        // WaitingForData and turns False when it ends, a write that is due, not a steady one.
        let waiting = condition(&after, "DataFlowing").is_some_and(|c| c.reason == "WaitingForData");
        if before.resource_version() == after.resource_version() && !waiting {
            return Ok(());
        }
        if waiting {
            let message = condition(&after, "DataFlowing").map(|c| c.message.as_str());
            println!("DataFlowing is WaitingForData, waiting for its grace period to end: {message:?}");
        } else {
            println!(
                "pipeline written while settling: {} → {}",
                conditions_summary(&before),
                conditions_summary(&after)
            );
        }
        ensure!(
            start.elapsed() < SETTLE_TIMEOUT,
            "the pipeline kept changing for {} s",
            start.elapsed().as_secs()
        );
    }
}

/// `field: before → after` for every top-level status field that differs.
fn status_changes(
    a: Option<&mlobs::crd::MLObservabilityPipelineStatus>,
    b: Option<&mlobs::crd::MLObservabilityPipelineStatus>,
) -> Vec<String> {
    let (a, b) = (json!(a), json!(b));
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} → {}",
                a.get(k).unwrap_or(&json!(null)),
                b.get(k).unwrap_or(&json!(null))
            )
        })
        .collect()
}

/// The leader's write and reconcile counters: (writes except Lease renewals, reconciles, the
/// whole exposition).
async fn counters(r: &Replica) -> Result<(f64, f64, String)> {
    let text = r.metrics().await?;
    let lease = [("resource", "leases"), ("kind", "Lease")];
    let writes = require_metric(&text, "mlobs_kube_writes_total", &[], &lease)?;
    let reconciles = require_metric(&text, "mlobs_reconciles_total", &[], &[])?;
    Ok((writes, reconciles, text))
}

#[tokio::test]
async fn steady_state_makes_no_writes() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "steady").await?;
    let ns = ns.name.as_str();
    let name = "steady";
    // No collector really runs here, so DataFlowing turns False once the grace period after
    // CollectorReady is over: a legitimate status write and Event. A short grace period and a
    // wait for that verdict keep it out of the window (with the 5m default, a window re-measured
    // after node flaps met it in CI).
    // One node only (see `pin_policy_to_one_node`).
    let node = pin_policy_to_one_node(&c, ns).await?;
    let gracious = json!({"dataFlow": {"gracePeriod": "45s"}});
    ready_pipeline_with_collector_on(&c, ns, name, gracious, 1).await?;
    let pipes = pipelines(&c, ns);
    let pipes = &pipes;
    wait_for(
        "DataFlowing settled (False: nothing sends)",
        READY_TIMEOUT,
        async || {
            let p = pipes.get(name).await?;
            heal_node_flap(&c, &p).await?;
            ensure!(
                condition_status(&p, "DataFlowing") == "False",
                "not yet: {}",
                conditions_summary(&p)
            );
            // The KMS key's full check runs once after data stopped, at once (not at the next
            // resync slot, which could fall in the window): it rewrites kmsKeyCheckedAt.
            let status = p.status.as_ref().context("status")?;
            let stopped = (status.conditions.iter())
                .find(|c| c.type_ == "DataFlowing")
                .map(|c| c.last_transition_time.0)
                .context("DataFlowing")?;
            let checked = (status.aws.as_ref())
                .and_then(|a| a.kms_key_checked_at.as_ref())
                .map(|t| t.0)
                .context("status.aws.kmsKeyCheckedAt (the pipeline creates a key)")?;
            ensure!(
                checked >= stopped,
                "the key was last checked at {checked}, before data stopped at {stopped}"
            );
            Ok(())
        },
    )
    .await?;
    settle(&c, ns, name).await?;

    // Pipelines of earlier tests are deleted in the background: their cleanup is not ours.
    let all = Api::<mlobs::crd::MLObservabilityPipeline>::all(c.clone());
    let all = &all;
    wait_for("the other tests' pipelines gone", READY_TIMEOUT, async || {
        let others = other_pipelines(all, ns, name).await?;
        ensure!(others.is_empty(), "still there: {others:?}");
        Ok(())
    })
    .await?;
    let leader = leader(&c).await?;
    let window = Duration::from_secs(60);
    // The window counts only when the cluster itself held still. kwok 0.8 on this machine loses
    // node Lease updates to conflicts (kubernetes-sigs/kwok#705): a node goes NotReady and back,
    // and the pipeline rightly reports that (a few status writes and events). Such a window, or
    // one right after it, is measured again; if no window of MAX_ATTEMPTS is clean, each flapped
    // window must still stay within a bounded response per flapped node — a write storm (the
    // 13 writes/s found in [H]) is far above it.
    const MAX_ATTEMPTS: u32 = 5;
    const WRITES_PER_FLAPPED_NODE: f64 = 12.0;
    let mut flapped_windows = vec![];
    for attempt in 1..=MAX_ATTEMPTS {
        let started = k8s_openapi::jiff::Timestamp::now();
        let before = resource_versions(&c, ns, name).await?;
        let status0 = pipes.get(name).await?.status;
        let (writes0, reconciles0, text0) = counters(&leader).await?;
        println!(
            "attempt {attempt}: leader {}: {writes0} writes, {reconciles0} reconciles so far; watching {} objects for {} s",
            leader.identity,
            before.len(),
            window.as_secs()
        );
        tokio::time::sleep(window).await;
        let after = resource_versions(&c, ns, name).await?;
        let now_leader = lease_holder(&c).await?;
        ensure!(
            now_leader.as_deref() == Some(leader.identity.as_str()),
            "the leader changed during the window ({} → {now_leader:?}): counters are not comparable",
            leader.identity
        );
        let (writes1, reconciles1, text1) = counters(&leader).await?;
        // A flap just before the window counts too: the node's return (collector pods ready
        // again, readyNodes back) lands in this window.
        let since = started
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60))
            .unwrap_or(started);
        let flaps = node_flaps_since(&c, since, Some(&node)).await?;
        let writes = writes1 - writes0;
        println!(
            "steady state over {} s: {writes} kube writes, {} reconciles",
            window.as_secs(),
            reconciles1 - reconciles0
        );
        if flaps.is_empty() {
            let changed: Vec<String> = before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: {v} → {:?}", after.get(k)))
                .collect();
            let status1 = pipes.get(name).await?.status;
            ensure!(
                changed.is_empty(),
                "objects written in steady state: {changed:#?}\nstatus fields changed: {:#?}",
                status_changes(status0.as_ref(), status1.as_ref())
            );
            if writes != 0.0 {
                // Other pipelines or policies on a shared cluster are reconciled by the same leader.
                let others = other_pipelines(all, ns, name).await?;
                anyhow::bail!(
                    "the operator made {writes} writes to the API server in a steady state of {} s:\n  {}\n{}",
                    window.as_secs(),
                    metric_growth(&text0, &text1, "mlobs_kube_writes_total").join("\n  "),
                    if others.is_empty() {
                        "no other pipeline exists on the cluster".to_string()
                    } else {
                        format!("other pipelines on the cluster (the leader reconciles them too): {others:?}")
                    }
                );
            }
            println!(
                "reconciles in the window: {:?}",
                metric_growth(&text0, &text1, "mlobs_reconciles_total")
            );
            return Ok(());
        }
        println!(
            "nodes {flaps:?} went NotReady during or just before the window (the cluster was not steady); measuring again once the pipeline is Ready"
        );
        flapped_windows.push((
            flaps.len(),
            writes,
            metric_growth(&text0, &text1, "mlobs_kube_writes_total"),
        ));
        wait_ready(&c, ns, name).await?;
        // Pods restarted after a flap become ready one by one after the pipeline is Ready again
        // (its exporter pods among them); the statuses that follow them are not steady state.
        settle(&c, ns, name).await?;
    }
    for (nodes, writes, growth) in &flapped_windows {
        let bound = WRITES_PER_FLAPPED_NODE * *nodes as f64;
        ensure!(
            *writes <= bound,
            "{writes} writes in a window where {nodes} nodes flapped (bound {bound}): {growth:#?}"
        );
    }
    println!(
        "no clean window in {MAX_ATTEMPTS} (kwok node flaps); every flapped window stayed within {WRITES_PER_FLAPPED_NODE} writes per flapped node: {:?}",
        flapped_windows.iter().map(|(n, w, _)| (n, w)).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn failover_after_sigterm_releases_lease_and_standby_reconciles() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "failover").await?;
    let ns = ns.name.as_str();
    let name = "failover";
    ready_pipeline_with_collector(&c, ns, name, json!({"logs": {"logGroup": {"retentionInDays": 30}}})).await?;

    let (old, standby) = leader_and_standby(&c).await?;
    println!(
        "leader {} (pid {}), standby {} (pid {})",
        old.identity, old.pid, standby.identity, standby.pid
    );

    let t0 = Instant::now();
    old.signal("TERM")?;
    // A spec change while the Lease moves.
    let api = pipelines(&c, ns);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"logs": {"logGroup": {"retentionInDays": 60}}}})),
    )
    .await
    .context("changing retentionInDays during the failover")?;

    let old_ref = &old;
    exited(old_ref).await?;
    println!("old leader exited {:.1} s after SIGTERM", t0.elapsed().as_secs_f64());
    let c_ref = &c;
    let remaining = Duration::from_secs(10).saturating_sub(t0.elapsed());
    let h = wait_for("the Lease released or moved", remaining, async || {
        let h = lease_holder(c_ref).await?;
        ensure!(
            h.as_deref() != Some(old_ref.identity.as_str()),
            "still held by {}",
            old_ref.identity
        );
        Ok(h)
    })
    .await?;
    println!("Lease holder {h:?} {:.1} s after SIGTERM", t0.elapsed().as_secs_f64());
    let standby_ref = &standby;
    wait_for("the standby to take the Lease", Duration::from_secs(30), async || {
        let h = lease_holder(c_ref).await?;
        ensure!(h.as_deref() == Some(standby_ref.identity.as_str()), "holder {h:?}");
        Ok(())
    })
    .await?;
    let failover = t0.elapsed();
    println!(
        "failover: {} holds the Lease {:.1} s after SIGTERM to {}",
        standby.identity,
        failover.as_secs_f64(),
        old.identity
    );

    // Back to two replicas before looking at the result, so a failure below leaves a full pool.
    let restarted = old.restart()?;
    let api = &api;
    let p = wait_for(
        "the spec change reconciled by the new leader",
        READY_TIMEOUT,
        async || {
            let p = api.get(name).await?;
            heal_node_flap(&c, &p).await?;
            ensure!(is_ready(&p), "{}", conditions_summary(&p));
            Ok(p)
        },
    )
    .await?;
    println!(
        "generation {:?} reconciled {:.1} s after SIGTERM",
        p.metadata.generation,
        t0.elapsed().as_secs_f64()
    );
    let aws = aws().await?;
    let arn = p
        .status
        .as_ref()
        .and_then(|s| s.aws.as_ref())
        .and_then(|a| {
            a.log_group_arns
                .iter()
                .find(|a| a.trim_end_matches(":*").ends_with("/logs"))
        })
        .context("the logs group in status.aws.logGroupArns")?;
    let lg = log_group_name(arn)?;
    let g = log_group(&aws, &lg).await?.with_context(|| format!("log group {lg}"))?;
    ensure!(
        g.retention_in_days == Some(60),
        "log group {lg} retention {:?}, expected 60",
        g.retention_in_days
    );

    restarted_serves(&restarted).await?;
    let h = lease_holder(&c).await?;
    ensure!(
        h.as_deref() == Some(standby.identity.as_str()),
        "the restarted replica took the Lease from the new leader: {h:?}"
    );
    Ok(())
}

/// Warning events on a pipeline, as `reason: message`.
async fn warnings(c: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// The default resync interval (`spec.resyncInterval` of a pipeline and its policy unset).
const DEFAULT_RESYNC: Duration = Duration::from_secs(600);

/// How long to wait from `now` for a window of `window` that holds no resync slot of the
/// pipelines `uids` (their default interval), with a margin of 5 s either side for the queue's
/// latency.
fn wait_for_no_slot(now: std::time::SystemTime, uids: &[String], window: Duration) -> Duration {
    use mlobs::controller::resync::until_next_slot;
    let margin = Duration::from_secs(5);
    let mut start = Duration::ZERO;
    // Each step moves the start past one slot; with two pipelines a few steps suffice.
    for _ in 0..8 {
        let hit = uids
            .iter()
            .map(|uid| until_next_slot(now + start, DEFAULT_RESYNC, uid))
            .find(|next| {
                // A slot just behind the start (within the margin) counts as in the window too.
                let behind = DEFAULT_RESYNC.saturating_sub(*next) <= margin;
                *next <= window + margin || behind
            });
        match hit {
            Some(next) if next <= window + margin => start += next + margin,
            Some(_) => start += margin,
            None => break,
        }
    }
    start
}

#[test]
fn the_window_after_wait_for_no_slot_holds_no_slot() {
    use mlobs::controller::resync::until_next_slot;
    let window = Duration::from_secs(30);
    // Every second of a period's first two minutes (where the slots are) and of its middle.
    let period = std::time::UNIX_EPOCH + DEFAULT_RESYNC * 2_950_000;
    for i in (0..120).chain(300..310) {
        let now = period + Duration::from_secs(i);
        let uids = [format!("uid-a-{i}"), format!("uid-b-{i}")];
        let wait = wait_for_no_slot(now, &uids, window);
        let start = now + wait;
        for uid in &uids {
            let next = until_next_slot(start, DEFAULT_RESYNC, uid);
            assert!(
                next > window && DEFAULT_RESYNC - next >= Duration::from_secs(1),
                "{uid}: a slot {next:?} after the window's start {wait:?} from now"
            );
        }
    }
}

#[tokio::test]
async fn bad_input_the_api_server_accepts_gets_a_condition_an_event_and_no_retry_storm() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "bad-input").await?;
    let ns = ns.name.as_str();
    let aws = aws().await?;
    // 1. A policy that does not exist. 2. A log group of the same name that mlobs did not create.
    create_pipeline(&c, &pipeline(ns, "nopolicy", json!({"policyRef": "no-such-policy"}))?).await?;
    let taken = format!("/aws/eks/{CLUSTER_NAME}/{ns}/taken/logs");
    aws.logs.create_log_group().log_group_name(&taken).send().await?;
    create_pipeline(&c, &pipeline(ns, "taken", json!({}))?).await?;

    let api = pipelines(&c, ns);
    let api = &api;
    for (name, reason, field) in [
        ("nopolicy", "PolicyNotFound", "spec.policyRef"),
        ("taken", "NameConflict", taken.as_str()),
    ] {
        let p = wait_for(&format!("{name}: Ready=False {reason}"), READY_TIMEOUT, async || {
            let p = api.get(name).await?;
            let r = condition(&p, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
            ensure!(r == Some(("False".into(), reason.into())), "{}", conditions_summary(&p));
            Ok(p)
        })
        .await?;
        let msg = condition(&p, "Ready").map(|c| c.message.clone()).unwrap_or_default();
        ensure!(msg.contains(field), "{name}: the message names {field}: {msg}");
        ensure!(condition_status(&p, "Stalled") == "True", "{}", conditions_summary(&p));
        wait_for(
            &format!("{name}: a Warning event {reason}"),
            READY_TIMEOUT,
            async || {
                let w = warnings(&c, ns, name).await?;
                ensure!(w.iter().any(|e| e.starts_with(reason)), "events: {w:?}");
                Ok(())
            },
        )
        .await?;
    }

    // No retry storm: a terminal reason waits for a change or the resync, so the reconciler never
    // asks for these pipelines again within the window. The resync is due at each pipeline's slot
    // (`controller::resync`: within the first tenth of every 10-minute period), so the window is
    // one that holds neither slot. The leader logs one line per reconcile with kube-runtime's
    // reason for it (RUST_LOG mlobs=debug).
    let leader = leader(&c).await?;
    let window = Duration::from_secs(30);
    let mut uids = Vec::new();
    for name in ["nopolicy", "taken"] {
        uids.push(api.get(name).await?.uid().context("a pipeline's uid")?);
    }
    let wait = wait_for_no_slot(std::time::SystemTime::now(), &uids, window);
    if !wait.is_zero() {
        println!(
            "a resync slot falls in the next {} s: the window starts {wait:?} later",
            window.as_secs()
        );
        tokio::time::sleep(wait).await;
    }
    let from = std::fs::metadata(&leader.log)?.len();
    tokio::time::sleep(window).await;
    let text = std::fs::read(&leader.log)?;
    let lines = String::from_utf8_lossy(text.get(usize::try_from(from)?..).unwrap_or_default()).into_owned();
    let ours: Vec<String> = lines
        .lines()
        .filter(|l| l.contains(r#""message":"reconcile""#) && l.contains(&format!(".{ns}\"")))
        .filter_map(|l| {
            l.split(r#""object.reason":""#)
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    println!(
        "two stalled pipelines: {} reconciles in {} s: {ours:?}",
        ours.len(),
        window.as_secs()
    );
    let retries: Vec<&String> = ours.iter().filter(|r| r.contains("requested retry")).collect();
    ensure!(
        retries.is_empty(),
        "stalled pipelines were retried within {} s: {ours:?}",
        window.as_secs()
    );

    // Fixing the input heals it without a restart: the policy appears.
    Api::<mlobs::crd::GpuTelemetryPolicy>::all(c.clone())
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
                "metadata": {"name": "no-such-policy", "labels": {NS_LABEL: "true"}}, "spec": {}}))?,
        )
        .await?;
    let healed = wait_ready(&c, ns, "nopolicy").await;
    let _ = Api::<mlobs::crd::GpuTelemetryPolicy>::all(c.clone())
        .delete("no-such-policy", &Default::default())
        .await;
    healed?;
    let _ = aws.logs.delete_log_group().log_group_name(&taken).send().await;
    Ok(())
}

/// The scenario replicas run with `--stream-reads-per-second` at this (e2e/run.sh).
const E2E_STREAM_READS_PER_SECOND: f64 = 2.0;

/// A new leader reconciles every pipeline at once, and each reconcile reads the streams of its
/// quiet log groups (nothing in this process vouches for them yet): the DescribeLogStreams
/// budget puts the reads beyond it off to reserved times instead of sending them together, and
/// every one is still made.
#[tokio::test]
async fn a_new_leader_reads_every_quiet_groups_streams_within_the_stream_budget() -> Result<()> {
    const PIPELINES: usize = 6;
    let c = client().await?;
    let ns = TestNs::create(&c, "stream-budget").await?;
    let ns = ns.name.as_str();
    let names: Vec<String> = (0..PIPELINES).map(|i| format!("quiet-{i}")).collect();
    let c_ref = &c;
    futures::future::try_join_all(
        names
            .iter()
            .map(|n| ready_pipeline_with_collector(c_ref, ns, n, json!({}))),
    )
    .await?;
    let waiting = |p: &mlobs::crd::MLObservabilityPipeline| {
        ensure!(
            condition(p, "DataFlowing").is_some_and(|c| c.reason == "WaitingForData"),
            "{}",
            conditions_summary(p)
        );
        Ok(())
    };
    // Every pipeline has had its first read (its collector is ready and no data comes).
    for n in &names {
        wait_for_pipeline(&c, ns, n, "DataFlowing WaitingForData", READY_TIMEOUT, waiting).await?;
    }
    let (old, standby) = leader_and_standby(&c).await?;
    let reads = |text: &str| {
        metric_sum(
            text,
            "mlobs_aws_calls_total",
            &[("operation", "DescribeLogStreams")],
            &[],
        )
        .unwrap_or(0.0)
    };
    let deferred = |text: &str| metric_sum(text, "mlobs_stream_reads_deferred_total", &[], &[]).unwrap_or(0.0);
    let before = standby.metrics().await?;
    let (reads0, deferred0) = (reads(&before), deferred(&before));
    old.signal("TERM")?;
    // Sampled every 100 ms from the SIGTERM on: the first sample that shows the new leader's
    // stream reads (and how many it shows), and the one that shows all of them.
    let want = (2 * PIPELINES) as f64;
    let t0 = Instant::now();
    let mut first: Option<(Instant, f64)> = None;
    let last = loop {
        let n = reads(&standby.metrics().await?) - reads0;
        if n >= 1.0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= want {
            break Instant::now();
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "the new leader made {n} of {want} stream reads in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Back to two replicas before looking at the result, so a failure below leaves a full pool.
    exited(&old).await?;
    let restarted = old.restart()?;
    let (first, seen) = first.context("no stream read seen")?;
    let put_off = deferred(&standby.metrics().await?) - deferred0;
    let spread = last.duration_since(first).as_secs_f64();
    println!(
        "new leader: {want} stream reads, {seen} at the first look, the rest within {spread:.1} s; {put_off} checks put off"
    );
    let h = lease_holder(&c).await?;
    ensure!(h.as_deref() == Some(standby.identity.as_str()), "Lease holder {h:?}");
    ensure!(put_off >= 1.0, "no read was put off by the budget");
    // The budget grants at most a second's worth at once and `rate` a second after that: the
    // reads after the first look took at least (want - seen - burst) / rate (less the sampling).
    let r = E2E_STREAM_READS_PER_SECOND;
    let floor = (want - seen - r) / r - 0.3;
    ensure!(
        spread >= floor,
        "{} stream reads within {spread:.1} s: over the budget of {r} a second",
        want - seen
    );
    // Every pipeline still reports its finding (none failed or stayed unchecked).
    for n in &names {
        waiting(&pipelines(&c, ns).get(n).await?)?;
    }
    restarted_serves(&restarted).await
}

/// The policy controller rewrites a policy's status whenever one of its counts moves (every
/// pipeline created or turned compliant); no pipeline reads a policy's status, so those writes
/// reconcile none of the policy's pipelines. A change of the policy's spec still reaches them.
#[tokio::test]
async fn policy_status_writes_reconcile_none_of_its_pipelines_and_spec_changes_do() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "policy-status").await?;
    let ns = ns.name.as_str();
    let name = "counted";
    // One node only, as in `steady_state_makes_no_writes`: CI saw kwok flaps of the four nodes
    // restart the DataFlowing grace period for 160 s, so that the pipeline never settled.
    pin_policy_to_one_node(&c, ns).await?;
    let gracious = json!({"dataFlow": {"gracePeriod": "45s"}});
    ready_pipeline_with_collector_on(&c, ns, name, gracious, 1).await?;
    // Alone on the cluster (the pipelines of earlier scenarios gone) and settled, so that the
    // pipeline controller's reconciles in a window are this pipeline's.
    let all = Api::<mlobs::crd::MLObservabilityPipeline>::all(c.clone());
    let all = &all;
    wait_for("the other scenarios' pipelines gone", READY_TIMEOUT, async || {
        let others = other_pipelines(all, ns, name).await?;
        ensure!(others.is_empty(), "{others:?}");
        Ok(())
    })
    .await?;
    settle(&c, ns, name).await?;
    let leader = leader(&c).await?;
    let reconciles = async || -> Result<f64> {
        require_metric(
            &leader.metrics().await?,
            "mlobs_reconciles_total",
            &[("controller", "pipeline")],
            &[],
        )
    };
    let pols = policies(&c);
    let window = Duration::from_secs(10);
    // A window without policy writes, then one with ten status writes (each also makes the
    // policy controller write the status back).
    let quiet0 = reconciles().await?;
    tokio::time::sleep(window).await;
    let quiet = reconciles().await? - quiet0;
    let busy0 = reconciles().await?;
    let started = Instant::now();
    for i in 0..10 {
        pols.patch_status(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"gpuNodes": 100 + i}})),
        )
        .await
        .context("writing the policy's status")?;
        tokio::time::sleep(window / 10).await;
    }
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let busy = reconciles().await? - busy0;
    println!(
        "pipeline reconciles in {} s: {quiet} without policy writes, {busy} with 10 policy status writes",
        window.as_secs()
    );
    // Timed reconciles (DataFlowing's re-checks while nothing sends, the resync slot) land in
    // either window: CI saw 3 in one and 0 in the other. Without the filter each of the ten
    // writes reconciles the pipeline: 10 or more.
    ensure!(
        busy <= quiet + 5.0,
        "{busy} pipeline reconciles while the policy's status was written 10 times ({quiet} without)"
    );
    // A spec change of the policy does reach the pipeline: the retention it now sets (the
    // shortest allowed is also the default of a pipeline that sets none).
    pols.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"logs": {"minRetentionInDays": 400}}})),
    )
    .await
    .context("changing the policy's spec")?;
    let aws = aws().await?;
    let group = format!("/aws/eks/e2e/{ns}/{name}/logs");
    let (aws, group) = (&aws, &group);
    wait_for(
        "the policy's new retention on the log group",
        READY_TIMEOUT,
        async || {
            let g = log_group(aws, group)
                .await?
                .with_context(|| format!("log group {group}"))?;
            ensure!(g.retention_in_days == Some(400), "retention {:?}", g.retention_in_days);
            Ok(())
        },
    )
    .await
}

/// Pins the policy of namespace `ns` (named as it) to one GPU node: kwok's node flaps (a node
/// going NotReady under load, its pods with it) hit a pipeline on one node a quarter as often as
/// one on all four, and a flap of another node changes nothing of this pipeline. Returns the node.
async fn pin_policy_to_one_node(c: &Client, ns: &str) -> Result<String> {
    let node = gpu_nodes(c).await?.into_iter().next().context("a GPU node")?;
    policies(c)
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": node}}})),
        )
        .await
        .context("pinning the policy to one node")?;
    Ok(node)
}

/// Waits for a restarted replica to serve /healthz.
async fn restarted_serves(restarted: &Replica) -> Result<()> {
    wait_for(
        "the restarted replica to serve /healthz",
        Duration::from_secs(60),
        async || {
            ensure!(
                restarted.alive(),
                "restarted replica exited (see {})",
                restarted.log.display()
            );
            http_get(&restarted.metrics_addr, "/healthz").await?;
            Ok(())
        },
    )
    .await
}

/// The replica holding the Lease and a running one that does not.
async fn leader_and_standby(c: &Client) -> Result<(Replica, Replica)> {
    let old = leader(c).await?;
    let standby = replicas()?
        .into_iter()
        .find(|r| r.identity != old.identity && r.alive())
        .context("a running standby replica")?;
    Ok((old, standby))
}

/// Waits for a replica sent SIGTERM to exit.
async fn exited(r: &Replica) -> Result<()> {
    wait_for(
        "the old leader to exit after SIGTERM",
        Duration::from_secs(10),
        async || {
            ensure!(!r.alive(), "pid {} still running", r.pid);
            Ok(())
        },
    )
    .await
}
