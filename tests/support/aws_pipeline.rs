//! One pipeline's effective spec and the options of the controller's first AWS ensure, shared by
//! the tests that apply plans against moto.

#![allow(dead_code)]

use mlobs::aws::Owner;
use mlobs::aws::apply::ApplyOptions;
use mlobs::crd::{DriftPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::{self, AwsPlan};
use mlobs::desired::effective::{Context, Effective};
use mlobs::desired::merge::merge;
use serde_json::{Value, json};

/// The IRSA OIDC provider of the test pipelines.
pub const OIDC: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST";

/// The effective spec (no policy) of pipeline `team-a/<name>` in cluster `cluster`, region
/// us-east-1, IRSA, with the spec fields of `extra` (an object) added.
pub fn effective(cluster: &str, name: &str, extra: Value) -> Effective {
    effective_in(cluster, "us-east-1", name, extra)
}

/// [`effective`] in another region.
pub fn effective_in(cluster: &str, region: &str, name: &str, extra: Value) -> Effective {
    let mut spec = json!({"clusterName": cluster, "region": region,
        "identity": {"mode": "IRSA", "oidcProviderArn": OIDC}});
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(x.clone());
    }
    let p: MLObservabilityPipeline = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}))
    .expect("pipeline");
    merge(&p, None, &Context::default()).expect("merge").effective
}

/// The pipeline's AWS plan and the options of the controller's first ensure: no key recorded,
/// no create marker in status yet (so no key scan), nothing batched.
pub fn plan_and_opts(e: &Effective, drift: DriftPolicy) -> (AwsPlan, ApplyOptions) {
    let opts = ApplyOptions {
        owner: owner(e),
        adopt: false,
        drift,
        known_key_id: None,
        scan_for_key: false,
        log_group_snapshot: None,
        batched: Default::default(),
        alarms_recorded: false,
        dashboard_recorded: None,
        recorded_roles: Vec::new(),
    };
    (aws_plan::build(e).expect("plan"), opts)
}

/// The ownership tags' values of the pipeline.
pub fn owner(e: &Effective) -> Owner {
    Owner {
        cluster: e.cluster_name.clone(),
        pipeline: e.pipeline_id(),
    }
}
