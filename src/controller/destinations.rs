//! `TracesReady` and `PrometheusReady`: can the destinations beyond CloudWatch take what the
//! collector sends? Read at the AWS step (plan change, resync), as the AWS side is: an AMP
//! workspace must exist and be ACTIVE; X-Ray's OTLP endpoint takes spans only once Transaction
//! Search stores segments in CloudWatch Logs. An OTLP backend (Tempo, Jaeger) cannot be asked:
//! it is ready with the collector. The verdicts are pure (unit-tested below); [`observe`] reads.

use crate::aws::{AwsClients, AwsError, destinations as aws};
use crate::crd::DestinationsStatus;
use crate::crd::conditions::status as st;
use crate::crd::reason::Reason;
use crate::desired::destinations::{EffPrometheus, EffTraces, xray_traces_endpoint};
use crate::desired::effective::Effective;

/// Status, reason, message of one condition.
pub type Verdict = (&'static str, Reason, String);

/// What one AWS step learned of the destinations.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationsObs {
    pub status: DestinationsStatus,
    /// `None`: no traces destination (the condition goes).
    pub traces: Option<Verdict>,
    /// `None`: no Prometheus destination (the condition goes).
    pub prometheus: Option<Verdict>,
}

/// Reads what the enabled destinations need and judges them.
pub async fn observe(c: &AwsClients, e: &Effective) -> DestinationsObs {
    let d = &e.destinations;
    let mut status = DestinationsStatus {
        datadog_site: d.datadog.as_ref().map(|x| x.site.clone()),
        ..Default::default()
    };
    let traces = match &d.traces {
        None => None,
        Some(EffTraces::XRay) => {
            let endpoint = xray_traces_endpoint(&e.region, &e.partition);
            status.traces_endpoint = Some(endpoint.clone());
            Some(xray_verdict(&endpoint, aws::trace_segment_destination(c).await))
        }
        Some(EffTraces::Otlp(b)) => {
            let endpoint = b.traces_endpoint();
            status.traces_endpoint = Some(endpoint.clone());
            Some((
                st::TRUE,
                Reason::Reconciled,
                format!("spans are exported to {endpoint} (OTLP/HTTP)"),
            ))
        }
    };
    let prometheus = match &d.prometheus {
        None => None,
        // Just created: its id reaches the configuration through status at the next reconcile.
        Some(p) if p.pending() => Some((
            st::FALSE,
            Reason::WorkspaceNotActive,
            format!(
                "the workspace of alias {:?} is being created; the collector starts once its id is recorded",
                p.managed.as_ref().map_or("", |m| m.alias.as_str())
            ),
        )),
        Some(p) => {
            let url = p.remote_write_url(&e.partition);
            status.prometheus_workspace_arn = Some(p.workspace_arn.clone());
            status.remote_write_url = Some(url.clone());
            Some(workspace_verdict(
                p,
                &url,
                aws::workspace_status(c, &p.workspace_id).await,
            ))
        }
    };
    DestinationsObs {
        status,
        traces,
        prometheus,
    }
}

/// X-Ray: True when segments go to CloudWatch Logs and that destination is ACTIVE.
pub fn xray_verdict(endpoint: &str, read: Result<(String, String), AwsError>) -> Verdict {
    match read {
        Ok((dest, status)) if dest == "CloudWatchLogs" && status == "ACTIVE" => (
            st::TRUE,
            Reason::Reconciled,
            format!("spans are exported to {endpoint}; Transaction Search is on"),
        ),
        Ok((dest, status)) if dest == "CloudWatchLogs" => (
            st::FALSE,
            Reason::TransactionSearchDisabled,
            format!(
                "Transaction Search is being enabled (segment destination CloudWatchLogs is {status}): {endpoint} refuses spans until it is ACTIVE"
            ),
        ),
        Ok((dest, _)) => (
            st::FALSE,
            Reason::TransactionSearchDisabled,
            format!(
                "X-Ray stores segments in {dest:?}: {endpoint} refuses spans until Transaction Search is enabled (aws xray update-trace-segment-destination --destination CloudWatchLogs)"
            ),
        ),
        Err(e) => (
            st::UNKNOWN,
            e.reason(),
            format!("reading X-Ray's trace segment destination failed: {e}"),
        ),
    }
}

/// AMP: True when the workspace exists and is ACTIVE.
pub fn workspace_verdict(p: &EffPrometheus, url: &str, read: Result<Option<String>, AwsError>) -> Verdict {
    let arn = &p.workspace_arn;
    match read {
        Ok(Some(s)) if s == "ACTIVE" => (
            st::TRUE,
            Reason::Reconciled,
            format!("remote write to {url} (workspace ACTIVE)"),
        ),
        Ok(Some(s)) => (
            st::FALSE,
            Reason::WorkspaceNotActive,
            format!("workspace {arn} is {s}: remote write waits until it is ACTIVE"),
        ),
        Ok(None) => (
            st::FALSE,
            Reason::WorkspaceNotFound,
            format!("workspace {arn} (spec.metrics.prometheus.workspaceArn) does not exist: create it or fix the ARN"),
        ),
        Err(e) => (st::UNKNOWN, e.reason(), format!("reading workspace {arn} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> EffPrometheus {
        EffPrometheus {
            workspace_arn: "arn:aws:aps:us-east-1:123456789012:workspace/ws-1".into(),
            region: "us-east-1".into(),
            workspace_id: "ws-1".into(),
            managed: None,
        }
    }

    fn denied() -> AwsError {
        AwsError::AccessDenied {
            operation: "X".into(),
            resource: "r".into(),
            code: "AccessDeniedException".into(),
            message: "no".into(),
        }
    }

    #[test]
    fn xray_is_ready_only_with_transaction_search_active() {
        let ok = xray_verdict("e", Ok(("CloudWatchLogs".into(), "ACTIVE".into())));
        assert_eq!((ok.0, ok.1), (st::TRUE, Reason::Reconciled));
        let pending = xray_verdict("e", Ok(("CloudWatchLogs".into(), "PENDING".into())));
        assert_eq!((pending.0, pending.1), (st::FALSE, Reason::TransactionSearchDisabled));
        let off = xray_verdict("e", Ok(("XRay".into(), "ACTIVE".into())));
        assert_eq!((off.0, off.1), (st::FALSE, Reason::TransactionSearchDisabled));
        assert!(off.2.contains("update-trace-segment-destination"), "{}", off.2);
        let err = xray_verdict("e", Err(denied()));
        assert_eq!((err.0, err.1), (st::UNKNOWN, Reason::AccessDenied));
    }

    #[test]
    fn a_workspace_must_exist_and_be_active() {
        let url = "https://aps/ws-1";
        assert_eq!(workspace_verdict(&ws(), url, Ok(Some("ACTIVE".into()))).0, st::TRUE);
        let creating = workspace_verdict(&ws(), url, Ok(Some("CREATING".into())));
        assert_eq!((creating.0, creating.1), (st::FALSE, Reason::WorkspaceNotActive));
        let missing = workspace_verdict(&ws(), url, Ok(None));
        assert_eq!((missing.0, missing.1), (st::FALSE, Reason::WorkspaceNotFound));
        assert!(
            missing.2.contains("spec.metrics.prometheus.workspaceArn"),
            "{}",
            missing.2
        );
        assert_eq!(workspace_verdict(&ws(), url, Err(denied())).0, st::UNKNOWN);
    }
}
