//! Steps 3–5 of a pipeline reconcile, the ones that write or read what no watch reports:
//! [`aws`] (the AWS side in dependency order), [`children`] (the child set through the one
//! applier) and [`observe`] (exporter pods, Pod Security admission, data flow).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::super::Ctx;
use super::super::applier::{self, ChildSet};
use super::super::dataflow::{self, DataFlowObs, GroupReading};
use super::super::error::{Error, Result};
use super::super::lookup::{self, key_id_of};
use super::super::resync;
use super::super::shared_reads::{self, PSA_ENFORCE};
use super::super::status::{AwsResult, MetricsSource, Observed};
use super::plan::{World, aws_plan_digest, plan_fingerprint};
use super::{ADOPT_ANNOTATION, owner};
use crate::aws::Drift;
use crate::aws::apply::{ApplyOptions, Batched, StepError, ensure_all};
use crate::crd::MLObservabilityPipeline;
use crate::crd::conditions::{self, pipeline as pty, reason};
use crate::crd::policy::ExporterMode;
use crate::crd::reason::Reason;
use crate::desired::Desired;
use crate::desired::aws_plan::{KmsKeyPlan, RolePlan};

/// Step 3: ensures the AWS side (KMS key, log groups, IAM role, identity association) and records
/// the outcome in `obs`. A failure is recorded and returned: the caller writes status first.
pub async fn aws(p: &MLObservabilityPipeline, ctx: &Ctx, d: &Desired, obs: &mut Observed) -> Result<(), Error> {
    let recorded = p.status.as_ref().and_then(|s| s.aws.clone()).unwrap_or_default();
    let known_key_id = recorded.kms_key_arn.as_deref().and_then(key_id_of);
    let scan_for_key = recorded.kms_key_create_started.is_some();
    if matches!(d.aws.kms, Some(KmsKeyPlan::Create { .. })) && known_key_id.is_none() && !scan_for_key {
        // Recorded before CreateKey: after a crash between CreateKey and the status write, the
        // next reconcile knows to look for the key by its tags instead of creating another.
        let patch = json!({"status": {"aws": {"kmsKeyCreateStarted": super::super::now().0.to_string()}}});
        let api: Api<MLObservabilityPipeline> = Api::namespaced(ctx.client.clone(), &d.effective.namespace);
        let written = api
            .patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        obs.resource_version = written.resource_version();
    }
    let was_ready = Observed::new(p).aws_ready(p);
    let checked_at = std::time::SystemTime::now();
    // A resync (AWS already ready) reads the cluster's log groups from a shared snapshot, taken
    // once per resync period (see `resync`).
    let resync_interval = Duration::from_millis(d.effective.resync_interval_ms);
    let fresh_since = resync::boundary(checked_at, resync_interval);
    let prefix = format!("/aws/eks/{}/", d.effective.cluster_name);
    // A pipeline a drift event named reads its own groups: the event dropped the listing, and
    // taking it again (2N/50 pages) would stand between the event and its correction.
    let event_named = p.uid().is_some_and(|uid| ctx.batched.take_event_named(&uid));
    let snapshot = if was_ready && !event_named && d.aws.log_groups.iter().all(|g| g.name.starts_with(&prefix)) {
        // While drift events are read, the listing is their backstop (see `batched`).
        let listed_since = ctx.batched.log_groups_fresh_since(checked_at, resync_interval);
        ctx.log_group_snapshot(&prefix, listed_since).await
    } else {
        None
    };
    let batched = if was_ready {
        batched_reads(p, ctx, d, checked_at, fresh_since).await
    } else {
        Batched::default()
    };
    let opts = ApplyOptions {
        owner: owner(d),
        adopt: d.effective.adopt || p.annotations().get(ADOPT_ANNOTATION).is_some_and(|v| v == "true"),
        drift: d.effective.drift_policy,
        known_key_id,
        scan_for_key,
        log_group_snapshot: snapshot,
        batched,
        alarms_recorded: recorded.alarm_count.is_some(),
        dashboard_recorded: recorded.dashboard_name.clone(),
        recorded_roles: [&recorded.role_arn, &recorded.hot_path_role_arn]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    };
    let mut out = match ensure_all(&ctx.aws, &d.aws, &opts).await {
        Ok(out) => out,
        Err(e) => return Err(aws_failed(p, ctx, obs, e).await),
    };
    if let Some(h) = super::super::hot_path::retired(p, d) {
        // Turned off: the stream and Fluent Bit's role go per deletionPolicy, as at deletion.
        let policy = d.effective.deletion_policy;
        if let Err(error) = crate::aws::hot_path::delete(&ctx.aws, &h, &opts.owner, policy).await {
            let e = StepError {
                step: crate::aws::apply::Step::HotPath,
                error,
                partial: Box::new(out),
            };
            return Err(aws_failed(p, ctx, obs, e).await);
        }
    }
    if out.drift.iter().any(|x| x.corrected) || !was_ready {
        ctx.invalidate_log_groups().await;
        // A role or alias mlobs just created or put back: the snapshots predate it.
        ctx.batched.invalidate().await;
    }
    if !opts.batched.skip_slow_checks
        && let Some(uid) = p.uid()
    {
        ctx.batched.slow_checks_ran(&uid, checked_at);
    }
    // When the AWS plan itself changed since this process last ensured it (a spec edit, a
    // workspace id now known), the differences are that change, applied as an update: not drift.
    // A forced reconcile or a drift policy switch leaves the plan as it was: differences are drift.
    let plan_changed = ctx.aws_memory(p).is_some_and(|(fp, _)| fp.aws != aws_plan_digest(d));
    if plan_changed {
        for x in out.drift.iter().filter(|x| x.corrected) {
            let note = format!("{} {}: updated to the changed plan", x.resource, x.field);
            ctx.event(p, EventType::Normal, Reason::Updated, "EnsureAws", note)
                .await;
        }
        out.drift.retain(|x| !x.corrected);
    }
    let ready = out.ready(&d.aws);
    let corrected = out.drift.iter().filter(|x| x.corrected).count() as u64;
    ctx.metrics.drift("aws", "found", out.drift.len() as u64);
    ctx.metrics.drift("aws", "corrected", corrected);
    for x in &out.drift {
        drift_event(ctx, p, x).await;
    }
    obs.aws = Some(AwsResult::Ok {
        out: Box::new(out),
        ready,
    });
    obs.destinations = Some(super::super::destinations::observe(&ctx.aws, &d.effective).await);
    if ready {
        ctx.mark_aws_synced(p, plan_fingerprint(p, d));
    }
    Ok(())
}

/// What a resync reads once for all pipelines (the account's aliases, mlobs's roles), and
/// whether this pipeline's slower checks are due (see `controller::batched`): when it is new to
/// this process, when a drift event named it, when its interval passed, or once after its data
/// stopped flowing (a disabled key or a key policy that lost the logs statement stops delivery:
/// check it then, not in a day).
async fn batched_reads(
    p: &MLObservabilityPipeline,
    ctx: &Ctx,
    d: &Desired,
    now: std::time::SystemTime,
    fresh_since: std::time::SystemTime,
) -> Batched {
    let created_key = matches!(d.aws.kms, Some(KmsKeyPlan::Create { .. }));
    let created_role = matches!(d.aws.role, RolePlan::Create { .. }) || d.aws.hot_path.is_some();
    let skip_slow_checks = p
        .uid()
        .is_some_and(|uid| !ctx.batched.slow_checks_due(&uid, now, data_stopped_at(p)));
    Batched {
        kms_aliases: if created_key && skip_slow_checks {
            ctx.batched.aliases(&ctx.aws, fresh_since).await
        } else {
            None
        },
        iam_roles: if created_role {
            ctx.batched.roles(&ctx.aws, fresh_since, ctx.shard).await
        } else {
            None
        },
        skip_slow_checks,
    }
}

/// Since when the pipeline's `DataFlowing` is `False`, if it is.
pub(super) fn data_stopped_at(p: &MLObservabilityPipeline) -> Option<std::time::SystemTime> {
    (p.status.as_ref())
        .and_then(|s| conditions::find(&s.conditions, pty::DATA_FLOWING))
        .filter(|c| c.status == conditions::status::FALSE)
        .map(|c| std::time::SystemTime::from(c.last_transition_time.0))
}

async fn aws_failed(p: &MLObservabilityPipeline, ctx: &Ctx, obs: &mut Observed, e: StepError) -> Error {
    ctx.event(p, EventType::Warning, e.error.reason(), "EnsureAws", e.to_string())
        .await;
    obs.aws = Some(AwsResult::Failed(Box::new(e.clone())));
    Error::Aws(e)
}

async fn drift_event(ctx: &Ctx, p: &MLObservabilityPipeline, x: &Drift) {
    let (r, verb) = if x.corrected {
        (Reason::DriftCorrected, "corrected")
    } else {
        (Reason::DriftDetected, "found (driftPolicy Report)")
    };
    let note = format!(
        "{} {}: {verb}; desired {}, actual {}",
        x.resource, x.field, x.desired, x.actual
    );
    ctx.event(p, EventType::Warning, r, "ObserveAws", note).await;
}

/// Step 4: applies the child set (ServiceAccount, RBAC, ConfigMap, the DaemonSet last) and prunes
/// what is no longer in it; returns the live DaemonSet.
pub async fn children(p: &MLObservabilityPipeline, ctx: &Ctx, set: ChildSet, obs: &mut Observed) -> Result<DaemonSet> {
    let report = applier::apply(&ctx.client, &ctx.applied, &ctx.child_stores, set).await?;
    obs.k8s_drift.extend(ctx.report_applied(p, &report).await);
    report.daemon_set.ok_or(Error::MissingField("the collector DaemonSet"))
}

/// Step 5: what no watch reports — whether Pod Security admission rejects the collector's pods,
/// the DCGM exporter pods the collectors scrape, and (when due) whether data reaches CloudWatch.
pub async fn observe(
    p: &MLObservabilityPipeline,
    ctx: &Ctx,
    d: &Desired,
    world: &World,
    ds: &DaemonSet,
    obs: &mut Observed,
    aws_step_ran: bool,
) -> Result<()> {
    obs.collector(ds);
    if let Some(ns) = &world.collector_namespace {
        obs.collector_blocked = collector_forbidden(ctx, ns, ds)
            .await?
            .map(|m| (reason::POD_SECURITY_FORBIDDEN, m));
    }
    if obs.collector_blocked.is_none()
        && let Some(m) = collector_unschedulable(ctx, ds).await?
    {
        let was = (p.status.as_ref())
            .and_then(|s| conditions::find(&s.conditions, pty::COLLECTOR_READY))
            .is_some_and(|c| c.reason == reason::COLLECTOR_UNSCHEDULABLE);
        if !was {
            ctx.event(
                p,
                EventType::Warning,
                Reason::CollectorUnschedulable,
                "ObserveCollector",
                m.clone(),
            )
            .await;
        }
        obs.collector_blocked = Some((reason::COLLECTOR_UNSCHEDULABLE, m));
    }
    obs.metrics_source = Some(metrics_source(ctx, d, world).await?);
    check_data_flow(p, ctx, d, obs, aws_step_ran).await;
    Ok(())
}

/// The DCGM exporter pods the collectors will scrape: running pods matching the exporter's
/// selector, on the pipeline's GPU nodes. A Managed exporter's from the watch of its pods
/// (`shared_reads::watch_managed_exporter_pods`); an External one's from one listing shared by
/// the pipelines scraping it (`shared_reads::ExporterPods`).
async fn metrics_source(ctx: &Ctx, d: &Desired, world: &World) -> Result<MetricsSource> {
    let x = &d.effective.exporter;
    let selector = crate::conventions::selector_string(&x.pod_selector);
    let version = match &world.gov {
        lookup::Governing::One(policy) => policy.resource_version().unwrap_or_default(),
        _ => String::new(),
    };
    let cached = (x.mode == ExporterMode::Managed)
        .then(|| shared_reads::cached_pods(&ctx.managed_exporter_pods, &x.namespace, &x.pod_selector))
        .flatten();
    let running = match cached {
        Some(pods) => Arc::new(shared_reads::running_nodes(&pods)),
        None => {
            (ctx.exporter_pods)
                .running_on(&ctx.client, &x.namespace, &selector, &version)
                .await?
        }
    };
    let on_gpu_nodes = (world.nodes.iter())
        .filter_map(|n| n.metadata.name.as_ref())
        .filter(|n| running.contains(*n))
        .count();
    Ok(MetricsSource {
        namespace: x.namespace.clone(),
        selector,
        nodes_with_exporter: on_gpu_nodes,
    })
}

/// Reads when each log group last received an event, when a read is due (`dataflow::read_due`:
/// at the AWS step, or a re-check while data is not flowing). A failed read becomes
/// `DataFlowing=Unknown` (`DataCheckFailed`), never a failed reconcile: the next look is the
/// scheduled re-check, not a hot retry.
async fn check_data_flow(p: &MLObservabilityPipeline, ctx: &Ctx, d: &Desired, obs: &mut Observed, aws_step_ran: bool) {
    let Some(uid) = p.uid() else { return };
    let groups = dataflow::groups(&d.effective);
    let interval_ms = d.effective.resync_interval_ms;
    ctx.batched.flow_groups(&uid, interval_ms, &groups);
    if groups.is_empty() {
        return;
    }
    let prev = p
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, pty::DATA_FLOWING));
    let recheck = ctx.recheck(&uid);
    let serving = obs.serving();
    let was_ready = (p.status.as_ref())
        .and_then(|s| conditions::find(&s.conditions, pty::COLLECTOR_READY))
        .is_some_and(|c| c.status == conditions::status::TRUE);
    let became_ready = !was_ready && obs.collector_all_ready();
    let Some(read) = dataflow::read_due(aws_step_ran, &serving, prev, recheck.as_ref(), Instant::now()) else {
        if dataflow::restates(became_ready, &serving, prev) {
            let status = p.status.as_ref();
            let readings = (groups.into_iter())
                .map(|(signal, group)| GroupReading {
                    newest_ms: dataflow::recorded_ms(status, signal),
                    signal,
                    group,
                })
                .collect();
            obs.data_flow = Some(DataFlowObs {
                read: dataflow::Read::Restated,
                grace_ms: d.effective.data_flow_grace_ms,
                result: Ok(readings),
            });
            return;
        }
        tracing::debug!(
            ?serving,
            condition = prev.map(|c| c.reason.as_str()),
            next_read_in = ?recheck.map(|r| dataflow::next_read_in(&r, Instant::now())),
            "data-flow read not due"
        );
        return;
    };
    tracing::debug!(?read, "data-flow read");
    // Groups flowing within the grace period come from the metric listing shared by all
    // pipelines: a resync takes this period's (reading it if nobody has yet), a re-check only one
    // already taken. Other groups (quiet, new to the listing, or no listing) read their streams:
    // their age is what the condition reports. At a resync, a quiet group whose streams this
    // process read before keeps that reading while the listing shows no event since (once a
    // listing has shown the group at all); a re-check (data not flowing yet) always reads them.
    let period = Duration::from_millis(interval_ms);
    let fresh_since = resync::boundary(std::time::SystemTime::now(), period);
    let minutes = (ctx.batched)
        .newest_minutes(&ctx.aws, interval_ms, fresh_since, read == dataflow::Read::Resync)
        .await;
    let now_ms = super::super::now().0.as_millisecond();
    let grace_ms = i64::try_from(d.effective.data_flow_grace_ms).unwrap_or(i64::MAX);
    // What the listing tells of each group; `None`: its streams are read.
    let mut known = Vec::with_capacity(groups.len());
    for (signal, group) in groups {
        let recorded = dataflow::recorded_ms(p.status.as_ref(), signal);
        let shown = minutes.as_ref().and_then(|m| m.newest.get(&group));
        let flowing = shown
            .filter(|t| now_ms.saturating_sub(**t) <= grace_ms)
            // A minute's start can be older than an exact time read before: keep the later.
            .map(|t| (*t).max(recorded.unwrap_or(0)));
        let unchanged = (minutes.as_ref())
            .filter(|_| read == dataflow::Read::Resync && flowing.is_none())
            .and_then(|listing| ctx.batched.unchanged_since_read(&group, listing));
        let newest = match (flowing, unchanged) {
            (Some(t), _) => Some(Some(t)),
            (None, Some(known)) => Some(known.max(recorded)),
            (None, None) => None,
        };
        known.push((signal, group, newest));
    }
    // DescribeLogStreams has a low account quota: the reads go within the process's budget, or
    // at the time it reserves for them.
    let stream_reads = known.iter().filter(|(_, _, n)| n.is_none()).count();
    if stream_reads > 0
        && let Err(wait) =
            (ctx.stream_reads).take(&uid, u32::try_from(stream_reads).unwrap_or(u32::MAX), Instant::now())
    {
        tracing::debug!(
            ?wait,
            stream_reads,
            "data-flow read put off (DescribeLogStreams budget)"
        );
        ctx.metrics.stream_read_deferred();
        // What is known without the read (the listing's findings; no event for the others),
        // passed on only when no group has an event recorded in status (see `Read::Deferred`).
        let never_recorded =
            (known.iter()).all(|(signal, _, _)| dataflow::recorded_ms(p.status.as_ref(), *signal).is_none());
        let readings = (known.into_iter().filter(|_| never_recorded))
            .map(|(signal, group, newest)| GroupReading {
                newest_ms: newest.flatten(),
                signal,
                group,
            })
            .collect();
        obs.data_flow = Some(DataFlowObs {
            read: dataflow::Read::Deferred(wait),
            grace_ms: d.effective.data_flow_grace_ms,
            result: Ok(readings),
        });
        return;
    }
    let mut readings = Vec::with_capacity(known.len());
    let mut failed = None;
    for (signal, group, newest) in known {
        let newest = match newest {
            Some(n) => Ok(n),
            None => {
                let read_at = super::super::now().0.as_millisecond();
                let r = crate::aws::logs::newest_event_ms(&ctx.aws, &group).await;
                if let Ok(newest) = &r {
                    ctx.batched.streams_read(&group, read_at, *newest);
                }
                r
            }
        };
        match newest {
            Ok(newest_ms) => readings.push(GroupReading {
                signal,
                group,
                newest_ms,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "data-flow check failed");
                failed = Some(e.to_string());
                break;
            }
        }
    }
    obs.data_flow = Some(DataFlowObs {
        read,
        grace_ms: d.effective.data_flow_grace_ms,
        result: failed.map_or(Ok(readings), Err),
    });
}

/// Why collector pods wait, when the scheduler cannot place them: looked at only while the
/// DaemonSet has fewer ready pods than GPU nodes. The pods come from the watch of waiting pods
/// (`shared_reads::watch_waiting_pods`, which also reconciles the pipeline when the scheduler
/// marks one of its pods unschedulable); before that watch has listed once, from a LIST. The
/// message names the pods and quotes the scheduler (e.g. `0/4 nodes are available: 1 Too many
/// pods`).
async fn collector_unschedulable(ctx: &Ctx, ds: &DaemonSet) -> Result<Option<String>> {
    let s = ds.status.clone().unwrap_or_default();
    if s.number_ready >= s.desired_number_scheduled {
        return Ok(None);
    }
    let labels = (ds.spec.as_ref())
        .and_then(|x| x.selector.match_labels.clone())
        .unwrap_or_default();
    if labels.is_empty() {
        return Ok(None);
    }
    let ns = ds.namespace().unwrap_or_default();
    let pods = match shared_reads::cached_pods(&ctx.waiting_pods, &ns, &labels) {
        Some(pods) => pods,
        None => {
            let selector = crate::conventions::selector_string(&labels);
            (Api::<Pod>::namespaced(ctx.client.clone(), &ns))
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
        }
    };
    let waiting: Vec<(String, String)> = pods.iter().filter_map(shared_reads::unschedulable).collect();
    let Some((first, why)) = waiting.first() else {
        return Ok(None);
    };
    let pods = if waiting.len() == 1 {
        format!("collector pod {first} cannot be scheduled")
    } else {
        format!(
            "{} collector pods cannot be scheduled ({first} and others)",
            waiting.len()
        )
    };
    Ok(Some(format!(
        "{}/{} GPU nodes run a ready collector; {pods}: {why}",
        s.number_ready, s.desired_number_scheduled
    )))
}

/// Why Pod Security admission rejects the collector's pods, if it does: the namespace enforces
/// `baseline` or `restricted` (both forbid hostPath volumes), or — for a cluster-wide default the
/// labels do not show — the DaemonSet controller's FailedCreate event says so. The event's
/// admission message is quoted when there is one.
async fn collector_forbidden(ctx: &Ctx, namespace: &Namespace, ds: &DaemonSet) -> Result<Option<String>> {
    let ns = namespace.name_any();
    let level = namespace
        .labels()
        .get(PSA_ENFORCE)
        .cloned()
        .filter(|l| l == "baseline" || l == "restricted");
    let s = ds.status.clone().unwrap_or_default();
    let none_created = s.desired_number_scheduled > 0 && s.current_number_scheduled == 0;
    if level.is_none() && !none_created {
        return Ok(None);
    }
    let admission = match ds.uid() {
        Some(uid) => Api::<CoreEvent>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid},reason=FailedCreate")))
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .find(|m| m.contains("violates PodSecurity")),
        None => None,
    };
    let hint = "; run collectors where hostPath is allowed (GpuTelemetryPolicy spec.collectorNamespace) or allow it in this namespace";
    Ok(match (level, admission) {
        (_, Some(m)) => Some(format!(
            "Pod Security admission rejects the collector's pods in namespace {ns}: {m}{hint}"
        )),
        (Some(l), None) => Some(format!(
            "namespace {ns} enforces Pod Security {l:?} ({PSA_ENFORCE}), which forbids the collector's hostPath volumes (/var/log/pods, its queue){hint}"
        )),
        (None, None) => None,
    })
}
