//! Sharding on the real control plane. e2e/run.sh's last phase restarts the two replicas as
//! `--shard 0/2` and `--shard 1/2` (the chart re-applied with `shards=2`, so their Leases are
//! granted by the chart's Role) and runs `sharded::` alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use mlobs::controller::shard::Shard;
use mlobs::crd::GpuTelemetryPolicy;
use serde_json::json;

use crate::support::*;

const SHARDS: u32 = 2;

/// The replicas by the shard in their command line (`--shard I/M`).
fn replicas_by_shard() -> Result<BTreeMap<u32, Replica>> {
    let mut out = BTreeMap::new();
    for r in replicas()?.into_iter().filter(Replica::alive) {
        let shard: Shard = r
            .args
            .windows(2)
            .find(|w| w[0] == "--shard")
            .map(|w| w[1].parse())
            .transpose()
            .map_err(|e: String| anyhow::anyhow!(e))?
            .with_context(|| format!("replica {} runs without --shard: not the sharded phase", r.identity))?;
        ensure!(shard.count == SHARDS, "replica {} runs {shard}", r.identity);
        out.insert(shard.index, r);
    }
    ensure!(
        out.len() == SHARDS as usize,
        "want one live replica per shard, have {:?}",
        out.keys()
    );
    Ok(out)
}

async fn lease_holder_of(c: &Client, shard: Shard) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(c.clone(), OPERATOR_NAMESPACE)
        .get_opt(&shard.lease_name())
        .await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

/// The replicas (reportingInstance) that published events about the pipeline.
async fn reporters(c: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let mut out: Vec<String> = events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reporting_instance)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[tokio::test]
async fn each_shard_reconciles_only_its_pipelines_and_shard_0_counts_all_for_the_policy() -> Result<()> {
    let c = client().await?;
    let by_shard = replicas_by_shard()?;
    for (i, r) in &by_shard {
        let shard = Shard {
            index: *i,
            count: SHARDS,
        };
        let holder = wait_for(
            &format!("Lease {} held", shard.lease_name()),
            Duration::from_secs(60),
            async || {
                let h = lease_holder_of(&c, shard).await?;
                ensure!(h.as_deref() == Some(r.identity.as_str()), "holder {h:?}");
                Ok(h)
            },
        )
        .await?;
        println!("shard {shard}: Lease {} held by {holder:?}", shard.lease_name());
        let m = r.metrics().await?;
        let info = metric_sum(
            &m,
            "mlobs_shard_info",
            &[("shard", &i.to_string()), ("shards", "2")],
            &[],
        );
        ensure!(info == Some(1.0), "replica {} mlobs_shard_info: {info:?}", r.identity);
    }
    // Two pipelines per shard: names picked by the same hash the replicas use.
    let ns = TestNs::create(&c, "sharded").await?;
    let mut names: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for n in 0.. {
        let name = format!("train-{n}");
        let s = Shard::of(&ns.name, &name, SHARDS);
        let v = names.entry(s).or_default();
        if v.len() < 2 {
            v.push(name);
        }
        if names.values().all(|v| v.len() == 2) && names.len() == SHARDS as usize {
            break;
        }
    }
    // A fifth pipeline, on shard 1, that breaks the policy's minimum retention: shard 0 must see
    // its PolicyCompliant False through the slim cache it keeps of other shards' pipelines.
    let violating = (0..)
        .map(|n| format!("short-{n}"))
        .find(|name| Shard::of(&ns.name, name, SHARDS) == 1)
        .context("a name on shard 1")?;
    let policies = Api::<GpuTelemetryPolicy>::all(c.clone());
    let min_retention = json!({"spec": {"logs": {"minRetentionInDays": 7}}});
    (policies.patch(&ns.name, &PatchParams::default(), &Patch::Merge(min_retention)))
        .await
        .context("policy: logs.minRetentionInDays 7")?;
    for name in names.values().flatten() {
        create_pipeline(&c, &pipeline(&ns.name, name, json!({}))?).await?;
    }
    let short = json!({"logs": {"logGroup": {"retentionInDays": 3}}});
    create_pipeline(&c, &pipeline(&ns.name, &violating, short)?).await?;
    for (shard, list) in &names {
        let me = &by_shard[shard].identity;
        for name in list {
            wait_ready(&c, &ns.name, name).await?;
            let who = reporters(&c, &ns.name, name).await?;
            ensure!(
                who.iter().all(|w| w == me) && !who.is_empty(),
                "{}/{name} (shard {shard}) has events from {who:?}; only {me} may reconcile it",
                ns.name
            );
            println!("{}/{name}: shard {shard}/{SHARDS}, reconciled by {me} only", ns.name);
        }
    }

    // Shard 0 reconciles the policy and counts every pipeline it governs, the other shard's too.
    let counts = wait_for(
        "the policy counting all 5 pipelines, 1 of them non-compliant",
        Duration::from_secs(60),
        async || {
            let p = policies.get(&ns.name).await?;
            let counts = p.status.and_then(|s| s.pipelines).map(|x| (x.total, x.non_compliant));
            ensure!(
                counts == Some((5, 1)),
                "status.pipelines (total, nonCompliant) {counts:?}"
            );
            Ok(counts)
        },
    )
    .await?;
    println!(
        "policy {}: status.pipelines (total, nonCompliant) {counts:?} (written by shard 0; {violating} on shard 1 breaks logs.minRetentionInDays)",
        ns.name
    );

    // Stop shard 1: its pipelines wait (shard 0 does not take them over); restarted, it catches up.
    let one = &by_shard[&1];
    let (target, other) = (&names[&1][0], &names[&0][0]);
    one.signal("TERM")?;
    wait_for("shard 1's replica to exit", Duration::from_secs(30), async || {
        ensure!(!one.alive(), "pid {} alive", one.pid);
        Ok(())
    })
    .await?;
    let api = pipelines(&c, &ns.name);
    let bump = |v: u32| json!({"spec": {"logs": {"logGroup": {"retentionInDays": v}}}});
    let pp = PatchParams::default();
    let g1 = api
        .patch(target, &pp, &Patch::Merge(bump(14)))
        .await?
        .metadata
        .generation;
    let g0 = api
        .patch(other, &pp, &Patch::Merge(bump(14)))
        .await?
        .metadata
        .generation;
    let observed = |name: &str| {
        let api = api.clone();
        let name = name.to_string();
        async move {
            let p = api.get(&name).await?;
            anyhow::Ok(p.status.and_then(|s| s.observed_generation))
        }
    };
    wait_for(
        "shard 0 to reconcile its own changed pipeline",
        READY_TIMEOUT,
        async || {
            let o = observed(other).await?;
            ensure!(o == g0, "observedGeneration {o:?}, generation {g0:?}");
            Ok(())
        },
    )
    .await?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let o = observed(target).await?;
        ensure!(
            o != g1,
            "{target} (shard 1) was reconciled while shard 1 was down: shard 0 took it"
        );
        tokio::time::sleep(POLL).await;
    }
    println!("{target} (shard 1) left alone for 10 s while shard 1 was down");
    let restarted = one.restart()?;
    wait_for(
        "the restarted shard 1 to reconcile its change",
        READY_TIMEOUT,
        async || {
            let o = observed(target).await?;
            ensure!(o == g1, "observedGeneration {o:?}, generation {g1:?}");
            Ok(())
        },
    )
    .await?;
    println!("restarted shard 1 ({}) reconciled {target}", restarted.identity);
    Ok(())
}

/// `mlobs_drift_events_total{result}` of a replica's metrics text (0 when absent).
fn drift_events(metrics: &str, result: &str) -> f64 {
    metric_sum(metrics, "mlobs_drift_events_total", &[("result", result)], &[]).unwrap_or(0.0)
}

/// Each shard reads a drift events queue of its own (`{shard}` in `--drift-events-queue`), and
/// every event reaches every shard's queue (one rule target per shard, as `mlobs plan --shards`
/// prints): the shard of the touched pipeline puts the outside change back at once (its resync
/// is an hour away), the other shard deletes its copy as unmatched instead of passing it on.
#[tokio::test]
async fn each_shard_reads_its_own_drift_events_queue_and_acts_only_on_its_pipelines() -> Result<()> {
    let c = client().await?;
    let by_shard = replicas_by_shard()?;
    let queues = drift_queue_urls()?;
    ensure!(queues.len() == SHARDS as usize, "one queue per shard, have {queues:?}");
    let ns = TestNs::create(&c, "shardevents").await?;
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for n in 0.. {
        let name = format!("ev-{n}");
        names.entry(Shard::of(&ns.name, &name, SHARDS)).or_insert(name);
        if names.len() == SHARDS as usize {
            break;
        }
    }
    for name in names.values() {
        create_pipeline(&c, &pipeline(&ns.name, name, json!({"resyncInterval": "1h"}))?).await?;
    }
    let aws = aws().await?;
    for (shard, name) in &names {
        let p = wait_ready(&c, &ns.name, name).await?;
        let arns = p
            .status
            .and_then(|s| s.aws)
            .map(|a| a.log_group_arns)
            .unwrap_or_default();
        let group = log_group_name(arns.first().context("status.aws.logGroupArns")?)?;
        let desired = log_group(&aws, &group)
            .await?
            .with_context(|| format!("log group {group}"))?
            .retention_in_days();
        let before = [by_shard[&0].metrics().await?, by_shard[&1].metrics().await?];
        (aws.logs
            .put_retention_policy()
            .log_group_name(&group)
            .retention_in_days(1))
        .send()
        .await
        .context("PutRetentionPolicy outside mlobs")?;
        let event = cloudtrail_event(
            "logs",
            "PutRetentionPolicy",
            json!({"logGroupName": group, "retentionInDays": 1}),
        );
        deliver_event(&aws, &queues, &event).await?;
        let t = Instant::now();
        wait_for(
            &format!("{group} put back from its event (resync 1 h away)"),
            Duration::from_secs(90),
            async || {
                let g = log_group(&aws, &group).await?.context("log group")?;
                ensure!(
                    g.retention_in_days() == desired,
                    "retention {:?}, desired {desired:?}",
                    g.retention_in_days()
                );
                Ok(())
            },
        )
        .await?;
        println!(
            "{}/{name} (shard {shard}): retention put back {:.1} s after its event reached both queues",
            ns.name,
            t.elapsed().as_secs_f64()
        );
        wait_for(
            "both copies of the event deleted",
            Duration::from_secs(60),
            async || {
                for q in &queues {
                    let n = queued_messages(&aws, q).await?;
                    ensure!(n == 0, "{n} message(s) left in {q}");
                }
                Ok(())
            },
        )
        .await?;
        let other = (shard + 1) % SHARDS;
        let after = [by_shard[&0].metrics().await?, by_shard[&1].metrics().await?];
        let grown = |i: u32, result: &str| {
            let i = i as usize;
            drift_events(&after[i], result) - drift_events(&before[i], result)
        };
        ensure!(
            grown(*shard, "matched") >= 1.0,
            "shard {shard} matched {} event(s)",
            grown(*shard, "matched")
        );
        ensure!(
            grown(other, "unmatched") >= 1.0 && grown(other, "matched") == 0.0,
            "shard {other}: unmatched {}, matched {}",
            grown(other, "unmatched"),
            grown(other, "matched")
        );
        for i in 0..SHARDS {
            ensure!(
                grown(i, "passed_on") == 0.0,
                "shard {i} passed {} message(s) on: each shard's queue is its own",
                grown(i, "passed_on")
            );
        }
        println!("shard {other} deleted its copy as unmatched; nothing was passed on");
        // The event's reconcile ran in the express lane of the pipeline's shard, not in its queue.
        let express = |i: u32| {
            let i = i as usize;
            let n = |m: &str| metric_sum(m, "mlobs_express_reconciles_total", &[], &[]).unwrap_or(0.0);
            n(&after[i]) - n(&before[i])
        };
        ensure!(
            express(*shard) >= 1.0 && express(other) == 0.0,
            "express reconciles: shard {shard} {}, shard {other} {}",
            express(*shard),
            express(other)
        );
    }
    Ok(())
}
