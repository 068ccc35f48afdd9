//! The destinations mlobs reads but does not create: an AMP workspace against moto (it implements
//! CreateWorkspace/DescribeWorkspace), X-Ray's trace segment destination with aws-smithy-mocks
//! (moto has no GetTraceSegmentDestination), and the verdicts the controller writes from them.

mod support;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_xray::Client as XRay;
use aws_sdk_xray::operation::get_trace_segment_destination::GetTraceSegmentDestinationOutput;
use aws_sdk_xray::types::{TraceSegmentDestination, TraceSegmentDestinationStatus};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use mlobs::aws::{AwsClients, destinations};
use mlobs::controller::destinations::{workspace_verdict, xray_verdict};
use mlobs::crd::conditions::status as st;
use mlobs::crd::reason::Reason;
use mlobs::desired::destinations::EffPrometheus;

#[tokio::test]
async fn a_workspace_is_read_as_active_and_an_unknown_one_as_absent() {
    let c = support::moto::clients().await;
    let created = c
        .amp
        .create_workspace()
        .alias(support::moto::unique("ws"))
        .send()
        .await
        .expect("moto creates a workspace");
    let id = created.workspace_id().to_string();
    let status = destinations::workspace_status(&c, &id).await.expect("describe");
    assert_eq!(status.as_deref(), Some("ACTIVE"));
    let ws = EffPrometheus {
        workspace_arn: created.arn().to_string(),
        region: "us-east-1".into(),
        workspace_id: id,
        managed: None,
    };
    let (s, r, _) = workspace_verdict(&ws, "url", Ok(status));
    assert_eq!((s, r), (st::TRUE, Reason::Reconciled));
    let absent = destinations::workspace_status(&c, "ws-00000000-0000-0000-0000-000000000000").await;
    assert_eq!(absent.expect("a missing workspace is no error"), None);
    assert_eq!(c.calls.of("DescribeWorkspace"), 2);
}

fn xray_answering(dest: TraceSegmentDestination, status: TraceSegmentDestinationStatus) -> AwsClients {
    let conf = SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .behavior_version(BehaviorVersion::latest())
        .build();
    let mut c = AwsClients::new(&conf);
    let rule = mock!(XRay::get_trace_segment_destination).then_output(move || {
        GetTraceSegmentDestinationOutput::builder()
            .destination(dest.clone())
            .status(status.clone())
            .build()
    });
    c.xray = mock_client!(aws_sdk_xray, RuleMode::Sequential, [&rule]);
    c
}

#[tokio::test]
async fn transaction_search_decides_whether_xray_takes_spans() {
    let on = xray_answering(
        TraceSegmentDestination::CloudWatchLogs,
        TraceSegmentDestinationStatus::Active,
    );
    let read = destinations::trace_segment_destination(&on).await.expect("read");
    assert_eq!(read, ("CloudWatchLogs".to_string(), "ACTIVE".to_string()));
    assert_eq!(xray_verdict("e", Ok(read)).0, st::TRUE);
    let off = xray_answering(TraceSegmentDestination::XRay, TraceSegmentDestinationStatus::Active);
    let read = destinations::trace_segment_destination(&off).await.expect("read");
    let (s, r, _) = xray_verdict("e", Ok(read));
    assert_eq!((s, r), (st::FALSE, Reason::TransactionSearchDisabled));
}
