//! Cardinality and monthly CloudWatch cost of a pipeline, next to the Container Insights Enhanced
//! Observability bill for the same nodes. Pure: prices are inputs ([`Prices`]) the CLI may override.

use serde::Serialize;

use super::effective::Effective;
use crate::crd::LogGroupClass;

pub mod alerts;
pub mod archive;
pub mod destinations;
pub mod hot_path;

/// A GPU instance type's shape (REFERENCE.md, "GPU nodes on EKS").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceType {
    pub name: &'static str,
    pub gpus: u32,
    pub vcpus: u32,
    pub memory_gib: u32,
}

const fn it(name: &'static str, gpus: u32, vcpus: u32, memory_gib: u32) -> InstanceType {
    InstanceType {
        name,
        gpus,
        vcpus,
        memory_gib,
    }
}

pub const INSTANCE_TYPES: [InstanceType; 18] = [
    it("g4dn.xlarge", 1, 4, 16),
    it("g4dn.12xlarge", 4, 48, 192),
    it("g5.xlarge", 1, 4, 16),
    it("g5.12xlarge", 4, 48, 192),
    it("g5.48xlarge", 8, 192, 768),
    it("g6.xlarge", 1, 4, 16),
    it("g6.48xlarge", 8, 192, 768),
    it("g6e.xlarge", 1, 4, 32),
    it("g6e.48xlarge", 8, 192, 1536),
    it("p3.2xlarge", 1, 8, 61),
    it("p3.8xlarge", 4, 32, 244),
    it("p3.16xlarge", 8, 64, 488),
    it("p3dn.24xlarge", 8, 96, 768),
    it("p4d.24xlarge", 8, 96, 1152),
    it("p4de.24xlarge", 8, 96, 1152),
    it("p5.48xlarge", 8, 192, 2048),
    it("p5e.48xlarge", 8, 192, 2048),
    it("p5en.48xlarge", 8, 192, 2048),
];

pub fn instance_type(name: &str) -> Option<InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name).cloned()
}

/// The GPU nodes a pipeline runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub nodes: u32,
    pub instance_type: String,
    /// Overrides the table (needed for instance types it does not know).
    pub gpus_per_node: Option<u32>,
}

/// List prices (us-east-1). Every rate is a field so the CLI can override it by flag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// Upper bounds (in metrics) of the first three custom-metric tiers; the fourth is unbounded.
    pub metric_tier_limits: [u64; 3],
    /// USD per metric-month in each tier.
    pub metric_tier_usd: [f64; 4],
    pub logs_standard_usd_per_gb: f64,
    pub logs_infrequent_access_usd_per_gb: f64,
    pub storage_usd_per_gb_month: f64,
    /// Container Insights Enhanced, as modelled in the design sources (not a published price list).
    pub enhanced_usd_per_vcpu_hour: f64,
    pub enhanced_usd_per_gib_hour: f64,
    /// AWS bills 730 hours per month.
    pub hours_per_month: f64,
    /// AWS X-Ray, https://aws.amazon.com/xray/pricing/ (us-east-1): $5.00 per million traces
    /// recorded, applied here per span (an upper bound: a trace has at least one span).
    pub xray_usd_per_million_spans: f64,
    /// Amazon Managed Service for Prometheus, https://aws.amazon.com/prometheus/pricing/
    /// (us-east-1): upper bounds (in samples) of the first two ingestion tiers; the third is unbounded.
    pub amp_sample_tier_limits: [u64; 2],
    /// USD per 10 million samples ingested in each AMP tier ($0.90, $0.35, $0.16).
    pub amp_usd_per_10m_samples: [f64; 3],
    /// Datadog Infrastructure Pro, https://www.datadoghq.com/pricing/: $15 per host per month
    /// billed annually ($18 on demand).
    pub datadog_usd_per_host_month: f64,
    /// S3 Standard storage, https://aws.amazon.com/s3/pricing/ (us-east-1, first 50 TB).
    pub s3_standard_usd_per_gb_month: f64,
    /// S3 PUT, COPY, POST, LIST requests, per 1,000.
    pub s3_put_usd_per_1000: f64,
    /// The archive's colder class per GB-month; None: the class's list price.
    pub s3_cold_usd_per_gb_month: Option<f64>,
    /// Lifecycle transitions into the colder class per 1,000; None: the class's list price.
    pub s3_transition_usd_per_1000: Option<f64>,
    /// Raw log bytes per archived byte (OTLP JSON wraps each record, gzip shrinks it).
    pub archive_compression_ratio: f64,
    /// Kinesis Data Streams (the hot path) and its traffic.
    pub kinesis: hot_path::KinesisRates,
    /// CloudWatch standard-resolution alarm, per metric it reads, per month
    /// (https://aws.amazon.com/cloudwatch/pricing/, us-east-1).
    pub alarm_usd_per_metric_month: f64,
    /// CloudWatch dashboard per month beyond the account's first 3.
    pub dashboard_usd_per_month: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            metric_tier_limits: [10_000, 250_000, 1_000_000],
            metric_tier_usd: [0.30, 0.10, 0.05, 0.02],
            logs_standard_usd_per_gb: 0.50,
            logs_infrequent_access_usd_per_gb: 0.25,
            storage_usd_per_gb_month: 0.03,
            enhanced_usd_per_vcpu_hour: 0.009,
            enhanced_usd_per_gib_hour: 0.0003,
            hours_per_month: 730.0,
            xray_usd_per_million_spans: 5.00,
            amp_sample_tier_limits: [2_000_000_000, 252_000_000_000],
            amp_usd_per_10m_samples: [0.90, 0.35, 0.16],
            datadog_usd_per_host_month: 15.00,
            s3_standard_usd_per_gb_month: 0.023,
            s3_put_usd_per_1000: 0.005,
            s3_cold_usd_per_gb_month: None,
            s3_transition_usd_per_1000: None,
            archive_compression_ratio: 10.0,
            kinesis: hot_path::KinesisRates::default(),
            alarm_usd_per_metric_month: 0.10,
            dashboard_usd_per_month: 3.00,
        }
    }
}

/// An unfiltered DCGM exporter serves about this many fields per GPU.
pub const UNFILTERED_METRICS_PER_GPU: u64 = 40;

/// Bytes of one EMF event without its metrics: the `_aws` directive with the dimension sets,
/// dcgm-exporter's labels (gpu, UUID, pci_bus_id, device, modelName, Hostname, driver version),
/// the pod using the GPU and the resource attributes. Measured from the real collector's output
/// in the e2e data-flow test (e2e/tests/dataflow.rs prints "bytes per event: B without its
/// metrics + M per metric"): contrib 0.124.1 awsemf, 8 GPUs, two dimension sets, 5 fields:
/// 1,431 bytes per event = 969 + 5 × 92.4.
pub const EMF_EVENT_BASE_BYTES: u64 = 969;
/// Bytes each selected field adds to an EMF event (its value and its `Metrics` declaration),
/// measured in the same test.
pub const EMF_BYTES_PER_METRIC: u64 = 92;
/// CloudWatch Logs counts 26 bytes per event on top of the message.
pub const LOG_EVENT_OVERHEAD_BYTES: u64 = 26;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("unknown instance type {name:?}: give gpus per node, or use one of {known}")]
    UnknownInstanceType { name: String, known: String },
}

impl CostError {
    pub fn reason(&self) -> crate::crd::reason::Reason {
        crate::crd::reason::Reason::UnknownInstanceType
    }
}

/// Series one dimension set makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionSetSeries {
    pub dimensions: Vec<String>,
    /// Distinct value combinations of the set across the fleet.
    pub combinations: u64,
    /// combinations × selected metrics.
    pub series: u64,
}

/// Log volume and cost of the EMF events.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmfVolume {
    pub events_per_month: u64,
    pub bytes_per_event: u64,
    pub gb_per_month: f64,
    pub ingestion_usd: f64,
    /// Steady state of the metrics log group's retention.
    pub storage_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unfiltered {
    pub series_per_node: u64,
    pub total_series: u64,
    pub metrics_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enhanced {
    pub vcpu_usd: f64,
    pub memory_usd: f64,
    pub total_usd: f64,
}

/// Monthly estimate; money in USD rounded to cents.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub nodes: u32,
    pub instance_type: String,
    pub gpus_per_node: u32,
    pub metrics: usize,
    pub dimension_sets: Vec<DimensionSetSeries>,
    pub total_series: u64,
    /// total / nodes, rounded up (cluster-wide sets are shared by all nodes).
    pub series_per_node: u64,
    pub metrics_usd: f64,
    pub logs_ingestion_usd: Option<f64>,
    pub logs_storage_usd: Option<f64>,
    /// The EMF events the metrics pipeline writes to the metrics log group (awsemf sends metrics
    /// as log events: one per GPU per scrape, all selected fields in it). None without metrics.
    pub emf: Option<EmfVolume>,
    pub total_usd: f64,
    pub unfiltered: Unfiltered,
    /// None when the instance type's vCPU and memory are unknown.
    pub enhanced: Option<Enhanced>,
    /// Enhanced total / this pipeline's total.
    pub enhanced_to_pipeline_ratio: Option<f64>,
    pub assumptions: Vec<String>,
}

/// How finely a dimension splits series. A set's combinations are those of its finest dimension:
/// `[node, gpu]` has gpus × nodes combinations, not their product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Cluster,
    Node,
    Gpu,
}

fn level(dimension: &str, e: &Effective) -> Level {
    match dimension {
        "k8s.cluster.name" | "modelName" => Level::Cluster,
        d if e.collector.resource_attributes.contains_key(d) => Level::Cluster,
        // gpu.node.type has at most one value per node.
        "k8s.node.name" | "gpu.node.type" => Level::Node,
        // gpu/UUID: one per GPU (upper bound for `gpu` alone, an index that repeats across nodes).
        // Pods, containers, jobs, namespaces: assumed one per GPU. Unknown names: finest, to stay an upper bound.
        _ => Level::Gpu,
    }
}

/// CloudWatch bills each custom metric (name + namespace + dimension values) per month, in tiers.
pub fn tiered_metrics_usd(series: u64, p: &Prices) -> f64 {
    tiered_usd(series, &p.metric_tier_limits, &p.metric_tier_usd)
}

/// `units` priced in tiers: `prices[i]` per unit up to `limits[i]`, the last price beyond.
pub fn tiered_usd(units: u64, limits: &[u64], prices: &[f64]) -> f64 {
    let mut usd = 0.0;
    let mut lower = 0;
    for (i, price) in prices.iter().enumerate() {
        let upper = limits.get(i).copied().unwrap_or(u64::MAX);
        usd += units.min(upper).saturating_sub(lower) as f64 * price;
        lower = upper;
    }
    cents(usd)
}

pub(crate) fn cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

/// EMF events: one per GPU per scrape (awsemf groups the data points that share labels, and
/// every selected DCGM field of one GPU shares them), stored in the metrics log group.
fn emf_volume(e: &Effective, gpus: u64, metrics: u64, prices: &Prices) -> EmfVolume {
    let scrape_s = (e.metrics.scrape_interval_ms as f64 / 1000.0).max(1.0);
    let events_per_month = (gpus as f64 * prices.hours_per_month * 3600.0 / scrape_s).round() as u64;
    let bytes_per_event = EMF_EVENT_BASE_BYTES + EMF_BYTES_PER_METRIC * metrics + LOG_EVENT_OVERHEAD_BYTES;
    let gb_per_month = events_per_month as f64 * bytes_per_event as f64 / 1e9;
    let per_gb = match e.metrics.group.class {
        LogGroupClass::Standard => prices.logs_standard_usd_per_gb,
        LogGroupClass::InfrequentAccess => prices.logs_infrequent_access_usd_per_gb,
    };
    let month_days = prices.hours_per_month / 24.0;
    let stored_gb = gb_per_month / month_days * f64::from(e.metrics.group.retention_days);
    EmfVolume {
        events_per_month,
        bytes_per_event,
        gb_per_month: (gb_per_month * 100.0).round() / 100.0,
        ingestion_usd: cents(gb_per_month * per_gb),
        storage_usd: cents(stored_gb * prices.storage_usd_per_gb_month),
    }
}

pub fn estimate(
    e: &Effective,
    fleet: &Fleet,
    prices: &Prices,
    log_gb_per_day: Option<f64>,
) -> Result<Estimate, CostError> {
    let shape = instance_type(&fleet.instance_type);
    let gpus = match (fleet.gpus_per_node, &shape) {
        (Some(g), _) => g,
        (None, Some(t)) => t.gpus,
        (None, None) => {
            let known: Vec<&str> = INSTANCE_TYPES.iter().map(|t| t.name).collect();
            return Err(CostError::UnknownInstanceType {
                name: fleet.instance_type.clone(),
                known: known.join(", "),
            });
        }
    };
    let nodes = u64::from(fleet.nodes);
    let per_gpu = nodes * u64::from(gpus);
    let metrics = if e.metrics.dcgm_enabled {
        e.metrics.metrics.len()
    } else {
        0
    };
    let dimension_sets: Vec<DimensionSetSeries> = e
        .metrics
        .dimensions
        .iter()
        .map(|set| {
            let combinations = match set.iter().map(|d| level(d, e)).max() {
                Some(Level::Gpu) => per_gpu,
                Some(Level::Node) => nodes,
                Some(Level::Cluster) | None => 1,
            };
            DimensionSetSeries {
                dimensions: set.clone(),
                combinations,
                series: combinations * metrics as u64,
            }
        })
        .collect();
    let total_series: u64 = dimension_sets.iter().map(|s| s.series).sum();
    let metrics_usd = tiered_metrics_usd(total_series, prices);

    let month_days = prices.hours_per_month / 24.0;
    let (logs_ingestion_usd, logs_storage_usd) = match log_gb_per_day.filter(|_| e.logs.enabled) {
        Some(gb) => {
            let per_gb = match e.logs.group.class {
                LogGroupClass::Standard => prices.logs_standard_usd_per_gb,
                LogGroupClass::InfrequentAccess => prices.logs_infrequent_access_usd_per_gb,
            };
            let stored_gb = gb * f64::from(e.logs.group.retention_days);
            (
                Some(cents(gb * month_days * per_gb)),
                Some(cents(stored_gb * prices.storage_usd_per_gb_month)),
            )
        }
        None => (None, None),
    };
    let emf = (metrics > 0).then(|| emf_volume(e, per_gpu, metrics as u64, prices));
    let emf_usd = emf.as_ref().map_or(0.0, |v| v.ingestion_usd + v.storage_usd);
    let total_usd = cents(metrics_usd + logs_ingestion_usd.unwrap_or(0.0) + logs_storage_usd.unwrap_or(0.0) + emf_usd);

    let unfiltered_per_node = UNFILTERED_METRICS_PER_GPU * u64::from(gpus);
    let unfiltered = Unfiltered {
        series_per_node: unfiltered_per_node,
        total_series: unfiltered_per_node * nodes,
        metrics_usd: tiered_metrics_usd(unfiltered_per_node * nodes, prices),
    };
    let enhanced = shape.map(|t| {
        let hours = f64::from(fleet.nodes) * prices.hours_per_month;
        let vcpu_usd = cents(hours * f64::from(t.vcpus) * prices.enhanced_usd_per_vcpu_hour);
        let memory_usd = cents(hours * f64::from(t.memory_gib) * prices.enhanced_usd_per_gib_hour);
        Enhanced {
            vcpu_usd,
            memory_usd,
            total_usd: cents(vcpu_usd + memory_usd),
        }
    });
    let enhanced_to_pipeline_ratio = enhanced
        .as_ref()
        .filter(|_| total_usd > 0.0)
        .map(|x| (x.total_usd / total_usd * 100.0).round() / 100.0);

    let assumptions = vec![
        "every series reports all month; pod, container, job and namespace dimensions take one value per GPU".into(),
        format!("{} h/month; storage is the steady state of retention × daily volume, uncompressed (an upper bound)", prices.hours_per_month),
        format!(
            "EMF: one event per GPU per scrape of {EMF_EVENT_BASE_BYTES} + {EMF_BYTES_PER_METRIC} per field + {LOG_EVENT_OVERHEAD_BYTES} bytes (measured with the real collector); --log-gb-per-day is the pod logs only"
        ),
        "Container Insights Enhanced is $/vCPU-hour + $/GiB-hour as modelled in the design sources; check the price list".into(),
        format!("unfiltered: an exporter with no field list serves ~{UNFILTERED_METRICS_PER_GPU} fields per GPU"),
    ];
    Ok(Estimate {
        nodes: fleet.nodes,
        instance_type: fleet.instance_type.clone(),
        gpus_per_node: gpus,
        metrics,
        dimension_sets,
        total_series,
        series_per_node: if nodes == 0 { 0 } else { total_series.div_ceil(nodes) },
        metrics_usd,
        logs_ingestion_usd,
        logs_storage_usd,
        emf,
        total_usd,
        unfiltered,
        enhanced,
        enhanced_to_pipeline_ratio,
        assumptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::effective::test_fixture;

    fn p4d(nodes: u32) -> Fleet {
        Fleet {
            nodes,
            instance_type: "p4d.24xlarge".into(),
            gpus_per_node: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.005
    }

    #[test]
    fn default_pipeline_on_20_p4d_matches_hand_calculation() {
        // Fixture: the 10 default fields, dims [[cluster, node, gpu], [cluster]].
        // [cluster,node,gpu] → finest is gpu → 8 × 20 = 160 combos; [cluster] → 1.
        // 10 × 160 + 10 × 1 = 1,610 series, all in the first tier: 1,610 × $0.30 = $483.00.
        let est = estimate(&test_fixture(), &p4d(20), &Prices::default(), None).unwrap();
        assert_eq!(
            est.dimension_sets.iter().map(|s| s.combinations).collect::<Vec<_>>(),
            [160, 1]
        );
        assert_eq!(est.total_series, 1_610);
        assert_eq!(est.series_per_node, 81, "1,610 / 20 = 80.5, rounded up");
        assert!(close(est.metrics_usd, 483.00), "{est:?}");
        // EMF: 160 GPUs × 730 h × 3,600 s / 30 s = 14,016,000 events of 969 + 10 × 92 + 26 =
        // 1,915 bytes = 26.84 GB: $13.42 ingestion; 30 days of it stored, 26.47 GB × $0.03 = $0.79.
        let emf = est.emf.clone().expect("metrics are shipped as EMF events");
        assert_eq!((emf.events_per_month, emf.bytes_per_event), (14_016_000, 1_915));
        assert!(
            close(emf.gb_per_month, 26.84) && close(emf.ingestion_usd, 13.42),
            "{emf:?}"
        );
        assert!(close(emf.storage_usd, 0.79), "{emf:?}");
        assert!(close(est.total_usd, 497.21), "{est:?}");
        // Enhanced: 20 × 96 vCPU × $0.009 × 730 h = $12,614.40; 20 × 1152 GiB × $0.0003 × 730 h = $5,045.76.
        let enhanced = est.enhanced.clone().unwrap();
        assert!(
            close(enhanced.vcpu_usd, 12_614.40) && close(enhanced.memory_usd, 5_045.76),
            "{enhanced:?}"
        );
        assert!(close(enhanced.total_usd, 17_660.16));
        // 17,660.16 / 497.21 = 35.518 → 35.52.
        assert_eq!(est.enhanced_to_pipeline_ratio, Some(35.52));
        // Unfiltered: 40 fields × 8 GPUs = 320 per node; × 20 = 6,400 series × $0.30 = $1,920.00.
        assert_eq!(
            (est.unfiltered.series_per_node, est.unfiltered.total_series),
            (320, 6_400)
        );
        assert!(close(est.unfiltered.metrics_usd, 1_920.00));
    }

    #[test]
    fn default_list_stays_small_per_node() {
        // ≤ 12 fields, each at most one series per GPU per set: ≤ 12 × (8 + 1) = 108 per node on p4d.
        let est = estimate(&test_fixture(), &p4d(20), &Prices::default(), None).unwrap();
        assert!(crate::crd::DEFAULT_DCGM_METRICS.len() <= 12 && est.metrics <= 12);
        assert!(est.series_per_node <= 12 * (8 + 1), "{}", est.series_per_node);
        assert!(est.series_per_node * 3 < est.unfiltered.series_per_node);
    }

    #[test]
    fn tiers_switch_price_at_their_boundaries() {
        let p = Prices::default();
        // 10,000 × 0.30 = 3,000; one more at 0.10.
        assert!(close(tiered_metrics_usd(10_000, &p), 3_000.00));
        assert!(close(tiered_metrics_usd(10_001, &p), 3_000.10));
        // 3,000 + 240,000 × 0.10 = 27,000; one more at 0.05.
        assert!(close(tiered_metrics_usd(250_000, &p), 27_000.00));
        assert!(close(tiered_metrics_usd(250_001, &p), 27_000.05));
        // 27,000 + 750,000 × 0.05 = 64,500; one more at 0.02.
        assert!(close(tiered_metrics_usd(1_000_000, &p), 64_500.00));
        assert!(close(tiered_metrics_usd(1_000_001, &p), 64_500.02));
        assert_eq!(tiered_metrics_usd(0, &p), 0.0);
    }

    #[test]
    fn a_set_counts_its_finest_dimension_not_the_product() {
        let mut e = test_fixture();
        e.collector.resource_attributes.insert("team".into(), "a".into());
        let sets = [
            (vec!["gpu", "k8s.node.name"], 160), // 8 × 20, not 160 × 20
            (vec!["k8s.node.name", "gpu.node.type"], 20),
            (vec!["UUID"], 160),
            (vec!["k8s.cluster.name", "k8s.pod.name"], 160), // one pod per GPU (assumption)
            (vec!["modelName", "team"], 1),
        ];
        e.metrics.dimensions = sets
            .iter()
            .map(|(s, _)| s.iter().map(|d| d.to_string()).collect())
            .collect();
        let est = estimate(&e, &p4d(20), &Prices::default(), None).unwrap();
        let got: Vec<u64> = est.dimension_sets.iter().map(|s| s.combinations).collect();
        assert_eq!(got, sets.iter().map(|(_, n)| *n).collect::<Vec<u64>>());
        assert_eq!(est.total_series, 10 * (160 + 20 + 160 + 160 + 1));
    }

    #[test]
    fn log_ingestion_and_storage_follow_class_and_retention() {
        // 10 GB/day × 730/24 days × $0.50 = $152.08; steady storage 10 × 30 days × $0.03 = $9.00.
        let mut e = test_fixture();
        let est = estimate(&e, &p4d(20), &Prices::default(), Some(10.0)).unwrap();
        assert_eq!(
            (est.logs_ingestion_usd, est.logs_storage_usd),
            (Some(152.08), Some(9.00))
        );
        // Plus the EMF events of the metrics group (see the test above): $13.42 + $0.79.
        assert!(close(est.total_usd, 483.00 + 152.08 + 9.00 + 13.42 + 0.79));
        e.logs.group.class = LogGroupClass::InfrequentAccess;
        let est = estimate(&e, &p4d(20), &Prices::default(), Some(10.0)).unwrap();
        assert_eq!(est.logs_ingestion_usd, Some(76.04));
        e.logs.enabled = false;
        assert_eq!(
            estimate(&e, &p4d(20), &Prices::default(), Some(10.0))
                .unwrap()
                .logs_ingestion_usd,
            None
        );
    }

    #[test]
    fn unknown_instance_type_needs_a_gpu_count() {
        let fleet = Fleet {
            nodes: 2,
            instance_type: "x9.huge".into(),
            gpus_per_node: None,
        };
        let err = estimate(&test_fixture(), &fleet, &Prices::default(), None).unwrap_err();
        assert!(
            err.to_string().contains("x9.huge") && err.to_string().contains("p4d.24xlarge"),
            "{err}"
        );
        let fleet = Fleet {
            gpus_per_node: Some(4),
            ..fleet
        };
        let est = estimate(&test_fixture(), &fleet, &Prices::default(), None).unwrap();
        assert_eq!((est.total_series, est.enhanced), (10 * (4 * 2 + 1), None));
    }

    #[test]
    fn disabled_metrics_and_empty_fleet_cost_nothing() {
        let mut e = test_fixture();
        e.metrics.dcgm_enabled = false;
        let est = estimate(&e, &p4d(20), &Prices::default(), None).unwrap();
        assert_eq!(
            (est.total_series, est.metrics_usd, est.enhanced_to_pipeline_ratio),
            (0, 0.0, None)
        );
        assert_eq!(
            estimate(&test_fixture(), &p4d(0), &Prices::default(), None)
                .unwrap()
                .series_per_node,
            0
        );
    }

    #[test]
    fn instance_table_matches_reference() {
        assert_eq!(
            instance_type("p4d.24xlarge").map(|t| (t.gpus, t.vcpus, t.memory_gib)),
            Some((8, 96, 1152))
        );
        assert_eq!(
            instance_type("g6e.xlarge").map(|t| (t.gpus, t.vcpus, t.memory_gib)),
            Some((1, 4, 32))
        );
        assert_eq!(
            instance_type("p3.2xlarge").map(|t| (t.gpus, t.vcpus, t.memory_gib)),
            Some((1, 8, 61))
        );
        let mut names: Vec<&str> = INSTANCE_TYPES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INSTANCE_TYPES.len());
    }
}
