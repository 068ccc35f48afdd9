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

/// The lifecycle settings; `adopt` and `budget` are shown nowhere with a source.
pub(super) struct Lifecycle {
    pub drift_policy: Sourced<DriftPolicy>,
    pub deletion_policy: Sourced<DeletionPolicy>,
    pub resync_interval_ms: Sourced<u64>,
    pub data_flow_grace_ms: Sourced<u64>,
    pub adopt: bool,
    pub budget: Option<EffBudget>,
}

impl Lifecycle {
    pub fn sources(&self) -> LifecycleSources {
        LifecycleSources {
            drift_policy: self.drift_policy.source,
            deletion_policy: self.deletion_policy.source,
            resync_interval: self.resync_interval_ms.source,
            data_flow_grace: self.data_flow_grace_ms.source,
        }
    }
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
) -> Lifecycle {
    let spec = &p.spec;
    let adopt_annotation = (p.metadata.annotations.as_ref())
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .is_some_and(|v| v == "true");
    Lifecycle {
        drift_policy: Sourced::pipeline_or(spec.drift_policy, DriftPolicy::default()),
        deletion_policy: Sourced::pipeline_or(spec.deletion_policy, DeletionPolicy::default()),
        resync_interval_ms: Sourced::pipeline_or(
            spec.resync_interval.as_ref().and_then(|r| parse_duration_ms(r).ok()),
            DEFAULT_RESYNC_INTERVAL_MS,
        ),
        data_flow_grace_ms: data_flow_grace(m, p, metrics, collector),
        adopt: spec.adopt.unwrap_or(false) || adopt_annotation,
        budget: m.policy_spec().and_then(|p| p.budget.as_ref()).map(|b| EffBudget {
            monthly_usd: b.monthly_usd,
            action: b.action.unwrap_or(BudgetAction::Deny),
        }),
    }
}
