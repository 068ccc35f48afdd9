//! Kubernetes events (`events.k8s.io/v1`), published as kube's `Recorder` publishes them: a repeat
//! of the same event (same type, action, reason, object and related object) within six minutes
//! becomes a series on the first one (`series.count`, `series.lastObservedTime`), as client-go
//! does. Only the cache differs: per event it keeps what a series needs (the event's name and
//! namespace, its count, when it was last seen), about 100 bytes. kube's `Recorder` keeps the
//! whole event and its key in a map that never shrinks: at 300 pipelines that map alone held
//! 1.5 MB of live heap (heaptrack, bench run of 2026-12-03), and it grows with the pipelines.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a published event takes repeats as its series (kube's and client-go's six minutes).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often the cache drops the events whose window is over.
const GC_EVERY: SignedDuration = SignedDuration::from_secs(30);

/// What a series needs of a published event.
struct Sent {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Cache {
    sent: HashMap<[u8; 16], Sent>,
    swept: Option<Timestamp>,
}

impl Cache {
    /// Drops the events whose series window is over (at most every [`GC_EVERY`]), and gives the
    /// memory back when the map shrank to a quarter of its capacity.
    fn sweep(&mut self, now: Timestamp) {
        if self.swept.is_some_and(|t| now.duration_since(t) < GC_EVERY) {
            return;
        }
        self.swept = Some(now);
        self.sent.retain(|_, s| now.duration_since(s.last) < SERIES_WINDOW);
        if self.sent.len() * 4 < self.sent.capacity() {
            self.sent.shrink_to_fit();
        }
    }
}

/// Publishes events for any object; shared by all reconciles.
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    cache: Mutex<Cache>,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Publisher {
        Publisher {
            client,
            reporter,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Events this publisher would add a repeat to as a series.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).sent.len()
    }

    /// Publishes `ev` about `regarding`: a new event, or the next count of the same event's series
    /// when it was published within six minutes. Cluster-scoped objects get their events in
    /// `default`.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(ev, regarding);
        let repeat = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.sweep(now);
            cache
                .sent
                .get(&key)
                .filter(|s| now.duration_since(s.last) < SERIES_WINDOW)
                .map(|s| (s.name.clone(), s.namespace.clone(), s.count + 1))
        };
        if let Some((name, namespace, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"series": series})),
                )
                .await
            {
                Ok(_) => {
                    self.remember(key, name, namespace, count, now);
                    return Ok(());
                }
                // Gone from the server (its TTL, or deleted): a new event starts a new series.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding, now);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let created = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        let name = created.metadata.name.or(event.metadata.name).unwrap_or_default();
        self.remember(key, name, namespace, 1, now);
        Ok(())
    }

    fn remember(&self, key: [u8; 16], name: String, namespace: String, count: i32, last: Timestamp) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.sent.insert(
            key,
            Sent {
                name,
                namespace,
                count,
                last,
            },
        );
    }

    /// The event as kube's `Recorder` generates it: named after the object and the time.
    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(regarding.namespace.clone().unwrap_or_else(|| "default".into())),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(type_name(ev.type_).into()),
            ..K8sEvent::default()
        }
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events one series: type, action, reason, the object and the related object
/// (kube's and client-go's key; the note is not part of it).
fn key(ev: &Event, regarding: &ObjectReference) -> [u8; 16] {
    let mut h = Sha256::new();
    let mut field = |s: Option<&str>| {
        let s = s.unwrap_or("\u{0}");
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    field(Some(type_name(ev.type_)));
    field(Some(&ev.action));
    field(Some(&ev.reason));
    for r in [Some(regarding), ev.secondary.as_ref()] {
        field(r.and(Some("ref")));
        if let Some(r) = r {
            for f in [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid, &r.field_path] {
                field(f.as_deref());
            }
        }
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("mlobs.io/v1alpha1".into()),
            kind: Some("MLObservabilityPipeline".into()),
            namespace: Some("team-a".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Apply".into(),
            secondary: None,
        }
    }

    #[test]
    fn one_series_per_type_action_reason_and_object_whatever_the_note() {
        let a = reference("a");
        assert_eq!(key(&event("Created", "x"), &a), key(&event("Created", "y"), &a));
        assert_ne!(key(&event("Created", "x"), &a), key(&event("Deleted", "x"), &a));
        assert_ne!(
            key(&event("Created", "x"), &a),
            key(&event("Created", "x"), &reference("b"))
        );
        let mut warning = event("Created", "x");
        warning.type_ = EventType::Warning;
        assert_ne!(key(&event("Created", "x"), &a), key(&warning, &a));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        let mut ab = event("c", "");
        ab.action = "ab".into();
        let mut a_ = event("bc", "");
        a_.action = "a".into();
        assert_ne!(key(&ab, &a), key(&a_, &a));
    }

    #[test]
    fn the_cache_drops_events_whose_window_is_over_and_gives_the_memory_back() {
        let mut c = Cache::default();
        let t0 = Timestamp::now();
        for i in 0..1000u32 {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&i.to_be_bytes());
            c.sent.insert(
                k,
                Sent {
                    name: format!("e{i}"),
                    namespace: "ns".into(),
                    count: 1,
                    last: t0,
                },
            );
        }
        c.sweep(t0 + SignedDuration::from_mins(1));
        assert_eq!(c.sent.len(), 1000, "within the window: kept");
        c.sweep(t0 + SignedDuration::from_mins(5));
        assert_eq!(c.sent.len(), 1000, "within the window: kept");
        c.sweep(t0 + SignedDuration::from_mins(7));
        assert!(c.sent.is_empty(), "the window is over");
        assert!(c.sent.capacity() < 100, "capacity {} not given back", c.sent.capacity());
    }
}
