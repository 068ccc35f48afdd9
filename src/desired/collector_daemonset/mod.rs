//! The collector DaemonSet and the ConfigMap holding its configuration. The pod template carries
//! the configuration's hash, so a configuration change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::collector_config::{
    CONTAINER_NAME, HEALTH_PORT, NODE_NAME_ENV, OTLP_GRPC_PORT, OTLP_HTTP_PORT, otlp_active,
};
use super::effective::{Effective, common_labels};
use super::self_monitoring;

pub mod destinations;

/// ConfigMap key of the collector configuration.
pub const CONFIG_KEY: &str = "config.yaml";
/// Pod template annotation with [`super::collector_config::config_hash`].
pub use crate::conventions::CONFIG_HASH_ANNOTATION;
const CONFIG_DIR: &str = "/conf";
const POD_LOGS: &str = "/var/log/pods";
/// Label keys of the selector: immutable once the DaemonSet exists, so only stable ones.
const SELECTOR_KEYS: [&str; 2] = [crate::conventions::NAME_LABEL, crate::conventions::PIPELINE_LABEL];

fn metadata(e: &Effective) -> ObjectMeta {
    ObjectMeta {
        name: Some(e.child_name()),
        namespace: Some(e.collector_namespace.clone()),
        labels: Some(common_labels(e)),
        ..Default::default()
    }
}

/// The ConfigMap with the rendered configuration under [`CONFIG_KEY`].
pub fn config_map(e: &Effective, yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(e),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml.to_string())])),
        ..Default::default()
    }
}

/// GOMEMLIMIT at 80% of the container limit, so Go's GC works hard before the kernel OOM-kills.
/// None without a limit: `0MiB` would make the GC run constantly.
fn gomemlimit(memory_limit_mib: u64) -> Option<String> {
    let mib = memory_limit_mib.saturating_mul(4) / 5;
    (mib > 0).then(|| format!("{mib}MiB"))
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// An environment variable from a field of the pod (downward API).
fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub(crate) fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn health_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".into()),
            port: IntOrString::Int(i32::from(HEALTH_PORT)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs as uid/gid 0 with every capability dropped. The kubelet writes `/var/log/pods/**` logs as
/// root:root 0640 and creates the queue hostPath (DirectoryOrCreate) as root:root 0755, so the
/// image's uid 10001 could neither read the logs nor write offsets and queues. Without
/// CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, uid 0 is held to the mode bits like any user: as the
/// files' owner it gets exactly the owner bits (read the logs, write its queue directory) and
/// cannot bypass permissions anywhere else; the log mount is read-only besides.
pub(crate) fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

pub(crate) fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The collector DaemonSet. `config_hash` is the hash of the ConfigMap's configuration.
pub fn daemon_set(e: &Effective, config_hash: &str) -> DaemonSet {
    let labels = common_labels(e);
    let mut envs = vec![
        field_env(NODE_NAME_ENV, "spec.nodeName"),
        // The telemetry endpoint listens on the pod's IP (self_monitoring::telemetry).
        field_env(self_monitoring::POD_IP_ENV, "status.podIP"),
        env("AWS_REGION", e.region.clone()),
    ];
    envs.extend(gomemlimit(e.collector.memory_limit_mib).map(|v| env("GOMEMLIMIT", v)));
    envs.extend(destinations::env(e));

    let mut ports = vec![
        port("health", HEALTH_PORT),
        port(self_monitoring::TELEMETRY_PORT_NAME, self_monitoring::TELEMETRY_PORT),
    ];
    if otlp_active(e) {
        ports.extend([port("otlp-grpc", OTLP_GRPC_PORT), port("otlp-http", OTLP_HTTP_PORT)]);
    }

    let queue = &e.collector.queue_host_path;
    let config_volume = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: e.child_name(),
            items: Some(vec![KeyToPath {
                key: CONFIG_KEY.into(),
                path: CONFIG_KEY.into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The queue directory is mounted at its host path, the `directory` of file_storage.
    let mut volumes = vec![config_volume, host_path("queue", queue, "DirectoryOrCreate")];
    let mut mounts = vec![mount("config", CONFIG_DIR, true), mount("queue", queue, false)];
    if e.logs.enabled {
        volumes.push(host_path("pod-logs", POD_LOGS, "Directory"));
        mounts.push(mount("pod-logs", POD_LOGS, true));
    }
    for (volume, m) in destinations::volumes(e) {
        volumes.push(volume);
        mounts.push(m);
    }

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(e.collector.image.clone()),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_KEY}")]),
        env: Some(envs),
        ports: Some(ports),
        resources: Some(e.collector.resources.clone()),
        liveness_probe: Some(health_probe()),
        readiness_probe: Some(health_probe()),
        security_context: Some(security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let pod = gpu_node_pod(e, &e.identity.service_account, container, volumes);
    rolling_daemon_set(metadata(e), labels, config_hash, pod)
}

/// A pod of one container on the pipeline's GPU nodes (its node selector and tolerations), as
/// `service_account`, with the RuntimeDefault seccomp profile. The collector's and the hot path's.
pub(crate) fn gpu_node_pod(
    e: &Effective,
    service_account: &str,
    container: Container,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(service_account.to_string()),
        node_selector: Some(e.node_selector.clone()).filter(|s| !s.is_empty()),
        tolerations: Some(e.tolerations.clone()).filter(|t| !t.is_empty()),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// A DaemonSet of `pod` that rolls one node at a time, selecting its pods by the stable keys of
/// `labels` (name and pipeline: a selector is immutable) and carrying `config_hash` on the pod
/// template (a config change rolls the pods). The collector's and the hot path's.
pub(crate) fn rolling_daemon_set(
    metadata: ObjectMeta,
    labels: BTreeMap<String, String>,
    config_hash: &str,
    pod: PodSpec,
) -> DaemonSet {
    let selector: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| SELECTOR_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    DaemonSet {
        metadata,
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: None,
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;
    use crate::desired::collector_config::{config_hash, to_yaml};
    use crate::desired::effective::test_fixture;

    /// Reads `value` as `T` and writes it back: k8s-openapi ignores unknown fields, so any field it
    /// does not know (a typo, a wrong nesting) shows up as a difference.
    fn deny_unknown<T: Serialize + DeserializeOwned>(value: &Value) -> Result<T, String> {
        let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let again = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        if &again == value {
            Ok(typed)
        } else {
            Err(format!("dropped fields: {value} became {again}"))
        }
    }

    fn pod(ds: &DaemonSet) -> PodSpec {
        ds.spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .unwrap_or_default()
    }

    fn env_value(ds: &DaemonSet, name: &str) -> Option<String> {
        pod(ds).containers[0]
            .env
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.value.clone())
    }

    fn hash_annotation(ds: &DaemonSet) -> Option<String> {
        let meta = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.clone())
            .unwrap_or_default();
        meta.annotations.and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let e = test_fixture();
        let mut changed = e.clone();
        changed.collector.batch_size = 500;
        let (a, b) = (config_hash(&to_yaml(&e)), config_hash(&to_yaml(&changed)));
        assert_ne!(a, b);
        assert_eq!(hash_annotation(&daemon_set(&e, &a)), Some(a.clone()));
        assert_ne!(
            hash_annotation(&daemon_set(&e, &a)),
            hash_annotation(&daemon_set(&changed, &b))
        );
        assert_eq!(daemon_set(&e, &a), daemon_set(&e.clone(), &config_hash(&to_yaml(&e))));
    }

    #[test]
    fn pod_logs_are_a_read_only_host_path_only_when_logs_are_collected() {
        let e = test_fixture();
        let spec = pod(&daemon_set(&e, "h"));
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "pod-logs")
            .cloned()
            .unwrap_or_default();
        assert_eq!(volume.host_path.map(|h| h.path), Some("/var/log/pods".into()));
        let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
        let logs = mounts
            .iter()
            .find(|m| m.name == "pod-logs")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (logs.mount_path.as_str(), logs.read_only),
            ("/var/log/pods", Some(true))
        );
        let queue = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "queue")
            .and_then(|v| v.host_path.clone());
        assert_eq!(
            queue,
            Some(HostPathVolumeSource {
                path: e.collector.queue_host_path.clone(),
                type_: Some("DirectoryOrCreate".into())
            })
        );
        assert!(
            mounts.iter().any(|m| m.name == "queue"
                && m.mount_path == e.collector.queue_host_path
                && m.read_only == Some(false))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "config" && m.mount_path == "/conf" && m.read_only == Some(true))
        );

        let mut no_logs = e.clone();
        no_logs.logs.enabled = false;
        assert!(
            !pod(&daemon_set(&no_logs, "h"))
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == "pod-logs")
        );
    }

    #[test]
    fn security_context_is_pinned() {
        let spec = pod(&daemon_set(&test_fixture(), "h"));
        let sc = spec.containers[0].security_context.clone().unwrap_or_default();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(0), Some(0)));
        assert_eq!(sc.seccomp_profile.map(|p| p.type_), Some("RuntimeDefault".into()));
        let pod_seccomp = spec.security_context.and_then(|p| p.seccomp_profile).map(|p| p.type_);
        assert_eq!(pod_seccomp, Some("RuntimeDefault".into()));
        assert_eq!(spec.priority_class_name, None);
        assert_eq!(spec.host_network, None);
    }

    #[test]
    fn gomemlimit_is_80_percent_of_the_memory_limit() {
        let mut e = test_fixture();
        assert_eq!(env_value(&daemon_set(&e, "h"), "GOMEMLIMIT").as_deref(), Some("409MiB"));
        e.collector.memory_limit_mib = 2048;
        assert_eq!(
            env_value(&daemon_set(&e, "h"), "GOMEMLIMIT").as_deref(),
            Some("1638MiB")
        );
        e.collector.memory_limit_mib = 0;
        assert_eq!(env_value(&daemon_set(&e, "h"), "GOMEMLIMIT"), None);
        assert_eq!(
            env_value(&daemon_set(&e, "h"), "AWS_REGION").as_deref(),
            Some("us-east-1")
        );
    }

    #[test]
    fn pod_runs_the_pipeline_collector_on_gpu_nodes() {
        let e = test_fixture();
        let ds = daemon_set(&e, "h");
        let spec = ds.spec.clone().unwrap_or_default();
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        let template_labels = spec
            .template
            .metadata
            .clone()
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(
            selector.keys().collect::<Vec<_>>(),
            ["app.kubernetes.io/name", "mlobs.io/pipeline"]
        );
        assert!(selector.iter().all(|(k, v)| template_labels.get(k) == Some(v)));
        assert_eq!(ds.metadata.labels, Some(common_labels(&e)));
        let strategy = spec
            .update_strategy
            .and_then(|s| s.rolling_update)
            .and_then(|r| r.max_unavailable);
        assert_eq!(strategy, Some(IntOrString::Int(1)));
        let p = pod(&ds);
        assert_eq!(p.service_account_name.as_deref(), Some("mlobs-train"));
        assert_eq!(p.node_selector, Some(e.node_selector.clone()));
        assert_eq!(p.tolerations, Some(e.tolerations.clone()));
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some(e.collector.image.as_str()));
        assert_eq!(c.args, Some(vec!["--config=/conf/config.yaml".to_string()]));
        assert_eq!(c.resources, Some(e.collector.resources.clone()));
        let node = c
            .env
            .iter()
            .flatten()
            .find(|v| v.name == NODE_NAME_ENV)
            .and_then(|v| v.value_from.clone());
        assert_eq!(
            node.and_then(|s| s.field_ref).map(|f| f.field_path),
            Some("spec.nodeName".into())
        );
        for probe in [&c.liveness_probe, &c.readiness_probe] {
            let get = probe.clone().and_then(|p| p.http_get).unwrap_or_default();
            assert_eq!((get.path.as_deref(), get.port), (Some("/"), IntOrString::Int(13133)));
        }
        let ports = |ds: &DaemonSet| {
            pod(ds).containers[0]
                .ports
                .iter()
                .flatten()
                .map(|p| p.container_port)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&ds), [13133, 8888], "health and telemetry");
        let mut otlp = e.clone();
        otlp.collector.otlp_enabled = true;
        assert_eq!(ports(&daemon_set(&otlp, "h")), [13133, 8888, 4317, 4318]);
        let spec = pod(&ds);
        let pod_ip = (spec.containers[0].env.iter().flatten()).find(|v| v.name == "POD_IP");
        let field = pod_ip.and_then(|v| v.value_from.as_ref()?.field_ref.as_ref());
        assert_eq!(
            field.map(|f| f.field_path.as_str()),
            Some("status.podIP"),
            "the telemetry endpoint's host"
        );
        let cm = config_map(&e, "x: 1\n");
        let volume = p
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.config_map.clone())
            .unwrap_or_default();
        assert_eq!(
            (Some(volume.name), cm.metadata.name.clone()),
            (Some(e.child_name()), Some(e.child_name()))
        );
        assert_eq!(
            cm.data.and_then(|d| d.get(CONFIG_KEY).cloned()).as_deref(),
            Some("x: 1\n")
        );
    }

    #[test]
    fn objects_round_trip_through_the_api_types_without_unknown_fields() {
        let e = test_fixture();
        let yaml = to_yaml(&e);
        let ds = daemon_set(&e, &config_hash(&yaml));
        let value = serde_json::to_value(&ds).unwrap_or_default();
        assert_eq!(value["kind"], "DaemonSet");
        assert_eq!(deny_unknown::<DaemonSet>(&value), Ok(ds.clone()));
        let cm = serde_json::to_value(config_map(&e, &yaml)).unwrap_or_default();
        assert!(deny_unknown::<ConfigMap>(&cm).is_ok());
        // The helper does catch a field the type does not have.
        let mut bad = value.clone();
        bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = true.into();
        assert!(deny_unknown::<DaemonSet>(&bad).is_err());
        // `mlobs render` prints YAML: it must read back as the same object.
        let rendered = serde_saphyr::to_string(&ds).unwrap_or_default();
        assert_eq!(serde_saphyr::from_str::<DaemonSet>(&rendered).ok(), Some(ds));
    }
}
