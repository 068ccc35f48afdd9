//! The operator's statements for the hot path's Kinesis data streams (part of
//! [`super::operator_policy`]): scoped by stream name prefix (`mlobs-` by default, as in the
//! derived `mlobs-<cluster>-<namespace>-<pipeline>-hot`) and region. `DeleteStream` and
//! `RemoveTagsFromStream` are called only on a stream whose tags name the pipeline (checked by
//! the operator before the call).

use serde_json::{Value, json};

use super::operator_policy::OperatorPolicyOptions;

/// `arn:<partition>:kinesis:<region>:<account>:stream/<prefix>*`, one per region.
fn streams(opts: &OperatorPolicyOptions) -> Vec<String> {
    (opts.regions.iter())
        .map(|r| {
            format!(
                "arn:{}:kinesis:{r}:{}:stream/{}*",
                opts.partition, opts.account_id, opts.hot_path_stream_prefix
            )
        })
        .collect()
}

pub fn statements(opts: &OperatorPolicyOptions) -> Vec<Value> {
    let condition = json!({ "StringEquals": { "aws:RequestedRegion": opts.regions } });
    let statement = |sid: &str, actions: &[&str]| {
        json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": streams(opts),
            "Condition": condition,
        })
    };
    vec![
        // CreateStream with tags is also authorized as AddTagsToStream (granted here too).
        statement(
            "KinesisCreateStreams",
            &["kinesis:AddTagsToStream", "kinesis:CreateStream"],
        ),
        statement(
            "KinesisReadStreams",
            &["kinesis:DescribeStreamSummary", "kinesis:ListTagsForStream"],
        ),
        statement(
            "KinesisConfigureStreams",
            &[
                "kinesis:DecreaseStreamRetentionPeriod",
                "kinesis:IncreaseStreamRetentionPeriod",
                "kinesis:StartStreamEncryption",
                "kinesis:UpdateShardCount",
                "kinesis:UpdateStreamMode",
            ],
        ),
        statement(
            "KinesisRetireStreams",
            &["kinesis:DeleteStream", "kinesis:RemoveTagsFromStream"],
        ),
    ]
}
