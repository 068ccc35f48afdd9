//! The statements the destinations add to the collector's inline policy, each with the same
//! conditions as the log statement (region, and `aws:SourceVpc` when set).
//!
//! X-Ray is the one documented exception to "no `"Resource": "*"`": it has no resource types
//! ("X-Ray does not support resource-level permissions"), so its statement can only name `*`,
//! and it holds exactly [`XRAY_ACTIONS`]. The OTLP endpoint is authorised as
//! `xray:PutTraceSegments`; `xray:PutTelemetryRecords` serves the X-Ray daemon and the `awsxray`
//! exporter's telemetry, which mlobs does not render, so it is not granted.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{KmsRef, ownership_tags};
use crate::desired::destinations::EffTraces;
use crate::desired::effective::Effective;

/// An AMP workspace mlobs manages (`spec.metrics.prometheus.workspaceAlias`): found by alias and
/// ownership tags, else created with the pipeline's key and tags. Before the role, whose
/// `aps:RemoteWrite` names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmpWorkspacePlan {
    pub alias: String,
    pub region: String,
    /// Customer managed key of the workspace; None: AWS owned key (`encryption.kms.disabled`).
    pub kms_key: Option<KmsRef>,
    pub tags: BTreeMap<String, String>,
}

/// The workspace to ensure, when the pipeline names one by alias.
pub fn amp_workspace(e: &Effective, kms: &Option<KmsRef>) -> Option<AmpWorkspacePlan> {
    let p = e.destinations.prometheus.as_ref()?;
    let m = p.managed.as_ref()?;
    Some(AmpWorkspacePlan {
        alias: m.alias.clone(),
        region: p.region.clone(),
        kms_key: kms.clone(),
        tags: ownership_tags(e),
    })
}

/// Sid of the X-Ray statement, the only one with `"Resource": "*"`.
pub const XRAY_SID: &str = "XRayPutTraceSegments";
/// What the OTLP endpoint of X-Ray authorises a span upload as.
pub const XRAY_ACTIONS: [&str; 1] = ["xray:PutTraceSegments"];
/// Sid of the AMP statement.
pub const AMP_SID: &str = "AmpRemoteWrite";
/// What remote write to an AMP workspace needs.
pub const AMP_ACTIONS: [&str; 1] = ["aps:RemoteWrite"];

/// The destinations' statements, given the conditions of every statement of the role.
pub fn statements(e: &Effective, condition: &Value) -> Vec<Value> {
    let d = &e.destinations;
    let mut out = vec![];
    if d.traces == Some(EffTraces::XRay) {
        out.push(json!({
            "Sid": XRAY_SID,
            "Effect": "Allow",
            "Action": XRAY_ACTIONS,
            // X-Ray has no resource-level permissions: "*" is the only Resource it accepts.
            "Resource": "*",
            "Condition": condition,
        }));
    }
    if let Some(a) = &d.archive {
        out.extend(super::archive::statements(e, a, condition));
    }
    // A workspace mlobs has yet to create has no ARN to name: the statement comes once it exists.
    if let Some(p) = d.prometheus.as_ref().filter(|p| !p.pending()) {
        out.push(json!({
            "Sid": AMP_SID,
            "Effect": "Allow",
            "Action": AMP_ACTIONS,
            "Resource": [p.workspace_arn],
            "Condition": condition,
        }));
    }
    out
}
