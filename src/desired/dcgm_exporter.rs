//! The Managed DCGM exporter of a GpuTelemetryPolicy: a DaemonSet on GPU nodes that collects
//! exactly the policy's fields, its counters CSV and a node-local Service. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::conventions;
pub use crate::conventions::CONFIG_HASH_ANNOTATION;
use crate::crd::{DEFAULT_DCGM_METRICS, DcgmExporterSpec, ExporterMode, GpuTelemetryPolicy};

/// The pinned DCGM exporter image for Managed mode.
pub const DEFAULT_EXPORTER_IMAGE: &str = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04";
pub const DEFAULT_PORT: u16 = 9400;
pub const DEFAULT_COLLECT_INTERVAL_MS: u32 = 30_000;
pub const CSV_KEY: &str = "counters.csv";
const CSV_DIR: &str = "/etc/dcgm-exporter";
const POD_RESOURCES: &str = "/var/lib/kubelet/pod-resources";

/// Everything the exporter's objects are built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterSpec {
    /// The policy's name.
    pub name: String,
    pub namespace: String,
    pub image: String,
    pub port: u16,
    pub collect_interval_ms: u32,
    /// DCGM fields, sorted and unique.
    pub metrics: Vec<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// `DCGM_FI_` + `[A-Z0-9_]`: the CRD's pattern, and what keeps a CSV line at exactly two commas.
fn is_field_name(s: &str) -> bool {
    s.strip_prefix("DCGM_FI_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// None in External mode (someone else runs the exporter) and for a nameless policy (nothing can own it).
pub fn from_policy(p: &GpuTelemetryPolicy, operator_namespace: &str) -> Option<ExporterSpec> {
    let x = p.spec.dcgm_exporter.clone().unwrap_or_default();
    if x.mode.unwrap_or_default() == ExporterMode::External {
        return None;
    }
    let name = p.metadata.name.clone()?;
    let m = p.spec.metrics.as_ref();
    let mut metrics: Vec<String> = match m.and_then(|m| m.allowed.clone().or_else(|| m.defaults.clone())) {
        Some(list) => list,
        None => DEFAULT_DCGM_METRICS.iter().map(|s| s.to_string()).collect(),
    };
    // The API server's schema already rejects other names; dropping them keeps the CSV well-formed.
    metrics.retain(|m| is_field_name(m));
    metrics.sort();
    metrics.dedup();
    let managed = managed_settings(&x, operator_namespace);
    Some(ExporterSpec {
        name,
        namespace: managed.namespace,
        image: managed.image,
        port: managed.port,
        collect_interval_ms: managed.collect_interval_ms,
        metrics,
        node_selector: (p.spec.node_selector.clone()).unwrap_or_else(conventions::default_gpu_node_selector),
        tolerations: (p.spec.tolerations.clone()).unwrap_or_else(conventions::default_gpu_tolerations),
    })
}

/// Where a Managed exporter runs and serves: what it is built with, and what the collectors of
/// the policy's pipelines scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedSettings {
    pub namespace: String,
    pub image: String,
    pub port: u16,
    pub collect_interval_ms: u32,
}

/// The policy's `dcgmExporter` with the defaults applied (namespace: the operator's).
pub fn managed_settings(x: &DcgmExporterSpec, operator_namespace: &str) -> ManagedSettings {
    ManagedSettings {
        namespace: x.namespace.clone().unwrap_or_else(|| operator_namespace.to_string()),
        image: x.image.clone().unwrap_or_else(|| DEFAULT_EXPORTER_IMAGE.to_string()),
        port: x
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_PORT),
        collect_interval_ms: x
            .collect_interval_ms
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(DEFAULT_COLLECT_INTERVAL_MS),
    }
}

/// Known fields: (name, Prometheus type, help). Help text has no commas: the CSV has no quoting.
#[rustfmt::skip]
const FIELDS: [(&str, &str, &str); 27] = [
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors."),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors."),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "Total number of NVLink bandwidth counters for all lanes."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ)."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface is active."),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    ("DCGM_FI_PROF_NVLINK_RX_BYTES", "gauge", "Rate of data received over NVLink (bytes per second)."),
    ("DCGM_FI_PROF_NVLINK_TX_BYTES", "gauge", "Rate of data transmitted over NVLink (bytes per second)."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "Rate of data received over PCIe (bytes per second)."),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "Rate of data transmitted over PCIe (bytes per second)."),
    ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", "gauge", "Ratio of cycles the FP64 pipe is active."),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    ("DCGM_FI_PROF_SM_ACTIVE", "gauge", "Ratio of cycles an SM has at least one warp assigned."),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "gauge", "Ratio of resident warps to the maximum per SM."),
];

/// The exporter's collectors file: `FIELD, type, help` per line. Names that are not DCGM field
/// names are skipped (see [`from_policy`]); unknown fields are exported as gauges.
pub fn counters_csv(metrics: &[String]) -> String {
    let mut out = String::from("# Generated by mlobs from a GpuTelemetryPolicy; edit the policy instead.\n");
    out.push_str("# Format: DCGM field, Prometheus metric type, help message\n");
    for m in metrics.iter().filter(|m| is_field_name(m)) {
        match FIELDS.iter().find(|(n, ..)| n == m) {
            Some((_, kind, help)) => out.push_str(&format!("{m}, {kind}, {help}\n")),
            None => out.push_str(&format!(
                "{m}, gauge, DCGM field {m} (type unknown to mlobs: exported as a gauge).\n"
            )),
        }
    }
    out
}

/// Profiling fields read the GPU's performance counters through DCGM's profiling module, which
/// the driver only allows with CAP_SYS_ADMIN; device fields need no capability.
pub fn needs_sys_admin(metrics: &[String]) -> bool {
    metrics.iter().any(|m| m.starts_with("DCGM_FI_PROF_"))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Name of all three objects (see [`conventions::exporter_object_name`]).
pub fn object_name(x: &ExporterSpec) -> String {
    conventions::exporter_object_name(&x.name)
}

/// The collectors select exporter pods by these (see merge's Managed exporter selector).
pub fn labels(x: &ExporterSpec) -> BTreeMap<String, String> {
    conventions::exporter_labels(&x.name)
}

/// No runAsUser: the image runs as root, which DCGM needs to open the NVIDIA device nodes and
/// the kubelet's pod-resources socket (hostPath) for pod attribution. Capabilities are still
/// dropped, SYS_ADMIN only for profiling fields (tests/security.rs pins exactly this).
fn security_context(metrics: &[String]) -> SecurityContext {
    let sys_admin = needs_sys_admin(metrics);
    SecurityContext {
        capabilities: Some(Capabilities {
            add: sys_admin.then(|| vec!["SYS_ADMIN".to_string()]),
            drop: Some(vec!["ALL".into()]),
        }),
        // The API server refuses allowPrivilegeEscalation=false next to CAP_SYS_ADMIN.
        allow_privilege_escalation: (!sys_admin).then_some(false),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build(x: &ExporterSpec, owner: Option<OwnerReference>) -> (DaemonSet, ConfigMap, Service) {
    let name = object_name(x);
    let labels = labels(x);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(x.namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    };
    let csv = counters_csv(&x.metrics);
    // A changed field list must restart the pods: the exporter reads its CSV only at start.
    let hash = sha256_hex(&csv);
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(CSV_KEY.to_string(), csv)])),
        ..Default::default()
    };
    let port_name = "metrics".to_string();
    let container = Container {
        name: "dcgm-exporter".into(),
        image: Some(x.image.clone()),
        args: Some(
            [
                "-f",
                &format!("{CSV_DIR}/{CSV_KEY}"),
                "-a",
                &format!(":{}", x.port),
                "-c",
                &x.collect_interval_ms.to_string(),
                "-k",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            // See every GPU of the node without requesting nvidia.com/gpu, which would take one from jobs.
            EnvVar {
                name: "NVIDIA_VISIBLE_DEVICES".into(),
                value: Some("all".into()),
                ..Default::default()
            },
            EnvVar {
                name: "NODE_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(port_name.clone()),
            container_port: i32::from(x.port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::String(port_name.clone()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(security_context(&x.metrics)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "counters".into(),
                mount_path: CSV_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            // -k maps GPUs to pods through the kubelet's pod-resources socket.
            VolumeMount {
                name: "pod-resources".into(),
                mount_path: POD_RESOURCES.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        node_selector: Some(x.node_selector.clone()),
        tolerations: Some(x.tolerations.clone()),
        // Pod mapping uses the kubelet socket, not the API: no token needed.
        automount_service_account_token: Some(false),
        volumes: Some(vec![
            Volume {
                name: "counters".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "pod-resources".into(),
                host_path: Some(HostPathVolumeSource {
                    path: POD_RESOURCES.into(),
                    type_: Some("Directory".into()),
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let daemon_set = DaemonSet {
        metadata: meta.clone(),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(labels),
            // Each collector scrapes the exporter on its own node only.
            internal_traffic_policy: Some("Local".into()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.clone()),
                port: i32::from(x.port),
                target_port: Some(IntOrString::String(port_name)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    (daemon_set, config_map, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DcgmExporterSpec, GpuTelemetryPolicySpec, PolicyMetricsSpec};

    fn policy(metrics: Option<PolicyMetricsSpec>) -> GpuTelemetryPolicy {
        GpuTelemetryPolicy::new(
            "platform",
            GpuTelemetryPolicySpec {
                metrics,
                ..Default::default()
            },
        )
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parse_csv(csv: &str) -> Vec<(String, String)> {
        let lines = csv.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        lines
            .map(|l| {
                assert_eq!(l.matches(',').count(), 2, "{l:?}");
                let mut parts = l.split(',').map(str::trim);
                (
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn container(ds: &DaemonSet) -> Container {
        ds.spec.clone().unwrap().template.spec.unwrap().containers[0].clone()
    }

    #[test]
    fn csv_has_two_commas_per_line_one_line_per_metric_and_parses_back() {
        let mut metrics: Vec<String> = FIELDS.iter().map(|(n, ..)| n.to_string()).collect();
        metrics.push("DCGM_FI_DEV_SOMETHING_NEW".into());
        let parsed = parse_csv(&counters_csv(&metrics));
        assert_eq!(parsed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), metrics);
        let kind = |f: &str| parsed.iter().find(|(n, _)| n == f).map(|(_, k)| k.as_str());
        assert_eq!(kind("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"), Some("counter"));
        assert_eq!(kind("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"), Some("counter"));
        assert_eq!(kind("DCGM_FI_DEV_GPU_UTIL"), Some("gauge"));
        assert_eq!(kind("DCGM_FI_DEV_SOMETHING_NEW"), Some("gauge"));
        assert!(
            parsed
                .iter()
                .filter(|(n, _)| n.starts_with("DCGM_FI_PROF_"))
                .all(|(_, k)| k == "gauge")
        );
        assert!(
            FIELDS
                .iter()
                .all(|(_, k, help)| ["gauge", "counter"].contains(k) && !help.contains(','))
        );
        assert!(FIELDS.windows(2).all(|w| w[0].0 < w[1].0), "table sorted and unique");
        // A name that would break the two-comma rule never reaches the file.
        assert!(parse_csv(&counters_csv(&names(&["DCGM_FI_DEV_X, counter, y", "bogus"]))).is_empty());
    }

    #[test]
    fn default_ten_fields_have_the_reference_types() {
        let parsed = parse_csv(&counters_csv(&names(&DEFAULT_DCGM_METRICS)));
        let counters: Vec<&str> = parsed
            .iter()
            .filter(|(_, k)| k == "counter")
            .map(|(n, _)| n.as_str())
            .collect();
        let expected = [
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        ];
        assert_eq!(counters, expected);
        assert_eq!(parsed.len(), 10);
    }

    #[test]
    fn metrics_come_from_allowed_then_defaults_then_built_in_sorted_and_unique() {
        let x = from_policy(&policy(None), "mlobs-system").unwrap();
        let mut builtin = names(&DEFAULT_DCGM_METRICS);
        builtin.sort();
        assert_eq!(x.metrics, builtin);
        let spec = |allowed: Option<&[&str]>, defaults: Option<&[&str]>| PolicyMetricsSpec {
            allowed: allowed.map(names),
            defaults: defaults.map(names),
            ..Default::default()
        };
        let only_defaults = from_policy(&policy(Some(spec(None, Some(&["DCGM_FI_DEV_GPU_UTIL"])))), "ns").unwrap();
        assert_eq!(only_defaults.metrics, names(&["DCGM_FI_DEV_GPU_UTIL"]));
        let allowed = [
            "DCGM_FI_PROF_SM_ACTIVE",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_PROF_SM_ACTIVE",
        ];
        let x = from_policy(
            &policy(Some(spec(Some(&allowed), Some(&["DCGM_FI_DEV_GPU_UTIL"])))),
            "ns",
        )
        .unwrap();
        assert_eq!(x.metrics, names(&["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_SM_ACTIVE"]));
    }

    #[test]
    fn managed_defaults_and_external_mode_is_none() {
        let x = from_policy(&policy(None), "mlobs-system").unwrap();
        assert_eq!(
            (x.namespace.as_str(), x.port, x.collect_interval_ms),
            ("mlobs-system", 9400, 30_000)
        );
        assert_eq!(x.image, "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04");
        assert_eq!(
            x.node_selector,
            BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())])
        );
        assert_eq!(
            (x.tolerations[0].key.as_deref(), x.tolerations[0].operator.as_deref()),
            (Some("nvidia.com/gpu"), Some("Exists"))
        );
        let mut p = policy(None);
        p.spec.dcgm_exporter = Some(DcgmExporterSpec {
            mode: Some(ExporterMode::External),
            ..Default::default()
        });
        assert_eq!(from_policy(&p, "mlobs-system"), None);
        let mut nameless = policy(None);
        nameless.metadata.name = None;
        assert_eq!(from_policy(&nameless, "mlobs-system"), None);
    }

    #[test]
    fn sys_admin_is_added_iff_a_profiling_field_is_selected() {
        let mut x = from_policy(&policy(None), "ns").unwrap();
        let sc = container(&build(&x, None).0).security_context.unwrap();
        let caps = sc.capabilities.clone().unwrap();
        assert_eq!((caps.add, caps.drop), (None, Some(vec!["ALL".to_string()])));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        x.metrics.push("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE".into());
        let sc = container(&build(&x, None).0).security_context.unwrap();
        assert_eq!(sc.capabilities.unwrap().add, Some(vec!["SYS_ADMIN".to_string()]));
        assert_eq!(sc.allow_privilege_escalation, None);
    }

    #[test]
    fn objects_carry_args_mounts_ports_labels_and_config_hash() {
        let x = from_policy(&policy(None), "mlobs-system").unwrap();
        let owner = OwnerReference {
            name: "platform".into(),
            kind: "GpuTelemetryPolicy".into(),
            ..Default::default()
        };
        let (ds, cm, svc) = build(&x, Some(owner));
        assert_eq!(ds.metadata.name.as_deref(), Some("mlobs-dcgm-exporter-platform"));
        let l = ds.metadata.labels.clone().unwrap();
        assert_eq!(l["app.kubernetes.io/name"], "mlobs-dcgm-exporter");
        assert_eq!(
            (
                l["app.kubernetes.io/managed-by"].as_str(),
                l["mlobs.io/policy"].as_str()
            ),
            ("mlobs", "platform")
        );
        let c = container(&ds);
        assert_eq!(
            c.args.unwrap(),
            names(&[
                "-f",
                "/etc/dcgm-exporter/counters.csv",
                "-a",
                ":9400",
                "-c",
                "30000",
                "-k"
            ])
        );
        let port = &c.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.container_port), (Some("metrics"), 9400));
        let mounts = c.volume_mounts.unwrap();
        let pr = mounts
            .iter()
            .find(|m| m.mount_path == "/var/lib/kubelet/pod-resources")
            .unwrap();
        assert_eq!(pr.read_only, Some(true));
        let pod = ds.spec.clone().unwrap().template;
        let volumes = pod.spec.unwrap().volumes.unwrap();
        assert!(volumes.iter().any(|v| {
            v.host_path
                .as_ref()
                .is_some_and(|h| h.path == "/var/lib/kubelet/pod-resources")
        }));
        let hash = pod.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone();
        assert_eq!(hash, sha256_hex(&cm.data.clone().unwrap()[CSV_KEY]));
        let spec = svc.spec.clone().unwrap();
        assert_eq!(
            (spec.internal_traffic_policy.as_deref(), spec.ports.unwrap()[0].port),
            (Some("Local"), 9400)
        );
        assert!(
            [&ds.metadata, &cm.metadata, &svc.metadata]
                .iter()
                .all(|m| m.owner_references.as_ref().is_some_and(|o| o.len() == 1))
        );
        let mut fewer = x.clone();
        fewer.metrics.pop();
        let other = build(&fewer, None)
            .0
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert_ne!(
            other[CONFIG_HASH_ANNOTATION], hash,
            "a changed field list rolls the pods"
        );
    }

    #[test]
    fn long_or_dotted_policy_names_give_a_valid_service_name() {
        let mut x = from_policy(&policy(None), "ns").unwrap();
        x.name = format!("gpu.{}", "p".repeat(100));
        let name = object_name(&x);
        assert!(
            name.len() <= 63 && !name.contains('.') && !name.ends_with('-'),
            "{name}"
        );
        x.name.push('q');
        assert_ne!(object_name(&x), name);
    }

    #[test]
    fn objects_round_trip_through_k8s_openapi_types() {
        let mut x = from_policy(&policy(None), "ns").unwrap();
        x.metrics.push("DCGM_FI_PROF_SM_ACTIVE".into());
        let (ds, cm, svc) = build(
            &x,
            Some(OwnerReference {
                name: "platform".into(),
                ..Default::default()
            }),
        );
        fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) {
            let first = serde_json::to_value(v).unwrap();
            let again: T = serde_json::from_value(first.clone()).unwrap();
            assert_eq!(serde_json::to_value(&again).unwrap(), first);
        }
        round_trip(&ds);
        round_trip(&cm);
        round_trip(&svc);
        assert_eq!(build(&x, None), build(&x, None), "deterministic");
    }
}
