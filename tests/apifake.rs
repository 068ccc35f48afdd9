//! The in-process API server fake, driven through a real `kube::Client`: the semantics the
//! controller tests rely on (no-op writes, status subresource, finalizers, GC, watches, faults).

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Error, ResourceExt};
use serde_json::json;
use support::apifake::ApiFake;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn ds(name: &str) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("mlobs".into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector::default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn names(api: &Api<ConfigMap>, lp: ListParams) -> Vec<String> {
    api.list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect()
}

fn code(e: Error) -> u16 {
    match e {
        Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_with_selectors() {
    let fake = ApiFake::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    let created = api
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    api.create(&PostParams::default(), &cm("b", &[("app", "y")]))
        .await
        .unwrap();
    assert_eq!(
        code(api.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err()),
        409
    );

    assert_eq!(api.get("a").await.unwrap().data, cm("a", &[]).data);
    assert_eq!(code(api.get("missing").await.unwrap_err()), 404);
    assert_eq!(api.get_opt("missing").await.unwrap(), None);

    assert_eq!(names(&api, ListParams::default().labels("app=x")).await, ["a"]);
    assert_eq!(names(&api, ListParams::default().labels("app!=x")).await, ["b"]);
    assert_eq!(
        names(&api, ListParams::default().labels("app,!other")).await,
        ["a", "b"]
    );
    assert_eq!(
        names(&api, ListParams::default().fields("metadata.name=b")).await,
        ["b"]
    );
    let set_based = api.list(&ListParams::default().labels("app in (x,y)")).await;
    assert_eq!(code(set_based.unwrap_err()), 400, "unsupported selectors fail loudly");
    let all: Api<ConfigMap> = Api::all(fake.client());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let other: Api<ConfigMap> = Api::namespaced(fake.client(), "other");
    assert!(other.list(&ListParams::default()).await.unwrap().items.is_empty());

    let generated = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("ev-".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let g = api.create(&PostParams::default(), &generated).await.unwrap();
    assert!(
        g.name_any().starts_with("ev-") && g.name_any().len() == 8,
        "{}",
        g.name_any()
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_no_op_keeps_resource_version() {
    let fake = ApiFake::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    let pp = PatchParams::apply("mlobs").force();
    let first = api
        .patch("a", &pp, &Patch::Apply(cm("a", &[("app", "x")])))
        .await
        .unwrap();
    let rv = fake.resource_version();
    let again = api
        .patch("a", &pp, &Patch::Apply(cm("a", &[("app", "x")])))
        .await
        .unwrap();
    assert_eq!(first.resource_version(), again.resource_version());
    assert_eq!(fake.resource_version(), rv);
    assert_eq!(fake.writes(), 2);
    assert_eq!(again.metadata.managed_fields.map(|m| m.len()), Some(1));

    let changed = api
        .patch("a", &pp, &Patch::Apply(cm("a", &[("app", "z")])))
        .await
        .unwrap();
    assert_ne!(changed.resource_version(), first.resource_version());
    let req = fake.requests().pop().unwrap();
    assert_eq!(req.method, "PATCH");
    assert_eq!(req.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert!(
        req.query.contains("fieldManager=mlobs") && req.query.contains("force=true"),
        "{}",
        req.query
    );
}

#[tokio::test]
async fn status_subresource_generation_and_conflicts() {
    let fake = ApiFake::new();
    let api: Api<DaemonSet> = Api::namespaced(fake.client(), "mlobs");
    let mut with_status = ds("agent");
    with_status.status = Some(DaemonSetStatus {
        number_ready: 7,
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &with_status).await.unwrap();
    assert!(created.status.is_none(), "status is ignored on create");

    let status = json!({"status": {"numberReady": 3, "currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0}});
    let patched = api
        .patch_status("agent", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref().map(|s| s.number_ready), Some(3));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status changes keep the generation"
    );

    // The main resource ignores status but bumps generation on spec changes.
    let spec = json!({"spec": {"minReadySeconds": 5}, "status": {"numberReady": 9}});
    let patched = api
        .patch("agent", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref().map(|s| s.number_ready), Some(3));
    assert_eq!(patched.metadata.generation, Some(2));
    let labels = json!({"metadata": {"labels": {"a": "b"}}});
    let patched = api
        .patch("agent", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "metadata changes keep the generation"
    );

    // Optimistic concurrency, on merge patches and replaces.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"minReadySeconds": 6}});
    assert_eq!(
        code(
            api.patch("agent", &PatchParams::default(), &Patch::Merge(&stale))
                .await
                .unwrap_err()
        ),
        409
    );
    let mut old = created.clone();
    old.spec.as_mut().unwrap().min_ready_seconds = Some(1);
    assert_eq!(
        code(api.replace("agent", &PostParams::default(), &old).await.unwrap_err()),
        409
    );
    let mut fresh = api.get("agent").await.unwrap();
    fresh.spec.as_mut().unwrap().min_ready_seconds = Some(1);
    let replaced = api.replace("agent", &PostParams::default(), &fresh).await.unwrap();
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(replaced.metadata.generation, Some(3));

    // kube's Patch::Json needs the `jsonpatch` feature, so send RFC 6902 raw.
    let ops = json!([{"op": "test", "path": "/spec/minReadySeconds", "value": 1},
                     {"op": "replace", "path": "/spec/minReadySeconds", "value": 2},
                     {"op": "add", "path": "/metadata/finalizers", "value": []},
                     {"op": "add", "path": "/metadata/finalizers/-", "value": "f"}]);
    let req = http::Request::patch("/apis/apps/v1/namespaces/mlobs/daemonsets/agent")
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let patched: DaemonSet = fake.client().request(req).await.unwrap();
    assert_eq!(patched.spec.unwrap().min_ready_seconds, Some(2));
    assert_eq!(patched.metadata.finalizers, Some(vec!["f".to_string()]));
}

#[tokio::test]
async fn finalizers_and_owner_garbage_collection() {
    let fake = ApiFake::new();
    let dss: Api<DaemonSet> = Api::namespaced(fake.client(), "mlobs");
    let cms: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    let mut owner = ds("agent");
    owner.metadata.finalizers = Some(vec!["mlobs.io/cleanup".into()]);
    let owner = dss.create(&PostParams::default(), &owner).await.unwrap();
    let mut child = cm("child", &[]);
    child.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: "agent".into(),
        uid: owner.uid().unwrap(),
        ..Default::default()
    }]);
    cms.create(&PostParams::default(), &child).await.unwrap();

    let deleting = dss
        .delete("agent", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(
        dss.get_opt("agent").await.unwrap().is_some(),
        "a finalizer holds the object"
    );
    assert!(cms.get_opt("child").await.unwrap().is_some());

    let clear = json!({"metadata": {"finalizers": null}});
    dss.patch("agent", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    assert!(
        dss.get_opt("agent").await.unwrap().is_none(),
        "the last finalizer's removal deletes"
    );
    assert!(
        cms.get_opt("child").await.unwrap().is_none(),
        "dependents are garbage-collected"
    );
    assert_eq!(
        code(dss.delete("agent", &DeleteParams::default()).await.unwrap_err()),
        404
    );
}

#[tokio::test]
async fn watcher_sees_added_then_modified_and_resumes_after_gone() {
    let fake = ApiFake::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    api.create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().labels("app=x")).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
    };

    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    assert!(matches!(next().await, Ok(watcher::Event::InitApply(c)) if c.name_any() == "a"));
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));

    api.create(&PostParams::default(), &cm("b", &[("app", "x")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("ignored", &[("app", "y")]))
        .await
        .unwrap();
    assert!(matches!(next().await, Ok(watcher::Event::Apply(c)) if c.name_any() == "b"));
    let patch = json!({"data": {"k": "changed"}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let Ok(watcher::Event::Apply(c)) = next().await else {
        panic!("expected the modification")
    };
    assert_eq!(c.data.unwrap()["k"], "changed");

    // Leaving the selection looks like a deletion to a filtered watch.
    let relabel = json!({"metadata": {"labels": {"app": "y"}}});
    api.patch("b", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    assert!(matches!(next().await, Ok(watcher::Event::Delete(c)) if c.name_any() == "b"));

    // An outage ends the watch and fails the re-watch; a change missed meanwhile and then
    // compacted away means 410 Gone, so the watcher re-lists from scratch.
    fake.set_unavailable(true);
    assert!(next().await.is_err());
    let mut missed = cm("c", &[("app", "x")]);
    missed.metadata.namespace = Some("mlobs".into());
    fake.put(&missed);
    fake.compact();
    fake.set_unavailable(false);
    let mut relisted = Vec::new();
    for _ in 0..10 {
        match next().await {
            Ok(watcher::Event::InitApply(c)) => relisted.push(c.name_any()),
            Ok(watcher::Event::InitDone) => break,
            _ => {}
        }
    }
    assert_eq!(relisted, ["a", "c"]);
}

#[tokio::test]
async fn raw_watch_replays_from_a_version_and_reports_gone() {
    let fake = ApiFake::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    let a = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
    api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
    let wp = kube::api::WatchParams::default();
    let mut stream = api.watch(&wp, &a.resource_version().unwrap()).await.unwrap().boxed();
    let first = stream.try_next().await.unwrap();
    assert!(matches!(first, Some(kube::api::WatchEvent::Added(c)) if c.name_any() == "b"));

    fake.compact();
    let mut stream = api.watch(&wp, &a.resource_version().unwrap()).await.unwrap().boxed();
    let gone = stream.try_next().await.unwrap();
    assert!(matches!(gone, Some(kube::api::WatchEvent::Error(e)) if e.code == 410));
    assert!(stream.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn cluster_scoped_leases_faults_and_counters() {
    let fake = ApiFake::new();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "gpu-1", "labels": {"gpu": "true"}},
                                                   "status": {"capacity": {"nvidia.com/gpu": "8"}}}))
    .unwrap();
    fake.put(&node);
    let nodes: Api<Node> = Api::all(fake.client());
    let got = nodes.get("gpu-1").await.unwrap();
    assert_eq!(got.status.unwrap().capacity.unwrap()["nvidia.com/gpu"].0, "8");
    assert_eq!(fake.get::<Node>(None, "gpu-1").unwrap().name_any(), "gpu-1");
    assert_eq!(fake.writes(), 0, "seeding is not a request");

    let leases: Api<Lease> = Api::namespaced(fake.client(), "mlobs");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("me".into()),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        fake.object("coordination.k8s.io/v1", "leases", Some("mlobs"), "leader")
            .unwrap()["spec"]["holderIdentity"],
        "me"
    );

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(fake.client(), "mlobs");
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"generateName": "x-"},
                    "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "mlobs",
                    "reportingInstance": "mlobs", "action": "Reconcile", "reason": "Ok", "type": "Normal"});
    events
        .create(&PostParams::default(), &serde_json::from_value(ev).unwrap())
        .await
        .unwrap();
    assert_eq!(fake.writes(), 2);
    assert_eq!(fake.writes_excluding_events(), 1);

    fake.fail_next("PATCH", "/status", 409, 1);
    let status = Patch::Merge(json!({"status": {"phase": "x"}}));
    assert_eq!(
        code(
            nodes
                .patch_status("gpu-1", &PatchParams::default(), &status)
                .await
                .unwrap_err()
        ),
        409
    );
    nodes
        .patch_status("gpu-1", &PatchParams::default(), &status)
        .await
        .unwrap();
    fake.set_unavailable(true);
    assert_eq!(code(nodes.get("gpu-1").await.unwrap_err()), 503);
    fake.set_unavailable(false);
    fake.remove("v1", "nodes", None, "gpu-1");
    assert!(nodes.get_opt("gpu-1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_real_controller_reaches_a_steady_state() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;

    let fake = ApiFake::new();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "mlobs");
    api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();

    async fn reconcile(obj: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>) -> Result<Action, Error> {
        let mut applied = cm(&obj.name_any(), &[("seen", "true")]);
        applied.data = obj.data.clone();
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("mlobs").force(),
            &Patch::Apply(applied),
        )
        .await?;
        Ok(Action::await_change())
    }
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, |_, _, _| Action::await_change(), Arc::new(api.clone()))
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    let labelled = |f: &ApiFake| {
        f.object("v1", "configmaps", Some("mlobs"), "a")
            .is_some_and(|o| o["metadata"]["labels"]["seen"] == "true")
    };
    assert!(fake.wait_until(Duration::from_secs(5), labelled).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (writes, rv) = (fake.writes(), fake.resource_version());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (fake.writes(), fake.resource_version()),
        (writes, rv),
        "no-op applies must not loop"
    );
    assert!(
        writes <= 3,
        "create, the labelling apply and at most one no-op apply: {writes}"
    );
    handle.abort();
}

#[tokio::test]
async fn odd_requests_get_status_errors_not_panics() {
    let fake = ApiFake::new();
    fake.put(&cm("a", &[]));
    let client = fake.client();
    let cases: [(&str, &str, &str, &[u8], u16); 7] = [
        ("GET", "/nonsense", "", b"", 404),
        ("GET", "/api/v1/configmaps?labelSelector=a%20b", "", b"", 400),
        (
            "POST",
            "/api/v1/namespaces/x/configmaps",
            "application/json",
            b"[1",
            400,
        ),
        ("PATCH", "/api/v1/configmaps/a", "text/plain", b"{}", 415),
        (
            "PATCH",
            "/api/v1/configmaps/a",
            "application/json-patch+json",
            b"[{\"op\":\"nope\",\"path\":\"/x\"}]",
            422,
        ),
        (
            "PATCH",
            "/api/v1/configmaps/a",
            "application/merge-patch+json",
            b"{",
            400,
        ),
        ("DELETE", "/api/v1/configmaps", "", b"", 405),
    ];
    for (method, uri, ct, body, want) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, ct);
        let res = client.request_text(req.body(body.to_vec()).unwrap()).await;
        assert_eq!(code(res.unwrap_err()), want, "{method} {uri}");
    }
    assert!(fake.object("v1", "configmaps", None, "a").is_some());
}
