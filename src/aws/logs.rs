//! CloudWatch log groups: observed in pages of 50, created with their KMS key, class and tags in
//! one call, reconciled (key, retention, tags) and retained or deleted with the pipeline.
//!
//! A group is always created encrypted: were it created first and encrypted later, the collector
//! (or the exporter, which creates missing groups itself) could write unencrypted events between.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use aws_sdk_cloudwatchlogs::types::LogGroupClass as SdkClass;

use super::error::{self, classify};
use super::{AwsClients, AwsError, Drift, Owner};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::{KmsRef, LogGroupPlan};

/// DescribeLogGroups returns at most 50 groups per page.
const PAGE: i32 = 50;
const OWN_TAG_PREFIX: &str = "mlobs.io/";

/// A log group as DescribeLogGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedGroup {
    pub name: String,
    /// Without the trailing `:*` (the form tagging APIs take).
    pub arn: String,
    pub kms_key_id: Option<String>,
    /// `None`: never expire.
    pub retention_days: Option<i32>,
    pub class: Option<String>,
    /// When the group was created (ms since the epoch): a group deleted and created again under
    /// the same name is another group, whose tags are read afresh.
    pub created_ms: Option<i64>,
}

type Tags = BTreeMap<String, String>;

/// The tags of log groups as this process last read them, for resyncs whose slower checks are
/// not due: DescribeLogGroups reports no tags, and a ListTagsForResource per group per resync
/// would be two reads per pipeline. mlobs's own TagResource forgets the group here.
///
/// A group is kept as a digest of the tags it carried of those its plan wants (key and value, in
/// key order), not as its tags: all a resync asks is whether every wanted tag was in place. A
/// group's tags took about 1 KiB (a map node and its strings), about 1.5 MiB of the heap's peak
/// at 1,000 pipelines (heaptrack); an entry here is its ARN and 16 bytes. When the plan's tags
/// change, the digest no longer matches and the tags are read again. Two tag sets with one
/// digest would hide a lost tag until the slower checks read the tags.
#[derive(Debug, Clone, Default)]
pub struct GroupTagIndex(std::sync::Arc<std::sync::Mutex<TagsByArn>>);

/// ARN → (creation time, digest of the wanted tags the group carried).
type TagsByArn = HashMap<Box<str>, (Option<i64>, u64)>;

/// The digest [`GroupTagIndex`] keeps: of `pairs`, in the order given.
fn tags_digest<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for kv in pairs {
        kv.hash(&mut h);
    }
    h.finish()
}

impl GroupTagIndex {
    fn with<R>(&self, f: impl FnOnce(&mut TagsByArn) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the group carried every tag of `wanted`, with its value, when its tags were last
    /// read (or given by CreateLogGroup). An entry mlobs wrote at CreateLogGroup has no creation
    /// time yet: the first listing that shows the group supplies it.
    pub fn shows(&self, g: &ObservedGroup, wanted: &Tags) -> bool {
        let want = tags_digest(wanted.iter());
        self.with(|m| {
            let Some((at, seen)) = m.get_mut(g.arn.as_str()) else {
                return false;
            };
            if at.is_none() {
                *at = g.created_ms;
            }
            *at == g.created_ms && *seen == want
        })
    }

    /// The tags CreateLogGroup gave a group mlobs just created.
    pub fn created(&self, arn: &str, tags: &Tags) {
        self.with(|m| m.insert(arn.into(), (None, tags_digest(tags.iter()))));
    }

    /// The tags read of a group: kept as those of `wanted` it carries.
    pub fn put(&self, g: &ObservedGroup, wanted: &Tags, tags: &Tags) {
        let seen = tags_digest(wanted.keys().filter_map(|k| tags.get_key_value(k)));
        self.with(|m| m.insert(g.arn.as_str().into(), (g.created_ms, seen)));
    }

    fn forget(&self, arn: &str) {
        self.with(|m| m.remove(arn));
    }
}

/// Every group whose name starts with `prefix`, keyed by name: one call per 50 groups.
///
/// The map is built at once from the whole listing: a map filled by inserts in key order keeps its
/// nodes about half full, one built from the sorted listing fills them (the listing is held for a
/// resync period, shared by every pipeline under the prefix).
pub async fn observe_many(c: &AwsClients, prefix: &str) -> Result<BTreeMap<String, ObservedGroup>, AwsError> {
    let mut groups = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .logs
            .describe_log_groups()
            .log_group_name_prefix(prefix)
            .limit(PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("DescribeLogGroups", &resource(prefix), e))?;
        for g in out.log_groups() {
            let Some(name) = g.log_group_name() else { continue };
            // `arn` ends in `:*`; `logGroupArn` is the bare ARN, but older responses lack it.
            let Some(arn) = g
                .log_group_arn()
                .or_else(|| g.arn().map(|a| a.strip_suffix(":*").unwrap_or(a)))
            else {
                continue;
            };
            groups.push((
                name.to_string(),
                ObservedGroup {
                    name: name.to_string(),
                    arn: arn.to_string(),
                    kms_key_id: g.kms_key_id().map(String::from),
                    retention_days: g.retention_in_days(),
                    class: g.log_group_class().map(|c| c.as_str().to_string()),
                    created_ms: g.creation_time(),
                },
            ));
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            // Later duplicates win, as inserts did.
            _ => return Ok(groups.into_iter().collect()),
        }
    }
}

/// Streams read per group for its newest event. The order (`LastEventTime`) follows
/// `lastEventTimestamp`, which AWS updates eventually (it can lag ingestion by minutes), so the
/// stream that received the newest event may not rank first: the few first streams are read in the
/// same call (one call whatever the limit; the quota counts calls) and the newest of them is taken.
const NEWEST_STREAMS: i32 = 5;

/// When the newest event of `group` reached CloudWatch (ms since the epoch), or `None` when the
/// group has no event (no stream, or streams without events). One DescribeLogStreams call per
/// group: AWS has no call that reads the streams of several groups at once (DescribeLogStreams
/// names one group; FilterLogEvents and Logs Insights scan event data and cost far more).
pub async fn newest_event_ms(c: &AwsClients, group: &str) -> Result<Option<i64>, AwsError> {
    let out = c
        .logs
        .describe_log_streams()
        .log_group_name(group)
        .order_by(aws_sdk_cloudwatchlogs::types::OrderBy::LastEventTime)
        .descending(true)
        .limit(NEWEST_STREAMS)
        .send()
        .await
        .map_err(|e| classify("DescribeLogStreams", &resource(group), e))?;
    Ok(out
        .log_streams()
        .iter()
        .filter_map(|s| newest_of(s.last_event_timestamp(), s.last_ingestion_time()))
        .max())
}

/// The newest of a stream's `lastEventTimestamp` (eventually updated) and `lastIngestionTime`
/// (prompt). An event cannot be ingested before it happened, so with honest clocks that is the
/// ingestion time; an event timestamp after it means the sending node's clock is ahead (CloudWatch
/// accepts events up to 2 h in the future) and must not make a stopped collector look alive.
/// So: the ingestion time when AWS reports one, else the event time.
pub fn newest_of(last_event: Option<i64>, last_ingestion: Option<i64>) -> Option<i64> {
    last_ingestion.or(last_event)
}

/// The key a group should have: the applied key, else the plan's existing key ARN.
fn desired_key<'a>(plan: &'a LogGroupPlan, key_arn: Option<&'a str>) -> Option<&'a str> {
    match &plan.kms_key {
        None => None,
        Some(KmsRef::Existing { arn }) => Some(key_arn.unwrap_or(arn)),
        Some(KmsRef::Created { .. }) => key_arn,
    }
}

/// `arn:...:key/<id>` and `<id>` name the same key.
fn key_id_part(k: &str) -> &str {
    k.rsplit_once(":key/").map_or(k, |(_, id)| id)
}

/// Where the group differs from the plan (all `corrected: false`). A group with a key while the
/// plan has none is not drift: mlobs never removes encryption.
pub fn diff(plan: &LogGroupPlan, observed: &ObservedGroup, key_arn: Option<&str>) -> Vec<Drift> {
    let res = resource(&plan.name);
    let drift = |field: &str, desired: String, actual: String| Drift::found(&res, field, desired, actual);
    let mut out = Vec::new();
    if let Some(want) = desired_key(plan, key_arn)
        && observed.kms_key_id.as_deref().map(key_id_part) != Some(key_id_part(want))
    {
        let actual = observed.kms_key_id.clone().unwrap_or_else(|| "none".into());
        out.push(drift("kmsKeyId", want.into(), actual));
    }
    if observed.retention_days != Some(plan.retention_days) {
        let actual = observed
            .retention_days
            .map_or_else(|| "never expire".into(), |d| d.to_string());
        out.push(drift("retentionInDays", plan.retention_days.to_string(), actual));
    }
    // The class is fixed at creation: reported, never corrected.
    if let Some(class) = &observed.class
        && class != plan.class.as_str()
    {
        out.push(drift("logGroupClass", plan.class.as_str().into(), class.clone()));
    }
    out
}

/// Ensures every group; returns their ARNs in plan order. Ownership of every existing group is
/// checked before anything changes, so a NameConflict leaves all groups untouched.
pub async fn ensure(
    c: &AwsClients,
    groups: &[LogGroupPlan],
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
) -> Result<(Vec<String>, Vec<Drift>), AwsError> {
    ensure_with(c, groups, key_arn, owner, adopt, drift, None, false).await
}

/// [`ensure`], reading the groups from `snapshot` (one `observe_many` shared by many pipelines in
/// a resync) when it holds all of them; any group missing from it is described afresh. With
/// `cached_tags` (the slower checks are not due), a group's tags are taken from this process's
/// last read of them ([`GroupTagIndex`]) when there is one.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_with(
    c: &AwsClients,
    groups: &[LogGroupPlan],
    key_arn: Option<&str>,
    owner: &Owner,
    adopt: bool,
    drift: DriftPolicy,
    snapshot: Option<&BTreeMap<String, ObservedGroup>>,
    cached_tags: bool,
) -> Result<(Vec<String>, Vec<Drift>), AwsError> {
    for g in groups {
        if matches!(g.kms_key, Some(KmsRef::Created { .. })) && key_arn.is_none() {
            // Creating it without the key would leave it unencrypted until a later AssociateKmsKey.
            return Err(AwsError::Terminal {
                operation: "CreateLogGroup".into(),
                resource: resource(&g.name),
                code: "KmsKeyNotReady".into(),
                message: "the pipeline's KMS key is not known yet".into(),
            });
        }
    }
    let observed = match snapshot {
        Some(snap) if groups.iter().all(|g| snap.contains_key(&g.name)) => groups
            .iter()
            .filter_map(|g| snap.get(&g.name).map(|o| (g.name.clone(), o.clone())))
            .collect(),
        _ => observe(c, groups).await?,
    };
    let mut tags_of = BTreeMap::new();
    for g in groups {
        if let Some(o) = observed.get(&g.name) {
            // As last read, every wanted tag was in place: the wanted tags stand for the group's
            // own (its other tags are not kept, and nothing below reads them).
            let tags = if cached_tags && owner.owns_tags(&g.tags) && c.log_group_tags.shows(o, &g.tags) {
                Cow::Borrowed(&g.tags)
            } else {
                let t = group_tags(c, &o.arn).await?;
                c.log_group_tags.put(o, &g.tags, &t);
                Cow::Owned(t)
            };
            if !owner.owns_tags(&tags) && !adopt {
                return Err(AwsError::NameConflict {
                    resource: resource(&g.name),
                });
            }
            tags_of.insert(g.name.as_str(), tags);
        }
    }

    let correct = drift == DriftPolicy::Correct;
    let mut arns = Vec::with_capacity(groups.len());
    let mut drifts = Vec::new();
    for g in groups {
        let key = desired_key(g, key_arn);
        let (Some(o), Some(tags)) = (observed.get(&g.name), tags_of.get(g.name.as_str())) else {
            create(c, g, key).await?;
            c.log_group_tags.created(&g.arn, &g.tags);
            arns.push(g.arn.clone());
            continue;
        };
        let res = resource(&g.name);
        let missing: HashMap<String, String> = g
            .tags
            .iter()
            .filter(|(k, v)| tags.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let adopting = !owner.owns_tags(tags);
        if !missing.is_empty() {
            // Adoption (opted in) tags the group in every mode; lost tags on our group are drift.
            if adopting || correct {
                c.log_group_tags.forget(&o.arn);
                c.logs
                    .tag_resource()
                    .resource_arn(&o.arn)
                    .set_tags(Some(missing.clone()))
                    .send()
                    .await
                    .map_err(|e| classify("TagResource", &res, e))?;
            }
            if !adopting {
                let mut desired: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={v}")).collect();
                desired.sort();
                let mut actual: Vec<String> = missing
                    .keys()
                    .map(|k| {
                        tags.get(k)
                            .map_or_else(|| format!("{k} absent"), |v| format!("{k}={v}"))
                    })
                    .collect();
                actual.sort();
                drifts.push(Drift {
                    resource: res.clone(),
                    field: "tags".into(),
                    desired: desired.join(", "),
                    actual: actual.join(", "),
                    corrected: correct,
                });
            }
        }
        // mlobs sets a retention right after CreateLogGroup, so our group without one is a
        // create that stopped in between (crash, lost answer, PutRetentionPolicy refused):
        // finishing it is not drift and happens in every drift mode, like a key without its alias.
        let mut o = o.clone();
        if !adopting && o.retention_days.is_none() {
            put_retention(c, g).await?;
            o.retention_days = Some(g.retention_days);
        }
        for mut d in diff(g, &o, key) {
            d.corrected = correct && apply_fix(c, g, &d, key).await?;
            drifts.push(d);
        }
        arns.push(o.arn.clone());
    }
    Ok((arns, drifts))
}

/// Applies the deletion policy to the groups whose tags name this pipeline; others are skipped.
pub async fn delete(
    c: &AwsClients,
    groups: &[LogGroupPlan],
    owner: &Owner,
    policy: DeletionPolicy,
) -> Result<(), AwsError> {
    let observed = observe(c, groups).await?;
    for g in groups {
        let Some(o) = observed.get(&g.name) else { continue };
        let tags = group_tags(c, &o.arn).await?;
        if !owner.owns_tags(&tags) {
            continue;
        }
        let res = resource(&g.name);
        let sent = match policy {
            DeletionPolicy::Retain => {
                let keys: Vec<String> = tags.keys().filter(|k| k.starts_with(OWN_TAG_PREFIX)).cloned().collect();
                error::absent_is_ok(
                    c.logs
                        .untag_resource()
                        .resource_arn(&o.arn)
                        .set_tag_keys(Some(keys))
                        .send()
                        .await,
                    "UntagResource",
                    &res,
                )
            }
            DeletionPolicy::Delete => error::absent_is_ok(
                c.logs.delete_log_group().log_group_name(&g.name).send().await,
                "DeleteLogGroup",
                &res,
            ),
        };
        sent?;
    }
    Ok(())
}

fn resource(name: &str) -> String {
    format!("logGroup:{name}")
}

/// One DescribeLogGroups page set over the groups' common prefix (both default groups of a
/// pipeline share `/aws/eks/<cluster>/<ns>/<name>/`); groups with nothing in common are read
/// one by one rather than listing the whole account.
async fn observe(c: &AwsClients, groups: &[LogGroupPlan]) -> Result<BTreeMap<String, ObservedGroup>, AwsError> {
    let prefix = common_prefix(groups.iter().map(|g| g.name.as_str()));
    if prefix.len() > 1 || groups.len() <= 1 {
        return match groups {
            [] => Ok(BTreeMap::new()),
            _ => observe_many(c, prefix).await,
        };
    }
    let mut all = BTreeMap::new();
    for g in groups {
        all.extend(observe_many(c, &g.name).await?);
    }
    Ok(all)
}

fn common_prefix<'a>(mut names: impl Iterator<Item = &'a str>) -> &'a str {
    let Some(first) = names.next() else { return "" };
    names.fold(first, |acc, n| {
        let len = acc
            .char_indices()
            .zip(n.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8());
        &acc[..len]
    })
}

/// The group's tags; a group deleted since it was listed has none.
async fn group_tags(c: &AwsClients, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    match c.logs.list_tags_for_resource().resource_arn(arn).send().await {
        Ok(out) => Ok(out
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()),
        Err(e) if error::is_absent(&e) => Ok(BTreeMap::new()),
        Err(e) => Err(classify("ListTagsForResource", arn, e)),
    }
}

/// CreateLogGroup with key, class and tags in the one call, then its retention (CreateLogGroup
/// takes none). A crash in between leaves a tagged, encrypted group without retention, which
/// the next ensure finishes in every drift mode (see `ensure_with`).
async fn create(c: &AwsClients, g: &LogGroupPlan, key: Option<&str>) -> Result<(), AwsError> {
    let res = resource(&g.name);
    let tags: HashMap<String, String> = g.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let created = c
        .logs
        .create_log_group()
        .log_group_name(&g.name)
        .set_kms_key_id(key.map(String::from))
        .log_group_class(SdkClass::from(g.class.as_str()))
        .set_tags(Some(tags))
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Created since we looked (another reconcile): the next ensure sees and checks it.
        Err(e) if error::code(&e) == Some("ResourceAlreadyExistsException") => {
            return Err(AwsError::Retryable {
                operation: "CreateLogGroup".into(),
                resource: res,
                code: "ResourceAlreadyExistsException".into(),
                message: "created concurrently; re-observing".into(),
            });
        }
        Err(e) => return Err(classify("CreateLogGroup", &res, e)),
    }
    put_retention(c, g).await
}

async fn put_retention(c: &AwsClients, g: &LogGroupPlan) -> Result<(), AwsError> {
    c.logs
        .put_retention_policy()
        .log_group_name(&g.name)
        .retention_in_days(g.retention_days)
        .send()
        .await
        .map(drop)
        .map_err(|e| classify("PutRetentionPolicy", &resource(&g.name), e))
}

/// Puts one drifted field back; `false` when it cannot be corrected (the class).
async fn apply_fix(c: &AwsClients, g: &LogGroupPlan, d: &Drift, key: Option<&str>) -> Result<bool, AwsError> {
    match (d.field.as_str(), key) {
        ("kmsKeyId", Some(key)) => {
            c.logs
                .associate_kms_key()
                .log_group_name(&g.name)
                .kms_key_id(key)
                .send()
                .await
                .map_err(|e| classify("AssociateKmsKey", &resource(&g.name), e))?;
            Ok(true)
        }
        ("retentionInDays", _) => put_retention(c, g).await.map(|()| true),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    mod tag_index {
        use super::super::{GroupTagIndex, ObservedGroup, Tags};

        fn group(created_ms: Option<i64>) -> ObservedGroup {
            ObservedGroup {
                name: "/aws/eks/c/ns/p/logs".into(),
                arn: "arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/c/ns/p/logs".into(),
                kms_key_id: None,
                retention_days: Some(30),
                class: None,
                created_ms,
            }
        }

        fn tags(pairs: &[(&str, &str)]) -> Tags {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        }

        #[test]
        fn a_read_shows_the_wanted_tags_whatever_else_the_group_carries() {
            let (index, g) = (GroupTagIndex::default(), group(Some(7)));
            let wanted = tags(&[("mlobs.io/cluster", "c"), ("mlobs.io/pipeline", "ns/p"), ("team", "a")]);
            let mut read = wanted.clone();
            read.insert("cost-center".into(), "42".into());
            index.put(&g, &wanted, &read);
            assert!(index.shows(&g, &wanted));
            // The plan wants another tag, or another value: the index cannot tell, so it shows none.
            let mut more = wanted.clone();
            more.insert("cost-center".into(), "42".into());
            assert!(!index.shows(&g, &more), "a tag the plan did not want before");
            more.insert("cost-center".into(), "43".into());
            assert!(!index.shows(&g, &more));
            let fewer = tags(&[("mlobs.io/cluster", "c"), ("mlobs.io/pipeline", "ns/p")]);
            assert!(!index.shows(&g, &fewer), "kept for the tags wanted when it was read");
        }

        #[test]
        fn a_read_missing_or_changing_a_wanted_tag_shows_nothing() {
            let (index, g) = (GroupTagIndex::default(), group(Some(7)));
            let wanted = tags(&[("mlobs.io/cluster", "c"), ("mlobs.io/pipeline", "ns/p"), ("team", "a")]);
            index.put(&g, &wanted, &tags(&[("mlobs.io/pipeline", "ns/p"), ("team", "a")]));
            assert!(!index.shows(&g, &wanted), "a wanted tag was absent");
            index.put(
                &g,
                &wanted,
                &tags(&[("mlobs.io/cluster", "c"), ("mlobs.io/pipeline", "ns/p"), ("team", "b")]),
            );
            assert!(!index.shows(&g, &wanted), "a wanted tag had another value");
            index.forget(&g.arn);
            assert!(!index.shows(&g, &wanted));
        }

        #[test]
        fn a_created_group_is_shown_until_a_group_of_another_creation_time_takes_its_name() {
            let index = GroupTagIndex::default();
            let wanted = tags(&[("mlobs.io/cluster", "c"), ("mlobs.io/pipeline", "ns/p")]);
            index.created(&group(None).arn, &wanted);
            // The first listing supplies the creation time; a group created again does not match it.
            assert!(index.shows(&group(Some(7)), &wanted));
            assert!(index.shows(&group(Some(7)), &wanted));
            assert!(!index.shows(&group(Some(8)), &wanted));
        }
    }

    #[test]
    fn newest_event_is_the_ingestion_time_unless_only_the_event_time_is_known() {
        use super::newest_of;
        assert_eq!(newest_of(Some(1_000), Some(1_500)), Some(1_500));
        // The node's clock is ahead: its event times say nothing about when data last arrived.
        assert_eq!(newest_of(Some(9_000), Some(1_500)), Some(1_500));
        assert_eq!(newest_of(Some(1_000), None), Some(1_000));
        assert_eq!(newest_of(None, Some(2_000)), Some(2_000));
        assert_eq!(newest_of(None, None), None);
    }

    #[test]
    fn common_prefix_of_group_names() {
        let p = common_prefix(["/aws/eks/c/ns/p/logs", "/aws/eks/c/ns/p/metrics"].into_iter());
        assert_eq!(p, "/aws/eks/c/ns/p/");
        assert_eq!(common_prefix(["/a/x"].into_iter()), "/a/x");
        assert_eq!(common_prefix(["a", "b"].into_iter()), "");
        assert_eq!(common_prefix(std::iter::empty()), "");
    }
}
