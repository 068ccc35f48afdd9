//! Destinations beyond CloudWatch (`spec.traces.destination`, `spec.metrics.prometheus`,
//! `spec.datadog`) and the policy's guardrails on them (`traces.allowXRay`,
//! `destinations.allowSaaS`).

use super::Merger;
use super::placement::Placement;
use crate::crd::{AwsStatus, MLObservabilityPipelineSpec, PrometheusSpec, TracesDestinationSpec};
use crate::desired::destinations::{
    DEFAULT_DATADOG_SITE, EffDatadog, EffDestinations, EffOtlpBackend, EffPrometheus, EffTraces, ManagedWorkspace,
    PENDING_WORKSPACE_ID, parse_arn,
};
use crate::desired::effective::{Context, EffMetrics};
use crate::desired::sources::{DestinationsSources, Source};

const WORKSPACE_PATH: &str = "spec.metrics.prometheus.workspaceArn";

/// Shown as the policy of a built-in guardrail when no policy governs the pipeline.
const NO_POLICY: &str = "(none: built-in default)";

fn source(set: bool) -> Source {
    if set { Source::Pipeline } else { Source::BuiltIn }
}

fn traces(m: &mut Merger<'_>, d: &TracesDestinationSpec, otlp_enabled: bool) -> Option<EffTraces> {
    if !otlp_enabled {
        m.error(
            "spec.traces.destination",
            "otlpRequired",
            "spans arrive through the OTLP receiver: set traces.otlp.enabled: true",
        );
    }
    if d.xray.is_some() {
        let allowed = (m.policy_spec().and_then(|p| p.traces.as_ref())).and_then(|t| t.allow_xray);
        if allowed == Some(false) {
            m.violate(
                "spec.traces.destination.xray",
                "traces.allowXRay",
                "the policy forbids exporting spans to AWS X-Ray (its role statement needs \"Resource\": \"*\"); use traces.destination.otlp",
            );
        }
        return Some(EffTraces::XRay);
    }
    let o = d.otlp.as_ref()?;
    let tls = o.tls.as_ref();
    Some(EffTraces::Otlp(EffOtlpBackend {
        endpoint: o.endpoint.clone(),
        insecure: tls.and_then(|t| t.insecure).unwrap_or(false),
        ca: tls.and_then(|t| t.ca_config_map.clone()),
    }))
}

/// The workspace must be where the collector signs for (the pipeline's region) and in the
/// operator's account and partition: the role's statement and the endpoint are built from it.
/// A workspace by alias is in both by construction; its ARN comes from status once created.
fn prometheus(
    m: &mut Merger<'_>,
    p: &PrometheusSpec,
    at: &Placement,
    ctx: &Context,
    recorded: Option<&AwsStatus>,
) -> Option<EffPrometheus> {
    if p.workspace_arn.is_some() == p.workspace_alias.is_some() {
        m.error(
            "spec.metrics.prometheus",
            "oneWorkspace",
            crate::crd::destinations::ONE_WORKSPACE_MESSAGE,
        );
        return None;
    }
    if let Some(alias) = &p.workspace_alias {
        let region = at.region.value.clone();
        let arn = recorded
            .filter(|a| a.amp_workspace_alias.as_ref() == Some(alias))
            .and_then(|a| a.amp_workspace_arn.clone())
            .filter(|arn| parse_arn(arn).is_some_and(|x| x.service == "aps" && x.region == region));
        let pending = arn.is_none();
        let arn = arn.unwrap_or_else(|| {
            format!(
                "arn:{}:aps:{region}:{}:workspace/{PENDING_WORKSPACE_ID}",
                ctx.partition, ctx.account_id
            )
        });
        let id = parse_arn(&arn)
            .and_then(|x| x.resource.strip_prefix("workspace/").map(String::from))
            .unwrap_or_else(|| PENDING_WORKSPACE_ID.to_string());
        return Some(EffPrometheus {
            workspace_arn: arn,
            region,
            workspace_id: id,
            managed: Some(ManagedWorkspace {
                alias: alias.clone(),
                pending,
            }),
        });
    }
    let arn = p.workspace_arn.as_deref().unwrap_or_default();
    let Some(parts) = parse_arn(arn).filter(|a| a.service == "aps") else {
        m.error(
            WORKSPACE_PATH,
            "arnService",
            format!("{arn:?} is not an AMP workspace ARN (arn:aws:aps:<region>:<account>:workspace/<id>)"),
        );
        return None;
    };
    let region = &at.region.value;
    if !region.is_empty() && parts.region != region {
        let message = format!(
            "the workspace is in {}, the pipeline in {region}: remote write is signed for the pipeline's region",
            parts.region
        );
        m.error(WORKSPACE_PATH, "workspaceRegion", message);
    }
    if parts.account != ctx.account_id || parts.partition != ctx.partition {
        let message = format!(
            "the workspace is in account {} ({}), the operator in {} ({}): cross-account remote write is not supported (offline: pass --account-id)",
            parts.account, parts.partition, ctx.account_id, ctx.partition
        );
        m.error(WORKSPACE_PATH, "workspaceAccount", message);
    }
    let workspace_id = parts.resource.strip_prefix("workspace/").unwrap_or(parts.resource);
    Some(EffPrometheus {
        workspace_arn: arn.to_string(),
        region: parts.region.to_string(),
        workspace_id: workspace_id.to_string(),
        managed: None,
    })
}

/// SaaS export is refused unless a policy allows it, with no policy too (data sovereignty).
fn check_saas(m: &mut Merger<'_>) {
    let allowed = (m.policy_spec().and_then(|p| p.destinations.as_ref())).and_then(|d| d.allow_saas);
    if allowed == Some(true) {
        return;
    }
    let message =
        "Datadog is a SaaS destination outside AWS; the governing policy must set destinations.allowSaaS: true";
    m.violate("spec.datadog", "destinations.allowSaaS", message);
    if m.policy.is_none()
        && let Some(v) = m.violations.last_mut()
    {
        v.policy = NO_POLICY.into();
    }
}

/// A metrics destination receives the selected DCGM fields: without them it would get nothing.
fn needs_metrics(m: &mut Merger<'_>, metrics: &EffMetrics, path: &str) {
    if !metrics.ships() {
        m.error(
            path,
            "metricsRequired",
            "receives the selected DCGM fields: enable metrics.dcgm with at least one field",
        );
    }
}

pub(super) fn destinations(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
    ctx: &Context,
    metrics: &EffMetrics,
    otlp_enabled: bool,
    recorded: Option<&AwsStatus>,
) -> (EffDestinations, DestinationsSources) {
    let traces_spec = spec.traces.as_ref().and_then(|t| t.destination.as_ref());
    let amp_spec = spec.metrics.as_ref().and_then(|x| x.prometheus.as_ref());
    let traces = traces_spec.and_then(|d| traces(m, d, otlp_enabled));
    let prometheus = amp_spec.and_then(|p| {
        needs_metrics(m, metrics, "spec.metrics.prometheus");
        prometheus(m, p, at, ctx, recorded)
    });
    let datadog = spec.datadog.as_ref().map(|d| {
        needs_metrics(m, metrics, "spec.datadog");
        check_saas(m);
        EffDatadog {
            site: d.site.clone().unwrap_or_else(|| DEFAULT_DATADOG_SITE.into()),
            api_key: d.api_key_secret_ref.clone(),
        }
    });
    let sources = DestinationsSources {
        traces: source(traces_spec.is_some()),
        prometheus: source(amp_spec.is_some()),
        datadog: source(spec.datadog.is_some()),
        // Merged by `archive::archive`, which knows whether logs are shipped.
        archive: Default::default(),
        // Merged by `hot_path::hot_path`.
        hot_path: Default::default(),
    };
    let effective = EffDestinations {
        traces,
        prometheus,
        datadog,
        archive: None,
        hot_path: None,
    };
    (effective, sources)
}
