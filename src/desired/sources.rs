//! Where each effective value came from, as types: [`Sourced`] while merging, [`Sources`] beside
//! the effective values afterwards. [`Sources`] mirrors the sections of the effective spec field by
//! field, so the settings table reads `sources.identity.role` — a path that must compile — instead
//! of looking a string up in a map.

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Source {
    /// mlobs' built-in default.
    #[default]
    BuiltIn,
    /// The operator's flags (`--cluster-name`, `--region`, ...) or the CLI's.
    Operator,
    /// A default from the governing GpuTelemetryPolicy.
    PolicyDefault,
    /// The pipeline's own spec.
    Pipeline,
    /// Forced by a policy guardrail (e.g. a required redaction added).
    PolicyGuardrail,
    /// Derived from other effective values (e.g. a name built from cluster, namespace, pipeline).
    Derived,
}

/// A value and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }

    /// The first of the pipeline's value, the policy's default and the built-in default.
    pub fn pick(pipeline: Option<T>, policy: Option<T>, builtin: T) -> Self {
        match (pipeline, policy) {
            (Some(v), _) => Sourced::new(v, Source::Pipeline),
            (None, Some(v)) => Sourced::new(v, Source::PolicyDefault),
            (None, None) => Sourced::new(builtin, Source::BuiltIn),
        }
    }

    /// The pipeline's value, else the built-in default: a field the policy has no default for.
    pub fn pipeline_or(pipeline: Option<T>, builtin: T) -> Self {
        Sourced::pick(pipeline, None, builtin)
    }

    /// Replaces the value, e.g. when a guardrail raises it.
    pub fn replace(&mut self, value: T, source: Source) {
        *self = Sourced::new(value, source);
    }
}

/// Sources of the top-level values and of every section of the effective spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    pub cluster_name: Source,
    pub region: Source,
    pub collector_namespace: Source,
    pub placement: PlacementSources,
    pub logs: LogsSources,
    pub metrics: MetricsSources,
    /// The KMS key as a whole (existing, disabled, or created with alias, rotation and window).
    pub kms: Source,
    pub identity: IdentitySources,
    pub collector: CollectorSources,
    pub exporter: Source,
    pub destinations: DestinationsSources,
    pub lifecycle: LifecycleSources,
}

/// `spec.traces.destination`, `spec.metrics.prometheus`, `spec.datadog`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationsSources {
    pub traces: Source,
    pub prometheus: Source,
    pub datadog: Source,
    pub archive: ArchiveSources,
    pub hot_path: HotPathSources,
}

/// `spec.hotPath`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotPathSources {
    pub enabled: Source,
    pub stream: Source,
    pub capacity: Source,
    pub retention_hours: Source,
    pub patterns: Source,
    pub mem_buf_limit: Source,
    pub image: Source,
}

/// `spec.archive`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveSources {
    pub enabled: Source,
    pub bucket: Source,
    pub retention_years: Source,
    pub transition: Source,
    pub prefix: Source,
}

/// `spec.sources`: what the collector reads and where it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacementSources {
    pub namespaces: Source,
    pub node_selector: Source,
    pub tolerations: Source,
}

/// A log group of `spec.logs` or `spec.metrics.cloudwatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogGroupSources {
    pub name: Source,
    pub retention_days: Source,
    pub class: Source,
}

/// `spec.logs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsSources {
    pub enabled: Source,
    pub include: Source,
    pub exclude: Source,
    pub group: LogGroupSources,
    pub redaction: Source,
}

/// `spec.metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSources {
    pub dcgm_enabled: Source,
    pub scrape_interval: Source,
    pub metrics: Source,
    pub namespace: Source,
    pub dimensions: Source,
    pub group: LogGroupSources,
}

/// `spec.identity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentitySources {
    pub mode: Source,
    /// The role as a whole: an existing ARN, a role name, or the derived name.
    pub role: Source,
    pub permissions_boundary_arn: Source,
}

/// `spec.collector` and `spec.traces`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorSources {
    pub image: Source,
    pub resources: Source,
    pub batch_size: Source,
    pub batch_timeout: Source,
    pub queue_host_path: Source,
    pub retry_max_elapsed: Source,
    pub resource_attributes: Source,
    pub otlp_enabled: Source,
}

/// `spec.driftPolicy`, `spec.deletionPolicy`, `spec.resyncInterval`, `spec.dataFlow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleSources {
    pub drift_policy: Source,
    pub deletion_policy: Source,
    pub resync_interval: Source,
    pub data_flow_grace: Source,
}
