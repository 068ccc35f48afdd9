//! Pipelines and policies for merge-level tests: a spec patched over a small valid base.

#![allow(dead_code)]

use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::effective::Context;
use mlobs::desired::merge::{Merged, merge};
use serde_json::{Value, json};

/// `team-a/train` in prod-gpu, us-east-1, Pod Identity, with `spec`'s top-level fields set over it.
pub fn pipeline(spec: Value) -> MLObservabilityPipeline {
    let mut base = json!({"clusterName": "prod-gpu", "region": "us-east-1",
        "identity": {"mode": "PodIdentity"}});
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(
        json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "train", "namespace": "team-a"}, "spec": base}),
    )
    .expect("test pipeline deserializes")
}

/// The policy `guard` (generation 3) with `spec`.
pub fn policy(spec: Value) -> GpuTelemetryPolicy {
    serde_json::from_value(json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
        "metadata": {"name": "guard", "generation": 3}, "spec": spec}))
    .expect("test policy deserializes")
}

/// The merge with the default context; a failure fails the test.
pub fn merged(p: &MLObservabilityPipeline, pol: Option<&GpuTelemetryPolicy>) -> Merged {
    merge(p, pol, &Context::default()).unwrap_or_else(|e| panic!("merge failed: {e}"))
}
