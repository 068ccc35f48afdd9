//! API types of `mlobs.io/v1alpha1`.

pub mod alerts;
pub mod archive;
pub mod common;
pub mod conditions;
pub mod dcgm_fields;
pub mod destinations;
pub mod dialect;
pub mod hot_path;
pub mod pipeline;
pub mod policy;
pub mod reason;
pub mod validate;

pub use alerts::*;
pub use archive::*;
pub use common::*;
pub use destinations::*;
pub use hot_path::*;
pub use pipeline::*;
pub use policy::*;

/// API group of both kinds.
pub const GROUP: &str = "mlobs.io";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

use kube::CustomResourceExt;

/// The generated CRDs as `(file name, YAML)`, in a stable order. `crds/` holds exactly these.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, serde_saphyr::SerializeError> {
    Ok(vec![
        (
            "mlobs.io_mlobservabilitypipelines.yaml",
            serde_saphyr::to_string(&MLObservabilityPipeline::crd())?,
        ),
        (
            "mlobs.io_gputelemetrypolicies.yaml",
            serde_saphyr::to_string(&GpuTelemetryPolicy::crd())?,
        ),
    ])
}
