//! What the collector pod needs for the destinations: the Datadog API key as an environment
//! variable from its Secret (never in the ConfigMap), and a traces backend's CA bundle mounted
//! from its ConfigMap. The collector's namespace holds both.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, Volume, VolumeMount,
};

use crate::desired::collector_config::destinations::TRACES_CA_DIR;
use crate::desired::destinations::{DD_API_KEY_ENV, EffTraces};
use crate::desired::effective::Effective;

const TRACES_CA_VOLUME: &str = "traces-ca";

/// Environment variables filled from Secrets.
pub fn env(e: &Effective) -> Vec<EnvVar> {
    let Some(d) = &e.destinations.datadog else {
        return vec![];
    };
    vec![EnvVar {
        name: DD_API_KEY_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: d.api_key.name.clone(),
                key: d.api_key.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

/// Volumes and their mounts.
pub fn volumes(e: &Effective) -> Vec<(Volume, VolumeMount)> {
    let Some(EffTraces::Otlp(b)) = &e.destinations.traces else {
        return vec![];
    };
    let Some(ca) = &b.ca else {
        return vec![];
    };
    let volume = Volume {
        name: TRACES_CA_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ca.name.clone(),
            items: Some(vec![KeyToPath {
                key: ca.key.clone(),
                path: ca.key.clone(),
                mode: None,
            }]),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: TRACES_CA_VOLUME.into(),
        mount_path: TRACES_CA_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    };
    vec![(volume, mount)]
}
