//! The operator's statements for the hot path's Kinesis data streams (part of
//! [`super`]): scoped by stream name prefix (`mlobs-` by default, as in the
//! derived `mlobs-<cluster>-<namespace>-<pipeline>-hot`) and region. `DeleteStream` and
//! `RemoveTagsFromStream` are called only on a stream whose tags name the pipeline (checked by
//! the operator before the call).

use serde_json::{Value, json};

use super::OperatorPolicyOptions;

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
    let on = |sid: &str, actions: &[&str], resources: Vec<String>| {
        json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": resources,
            "Condition": condition,
        })
    };
    let statement = |sid: &str, actions: &[&str]| on(sid, actions, streams(opts));
    // StartStreamEncryption is authorized on the stream and on the key it names (a created key's
    // id is random, a user's key any): the keys of the account in the regions. It grants no use
    // of a key: Kinesis uses it on the producers' behalf, with their permissions.
    let mut with_keys = streams(opts);
    with_keys
        .extend((opts.regions.iter()).map(|r| format!("arn:{}:kms:{r}:{}:key/*", opts.partition, opts.account_id)));
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
            ],
        ),
        on("KinesisEncryptStreams", &["kinesis:StartStreamEncryption"], with_keys),
        statement(
            "KinesisScaleStreams",
            &["kinesis:UpdateShardCount", "kinesis:UpdateStreamMode"],
        ),
        statement(
            "KinesisRetireStreams",
            &["kinesis:DeleteStream", "kinesis:RemoveTagsFromStream"],
        ),
    ]
}
