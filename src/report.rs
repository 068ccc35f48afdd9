//! `mlobs plan` output: a readable summary for people and the same data as JSON for machines.
//! Pure: built from [`Desired`] and a cost [`Estimate`].

use std::fmt::Write as _;

use serde::Serialize;

use crate::desired::Desired;
use crate::desired::aws_plan::{AwsPlan, KmsKeyPlan, KmsRef, RolePlan};
use crate::desired::cost::destinations::{DestinationLine, FleetSize, Traffic, lines};
use crate::desired::cost::{Estimate, Prices};
use crate::desired::effective::{EffBudget, Violation};
use crate::desired::settings::{Setting, settings};

/// A Kubernetes object the pipeline creates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

/// Budget check against the estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetCheck {
    pub monthly_usd: f64,
    pub estimated_usd: f64,
    pub action: String,
    pub exceeded: bool,
}

/// Everything `mlobs plan` says about one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub pipeline: String,
    pub policy: Option<String>,
    pub settings: Vec<Setting>,
    pub aws: AwsPlan,
    pub kubernetes: Vec<ObjectRef>,
    pub config_hash: String,
    pub estimate: Estimate,
    /// Destinations beyond CloudWatch: target, IAM statements and monthly cost of each.
    pub destinations: Vec<DestinationLine>,
    pub budget: Option<BudgetCheck>,
    pub violations: Vec<Violation>,
}

impl PlanReport {
    /// The report with list prices and the default traffic assumptions.
    pub fn new(d: &Desired, estimate: Estimate) -> PlanReport {
        PlanReport::priced(d, estimate, &Prices::default(), &Traffic::default())
    }

    /// The report, with the destinations costed at `prices` for `traffic`.
    pub fn priced(d: &Desired, estimate: Estimate, prices: &Prices, traffic: &Traffic) -> PlanReport {
        let e = &d.effective;
        let fleet = FleetSize {
            nodes: estimate.nodes,
            gpus_per_node: estimate.gpus_per_node,
        };
        let mut destinations = lines(e, &d.aws, fleet, prices, traffic);
        destinations.extend(crate::desired::cost::archive::line(e, &d.aws, fleet, prices, traffic));
        destinations.extend(crate::desired::cost::hot_path::line(e, &d.aws, fleet, prices));
        destinations.extend(crate::desired::cost::alerts::line(&d.aws, prices));
        let o = &d.objects;
        let r = |kind: &'static str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| ObjectRef {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let mut kubernetes = vec![
            r("ServiceAccount", &o.service_account.metadata),
            r("ClusterRole", &o.cluster_role.metadata),
            r("ClusterRoleBinding", &o.cluster_role_binding.metadata),
            r("ConfigMap", &o.config_map.metadata),
        ];
        if let Some(h) = &o.hot_path {
            kubernetes.extend([
                r("ServiceAccount", &h.service_account.metadata),
                r("ConfigMap", &h.config_map.metadata),
                r("DaemonSet", &h.daemon_set.metadata),
            ]);
        }
        if e.dashboards.grafana {
            kubernetes.push(r(
                "ConfigMap",
                &crate::desired::dashboards::grafana::config_map(e).metadata,
            ));
        }
        if let Some(a) = &e.alerts {
            // Applied only where the cluster serves monitoring.coreos.com/v1.
            kubernetes.push(r(
                "PrometheusRule",
                &crate::desired::alerts::prometheus::prometheus_rule(e, a).metadata,
            ));
        }
        kubernetes.push(r("DaemonSet", &o.daemon_set.metadata));
        let budget = e.budget.as_ref().map(|b: &EffBudget| BudgetCheck {
            monthly_usd: b.monthly_usd,
            estimated_usd: estimate.total_usd,
            action: format!("{:?}", b.action),
            exceeded: estimate.total_usd > b.monthly_usd,
        });
        let mut violations = d.violations.clone();
        if let (Some(b), Some((policy, _))) = (&budget, &e.policy)
            && b.exceeded
            && b.action == "Deny"
        {
            violations.push(Violation {
                path: "spec".into(),
                rule: "budget.monthlyUSD".into(),
                policy: policy.clone(),
                message: format!(
                    "estimated ${:.2}/month exceeds the budget of ${:.2}/month",
                    b.estimated_usd, b.monthly_usd
                ),
            });
        }
        PlanReport {
            pipeline: e.pipeline_id(),
            policy: e.policy.as_ref().map(|(n, _)| n.clone()),
            settings: settings(e),
            aws: d.aws.clone(),
            kubernetes,
            config_hash: d.config_hash.clone(),
            estimate,
            destinations,
            budget,
            violations,
        }
    }

    /// The readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_text(&mut s);
        s
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        writeln!(
            s,
            "Pipeline {} (policy: {})",
            self.pipeline,
            self.policy.as_deref().unwrap_or("none, built-in defaults only")
        )?;
        writeln!(s, "\nEffective settings")?;
        let width = self.settings.iter().map(|x| x.path.len()).max().unwrap_or(0);
        for x in &self.settings {
            writeln!(s, "  {:width$}  {:<60}  [{:?}]", x.path, x.value, x.source)?;
        }
        writeln!(s, "\nAWS resources, in apply order")?;
        let mut n = 0;
        let mut step = |s: &mut String, text: String| -> std::fmt::Result {
            n += 1;
            writeln!(s, "  {n}. {text}")
        };
        match &self.aws.kms {
            Some(KmsKeyPlan::Create {
                alias,
                rotation,
                deletion_window_days,
                policy,
                ..
            }) => {
                step(
                    s,
                    format!("KMS key {alias} (rotation {rotation}, deletion window {deletion_window_days} days)"),
                )?;
                writeln!(s, "     key policy: {}", json(policy))?;
            }
            Some(KmsKeyPlan::Existing {
                key_arn,
                required_statement,
            }) => {
                step(s, format!("KMS key {key_arn} (existing; verified, not changed)"))?;
                writeln!(s, "     its key policy must contain: {}", json(required_statement))?;
            }
            None => step(s, "no KMS key (encryption.kms.disabled)".into())?,
        }
        for g in &self.aws.log_groups {
            let key = match &g.kms_key {
                Some(KmsRef::Created { alias }) => alias.clone(),
                Some(KmsRef::Existing { arn }) => arn.clone(),
                None => "none".into(),
            };
            step(
                s,
                format!(
                    "log group {} (retention {} days, class {}, KMS {key}, {} tags)",
                    g.name,
                    g.retention_days,
                    g.class.as_str(),
                    g.tags.len()
                ),
            )?;
        }
        if let Some(a) = &self.aws.archive {
            let key = match &a.kms_key {
                Some(KmsRef::Created { alias }) => format!("SSE-KMS {alias} with a bucket key"),
                Some(KmsRef::Existing { arn }) => format!("SSE-KMS {arn} with a bucket key"),
                None => "SSE-S3".into(),
            };
            step(
                s,
                format!(
                    "S3 bucket {} in {} (Object Lock COMPLIANCE {} years, versioning, {key}, public access blocked, {} after {} days under {}, {} tags; never deleted by mlobs)",
                    a.name,
                    a.region,
                    a.retention_years,
                    a.storage_class.as_str(),
                    a.transition_after_days,
                    a.prefix,
                    a.tags.len()
                ),
            )?;
            writeln!(s, "     bucket policy: {}", json(&a.bucket_policy))?;
        }
        if let Some(h) = &self.aws.hot_path {
            write_hot_path(s, h, &mut step)?;
        }
        if let Some(w) = &self.aws.amp_workspace {
            let key = match &w.kms_key {
                Some(KmsRef::Created { alias }) => format!("KMS {alias}"),
                Some(KmsRef::Existing { arn }) => format!("KMS {arn}"),
                None => "an AWS owned key".into(),
            };
            step(
                s,
                format!(
                    "AMP workspace alias {:?} in {} (created unless one of this alias carries the pipeline's tags; encrypted with {key}, {} tags; its id is recorded in status.aws.ampWorkspaceArn and named by the role and the remote write endpoint)",
                    w.alias,
                    w.region,
                    w.tags.len()
                ),
            )?;
        }
        match &self.aws.role {
            RolePlan::Create {
                name,
                trust_policy,
                inline_policy,
                permissions_boundary,
                ..
            } => {
                step(
                    s,
                    format!(
                        "IAM role {name} (boundary: {})",
                        permissions_boundary.as_deref().unwrap_or("none")
                    ),
                )?;
                writeln!(s, "     trust policy: {}", json(trust_policy))?;
                writeln!(s, "     inline policy: {}", json(inline_policy))?;
            }
            RolePlan::Existing { arn } => step(s, format!("IAM role {arn} (existing; verified, not changed)"))?,
        }
        if let Some(pi) = &self.aws.pod_identity {
            step(
                s,
                format!(
                    "EKS pod identity association {}/{} in cluster {} -> {}",
                    pi.namespace, pi.service_account, pi.cluster_name, pi.role_arn
                ),
            )?;
        }
        if let Some(a) = &self.aws.alerts {
            let t = &a.topic;
            let how = if t.create {
                "created, KMS-encrypted with the pipeline's key"
            } else {
                "existing; verified, not changed"
            };
            step(s, format!("SNS topic {} ({how})", t.arn))?;
            for x in &a.alarms {
                step(
                    s,
                    format!(
                        "CloudWatch alarm {} ({} {} {} {})",
                        x.name,
                        x.metric_name,
                        x.statistic.as_str(),
                        x.comparison.as_str(),
                        x.threshold
                    ),
                )?;
            }
        }
        if let Some(dash) = &self.aws.dashboard {
            step(
                s,
                format!(
                    "CloudWatch dashboard {} ({} widgets)",
                    dash.name,
                    dash.body["widgets"].as_array().map_or(0, Vec::len)
                ),
            )?;
        }
        writeln!(s, "\nKubernetes objects (applied after the AWS resources are ready)")?;
        for o in &self.kubernetes {
            match &o.namespace {
                Some(ns) => writeln!(s, "  {} {ns}/{}", o.kind, o.name)?,
                None => writeln!(s, "  {} {}", o.kind, o.name)?,
            }
        }
        writeln!(s, "  collector config hash {}", self.config_hash)?;
        let e = &self.estimate;
        writeln!(
            s,
            "\nCardinality and cost ({} x {}, {} GPUs each)",
            e.nodes, e.instance_type, e.gpus_per_node
        )?;
        writeln!(s, "  selected DCGM metrics: {}", e.metrics)?;
        for d in &e.dimension_sets {
            writeln!(s, "  dimensions [{}]: {} series", d.dimensions.join(", "), d.series)?;
        }
        writeln!(
            s,
            "  series per node: {} (unfiltered DCGM: {})",
            e.series_per_node, e.unfiltered.series_per_node
        )?;
        writeln!(
            s,
            "  total series: {} (unfiltered: {})",
            e.total_series, e.unfiltered.total_series
        )?;
        writeln!(
            s,
            "  CloudWatch metrics: ${:.2}/month (unfiltered: ${:.2})",
            e.metrics_usd, e.unfiltered.metrics_usd
        )?;
        match (e.logs_ingestion_usd, e.logs_storage_usd) {
            (Some(i), Some(st)) => writeln!(s, "  log ingestion: ${i:.2}/month, storage: ${st:.2}/month")?,
            _ => writeln!(s, "  logs: not estimated (pass --log-gb-per-day)")?,
        }
        if let Some(v) = &e.emf {
            writeln!(
                s,
                "  EMF metric events: {} events/month x {} bytes = {:.2} GB/month: ingestion ${:.2}/month, storage ${:.2}/month",
                v.events_per_month, v.bytes_per_event, v.gb_per_month, v.ingestion_usd, v.storage_usd
            )?;
        }
        writeln!(s, "  total: ${:.2}/month", e.total_usd)?;
        if let Some(x) = &e.enhanced {
            write!(
                s,
                "  Container Insights Enhanced, same nodes: ${:.2}/month",
                x.total_usd
            )?;
            match e.enhanced_to_pipeline_ratio {
                Some(r) => writeln!(s, " ({r:.1}x this pipeline)")?,
                None => writeln!(s)?,
            }
        }
        for a in &e.assumptions {
            writeln!(s, "  assumption: {a}")?;
        }
        if let Some(b) = &self.budget {
            writeln!(
                s,
                "  budget: ${:.2}/month, action {}{}",
                b.monthly_usd,
                b.action,
                if b.exceeded { " (EXCEEDED)" } else { "" }
            )?;
        }
        self.write_destinations(s)?;
        writeln!(s, "\nPolicy violations")?;
        if self.violations.is_empty() {
            writeln!(s, "  none")?;
        }
        for v in &self.violations {
            writeln!(s, "  - {v}")?;
        }
        Ok(())
    }
}

impl PlanReport {
    fn write_destinations(&self, s: &mut String) -> std::fmt::Result {
        if self.destinations.is_empty() {
            return Ok(());
        }
        writeln!(
            s,
            "\nDestinations beyond CloudWatch (not in the CloudWatch total or budget)"
        )?;
        let mut total = 0.0;
        for d in &self.destinations {
            let usd = d
                .monthly_usd
                .map_or("not estimated".into(), |u| format!("${u:.2}/month"));
            total += d.monthly_usd.unwrap_or(0.0);
            writeln!(s, "  {}: {} (exporter {}): {usd}", d.destination, d.target, d.exporter)?;
            for st in &d.iam_statements {
                writeln!(s, "     IAM: {}", json(st))?;
            }
            for a in &d.assumptions {
                writeln!(s, "     assumption: {a}")?;
            }
        }
        writeln!(s, "  destinations total: ${:.2}/month", (total * 100.0).round() / 100.0)
    }
}

/// The hot path's stream, Fluent Bit role and association, as apply steps.
fn write_hot_path(
    s: &mut String,
    h: &crate::desired::aws_plan::hot_path::HotPathPlan,
    step: &mut impl FnMut(&mut String, String) -> std::fmt::Result,
) -> std::fmt::Result {
    let x = &h.stream;
    let key = match &x.kms_key {
        Some(KmsRef::Created { alias }) => format!("SSE-KMS {alias}"),
        Some(KmsRef::Existing { arn }) => format!("SSE-KMS {arn}"),
        None => "unencrypted".into(),
    };
    let tags = x.tags.len();
    let text = format!(
        "Kinesis data stream {} in {} ({}, retention {} hours, {key}, {tags} tags)",
        x.name, x.region, x.capacity, x.retention_hours
    );
    step(s, text)?;
    if let RolePlan::Create {
        name,
        trust_policy,
        inline_policy,
        ..
    } = &h.role
    {
        step(s, format!("IAM role {name} (Fluent Bit, hot path)"))?;
        writeln!(s, "     trust policy: {}", json(trust_policy))?;
        writeln!(s, "     inline policy: {}", json(inline_policy))?;
    }
    if let Some(pi) = &h.pod_identity {
        let text = format!(
            "EKS pod identity association {}/{} in cluster {} -> {}",
            pi.namespace, pi.service_account, pi.cluster_name, pi.role_arn
        );
        step(s, text)?;
    }
    Ok(())
}

fn json(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
