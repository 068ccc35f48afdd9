//! The ordered apply of a pipeline's AWS plan: KMS key → log groups (created with that key) →
//! archive bucket (encrypted with that key) → hot path stream and Fluent Bit role → AMP workspace
//! by alias (with that key) → IAM role (its policy names the bucket and the workspace) → EKS pod
//! identity association. Each step is idempotent, so a crash at any point is
//! healed by running it again. The collector may start only when [`AwsOutcome::ready`] is true.

use std::sync::Arc;

use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::hot_path::HotPathPlan;
use crate::desired::aws_plan::{AwsPlan, KmsKeyPlan};

use super::{
    AwsClients, AwsError, Drift, Owner, alarms, amp, dashboards, eks, hot_path, iam, kinesis, kms, logs, s3, sns,
};

/// Options that come from the pipeline rather than the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    pub owner: Owner,
    pub adopt: bool,
    pub drift: DriftPolicy,
    /// The key id recorded in status after an earlier CreateKey (crash safety).
    pub known_key_id: Option<String>,
    /// Whether a key of ours may exist that neither its alias nor `known_key_id` finds (a create
    /// was started and may have crashed): only then are the account's keys scanned for our tags.
    pub scan_for_key: bool,
    /// Log groups observed for many pipelines at once (resync), read instead of describing
    /// this pipeline's groups one call at a time.
    pub log_group_snapshot: Option<std::sync::Arc<std::collections::BTreeMap<String, logs::ObservedGroup>>>,
    /// Reads shared by many pipelines at a resync (aliases, roles) and whether the key's own
    /// check is due; the default reads everything per pipeline.
    pub batched: Batched,
    /// Status records alarms of this pipeline (`status.aws.alarmCount`): when the plan has no
    /// alerts any more, ours under the pipeline's prefix are deleted (only then is it read).
    pub alarms_recorded: bool,
    /// The CloudWatch dashboard status records (mlobs created it): deleted once
    /// `spec.dashboards.cloudwatch` is off.
    pub dashboard_recorded: Option<String>,
    /// The role ARNs status records (`roleArn`, `hotPathRoleArn`): recorded only once a role's
    /// create finished, so a role of ours missing from them without its inline policy is a create
    /// to finish (see `iam`).
    pub recorded_roles: Vec<String>,
}

/// What a resync reads once for many pipelines, and what it may leave unread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batched {
    /// The account's KMS aliases (`kms::observe_aliases`): the key is found without DescribeKey.
    pub kms_aliases: Option<Arc<kms::AliasSnapshot>>,
    /// mlobs's roles (`iam::observe_roles`): the role is compared without GetRole/GetRolePolicy.
    pub iam_roles: Option<Arc<iam::RoleSnapshot>>,
    /// The slower checks are not due (their interval has not passed, no drift event named the
    /// pipeline, data flows): the key's state, tags, rotation and policy are not read when its
    /// alias still points to the recorded key, and log group tags come from this process's last
    /// read of them.
    pub skip_slow_checks: bool,
}

/// What the AWS side looks like after an ensure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwsOutcome {
    pub kms_key_id: Option<String>,
    pub kms_key_arn: Option<String>,
    /// The key's state, tags, rotation and policy were read in this ensure (not only its alias).
    pub kms_key_checked: bool,
    pub log_group_arns: Vec<String>,
    pub archive_bucket_arn: Option<String>,
    /// The hot path's stream, once ACTIVE.
    pub hot_path_stream_arn: Option<String>,
    /// Fluent Bit's role and (Pod Identity) association.
    pub hot_path_role_arn: Option<String>,
    pub hot_path_association_id: Option<String>,
    /// The AMP workspace mlobs manages, with the alias it was ensured for.
    pub amp_workspace: Option<(String, amp::Workspace)>,
    pub role_arn: Option<String>,
    pub pod_identity_association_id: Option<String>,
    /// The SNS topic the alarms notify (alerts enabled).
    pub alerts_topic_arn: Option<String>,
    /// The alarms that exist as planned (alerts enabled).
    pub alarm_count: Option<i32>,
    /// Why the alerts could not be ensured: reported as AlertsReady=False, never a reason to
    /// hold the collector back.
    pub alerts_error: Option<AwsError>,
    /// The CloudWatch dashboard (dashboards enabled).
    pub dashboard_name: Option<String>,
    pub drift: Vec<Drift>,
}

impl AwsOutcome {
    /// Key (unless disabled), every log group and the role exist: the collector may start.
    pub fn ready(&self, plan: &AwsPlan) -> bool {
        (plan.kms.is_none() || self.kms_key_arn.is_some())
            && self.log_group_arns.len() == plan.log_groups.len()
            && (plan.archive.is_none() || self.archive_bucket_arn.is_some())
            && plan.hot_path.as_ref().is_none_or(|h| {
                self.hot_path_stream_arn.is_some()
                    && self.hot_path_role_arn.is_some()
                    && (h.pod_identity.is_none() || self.hot_path_association_id.is_some())
            })
            && (plan.amp_workspace.is_none() || self.amp_workspace.is_some())
            && self.role_arn.is_some()
            && (plan.pod_identity.is_none() || self.pod_identity_association_id.is_some())
    }
}

/// Which step failed, for the condition it sets (KmsKeyReady, LogGroupsReady, IamRoleReady).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {error}")]
pub struct StepError {
    pub step: Step,
    pub error: AwsError,
    /// What was done before the failure (e.g. the key created), so status can record it.
    pub partial: Box<AwsOutcome>,
}

/// The ordered steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    KmsKey,
    LogGroups,
    ArchiveBucket,
    HotPath,
    AmpWorkspace,
    IamRole,
    PodIdentity,
    Alerts,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::KmsKey => "KMS key",
            Step::LogGroups => "log groups",
            Step::ArchiveBucket => "archive bucket",
            Step::AmpWorkspace => "AMP workspace",
            Step::HotPath => "hot path stream and role",
            Step::IamRole => "IAM role",
            Step::PodIdentity => "pod identity association",
            Step::Alerts => "alerts (SNS topic, CloudWatch alarms)",
        })
    }
}

/// Ensures every AWS resource of the plan, in order. Stops at the first failing step.
pub async fn ensure_all(c: &AwsClients, plan: &AwsPlan, opts: &ApplyOptions) -> Result<AwsOutcome, StepError> {
    let mut out = AwsOutcome::default();
    let fail = |step, error, out: &AwsOutcome| StepError {
        step,
        error,
        partial: Box::new(out.clone()),
    };

    if let Some(k) = &plan.kms {
        let reads = kms::KeyReads {
            aliases: opts.batched.kms_aliases.as_deref(),
            skip_key_check: opts.batched.skip_slow_checks,
        };
        match kms::ensure_reads(
            c,
            k,
            &opts.owner,
            opts.known_key_id.as_deref(),
            opts.drift,
            opts.scan_for_key,
            reads,
        )
        .await
        {
            Ok(e) => {
                out.kms_key_id = Some(e.key.key_id);
                out.kms_key_arn = Some(e.key.key_arn);
                out.kms_key_checked = e.checked;
                out.drift.extend(e.drift);
            }
            Err(e) => return Err(fail(Step::KmsKey, e, &out)),
        }
    }
    match logs::ensure_with(
        c,
        &plan.log_groups,
        out.kms_key_arn.as_deref(),
        &opts.owner,
        opts.adopt,
        opts.drift,
        opts.log_group_snapshot.as_deref(),
        opts.batched.skip_slow_checks,
    )
    .await
    {
        Ok((arns, drift)) => {
            out.log_group_arns = arns;
            out.drift.extend(drift);
        }
        Err(e) => return Err(fail(Step::LogGroups, e, &out)),
    }
    if let Some(b) = &plan.archive {
        let key = out.kms_key_arn.as_deref();
        match s3::ensure(c, b, key, &opts.owner, opts.adopt, opts.drift).await {
            Ok((arn, drift)) => {
                out.archive_bucket_arn = Some(arn);
                out.drift.extend(drift);
            }
            Err(e) => return Err(fail(Step::ArchiveBucket, e, &out)),
        }
    }
    if let Some(h) = &plan.hot_path {
        // Before the collector's role and any DaemonSet: Fluent Bit starts only with its stream.
        let key = out.kms_key_arn.clone();
        match ensure_hot_path(c, h, key.as_deref(), opts, &mut out).await {
            Ok(drift) => out.drift.extend(drift),
            Err(e) => return Err(fail(Step::HotPath, e, &out)),
        }
    }
    if let Some(w) = &plan.amp_workspace {
        let key = out.kms_key_arn.as_deref();
        match amp::ensure(c, w, key, &opts.owner, opts.adopt).await {
            Ok(ws) => out.amp_workspace = Some((w.alias.clone(), ws)),
            Err(e) => return Err(fail(Step::AmpWorkspace, e, &out)),
        }
    }
    let roles = opts.batched.iam_roles.as_deref();
    let recorded = &opts.recorded_roles;
    match iam::ensure_from(c, &plan.role, &opts.owner, opts.adopt, opts.drift, roles, recorded).await {
        Ok((arn, drift)) => {
            out.role_arn = Some(arn);
            out.drift.extend(drift);
        }
        Err(e) => return Err(fail(Step::IamRole, e, &out)),
    }
    if let Some(pi) = &plan.pod_identity {
        match eks::ensure_pod_identity(c, pi).await {
            Ok(id) => out.pod_identity_association_id = Some(id),
            Err(e) => return Err(fail(Step::PodIdentity, e, &out)),
        }
    }
    if let Some(a) = &plan.alerts {
        // Last: alarms watch what the collector ships, and their failure must not hold it back.
        let key = out.kms_key_arn.as_deref();
        let topic = sns::ensure(c, &a.topic, key, &opts.owner, opts.adopt, opts.drift).await;
        let alarms = match topic {
            Ok((arn, drift)) => {
                out.alerts_topic_arn = Some(arn);
                out.drift.extend(drift);
                alarms::ensure(c, &a.alarm_prefix, &a.alarms, &opts.owner, opts.adopt, opts.drift).await
            }
            Err(e) => Err(e),
        };
        match alarms {
            Ok(drift) => {
                out.alarm_count = Some(a.alarms.len() as i32);
                out.drift.extend(drift);
            }
            Err(e) => out.alerts_error = Some(e),
        }
    }
    if plan.alerts.is_none() && opts.alarms_recorded {
        // Alerts switched off: their alarms would go on firing (and costing). The topic stays:
        // its subscriptions are the user's.
        let prefix = crate::desired::alerts::cloudwatch::owner_prefix(&opts.owner.cluster, &opts.owner.pipeline);
        if let Err(e) = alarms::delete(c, &prefix, &opts.owner, crate::crd::DeletionPolicy::Delete).await {
            // Still recorded, so the next ensure tries again.
            out.alarm_count = Some(0);
            out.alerts_error = Some(e);
        }
    }
    if let (None, Some(name)) = (&plan.dashboard, &opts.dashboard_recorded) {
        // Switched off: the dashboard would stay (and cost $3 a month) with nothing to show.
        if let Err(e) = dashboards::delete_named(c, name).await {
            // Still recorded, so the next ensure tries again.
            out.dashboard_name = Some(name.clone());
            out.alerts_error = Some(e);
        }
    }
    if let Some(dash) = &plan.dashboard {
        match dashboards::ensure(c, dash, opts.drift).await {
            Ok(drift) => {
                out.dashboard_name = Some(dash.name.clone());
                out.drift.extend(drift);
            }
            Err(e) => out.alerts_error = Some(e),
        }
    }
    Ok(out)
}

/// The hot path: stream (SSE-KMS with the pipeline's key) → Fluent Bit's role (its policy
/// names the stream) → its pod identity association; records each in `out` as it exists.
async fn ensure_hot_path(
    c: &AwsClients,
    plan: &HotPathPlan,
    key_arn: Option<&str>,
    opts: &ApplyOptions,
    out: &mut AwsOutcome,
) -> Result<Vec<Drift>, AwsError> {
    let (arn, mut drift) = kinesis::ensure(c, &plan.stream, key_arn, &opts.owner, opts.adopt, opts.drift).await?;
    out.hot_path_stream_arn = Some(arn);
    let roles = opts.batched.iam_roles.as_deref();
    let recorded = &opts.recorded_roles;
    let (role, role_drift) =
        iam::ensure_from(c, &plan.role, &opts.owner, opts.adopt, opts.drift, roles, recorded).await?;
    out.hot_path_role_arn = Some(role);
    drift.extend(role_drift);
    if let Some(pi) = &plan.pod_identity {
        out.hot_path_association_id = Some(eks::ensure_pod_identity(c, pi).await?);
    }
    Ok(drift)
}

/// What a deletion kept against `deletionPolicy: Delete`, for the event and status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteOutcome {
    /// The archive bucket (Object Lock forbids deleting it), and with it the KMS key that
    /// encrypts it.
    pub retained: Option<s3::Retained>,
}

/// Applies the deletion policy in reverse order. NotFound is success everywhere; nothing
/// without our ownership tags is deleted; an archive bucket is never deleted (it is untagged and
/// reported in the outcome under `Delete`).
pub async fn delete_all(
    c: &AwsClients,
    plan: &AwsPlan,
    owner: &Owner,
    known_key_id: Option<&str>,
    policy: DeletionPolicy,
) -> Result<DeleteOutcome, StepError> {
    let fail = |step, error| StepError {
        step,
        error,
        partial: Box::default(),
    };
    if let Some(dash) = &plan.dashboard {
        dashboards::delete(c, dash, policy)
            .await
            .map_err(|e| fail(Step::Alerts, e))?;
    }
    if let Some(a) = &plan.alerts {
        // Alarms first: they name the topic.
        alarms::delete(c, &a.alarm_prefix, owner, policy)
            .await
            .map_err(|e| fail(Step::Alerts, e))?;
        sns::delete(c, &a.topic, owner, policy)
            .await
            .map_err(|e| fail(Step::Alerts, e))?;
    }
    if let Some(pi) = &plan.pod_identity {
        // The association is pure wiring, never data: it goes under both policies.
        eks::delete_pod_identity(c, pi)
            .await
            .map_err(|e| fail(Step::PodIdentity, e))?;
    }
    iam::delete(c, &plan.role, owner, policy)
        .await
        .map_err(|e| fail(Step::IamRole, e))?;
    if let Some(h) = &plan.hot_path {
        hot_path::delete(c, h, owner, policy)
            .await
            .map_err(|e| fail(Step::HotPath, e))?;
    }
    if let Some(w) = &plan.amp_workspace {
        amp::delete(c, w, owner, policy)
            .await
            .map_err(|e| fail(Step::AmpWorkspace, e))?;
    }
    let mut out = DeleteOutcome::default();
    if let Some(b) = &plan.archive {
        out.retained = s3::delete(c, b, owner, policy)
            .await
            .map_err(|e| fail(Step::ArchiveBucket, e))?;
    }
    logs::delete(c, &plan.log_groups, owner, policy)
        .await
        .map_err(|e| fail(Step::LogGroups, e))?;
    if let Some(k) = &plan.kms
        && matches!(k, KmsKeyPlan::Create { .. })
    {
        // A retained archive stays encrypted with this key: deleting the key would make the
        // archive unreadable, so the key is retained with it (untagged, as under Retain).
        let key_policy = if out.retained.is_some() {
            DeletionPolicy::Retain
        } else {
            policy
        };
        kms::delete(c, k, owner, known_key_id, key_policy)
            .await
            .map_err(|e| fail(Step::KmsKey, e))?;
    }
    Ok(out)
}
