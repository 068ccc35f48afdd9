//! Applying children by server-side apply, only when the API server would store something else.
//!
//! The comparison is the API server's own: a dry-run server-side apply of the desired object,
//! compared with the live one. Whatever the server defaults or omits (`false` booleans, empty
//! lists, `imagePullPolicy`, ...) is the same on both sides, so it never counts as a change, in
//! any child. Each child carries `mlobs.io/desired-hash` (a hash of what mlobs last asked for): a
//! live child whose hash matches but that the dry run would change was edited by hand — it is put
//! back and reported as drift; a different hash is a spec change, not drift. A child verified at a
//! resourceVersion is not dry-run again until that version or the desired object changes, so a
//! no-op reconcile makes no write, and no read of a child whose kind's metadata cache shows it at
//! that version ([`super::child_stores`]; one GET per child otherwise). The collector DaemonSet
//! is verified by generation and a digest of its labels and annotations instead
//! ([`apply_with_status`]): its status writes change neither.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::child_stores::{self, Cached, ChildStores, metadata_digest};
use super::error::{Error, Result};
use crate::conventions::OWNER_UID_ANNOTATION as OWNER_UID;

/// Field manager of every write mlobs makes.
pub const FIELD_MANAGER: &str = "mlobs";
/// Annotation with the hash of the desired object.
pub const DESIRED_HASH: &str = "mlobs.io/desired-hash";

/// What applying one child did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Live object already as desired: no write made.
    Unchanged,
    Created,
    /// Updated because the desired object changed.
    Updated,
    /// Put back after a hand edit: the first field path that differed.
    Corrected {
        field: String,
        actual: String,
        desired: String,
    },
}

/// Children last seen as desired: a digest of `Kind/ns/name` → what was verified.
///
/// Every entry is digests ([`digest`]): the cache only ever asks whether a child is at the version
/// and desired hash it was verified at, so it keeps no text. An entry is 48 bytes in the map where
/// it was three strings (about 240 bytes, 1.1 MiB of the heap at its peak at 1,000 pipelines:
/// heaptrack, see runs AS and AT in the README). Two keys or versions with one digest could make a
/// changed child look verified until its next change; at 64 bits over some thousands of
/// children that does not happen in practice.
#[derive(Debug, Default)]
pub struct AppliedCache(Mutex<HashMap<u64, Verified>>);

/// A child as this process last verified it against a desired hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    /// [`digest`] of `metadata.resourceVersion` (opaque: only ever compared).
    resource_version: u64,
    /// [`digest`] of the desired hash.
    hash: u64,
    /// `metadata.generation`: the API server bumps it on every spec change, never on a status
    /// write.
    generation: Option<i64>,
    /// [`metadata_digest`] of the labels and annotations.
    metadata: u64,
}

/// The digest the [`AppliedCache`] keeps of a key, a resourceVersion or a hash.
fn digest(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl AppliedCache {
    fn get(&self, key: &str) -> Option<Verified> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&digest(key)).cloned()
    }

    fn verified<K: Resource>(&self, key: &str, live: &K, hash: &str) -> bool {
        let live_rv = live.meta().resource_version.as_deref().map(digest);
        self.get(key)
            .is_some_and(|v| v.hash == digest(hash) && live_rv == Some(v.resource_version))
    }

    /// [`AppliedCache::verified`], or only its status written since: the same generation and the
    /// same labels and annotations (for kinds whose status is a subresource, such as DaemonSets).
    fn verified_but_status<K: Resource>(&self, key: &str, live: &K, hash: &str) -> bool {
        let meta = live.meta();
        self.get(key).is_some_and(|v| {
            v.hash == digest(hash)
                && (meta.resource_version.as_deref().map(digest) == Some(v.resource_version)
                    || (v.generation.is_some()
                        && meta.generation == v.generation
                        && metadata_digest(meta) == v.metadata))
        })
    }

    fn remember<K: Resource>(&self, key: String, obj: &K, hash: &str) {
        let meta = obj.meta();
        if let Some(rv) = meta.resource_version.as_deref() {
            let v = Verified {
                resource_version: digest(rv),
                hash: digest(hash),
                generation: meta.generation,
                metadata: metadata_digest(meta),
            };
            let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
            m.insert(digest(&key), v);
        }
    }

    /// Forgets a child (deleted, or its owner is gone).
    pub fn forget(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&digest(key));
    }
}

/// `Kind/namespace/name` or `Kind/name`, for drift records and events.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    describe_meta::<K>(obj.meta())
}

/// [`describe`] of an object of kind `K` by its metadata.
pub fn describe_meta<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => format!("{}/{}/{}", K::kind(&()), ns, name),
        None => format!("{}/{}", K::kind(&()), name),
    }
}

fn hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The first path where `a` and `b` differ, both ways (a key on one side only is a difference),
/// as (path, value in `a`, value in `b`). `None` = equal.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(xv), Some(yv)) => first_difference(xv, yv, &format!("{path}.{k}")),
                (Some(xv), None) => Some((format!("{path}.{k}"), xv.to_string(), "<absent>".into())),
                (None, Some(yv)) => Some((format!("{path}.{k}"), "<absent>".into(), yv.to_string())),
                (None, None) => None,
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (xv, yv))| first_difference(xv, yv, &format!("{path}[{i}]"))),
        (x, y) if x == y => None,
        (x, y) => Some((path.to_string(), x.to_string(), y.to_string())),
    }
}

/// An object as the API server stores it, without what changes on every write or belongs to
/// the server (resourceVersion, generation, managedFields, status).
fn comparable<K: Serialize>(obj: &K) -> Result<Value> {
    let mut v = serde_json::to_value(obj).map_err(|source| Error::Serialize { kind: "child", source })?;
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["resourceVersion", "generation", "managedFields"] {
                meta.remove(k);
            }
        }
    }
    Ok(v)
}

/// The apply body: `desired` with the hash annotation, apiVersion and kind, without status.
fn apply_body<K>(desired: &K) -> Result<(Value, String)>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut want = serde_json::to_value(desired).map_err(|source| Error::Serialize { kind: "child", source })?;
    let h = hash(&want);
    if let Some(o) = want.as_object_mut() {
        // Status is the API server's, never part of what we ask for.
        o.remove("status");
        o.insert("apiVersion".into(), Value::String(K::api_version(&()).into_owned()));
        o.insert("kind".into(), Value::String(K::kind(&()).into_owned()));
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(ann) = ann.as_object_mut() {
                ann.insert(DESIRED_HASH.into(), Value::String(h.clone()));
            }
        }
    }
    Ok((want, h))
}

/// Applies `desired` unless the API server would store exactly the live object. `api` must be
/// scoped to the child's namespace (or cluster-wide for cluster-scoped kinds).
pub async fn apply<K>(api: &Api<K>, desired: K, cache: &AppliedCache) -> Result<(Applied, K)>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let key = describe(&desired);
    let (body, h) = apply_body(&desired)?;
    apply_body_of(api, &desired.name_any(), key, body, h, cache).await
}

/// [`apply`] for a child whose live object is not needed: when `stores` shows the child at the
/// resourceVersion this process last verified with the same desired hash, it is unchanged
/// without a request (see [`super::child_stores`]).
pub async fn apply_known<K>(api: &Api<K>, desired: K, cache: &AppliedCache, stores: &ChildStores) -> Result<Applied>
where
    K: Cached + Debug + Serialize + DeserializeOwned,
{
    let (p, cached) = prepare(&desired, cache, stores, |c, key, live, h| c.verified(key, live, h))?;
    if cached.is_some() {
        return Ok(Applied::Unchanged);
    }
    Ok(apply_body_of(api, &p.name, p.key, p.body, p.hash, cache).await?.0)
}

/// [`apply`] for a child whose live object the caller reads (the collector DaemonSet, for its
/// status): when `stores` shows it at the generation and metadata this process last verified with
/// the same desired hash, the cached object, status included, is the answer without a request. A
/// status write (pods becoming ready) changes neither; a hand edit of the spec bumps the
/// generation, and one of the labels or annotations changes their digest, so either is read and
/// compared as before.
pub async fn apply_with_status<K>(
    api: &Api<K>,
    desired: K,
    cache: &AppliedCache,
    stores: &ChildStores,
) -> Result<(Applied, K)>
where
    K: Cached<Kept = K> + Debug + Serialize + DeserializeOwned,
{
    let (p, cached) = prepare(&desired, cache, stores, |c, key, live, h| {
        c.verified_but_status(key, live, h)
    })?;
    if let Some(live) = cached {
        return Ok((Applied::Unchanged, live));
    }
    apply_body_of(api, &p.name, p.key, p.body, p.hash, cache).await
}

/// What an apply sends: the child's cache key, name, apply body and desired hash.
struct Prepared {
    key: String,
    name: String,
    body: Value,
    hash: String,
}

/// The apply of `desired`, and its cached copy when `stores` shows it as `verified` says this
/// process last verified it (then no request is needed).
fn prepare<K: Cached + Serialize>(
    desired: &K,
    cache: &AppliedCache,
    stores: &ChildStores,
    verified: impl Fn(&AppliedCache, &str, &K::Kept, &str) -> bool,
) -> Result<(Prepared, Option<K::Kept>)> {
    let key = describe(desired);
    let (body, hash) = apply_body(desired)?;
    let name = desired.name_any();
    let cached = child_stores::ready::<K>(stores)
        .and_then(|store| child_stores::get(store, desired.meta().namespace.as_deref(), &name))
        .filter(|live| verified(cache, &key, live, &hash));
    Ok((Prepared { key, name, body, hash }, cached))
}

async fn apply_body_of<K>(
    api: &Api<K>,
    name: &str,
    key: String,
    body: Value,
    h: String,
    cache: &AppliedCache,
) -> Result<(Applied, K)>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let Some(live) = api.get_opt(name).await? else {
        let created = api.patch(name, &params, &Patch::Apply(&body)).await?;
        cache.remember(key, &created, &h);
        return Ok((Applied::Created, created));
    };
    if cache.verified(&key, &live, &h) {
        return Ok((Applied::Unchanged, live));
    }
    let would = api.patch(name, &params.clone().dry_run(), &Patch::Apply(&body)).await?;
    let Some((field, desired_v, actual)) = first_difference(&comparable(&would)?, &comparable(&live)?, "") else {
        cache.remember(key, &live, &h);
        return Ok((Applied::Unchanged, live));
    };
    let outcome = if live.annotations().get(DESIRED_HASH) == Some(&h) {
        Applied::Corrected {
            field: field.trim_start_matches('.').to_string(),
            actual,
            desired: desired_v,
        }
    } else {
        Applied::Updated
    };
    let applied = api.patch(name, &params, &Patch::Apply(&body)).await?;
    cache.remember(key, &applied, &h);
    Ok((outcome, applied))
}

/// Whose children a prune may delete.
pub struct Owner<'a> {
    /// The owner's uid: an owner reference or the `mlobs.io/owner-uid` annotation must name it.
    pub uid: &'a str,
    /// Only children without an owner reference to `uid` (those the garbage collector cannot
    /// remove): for cleanup at deletion, when the collector ran in another namespace.
    pub only_unowned: bool,
}

impl Owner<'_> {
    fn may_delete(&self, meta: &ObjectMeta) -> bool {
        let by_ref = (meta.owner_references.iter().flatten()).any(|o| o.uid == self.uid);
        let by_annotation = (meta.annotations.as_ref()).and_then(|a| a.get(OWNER_UID)) == Some(&self.uid.to_string());
        (by_ref || by_annotation) && !(self.only_unowned && by_ref) && meta.deletion_timestamp.is_none()
    }
}

/// Deletes, in every namespace, the objects carrying `selector` and mlobs' managed-by label that
/// `owner` may delete and whose `Kind/namespace/name` is not in `keep`. Returns what it deleted
/// (same form). Nothing mlobs did not create, or that another owner owns, is ever deleted. With
/// `stores`, the candidates come from the kind's metadata cache when it is ready; else, and
/// always without, from a LIST.
pub async fn prune_everywhere<K>(
    client: &kube::Client,
    stores: Option<&ChildStores>,
    selector: &str,
    keep: &[String],
    owner: &Owner<'_>,
) -> Result<Vec<String>>
where
    K: Cached<Scope = k8s_openapi::NamespaceResourceScope> + Debug + DeserializeOwned,
{
    let api_of = |ns: Option<&str>| Api::<K>::namespaced(client.clone(), ns.unwrap_or_default());
    prune_listed(&Api::all(client.clone()), stores, selector, keep, owner, api_of).await
}

/// [`prune_everywhere`] for cluster-scoped kinds (ClusterRole, ClusterRoleBinding): they carry the
/// owner annotation, never a guessed name.
pub async fn prune_cluster<K>(
    client: &kube::Client,
    stores: Option<&ChildStores>,
    selector: &str,
    keep: &[String],
    owner: &Owner<'_>,
) -> Result<Vec<String>>
where
    K: Cached<Scope = k8s_openapi::ClusterResourceScope> + Debug + DeserializeOwned,
{
    let api = Api::<K>::all(client.clone());
    prune_listed(&api, stores, selector, keep, owner, |_| api.clone()).await
}

/// Lists with `selector` (from the cache in `stores` or through `list`), deletes each prunable
/// object through `api_of(its namespace)`.
async fn prune_listed<K>(
    list: &Api<K>,
    stores: Option<&ChildStores>,
    selector: &str,
    keep: &[String],
    owner: &Owner<'_>,
    api_of: impl Fn(Option<&str>) -> Api<K>,
) -> Result<Vec<String>>
where
    K: Cached + Debug + DeserializeOwned,
{
    let selector = format!("{selector},{}", crate::conventions::MANAGED_BY_SELECTOR);
    let cached = stores
        .and_then(child_stores::ready::<K>)
        .and_then(|s| child_stores::selected(s, &selector));
    let found: Vec<ObjectMeta> = match cached {
        Some(metas) => metas,
        None => labelled(list, &selector)
            .await?
            .into_iter()
            .map(|o| o.meta().clone())
            .collect(),
    };
    let mut pruned = vec![];
    for meta in found {
        let key = describe_meta::<K>(&meta);
        if keep.contains(&key) || !owner.may_delete(&meta) {
            continue;
        }
        let name = meta.name.as_deref().unwrap_or_default();
        if delete(&api_of(meta.namespace.as_deref()), name).await? {
            pruned.push(key);
        }
    }
    Ok(pruned)
}

async fn labelled<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    Ok(api
        .list(&ListParams::default().labels(selector).match_any())
        .await?
        .items)
}

/// Deletes in the background; `false` when it was already gone.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_applied_cache_keeps_digests_not_text() {
        // An entry of the map: the key's digest and what was verified, with no string behind it.
        assert!(std::mem::size_of::<(u64, Verified)>() <= 48);
        let cache = AppliedCache::default();
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.resource_version = Some("41".into());
        cache.remember("ConfigMap/team/a".into(), &cm, "0123456789abcdef");
        assert!(cache.verified("ConfigMap/team/a", &cm, "0123456789abcdef"));
        assert!(
            !cache.verified("ConfigMap/team/b", &cm, "0123456789abcdef"),
            "another child"
        );
        assert!(
            !cache.verified("ConfigMap/team/a", &cm, "0123456789abcdee"),
            "another hash"
        );
        cache.forget("ConfigMap/team/a");
        assert!(
            !cache.verified("ConfigMap/team/a", &cm, "0123456789abcdef"),
            "forgotten"
        );
    }

    #[test]
    fn a_status_write_keeps_a_child_verified_a_spec_or_label_edit_does_not() {
        let cache = AppliedCache::default();
        let mut ds = k8s_openapi::api::apps::v1::DaemonSet::default();
        ds.metadata.resource_version = Some("1".into());
        ds.metadata.generation = Some(2);
        ds.metadata.labels = Some([("app".to_string(), "c".to_string())].into());
        cache.remember("k".into(), &ds, "h");
        let status_write = {
            let mut d = ds.clone();
            d.metadata.resource_version = Some("2".into());
            d
        };
        assert!(cache.verified_but_status("k", &status_write, "h"));
        assert!(
            !cache.verified("k", &status_write, "h"),
            "the plain check goes by resourceVersion"
        );
        assert!(
            !cache.verified_but_status("k", &status_write, "other"),
            "another desired hash"
        );
        let mut spec_edit = status_write.clone();
        spec_edit.metadata.generation = Some(3);
        assert!(!cache.verified_but_status("k", &spec_edit, "h"));
        let mut label_edit = status_write.clone();
        label_edit.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
        assert!(!cache.verified_but_status("k", &label_edit, "h"));
        let mut no_generation = ds.clone();
        no_generation.metadata.generation = None;
        cache.remember("cm".into(), &no_generation, "h");
        no_generation.metadata.resource_version = Some("2".into());
        assert!(
            !cache.verified_but_status("cm", &no_generation, "h"),
            "without a generation only the resourceVersion counts"
        );
    }

    #[test]
    fn equal_objects_have_no_difference() {
        let v = json!({"spec": {"template": {"containers": [{"name": "c", "image": "a"}]}}});
        assert_eq!(first_difference(&v, &v.clone(), ""), None);
    }

    #[test]
    fn a_changed_value_names_its_path() {
        let desired = json!({"spec": {"template": {"containers": [{"name": "c", "image": "a"}]}}});
        let live = json!({"spec": {"template": {"containers": [{"name": "c", "image": "b"}]}}});
        let (path, want, got) = first_difference(&desired, &live, "").expect("differs");
        assert_eq!(path, ".spec.template.containers[0].image");
        assert_eq!((want.as_str(), got.as_str()), ("\"a\"", "\"b\""));
    }

    #[test]
    fn a_field_on_one_side_only_is_a_difference_both_ways() {
        let would = json!({"data": {"k": "v"}, "list": [1, 2]});
        assert!(first_difference(&would, &json!({"data": {}, "list": [1, 2]}), "").is_some());
        assert!(first_difference(&would, &json!({"data": {"k": "v"}, "list": [1]}), "").is_some());
        let (path, a, b) = first_difference(&json!({"a": 1}), &json!({"a": 1, "extra": true}), "").expect("differs");
        assert_eq!((path.as_str(), a.as_str(), b.as_str()), (".extra", "<absent>", "true"));
    }

    #[test]
    fn server_bookkeeping_is_not_compared() {
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.resource_version = Some("1".into());
        cm.metadata.generation = Some(1);
        let a = comparable(&cm).expect("serializes");
        cm.metadata.resource_version = Some("2".into());
        cm.metadata.generation = Some(2);
        assert_eq!(first_difference(&a, &comparable(&cm).expect("serializes"), ""), None);
    }

    #[test]
    fn the_cache_trusts_a_child_only_at_the_verified_version_and_hash() {
        let cache = AppliedCache::default();
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.resource_version = Some("7".into());
        cache.remember("ConfigMap/ns/x".into(), &cm, "h1");
        assert!(cache.verified("ConfigMap/ns/x", &cm, "h1"));
        assert!(!cache.verified("ConfigMap/ns/x", &cm, "h2"), "desired object changed");
        cm.metadata.resource_version = Some("8".into());
        assert!(!cache.verified("ConfigMap/ns/x", &cm, "h1"), "live object changed");
        cache.forget("ConfigMap/ns/x");
        cm.metadata.resource_version = Some("7".into());
        assert!(!cache.verified("ConfigMap/ns/x", &cm, "h1"));
    }
}
