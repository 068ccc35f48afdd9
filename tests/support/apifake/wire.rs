//! Pure helpers for the fake: object-shape accessors, URL paths, query strings, label/field
//! selectors, and the JSON merge (RFC 7386) and JSON patch (RFC 6902) algorithms.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{APPLY, ApiError, Change, Key, err};

pub(super) fn key(api_version: &str, plural: &str, ns: &str, name: &str) -> Key {
    (api_version.into(), plural.into(), ns.into(), name.into())
}

pub(super) fn now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Only used when nothing better is known (an empty list's kind, which kube ignores anyway).
pub(super) fn kind_of(plural: &str) -> String {
    let singular = plural
        .strip_suffix("ies")
        .map_or_else(|| plural.trim_end_matches('s').to_string(), |s| s.to_string() + "y");
    let mut chars = singular.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match &mut obj["metadata"] {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub(super) fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Value::Object(o) = obj {
        match value {
            Some(v) => o.insert(field.into(), v),
            None => o.remove(field),
        };
    }
}

/// Server-owned metadata survives every client write; `client` also pins deletionTimestamp,
/// which only a delete may set (test seeding may set it directly).
pub(super) fn carry(old: &Value, new: &mut Value, client: bool) {
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let m = meta_mut(new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "deletionTimestamp",
    ] {
        if field == "deletionTimestamp" && !client && m.get(field).is_some_and(|v| !v.is_null()) {
            continue;
        }
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
}

/// Everything but metadata and status: what the generation tracks.
pub(super) fn spec(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Value::Object(m) = &mut o {
        for f in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(f);
        }
    }
    o
}

pub(super) fn finalizers(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn owner_uids(obj: &Value) -> Vec<&str> {
    let refs = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    refs.into_iter().flatten().filter_map(|r| r["uid"].as_str()).collect()
}

/// Optimistic concurrency: a resourceVersion in the request must match the stored one.
pub(super) fn check_rv(old: &Value, new: &Value) -> Result<(), ApiError> {
    let want = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let have = old.pointer("/metadata/resourceVersion").and_then(Value::as_str);
    match want {
        Some(w) if Some(w) != have => Err(err(
            409,
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// Notes the field manager once (no timestamp, so repeating an apply stays a no-op).
pub(super) fn record_manager(obj: &mut Value, manager: Option<String>, ct: &str, t: &Target) {
    let Some(manager) = manager else { return };
    let operation = if ct == APPLY { "Apply" } else { "Update" };
    let mut entry = json!({"manager": manager, "operation": operation, "apiVersion": t.api_version,
                           "fieldsType": "FieldsV1"});
    if let Some(sub) = &t.sub {
        entry["subresource"] = json!(sub);
    }
    let m = meta_mut(obj);
    let fields = m.entry("managedFields").or_insert_with(|| json!([]));
    if let Value::Array(a) = fields {
        if !a
            .iter()
            .any(|e| e["manager"] == entry["manager"] && e["operation"] == entry["operation"])
        {
            a.push(entry);
        }
    } else {
        *fields = json!([entry]);
    }
}

pub(super) fn parse_patch(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|e| {
            if ct == APPLY {
                serde_saphyr::from_slice(body).map_err(|e| e.to_string())
            } else {
                Err(e.to_string())
            }
        })
        .map_err(|e| err(400, format!("invalid patch body: {e}")))
}

/// RFC 7386.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902.
pub(super) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("missing path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("missing value for {path}"))
        };
        match op["op"].as_str().unwrap_or_default() {
            "add" => pointer_add(doc, path, value()?)?,
            "remove" => {
                pointer_remove(doc, path)?;
            }
            "replace" => {
                if path.is_empty() {
                    *doc = value()?;
                } else {
                    let v = value()?;
                    let slot = doc
                        .pointer_mut(path)
                        .ok_or_else(|| format!("replace: {path} does not exist"))?;
                    *slot = v;
                }
            }
            "test" => {
                // As the API server's json-patch: an absent member tests equal to null.
                if doc.pointer(path).unwrap_or(&Value::Null) != &value()? {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unsupported JSON patch op {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn pointer_add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = v;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, v);
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| format!("bad index in {path}"))?
            };
            if i > a.len() {
                return Err(format!("index out of range in {path}"));
            }
            a.insert(i, v);
        }
        _ => return Err(format!("add: parent of {path} does not exist")),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let removed = match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last),
        Some(Value::Array(a)) => last.parse::<usize>().ok().filter(|i| *i < a.len()).map(|i| a.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| format!("remove: {path} does not exist"))
}

#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) api_version: String,
    pub(super) plural: String,
    pub(super) ns: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

impl Target {
    pub(super) fn key(&self) -> Key {
        key(
            &self.api_version,
            &self.plural,
            self.ns.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
        )
    }

    pub(super) fn not_found(&self) -> ApiError {
        err(
            404,
            format!("{} \"{}\" not found", self.plural, self.name.as_deref().unwrap_or("")),
        )
    }
}

pub(super) fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s, false))
        .collect();
    let (api_version, rest) = match segs.first()?.as_str() {
        "api" if segs.len() >= 3 => (segs[1].clone(), &segs[2..]),
        "apis" if segs.len() >= 4 => (format!("{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    // `/namespaces/{ns}/status` is the namespace's own subresource, not a collection in it.
    let namespaced = rest[0] == "namespaces" && rest.len() >= 3 && !matches!(rest[2].as_str(), "status" | "finalize");
    let (ns, rest) = if namespaced {
        (Some(rest[1].clone()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        api_version,
        plural: rest[0].clone(),
        ns,
        name: rest.get(1).cloned(),
        sub: rest.get(2).cloned(),
    })
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = || {
            std::str::from_utf8(b.get(i + 1..i + 3)?)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        };
        match b[i] {
            b'%' if hex().is_some() => {
                out.extend(hex());
                i += 3;
                continue;
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_query(q: &str) -> BTreeMap<String, String> {
    let pairs = q.split('&').filter(|p| !p.is_empty());
    pairs
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

#[derive(Clone, Debug)]
pub(super) enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

impl Req {
    /// `get` yields None for keys it does not understand (the term is ignored), else the value.
    fn holds(&self, get: impl Fn(&str) -> Option<Option<String>>) -> bool {
        let has = |k: &str, f: &dyn Fn(Option<&str>) -> bool| get(k).is_none_or(|v| f(v.as_deref()));
        match self {
            Req::Eq(k, v) => has(k, &|x| x == Some(v.as_str())),
            Req::Ne(k, v) => has(k, &|x| x != Some(v.as_str())),
            Req::Exists(k) => has(k, &|x| x.is_some()),
            Req::NotExists(k) => has(k, &|x| x.is_none()),
        }
    }
}

/// Which objects a list/watch/deletecollection request covers.
#[derive(Clone, Debug)]
pub(super) struct Selector {
    api_version: String,
    plural: String,
    ns: Option<String>,
    labels: Vec<Req>,
    /// Only metadata.name, metadata.namespace and status.phase are understood; other field terms
    /// are ignored.
    fields: Vec<Req>,
}

impl Selector {
    pub(super) fn new(t: &Target, params: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let parse = |p: &str| parse_selector(params.get(p).map_or("", String::as_str)).map_err(|e| err(400, e));
        Ok(Selector {
            api_version: t.api_version.clone(),
            plural: t.plural.clone(),
            ns: t.ns.clone(),
            labels: parse("labelSelector")?,
            fields: parse("fieldSelector")?,
        })
    }

    pub(super) fn collection(&self, api_version: &str, plural: &str, obj: &Value) -> bool {
        api_version == self.api_version
            && plural == self.plural
            && self
                .ns
                .as_ref()
                .is_none_or(|ns| obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        let field = |k: &str| match k {
            "metadata.name" | "metadata.namespace" | "status.phase" => Some(
                obj.pointer(&format!("/{}", k.replace('.', "/")))
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        self.labels
            .iter()
            .all(|r| r.holds(|k| Some(label(k).map(String::from))))
            && self
                .fields
                .iter()
                .all(|r| r.holds(|k| field(k).map(|v| Some(v.to_string()))))
    }

    /// How a change looks to this watch: objects moving into / out of the selection appear as
    /// ADDED / DELETED, like the apiserver's filtered watches.
    pub(super) fn event<'a>(&self, c: &'a Change) -> Option<(&'static str, &'a Value)> {
        if !self.collection(&c.api_version, &c.plural, &c.obj) {
            return None;
        }
        let now = self.matches(&c.obj);
        if c.kind == "DELETED" {
            return now.then_some(("DELETED", &c.obj));
        }
        let before = c.prev.as_ref().is_some_and(|p| self.matches(p));
        match (before, now) {
            (true, true) => Some((c.kind, &c.obj)),
            (false, true) => Some(("ADDED", &c.obj)),
            (true, false) => Some(("DELETED", &c.obj)),
            (false, false) => None,
        }
    }
}

fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let terms = s.split(',').map(str::trim).filter(|t| !t.is_empty());
    terms
        .map(|term| {
            Ok(if let Some((k, v)) = term.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if !term.contains(|c: char| c.is_whitespace() || c == '(') {
                Req::Exists(term.into())
            } else {
                // Set-based terms (`in`, `notin`) are not modelled: fail loudly rather than match wrongly.
                return Err(format!("unsupported selector term {term:?}"));
            })
        })
        .collect()
}
