//! The collector DaemonSet (`spec.collector`, `spec.traces`) and the DCGM exporter it scrapes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Merger;
use super::placement::Placement;
use crate::collector_version::{DEFAULT_COLLECTOR_IMAGE, check_image as check_release};
use crate::conventions;
use crate::crd::validate::{FieldError, Invalid};
use crate::crd::{ExporterMode, MLObservabilityPipelineSpec, parse_duration_ms};
use crate::desired::dcgm_exporter::{self, DEFAULT_PORT};
use crate::desired::effective::{Context, EffCollector, EffExporter, Effective};
use crate::desired::sources::{CollectorSources, Source, Sourced};

/// Parses a Kubernetes memory quantity into MiB (rounded down). None when it is not a memory size.
pub fn quantity_mib(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let bytes = n * factor;
    if !bytes.is_finite() || bytes < 0.0 {
        return None;
    }
    Some((bytes / (1024.0 * 1024.0)) as u64)
}

fn builtin_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
        ..Default::default()
    }
}

/// The memory limit in MiB: memory_limiter and GOMEMLIMIT are derived from it, so it is required.
fn memory_limit_mib(m: &mut Merger<'_>, resources: &ResourceRequirements) -> u64 {
    let path = "spec.collector.resources.limits.memory";
    match resources.limits.as_ref().and_then(|l| l.get("memory")) {
        Some(q) => match quantity_mib(q) {
            Some(mib) if mib >= 64 => mib,
            _ => {
                m.error(
                    path,
                    "memoryLimit",
                    format!("{:?} must be a memory size of at least 64Mi", q.0),
                );
                0
            }
        },
        None => {
            m.error(
                path,
                "required",
                "is required: memory_limiter and GOMEMLIMIT are derived from it",
            );
            0
        }
    }
}

fn duration_ms(s: Option<&String>) -> Option<u64> {
    s.and_then(|t| parse_duration_ms(t).ok())
}

pub(super) fn collector(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
) -> (EffCollector, CollectorSources) {
    let col = spec.collector.as_ref();
    let col_def = m.policy_spec().and_then(|p| p.collector_defaults.as_ref());
    let image = Sourced::pick(
        col.and_then(|c| c.image.clone()),
        col_def.and_then(|c| c.image.clone()),
        DEFAULT_COLLECTOR_IMAGE.to_string(),
    );
    let resources = Sourced::pick(
        col.and_then(|c| c.resources.clone()),
        col_def.and_then(|c| c.resources.clone()),
        builtin_resources(),
    );
    let memory_limit_mib = memory_limit_mib(m, &resources.value);
    let batch = col.and_then(|c| c.batch.as_ref());
    let batch_size = Sourced::pipeline_or(batch.and_then(|b| b.send_batch_size), 1000);
    let batch_timeout = Sourced::pipeline_or(duration_ms(batch.and_then(|b| b.timeout.as_ref())), 10_000);
    let queue_host_path = Sourced::pipeline_or(
        col.and_then(|c| c.queue_host_path.clone()),
        format!("/var/lib/mlobs/{}-{}", at.namespace, at.name),
    );
    let retry_max_elapsed = Sourced::pipeline_or(duration_ms(col.and_then(|c| c.retry_max_elapsed.as_ref())), 300_000);
    let resource_attributes = Sourced::pipeline_or(col.and_then(|c| c.resource_attributes.clone()), BTreeMap::new());
    let otlp = spec.traces.as_ref().and_then(|t| t.otlp.as_ref());
    let otlp_enabled = Sourced::pipeline_or(otlp.and_then(|o| o.enabled), false);
    let sources = CollectorSources {
        image: image.source,
        resources: resources.source,
        batch_size: batch_size.source,
        batch_timeout: batch_timeout.source,
        queue_host_path: queue_host_path.source,
        retry_max_elapsed: retry_max_elapsed.source,
        resource_attributes: resource_attributes.source,
        otlp_enabled: otlp_enabled.source,
    };
    let effective = EffCollector {
        image: image.value,
        resources: resources.value,
        memory_limit_mib,
        batch_size: batch_size.value.max(1) as u32,
        batch_timeout_ms: batch_timeout.value,
        queue_host_path: queue_host_path.value,
        retry_max_elapsed_ms: retry_max_elapsed.value,
        resource_attributes: resource_attributes.value,
        otlp_enabled: otlp_enabled.value,
    };
    (effective, sources)
}

/// The DCGM exporter the collector scrapes: the policy's (Managed: mlobs runs it with
/// [`dcgm_exporter::managed_settings`]; External: someone else does), else NVIDIA gpu-operator's.
pub(super) fn exporter(m: &Merger<'_>, ctx: &Context) -> Sourced<EffExporter> {
    let Some(policy) = m.policy else {
        // Without a policy nobody runs a managed exporter: scrape NVIDIA gpu-operator's, the
        // most common existing one.
        let gpu_operator = EffExporter {
            mode: ExporterMode::External,
            namespace: "gpu-operator".into(),
            pod_selector: BTreeMap::from([("app".to_string(), "nvidia-dcgm-exporter".to_string())]),
            port: DEFAULT_PORT,
            image: String::new(),
            collect_interval_ms: 0,
        };
        return Sourced::new(gpu_operator, Source::BuiltIn);
    };
    let spec = policy.spec.dcgm_exporter.clone().unwrap_or_default();
    let exporter = match spec.mode.unwrap_or_default() {
        ExporterMode::Managed => {
            let x = dcgm_exporter::managed_settings(&spec, &ctx.operator_namespace);
            EffExporter {
                mode: ExporterMode::Managed,
                namespace: x.namespace,
                pod_selector: conventions::exporter_selector(&m.policy_name),
                port: x.port,
                image: x.image,
                collect_interval_ms: x.collect_interval_ms,
            }
        }
        ExporterMode::External => EffExporter {
            mode: ExporterMode::External,
            namespace: spec.namespace.unwrap_or_default(),
            pod_selector: spec.pod_selector.unwrap_or_default(),
            port: (spec.port.and_then(|p| u16::try_from(p).ok())).unwrap_or(DEFAULT_PORT),
            image: String::new(),
            collect_interval_ms: 0,
        },
    };
    Sourced::new(exporter, Source::PolicyDefault)
}

/// Refuses a pinned collector release older than a feature the configuration uses.
pub(super) fn check_image(e: &Effective, policy_name: &str) -> Result<(), Invalid> {
    let Err(message) = check_release(&e.collector.image, &e.collector_features()) else {
        return Ok(());
    };
    // The pipeline's own field is where the fix goes either way: pin a newer image there, or
    // ask the policy owner to raise collectorDefaults.image.
    let message = match e.sources.collector.image {
        Source::PolicyDefault => {
            format!("{message} (the image is policy {policy_name:?}'s spec.collectorDefaults.image)")
        }
        _ => message,
    };
    Err(Invalid(vec![FieldError {
        path: "spec.collector.image".into(),
        rule: "collectorVersion".into(),
        message,
    }]))
}
