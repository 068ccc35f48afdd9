//! The alerts' AWS side: the SNS topic (created KMS-encrypted with the pipeline's key, or the
//! user's, verified) and one CloudWatch alarm per enabled rule; what they add to the key policy.
//! Pure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{KmsRef, ownership_tags};
use crate::desired::alerts::cloudwatch::{self, AlarmPlan};
use crate::desired::alerts::{EffAlerts, EffTopic};
use crate::desired::effective::Effective;

/// Sid of the key policy statement that lets CloudWatch publish to the encrypted topic.
pub const KEY_POLICY_SID: &str = "CloudWatchAlarmsToEncryptedTopic";
/// What a publisher to an SSE-KMS topic needs on the key.
pub const TOPIC_KMS_ACTIONS: [&str; 2] = ["kms:Decrypt", "kms:GenerateDataKey*"];

/// The topic alarms notify.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicPlan {
    pub name: String,
    pub arn: String,
    /// mlobs creates it (and deletes it under `deletionPolicy: Delete`); else it is the user's.
    pub create: bool,
    /// SSE-KMS key of a created topic; None: unencrypted (`encryption.kms.disabled`: CloudWatch
    /// cannot publish to a topic under the AWS-managed `alias/aws/sns` key).
    pub kms_key: Option<KmsRef>,
    pub tags: BTreeMap<String, String>,
}

/// The topic and the alarms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsPlan {
    pub topic: TopicPlan,
    /// Alarm names share [`AlertsPlan::alarm_prefix`]; mlobs deletes alarms under it that are no
    /// longer planned.
    pub alarm_prefix: String,
    pub alarms: Vec<AlarmPlan>,
}

pub fn topic_arn(e: &Effective, name: &str) -> String {
    format!("arn:{}:sns:{}:{}:{name}", e.partition, e.region, e.account_id)
}

pub(super) fn plan(e: &Effective, a: &EffAlerts, kms: &Option<KmsRef>) -> AlertsPlan {
    let tags = ownership_tags(e);
    let topic = match &a.topic {
        EffTopic::Create { name } => TopicPlan {
            name: name.clone(),
            arn: topic_arn(e, name),
            create: true,
            kms_key: kms.clone(),
            tags: tags.clone(),
        },
        EffTopic::Existing { arn } => TopicPlan {
            name: arn.rsplit(':').next().unwrap_or_default().to_string(),
            arn: arn.clone(),
            create: false,
            kms_key: None,
            tags: BTreeMap::new(),
        },
    };
    AlertsPlan {
        alarm_prefix: cloudwatch::pipeline_prefix(e),
        alarms: cloudwatch::alarms(e, a, &topic.arn, &tags),
        topic,
    }
}

/// Lets CloudWatch (the alarms' publisher) use the key of the topic, for this account's alarms.
pub fn key_statement(e: &Effective) -> Value {
    json!({
        "Sid": KEY_POLICY_SID,
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": TOPIC_KMS_ACTIONS,
        // Key policy: "*" is this key.
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:SourceAccount": e.account_id}},
    })
}
