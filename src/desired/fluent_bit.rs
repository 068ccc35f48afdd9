//! The hot path's Kubernetes children: a ServiceAccount (its own IAM role), the ConfigMap with
//! the Fluent Bit configuration and a DaemonSet on the pipeline's GPU nodes. Pure.
//!
//! The pods carry `app.kubernetes.io/name: mlobs-hotpath`, so the collector DaemonSet's selector
//! (name + pipeline) never matches them, while the pipeline label keeps them in the pipeline's
//! child set (pruned when the hot path is turned off).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, Probe, ResourceRequirements,
    ServiceAccount, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::collector_daemonset::{gpu_node_pod, host_path, mount, rolling_daemon_set, security_context};
use super::effective::{Effective, common_labels};
use super::hot_path::{self, CONFIG_DIR, CONFIG_FILE, EffHotPath, HTTP_PORT, STATE_DIR};
use super::service_account::ROLE_ARN_ANNOTATION;
use crate::conventions::NAME_LABEL;
use crate::crd::IdentityMode;

/// `app.kubernetes.io/name` of the Fluent Bit pods.
pub const HOT_PATH_APP: &str = "mlobs-hotpath";
/// The container's name.
pub const CONTAINER_NAME: &str = "fluent-bit";
/// Container logs: `/var/log/containers` holds symlinks into `/var/log/pods`, both are mounted.
const LOG_DIR: &str = "/var/log";
/// Memory beyond `Mem_Buf_Limit` the container may use (Fluent Bit itself, TLS, the output's buffers).
const MEMORY_OVERHEAD_MIB: i32 = 100;

/// The hot path's children, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct HotPathObjects {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub daemon_set: DaemonSet,
}

/// The common labels with the hot path's app name.
pub fn labels(e: &Effective) -> BTreeMap<String, String> {
    let mut l = common_labels(e);
    l.insert(NAME_LABEL.into(), HOT_PATH_APP.into());
    l
}

fn metadata(e: &Effective) -> ObjectMeta {
    ObjectMeta {
        name: Some(hot_path::child_name(e)),
        namespace: Some(e.collector_namespace.clone()),
        labels: Some(labels(e)),
        ..Default::default()
    }
}

/// Builds the three objects; `role_arn` is the Fluent Bit role (annotated in IRSA mode).
pub fn build(e: &Effective, h: &EffHotPath, role_arn: &str) -> HotPathObjects {
    let data = hot_path::config_data(e, h);
    let hash = super::collector_config::config_hash(&data[CONFIG_FILE]);
    HotPathObjects {
        service_account: service_account(e, role_arn),
        config_map: ConfigMap {
            metadata: metadata(e),
            data: Some(data),
            ..Default::default()
        },
        daemon_set: daemon_set(e, h, &hash),
    }
}

fn service_account(e: &Effective, role_arn: &str) -> ServiceAccount {
    let annotations = (e.identity.mode == IdentityMode::Irsa)
        .then(|| BTreeMap::from([(ROLE_ARN_ANNOTATION.to_string(), role_arn.to_string())]));
    ServiceAccount {
        metadata: ObjectMeta {
            annotations,
            ..metadata(e)
        },
        // The projected web-identity token is mounted by the EKS webhook; Fluent Bit never calls
        // the API server (no kubernetes filter), so no API token.
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn resources(h: &EffHotPath) -> ResourceRequirements {
    let q = |s: String| Quantity(s);
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("50m".into())),
            ("memory".to_string(), q("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            q(format!("{}Mi", h.mem_buf_limit_mb.saturating_add(MEMORY_OVERHEAD_MIB))),
        )])),
        ..Default::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(HTTP_PORT)),
            ..Default::default()
        }),
        period_seconds: Some(30),
        ..Default::default()
    }
}

fn daemon_set(e: &Effective, h: &EffHotPath, config_hash: &str) -> DaemonSet {
    let labels = labels(e);
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: hot_path::child_name(e),
                ..Default::default()
            }),
            ..Default::default()
        },
        host_path("varlog", LOG_DIR, "Directory"),
        host_path("state", &hot_path::state_host_path(e), "DirectoryOrCreate"),
    ];
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(h.image.clone()),
        args: Some(vec!["-c".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(HTTP_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(h)),
        liveness_probe: Some(probe("/")),
        readiness_probe: Some(probe("/api/v1/health")),
        // As restricted as the collector's (same function): uid 0 held to the mode bits.
        security_context: Some(security_context()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("varlog", LOG_DIR, true),
            mount("state", STATE_DIR, false),
        ]),
        ..Default::default()
    };
    // Same nodes, tolerations and seccomp profile as the collector.
    let pod = gpu_node_pod(e, &hot_path::child_name(e), container, volumes);
    rolling_daemon_set(metadata(e), labels, config_hash, pod)
}
