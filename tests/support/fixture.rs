//! A pipeline's effective spec, AWS plan and owner, with a unique cluster and name so tests can
//! share one moto server.

#![allow(dead_code)]

use mlobs::aws::Owner;
use mlobs::desired::aws_plan::{self, AwsPlan};
use mlobs::desired::effective::Effective;
use serde_json::Value;

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
        let e = super::aws_pipeline::effective(&cluster, &name, extra);
        let plan = aws_plan::build(&e).expect("plan");
        let owner = super::aws_pipeline::owner(&e);
        Fixture { e, plan, owner }
    }
}
