//! `spec.metrics`: DCGM scraping and the CloudWatch EMF output.

use super::Merger;
use super::logs::{GroupRules, log_group};
use super::placement::Placement;
use crate::crd::{
    DEFAULT_DCGM_METRICS, ExporterMode, MLObservabilityPipelineSpec, format_duration_ms, parse_duration_ms,
};
use crate::desired::effective::EffMetrics;
use crate::desired::sources::{MetricsSources, Source, Sourced};

const DEFAULT_SCRAPE_INTERVAL_MS: u64 = 30_000;

fn default_metrics() -> Vec<String> {
    DEFAULT_DCGM_METRICS.iter().map(|s| s.to_string()).collect()
}

/// The scrape interval, raised to the policy's minimum unless the pipeline chose it (then it is
/// a violation).
fn scrape_interval(m: &mut Merger<'_>, spec: &MLObservabilityPipelineSpec) -> Sourced<u64> {
    let dcgm = spec.metrics.as_ref().and_then(|x| x.dcgm.as_ref());
    let mut interval = Sourced::pipeline_or(
        dcgm.and_then(|d| d.scrape_interval.as_ref())
            .and_then(|s| parse_duration_ms(s).ok()),
        DEFAULT_SCRAPE_INTERVAL_MS,
    );
    let min = (m.policy_spec().and_then(|p| p.metrics.as_ref()))
        .and_then(|x| x.min_scrape_interval.as_ref())
        .and_then(|s| parse_duration_ms(s).ok());
    if let Some(min) = min
        && interval.value < min
    {
        if interval.source == Source::Pipeline {
            m.violate(
                "spec.metrics.dcgm.scrapeInterval",
                "metrics.minScrapeInterval",
                format!(
                    "{} is shorter than the policy minimum {}",
                    format_duration_ms(interval.value),
                    format_duration_ms(min)
                ),
            );
        } else {
            interval.replace(min, Source::PolicyGuardrail);
        }
    }
    interval
}

/// The selected DCGM fields (sorted, unique), checked against the policy's lists.
fn selected_metrics(m: &mut Merger<'_>, spec: &MLObservabilityPipelineSpec) -> Sourced<Vec<String>> {
    let dcgm = spec.metrics.as_ref().and_then(|x| x.dcgm.as_ref());
    let pol = m.policy_spec();
    let pol_metrics = pol.and_then(|p| p.metrics.as_ref());
    let mut metrics = Sourced::pick(
        dcgm.and_then(|d| d.metrics.clone()),
        pol_metrics.and_then(|x| x.defaults.clone()),
        default_metrics(),
    );
    let allowed = pol_metrics.and_then(|x| x.allowed.as_ref());
    for (i, metric) in metrics.value.iter().enumerate() {
        if allowed.is_some_and(|a| !a.contains(metric)) {
            m.violate(
                format!("spec.metrics.dcgm.metrics[{i}]"),
                "metrics.allowed",
                format!("{metric} is not in the policy's allowed metrics"),
            );
        }
    }
    // A Managed exporter collects the policy's `allowed` list, else its `defaults` (its counters
    // CSV): a field outside it would be scraped for nothing and still counted in the estimate.
    let managed =
        pol.is_some_and(|p| p.dcgm_exporter.as_ref().and_then(|x| x.mode).unwrap_or_default() == ExporterMode::Managed);
    if managed && allowed.is_none() {
        let collected = pol_metrics
            .and_then(|x| x.defaults.clone())
            .unwrap_or_else(default_metrics);
        for (i, metric) in metrics.value.iter().enumerate() {
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
    metrics.value.sort();
    metrics.value.dedup();
    if let Some(max) = pol_metrics.and_then(|x| x.max_metrics_per_gpu)
        && metrics.value.len() > max.max(0) as usize
    {
        m.violate(
            "spec.metrics.dcgm.metrics",
            "metrics.maxMetricsPerGpu",
            format!(
                "{} metrics selected; the policy allows at most {max} per GPU",
                metrics.value.len()
            ),
        );
    }
    metrics
}

pub(super) fn metrics(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
) -> (EffMetrics, MetricsSources) {
    let dcgm = spec.metrics.as_ref().and_then(|x| x.dcgm.as_ref());
    let cw = spec.metrics.as_ref().and_then(|x| x.cloudwatch.as_ref());
    let dcgm_enabled = Sourced::pipeline_or(dcgm.and_then(|d| d.enabled), true);
    let scrape = scrape_interval(m, spec);
    let metrics = selected_metrics(m, spec);
    let namespace = Sourced::pipeline_or(cw.and_then(|c| c.namespace.clone()), "ML/GPU".to_string());
    let dimensions = Sourced::pipeline_or(
        cw.and_then(|c| c.dimensions.clone()),
        vec![
            vec!["k8s.cluster.name".into(), "k8s.node.name".into(), "gpu".into()],
            vec!["k8s.cluster.name".into()],
        ],
    );
    let rules = GroupRules::of(m, at);
    let (group, group_src) = log_group(
        m,
        "metrics.cloudwatch.logGroup",
        cw.and_then(|c| c.log_group.as_ref()),
        format!(
            "/aws/eks/{}/{}/{}/metrics",
            at.cluster_name.value, at.namespace, at.name
        ),
        &rules,
    );
    let sources = MetricsSources {
        dcgm_enabled: dcgm_enabled.source,
        scrape_interval: scrape.source,
        metrics: metrics.source,
        namespace: namespace.source,
        dimensions: dimensions.source,
        group: group_src,
    };
    let effective = EffMetrics {
        dcgm_enabled: dcgm_enabled.value,
        scrape_interval_ms: scrape.value,
        metrics: metrics.value,
        namespace: namespace.value,
        dimensions: dimensions.value,
        group,
    };
    (effective, sources)
}
