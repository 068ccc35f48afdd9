//! The hot path's Kinesis data stream: created with its capacity mode and ownership tags, then
//! SSE-KMS with the pipeline's key and the retention of the spec; adopted only by tag (or
//! opt-in); drift (key, retention, capacity, tags) observed and, under `Correct`, put back;
//! deleted under `deletionPolicy: Delete` only when its tags say it is ours.
//!
//! Kinesis changes a stream one operation at a time (CREATING/UPDATING refuse the next change
//! with ResourceInUseException): a stream that is not ACTIVE is a retryable "not ready yet", and
//! the next reconcile continues where this one stopped.

use std::collections::BTreeMap;

use aws_sdk_kinesis::types::{EncryptionType, ScalingType, StreamMode, StreamModeDetails, StreamStatus};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::{classify, code, is_absent};
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::hot_path::StreamPlan;
use crate::desired::hot_path::Capacity;

const OWN_TAG_PREFIX: &str = "mlobs.io/";

/// `stream:<name>`, the resource in errors and drift.
pub fn resource(name: &str) -> String {
    format!("stream:{name}")
}

/// A stream as DescribeStreamSummary and ListTagsForStream show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedStream {
    pub arn: String,
    /// `CREATING`, `ACTIVE`, `UPDATING`, `DELETING`.
    pub status: String,
    pub capacity: Capacity,
    pub retention_hours: i32,
    /// The KMS key (as given to StartStreamEncryption) when SSE-KMS is on.
    pub kms_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ObservedStream {
    pub fn active(&self) -> bool {
        self.status == StreamStatus::Active.as_str()
    }
}

/// ResourceInUse (another change in progress) and LimitExceeded (Kinesis' per-stream rate of
/// control-plane calls) pass with time: retryable, unlike the generic classification.
fn classify_stream<E>(op: &str, res: &str, e: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match code(&e) {
        Some(c @ ("ResourceInUseException" | "LimitExceededException")) => AwsError::Retryable {
            operation: op.into(),
            resource: res.into(),
            code: c.into(),
            message: e.meta().message().unwrap_or_default().to_string(),
        },
        _ => classify(op, res, e),
    }
}

/// The stream, or `None` when it does not exist.
pub async fn observe(c: &AwsClients, name: &str) -> Result<Option<ObservedStream>, AwsError> {
    let res = resource(name);
    let summary = match c.kinesis.describe_stream_summary().stream_name(name).send().await {
        Ok(out) => out.stream_description_summary,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(classify_stream("DescribeStreamSummary", &res, e)),
    };
    let Some(s) = summary else {
        return Ok(None);
    };
    let on_demand = s
        .stream_mode_details()
        .is_some_and(|m| *m.stream_mode() == StreamMode::OnDemand);
    let capacity = if on_demand {
        Capacity::OnDemand
    } else {
        Capacity::Provisioned {
            shards: s.open_shard_count(),
        }
    };
    let kms_key = (s.encryption_type() == Some(&EncryptionType::Kms))
        .then(|| s.key_id().map(str::to_string))
        .flatten();
    Ok(Some(ObservedStream {
        arn: s.stream_arn().to_string(),
        status: s.stream_status().as_str().to_string(),
        capacity,
        retention_hours: s.retention_period_hours(),
        kms_key,
        tags: tags(c, name).await?,
    }))
}

/// Every tag of the stream (ListTagsForStream pages by 50 at most).
async fn tags(c: &AwsClients, name: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let mut out = BTreeMap::new();
    loop {
        let start = out.keys().next_back().cloned();
        let page = (c.kinesis.list_tags_for_stream().stream_name(name))
            .set_exclusive_start_tag_key(start)
            .send()
            .await
            .map_err(|e| classify_stream("ListTagsForStream", &resource(name), e))?;
        let before = out.len();
        out.extend(
            page.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().unwrap_or_default().to_string())),
        );
        if !page.has_more_tags() || out.len() == before {
            return Ok(out);
        }
    }
}

fn hash_map(tags: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn mode(m: StreamMode, res: &str) -> Result<StreamModeDetails, AwsError> {
    StreamModeDetails::builder()
        .stream_mode(m)
        .build()
        .map_err(|e| AwsError::Terminal {
            operation: "CreateStream".into(),
            resource: res.into(),
            code: "InvalidRequest".into(),
            message: e.to_string(),
        })
}

async fn create(c: &AwsClients, plan: &StreamPlan) -> Result<(), AwsError> {
    let res = resource(&plan.name);
    let (m, shards) = match plan.capacity {
        Capacity::OnDemand => (StreamMode::OnDemand, None),
        Capacity::Provisioned { shards } => (StreamMode::Provisioned, Some(shards)),
    };
    // The ownership tags in the same call: a crash cannot leave an untagged stream of ours.
    let sent = (c.kinesis.create_stream().stream_name(&plan.name))
        .stream_mode_details(mode(m, &res)?)
        .set_shard_count(shards)
        .set_tags(Some(hash_map(&plan.tags)))
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        // Created concurrently (or by a crashed attempt): observed again by the caller.
        Err(e) if code(&e) == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(classify_stream("CreateStream", &res, e)),
    }
}

/// The key the stream is encrypted with: the applied key, else the plan's existing key ARN.
fn desired_key<'a>(plan: &'a StreamPlan, key_arn: Option<&'a str>) -> Result<Option<&'a str>, AwsError> {
    super::planned_key(&plan.kms_key, key_arn, "StartStreamEncryption", &resource(&plan.name))
}

fn not_active(name: &str, status: &str) -> AwsError {
    AwsError::Retryable {
        operation: "DescribeStreamSummary".into(),
        resource: resource(name),
        code: "StreamNotActive".into(),
        message: format!("the stream is {status}; waiting for ACTIVE"),
    }
}

/// The differences between the plan and the stream, in the order they are put back
/// (`tags`, `kmsKey`, `retentionHours`, `capacity`).
pub fn diff(plan: &StreamPlan, o: &ObservedStream, key: Option<&str>) -> Vec<Drift> {
    let res = resource(&plan.name);
    let mut out = Vec::new();
    let missing: Vec<&String> = (plan.tags.iter())
        .filter(|(k, v)| o.tags.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    if !missing.is_empty() {
        let keys: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
        out.push(Drift::found(
            &res,
            "tags",
            keys.join(", "),
            "absent or different".into(),
        ));
    }
    // mlobs never turns encryption off: a stream without a desired key keeps what it has.
    if let Some(k) = key
        && o.kms_key.as_deref() != Some(k)
    {
        let actual = o.kms_key.clone().unwrap_or_else(|| "NONE".into());
        out.push(Drift::found(&res, "kmsKey", k.into(), actual));
    }
    if o.retention_hours != plan.retention_hours {
        out.push(Drift::found(
            &res,
            "retentionHours",
            plan.retention_hours.to_string(),
            o.retention_hours.to_string(),
        ));
    }
    if o.capacity != plan.capacity {
        out.push(Drift::found(
            &res,
            "capacity",
            plan.capacity.to_string(),
            o.capacity.to_string(),
        ));
    }
    out
}

/// Puts one field back.
async fn put(
    c: &AwsClients,
    plan: &StreamPlan,
    o: &ObservedStream,
    field: &str,
    key: Option<&str>,
) -> Result<(), AwsError> {
    let (name, res) = (plan.name.as_str(), resource(&plan.name));
    match field {
        "tags" => (c.kinesis.add_tags_to_stream().stream_name(name))
            .set_tags(Some(hash_map(&plan.tags)))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify_stream("AddTagsToStream", &res, e)),
        "kmsKey" => {
            let Some(key) = key else { return Ok(()) };
            // A stream encrypted with another key is re-keyed by starting encryption again.
            (c.kinesis.start_stream_encryption().stream_name(name))
                .encryption_type(EncryptionType::Kms)
                .key_id(key)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify_stream("StartStreamEncryption", &res, e))
        }
        "retentionHours" if plan.retention_hours > o.retention_hours => (c.kinesis.increase_stream_retention_period())
            .stream_name(name)
            .retention_period_hours(plan.retention_hours)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify_stream("IncreaseStreamRetentionPeriod", &res, e)),
        "retentionHours" => (c.kinesis.decrease_stream_retention_period())
            .stream_name(name)
            .retention_period_hours(plan.retention_hours)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify_stream("DecreaseStreamRetentionPeriod", &res, e)),
        "capacity" => match (plan.capacity, o.capacity) {
            (Capacity::Provisioned { shards }, Capacity::Provisioned { .. }) => (c.kinesis.update_shard_count())
                .stream_name(name)
                .target_shard_count(shards)
                .scaling_type(ScalingType::UniformScaling)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify_stream("UpdateShardCount", &res, e)),
            // A mode switch; a provisioned stream keeps its shard count, corrected next time.
            (desired, _) => {
                let m = match desired {
                    Capacity::OnDemand => StreamMode::OnDemand,
                    Capacity::Provisioned { .. } => StreamMode::Provisioned,
                };
                (c.kinesis.update_stream_mode().stream_arn(&o.arn))
                    .stream_mode_details(mode(m, &res)?)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify_stream("UpdateStreamMode", &res, e))
            }
        },
        _ => Ok(()),
    }
}

/// Ensures the stream; returns its ARN and the drift found. Ownership is checked before anything
/// changes: a stream whose tags name another pipeline (or none) is a `NameConflict` unless
/// adoption is opted in. A stream that is not ACTIVE yet is a retryable error.
pub async fn ensure(
    c: &AwsClients,
    plan: &StreamPlan,
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
) -> Result<(String, Vec<Drift>), AwsError> {
    let key = desired_key(plan, key_arn)?;
    let (o, created) = match observe(c, &plan.name).await? {
        Some(o) => (o, false),
        None => {
            create(c, plan).await?;
            let o = observe(c, &plan.name)
                .await?
                .ok_or_else(|| not_active(&plan.name, "not visible yet"))?;
            (o, true)
        }
    };
    let ours = owner.owns_tags(&o.tags);
    // A derived name embeds the cluster and pipeline: an untagged, unencrypted stream of that
    // name is our create that stopped before its tags stuck (moto drops CreateStream's tags).
    let interrupted = plan.derived_name && o.tags.is_empty() && o.kms_key.is_none();
    if !(ours || adopt || created || interrupted) {
        return Err(AwsError::NameConflict {
            resource: resource(&plan.name),
        });
    }
    // A stream of ours not yet encrypted with its key is an unfinished create (or an adoption):
    // settings are put in every drift mode and are not drift.
    let finishing = created || !ours || (key.is_some() && o.kms_key.is_none());
    let correct = drift == DriftPolicy::Correct;
    let mut drifts = Vec::new();
    for d in diff(plan, &o, key) {
        if !o.active() {
            return Err(not_active(&plan.name, &o.status));
        }
        let fix = finishing || correct;
        if fix {
            put(c, plan, &o, &d.field, key).await?;
        }
        if !finishing {
            drifts.push(Drift { corrected: fix, ..d });
        }
    }
    if !o.active() {
        return Err(not_active(&plan.name, &o.status));
    }
    Ok((o.arn, drifts))
}

/// Applies the deletion policy: `Delete` deletes the stream, `Retain` removes the mlobs tags.
/// A stream without our tags is left alone under both. NotFound is success.
pub async fn delete(c: &AwsClients, plan: &StreamPlan, owner: &Owner, policy: DeletionPolicy) -> Result<(), AwsError> {
    let Some(o) = observe(c, &plan.name).await? else {
        return Ok(());
    };
    if !owner.owns_tags(&o.tags) {
        return Ok(());
    }
    let res = resource(&plan.name);
    let sent = match policy {
        DeletionPolicy::Delete => c
            .kinesis
            .delete_stream()
            .stream_name(&plan.name)
            .enforce_consumer_deletion(true)
            .send()
            .await
            .map(drop)
            .map_err(|e| (e, "DeleteStream")),
        DeletionPolicy::Retain => {
            let ours: Vec<String> = (o.tags.keys())
                .filter(|k| k.starts_with(OWN_TAG_PREFIX))
                .cloned()
                .collect();
            let sent = (c.kinesis.remove_tags_from_stream().stream_name(&plan.name))
                .set_tag_keys(Some(ours))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(()),
                Err(e) if is_absent(&e) => Ok(()),
                Err(e) => return Err(classify_stream("RemoveTagsFromStream", &res, e)),
            }
        }
    };
    match sent {
        Ok(()) => Ok(()),
        Err((e, _)) if is_absent(&e) => Ok(()),
        Err((e, op)) => Err(classify_stream(op, &res, e)),
    }
}
