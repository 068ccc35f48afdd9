//! The alerts' monthly cost line: CloudWatch bills each standard-resolution alarm per metric it
//! reads ($0.10 per alarm metric-month; a metric-math alarm counts each metric in its
//! expression), dashboards $3 per dashboard-month beyond the account's first 3 (counted as paid:
//! mlobs cannot know the account's others), SNS notifications are negligible at alarm rates.
//! Rates are [`Prices`] fields (CLI flags); every assumption is printed.

use super::Prices;
use super::destinations::DestinationLine;
use crate::desired::aws_plan::AwsPlan;

/// The alerts' and the CloudWatch dashboard's line, when either is enabled.
pub fn line(aws: &AwsPlan, p: &Prices) -> Option<DestinationLine> {
    let mut assumptions = Vec::new();
    let dash_usd = match &aws.dashboard {
        Some(d) => {
            assumptions.push(format!(
                "CloudWatch dashboard {}: ${} per dashboard-month (--dashboard-usd-per-month), counted as beyond the account's 3 free ones (mlobs cannot see the others)",
                d.name, p.dashboard_usd_per_month
            ));
            p.dashboard_usd_per_month
        }
        None => 0.0,
    };
    let Some(a) = aws.alerts.as_ref() else {
        return aws.dashboard.as_ref().map(|d| DestinationLine {
            destination: "dashboards → CloudWatch".into(),
            target: d.arn.clone(),
            exporter: "none (the operator creates them)",
            iam_statements: vec![],
            monthly_usd: Some(super::cents(dash_usd)),
            assumptions,
        });
    };
    // Every mlobs alarm reads one metric (the XID expression is over its one metric, m1).
    let metrics = a.alarms.len() as f64;
    let alarms_usd = metrics * p.alarm_usd_per_metric_month;
    assumptions.extend([
        format!(
            "{} CloudWatch alarms × 1 metric each × ${} per alarm metric-month (--alarm-usd-per-metric-month)",
            a.alarms.len(),
            p.alarm_usd_per_metric_month
        ),
        format!(
            "SNS topic {}: notifications at alarm rates cost next to nothing (the first million publishes a month are free); subscriptions are yours",
            a.topic.name
        ),
    ]);
    Some(DestinationLine {
        destination: "alerts → CloudWatch alarms, SNS".into(),
        target: a.topic.arn.clone(),
        exporter: "none (the operator creates them)",
        iam_statements: vec![],
        monthly_usd: Some(super::cents(alarms_usd + dash_usd)),
        assumptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::alerts_tests_support::with_alerts;

    #[test]
    fn four_alarms_cost_forty_cents_at_the_list_price_and_follow_the_flag() {
        let plan = crate::desired::aws_plan::build(&with_alerts()).expect("plan");
        let l = line(&plan, &Prices::default()).expect("a line");
        assert_eq!(l.monthly_usd, Some(0.4));
        let dearer = Prices {
            alarm_usd_per_metric_month: 0.25,
            ..Prices::default()
        };
        assert_eq!(line(&plan, &dearer).and_then(|l| l.monthly_usd), Some(1.0));
        let none = crate::desired::aws_plan::build(&crate::desired::effective::test_fixture()).expect("plan");
        assert!(line(&none, &Prices::default()).is_none());
        let mut e = with_alerts();
        e.dashboards.cloudwatch = true;
        let with_dashboard = crate::desired::aws_plan::build(&e).expect("plan");
        assert_eq!(
            line(&with_dashboard, &Prices::default()).and_then(|l| l.monthly_usd),
            Some(3.4)
        );
    }
}
