//! Event-driven drift (`mlobs run --drift-events-queue`): CloudTrail management events of the
//! operations that can change what mlobs owns, delivered by an EventBridge rule to an SQS queue.
//! This module reads the queue, parses each event into the resource it touched, and prints the
//! rule pattern and queue policy to create; `controller::drift_events` maps a touched resource
//! to its pipelines and reconciles them at once.
//!
//! Only successful calls count (an event with `errorCode` changed nothing). IAM is a global
//! service whose CloudTrail events reach EventBridge in us-east-1 only: the rule and queue for
//! IAM changes live there whatever the operator's region.

use serde_json::{Value, json};

use super::AwsClients;
use super::error::{AwsError, classify};

/// The operations that can change a log group, key, alias or role of a pipeline, by event source.
pub const WATCHED: [(&str, &[&str]); 3] = [
    (
        "logs.amazonaws.com",
        &[
            "PutRetentionPolicy",
            "DeleteRetentionPolicy",
            "DisassociateKmsKey",
            "AssociateKmsKey",
            "DeleteLogGroup",
            "TagResource",
            "UntagResource",
            "TagLogGroup",
            "UntagLogGroup",
        ],
    ),
    (
        "kms.amazonaws.com",
        &[
            "PutKeyPolicy",
            "DisableKey",
            "DisableKeyRotation",
            "ScheduleKeyDeletion",
            "TagResource",
            "UntagResource",
            "DeleteAlias",
            "UpdateAlias",
        ],
    ),
    (
        "iam.amazonaws.com",
        &[
            "UpdateAssumeRolePolicy",
            "PutRolePolicy",
            "DeleteRolePolicy",
            "PutRolePermissionsBoundary",
            "DeleteRolePermissionsBoundary",
            "DeleteRole",
            "UntagRole",
        ],
    ),
];

/// What an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    LogGroup(String),
    /// A key id, key ARN or alias name, as the caller named it.
    Key(String),
    Alias(String),
    Role(String),
}

/// One event: the call and what it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftEvent {
    pub event_name: String,
    pub touched: Touched,
}

/// Why a message carries no drift event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, or not a CloudTrail event.
    Malformed(String),
    /// A call outside [`WATCHED`], a failed call, or one naming no resource.
    Irrelevant,
}

/// `arn:aws:logs:<r>:<a>:log-group:<name>[:*]` → `<name>`.
fn log_group_of_arn(arn: &str) -> Option<String> {
    let (_, rest) = arn.split_once(":log-group:")?;
    Some(rest.strip_suffix(":*").unwrap_or(rest).to_string())
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Parses one message body: an EventBridge event whose detail is a CloudTrail record.
pub fn parse(body: &str) -> Result<DriftEvent, Skip> {
    let v: Value = serde_json::from_str(body).map_err(|e| Skip::Malformed(format!("not JSON: {e}")))?;
    let detail = v
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or_else(|| Skip::Malformed("no detail: not an EventBridge event".into()))?;
    let source = str_at(detail, "eventSource").ok_or_else(|| Skip::Malformed("no detail.eventSource".into()))?;
    let name = str_at(detail, "eventName").ok_or_else(|| Skip::Malformed("no detail.eventName".into()))?;
    if detail.get("errorCode").is_some_and(|e| !e.is_null()) {
        return Err(Skip::Irrelevant);
    }
    let watched = WATCHED.iter().any(|(s, names)| *s == source && names.contains(&name));
    if !watched {
        return Err(Skip::Irrelevant);
    }
    let empty = Value::Null;
    let req = detail.get("requestParameters").unwrap_or(&empty);
    let touched = match source {
        "logs.amazonaws.com" => str_at(req, "logGroupName")
            .map(String::from)
            .or_else(|| str_at(req, "resourceArn").and_then(log_group_of_arn))
            .or_else(|| str_at(req, "resourceIdentifier").and_then(log_group_of_arn))
            .map(Touched::LogGroup),
        "kms.amazonaws.com" => match name {
            "DeleteAlias" | "UpdateAlias" => str_at(req, "aliasName").map(|a| Touched::Alias(a.to_string())),
            _ => str_at(req, "keyId").map(|k| Touched::Key(k.to_string())),
        },
        _ => str_at(req, "roleName").map(|r| Touched::Role(r.to_string())),
    };
    touched
        .map(|touched| DriftEvent {
            event_name: name.to_string(),
            touched,
        })
        .ok_or(Skip::Irrelevant)
}

/// The EventBridge rule's event pattern: the watched calls, successful or not (the operator
/// skips failed ones; EventBridge cannot match a missing key and a present one in one rule
/// portably).
pub fn event_pattern() -> Value {
    let sources: Vec<String> = WATCHED
        .iter()
        .map(|(s, _)| format!("aws.{}", s.trim_end_matches(".amazonaws.com")))
        .collect();
    let mut names: Vec<&str> = WATCHED.iter().flat_map(|(_, n)| n.iter().copied()).collect();
    names.sort_unstable();
    names.dedup();
    let event_sources: Vec<&str> = WATCHED.iter().map(|(s, _)| *s).collect();
    json!({
        "source": sources,
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"eventSource": event_sources, "eventName": names},
    })
}

/// The queue's resource policy: only this rule may send to it.
pub fn queue_policy(queue_arn: &str, rule_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "EventBridgeDriftRule",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    })
}

/// One message: its receipt handle (to delete it), its body, and how often it was received
/// (SQS's ApproximateReceiveCount; 1 when SQS does not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

/// Up to 10 messages, waiting up to `wait_s` seconds for the first (long polling).
pub async fn receive(c: &AwsClients, queue_url: &str, wait_s: i32) -> Result<Vec<Message>, AwsError> {
    let out = c
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_s)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(|e| classify("ReceiveMessage", queue_url, e))?;
    Ok(out
        .messages()
        .iter()
        .filter_map(|m| {
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Some(Message {
                receipt: m.receipt_handle()?.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count,
            })
        })
        .collect())
}

/// Deletes handled messages, one call per message (at most 10 per receive).
pub async fn delete(c: &AwsClients, queue_url: &str, handled: &[Message]) -> Result<(), AwsError> {
    for m in handled {
        c.sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(&m.receipt)
            .send()
            .await
            .map_err(|e| classify("DeleteMessage", queue_url, e))?;
    }
    Ok(())
}

/// Makes messages visible again at once, for another reader (a replica of another shard).
pub async fn release(c: &AwsClients, queue_url: &str, messages: &[Message]) -> Result<(), AwsError> {
    for m in messages {
        c.sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(&m.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| classify("ChangeMessageVisibility", queue_url, e))?;
    }
    Ok(())
}

/// `https://sqs.<region>.amazonaws.com/<account>/<name>` → `arn:<partition>:sqs:<region>:<account>:<name>`.
pub fn queue_arn(partition: &str, queue_url: &str) -> Option<String> {
    let rest = queue_url.split_once("://").map_or(queue_url, |(_, r)| r);
    let mut parts = rest.split('/');
    let host = parts.next()?;
    let account = parts
        .next()
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))?;
    let name = parts.next().filter(|n| !n.is_empty())?;
    let region = host.strip_prefix("sqs.").and_then(|h| h.split('.').next())?;
    Some(format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, name: &str, params: Value) -> String {
        json!({"version": "0", "detail-type": "AWS API Call via CloudTrail",
               "source": format!("aws.{}", source.trim_end_matches(".amazonaws.com")),
               "detail": {"eventSource": source, "eventName": name, "requestParameters": params,
                          "eventType": "AwsApiCall", "readOnly": false}})
        .to_string()
    }

    #[test]
    fn each_watched_call_names_what_it_touched() {
        let g = "/aws/eks/prod/team-a/train/logs";
        let cases = [
            (
                event(
                    "logs.amazonaws.com",
                    "PutRetentionPolicy",
                    json!({"logGroupName": g, "retentionInDays": 1}),
                ),
                Touched::LogGroup(g.into()),
            ),
            (
                event(
                    "logs.amazonaws.com",
                    "UntagResource",
                    json!({"resourceArn": format!("arn:aws:logs:us-east-1:123456789012:log-group:{g}:*"), "tagKeys": ["mlobs.io/pipeline"]}),
                ),
                Touched::LogGroup(g.into()),
            ),
            (
                event("logs.amazonaws.com", "DisassociateKmsKey", json!({"logGroupName": g})),
                Touched::LogGroup(g.into()),
            ),
            (
                event(
                    "kms.amazonaws.com",
                    "ScheduleKeyDeletion",
                    json!({"keyId": "1234abcd", "pendingWindowInDays": 7}),
                ),
                Touched::Key("1234abcd".into()),
            ),
            (
                event(
                    "kms.amazonaws.com",
                    "UntagResource",
                    json!({"keyId": "1234abcd", "tagKeys": ["mlobs.io/pipeline"]}),
                ),
                Touched::Key("1234abcd".into()),
            ),
            (
                event(
                    "kms.amazonaws.com",
                    "DeleteAlias",
                    json!({"aliasName": "alias/mlobs/prod/team-a/train"}),
                ),
                Touched::Alias("alias/mlobs/prod/team-a/train".into()),
            ),
            (
                event(
                    "iam.amazonaws.com",
                    "PutRolePolicy",
                    json!({"roleName": "mlobs-prod-team-a-train", "policyName": "mlobs-collector"}),
                ),
                Touched::Role("mlobs-prod-team-a-train".into()),
            ),
            (
                event(
                    "iam.amazonaws.com",
                    "DeleteRole",
                    json!({"roleName": "mlobs-prod-team-a-train"}),
                ),
                Touched::Role("mlobs-prod-team-a-train".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(&body).map(|e| e.touched), Ok(want), "{body}");
        }
    }

    #[test]
    fn failed_unwatched_and_malformed_messages_are_skipped() {
        let failed: Value =
            serde_json::from_str(&event("iam.amazonaws.com", "DeleteRole", json!({"roleName": "r"}))).unwrap();
        let mut failed = failed;
        failed["detail"]["errorCode"] = json!("AccessDenied");
        assert_eq!(parse(&failed.to_string()), Err(Skip::Irrelevant));
        let read = event("logs.amazonaws.com", "DescribeLogGroups", json!({}));
        assert_eq!(parse(&read), Err(Skip::Irrelevant));
        let nameless = event("iam.amazonaws.com", "DeleteRole", json!({}));
        assert_eq!(parse(&nameless), Err(Skip::Irrelevant));
        assert!(matches!(parse("not json"), Err(Skip::Malformed(_))));
        assert!(matches!(parse("{\"detail\": 1}"), Err(Skip::Malformed(_))));
    }

    #[test]
    fn the_rule_pattern_lists_every_watched_call_and_the_queue_policy_only_that_rule() {
        let p = event_pattern();
        let names: Vec<&str> = p["detail"]["eventName"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for (_, calls) in WATCHED {
            for c in calls {
                assert!(names.contains(c), "{c}");
            }
        }
        assert_eq!(p["source"], json!(["aws.logs", "aws.kms", "aws.iam"]));
        let q = queue_policy(
            "arn:aws:sqs:us-east-1:123456789012:drift",
            "arn:aws:events:us-east-1:123456789012:rule/mlobs-drift",
        );
        assert_eq!(
            q["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
            "arn:aws:events:us-east-1:123456789012:rule/mlobs-drift"
        );
    }

    #[test]
    fn queue_urls_become_arns() {
        assert_eq!(
            queue_arn("aws", "https://sqs.eu-west-1.amazonaws.com/123456789012/mlobs-drift").as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:mlobs-drift")
        );
        assert_eq!(queue_arn("aws", "http://127.0.0.1:5000/123456789012/q"), None);
        assert_eq!(
            queue_arn("aws", "https://sqs.us-east-1.amazonaws.com/notanaccount/q"),
            None
        );
    }
}
