//! One line per enabled destination for `mlobs plan`: what it sends where, the IAM statement it
//! adds to the collector's role, and its monthly cost with every assumption spelled out. Rates
//! come from [`Prices`] (flags of the CLI); traffic the spec cannot know is a [`Traffic`] input.

use serde::Serialize;
use serde_json::Value;

use super::{Prices, cents, tiered_usd};
use crate::desired::aws_plan::destinations::{AMP_SID, XRAY_SID};
use crate::desired::aws_plan::{AwsPlan, RolePlan};
use crate::desired::collector_config::destinations as config;
use crate::desired::destinations::{EffTraces, xray_traces_endpoint};
use crate::desired::effective::Effective;

/// Traffic assumptions of the destinations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Spans per second the pipeline's applications send, all nodes together.
    pub spans_per_second: f64,
    /// Pod log volume, all nodes together (the archive's storage); None: not estimated.
    pub log_gb_per_day: Option<f64>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            spans_per_second: 100.0,
            log_gb_per_day: None,
        }
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

pub(super) fn statement(aws: &AwsPlan, sid: &str) -> Vec<Value> {
    let RolePlan::Create { inline_policy, .. } = &aws.role else {
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

/// Every enabled traces and metrics destination, in the order the collector config lists them
/// (the archive's line is `cost::archive::line`, which builds on this module); the IAM statements
/// are those of `aws`'s role (none for an existing role: its policy is the user's).
pub fn lines(e: &Effective, aws: &AwsPlan, fleet: FleetSize, p: &Prices, t: &Traffic) -> Vec<DestinationLine> {
    let mut out = vec![];
    match &e.destinations.traces {
        Some(EffTraces::XRay) => {
            let spans = t.spans_per_second * seconds_per_month(p);
            out.push(DestinationLine {
                destination: "traces → AWS X-Ray".into(),
                target: xray_traces_endpoint(&e.region, &e.partition),
                exporter: config::XRAY_EXPORTER,
                iam_statements: statement(aws, XRAY_SID),
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
            iam_statements: statement(aws, AMP_SID),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::aws_plan;
    use crate::desired::effective::test_all_destinations;

    fn priced(e: &Effective, nodes: u32, p: &Prices) -> Vec<DestinationLine> {
        let aws = aws_plan::build(e).expect("plan");
        let fleet = FleetSize {
            nodes,
            gpus_per_node: 8,
        };
        lines(e, &aws, fleet, p, &Traffic::default())
    }

    #[test]
    fn each_destination_costs_what_the_hand_calculation_says() {
        let e = test_all_destinations();
        let got = priced(&e, 20, &Prices::default());
        let names: Vec<&str> = got.iter().map(|l| l.exporter).collect();
        assert_eq!(
            names,
            [config::XRAY_EXPORTER, config::AMP_EXPORTER, config::DATADOG_EXPORTER]
        );
        // X-Ray: 100 spans/s × 730 h × 3600 s = 262.8 million spans × $5.00 = $1,314.00.
        assert_eq!(got[0].monthly_usd, Some(1_314.00));
        // AMP: 10 fields × 160 GPUs × 2,628,000 s / 30 s = 140.16 million samples, all in the
        // first tier: 14.016 × $0.90 = $12.61.
        assert_eq!(got[1].monthly_usd, Some(12.61));
        assert!(
            got[1].assumptions[0].contains("140.2 million samples"),
            "{:?}",
            got[1].assumptions
        );
        // Datadog: 20 hosts × $15.00.
        assert_eq!(got[2].monthly_usd, Some(300.00));
        assert_eq!(got[0].iam_statements.len(), 1);
        assert_eq!(got[0].iam_statements[0]["Resource"], "*");
        assert_eq!(
            got[1].iam_statements[0]["Action"],
            serde_json::json!(["aps:RemoteWrite"])
        );
        assert!(got[2].iam_statements.is_empty());
        assert!(got.iter().all(|l| !l.assumptions.is_empty()));
    }

    #[test]
    fn amp_samples_beyond_the_first_tier_are_cheaper_and_rates_follow_the_flags() {
        let e = test_all_destinations();
        // 1,000 nodes: 10 × 8,000 GPUs × 87,600 scrapes = 7,008 million samples: 2,000 million at
        // $0.09/M and 5,008 million at $0.035/M = $180 + $175.28.
        let amp = priced(&e, 1_000, &Prices::default())[1].monthly_usd;
        assert_eq!(amp, Some(355.28));
        let p = Prices {
            xray_usd_per_million_spans: 1.0,
            datadog_usd_per_host_month: 18.0,
            ..Prices::default()
        };
        let got = priced(&e, 20, &p);
        assert_eq!((got[0].monthly_usd, got[2].monthly_usd), (Some(262.80), Some(360.00)));
    }

    #[test]
    fn metrics_destinations_cost_nothing_without_metrics_and_no_destination_no_line() {
        let mut e = test_all_destinations();
        e.metrics.dcgm_enabled = false;
        e.logs.enabled = true;
        let got = priced(&e, 20, &Prices::default());
        assert_eq!(
            got.iter().map(|l| l.exporter).collect::<Vec<_>>(),
            [config::XRAY_EXPORTER]
        );
        assert!(priced(&crate::desired::effective::test_fixture(), 20, &Prices::default()).is_empty());
    }
}
