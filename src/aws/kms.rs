//! The pipeline's KMS key: found (alias → recorded key id → ownership-tag scan), created when
//! absent, converged when found, and retained or scheduled for deletion when the pipeline goes.
//!
//! Create order is CreateKey (policy and tags in the same call) → EnableKeyRotation → CreateAlias.
//! The alias comes last on purpose: a key that has its alias finished its create, so a key found
//! without one (by recorded id or tag) is a half-finished create that is completed in every drift
//! mode, while anything else that differs on an aliased key is drift.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_kms::config::retry::RetryConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{Value, json};

use super::error::{self, classify};
use super::{AwsClients, AwsError, Drift, Owner, TAG_CLUSTER, TAG_PIPELINE, TAG_UID};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::KmsKeyPlan;

/// The key the log groups are encrypted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    pub key_id: String,
    pub key_arn: String,
}

const ENABLED: &str = "Enabled";
const DISABLED: &str = "Disabled";
const PENDING_DELETION: &str = "PendingDeletion";

type Tags = BTreeMap<String, String>;

/// The owners of the account's keys as the tag scans of this process read them, shared by every
/// pipeline. A key's ownership tags are written by CreateKey and changed afterwards only by mlobs
/// (whose TagResource and UntagResource forget the key here), so a scan reads each key's tags
/// once per process instead of once per scan: in the scale bench, 1,000 pipelines whose CreateKey
/// timed out under load made 90,588 ListResourceTags calls, one account-wide scan each. A key
/// the index says is ours is read again before it is used.
///
/// Each key is kept as a digest of its owner (its pipeline and cluster tags), not its tags: all
/// a scan asks of the index is whether a key belongs to someone else. A key's tags took about
/// 1 KiB (a map node and its strings); an entry here is its id and 8 bytes, whatever the account
/// has tagged. Two owners with one digest would make a scan read a foreign key again, never skip
/// one of ours.
#[derive(Debug, Clone, Default)]
pub struct KeyTagIndex(Arc<Mutex<HashMap<Box<str>, u64>>>);

/// The digest [`KeyTagIndex`] keeps of a key's owner.
fn owner_digest(pipeline: Option<&str>, cluster: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (pipeline, cluster).hash(&mut h);
    h.finish()
}

impl KeyTagIndex {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Box<str>, u64>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether an earlier scan read `key_id` with tags naming an owner other than `owner`.
    fn owned_by_another(&self, key_id: &str, owner: &Owner) -> bool {
        let ours = owner_digest(Some(&owner.pipeline), Some(&owner.cluster));
        self.with(|m| m.get(key_id).is_some_and(|d| *d != ours))
    }

    fn put(&self, key_id: &str, tags: &Tags) {
        let d = owner_digest(
            tags.get(TAG_PIPELINE).map(String::as_str),
            tags.get(TAG_CLUSTER).map(String::as_str),
        );
        self.with(|m| m.insert(key_id.into(), d));
    }

    /// Forgets a key whose tags mlobs is changing.
    pub fn forget(&self, key_id: &str) {
        self.with(|m| m.remove(key_id));
    }

    /// How many keys' owners are held.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct KeyMeta {
    id: String,
    arn: String,
    state: String,
}

#[derive(Debug)]
struct Found {
    meta: KeyMeta,
    tags: Tags,
    /// Found through its alias, i.e. its create finished.
    has_alias: bool,
}

enum Lookup {
    Absent,
    /// The alias points at a key that is not ours.
    Foreign,
    Ours(Found),
}

/// The `Create` plan's fields, borrowed.
struct Want<'a> {
    description: &'a str,
    alias: &'a str,
    rotation: bool,
    tags: &'a Tags,
    policy: &'a Value,
}

/// Every customer alias of the account in the region → the key it points to, from one paged
/// ListAliases (100 a page): a resync of N pipelines finds their keys in N/100 calls instead of a
/// DescribeKey each. AWS managed aliases (`alias/aws/...`) are left out: no pipeline may use them.
pub type AliasSnapshot = BTreeMap<String, AliasTarget>;

/// Where an alias points, as ListAliases reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasTarget {
    pub key_id: String,
    /// `arn:<partition>:kms:<region>:<account>:alias/<name>`; the key's ARN is derived from it.
    pub alias_arn: Option<String>,
}

impl AliasTarget {
    /// `arn:...:key/<id>` in the alias's partition, region and account.
    pub fn key_arn(&self) -> Option<String> {
        let (head, _) = self.alias_arn.as_deref()?.split_once(":alias/")?;
        Some(format!("{head}:key/{}", self.key_id))
    }
}

/// Reads [`AliasSnapshot`]: ListAliases, paged with Marker.
pub async fn observe_aliases(c: &AwsClients) -> Result<AliasSnapshot, AwsError> {
    let mut all = AliasSnapshot::new();
    let mut marker = None;
    loop {
        let out = c
            .kms
            .list_aliases()
            .limit(100)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| classify("ListAliases", "kms", e))?;
        for a in out.aliases() {
            // An alias without a target (possible for AWS managed aliases) points to no key.
            if let (Some(name), Some(key_id)) = (a.alias_name(), a.target_key_id())
                && !name.starts_with("alias/aws/")
            {
                let target = AliasTarget {
                    key_id: key_id.to_string(),
                    alias_arn: a.alias_arn().map(str::to_string),
                };
                all.insert(name.to_string(), target);
            }
        }
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => return Ok(all),
        }
    }
}

/// How much of the key an ensure reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyReads<'a> {
    /// The account's aliases, read for many pipelines at once (resync).
    pub aliases: Option<&'a AliasSnapshot>,
    /// Whether the key's own state, tags, rotation and policy are read (DescribeKey,
    /// ListResourceTags, GetKeyRotationStatus, GetKeyPolicy). When not, a key whose alias still
    /// points where status recorded is taken as it was at its last full check.
    pub skip_key_check: bool,
}

/// What [`ensure_reads`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub key: KmsKey,
    pub drift: Vec<Drift>,
    /// The key's state, tags, rotation and policy were read (and corrected as the drift policy says).
    pub checked: bool,
}

/// Ensures the plan's key. See the module docs for the find order and create order.
pub async fn ensure(
    c: &AwsClients,
    plan: &KmsKeyPlan,
    owner: &Owner,
    known_key_id: Option<&str>,
    drift: DriftPolicy,
) -> Result<(KmsKey, Vec<Drift>), AwsError> {
    ensure_with(c, plan, owner, known_key_id, drift, true).await
}

/// [`ensure`], where `scan` says whether a key may exist that neither alias nor recorded id finds
/// (a create that crashed before both were written). The tag scan reads every key's tags in the
/// account, so the controller asks for it only when its status says a create was started.
pub async fn ensure_with(
    c: &AwsClients,
    plan: &KmsKeyPlan,
    owner: &Owner,
    known_key_id: Option<&str>,
    drift: DriftPolicy,
    scan: bool,
) -> Result<(KmsKey, Vec<Drift>), AwsError> {
    let e = ensure_reads(c, plan, owner, known_key_id, drift, scan, KeyReads::default()).await?;
    Ok((e.key, e.drift))
}

/// [`ensure_with`], reading as `reads` allows: with a snapshot of the aliases and the key check
/// not due, a key whose alias points to the key status recorded (`known_key_id`) costs no call.
/// Anything else (alias missing from the snapshot or moved, no recorded key) is the full ensure.
pub async fn ensure_reads(
    c: &AwsClients,
    plan: &KmsKeyPlan,
    owner: &Owner,
    known_key_id: Option<&str>,
    drift: DriftPolicy,
    scan: bool,
    reads: KeyReads<'_>,
) -> Result<Ensured, AwsError> {
    let skip = reads.skip_key_check;
    let want = match plan {
        KmsKeyPlan::Existing { key_arn, .. } => {
            // A user's key named by ARN: nothing to look up while its check is not due.
            let recorded = known_key_id.filter(|k| key_arn.strip_suffix(k).is_some_and(|h| h.ends_with(":key/")));
            if skip && let Some(id) = recorded {
                let key = KmsKey {
                    key_id: id.to_string(),
                    key_arn: key_arn.clone(),
                };
                return Ok(Ensured {
                    key,
                    drift: Vec::new(),
                    checked: false,
                });
            }
            let (key, drift) = ensure_existing(c, key_arn).await?;
            return Ok(Ensured {
                key,
                drift,
                checked: true,
            });
        }
        KmsKeyPlan::Create {
            description,
            alias,
            rotation,
            tags,
            policy,
            ..
        } => Want {
            description,
            alias,
            rotation: *rotation,
            tags,
            policy,
        },
    };
    if skip
        && let (Some(target), Some(known)) = (reads.aliases.and_then(|a| a.get(want.alias)), known_key_id)
        && target.key_id == known
        && let Some(key_arn) = target.key_arn()
    {
        let key = KmsKey {
            key_id: target.key_id.clone(),
            key_arn,
        };
        return Ok(Ensured {
            key,
            drift: Vec::new(),
            checked: false,
        });
    }
    let (key, drift) = match find(c, want.alias, owner, known_key_id, scan).await? {
        Lookup::Absent => (create(c, &want).await?, Vec::new()),
        Lookup::Foreign => {
            return Err(AwsError::NameConflict {
                resource: resource(want.alias),
            });
        }
        Lookup::Ours(found) => converge(c, &want, found, drift).await?,
    };
    Ok(Ensured {
        key,
        drift,
        checked: true,
    })
}

/// Applies the deletion policy to a key mlobs created; a user's key (`Existing`) is never touched.
/// Only a key whose tags name this pipeline is changed; NotFound is success.
pub async fn delete(
    c: &AwsClients,
    plan: &KmsKeyPlan,
    owner: &Owner,
    known_key_id: Option<&str>,
    policy: DeletionPolicy,
) -> Result<(), AwsError> {
    let KmsKeyPlan::Create {
        alias,
        deletion_window_days,
        ..
    } = plan
    else {
        return Ok(());
    };
    let Lookup::Ours(found) = find(c, alias, owner, known_key_id, true).await? else {
        return Ok(());
    };
    if !owner.owns_tags(&found.tags) {
        return Ok(());
    }
    let id = found.meta.id.as_str();
    match policy {
        DeletionPolicy::Retain => {
            let keys: Vec<String> = [TAG_CLUSTER, TAG_PIPELINE, TAG_UID]
                .into_iter()
                .filter(|k| found.tags.contains_key(*k))
                .map(String::from)
                .collect();
            c.kms_key_tags.forget(id);
            let sent = c.kms.untag_resource().key_id(id).set_tag_keys(Some(keys)).send().await;
            error::absent_is_ok(sent, "UntagResource", &resource(alias))
        }
        DeletionPolicy::Delete => {
            if found.has_alias {
                let sent = c.kms.delete_alias().alias_name(alias.as_str()).send().await;
                error::absent_is_ok(sent, "DeleteAlias", &resource(alias))?;
            }
            // A second ScheduleKeyDeletion on a pending key is KMSInvalidStateException in AWS.
            if found.meta.state != PENDING_DELETION {
                let sent = c
                    .kms
                    .schedule_key_deletion()
                    .key_id(id)
                    .pending_window_in_days(*deletion_window_days)
                    .send()
                    .await;
                error::absent_is_ok(sent, "ScheduleKeyDeletion", &resource(alias))?;
            }
            Ok(())
        }
    }
}

fn resource(alias: &str) -> String {
    format!("kmsKey:{alias}")
}

/// Maps an SDK error of `op` on `res` (already a resource string) through [`classify`].
fn fail<E>(op: &'static str, res: &str) -> impl FnOnce(SdkError<E, HttpResponse>) -> AwsError + use<E>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let res = res.to_string();
    move |e| classify(op, &res, e)
}

fn malformed(op: &str, res: &str, what: &str) -> AwsError {
    AwsError::Terminal {
        operation: op.into(),
        resource: resource(res),
        code: "MalformedResponse".into(),
        message: format!("the response has no {what}"),
    }
}

fn meta_of(m: Option<&aws_sdk_kms::types::KeyMetadata>, op: &str, res: &str) -> Result<KeyMeta, AwsError> {
    let m = m.ok_or_else(|| malformed(op, res, "KeyMetadata"))?;
    Ok(KeyMeta {
        id: m.key_id().to_string(),
        arn: m.arn().ok_or_else(|| malformed(op, res, "key ARN"))?.to_string(),
        state: m.key_state().map_or("Unknown", |s| s.as_str()).to_string(),
    })
}

/// DescribeKey by id, ARN or `alias/...`; `None` when it does not exist.
async fn describe(c: &AwsClients, key: &str) -> Result<Option<KeyMeta>, AwsError> {
    match c.kms.describe_key().key_id(key).send().await {
        Ok(out) => meta_of(out.key_metadata(), "DescribeKey", key).map(Some),
        Err(e) if error::is_absent(&e) => Ok(None),
        Err(e) => Err(classify("DescribeKey", &resource(key), e)),
    }
}

async fn key_tags(c: &AwsClients, key_id: &str) -> Result<Tags, AwsError> {
    let mut tags = Tags::new();
    let mut marker = None;
    loop {
        let out = c
            .kms
            .list_resource_tags()
            .key_id(key_id)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| classify("ListResourceTags", &resource(key_id), e))?;
        tags.extend(
            out.tags()
                .iter()
                .map(|t| (t.tag_key().to_string(), t.tag_value().to_string())),
        );
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => return Ok(tags),
        }
    }
}

/// Alias, then the id the controller recorded after CreateKey, then a scan for our tags: the
/// scan is what finds a key whose create crashed before its alias and before status was written.
async fn find(c: &AwsClients, alias: &str, owner: &Owner, known: Option<&str>, scan: bool) -> Result<Lookup, AwsError> {
    if let Some(meta) = describe(c, alias).await? {
        let tags = key_tags(c, &meta.id).await?;
        let recorded = known.is_some_and(|k| k == meta.id || k == meta.arn);
        if !owner.owns_tags(&tags) && !recorded {
            return Ok(Lookup::Foreign);
        }
        return Ok(Lookup::Ours(Found {
            meta,
            tags,
            has_alias: true,
        }));
    }
    if let Some(k) = known
        && let Some(meta) = describe(c, k).await?
    {
        let tags = key_tags(c, &meta.id).await?;
        // A recorded id is trusted unless the key's tags name another pipeline (stale status).
        if tags.get(TAG_PIPELINE).is_none_or(|p| *p == owner.pipeline) {
            return Ok(Lookup::Ours(Found {
                meta,
                tags,
                has_alias: false,
            }));
        }
    }
    if !scan {
        return Ok(Lookup::Absent);
    }
    Ok(match tag_scan(c, owner).await? {
        Some((meta, tags)) => Lookup::Ours(Found {
            meta,
            tags,
            has_alias: false,
        }),
        None => Lookup::Absent,
    })
}

/// KMS has no search by tag: ListKeys, then ListResourceTags per key. It runs only when neither
/// alias nor recorded id finds the key (first create, or a crash before both were written).
/// Cluster and pipeline tags must both match: two clusters may run pipelines of the same name.
async fn tag_scan(c: &AwsClients, owner: &Owner) -> Result<Option<(KeyMeta, Tags)>, AwsError> {
    let mut marker = None;
    loop {
        let out = c
            .kms
            .list_keys()
            .limit(1000)
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| classify("ListKeys", "kms", e))?;
        for id in out.keys().iter().filter_map(|k| k.key_id()) {
            let is_ours =
                |t: &Tags| t.get(TAG_PIPELINE) == Some(&owner.pipeline) && t.get(TAG_CLUSTER) == Some(&owner.cluster);
            // Another pipeline's or a foreign key, as an earlier scan read it: skipped unread.
            if c.kms_key_tags.owned_by_another(id, owner) {
                continue;
            }
            let tags = match key_tags(c, id).await {
                Ok(t) => {
                    c.kms_key_tags.put(id, &t);
                    t
                }
                // Keys we may not read (other teams', AWS managed) or that just vanished are not ours.
                Err(AwsError::AccessDenied { .. }) => continue,
                Err(AwsError::Terminal { code, .. }) if code == "NotFoundException" => continue,
                Err(e) => return Err(e),
            };
            if !is_ours(&tags) {
                continue;
            }
            if let Some(meta) = describe(c, id).await?
                && meta.state != PENDING_DELETION
            {
                return Ok(Some((meta, tags)));
            }
        }
        match (out.truncated(), out.next_marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => return Ok(None),
        }
    }
}

async fn ensure_existing(c: &AwsClients, key_arn: &str) -> Result<(KmsKey, Vec<Drift>), AwsError> {
    let meta = describe(c, key_arn).await?.ok_or_else(|| AwsError::Missing {
        resource: resource(key_arn),
    })?;
    // A user's key is never changed: a disabled or pending-deletion key is only reported.
    let drift = (meta.state != ENABLED)
        .then(|| Drift {
            resource: resource(key_arn),
            field: "keyState".into(),
            desired: ENABLED.into(),
            actual: meta.state.clone(),
            corrected: false,
        })
        .into_iter()
        .collect();
    Ok((
        KmsKey {
            key_id: meta.id,
            key_arn: meta.arn,
        },
        drift,
    ))
}

async fn create(c: &AwsClients, want: &Want<'_>) -> Result<KmsKey, AwsError> {
    let res = resource(want.alias);
    let tags = want
        .tags
        .iter()
        .map(|(k, v)| aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AwsError::Terminal {
            operation: "CreateKey".into(),
            resource: res.clone(),
            code: "Client".into(),
            message: e.to_string(),
        })?;
    // CreateKey is not idempotent: an SDK retry after a lost answer (a timeout or a 500 after
    // KMS made the key) makes a second key. Never retried blindly: the next ensure finds a key
    // whose answer was lost by its tags (the controller records that a create was started).
    let out = c
        .kms
        .create_key()
        .description(want.description)
        .policy(want.policy.to_string())
        .set_tags(Some(tags))
        .customize()
        .config_override(aws_sdk_kms::config::Builder::default().retry_config(RetryConfig::disabled()))
        .send()
        .await
        .map_err(|e| classify("CreateKey", &res, e))?;
    let meta = meta_of(out.key_metadata(), "CreateKey", want.alias)?;
    if want.rotation {
        enable_rotation(c, &meta.id, want.alias).await?;
    }
    create_alias(c, &meta.id, want.alias).await?;
    Ok(KmsKey {
        key_id: meta.id,
        key_arn: meta.arn,
    })
}

async fn enable_rotation(c: &AwsClients, id: &str, alias: &str) -> Result<(), AwsError> {
    c.kms
        .enable_key_rotation()
        .key_id(id)
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("EnableKeyRotation", &resource(alias), e))
}

async fn create_alias(c: &AwsClients, id: &str, alias: &str) -> Result<(), AwsError> {
    match c.kms.create_alias().alias_name(alias).target_key_id(id).send().await {
        Ok(_) => Ok(()),
        // An SDK retry after a lost answer finds the alias it made: done if it names our key.
        Err(e) if error::code(&e) == Some("AlreadyExistsException") => match describe(c, alias).await? {
            Some(meta) if meta.id == id => Ok(()),
            _ => Err(AwsError::Retryable {
                operation: "CreateAlias".into(),
                resource: resource(alias),
                code: "AlreadyExistsException".into(),
                message: "created concurrently; re-observing".into(),
            }),
        },
        Err(e) => Err(classify("CreateAlias", &resource(alias), e)),
    }
}

async fn converge(
    c: &AwsClients,
    want: &Want<'_>,
    found: Found,
    policy: DriftPolicy,
) -> Result<(KmsKey, Vec<Drift>), AwsError> {
    let correct = policy == DriftPolicy::Correct;
    let res = resource(want.alias);
    let id = found.meta.id.as_str();
    let mut drift = Vec::new();
    let mut record = |field: &str, desired: String, actual: String, corrected: bool| {
        drift.push(Drift {
            resource: res.clone(),
            field: field.into(),
            desired,
            actual,
            corrected,
        })
    };

    let mut state = found.meta.state.clone();
    if state == DISABLED || state == PENDING_DELETION {
        if correct {
            if state == PENDING_DELETION {
                // CancelKeyDeletion leaves the key Disabled: EnableKey follows.
                c.kms
                    .cancel_key_deletion()
                    .key_id(id)
                    .send()
                    .await
                    .map_err(fail("CancelKeyDeletion", &res))?;
            }
            c.kms
                .enable_key()
                .key_id(id)
                .send()
                .await
                .map_err(fail("EnableKey", &res))?;
        }
        record("keyState", ENABLED.into(), state.clone(), correct);
        if correct {
            state = ENABLED.into();
        }
    } else if state != ENABLED {
        // PendingImport, Unavailable, Creating...: nothing mlobs can or should do.
        record("keyState", ENABLED.into(), state.clone(), false);
    }

    let missing: Tags = want
        .tags
        .iter()
        .filter(|(k, v)| found.tags.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() {
        if correct {
            let tags = missing
                .iter()
                .map(|(k, v)| aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AwsError::Terminal {
                    operation: "TagResource".into(),
                    resource: res.clone(),
                    code: "Client".into(),
                    message: e.to_string(),
                })?;
            c.kms_key_tags.forget(id);
            c.kms
                .tag_resource()
                .key_id(id)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(fail("TagResource", &res))?;
        }
        let actual = missing.keys().map(|k| format_tag(k, found.tags.get(k))).collect();
        record("tags", format_tags(&missing), actual_list(actual), correct);
    }

    // Disabled and pending keys reject EnableKeyRotation (and AWS may refuse the reads): check
    // rotation and policy only on an enabled key.
    if state == ENABLED {
        if want.rotation {
            let on = c
                .kms
                .get_key_rotation_status()
                .key_id(id)
                .send()
                .await
                .map_err(fail("GetKeyRotationStatus", &res))?
                .key_rotation_enabled();
            // Without its alias the key is a half-finished create: finishing it is not drift.
            let finishing = !found.has_alias;
            if !on && (correct || finishing) {
                enable_rotation(c, id, want.alias).await?;
            }
            if !on && !finishing {
                record("keyRotation", "true".into(), "false".into(), correct);
            }
        }
        let out = c
            .kms
            .get_key_policy()
            .key_id(id)
            .policy_name("default")
            .send()
            .await
            .map_err(fail("GetKeyPolicy", &res))?;
        let actual: Value = out
            .policy()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(Value::Null);
        let lost = missing_statements(&actual, want.policy);
        if !lost.is_empty() {
            if correct {
                let merged = merged_policy(&actual, want.policy);
                c.kms
                    .put_key_policy()
                    .key_id(id)
                    .policy_name("default")
                    .policy(merged.to_string())
                    .send()
                    .await
                    .map_err(fail("PutKeyPolicy", &res))?;
            }
            let sids: Vec<&str> = lost
                .iter()
                .map(|s| s.get("Sid").and_then(Value::as_str).unwrap_or("(no Sid)"))
                .collect();
            record(
                "policy",
                format!("statements {}", sids.join(", ")),
                "missing or changed".into(),
                correct,
            );
        }
    }

    if !found.has_alias && state != PENDING_DELETION {
        create_alias(c, id, want.alias).await?;
    }
    Ok((
        KmsKey {
            key_id: found.meta.id,
            key_arn: found.meta.arn,
        },
        drift,
    ))
}

fn format_tag(k: &str, v: Option<&String>) -> String {
    match v {
        Some(v) => format!("{k}={v}"),
        None => format!("{k} absent"),
    }
}

fn format_tags(tags: &Tags) -> String {
    actual_list(tags.iter().map(|(k, v)| format_tag(k, Some(v))).collect())
}

fn actual_list(items: Vec<String>) -> String {
    items.join(", ")
}

/// Policy JSON may come back reformatted (moto, and IAM-style normalisation in AWS): one-element
/// arrays as scalars, lists reordered, keys reordered. Compare the normal form.
pub(super) fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(normalize).collect();
            items.sort_by_key(Value::to_string);
            items.dedup();
            if items.len() == 1 {
                items.remove(0)
            } else {
                Value::Array(items)
            }
        }
        other => other.clone(),
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    match policy.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The desired statements that the actual policy lacks (or has changed). Shared with the
/// archive bucket's policy (`s3_settings`).
pub(super) fn missing_statements(actual: &Value, desired: &Value) -> Vec<Value> {
    let have: Vec<Value> = statements(actual).iter().map(normalize).collect();
    statements(desired)
        .into_iter()
        .filter(|s| !have.contains(&normalize(s)))
        .collect()
}

/// Our statements put back, replacing any with the same Sid; statements a user added are kept.
pub(super) fn merged_policy(actual: &Value, desired: &Value) -> Value {
    let ours = statements(desired);
    let sids: BTreeSet<&str> = ours.iter().filter_map(|s| s.get("Sid")?.as_str()).collect();
    let mut kept: Vec<Value> = statements(actual)
        .into_iter()
        .filter(|s| {
            s.get("Sid")
                .and_then(Value::as_str)
                .is_none_or(|sid| !sids.contains(sid))
        })
        .collect();
    kept.extend(ours);
    json!({
        "Version": desired.get("Version").cloned().unwrap_or_else(|| json!("2012-10-17")),
        "Statement": kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_index_tells_another_owners_key_from_ours_and_from_an_unread_one() {
        let index = KeyTagIndex::default();
        let owner = Owner {
            cluster: "c".into(),
            pipeline: "ns/p".into(),
        };
        let tags =
            |pairs: &[(&str, &str)]| -> Tags { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        index.put(
            "ours",
            &tags(&[(TAG_CLUSTER, "c"), (TAG_PIPELINE, "ns/p"), ("team", "a")]),
        );
        index.put(
            "same-name-other-cluster",
            &tags(&[(TAG_CLUSTER, "d"), (TAG_PIPELINE, "ns/p")]),
        );
        index.put("other-pipeline", &tags(&[(TAG_CLUSTER, "c"), (TAG_PIPELINE, "ns/q")]));
        index.put("untagged", &tags(&[]));
        index.put("no-cluster-tag", &tags(&[(TAG_PIPELINE, "ns/p")]));
        assert!(!index.owned_by_another("ours", &owner));
        assert!(!index.owned_by_another("never-read", &owner), "an unread key is read");
        for other in [
            "same-name-other-cluster",
            "other-pipeline",
            "untagged",
            "no-cluster-tag",
        ] {
            assert!(index.owned_by_another(other, &owner), "{other}");
        }
        index.forget("other-pipeline");
        assert!(!index.owned_by_another("other-pipeline", &owner));
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn policy_comparison_ignores_order_and_single_element_arrays() {
        let desired = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": ["kms:*"], "Resource": "*"},
            {"Sid": "CloudWatchLogs", "Effect": "Allow", "Action": ["kms:Encrypt*", "kms:Decrypt*"], "Resource": "*"},
        ]});
        let reformatted = json!({"Statement": [
            {"Resource": "*", "Action": ["kms:Decrypt*", "kms:Encrypt*"], "Effect": "Allow", "Sid": "CloudWatchLogs"},
            {"Action": "kms:*", "Sid": "A", "Resource": "*", "Effect": "Allow"},
        ], "Version": "2012-10-17"});
        assert!(missing_statements(&reformatted, &desired).is_empty());
        let lost = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {"Sid": "User", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
        ]});
        let missing = missing_statements(&lost, &desired);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0]["Sid"], "CloudWatchLogs");
        let merged = merged_policy(&lost, &desired);
        assert!(missing_statements(&merged, &desired).is_empty());
        let sids: Vec<String> = statements(&merged)
            .iter()
            .filter_map(|s| s["Sid"].as_str().map(String::from))
            .collect();
        assert_eq!(sids, ["User", "A", "CloudWatchLogs"], "a user's statement is kept");
    }
}
