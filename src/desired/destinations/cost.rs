//! One line per enabled destination for `mlobs plan`: what it sends where, the IAM statement it
//! adds to the collector's role, and its monthly cost with every assumption spelled out. Rates
//! come from [`Prices`] (flags of the CLI); traffic the spec cannot know is a [`Traffic`] input.

use serde::Serialize;
use serde_json::Value;

use super::iam::{AMP_SID, XRAY_SID};
use super::{EffTraces, config};
use crate::desired::Desired;
use crate::desired::aws_plan::RolePlan;
use crate::desired::cost::{Prices, cents, tiered_usd};

/// Traffic assumptions of the destinations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Spans per second the pipeline's applications send, all nodes together.
    pub spans_per_second: f64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { spans_per_second: 100.0 }
    }
}

/// One destination in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationLine {
    /// e.g. `traces → AWS X-Ray`.
    pub destination: String,
    /// Where the collector sends (endpoint, workspace, site).
    pub target: String,
    /// The collector exporter rendered for it.
    pub exporter: &'static str,
    /// Statements it adds to the collector's role (none for non-AWS backends).
    pub iam_statements: Vec<Value>,
    /// USD per month; None when not estimated (a self-hosted backend).
    pub monthly_usd: Option<f64>,
    pub assumptions: Vec<String>,
}

/// The fleet the estimate is for.
#[derive(Debug, Clone, Copy)]
pub struct FleetSize {
    pub nodes: u32,
    pub gpus_per_node: u32,
}

fn statement(d: &Desired, sid: &str) -> Vec<Value> {
    let RolePlan::Create { inline_policy, .. } = &d.aws.role else {
        return vec![];
    };
    let all = inline_policy["Statement"].as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|s| s["Sid"] == sid).collect()
}

fn seconds_per_month(p: &Prices) -> f64 {
    p.hours_per_month * 3600.0
}

fn amp_rates(p: &Prices) -> String {
    let [a, b, c] = p.amp_usd_per_10m_samples;
    let [l1, l2] = p.amp_sample_tier_limits.map(|l| l as f64 / 1e6);
    format!(
        "${a:.2} per 10 million samples up to {l1:.0} million a month (--amp-usd-per-10m-samples), ${b:.2} up to {l2:.0} million, ${c:.2} beyond; storage and queries not included"
    )
}

/// Every enabled destination of `d`, in the order the collector config lists them.
pub fn lines(d: &Desired, fleet: FleetSize, p: &Prices, t: &Traffic) -> Vec<DestinationLine> {
    let e = &d.effective;
    let mut out = vec![];
    match &e.destinations.traces {
        Some(EffTraces::XRay) => {
            let spans = t.spans_per_second * seconds_per_month(p);
            out.push(DestinationLine {
                destination: "traces → AWS X-Ray".into(),
                target: format!("https://xray.{}.{}/v1/traces", e.region, super::dns_suffix(&e.partition)),
                exporter: config::XRAY_EXPORTER,
                iam_statements: statement(d, XRAY_SID),
                monthly_usd: Some(cents(spans / 1e6 * p.xray_usd_per_million_spans)),
                assumptions: vec![
                    format!(
                        "{} spans/s (--spans-per-second) × {} h = {:.0} million spans/month",
                        t.spans_per_second,
                        p.hours_per_month,
                        spans / 1e6
                    ),
                    format!(
                        "${:.2} per million spans (--xray-usd-per-million-spans; X-Ray lists $5.00 per million traces recorded, so per span is an upper bound; the free tier is ignored)",
                        p.xray_usd_per_million_spans
                    ),
                ],
            });
        }
        Some(EffTraces::Otlp(b)) => out.push(DestinationLine {
            destination: "traces → OTLP backend".into(),
            target: b.endpoint.clone(),
            exporter: config::OTLP_TRACES_EXPORTER,
            iam_statements: vec![],
            monthly_usd: None,
            assumptions: vec!["a self-hosted backend (Tempo, Jaeger): its cost is not estimated".into()],
        }),
        None => {}
    }
    if !e.ships_metrics() {
        return out;
    }
    let gpus = u64::from(fleet.nodes) * u64::from(fleet.gpus_per_node);
    let fields = e.metrics.metrics.len() as u64;
    if let Some(amp) = &e.destinations.prometheus {
        let scrape_s = (e.metrics.scrape_interval_ms as f64 / 1000.0).max(1.0);
        let samples = (fields * gpus) as f64 * seconds_per_month(p) / scrape_s;
        let prices: Vec<f64> = p.amp_usd_per_10m_samples.iter().map(|x| x / 1e7).collect();
        out.push(DestinationLine {
            destination: "metrics → Amazon Managed Service for Prometheus".into(),
            target: amp.workspace_arn.clone(),
            exporter: config::AMP_EXPORTER,
            iam_statements: statement(d, AMP_SID),
            monthly_usd: Some(tiered_usd(samples.round() as u64, &p.amp_sample_tier_limits, &prices)),
            assumptions: vec![
                format!(
                    "{fields} selected fields × {gpus} GPUs × {} h × 3600 s / {scrape_s} s scrape = {:.1} million samples/month",
                    p.hours_per_month,
                    samples / 1e6
                ),
                amp_rates(p),
            ],
        });
    }
    if let Some(dd) = &e.destinations.datadog {
        out.push(DestinationLine {
            destination: "metrics → Datadog".into(),
            target: dd.site.clone(),
            exporter: config::DATADOG_EXPORTER,
            iam_statements: vec![],
            monthly_usd: Some(cents(f64::from(fleet.nodes) * p.datadog_usd_per_host_month)),
            assumptions: vec![format!(
                "{} hosts (one per GPU node: the exporter names the node) × ${:.2} per host-month (--datadog-usd-per-host-month; Infrastructure Pro billed annually); custom-metric overages not included",
                fleet.nodes, p.datadog_usd_per_host_month
            )],
        });
    }
    out
}
