//! The effective spec: built-in defaults < policy defaults < pipeline spec, then the policy's
//! guardrails. Pure: no I/O, no clock. Every value's origin is recorded in [`Effective::sources`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};

use crate::collector_version::{Feature, PER_POD_LOG_STREAMS};
use crate::conventions;
use crate::crd::{BudgetAction, DeletionPolicy, DriftPolicy, ExporterMode, IdentityMode, LogGroupClass, Redaction};

pub use super::destinations::EffDestinations;
pub use super::sources::{Source, Sources};

/// Inputs that come from the operator or CLI, not from either resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// `--cluster-name`, used when the pipeline sets none.
    pub cluster_name: Option<String>,
    /// `--region`, used when the pipeline sets none.
    pub region: Option<String>,
    /// AWS account id (from `--account-id` or STS); appears in ARNs.
    pub account_id: String,
    /// AWS partition, `aws` unless in China or GovCloud.
    pub partition: String,
    /// Namespace the operator (and a Managed DCGM exporter) runs in.
    pub operator_namespace: String,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            cluster_name: None,
            region: None,
            account_id: "123456789012".into(),
            partition: "aws".into(),
            operator_namespace: "mlobs-system".into(),
        }
    }
}

/// A log group as it will be created.
#[derive(Debug, Clone, PartialEq)]
pub struct EffLogGroup {
    pub name: String,
    pub retention_days: i32,
    pub class: LogGroupClass,
    /// User tags plus mlobs ownership tags (`mlobs.io/cluster`, `mlobs.io/pipeline`).
    pub tags: BTreeMap<String, String>,
}

/// Pod log collection.
#[derive(Debug, Clone, PartialEq)]
pub struct EffLogs {
    pub enabled: bool,
    /// Globs under /var/log/pods.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub group: EffLogGroup,
    /// Pipeline redactions followed by the policy's required ones that were missing.
    pub redactions: Vec<Redaction>,
    pub job_id_label: Option<String>,
}

/// DCGM metrics and EMF.
#[derive(Debug, Clone, PartialEq)]
pub struct EffMetrics {
    pub dcgm_enabled: bool,
    pub scrape_interval_ms: u64,
    /// Selected DCGM field names, sorted and unique. One list drives exporter CSV, scrape
    /// filter, filter processor, EMF declarations and cost.
    pub metrics: Vec<String>,
    pub namespace: String,
    pub dimensions: Vec<Vec<String>>,
    pub group: EffLogGroup,
}

impl EffMetrics {
    /// Whether the metrics pipeline runs (DCGM scraping with at least one field).
    pub fn ships(&self) -> bool {
        self.dcgm_enabled && !self.metrics.is_empty()
    }
}

/// The KMS key of both log groups.
#[derive(Debug, Clone, PartialEq)]
pub enum EffKms {
    /// An existing key.
    Existing { key_arn: String },
    /// A key mlobs creates.
    Create {
        alias: String,
        rotation: bool,
        deletion_window_days: i32,
    },
    /// CloudWatch's default encryption.
    Disabled,
}

/// The collector's role.
#[derive(Debug, Clone, PartialEq)]
pub enum EffRole {
    /// mlobs creates (and owns) a role with this name.
    Create { name: String },
    /// The user's role; verified only.
    Existing { arn: String },
}

/// The collector's AWS identity.
#[derive(Debug, Clone, PartialEq)]
pub struct EffIdentity {
    pub mode: IdentityMode,
    pub oidc_provider_arn: Option<String>,
    pub role: EffRole,
    pub permissions_boundary_arn: Option<String>,
    pub source_vpc: Option<String>,
    /// The collector ServiceAccount (in the pipeline's namespace).
    pub service_account: String,
}

/// The collector DaemonSet.
#[derive(Debug, Clone, PartialEq)]
pub struct EffCollector {
    pub image: String,
    pub resources: ResourceRequirements,
    /// Memory limit in MiB, parsed from `resources.limits.memory` (drives memory_limiter/GOMEMLIMIT).
    pub memory_limit_mib: u64,
    pub batch_size: u32,
    pub batch_timeout_ms: u64,
    pub queue_host_path: String,
    pub retry_max_elapsed_ms: u64,
    pub resource_attributes: BTreeMap<String, String>,
    pub otlp_enabled: bool,
}

/// The DCGM exporter the collector scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct EffExporter {
    pub mode: ExporterMode,
    /// Managed: the exporter's namespace; External: the existing exporter's.
    pub namespace: String,
    /// Labels of the exporter pods (Managed: mlobs' own labels).
    pub pod_selector: BTreeMap<String, String>,
    pub port: u16,
    /// Managed only.
    pub image: String,
    pub collect_interval_ms: u32,
}

/// Budget guardrail.
#[derive(Debug, Clone, PartialEq)]
pub struct EffBudget {
    pub monthly_usd: f64,
    pub action: BudgetAction,
}

/// Everything a pipeline needs, with defaults applied and guardrails enforced.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub namespace: String,
    pub name: String,
    /// Where the collector's ServiceAccount, ConfigMap and DaemonSet live: the pipeline's
    /// namespace unless the policy sets `collectorNamespace`.
    pub collector_namespace: String,
    /// metadata.uid, when the object came from the API server (tagged as `mlobs.io/uid`).
    pub uid: Option<String>,
    pub cluster_name: String,
    pub region: String,
    pub account_id: String,
    pub partition: String,
    /// The governing policy's name and generation.
    pub policy: Option<(String, Option<i64>)>,
    pub source_namespaces: Vec<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub logs: EffLogs,
    pub metrics: EffMetrics,
    pub kms: EffKms,
    pub identity: EffIdentity,
    pub collector: EffCollector,
    pub exporter: EffExporter,
    /// Destinations beyond CloudWatch: traces, AMP, Datadog, the S3 archive.
    pub destinations: EffDestinations,
    /// GPU alarms, the PrometheusRule and the pipeline-health SLO; `None` is off.
    pub alerts: Option<super::monitoring::EffAlerts>,
    /// The Grafana and CloudWatch dashboards (both off unless `spec.dashboards` is present).
    pub dashboards: super::monitoring::EffDashboards,
    pub drift_policy: DriftPolicy,
    pub deletion_policy: DeletionPolicy,
    pub resync_interval_ms: u64,
    /// How old a log group's newest event may be before DataFlowing turns False.
    pub data_flow_grace_ms: u64,
    pub adopt: bool,
    pub budget: Option<EffBudget>,
    /// Where each of the values above came from, section by section.
    pub sources: Sources,
}

impl Effective {
    /// Whether the collector ships pod logs (to the logs group).
    pub fn ships_logs(&self) -> bool {
        self.logs.enabled
    }

    /// Whether the collector's metrics pipeline runs (DCGM scraping with at least one field):
    /// only then does the metrics group receive EMF events.
    pub fn ships_metrics(&self) -> bool {
        self.metrics.ships()
    }

    /// `<namespace>/<name>`: the value of the `mlobs.io/pipeline` tag.
    pub fn pipeline_id(&self) -> String {
        conventions::pipeline_id(&self.namespace, &self.name)
    }

    /// `<namespace>.<name>`: the value of the `mlobs.io/pipeline` label (no `/` allowed there).
    /// Label values stop at 63 characters: longer ones are cut and hash-suffixed so they stay unique.
    pub fn pipeline_label(&self) -> String {
        conventions::pipeline_label(&self.namespace, &self.name)
    }

    /// Resource name prefix for Kubernetes children of this pipeline (see [`conventions::child_name`]).
    pub fn child_name(&self) -> String {
        conventions::child_name(&self.namespace, &self.name, self.collector_elsewhere())
    }

    /// The collector features the rendered configuration uses that need a minimum release.
    pub fn collector_features(&self) -> Vec<Feature> {
        let mut out = Vec::new();
        if self.logs.enabled {
            out.push(PER_POD_LOG_STREAMS);
        }
        out
    }

    /// Whether the collector runs outside the pipeline's namespace (no owner references there).
    pub fn collector_elsewhere(&self) -> bool {
        self.collector_namespace != self.namespace
    }
}

/// A guardrail the pipeline breaks. Building still works (so `plan` can show everything), but the
/// controller applies nothing new while any violation is open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Pipeline field path, e.g. `spec.metrics.dcgm.metrics[3]`.
    pub path: String,
    /// The policy field that sets the rule, e.g. `metrics.allowed`.
    pub rule: String,
    /// The policy's name.
    pub policy: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} [policy {} rule {}]",
            self.path, self.message, self.policy, self.rule
        )
    }
}

/// Labels every child object carries. Children are pruned by these, never by name.
pub fn common_labels(e: &Effective) -> BTreeMap<String, String> {
    conventions::collector_labels(&e.namespace, &e.name)
}

/// A fully populated effective spec for unit tests of the builders.
#[cfg(test)]
pub(crate) fn test_fixture() -> Effective {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let ownership = BTreeMap::from([
        ("mlobs.io/cluster".to_string(), "prod-gpu".to_string()),
        ("mlobs.io/pipeline".to_string(), "team-a/train".to_string()),
    ]);
    Effective {
        namespace: "team-a".into(),
        name: "train".into(),
        collector_namespace: "team-a".into(),
        uid: None,
        cluster_name: "prod-gpu".into(),
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
        partition: "aws".into(),
        policy: Some(("platform-default".into(), Some(1))),
        source_namespaces: vec!["team-a".into()],
        node_selector: conventions::default_gpu_node_selector(),
        tolerations: vec![Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
        logs: EffLogs {
            enabled: true,
            include: vec!["/var/log/pods/team-a_*/*/*.log".into()],
            exclude: vec![],
            group: EffLogGroup {
                name: "/aws/eks/prod-gpu/team-a/train/logs".into(),
                retention_days: 30,
                class: LogGroupClass::Standard,
                tags: ownership.clone(),
            },
            redactions: vec![Redaction {
                name: Some("customer-ids".into()),
                pattern: "customer_id=[0-9]+".into(),
                replacement: "customer_id=<redacted>".into(),
            }],
            job_id_label: Some("training.kubeflow.org/job-name".into()),
        },
        metrics: EffMetrics {
            dcgm_enabled: true,
            scrape_interval_ms: 30_000,
            metrics: {
                let mut m: Vec<String> = crate::crd::DEFAULT_DCGM_METRICS.iter().map(|s| s.to_string()).collect();
                m.sort();
                m
            },
            namespace: "ML/GPU".into(),
            dimensions: vec![
                vec!["k8s.cluster.name".into(), "k8s.node.name".into(), "gpu".into()],
                vec!["k8s.cluster.name".into()],
            ],
            group: EffLogGroup {
                name: "/aws/eks/prod-gpu/team-a/train/metrics".into(),
                retention_days: 30,
                class: LogGroupClass::Standard,
                tags: ownership,
            },
        },
        kms: EffKms::Create {
            alias: "alias/mlobs/prod-gpu/team-a/train".into(),
            rotation: true,
            deletion_window_days: 30,
        },
        identity: EffIdentity {
            mode: IdentityMode::Irsa,
            oidc_provider_arn: Some(
                "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE".into(),
            ),
            role: EffRole::Create {
                name: "mlobs-prod-gpu-team-a-train".into(),
            },
            permissions_boundary_arn: None,
            source_vpc: None,
            service_account: "mlobs-train".into(),
        },
        collector: EffCollector {
            image: crate::collector_version::DEFAULT_COLLECTOR_IMAGE.into(),
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("100m".into())),
                    ("memory".to_string(), Quantity("256Mi".into())),
                ])),
                limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
                ..Default::default()
            },
            memory_limit_mib: 512,
            batch_size: 1000,
            batch_timeout_ms: 10_000,
            queue_host_path: "/var/lib/mlobs/team-a-train".into(),
            retry_max_elapsed_ms: 300_000,
            resource_attributes: BTreeMap::new(),
            otlp_enabled: false,
        },
        exporter: EffExporter {
            mode: ExporterMode::Managed,
            namespace: "mlobs-system".into(),
            pod_selector: BTreeMap::from([(
                conventions::NAME_LABEL.to_string(),
                conventions::EXPORTER_APP.to_string(),
            )]),
            port: 9400,
            image: super::dcgm_exporter::DEFAULT_EXPORTER_IMAGE.into(),
            collect_interval_ms: 30_000,
        },
        destinations: EffDestinations::default(),
        alerts: None,
        dashboards: Default::default(),
        drift_policy: DriftPolicy::Correct,
        deletion_policy: DeletionPolicy::Retain,
        resync_interval_ms: 600_000,
        data_flow_grace_ms: 300_000,
        adopt: false,
        budget: None,
        sources: Sources::default(),
    }
}

/// The effective-spec fixture with every destination on: X-Ray, AMP and Datadog.
#[cfg(test)]
pub(crate) fn test_all_destinations() -> Effective {
    use super::destinations::*;
    let mut e = test_fixture();
    e.collector.otlp_enabled = true;
    e.destinations = EffDestinations {
        traces: Some(EffTraces::XRay),
        prometheus: Some(EffPrometheus {
            workspace_arn: "arn:aws:aps:us-east-1:123456789012:workspace/ws-abc".into(),
            region: "us-east-1".into(),
            workspace_id: "ws-abc".into(),
            managed: None,
        }),
        datadog: Some(EffDatadog {
            site: "datadoghq.eu".into(),
            api_key: crate::crd::KeyRef {
                name: "dd".into(),
                key: "api-key".into(),
            },
        }),
        archive: None,
        hot_path: None,
    };
    e
}

/// The effective-spec fixture with the S3 archive on (derived bucket name, 7 years, GLACIER_IR
/// after 90 days).
#[cfg(test)]
pub(crate) fn test_archive() -> Effective {
    let mut e = test_fixture();
    e.destinations.archive = Some(super::destinations::EffArchive {
        bucket: conventions::archive_bucket_name(&e.account_id, &e.region, &e.cluster_name, &e.namespace, &e.name),
        derived_name: true,
        retention_years: 7,
        transition_after_days: 90,
        storage_class: crate::crd::ArchiveStorageClass::GlacierIr,
        prefix: conventions::archive_prefix(&e.namespace, &e.name),
    });
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pod_streams_are_needed_only_when_logs_are_shipped() {
        let mut e = test_fixture();
        assert_eq!(e.collector_features(), [PER_POD_LOG_STREAMS]);
        e.logs.enabled = false;
        assert!(e.collector_features().is_empty());
    }
}
