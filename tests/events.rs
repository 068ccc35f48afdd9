//! The operator's event publisher (`controller::events`) against the API fake: a repeat within
//! six minutes is a series on the first event, a different reason or object is a new event, and
//! a series whose event is gone from the server starts over with a new one.

mod support;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Reporter};
use mlobs::controller::events::Publisher;
use support::apifake::{ApiFake, RecordedRequest};

const EVENTS: &str = "events.k8s.io/v1";

fn pipeline(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("mlobs.io/v1alpha1".into()),
        kind: Some("MLObservabilityPipeline".into()),
        namespace: Some("team-a".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

fn created(note: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Created".into(),
        note: Some(note.into()),
        action: "ApplyChild".into(),
        secondary: None,
    }
}

fn event_requests(fake: &ApiFake) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/apis/events.k8s.io/v1/namespaces/team-a/events"))
        .collect()
}

fn publisher(fake: &ApiFake) -> Publisher {
    Publisher::new(
        fake.client(),
        Reporter {
            controller: "mlobs-operator".into(),
            instance: Some("mlobs-0".into()),
        },
    )
}

#[tokio::test]
async fn a_repeat_is_a_series_on_the_first_event_and_another_reason_a_new_event() {
    let fake = ApiFake::new();
    let p = publisher(&fake);
    let a = pipeline("a");
    p.publish(&created("Created ConfigMap/team-a/a"), &a)
        .await
        .expect("first");
    p.publish(&created("Created DaemonSet/team-a/a"), &a)
        .await
        .expect("repeat");
    p.publish(&created("Created DaemonSet/team-a/a"), &a)
        .await
        .expect("repeat");
    let reqs = event_requests(&fake);
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "PATCH", "PATCH"], "{reqs:#?}");
    let first = &reqs[0].body;
    assert_eq!(first["reason"], "Created");
    assert_eq!(first["action"], "ApplyChild");
    assert_eq!(first["type"], "Normal");
    assert_eq!(first["regarding"]["uid"], "uid-a");
    assert_eq!(first["reportingController"], "mlobs-operator");
    assert_eq!(first["reportingInstance"], "mlobs-0");
    assert_eq!(first["note"], "Created ConfigMap/team-a/a");
    let name = first["metadata"]["name"].as_str().expect("name").to_string();
    assert!(name.starts_with("a."), "{name}");
    // The series patches name the first event and count on.
    assert!(reqs[1].path.ends_with(&format!("/events/{name}")), "{}", reqs[1].path);
    assert_eq!(reqs[1].body["series"]["count"], 2);
    assert_eq!(reqs[2].body["series"]["count"], 3);
    assert!(reqs[2].body["series"]["lastObservedTime"].is_string());
    let stored = fake.object(EVENTS, "events", Some("team-a"), &name).expect("stored");
    assert_eq!(stored["series"]["count"], 3);
    assert_eq!(stored["note"], "Created ConfigMap/team-a/a", "the first note stays");

    // Another reason, another object: new events.
    let mut deleted = created("Deleted ConfigMap/team-a/a");
    deleted.reason = "Deleted".into();
    p.publish(&deleted, &a).await.expect("another reason");
    p.publish(&created("Created ConfigMap/team-a/b"), &pipeline("b"))
        .await
        .expect("another object");
    let posts = event_requests(&fake).iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3);
    assert_eq!(p.cached(), 3, "one cache entry per series");
}

#[tokio::test]
async fn a_series_whose_event_is_gone_starts_over_with_a_new_event() {
    let fake = ApiFake::new();
    let p = publisher(&fake);
    let a = pipeline("a");
    p.publish(&created("first"), &a).await.expect("first");
    let name = event_requests(&fake)[0].body["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    fake.remove(EVENTS, "events", Some("team-a"), &name).expect("removed");
    p.publish(&created("again"), &a)
        .await
        .expect("after the event was removed");
    let reqs = event_requests(&fake);
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "PATCH", "POST"], "{reqs:#?}");
    assert_eq!(reqs[2].body["note"], "again");
    assert!(reqs[2].body.get("series").is_none_or(serde_json::Value::is_null));
    // And the new event is the series from now on.
    p.publish(&created("third"), &a).await.expect("repeat");
    let last = event_requests(&fake).pop().expect("a request");
    assert_eq!(last.method, "PATCH");
    assert_eq!(last.body["series"]["count"], 2);
}
