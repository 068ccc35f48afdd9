//! Pipeline spec + policy → [`Effective`]: built-in defaults < policy defaults < pipeline spec,
//! then the policy's guardrails. Pure.
//!
//! One function per section of the spec (placement, logs, metrics, kms, identity, collector,
//! exporter, destinations, archive, lifecycle), each returning its part of the effective spec and the [`Sources`] of that
//! part; [`merge`] puts them together.
//!
//! Two kinds of failure: an [`Invalid`] when a value cannot be resolved at all (no region, IRSA
//! without an OIDC provider), and [`Violation`]s when the pipeline breaks a guardrail. Violations
//! do not stop the merge, so `mlobs plan` can show the whole picture next to them.

mod alerts;
mod archive;
mod collector;
mod destinations;
mod hot_path;
mod identity;
mod lifecycle;
mod logs;
mod metrics;
mod placement;

use super::effective::{Context, Effective, Violation};
use super::sources::Sources;
use crate::crd::validate::{FieldError, Invalid};
use crate::crd::{GpuTelemetryPolicy, GpuTelemetryPolicySpec, MLObservabilityPipeline};

pub use crate::collector_version::DEFAULT_COLLECTOR_IMAGE;
pub use archive::{DEFAULT_RETENTION_YEARS, DEFAULT_TRANSITION_DAYS};
pub use collector::quantity_mib;
pub use lifecycle::DEFAULT_DATA_FLOW_GRACE_MS;

/// The result of a merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub effective: Effective,
    pub violations: Vec<Violation>,
}

/// The governing policy and what the merge found wrong so far.
struct Merger<'a> {
    policy: Option<&'a GpuTelemetryPolicy>,
    policy_name: String,
    violations: Vec<Violation>,
    errors: Vec<FieldError>,
}

impl<'a> Merger<'a> {
    fn policy_spec(&self) -> Option<&'a GpuTelemetryPolicySpec> {
        self.policy.map(|p| &p.spec)
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

/// Where a pipeline's collector runs, as [`merge`] decides it (the same placement section): the
/// GPU node selector and the collector's namespace. The controller's dereference step reads the
/// matching nodes and the namespace with it before the plan merges the whole spec.
pub fn placement_of(
    p: &MLObservabilityPipeline,
    policy: Option<&GpuTelemetryPolicy>,
    ctx: &Context,
) -> (std::collections::BTreeMap<String, String>, String) {
    let mut m = Merger {
        policy,
        policy_name: String::new(),
        violations: vec![],
        errors: vec![],
    };
    let at = placement::placement(&mut m, p, ctx);
    (at.node_selector.value, at.collector_namespace.value)
}

/// What the last AWS step recorded in the pipeline's status: the ids AWS assigned to resources
/// mlobs created (an AMP workspace by alias), which the configuration must name.
fn recorded_aws(p: &MLObservabilityPipeline) -> Option<&crate::crd::AwsStatus> {
    p.status.as_ref().and_then(|s| s.aws.as_deref())
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
        violations: vec![],
        errors: vec![],
    };
    let spec = &p.spec;
    let at = placement::placement(&mut m, p, ctx);
    let (logs, logs_src) = logs::logs(&mut m, spec, &at);
    let (mut metrics, metrics_src) = metrics::metrics(&mut m, spec, &at);
    let kms = identity::kms(&mut m, spec, &at);
    let (identity, identity_src) = identity::identity(&mut m, spec, &at);
    let (collector, collector_src) = collector::collector(&mut m, spec, &at);
    let exporter = collector::exporter(&m, ctx);
    let (mut destinations, mut destinations_src) = destinations::destinations(
        &mut m,
        spec,
        &at,
        ctx,
        &metrics,
        collector.otlp_enabled,
        recorded_aws(p),
    );
    (destinations.archive, destinations_src.archive) = archive::archive(&mut m, spec, &at, ctx, logs.enabled);
    (destinations.hot_path, destinations_src.hot_path) = hot_path::hot_path(&mut m, spec, &at);
    let alerts = alerts::alerts(&mut m, spec, &at, ctx, &mut metrics);
    let life = lifecycle::lifecycle(&mut m, p, &metrics, &collector);

    if !(logs.enabled || metrics.ships() || collector.otlp_enabled) {
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
    let sources = Sources {
        cluster_name: at.cluster_name.source,
        region: at.region.source,
        collector_namespace: at.collector_namespace.source,
        placement: at.sources(),
        logs: logs_src,
        metrics: metrics_src,
        kms: kms.source,
        identity: identity_src,
        collector: collector_src,
        exporter: exporter.source,
        destinations: destinations_src,
        lifecycle: life.sources(),
    };
    let effective = Effective {
        namespace: at.namespace,
        name: at.name,
        collector_namespace: at.collector_namespace.value,
        uid: p.metadata.uid.clone(),
        cluster_name: at.cluster_name.value,
        region: at.region.value,
        account_id: ctx.account_id.clone(),
        partition: ctx.partition.clone(),
        policy: policy.map(|p| (m.policy_name.clone(), p.metadata.generation)),
        source_namespaces: at.source_namespaces.value,
        node_selector: at.node_selector.value,
        tolerations: at.tolerations.value,
        logs,
        metrics,
        kms: kms.value,
        identity,
        collector,
        exporter: exporter.value,
        destinations,
        alerts,
        dashboards: alerts::dashboards(spec),
        drift_policy: life.drift_policy.value,
        deletion_policy: life.deletion_policy.value,
        resync_interval_ms: life.resync_interval_ms.value,
        data_flow_grace_ms: life.data_flow_grace_ms.value,
        adopt: life.adopt,
        budget: life.budget,
        sources,
    };
    collector::check_image(&effective, &m.policy_name)?;
    Ok(Merged {
        effective,
        violations: m.violations,
    })
}

/// Whether an optional section (archive, hot path) is on, and why: its own `enabled`, else on
/// because it is present, else the policy's `required`, else off.
fn section_enabled(own: Option<bool>, present: bool, required: bool) -> super::sources::Sourced<bool> {
    use super::sources::{Source, Sourced};
    match (own, present, required) {
        (Some(on), _, _) => Sourced::new(on, Source::Pipeline),
        (None, true, _) => Sourced::new(true, Source::Pipeline),
        (None, false, true) => Sourced::new(true, Source::PolicyDefault),
        (None, false, false) => Sourced::new(false, Source::BuiltIn),
    }
}
