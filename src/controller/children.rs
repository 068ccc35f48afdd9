//! Applying children by server-side apply, only when they differ from what the API server has.
//!
//! Each child carries `mlobs.io/desired-hash` (a hash of what mlobs last asked for). A live child
//! whose hash matches but whose content no longer contains the desired fields was edited by hand:
//! it is put back and reported as drift. A different hash is a spec change, not drift. A child
//! that already contains every desired field is left alone, so a no-op reconcile writes nothing.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{Error, Result};

/// Field manager of every write mlobs makes.
pub const FIELD_MANAGER: &str = "mlobs";
/// Annotation with the hash of the desired object.
pub const DESIRED_HASH: &str = "mlobs.io/desired-hash";

/// What applying one child did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Live object already as desired: no request made.
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

/// `Kind/namespace/name` or `Kind/name`, for drift records and events.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{}/{}/{}", K::kind(&()), ns, obj.name_any()),
        None => format!("{}/{}", K::kind(&()), obj.name_any()),
    }
}

fn hash(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The first path where `desired` is not contained in `live` (objects: every desired key present
/// and contained; arrays: same length, element-wise contained; scalars: equal). `None` = contained.
pub fn first_difference(desired: &Value, live: &Value, path: &str) -> Option<(String, String, String)> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| match l.get(k) {
            Some(lv) => first_difference(dv, lv, &format!("{path}.{k}")),
            None if dv.is_null() => None,
            None => Some((format!("{path}.{k}"), dv.to_string(), "<absent>".into())),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => d
            .iter()
            .zip(l)
            .enumerate()
            .find_map(|(i, (dv, lv))| first_difference(dv, lv, &format!("{path}[{i}]"))),
        (d, l) if d == l => None,
        (d, l) => Some((path.to_string(), d.to_string(), l.to_string())),
    }
}

/// Applies `desired` unless the live object already contains it. `api` must be scoped to the
/// child's namespace (or cluster-wide for cluster-scoped kinds).
pub async fn apply<K>(api: &Api<K>, desired: K) -> Result<(Applied, K)>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.name_any();
    let mut want = serde_json::to_value(&desired).map_err(|source| Error::Serialize { kind: "child", source })?;
    let h = hash(&want);
    if let Some(meta) = want.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(DESIRED_HASH.into(), Value::String(h.clone()));
        }
    }
    // Status is the API server's, never part of what we ask for.
    if let Some(o) = want.as_object_mut() {
        o.remove("status");
    }
    let live = api.get_opt(&name).await?;
    let outcome = match live {
        None => Applied::Created,
        Some(l) => {
            let live_v = serde_json::to_value(&l).map_err(|source| Error::Serialize { kind: "child", source })?;
            match first_difference(&want, &live_v, "") {
                None => return Ok((Applied::Unchanged, l)),
                Some((field, desired_v, actual)) => {
                    let same_hash = l.annotations().get(DESIRED_HASH) == Some(&h);
                    if same_hash {
                        Applied::Corrected {
                            field: field.trim_start_matches('.').to_string(),
                            actual,
                            desired: desired_v,
                        }
                    } else {
                        Applied::Updated
                    }
                }
            }
        }
    };
    let mut body = want;
    if let Some(o) = body.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(K::api_version(&()).into_owned()));
        o.insert("kind".into(), Value::String(K::kind(&()).into_owned()));
    }
    let applied = api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok((outcome, applied))
}

/// Deletes objects carrying `selector` whose names are not in `keep`, and only those that also
/// say `app.kubernetes.io/managed-by=mlobs` and, when `owner_uid` is given, are owned by it:
/// nothing mlobs did not create is deleted. Cluster-scoped children (no owner reference
/// allowed) pass `None`.
pub async fn prune<K>(api: &Api<K>, selector: &str, keep: &[String], owner_uid: Option<&str>) -> Result<Vec<String>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let selector = format!("{selector},app.kubernetes.io/managed-by=mlobs");
    let mut pruned = vec![];
    for obj in api.list(&ListParams::default().labels(&selector)).await? {
        let name = obj.name_any();
        let owned = owner_uid.is_none_or(|uid| obj.owner_references().iter().any(|o| o.uid == uid));
        if keep.contains(&name) || obj.meta().deletion_timestamp.is_some() || !owned {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => pruned.push(name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_added_by_the_api_server_are_not_a_difference() {
        let desired = json!({"spec": {"template": {"containers": [{"name": "c", "image": "a"}]}}});
        let live = json!({"spec": {"template": {"containers": [{"name": "c", "image": "a", "imagePullPolicy": "IfNotPresent"}]}}, "status": {}});
        assert_eq!(first_difference(&desired, &live, ""), None);
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
    fn a_removed_field_or_list_item_is_a_difference() {
        let desired = json!({"data": {"k": "v"}, "list": [1, 2]});
        assert!(first_difference(&desired, &json!({"data": {}, "list": [1, 2]}), "").is_some());
        assert!(first_difference(&desired, &json!({"data": {"k": "v"}, "list": [1]}), "").is_some());
    }
}
