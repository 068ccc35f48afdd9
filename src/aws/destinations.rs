//! Reads of the destinations beyond CloudWatch that mlobs does not create: the Amazon Managed
//! Prometheus workspace a pipeline writes to, and where X-Ray stores the spans its OTLP endpoint
//! accepts (the endpoint works only with Transaction Search on, i.e. segments go to CloudWatch
//! Logs). Both are read at the AWS step (plan change, resync), never on every reconcile.

use super::AwsClients;
use super::error::{AwsError, classify};

/// A workspace's status code (`ACTIVE`, `CREATING`, …); `None`: it does not exist.
pub async fn workspace_status(c: &AwsClients, workspace_id: &str) -> Result<Option<String>, AwsError> {
    match c.amp.describe_workspace().workspace_id(workspace_id).send().await {
        Ok(out) => Ok(out.workspace().map(|w| {
            let code = w.status().map(|s| s.status_code().as_str());
            code.unwrap_or("UNKNOWN").to_string()
        })),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(classify("DescribeWorkspace", workspace_id, e)),
    }
}

/// Where X-Ray sends trace segments and that destination's status, e.g. (`CloudWatchLogs`,
/// `ACTIVE`) once Transaction Search is enabled; (`XRay`, `ACTIVE`) before.
pub async fn trace_segment_destination(c: &AwsClients) -> Result<(String, String), AwsError> {
    let out = c
        .xray
        .get_trace_segment_destination()
        .send()
        .await
        .map_err(|e| classify("GetTraceSegmentDestination", "account", e))?;
    let dest = out.destination().map_or("", |d| d.as_str()).to_string();
    let status = out.status().map_or("", |s| s.as_str()).to_string();
    Ok((dest, status))
}
