//! A stateful in-process Kubernetes API server, so tests can run the real kube-runtime
//! controllers (watchers, reflectors, SSA, finalizers) against it through a real `kube::Client`.
//!
//! Objects are untyped JSON keyed by (apiVersion, plural, namespace or "", name). One global
//! resourceVersion counter orders every change; a bounded change history serves watches, so a
//! watch resuming from an older version replays what it missed, or gets 410 Gone once compacted.
//! Deliberate simplifications: SSA and strategic merge are plain JSON merge patches (lists are
//! replaced, no field ownership), dryRun only on PATCH, no admission, no defaulting.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

mod wire;
use wire::{
    Selector, Target, carry, check_rv, finalizers, json_patch, key, kind_of, merge_patch, meta_mut, now, owner_uids,
    parse_patch, parse_path, parse_query, record_manager, set_or_remove, spec,
};

/// The response body handed to `kube::Client::new`; watches stream through it.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// (apiVersion, plural, namespace or "" when cluster-scoped, name)
type Key = (String, String, String, String);

/// Changes kept for resuming watches; older resumes get 410 like a compacted etcd.
const HISTORY: usize = 10_000;

/// Kinds whose main resource ignores `.status` and whose spec changes bump generation.
const STATUS_SUBRESOURCE: &[&str] = &[
    "daemonsets",
    "deployments",
    "mlobservabilitypipelines",
    "gputelemetrypolicies",
    "nodes",
    "pods",
];

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// One request as the fake received it; `body` is the parsed JSON (Null when empty/unparsable).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

impl RecordedRequest {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

#[derive(Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    api_version: String,
    plural: String,
    prev: Option<Value>,
    obj: Value,
}

struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    times: usize,
}

/// Requests held until released (see [`ApiFake::stall`]).
struct Stall {
    method: String,
    path_contains: String,
    released: watch::Receiver<bool>,
}

/// Releases the requests a [`ApiFake::stall`] holds, when released or dropped.
pub struct Stalled(watch::Sender<bool>);

impl Stalled {
    pub fn release(&self) {
        self.0.send_replace(true);
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uids: u64,
    names: u64,
    history: VecDeque<Change>,
    /// Changes with rv <= compacted are no longer in `history`.
    compacted: u64,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    stalls: Vec<Stall>,
    /// Requests a stall holds now.
    held: usize,
    unavailable: bool,
    /// Bodies of recorded requests are dropped when set (the scale bench measures memory).
    drop_bodies: bool,
}

/// The fake API server. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ApiFake {
    state: Arc<Mutex<State>>,
    /// Carries the global resourceVersion; watch streams and `wait_until` sleep on it.
    tick: Arc<watch::Sender<u64>>,
}

impl Default for ApiFake {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

fn err(code: u16, message: impl Into<String>) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    ApiError {
        code,
        reason,
        message: message.into(),
    }
}

fn status_json(e: &ApiError) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": e.message, "reason": e.reason, "code": e.code})
}

type Res = Result<(u16, Value), ApiError>;

impl ApiFake {
    pub fn new() -> Self {
        ApiFake {
            state: Arc::default(),
            tick: Arc::new(watch::channel(0).0),
        }
    }

    /// A client whose every request is served by this fake (default namespace "default").
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not turn every later request into a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state, then wakes watchers if the resourceVersion moved.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, rv) = {
            let mut st = self.lock();
            let r = f(&mut st);
            (r, st.rv)
        };
        self.tick.send_if_modified(|v| std::mem::replace(v, rv) != rv);
        r
    }

    // ---- test helpers -------------------------------------------------------------------------

    pub fn object(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&key(api_version, plural, ns.unwrap_or(""), name))
            .cloned()
    }

    /// Every object of a collection, across namespaces, in (namespace, name) order.
    pub fn list(&self, api_version: &str, plural: &str) -> Vec<Value> {
        let st = self.lock();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == api_version && k.1 == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get<K: kube::Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let v = self.object(&K::api_version(&()), &K::plural(&()), ns, name)?;
        serde_json::from_value(v).ok()
    }

    /// Creates or replaces an object behind the controllers' back (status included), stamping
    /// missing uid/timestamps; bumps the resourceVersion and emits a watch event unless unchanged.
    /// `metadata.namespace` picks the key: leave it unset only for cluster-scoped kinds.
    pub fn put_object(&self, api_version: &str, plural: &str, mut value: Value) -> Value {
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        assert!(!name.is_empty(), "put_object needs metadata.name: {value}");
        let ns = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let k = key(api_version, plural, &ns, &name);
        self.with(|st| match st.objects.get(&k).cloned() {
            Some(old) => {
                carry(&old, &mut value, false);
                st.store(&k, value)
            }
            None => {
                let obj = st.stamp_new(&k, value, false);
                st.store(&k, obj)
            }
        })
    }

    pub fn put<K: kube::Resource<DynamicType = ()> + Serialize>(&self, obj: &K) -> Value {
        let v = serde_json::to_value(obj).unwrap_or(Value::Null);
        self.put_object(&K::api_version(&()), &K::plural(&()), v)
    }

    /// Deletes as the API would (finalizers respected, owner GC).
    pub fn delete(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.with(|st| st.delete(&key(api_version, plural, ns.unwrap_or(""), name)))
    }

    /// Removes outright, ignoring finalizers (still emits DELETED and garbage-collects).
    pub fn remove(&self, api_version: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let k = key(api_version, plural, ns.unwrap_or(""), name);
        self.with(|st| {
            let obj = st.objects.get(&k)?.clone();
            Some(st.remove_with(&k, obj))
        })
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forgets the change history, so any watch resuming from an older version gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.compacted = st.rv;
    }

    /// Stops keeping request bodies (method, path and query are still recorded).
    pub fn drop_request_bodies(&self) {
        self.lock().drop_bodies = true;
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Mutating requests received so far, including ones answered with injected faults.
    pub fn writes(&self) -> usize {
        self.lock().requests.iter().filter(|r| r.is_write()).count()
    }

    pub fn writes_excluding_events(&self) -> usize {
        let st = self.lock();
        let is_event = |r: &RecordedRequest| parse_path(&r.path).is_some_and(|t| t.plural == "events");
        st.requests.iter().filter(|r| r.is_write() && !is_event(r)).count()
    }

    /// The next `times` requests whose method matches (`"*"` for any) and whose `path?query`
    /// contains `path_contains` are answered with `status` and a Status body.
    pub fn fail_next(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            status,
            times,
        });
    }

    /// Requests whose method matches (`"*"` for any) and whose `path?query` contains
    /// `path_contains` wait, unanswered, until the returned handle is released or dropped: a
    /// write the API server takes its time over, which a real one cannot be made to do on cue.
    pub fn stall(&self, method: &str, path_contains: &str) -> Stalled {
        let (tx, rx) = watch::channel(false);
        self.lock().stalls.push(Stall {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            released: rx,
        });
        Stalled(tx)
    }

    /// Requests a stall holds now.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Counts a request a stall starts or stops holding, waking `wait_until`.
    fn count_held(&self, by: isize) {
        {
            let mut st = self.lock();
            st.held = st.held.saturating_add_signed(by);
        }
        self.tick.send_modify(|_| {});
    }

    /// While unavailable every request gets 503 and open watch streams end, like an apiserver outage.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
        self.tick.send_modify(|_| {});
    }

    /// Waits until `pred` holds, re-checking after every change; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&ApiFake) -> bool) -> bool {
        let mut rx = self.tick.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if pred(self) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    // ---- request handling ---------------------------------------------------------------------

    fn handle(&self, method: Method, uri: &http::Uri, content_type: Option<String>, body: Bytes) -> Response<FakeBody> {
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or_default().to_string();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        {
            let mut st = self.lock();
            let recorded_body = if st.drop_bodies { Value::Null } else { parsed.clone() };
            st.requests.push(RecordedRequest {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
                body: recorded_body,
            });
            if st.unavailable {
                return respond(Err(err(503, "the fake apiserver is unavailable")));
            }
            if let Some(code) = st.take_fault(method.as_str(), &format!("{path}?{query}")) {
                return respond(Err(err(code, format!("injected fault on {method} {path}"))));
            }
        }
        let Some(t) = parse_path(&path) else {
            return respond(Err(err(
                404,
                format!("the server could not find the requested resource {path}"),
            )));
        };
        let params = parse_query(&query);
        let sel = match Selector::new(&t, &params) {
            Ok(s) => s,
            Err(e) => return respond(Err(e)),
        };
        let res = match (&method, &t.name) {
            (&Method::GET, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                return self.watch(sel, &params);
            }
            (&Method::GET, None) => Ok(self.with(|st| st.list(&t, &sel))),
            (&Method::GET, Some(_)) => self.with(|st| st.get(&t)),
            (&Method::POST, None) => self.with(|st| st.create(&t, parsed)),
            (&Method::PUT, Some(_)) => self.with(|st| st.replace(&t, parsed)),
            (&Method::PATCH, Some(_)) => {
                let ct = content_type.unwrap_or_default();
                let patch = parse_patch(&ct, &body);
                let manager = params.get("fieldManager").cloned();
                let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
                patch.and_then(|p| self.with(|st| st.patch(&t, &ct, p, manager, dry_run)))
            }
            (&Method::DELETE, Some(_)) => self.with(|st| st.delete_req(&t, &parsed)),
            _ => Err(err(405, format!("{method} is not supported on {path}"))),
        };
        respond(res)
    }

    fn watch(&self, sel: Selector, params: &BTreeMap<String, String>) -> Response<FakeBody> {
        let mut rx = self.tick.subscribe();
        rx.borrow_and_update();
        let from = params.get("resourceVersion").map(|v| v.parse::<u64>()).transpose();
        let Ok(from) = from else {
            return respond(Err(err(400, "invalid resourceVersion")));
        };
        let deadline = params
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let (pending, cursor) = {
            let st = self.lock();
            match from {
                // No (or "0") version means "current state first": synthetic ADDED for everything.
                None | Some(0) => {
                    let lines: Vec<u8> = st
                        .objects
                        .iter()
                        .filter(|(k, v)| sel.collection(&k.0, &k.1, v) && sel.matches(v))
                        .flat_map(|(_, v)| line("ADDED", v))
                        .collect();
                    ((!lines.is_empty()).then(|| Bytes::from(lines)), st.rv)
                }
                Some(n) => (None, n),
            }
        };
        let w = Watch {
            fake: self.clone(),
            rx,
            cursor,
            sel,
            deadline,
            pending,
            done: false,
        };
        let stream = futures::stream::unfold(w, Watch::next).flat_map(|b| BodyStream::new(Full::new(b)));
        let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        res
    }
}

struct Watch {
    fake: ApiFake,
    rx: watch::Receiver<u64>,
    cursor: u64,
    sel: Selector,
    deadline: Option<tokio::time::Instant>,
    pending: Option<Bytes>,
    done: bool,
}

impl Watch {
    async fn next(mut self) -> Option<(Bytes, Self)> {
        if let Some(b) = self.pending.take() {
            return Some((b, self));
        }
        if self.done {
            return None;
        }
        loop {
            // Mark the current tick seen *before* reading state, so a change landing after the
            // read always wakes `changed()` below.
            self.rx.borrow_and_update();
            let ready = {
                let st = self.fake.lock();
                if st.unavailable {
                    return None;
                }
                if self.cursor < st.compacted {
                    self.done = true;
                    let gone = err(
                        410,
                        format!("too old resource version: {} ({})", self.cursor, st.compacted),
                    );
                    Some(line("ERROR", &status_json(&gone)))
                } else {
                    let start = st.history.partition_point(|c| c.rv <= self.cursor);
                    let out: Vec<u8> = st
                        .history
                        .range(start..)
                        .filter_map(|c| self.sel.event(c))
                        .flat_map(|(kind, obj)| line(kind, obj))
                        .collect();
                    self.cursor = self.cursor.max(st.rv);
                    (!out.is_empty()).then_some(out)
                }
            };
            if let Some(out) = ready {
                return Some((Bytes::from(out), self));
            }
            // timeoutSeconds ends the stream cleanly, as the apiserver does; the watcher resumes.
            let changed = self.rx.changed();
            let woke = match self.deadline {
                Some(d) => matches!(tokio::time::timeout_at(d, changed).await, Ok(Ok(()))),
                None => changed.await.is_ok(),
            };
            if !woke {
                return None;
            }
        }
    }
}

fn line(kind: &str, obj: &Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    v
}

fn respond(res: Res) -> Response<FakeBody> {
    let (code, body) = res.unwrap_or_else(|e| (e.code, status_json(&e)));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl tower::Service<Request<kube::client::Body>> for ApiFake {
    type Response = Response<FakeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let fake = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
            let body = body.collect_bytes().await.unwrap_or_default();
            let target = format!("{}?{}", parts.uri.path(), parts.uri.query().unwrap_or_default());
            let holds: Vec<watch::Receiver<bool>> = (fake.lock().stalls.iter())
                .filter(|s| (s.method == "*" || s.method == parts.method.as_str()) && target.contains(&s.path_contains))
                .map(|s| s.released.clone())
                .collect();
            for mut released in holds {
                fake.count_held(1);
                // A dropped handle (Err) releases too.
                let _ = released.wait_for(|r| *r).await;
                fake.count_held(-1);
            }
            Ok(fake.handle(parts.method, &parts.uri, content_type, body))
        })
    }
}

// ---- state transitions ------------------------------------------------------------------------

impl State {
    fn take_fault(&mut self, method: &str, target: &str) -> Option<u16> {
        let i = self.faults.iter().position(|f| {
            f.times > 0
                && (f.method == "*" || f.method.eq_ignore_ascii_case(method))
                && target.contains(&f.path_contains)
        })?;
        let f = &mut self.faults[i];
        f.times -= 1;
        let code = f.status;
        if f.times == 0 {
            self.faults.remove(i);
        }
        Some(code)
    }

    fn emit(&mut self, kind: &'static str, k: &Key, prev: Option<Value>, obj: Value) {
        let (api_version, plural) = (k.0.clone(), k.1.clone());
        self.history.push_back(Change {
            rv: self.rv,
            kind,
            api_version,
            plural,
            prev,
            obj,
        });
        while self.history.len() > HISTORY {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
    }

    /// Fills in what the apiserver assigns on creation; `api` overwrites client-sent values.
    fn stamp_new(&mut self, k: &Key, mut obj: Value, api: bool) -> Value {
        if !obj.is_object() {
            obj = json!({});
        }
        if api || obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(k.0);
        }
        if obj.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
            obj["kind"] = json!(kind_of(&k.1));
        }
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", self.uids);
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(k.3));
        if k.2.is_empty() {
            m.remove("namespace");
        } else {
            m.insert("namespace".into(), json!(k.2));
        }
        m.remove("resourceVersion");
        for (field, value) in [
            ("uid", json!(uid)),
            ("creationTimestamp", json!(now())),
            ("generation", json!(1)),
        ] {
            if api || m.get(field).is_none_or(Value::is_null) {
                m.insert(field.into(), value);
            }
        }
        if api {
            m.remove("deletionTimestamp");
        }
        obj
    }

    /// Writes `new` at `k`: a no-op when unchanged (no rv bump, no event), otherwise bumps the
    /// resourceVersion (and generation on spec changes) and emits; a terminating object whose
    /// last finalizer is gone is removed instead.
    fn store(&mut self, k: &Key, mut new: Value) -> Value {
        let old = self.objects.get(k).cloned();
        if let Some(old) = &old {
            if &new == old {
                return new;
            }
            if STATUS_SUBRESOURCE.contains(&k.1.as_str()) && spec(old) != spec(&new) {
                let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
            }
        }
        let terminating = new.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        if terminating && finalizers(&new).is_empty() {
            return self.remove_with(k, new);
        }
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects.insert(k.clone(), new.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(kind, k, old, new.clone());
        new
    }

    fn remove_with(&mut self, k: &Key, mut obj: Value) -> Value {
        let prev = self.objects.remove(k);
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.emit("DELETED", k, prev, obj.clone());
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.collect_garbage(uid);
        }
        obj
    }

    /// Background cascading deletion: dependents go once none of their owners exist any more.
    fn collect_garbage(&mut self, uid: &str) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, v)| owner_uids(v).contains(&uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            let Some(v) = self.objects.get(&k) else { continue };
            let owned_elsewhere = owner_uids(v).iter().any(|u| *u != uid && self.uid_exists(u));
            if !owned_elsewhere {
                self.delete(&k);
            }
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|v| v.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
    }

    fn delete(&mut self, k: &Key) -> Option<Value> {
        let obj = self.objects.get(k)?.clone();
        if finalizers(&obj).is_empty() {
            return Some(self.remove_with(k, obj));
        }
        if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Some(obj);
        }
        let mut new = obj;
        meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now()));
        Some(self.store(k, new))
    }

    fn get(&self, t: &Target) -> Res {
        let obj = self.objects.get(&t.key()).ok_or_else(|| t.not_found())?;
        match t.sub.as_deref() {
            None | Some("status") => Ok((200, obj.clone())),
            Some(s) => Err(err(404, format!("subresource {s} not supported"))),
        }
    }

    fn list(&self, t: &Target, sel: &Selector) -> (u16, Value) {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, v)| sel.collection(&k.0, &k.1, v) && sel.matches(v))
            .map(|(_, v)| v.clone())
            .collect();
        let kind = items
            .first()
            .and_then(|v| v["kind"].as_str())
            .map_or_else(|| kind_of(&t.plural), String::from);
        let list = json!({"kind": format!("{kind}List"), "apiVersion": t.api_version,
                          "metadata": {"resourceVersion": self.rv.to_string()}, "items": items});
        (200, list)
    }

    fn create(&mut self, t: &Target, body: Value) -> Res {
        if t.sub.is_some() {
            return Err(err(404, "create on a subresource is not supported"));
        }
        if !body.is_object() {
            return Err(err(400, "the request body must be a JSON object"));
        }
        let name = match body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match body.pointer("/metadata/generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", self.next_suffix()),
                None => return Err(err(422, "name or generateName is required")),
            },
        };
        let t = Target {
            name: Some(name),
            ..t.clone()
        };
        self.create_named(&t, body)
    }

    fn create_named(&mut self, t: &Target, mut body: Value) -> Res {
        let body_ns = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !body_ns.is_empty() && t.ns.as_deref().is_some_and(|ns| ns != body_ns) {
            return Err(err(
                400,
                "the namespace of the object does not match the namespace on the request",
            ));
        }
        let k = t.key();
        if self.objects.contains_key(&k) {
            let mut e = err(409, format!("{} \"{}\" already exists", t.plural, k.3));
            e.reason = "AlreadyExists";
            return Err(e);
        }
        // Status is ignored on create for kinds with a status subresource (nodes and pods keep
        // it so tests can create realistic ones through the API).
        if STATUS_SUBRESOURCE.contains(&t.plural.as_str()) && !matches!(t.plural.as_str(), "nodes" | "pods") {
            set_or_remove(&mut body, "status", None);
        }
        let obj = self.stamp_new(&k, body, true);
        Ok((201, self.store(&k, obj)))
    }

    fn next_suffix(&mut self) -> String {
        // The apiserver's alphabet, but a counter instead of randomness so names are reproducible.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.names += 1;
        let mut n = self.names;
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % 27) as usize] as char;
                n /= 27;
                c
            })
            .collect()
    }

    fn replace(&mut self, t: &Target, body: Value) -> Res {
        let k = t.key();
        let old = self.objects.get(&k).cloned().ok_or_else(|| t.not_found())?;
        if !body.is_object() {
            return Err(err(400, "the request body must be a JSON object"));
        }
        check_rv(&old, &body)?;
        let new = self.merge_subresource(t, &old, body)?;
        Ok((200, self.store(&k, new)))
    }

    fn patch(&mut self, t: &Target, ct: &str, patch: Value, manager: Option<String>, dry_run: bool) -> Res {
        let k = t.key();
        let Some(old) = self.objects.get(&k).cloned() else {
            if ct == APPLY && t.sub.is_none() && !dry_run {
                let name = patch.pointer("/metadata/name").and_then(Value::as_str);
                if name.is_some_and(|n| n != k.3) {
                    return Err(err(400, "the name of the object does not match the name on the URL"));
                }
                let mut body = patch;
                record_manager(&mut body, manager, ct, t);
                return self.create_named(t, body);
            }
            return Err(t.not_found());
        };
        let mut patched = old.clone();
        match ct {
            APPLY | MERGE | STRATEGIC => merge_patch(&mut patched, &patch),
            JSON_PATCH => json_patch(&mut patched, &patch).map_err(|m| err(422, m))?,
            _ => return Err(err(415, format!("unsupported patch content type {ct:?}"))),
        }
        check_rv(&old, &patched)?;
        let mut new = self.merge_subresource(t, &old, patched)?;
        record_manager(&mut new, manager, ct, t);
        if dry_run {
            return Ok((200, new));
        }
        Ok((200, self.store(&k, new)))
    }

    /// What a write through `t` may change: only `.status` via /status; everything but
    /// `.status` (for kinds with a status subresource) and server-owned metadata otherwise.
    fn merge_subresource(&self, t: &Target, old: &Value, mut new: Value) -> Result<Value, ApiError> {
        match t.sub.as_deref() {
            Some("status") => {
                let mut n = old.clone();
                set_or_remove(&mut n, "status", new.get("status").cloned());
                Ok(n)
            }
            Some(s) => Err(err(404, format!("subresource {s} not supported"))),
            None => {
                if STATUS_SUBRESOURCE.contains(&t.plural.as_str()) {
                    set_or_remove(&mut new, "status", old.get("status").cloned());
                }
                carry(old, &mut new, true);
                Ok(new)
            }
        }
    }

    fn delete_req(&mut self, t: &Target, opts: &Value) -> Res {
        let k = t.key();
        let obj = self.objects.get(&k).ok_or_else(|| t.not_found())?;
        for (field, pointer) in [
            ("uid", "/metadata/uid"),
            ("resourceVersion", "/metadata/resourceVersion"),
        ] {
            let want = opts.pointer(&format!("/preconditions/{field}")).and_then(Value::as_str);
            if want.is_some_and(|w| obj.pointer(pointer).and_then(Value::as_str) != Some(w)) {
                return Err(err(409, format!("precondition failed on {field}")));
            }
        }
        Ok((200, self.delete(&k).unwrap_or(Value::Null)))
    }
}
