//! The alerts' SNS topic: created with SSE-KMS (the pipeline's key) and the ownership tags, its
//! key observed and put back under `Correct`; a topic given by ARN is only verified; deleted only
//! when mlobs created it (our tags) and `deletionPolicy` is `Delete`.

use std::collections::BTreeMap;

use aws_sdk_sns::types::Tag;

use super::error::{classify, code};
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::KmsRef;
use crate::desired::aws_plan::alerts::TopicPlan;

/// The topic attribute holding its key.
const KMS_ATTRIBUTE: &str = "KmsMasterKeyId";

fn resource(arn: &str) -> String {
    format!("snsTopic:{arn}")
}

/// The topic's attributes, or None when it does not exist.
async fn attributes(c: &AwsClients, arn: &str) -> Result<Option<BTreeMap<String, String>>, AwsError> {
    match c.sns.get_topic_attributes().topic_arn(arn).send().await {
        Ok(o) => Ok(Some(o.attributes.unwrap_or_default().into_iter().collect())),
        Err(e) if matches!(code(&e), Some("NotFound" | "NotFoundException")) => Ok(None),
        Err(e) => Err(classify("GetTopicAttributes", &resource(arn), e)),
    }
}

/// The topic's tags.
pub async fn tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = (c.sns.list_tags_for_resource().resource_arn(arn).send().await)
        .map_err(|e| classify("ListTagsForResource", &resource(arn), e))?;
    Ok(out
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect())
}

/// The key a created topic must have: the applied key's ARN, else the plan's existing key.
fn desired_key<'a>(plan: &'a TopicPlan, key_arn: Option<&'a str>) -> Result<Option<&'a str>, AwsError> {
    match &plan.kms_key {
        None => Ok(None),
        Some(KmsRef::Existing { arn }) => Ok(Some(key_arn.unwrap_or(arn))),
        Some(KmsRef::Created { .. }) => key_arn.map(Some).ok_or_else(|| AwsError::Terminal {
            operation: "CreateTopic".into(),
            resource: resource(&plan.arn),
            code: "KmsKeyNotReady".into(),
            message: "the pipeline's KMS key is not known yet".into(),
        }),
    }
}

async fn create(c: &AwsClients, plan: &TopicPlan, key: Option<&str>) -> Result<String, AwsError> {
    let tags: Vec<Tag> = (plan.tags.iter())
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()
        .map_err(|e| AwsError::Terminal {
            operation: "CreateTopic".into(),
            resource: resource(&plan.arn),
            code: "InvalidRequest".into(),
            message: e.to_string(),
        })?;
    let attributes = key.map(|k| std::collections::HashMap::from([(KMS_ATTRIBUTE.to_string(), k.to_string())]));
    let sent = (c.sns.create_topic().name(&plan.name))
        .set_tags(Some(tags))
        .set_attributes(attributes)
        .send()
        .await;
    let out = sent.map_err(|e| classify("CreateTopic", &resource(&plan.arn), e))?;
    Ok(out.topic_arn.unwrap_or_else(|| plan.arn.clone()))
}

/// Ensures the topic; returns its ARN and the drift found. A topic of our name without our tags
/// is a `NameConflict` unless adoption is opted in; a given topic that does not exist is `Missing`.
pub async fn ensure(
    c: &AwsClients,
    plan: &TopicPlan,
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
) -> Result<(String, Vec<Drift>), AwsError> {
    let found = attributes(c, &plan.arn).await?;
    if !plan.create {
        return match found {
            Some(_) => Ok((plan.arn.clone(), vec![])),
            None => Err(AwsError::Missing {
                resource: resource(&plan.arn),
            }),
        };
    }
    let key = desired_key(plan, key_arn)?;
    let Some(attrs) = found else {
        return Ok((create(c, plan, key).await?, vec![]));
    };
    if !(adopt || owner.owns_tags(&tags(c, &plan.arn).await?)) {
        return Err(AwsError::NameConflict {
            resource: resource(&plan.arn),
        });
    }
    let actual = attrs.get(KMS_ATTRIBUTE).filter(|k| !k.is_empty()).map(String::as_str);
    if actual == key {
        return Ok((plan.arn.clone(), vec![]));
    }
    let correct = drift == DriftPolicy::Correct;
    if correct {
        let sent = (c.sns.set_topic_attributes())
            .topic_arn(&plan.arn)
            .attribute_name(KMS_ATTRIBUTE)
            .attribute_value(key.unwrap_or_default())
            .send()
            .await;
        sent.map_err(|e| classify("SetTopicAttributes", &resource(&plan.arn), e))?;
    }
    let d = Drift::found(
        &resource(&plan.arn),
        KMS_ATTRIBUTE,
        key.unwrap_or("none").to_string(),
        actual.unwrap_or("none").to_string(),
    );
    Ok((
        plan.arn.clone(),
        vec![Drift {
            corrected: correct,
            ..d
        }],
    ))
}

/// Deletes the topic under `Delete` when mlobs created it and it carries our tags; a user's topic
/// and a retained one are left alone. NotFound is success.
pub async fn delete(c: &AwsClients, plan: &TopicPlan, owner: &Owner, policy: DeletionPolicy) -> Result<bool, AwsError> {
    if !plan.create || policy == DeletionPolicy::Retain || attributes(c, &plan.arn).await?.is_none() {
        return Ok(false);
    }
    if !owner.owns_tags(&tags(c, &plan.arn).await?) {
        return Ok(false);
    }
    let sent = c.sns.delete_topic().topic_arn(&plan.arn).send().await;
    match sent {
        Ok(_) => Ok(true),
        Err(e) if matches!(code(&e), Some("NotFound" | "NotFoundException")) => Ok(false),
        Err(e) => Err(classify("DeleteTopic", &resource(&plan.arn), e)),
    }
}
