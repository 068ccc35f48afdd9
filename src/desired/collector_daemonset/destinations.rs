//! What the collector pod needs for the destinations: the Datadog API key as an environment
//! variable from its Secret (never in the ConfigMap), a traces backend's CA bundle mounted
//! from its ConfigMap (the collector's namespace holds both), and for the S3 archive the SDK
//! setting that puts a CRC32 checksum on every PUT.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, Volume, VolumeMount,
};

use crate::desired::collector_config::destinations::TRACES_CA_DIR;
use crate::desired::destinations::{DD_API_KEY_ENV, EffTraces};
use crate::desired::effective::Effective;

const TRACES_CA_VOLUME: &str = "traces-ca";
/// aws-sdk-go-v2's switch for request checksums: `when_supported` (its default since s3 v1.73)
/// sends `x-amz-checksum-crc32` with every PutObject/UploadPart. Pinned, so that a node or image
/// default of `when_required` cannot drop the only checksum the archive's PUTs carry (see
/// `collector_config::destinations` for what Object Lock may still ask).
pub const CHECKSUM_ENV: (&str, &str) = ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported");

/// Environment variables of the destinations: the Datadog key from its Secret, the archive's
/// checksum setting.
pub fn env(e: &Effective) -> Vec<EnvVar> {
    let mut out = vec![];
    if e.destinations.archive.is_some() {
        out.push(EnvVar {
            name: CHECKSUM_ENV.0.into(),
            value: Some(CHECKSUM_ENV.1.into()),
            ..Default::default()
        });
    }
    let Some(d) = &e.destinations.datadog else {
        return out;
    };
    out.push(EnvVar {
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
    });
    out
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
