//! How the pipeline lives: drift and deletion policy, resync interval, the data-flow grace period,
//! adoption and the policy's budget.

use super::Merger;
use crate::conventions::ADOPT_ANNOTATION;
use crate::crd::{
    BudgetAction, DeletionPolicy, DriftPolicy, MLObservabilityPipeline, format_duration_ms, parse_duration_ms,
};
use crate::desired::effective::{EffBudget, EffCollector, EffMetrics};
use crate::desired::sources::{LifecycleSources, Source, Sourced};

/// `spec.dataFlow.gracePeriod` by default: well above the default scrape interval (30s) plus batch
/// timeout (10s), and short enough that a stop shows within one default resync (10m) after it.
pub const DEFAULT_DATA_FLOW_GRACE_MS: u64 = 300_000;
const DEFAULT_RESYNC_INTERVAL_MS: u64 = 600_000;

pub(super) struct Lifecycle {
    pub drift_policy: DriftPolicy,
    pub deletion_policy: DeletionPolicy,
    pub resync_interval_ms: u64,
    pub data_flow_grace_ms: u64,
    pub adopt: bool,
    pub budget: Option<EffBudget>,
}

/// A healthy collector can wait a scrape interval for data and a batch timeout to send it: a
/// shorter grace period would report healthy pipelines as not flowing.
fn data_flow_grace(
    m: &mut Merger<'_>,
    p: &MLObservabilityPipeline,
    metrics: &EffMetrics,
    collector: &EffCollector,
) -> Sourced<u64> {
    let scrape_ms = if metrics.ships() { metrics.scrape_interval_ms } else { 0 };
    let batch_ms = collector.batch_timeout_ms;
    let quiet_ms = scrape_ms.saturating_add(batch_ms);
    let own = (p.spec.data_flow.as_ref())
        .and_then(|f| f.grace_period.as_ref())
        .and_then(|g| parse_duration_ms(g).ok());
    let mut grace = Sourced::pipeline_or(own, DEFAULT_DATA_FLOW_GRACE_MS);
    if grace.value > quiet_ms {
        return grace;
    }
    if grace.source == Source::Pipeline {
        let fmt = format_duration_ms;
        m.error(
            "spec.dataFlow.gracePeriod",
            "longerThanSendInterval",
            format!(
                "must be longer than the scrape interval plus the batch timeout ({} + {} = {}), got {}",
                fmt(scrape_ms),
                fmt(batch_ms),
                fmt(quiet_ms),
                fmt(grace.value)
            ),
        );
    } else {
        // A long scrape interval or batch timeout must not turn the default into an error.
        grace.replace(quiet_ms.saturating_mul(2), Source::Derived);
    }
    grace
}

pub(super) fn lifecycle(
    m: &mut Merger<'_>,
    p: &MLObservabilityPipeline,
    metrics: &EffMetrics,
    collector: &EffCollector,
) -> (Lifecycle, LifecycleSources) {
    let spec = &p.spec;
    let drift = Sourced::pipeline_or(spec.drift_policy, DriftPolicy::default());
    let deletion = Sourced::pipeline_or(spec.deletion_policy, DeletionPolicy::default());
    let resync = Sourced::pipeline_or(
        spec.resync_interval.as_ref().and_then(|r| parse_duration_ms(r).ok()),
        DEFAULT_RESYNC_INTERVAL_MS,
    );
    let grace = data_flow_grace(m, p, metrics, collector);
    let adopt_annotation = (p.metadata.annotations.as_ref())
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .is_some_and(|v| v == "true");
    let budget = m.policy_spec().and_then(|p| p.budget.as_ref()).map(|b| EffBudget {
        monthly_usd: b.monthly_usd,
        action: b.action.unwrap_or(BudgetAction::Deny),
    });
    let sources = LifecycleSources {
        drift_policy: drift.source,
        deletion_policy: deletion.source,
        resync_interval: resync.source,
        data_flow_grace: grace.source,
    };
    let life = Lifecycle {
        drift_policy: drift.value,
        deletion_policy: deletion.value,
        resync_interval_ms: resync.value,
        data_flow_grace_ms: grace.value,
        adopt: spec.adopt.unwrap_or(false) || adopt_annotation,
        budget,
    };
    (life, sources)
}
