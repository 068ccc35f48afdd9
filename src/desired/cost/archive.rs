//! The archive's monthly cost line: S3 PUTs (one object per batch per node), lifecycle
//! transitions (one per object), and storage at the end of the lock period, in STANDARD for the
//! last `transitionAfterDays` and in the colder class before, with the colder classes' minimum
//! billable object size. Rates are [`Prices`] fields (CLI flags); every assumption is printed.

use serde::Serialize;

use super::destinations::{DestinationLine, FleetSize, Traffic, statement};
use super::{Prices, cents};
use crate::crd::ArchiveStorageClass;
use crate::desired::aws_plan::AwsPlan;
use crate::desired::aws_plan::archive::{ARCHIVE_KMS_SID, ARCHIVE_SID};
use crate::desired::collector_config::destinations::ARCHIVE_EXPORTER;
use crate::desired::destinations::EffArchive;
use crate::desired::effective::Effective;

/// Bytes of one log record before compression, for the volume-driven batch count.
pub const RECORD_BYTES: f64 = 300.0;
const KB: f64 = 1024.0;
const GB: f64 = 1e9;

/// S3 list prices (us-east-1, https://aws.amazon.com/s3/pricing/) of one colder class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassPrices {
    pub usd_per_gb_month: f64,
    /// Lifecycle transition requests into the class, per 1,000.
    pub transition_usd_per_1000: f64,
}

/// The list price of each colder class.
pub fn class_prices(class: ArchiveStorageClass) -> ClassPrices {
    let (usd_per_gb_month, transition_usd_per_1000) = match class {
        ArchiveStorageClass::StandardIa => (0.0125, 0.01),
        ArchiveStorageClass::GlacierIr => (0.004, 0.02),
        ArchiveStorageClass::Glacier => (0.0036, 0.03),
        ArchiveStorageClass::DeepArchive => (0.00099, 0.05),
    };
    ClassPrices {
        usd_per_gb_month,
        transition_usd_per_1000,
    }
}

/// Per-object billing of a class: (minimum billable KB, KB of index data billed at the class
/// rate, KB billed at the STANDARD rate). IA and Instant Retrieval bill at least 128 KB; the
/// Glacier classes add 32 KB of index at their rate and 8 KB of metadata at STANDARD's.
fn object_overhead(class: ArchiveStorageClass) -> (f64, f64, f64) {
    match class {
        ArchiveStorageClass::StandardIa | ArchiveStorageClass::GlacierIr => (128.0, 0.0, 0.0),
        ArchiveStorageClass::Glacier | ArchiveStorageClass::DeepArchive => (0.0, 32.0, 8.0),
    }
}

/// The archive's line, when it is enabled.
pub fn line(e: &Effective, aws: &AwsPlan, fleet: FleetSize, p: &Prices, t: &Traffic) -> Option<DestinationLine> {
    let a = e.destinations.archive.as_ref()?;
    let list = class_prices(a.storage_class);
    let class = ClassPrices {
        usd_per_gb_month: p.s3_cold_usd_per_gb_month.unwrap_or(list.usd_per_gb_month),
        transition_usd_per_1000: p.s3_transition_usd_per_1000.unwrap_or(list.transition_usd_per_1000),
    };
    let nodes = f64::from(fleet.nodes.max(1));
    let days_per_month = p.hours_per_month / 24.0;
    let timeout_s = (e.collector.batch_timeout_ms as f64 / 1000.0).max(0.001);
    let by_time = p.hours_per_month * 3600.0 / timeout_s;
    let gb_day = t.log_gb_per_day.unwrap_or(0.0);
    let records_per_node = gb_day * GB * days_per_month / RECORD_BYTES / nodes;
    let by_volume = records_per_node / f64::from(e.collector.batch_size.max(1));
    let objects = by_time.max(by_volume) * nodes;
    let put_usd = objects / 1000.0 * p.s3_put_usd_per_1000;
    let transition_usd = objects / 1000.0 * class.transition_usd_per_1000;
    let mut assumptions = vec![
        format!(
            "one object per batch per node: {:.0} nodes × max({:.0} batches at the {timeout_s} s batch timeout, {:.0} of {} records of ~{RECORD_BYTES} bytes) = {:.2} million PUTs/month × ${} per 1,000 (--s3-put-usd-per-1000)",
            nodes,
            by_time,
            by_volume,
            e.collector.batch_size,
            objects / 1e6,
            p.s3_put_usd_per_1000
        ),
        format!(
            "each object moves to {} once, {} days after its PUT: ${} per 1,000 transitions (--s3-transition-usd-per-1000)",
            a.storage_class.as_str(),
            a.transition_after_days,
            class.transition_usd_per_1000
        ),
    ];
    let storage_usd = match t.log_gb_per_day {
        Some(gb) => {
            let (usd, text) = storage(a, gb, objects / days_per_month, p, class);
            assumptions.push(text);
            usd
        }
        None => {
            assumptions.push("storage not estimated: pass --log-gb-per-day".into());
            0.0
        }
    };
    assumptions.push(
        "versioning and Object Lock cost nothing themselves; SSE-KMS with a bucket key makes few KMS requests (not included)".into(),
    );
    Some(DestinationLine {
        destination: "logs → S3 archive (Object Lock)".into(),
        target: format!("s3://{}/{}", a.bucket, a.prefix),
        exporter: ARCHIVE_EXPORTER,
        iam_statements: [ARCHIVE_SID, ARCHIVE_KMS_SID]
            .iter()
            .flat_map(|sid| statement(aws, sid))
            .collect(),
        monthly_usd: Some(cents(put_usd + transition_usd + storage_usd)),
        assumptions,
    })
}

/// Monthly storage once the lock period is full (objects are not expired after it, so it keeps
/// growing past that): the last `transitionAfterDays` in STANDARD, the rest in the colder class.
fn storage(a: &EffArchive, gb_day: f64, objects_per_day: f64, p: &Prices, class: ClassPrices) -> (f64, String) {
    let ratio = p.archive_compression_ratio.max(1.0);
    let stored_gb_day = gb_day / ratio;
    let total_days = f64::from(a.retention_years) * 365.0;
    let hot_days = f64::from(a.transition_after_days).min(total_days);
    let cold_days = total_days - hot_days;
    let hot_gb = stored_gb_day * hot_days;
    let cold_objects = objects_per_day * cold_days;
    let object_kb = if objects_per_day > 0.0 {
        stored_gb_day * GB / KB / objects_per_day
    } else {
        0.0
    };
    let (min_kb, index_kb, standard_kb) = object_overhead(a.storage_class);
    let cold_kb_each = object_kb.max(min_kb) + index_kb;
    let cold_gb = cold_objects * cold_kb_each * KB / GB;
    let extra_hot_gb = cold_objects * standard_kb * KB / GB;
    let usd = (hot_gb + extra_hot_gb) * p.s3_standard_usd_per_gb_month + cold_gb * class.usd_per_gb_month;
    let text = format!(
        "storage after {} years (the lock period; objects are kept after it, no expiration rule): {gb_day} GB/day of logs (--log-gb-per-day) / {ratio} (OTLP JSON, gzip: --archive-compression-ratio) = {:.2} GB/day in objects of ~{object_kb:.0} KB; {:.0} GB STANDARD (last {hot_days} days{}) × ${}/GB-month (--s3-standard-usd-per-gb-month) + {:.0} GB billed in {} ({:.0} KB per object{}) × ${}/GB-month (--s3-cold-usd-per-gb-month)",
        a.retention_years,
        stored_gb_day,
        hot_gb + extra_hot_gb,
        if standard_kb > 0.0 {
            ", plus 8 KB per archived object"
        } else {
            ""
        },
        p.s3_standard_usd_per_gb_month,
        cold_gb,
        a.storage_class.as_str(),
        cold_kb_each,
        if min_kb > 0.0 {
            ", at least 128 KB billed each"
        } else if index_kb > 0.0 {
            ", with 32 KB of index each"
        } else {
            ""
        },
        class.usd_per_gb_month
    );
    (usd, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::aws_plan;
    use crate::desired::effective::test_archive;

    fn priced(gb: Option<f64>, p: &Prices) -> DestinationLine {
        let e = test_archive();
        let aws = aws_plan::build(&e).expect("plan");
        let fleet = FleetSize {
            nodes: 20,
            gpus_per_node: 8,
        };
        let t = Traffic {
            log_gb_per_day: gb,
            ..Traffic::default()
        };
        line(&e, &aws, fleet, p, &t).expect("an archive line")
    }

    #[test]
    fn puts_and_transitions_follow_the_batch_cadence_without_a_log_volume() {
        // 20 nodes × 730 h × 3600 s / 10 s = 5,256,000 objects: PUTs $26.28, GLACIER_IR
        // transitions $105.12.
        let got = priced(None, &Prices::default());
        assert_eq!(got.monthly_usd, Some(131.40));
        assert_eq!(got.exporter, ARCHIVE_EXPORTER);
        assert!(
            got.assumptions.iter().any(|a| a.contains("5.26 million PUTs")),
            "{:?}",
            got.assumptions
        );
        assert!(got.assumptions.iter().any(|a| a.starts_with("storage not estimated")));
        let sids: Vec<&str> = got.iam_statements.iter().filter_map(|s| s["Sid"].as_str()).collect();
        assert_eq!(sids, [ARCHIVE_SID, ARCHIVE_KMS_SID]);
    }

    #[test]
    fn storage_bills_small_objects_at_the_class_minimum() {
        // 50 GB/day / 10 = 5 GB/day in 172,800 objects a day (20 nodes × 8,640 batches) → ~28 KB
        // each, billed as 128 KiB in GLACIER_IR. STANDARD: 5 × 90 = 450 GB × $0.023 = $10.35.
        // GLACIER_IR: 172,800 × 2,465 days × 128 KiB = 55,831 GB × $0.004 = $223.32. With PUTs
        // ($26.28) and transitions ($105.12): $365.07.
        let got = priced(Some(50.0), &Prices::default());
        assert_eq!(got.monthly_usd, Some(365.07));
        assert!(
            got.assumptions
                .iter()
                .any(|a| a.contains("at least 128 KB billed each")),
            "{:?}",
            got.assumptions
        );
        let p = Prices {
            s3_cold_usd_per_gb_month: Some(0.001),
            s3_transition_usd_per_1000: Some(0.0),
            ..Prices::default()
        };
        // The same objects at $0.001/GB-month and free transitions: PUTs $26.28 + STANDARD
        // $10.35 + 55,831 GB × $0.001 = $55.83.
        assert_eq!(priced(Some(50.0), &p).monthly_usd, Some(92.46));
    }

    #[test]
    fn the_glacier_classes_add_their_per_object_index_instead() {
        let (min, index, standard) = object_overhead(ArchiveStorageClass::DeepArchive);
        assert_eq!((min, index, standard), (0.0, 32.0, 8.0));
        assert_eq!(object_overhead(ArchiveStorageClass::StandardIa).0, 128.0);
        assert_eq!(class_prices(ArchiveStorageClass::DeepArchive).usd_per_gb_month, 0.00099);
    }
}
