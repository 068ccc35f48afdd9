//! Pipeline spec + policy → [`Effective`]: built-in defaults < policy defaults < pipeline spec,
//! then the policy's guardrails. Pure.
//!
//! Two kinds of failure: an [`Invalid`] when a value cannot be resolved at all (no region, IRSA
//! without an OIDC provider), and [`Violation`]s when the pipeline breaks a guardrail. Violations
//! do not stop the merge, so `mlobs plan` can show the whole picture next to them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

use super::effective::*;
use crate::crd::validate::{FieldError, Invalid};
use crate::crd::{
    BudgetAction, DEFAULT_DCGM_METRICS, ExporterMode, GpuTelemetryPolicy, IdentityMode, LogGroupClass,
    MLObservabilityPipeline, Redaction, parse_duration_ms,
};

use super::collector_version;
pub use super::collector_version::DEFAULT_COLLECTOR_IMAGE;
/// The pinned DCGM exporter image for Managed mode.
pub const DEFAULT_EXPORTER_IMAGE: &str = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04";
/// `spec.dataFlow.gracePeriod` by default: well above the default scrape interval (30s) plus batch
/// timeout (10s), and short enough that a stop shows within one default resync (10m) after it.
pub const DEFAULT_DATA_FLOW_GRACE_MS: u64 = 300_000;
/// Labels of mlobs-managed DCGM exporter pods (plus `mlobs.io/policy: <name>`).
pub const EXPORTER_NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "mlobs-dcgm-exporter");

/// The result of a merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub effective: Effective,
    pub violations: Vec<Violation>,
}

struct Merger<'a> {
    policy: Option<&'a GpuTelemetryPolicy>,
    policy_name: String,
    sources: BTreeMap<String, Source>,
    violations: Vec<Violation>,
    errors: Vec<FieldError>,
}

impl Merger<'_> {
    /// First of pipeline value, policy default, built-in default; records which one won.
    fn pick<T: Clone>(&mut self, path: &str, pipeline: Option<T>, policy: Option<T>, builtin: T) -> T {
        let (v, s) = match (pipeline, policy) {
            (Some(v), _) => (v, Source::Pipeline),
            (None, Some(v)) => (v, Source::PolicyDefault),
            (None, None) => (builtin, Source::BuiltIn),
        };
        self.sources.insert(path.to_string(), s);
        v
    }

    fn set_source(&mut self, path: &str, s: Source) {
        self.sources.insert(path.to_string(), s);
    }

    fn violate(&mut self, path: impl Into<String>, rule: &str, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.into(),
            rule: rule.to_string(),
            policy: self.policy_name.clone(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: &str, rule: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            rule: rule.to_string(),
            message: message.into(),
        });
    }
}

/// A name made from user input that must fit a charset and a length: characters outside the
/// charset become `-`, and a name that had to change or be cut gets an 8-hex hash of the raw
/// input, so two different inputs never end up with the same name.
pub fn bounded_name(raw: &str, max: usize, allowed: impl Fn(char) -> bool) -> String {
    let clean: String = raw.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    if clean == raw && clean.len() <= max {
        return clean;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = max.saturating_sub(hash.len() + 1);
    let mut cut: String = clean.chars().take(keep).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    format!("{cut}-{hash}")
}

/// The `mlobs.io/policy` label value of a policy's exporter pods: label values stop at 63
/// characters, policy names do not. The exporter and the collector's scrape selector both use this.
pub fn policy_label(policy_name: &str) -> String {
    bounded_name(policy_name, 63, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    })
}

/// Parses a Kubernetes memory quantity into MiB (rounded down). None when it is not a memory size.
pub fn quantity_mib(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let bytes = n * factor;
    if !bytes.is_finite() || bytes < 0.0 {
        return None;
    }
    Some((bytes / (1024.0 * 1024.0)) as u64)
}

fn builtin_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
        ..Default::default()
    }
}

fn builtin_tolerations() -> Vec<Toleration> {
    // No effect: tolerate the nvidia.com/gpu taint whatever its effect or value.
    vec![Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    }]
}

fn same_redaction(a: &Redaction, b: &Redaction) -> bool {
    match (&a.name, &b.name) {
        (Some(x), Some(y)) => x == y,
        _ => a.pattern == b.pattern,
    }
}

fn is_alias_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-')
}

fn is_role_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '=' | ',' | '.' | '@' | '_' | '-')
}

/// Merges a pipeline with its policy (if any) and the operator's context.
pub fn merge(
    p: &MLObservabilityPipeline,
    policy: Option<&GpuTelemetryPolicy>,
    ctx: &Context,
) -> Result<Merged, Invalid> {
    let mut m = Merger {
        policy,
        policy_name: policy.and_then(|p| p.metadata.name.clone()).unwrap_or_default(),
        sources: BTreeMap::new(),
        violations: vec![],
        errors: vec![],
    };
    let spec = &p.spec;
    let pol = policy.map(|p| &p.spec);
    let namespace = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = p.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        m.error("metadata.name", "required", "is required");
    }
    // Where the collector runs: the policy may move every governed collector to one namespace.
    let collector_namespace = match pol.and_then(|p| p.collector_namespace.clone()) {
        Some(ns) => {
            m.set_source("collectorNamespace", Source::PolicyGuardrail);
            ns
        }
        None => namespace.clone(),
    };

    // Cluster and region: the pipeline, else the operator's flags.
    let cluster_name = match (&spec.cluster_name, &ctx.cluster_name) {
        (Some(c), _) => {
            m.set_source("clusterName", Source::Pipeline);
            c.clone()
        }
        (None, Some(c)) => {
            m.set_source("clusterName", Source::Operator);
            c.clone()
        }
        (None, None) => {
            m.error(
                "spec.clusterName",
                "required",
                "is required when the operator has no --cluster-name",
            );
            String::new()
        }
    };
    let region = match (&spec.region, &ctx.region) {
        (Some(r), _) => {
            m.set_source("region", Source::Pipeline);
            r.clone()
        }
        (None, Some(r)) => {
            m.set_source("region", Source::Operator);
            r.clone()
        }
        (None, None) => {
            m.error(
                "spec.region",
                "required",
                "is required when the operator has no --region",
            );
            String::new()
        }
    };

    // Sources.
    let src = spec.sources.as_ref();
    let source_namespaces = m.pick(
        "sources.namespaces",
        src.and_then(|s| s.namespaces.clone()),
        None,
        vec![namespace.clone()],
    );
    if let Some(pol) = pol {
        let allowed_from = pol
            .sources
            .as_ref()
            .and_then(|s| s.cross_namespace_from.clone())
            .unwrap_or_default();
        for (i, ns) in source_namespaces.iter().enumerate() {
            if *ns != namespace && !allowed_from.contains(&namespace) {
                m.violate(
                    format!("spec.sources.namespaces[{i}]"),
                    "sources.crossNamespaceFrom",
                    format!("pipelines in {namespace:?} may only collect their own namespace, not {ns:?}"),
                );
            }
        }
    }
    let node_selector = m.pick(
        "sources.nodeSelector",
        src.and_then(|s| s.node_selector.clone()),
        pol.and_then(|p| p.node_selector.clone()),
        BTreeMap::from([("nvidia.com/gpu.present".to_string(), "true".to_string())]),
    );
    let tolerations = m.pick(
        "sources.tolerations",
        src.and_then(|s| s.tolerations.clone()),
        pol.and_then(|p| p.tolerations.clone()),
        builtin_tolerations(),
    );

    // Ownership tags go on every AWS resource; `mlobs.io/` keys are reserved for them.
    let mut ownership = BTreeMap::from([
        ("mlobs.io/cluster".to_string(), cluster_name.clone()),
        ("mlobs.io/pipeline".to_string(), format!("{namespace}/{name}")),
    ]);
    if let Some(uid) = &p.metadata.uid {
        ownership.insert("mlobs.io/uid".to_string(), uid.clone());
    }

    // Logs.
    let logs = spec.logs.as_ref();
    let pol_logs = pol.and_then(|p| p.logs.as_ref());
    let logs_enabled = m.pick("logs.enabled", logs.and_then(|l| l.enabled), None, true);
    let derived_include: Vec<String> = source_namespaces
        .iter()
        .map(|ns| format!("/var/log/pods/{ns}_*/*/*.log"))
        .collect();
    let include = m.pick(
        "logs.include",
        logs.and_then(|l| l.include.clone()),
        None,
        derived_include,
    );
    for (i, glob) in include.iter().enumerate() {
        let inside = source_namespaces
            .iter()
            .any(|ns| glob.starts_with(&format!("/var/log/pods/{ns}_")));
        if !inside {
            m.error(
                &format!("spec.logs.include[{i}]"),
                "sourceNamespaces",
                format!("{glob:?} must start with /var/log/pods/<namespace>_ for one of the source namespaces {source_namespaces:?}"),
            );
        }
    }
    let exclude = m.pick("logs.exclude", logs.and_then(|l| l.exclude.clone()), None, vec![]);
    let min_retention = pol_logs.and_then(|l| l.min_retention_in_days);
    let prefix = pol_logs.and_then(|l| l.log_group_prefix.clone());
    let lg = logs.and_then(|l| l.log_group.as_ref());
    let logs_group = log_group(
        &mut m,
        "logs.logGroup",
        lg,
        format!("/aws/eks/{cluster_name}/{namespace}/{name}/logs"),
        min_retention,
        prefix.as_deref(),
        &ownership,
    );
    let own_redactions = logs.and_then(|l| l.redaction.clone());
    let redaction_source = if own_redactions.is_some() {
        Source::Pipeline
    } else {
        Source::BuiltIn
    };
    let mut redactions = own_redactions.unwrap_or_default();
    m.set_source("logs.redaction", redaction_source);
    for required in pol_logs.and_then(|l| l.required_redactions.clone()).unwrap_or_default() {
        if !redactions.iter().any(|r| same_redaction(r, &required)) {
            redactions.push(required);
            m.set_source("logs.redaction", Source::PolicyGuardrail);
        }
    }
    let job_id_label = logs.and_then(|l| l.job_id_label.clone());

    // Metrics.
    let dcgm = spec.metrics.as_ref().and_then(|x| x.dcgm.as_ref());
    let cw = spec.metrics.as_ref().and_then(|x| x.cloudwatch.as_ref());
    let pol_metrics = pol.and_then(|p| p.metrics.as_ref());
    let dcgm_enabled = m.pick("metrics.dcgm.enabled", dcgm.and_then(|d| d.enabled), None, true);
    let min_scrape = pol_metrics
        .and_then(|x| x.min_scrape_interval.as_ref())
        .and_then(|s| parse_duration_ms(s).ok());
    let mut scrape_interval_ms = m.pick(
        "metrics.dcgm.scrapeInterval",
        dcgm.and_then(|d| d.scrape_interval.as_ref())
            .and_then(|s| parse_duration_ms(s).ok()),
        None,
        30_000,
    );
    if let Some(min) = min_scrape
        && scrape_interval_ms < min
    {
        if m.sources.get("metrics.dcgm.scrapeInterval") == Some(&Source::Pipeline) {
            m.violate(
                "spec.metrics.dcgm.scrapeInterval",
                "metrics.minScrapeInterval",
                format!(
                    "{} is shorter than the policy minimum {}",
                    crate::crd::format_duration_ms(scrape_interval_ms),
                    crate::crd::format_duration_ms(min)
                ),
            );
        } else {
            scrape_interval_ms = min;
            m.set_source("metrics.dcgm.scrapeInterval", Source::PolicyGuardrail);
        }
    }
    let builtin_metrics: Vec<String> = DEFAULT_DCGM_METRICS.iter().map(|s| s.to_string()).collect();
    let mut metrics = m.pick(
        "metrics.dcgm.metrics",
        dcgm.and_then(|d| d.metrics.clone()),
        pol_metrics.and_then(|x| x.defaults.clone()),
        builtin_metrics,
    );
    if let Some(allowed) = pol_metrics.and_then(|x| x.allowed.as_ref()) {
        for (i, metric) in metrics.iter().enumerate() {
            if !allowed.contains(metric) {
                m.violate(
                    format!("spec.metrics.dcgm.metrics[{i}]"),
                    "metrics.allowed",
                    format!("{metric} is not in the policy's allowed metrics"),
                );
            }
        }
    }
    // A Managed exporter collects the policy's `allowed` list, else its `defaults` (its counters
    // CSV): a field outside it would be scraped for nothing and still counted in the estimate.
    let managed =
        pol.is_some_and(|p| p.dcgm_exporter.as_ref().and_then(|x| x.mode).unwrap_or_default() == ExporterMode::Managed);
    if managed && pol_metrics.and_then(|x| x.allowed.as_ref()).is_none() {
        let collected = pol_metrics
            .and_then(|x| x.defaults.clone())
            .unwrap_or_else(|| DEFAULT_DCGM_METRICS.iter().map(|s| s.to_string()).collect());
        for (i, metric) in metrics.iter().enumerate() {
            if !collected.contains(metric) {
                m.violate(
                    format!("spec.metrics.dcgm.metrics[{i}]"),
                    "dcgmExporter.mode",
                    format!(
                        "{metric} is not collected by the policy's Managed DCGM exporter (it collects metrics.allowed, else metrics.defaults)"
                    ),
                );
            }
        }
    }
    metrics.sort();
    metrics.dedup();
    if let Some(max) = pol_metrics.and_then(|x| x.max_metrics_per_gpu)
        && metrics.len() > max.max(0) as usize
    {
        m.violate(
            "spec.metrics.dcgm.metrics",
            "metrics.maxMetricsPerGpu",
            format!(
                "{} metrics selected; the policy allows at most {max} per GPU",
                metrics.len()
            ),
        );
    }
    let cw_namespace = m.pick(
        "metrics.cloudwatch.namespace",
        cw.and_then(|c| c.namespace.clone()),
        None,
        "ML/GPU".into(),
    );
    let dimensions = m.pick(
        "metrics.cloudwatch.dimensions",
        cw.and_then(|c| c.dimensions.clone()),
        None,
        vec![
            vec!["k8s.cluster.name".into(), "k8s.node.name".into(), "gpu".into()],
            vec!["k8s.cluster.name".into()],
        ],
    );
    let metrics_group = log_group(
        &mut m,
        "metrics.cloudwatch.logGroup",
        cw.and_then(|c| c.log_group.as_ref()),
        format!("/aws/eks/{cluster_name}/{namespace}/{name}/metrics"),
        min_retention,
        prefix.as_deref(),
        &ownership,
    );

    // Encryption.
    let kms_spec = spec.encryption.as_ref().and_then(|e| e.kms.as_ref());
    let require_kms = pol_logs.and_then(|l| l.require_kms).unwrap_or(false);
    let kms = match kms_spec {
        Some(k) if k.key_arn.is_some() => {
            m.set_source("encryption.kms", Source::Pipeline);
            EffKms::Existing {
                key_arn: k.key_arn.clone().unwrap_or_default(),
            }
        }
        Some(k) if k.disabled == Some(true) => {
            m.set_source("encryption.kms", Source::Pipeline);
            if require_kms {
                m.violate(
                    "spec.encryption.kms.disabled",
                    "logs.requireKms",
                    "the policy requires a customer-managed KMS key for log groups",
                );
            }
            EffKms::Disabled
        }
        _ => {
            let create = kms_spec.and_then(|k| k.create.as_ref());
            let derived_alias = bounded_name(
                &format!("alias/mlobs/{cluster_name}/{namespace}/{name}"),
                256,
                is_alias_char,
            );
            let alias = m.pick(
                "encryption.kms.create.alias",
                create.and_then(|c| c.alias.clone()),
                None,
                derived_alias,
            );
            let rotation = m.pick(
                "encryption.kms.create.rotation",
                create.and_then(|c| c.rotation),
                None,
                true,
            );
            let deletion_window_days = m.pick(
                "encryption.kms.create.deletionWindowInDays",
                create.and_then(|c| c.deletion_window_in_days),
                None,
                30,
            );
            EffKms::Create {
                alias,
                rotation,
                deletion_window_days,
            }
        }
    };

    // Identity.
    let id = spec.identity.as_ref();
    let pol_id = pol.and_then(|p| p.identity.as_ref());
    let allowed_modes = pol_id.and_then(|i| i.allowed_modes.clone());
    let mode = m.pick(
        "identity.mode",
        id.and_then(|i| i.mode),
        allowed_modes.as_ref().and_then(|a| a.first().copied()),
        IdentityMode::Irsa,
    );
    if let Some(allowed) = &allowed_modes
        && !allowed.contains(&mode)
    {
        m.violate(
            "spec.identity.mode",
            "identity.allowedModes",
            format!("{} is not an allowed identity mode", mode.as_str()),
        );
    }
    let role = match id.and_then(|i| i.existing_role_arn.clone()) {
        Some(arn) => {
            m.set_source("identity.role", Source::Pipeline);
            EffRole::Existing { arn }
        }
        None => {
            let derived = bounded_name(&format!("mlobs-{cluster_name}-{namespace}-{name}"), 64, is_role_char);
            let name = m.pick("identity.roleName", id.and_then(|i| i.role_name.clone()), None, derived);
            EffRole::Create { name }
        }
    };
    let oidc_provider_arn = id.and_then(|i| i.oidc_provider_arn.clone());
    if mode == IdentityMode::Irsa && oidc_provider_arn.is_none() && matches!(role, EffRole::Create { .. }) {
        m.error(
            "spec.identity.oidcProviderArn",
            "required",
            "IRSA needs the cluster's OIDC provider ARN to write the role's trust policy",
        );
    }
    let pol_boundary = pol_id.and_then(|i| i.permissions_boundary_arn.clone());
    let permissions_boundary_arn = match &role {
        EffRole::Existing { .. } => None,
        EffRole::Create { .. } => {
            let b = m.pick::<Option<String>>(
                "identity.permissionsBoundaryArn",
                id.and_then(|i| i.permissions_boundary_arn.clone()).map(Some),
                pol_boundary.clone().map(Some),
                None,
            );
            if let (Some(required), Some(chosen)) = (&pol_boundary, &b)
                && required != chosen
            {
                m.violate(
                    "spec.identity.permissionsBoundaryArn",
                    "identity.permissionsBoundaryArn",
                    format!("collector roles must carry the boundary {required}"),
                );
            }
            b
        }
    };
    let identity = EffIdentity {
        mode,
        oidc_provider_arn,
        role,
        permissions_boundary_arn,
        source_vpc: id.and_then(|i| i.source_vpc.clone()),
        service_account: if collector_namespace == namespace {
            bounded_name(&format!("mlobs-{name}"), 253, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
            })
        } else {
            bounded_name(&format!("mlobs-{namespace}-{name}"), 63, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })
        },
    };

    // Collector.
    let col = spec.collector.as_ref();
    let col_def = pol.and_then(|p| p.collector_defaults.as_ref());
    let image = m.pick(
        "collector.image",
        col.and_then(|c| c.image.clone()),
        col_def.and_then(|c| c.image.clone()),
        DEFAULT_COLLECTOR_IMAGE.to_string(),
    );
    let resources = m.pick(
        "collector.resources",
        col.and_then(|c| c.resources.clone()),
        col_def.and_then(|c| c.resources.clone()),
        builtin_resources(),
    );
    let memory_limit_mib = match resources.limits.as_ref().and_then(|l| l.get("memory")) {
        Some(q) => match quantity_mib(q) {
            Some(mib) if mib >= 64 => mib,
            _ => {
                m.error(
                    "spec.collector.resources.limits.memory",
                    "memoryLimit",
                    format!("{:?} must be a memory size of at least 64Mi", q.0),
                );
                0
            }
        },
        None => {
            m.error(
                "spec.collector.resources.limits.memory",
                "required",
                "is required: memory_limiter and GOMEMLIMIT are derived from it",
            );
            0
        }
    };
    let batch = col.and_then(|c| c.batch.as_ref());
    let batch_size = m.pick(
        "collector.batch.sendBatchSize",
        batch.and_then(|b| b.send_batch_size),
        None,
        1000,
    );
    let batch_timeout_ms = m.pick(
        "collector.batch.timeout",
        batch
            .and_then(|b| b.timeout.as_ref())
            .and_then(|t| parse_duration_ms(t).ok()),
        None,
        10_000,
    );
    let queue_host_path = m.pick(
        "collector.queueHostPath",
        col.and_then(|c| c.queue_host_path.clone()),
        None,
        format!("/var/lib/mlobs/{namespace}-{name}"),
    );
    let retry_max_elapsed_ms = m.pick(
        "collector.retryMaxElapsed",
        col.and_then(|c| c.retry_max_elapsed.as_ref())
            .and_then(|t| parse_duration_ms(t).ok()),
        None,
        300_000,
    );
    let resource_attributes = m.pick(
        "collector.resourceAttributes",
        col.and_then(|c| c.resource_attributes.clone()),
        None,
        BTreeMap::new(),
    );
    let otlp_enabled = m.pick(
        "traces.otlp.enabled",
        spec.traces
            .as_ref()
            .and_then(|t| t.otlp.as_ref())
            .and_then(|o| o.enabled),
        None,
        false,
    );

    // The DCGM exporter the collector scrapes.
    let exporter = exporter(&mut m, ctx);

    let drift_policy = m.pick("driftPolicy", spec.drift_policy, None, Default::default());
    let deletion_policy = m.pick("deletionPolicy", spec.deletion_policy, None, Default::default());
    let resync_interval_ms = m.pick(
        "resyncInterval",
        spec.resync_interval.as_ref().and_then(|r| parse_duration_ms(r).ok()),
        None,
        600_000,
    );
    // A healthy collector can wait a scrape interval for data and a batch timeout to send it:
    // a shorter grace period would report healthy pipelines as not flowing.
    let scrape_ms = if dcgm_enabled && !metrics.is_empty() {
        scrape_interval_ms
    } else {
        0
    };
    let quiet_ms = scrape_ms.saturating_add(batch_timeout_ms);
    let mut data_flow_grace_ms = m.pick(
        "dataFlow.gracePeriod",
        spec.data_flow
            .as_ref()
            .and_then(|f| f.grace_period.as_ref())
            .and_then(|g| parse_duration_ms(g).ok()),
        None,
        DEFAULT_DATA_FLOW_GRACE_MS,
    );
    if data_flow_grace_ms <= quiet_ms {
        if m.sources.get("dataFlow.gracePeriod") == Some(&Source::Pipeline) {
            let fmt = crate::crd::format_duration_ms;
            m.error(
                "spec.dataFlow.gracePeriod",
                "longerThanSendInterval",
                format!(
                    "must be longer than the scrape interval plus the batch timeout ({} + {} = {}), got {}",
                    fmt(scrape_ms),
                    fmt(batch_timeout_ms),
                    fmt(quiet_ms),
                    fmt(data_flow_grace_ms)
                ),
            );
        } else {
            // A long scrape interval or batch timeout must not turn the default into an error.
            data_flow_grace_ms = quiet_ms.saturating_mul(2);
            m.set_source("dataFlow.gracePeriod", Source::Derived);
        }
    }
    let adopt_annotation = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("mlobs.io/adopt"))
        .is_some_and(|v| v == "true");
    let adopt = spec.adopt.unwrap_or(false) || adopt_annotation;
    let budget = pol.and_then(|p| p.budget.as_ref()).map(|b| EffBudget {
        monthly_usd: b.monthly_usd,
        action: b.action.unwrap_or(BudgetAction::Deny),
    });

    let collects_metrics = dcgm_enabled && !metrics.is_empty();
    if !(logs_enabled || collects_metrics || otlp_enabled) {
        // A collector with no pipeline refuses to start; say so here instead of crash-looping.
        m.error(
            "spec",
            "nothingToCollect",
            "logs, DCGM metrics and OTLP are all disabled: nothing to collect",
        );
    }
    if !m.errors.is_empty() {
        return Err(Invalid(m.errors));
    }
    let effective = Effective {
        namespace,
        name,
        collector_namespace,
        uid: p.metadata.uid.clone(),
        cluster_name,
        region,
        account_id: ctx.account_id.clone(),
        partition: ctx.partition.clone(),
        policy: policy.map(|p| (m.policy_name.clone(), p.metadata.generation)),
        source_namespaces,
        node_selector,
        tolerations,
        logs: EffLogs {
            enabled: logs_enabled,
            include,
            exclude,
            group: logs_group,
            redactions,
            job_id_label,
        },
        metrics: EffMetrics {
            dcgm_enabled,
            scrape_interval_ms,
            metrics,
            namespace: cw_namespace,
            dimensions,
            group: metrics_group,
        },
        kms,
        identity,
        collector: EffCollector {
            image,
            resources,
            memory_limit_mib,
            batch_size: batch_size.max(1) as u32,
            batch_timeout_ms,
            queue_host_path,
            retry_max_elapsed_ms,
            resource_attributes,
            otlp_enabled,
        },
        exporter,
        drift_policy,
        deletion_policy,
        resync_interval_ms,
        data_flow_grace_ms,
        adopt,
        budget,
        sources: m.sources,
    };
    let features = collector_version::features(&effective);
    if let Err(message) = collector_version::check_image(&effective.collector.image, &features) {
        // The pipeline's own field is where the fix goes either way: pin a newer image there, or
        // ask the policy owner to raise collectorDefaults.image.
        let message = match effective.sources.get("collector.image") {
            Some(Source::PolicyDefault) => format!(
                "{message} (the image is policy {:?}'s spec.collectorDefaults.image)",
                m.policy_name
            ),
            _ => message,
        };
        return Err(Invalid(vec![FieldError {
            path: "spec.collector.image".into(),
            rule: "collectorVersion".into(),
            message,
        }]));
    }
    Ok(Merged {
        effective,
        violations: m.violations,
    })
}

fn log_group(
    m: &mut Merger<'_>,
    path: &str,
    spec: Option<&crate::crd::LogGroupSpec>,
    derived_name: String,
    min_retention: Option<i32>,
    prefix: Option<&str>,
    ownership: &BTreeMap<String, String>,
) -> EffLogGroup {
    let name = m.pick(
        &format!("{path}.name"),
        spec.and_then(|s| s.name.clone()),
        None,
        derived_name,
    );
    let retention_days = m.pick(
        &format!("{path}.retentionInDays"),
        spec.and_then(|s| s.retention_in_days),
        min_retention,
        30,
    );
    if let Some(min) = min_retention
        && retention_days < min
    {
        m.violate(
            format!("spec.{path}.retentionInDays"),
            "logs.minRetentionInDays",
            format!("{retention_days} days is below the policy minimum of {min}"),
        );
    }
    if let Some(prefix) = prefix
        && !name.starts_with(prefix)
    {
        m.violate(
            format!("spec.{path}.name"),
            "logs.logGroupPrefix",
            format!("{name:?} must start with {prefix:?}"),
        );
    }
    let class = m.pick(
        &format!("{path}.class"),
        spec.and_then(|s| s.class),
        None,
        LogGroupClass::Standard,
    );
    let mut tags = spec.and_then(|s| s.tags.clone()).unwrap_or_default();
    tags.extend(ownership.clone());
    EffLogGroup {
        name,
        retention_days,
        class,
        tags,
    }
}

fn exporter(m: &mut Merger<'_>, ctx: &Context) -> EffExporter {
    let spec = m.policy.and_then(|p| p.spec.dcgm_exporter.clone());
    let policy_name = m.policy_name.clone();
    let port = spec
        .as_ref()
        .and_then(|s| s.port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(9400);
    match (m.policy, spec.as_ref().and_then(|s| s.mode).unwrap_or_default()) {
        (Some(_), ExporterMode::Managed) => {
            m.set_source("exporter", Source::PolicyDefault);
            let s = spec.unwrap_or_default();
            EffExporter {
                mode: ExporterMode::Managed,
                namespace: s.namespace.unwrap_or_else(|| ctx.operator_namespace.clone()),
                pod_selector: BTreeMap::from([
                    (EXPORTER_NAME_LABEL.0.to_string(), EXPORTER_NAME_LABEL.1.to_string()),
                    ("mlobs.io/policy".to_string(), policy_label(&policy_name)),
                ]),
                port,
                image: s.image.unwrap_or_else(|| DEFAULT_EXPORTER_IMAGE.to_string()),
                collect_interval_ms: s
                    .collect_interval_ms
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(30_000),
            }
        }
        (Some(_), ExporterMode::External) => {
            m.set_source("exporter", Source::PolicyDefault);
            let s = spec.unwrap_or_default();
            EffExporter {
                mode: ExporterMode::External,
                namespace: s.namespace.unwrap_or_default(),
                pod_selector: s.pod_selector.unwrap_or_default(),
                port,
                image: String::new(),
                collect_interval_ms: 0,
            }
        }
        // Without a policy nobody runs a managed exporter: scrape NVIDIA gpu-operator's, the
        // most common existing one.
        (None, _) => {
            m.set_source("exporter", Source::BuiltIn);
            EffExporter {
                mode: ExporterMode::External,
                namespace: "gpu-operator".into(),
                pod_selector: BTreeMap::from([("app".to_string(), "nvidia-dcgm-exporter".to_string())]),
                port: 9400,
                image: String::new(),
                collect_interval_ms: 0,
            }
        }
    }
}
