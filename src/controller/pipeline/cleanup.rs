//! Deletion of a pipeline: the AWS side per `deletionPolicy`, then the children the garbage
//! collector cannot remove (cluster-scoped RBAC, children in another namespace: by label and the
//! owner annotation, never by a guessed name), then the finalizer.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::super::Ctx;
use super::super::applier;
use super::super::children::Owner;
use super::super::error::{Error, Result};
use super::super::lookup::{Governing, governing, key_id_of};
use super::super::status::Observed;
use super::{owner, write_status};
use crate::aws::apply::delete_all;
use crate::crd::MLObservabilityPipeline;
use crate::crd::conditions::reason;
use crate::crd::reason::Reason;
use crate::desired;

/// Runs the deletion. An `Err` keeps the finalizer (kube-runtime's finalizer helper removes it
/// only after an `Ok`).
pub async fn run(p: &MLObservabilityPipeline, ctx: &Ctx) -> Result<Action> {
    let policies = ctx.policies.state();
    let gov = governing(p, &policies);
    let policy = match &gov {
        Governing::One(x) => Some(x.as_ref()),
        _ => None,
    };
    match desired::build(p, policy, &ctx.desired) {
        Ok(d) => {
            let known = p
                .status
                .as_ref()
                .and_then(|s| s.aws.as_ref())
                .and_then(|a| a.kms_key_arn.as_deref())
                .and_then(key_id_of);
            let policy = d.effective.deletion_policy;
            // A hot path turned off whose stream was not retired yet (a failed retire).
            let mut plan = d.aws.clone();
            plan.hot_path = plan.hot_path.or_else(|| super::super::hot_path::retired(p, &d));
            let deleted = match delete_all(&ctx.aws, &plan, &owner(&d), known.as_deref(), policy).await {
                Ok(out) => out,
                Err(e) => {
                    let msg = format!("cleanup of AWS resources failed, finalizer kept: {e}");
                    ctx.event(p, EventType::Warning, e.error.reason(), "DeleteAws", msg.clone())
                        .await;
                    let mut obs = Observed::new(p);
                    obs.blocked(reason::CLEANUP_FAILED, msg);
                    let _ = write_status(p, ctx, obs, Some(d.effective.resync_interval_ms)).await;
                    return Err(Error::Aws(e));
                }
            };
            if let Some(r) = &deleted.retained {
                let kind = if policy == crate::crd::DeletionPolicy::Delete {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                let msg = super::super::archive_status::retained_message(&r.message, d.aws.kms.is_some());
                ctx.event(p, kind, Reason::ArchiveRetained, "DeleteAws", msg).await;
            }
            // The garbage collector removes the owned children: forget what was verified of them.
            let every = super::plan::MonitoringApis {
                prometheus_rules: true,
                pod_monitors: true,
            };
            for key in super::plan::child_set(p, &d, p.uid().unwrap_or_default(), every).keys() {
                ctx.applied.forget(&key);
            }
            ctx.event(
                p,
                EventType::Normal,
                Reason::AwsCleanedUp,
                "DeleteAws",
                format!("AWS resources handled per deletionPolicy {policy:?}"),
            )
            .await;
        }
        Err(e) => {
            // Without a plan nothing can be matched safely: keep every AWS resource (never lose data).
            ctx.event(
                p,
                EventType::Warning,
                e.reason(),
                "DeleteAws",
                format!("spec cannot be built ({e}); AWS resources are retained"),
            )
            .await;
        }
    }
    // Children without an owner reference to the pipeline (cluster-scoped RBAC, a collector and
    // its PodMonitor in the policy's collectorNamespace): by label and owner annotation, whatever
    // spec made them; the monitoring kinds only where the cluster serves them.
    if let Some(uid) = p.uid() {
        let kinds = super::monitoring_served(&ctx.client).await.child_kinds();
        let ns = p.namespace().unwrap_or_default();
        let sel = crate::conventions::pipeline_selector(&ns, &p.name_any());
        let owner = Owner {
            uid: &uid,
            only_unowned: true,
        };
        applier::prune(&ctx.client, &ctx.applied, None, &sel, &kinds, &[], &owner).await?;
    }
    ctx.forget(p);
    Ok(Action::await_change())
}
