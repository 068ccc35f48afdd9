//! A pipeline's effective spec, AWS plan and owner, with a unique cluster and name so tests can
//! share one moto server.

#![allow(dead_code)]

use mlobs::aws::Owner;
use mlobs::crd::MLObservabilityPipeline;
use mlobs::desired::aws_plan::{self, AwsPlan};
use mlobs::desired::effective::{Context, Effective};
use mlobs::desired::merge::merge;
use serde_json::{Value, json};

use super::moto;

pub struct Fixture {
    pub e: Effective,
    pub plan: AwsPlan,
    pub owner: Owner,
}

impl Fixture {
    /// A pipeline with a unique cluster and name (tests share one moto server); `extra` is merged
    /// into its spec.
    pub fn new(extra: Value) -> Fixture {
        let cluster = moto::unique("k");
        let name = moto::unique("p");
        let mut spec = json!({"clusterName": cluster, "region": "us-east-1",
            "identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST"}});
        if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(x.clone());
        }
        let p: MLObservabilityPipeline = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}))
        .expect("pipeline");
        let e = merge(&p, None, &Context::default()).expect("merge").effective;
        let plan = aws_plan::build(&e).expect("plan");
        let owner = Owner {
            cluster: e.cluster_name.clone(),
            pipeline: e.pipeline_id(),
        };
        Fixture { e, plan, owner }
    }
}
