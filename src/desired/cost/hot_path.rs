//! The hot path's monthly cost line: Kinesis Data Streams on-demand (stream-hours and GB
//! ingested, each record rounded up to 1 KB) or provisioned (shard-hours and 25 KB PUT payload
//! units), plus retention beyond 24 hours. Rates and the critical-line traffic are CLI flags with
//! us-east-1 list prices (https://aws.amazon.com/kinesis/data-streams/pricing/) as defaults;
//! every assumption is printed.

use serde::Serialize;

use super::destinations::{DestinationLine, FleetSize};
use super::{Prices, cents};
use crate::desired::aws_plan::{AwsPlan, RolePlan};
use crate::desired::effective::Effective;
use crate::desired::hot_path::Capacity;

/// Kinesis rates and the hot path's traffic (`mlobs plan` flags).
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
#[serde(rename_all = "camelCase")]
pub struct KinesisRates {
    /// Critical log lines per second the hot path sends, all nodes together.
    #[arg(long = "hot-path-records-per-second", default_value_t = 10.0)]
    pub records_per_second: f64,
    /// Bytes of one hot-path record (the log line with Fluent Bit's JSON wrapping and time key).
    #[arg(long = "hot-path-record-bytes", default_value_t = 500.0)]
    pub record_bytes: f64,
    /// Kinesis on-demand price per stream-hour.
    #[arg(long = "kinesis-usd-per-stream-hour", default_value_t = 0.04)]
    pub usd_per_stream_hour: f64,
    /// Kinesis on-demand price per GB ingested (records rounded up to 1 KB).
    #[arg(long = "kinesis-usd-per-gb", default_value_t = 0.08)]
    pub usd_per_gb: f64,
    /// Kinesis provisioned price per shard-hour.
    #[arg(long = "kinesis-usd-per-shard-hour", default_value_t = 0.015)]
    pub usd_per_shard_hour: f64,
    /// Kinesis provisioned price per million PUT payload units (25 KB each).
    #[arg(long = "kinesis-usd-per-million-put-units", default_value_t = 0.014)]
    pub usd_per_million_put_units: f64,
    /// Provisioned extended retention (24 hours to 7 days), per shard-hour.
    #[arg(long = "kinesis-extended-usd-per-shard-hour", default_value_t = 0.02)]
    pub extended_usd_per_shard_hour: f64,
    /// On-demand extended retention (24 hours to 7 days), per GB-month.
    #[arg(long = "kinesis-extended-usd-per-gb-month", default_value_t = 0.10)]
    pub extended_usd_per_gb_month: f64,
    /// Long-term retention (beyond 7 days), per GB-month, both modes.
    #[arg(long = "kinesis-long-term-usd-per-gb-month", default_value_t = 0.023)]
    pub long_term_usd_per_gb_month: f64,
}

impl Default for KinesisRates {
    fn default() -> Self {
        KinesisRates {
            records_per_second: 10.0,
            record_bytes: 500.0,
            usd_per_stream_hour: 0.04,
            usd_per_gb: 0.08,
            usd_per_shard_hour: 0.015,
            usd_per_million_put_units: 0.014,
            extended_usd_per_shard_hour: 0.02,
            extended_usd_per_gb_month: 0.10,
            long_term_usd_per_gb_month: 0.023,
        }
    }
}

impl KinesisRates {
    /// Each rate and traffic value with its flag, for the amount check.
    pub fn flags(&self) -> [(&'static str, f64); 9] {
        [
            ("--hot-path-records-per-second", self.records_per_second),
            ("--hot-path-record-bytes", self.record_bytes),
            ("--kinesis-usd-per-stream-hour", self.usd_per_stream_hour),
            ("--kinesis-usd-per-gb", self.usd_per_gb),
            ("--kinesis-usd-per-shard-hour", self.usd_per_shard_hour),
            ("--kinesis-usd-per-million-put-units", self.usd_per_million_put_units),
            (
                "--kinesis-extended-usd-per-shard-hour",
                self.extended_usd_per_shard_hour,
            ),
            ("--kinesis-extended-usd-per-gb-month", self.extended_usd_per_gb_month),
            ("--kinesis-long-term-usd-per-gb-month", self.long_term_usd_per_gb_month),
        ]
    }
}

const GB: f64 = 1e9;
const KB: f64 = 1024.0;
const PUT_UNIT_BYTES: f64 = 25.0 * KB;

/// The hot path's line, when it is enabled.
pub fn line(e: &Effective, aws: &AwsPlan, _fleet: FleetSize, p: &Prices) -> Option<DestinationLine> {
    let h = e.destinations.hot_path.as_ref()?;
    let plan = aws.hot_path.as_ref()?;
    let k = &p.kinesis;
    let hours = p.hours_per_month;
    let records = k.records_per_second * hours * 3600.0;
    let gb = records * k.record_bytes / GB;
    let traffic = format!(
        "{} critical lines/s (--hot-path-records-per-second) × {} bytes (--hot-path-record-bytes) × {hours} h = {:.2} million records, {gb:.3} GB/month",
        k.records_per_second,
        k.record_bytes,
        records / 1e6
    );
    let mut assumptions = vec![traffic];
    let (base, extended) = match h.capacity {
        Capacity::OnDemand => {
            let billed_gb = records * (k.record_bytes / KB).ceil().max(1.0) * KB / GB;
            assumptions.push(format!(
                "on-demand: {hours} stream-hours × ${} (--kinesis-usd-per-stream-hour) + {billed_gb:.3} GB billed (records rounded up to 1 KB) × ${} (--kinesis-usd-per-gb)",
                k.usd_per_stream_hour, k.usd_per_gb
            ));
            let base = hours * k.usd_per_stream_hour + billed_gb * k.usd_per_gb;
            let days = f64::from(h.retention_hours.min(168) - 24) / 24.0;
            let stored = gb / (hours / 24.0) * days;
            (base, stored * k.extended_usd_per_gb_month)
        }
        Capacity::Provisioned { shards } => {
            let units = records * (k.record_bytes / PUT_UNIT_BYTES).ceil().max(1.0);
            assumptions.push(format!(
                "provisioned: {shards} shards × {hours} h × ${} (--kinesis-usd-per-shard-hour) + {:.2} million 25 KB PUT payload units × ${} (--kinesis-usd-per-million-put-units)",
                k.usd_per_shard_hour,
                units / 1e6,
                k.usd_per_million_put_units
            ));
            let shard_hours = f64::from(shards) * hours;
            let base = shard_hours * k.usd_per_shard_hour + units / 1e6 * k.usd_per_million_put_units;
            let extended = if h.retention_hours > 24 {
                shard_hours * k.extended_usd_per_shard_hour
            } else {
                0.0
            };
            (base, extended)
        }
    };
    if h.retention_hours > 24 {
        assumptions.push(format!(
            "retention {} hours: extended retention up to 7 days (--kinesis-extended-usd-per-shard-hour provisioned, --kinesis-extended-usd-per-gb-month on-demand on the data held)",
            h.retention_hours
        ));
    }
    let long_days = f64::from((h.retention_hours - 168).max(0)) / 24.0;
    let long_term = gb / (hours / 24.0) * long_days * k.long_term_usd_per_gb_month;
    if long_days > 0.0 {
        assumptions.push(format!(
            "{long_days:.0} days beyond 7 of data held × ${} per GB-month (--kinesis-long-term-usd-per-gb-month)",
            k.long_term_usd_per_gb_month
        ));
    }
    assumptions.push("reads by consumers (GetRecords, enhanced fan-out) are not included".into());
    let iam_statements = match &plan.role {
        RolePlan::Create { inline_policy, .. } => inline_policy["Statement"].as_array().cloned().unwrap_or_default(),
        RolePlan::Existing { .. } => vec![],
    };
    Some(DestinationLine {
        destination: "critical log lines → Kinesis Data Streams (hot path)".into(),
        target: plan.stream.arn.clone(),
        exporter: "fluent-bit kinesis_streams",
        iam_statements,
        monthly_usd: Some(cents(base + extended + long_term)),
        assumptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::aws_plan;
    use crate::desired::hot_path::test_hot_path;

    fn usd(capacity: Capacity, retention_hours: i32, p: &Prices) -> f64 {
        let mut e = test_hot_path();
        if let Some(h) = &mut e.destinations.hot_path {
            h.capacity = capacity;
            h.retention_hours = retention_hours;
        }
        let aws = aws_plan::build(&e).expect("plan");
        let fleet = FleetSize {
            nodes: 4,
            gpus_per_node: 8,
        };
        line(&e, &aws, fleet, p)
            .and_then(|l| l.monthly_usd)
            .expect("a priced line")
    }

    #[test]
    fn on_demand_is_stream_hours_plus_gb_rounded_up_to_one_kb_per_record() {
        let p = Prices::default();
        // 10 records/s × 730 h = 26.28 M records × 1 KB = 26.91 GB × $0.08 + 730 × $0.04.
        let records = 10.0 * 730.0 * 3600.0;
        let want = 730.0 * 0.04 + records * 1024.0 / 1e9 * 0.08;
        assert_eq!(usd(Capacity::OnDemand, 24, &p), cents(want));
    }

    #[test]
    fn provisioned_is_shard_hours_plus_put_units_and_extended_retention_per_shard_hour() {
        let p = Prices::default();
        let records = 10.0 * 730.0 * 3600.0;
        let base = 2.0 * 730.0 * 0.015 + records / 1e6 * 0.014;
        assert_eq!(usd(Capacity::Provisioned { shards: 2 }, 24, &p), cents(base));
        let extended = 2.0 * 730.0 * 0.02;
        assert_eq!(usd(Capacity::Provisioned { shards: 2 }, 48, &p), cents(base + extended));
    }

    #[test]
    fn rates_come_from_the_flags() {
        let mut p = Prices::default();
        p.kinesis.usd_per_stream_hour = 0.0;
        p.kinesis.usd_per_gb = 1.0;
        p.kinesis.record_bytes = 3000.0; // 3 KB billed per record
        let records = 10.0 * 730.0 * 3600.0;
        assert_eq!(usd(Capacity::OnDemand, 24, &p), cents(records * 3.0 * 1024.0 / 1e9));
    }
}
