//! Exact requests where they matter: children are applied server-side with field manager `mlobs`
//! and `force`, compared with the live object by a server-side dry run (what the API server would
//! store, defaults included), an unchanged child is never written, and a hand edit is put back.

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta};
use kube::client::Body;
use mlobs::controller::children::{self, Applied, AppliedCache, DESIRED_HASH};
use serde_json::{Value, json};
use std::sync::Arc;
use tower_test::mock::{self, Handle};

type MockHandle = Handle<Request<Body>, Response<Body>>;

const PATH: &str = "/api/v1/namespaces/team-a/configmaps/mlobs-train";

fn client() -> (kube::Client, MockHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn desired() -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("mlobs-train".into()),
            namespace: Some("team-a".into()),
            labels: Some([("app.kubernetes.io/managed-by".to_string(), "mlobs".to_string())].into()),
            ..Default::default()
        },
        data: Some([("config.yaml".to_string(), "receivers: {}".to_string())].into()),
        ..Default::default()
    }
}

fn respond(code: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response")
}

fn not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

async fn body_json(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

/// The live object as the API server would hold it after our apply (plus server-side fields).
fn live(hash: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mlobs-train", "namespace": "team-a", "resourceVersion": "7", "uid": "x",
            "labels": {"app.kubernetes.io/managed-by": "mlobs"}, "annotations": {DESIRED_HASH: hash}},
        "data": {"config.yaml": data}})
}

#[tokio::test]
async fn an_absent_child_is_created_by_server_side_apply_with_our_field_manager() {
    let (c, mut h) = client();
    let api: Api<ConfigMap> = Api::namespaced(c, "team-a");
    let task = tokio::spawn(async move { children::apply(&api, desired(), &AppliedCache::default()).await });

    let (req, send) = h.next_request().await.expect("GET");
    assert_eq!((req.method(), req.uri().path()), (&Method::GET, PATH));
    send.send_response(not_found());

    let (req, send) = h.next_request().await.expect("PATCH");
    assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, PATH));
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("fieldManager=mlobs") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(
        req.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/apply-patch+yaml")
    );
    let body = body_json(req).await;
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["data"]["config.yaml"], "receivers: {}");
    let hash = body["metadata"]["annotations"][DESIRED_HASH]
        .as_str()
        .expect("hash annotation")
        .to_string();
    assert!(body.get("status").is_none(), "status is never applied");
    send.send_response(respond(StatusCode::OK, live(&hash, "receivers: {}")));

    let (applied, _) = task.await.expect("join").expect("apply");
    assert_eq!(applied, Applied::Created);
}

/// Runs apply once against an empty server to learn the hash of `desired()`.
async fn desired_hash() -> String {
    let (c, mut h) = client();
    let api: Api<ConfigMap> = Api::namespaced(c, "team-a");
    let task = tokio::spawn(async move { children::apply(&api, desired(), &AppliedCache::default()).await });
    let (_, send) = h.next_request().await.expect("GET");
    send.send_response(not_found());
    let (req, send) = h.next_request().await.expect("PATCH");
    let hash = body_json(req).await["metadata"]["annotations"][DESIRED_HASH]
        .as_str()
        .expect("hash")
        .to_string();
    send.send_response(respond(StatusCode::OK, live(&hash, "receivers: {}")));
    task.await.expect("join").expect("apply");
    hash
}

/// Answers the dry-run apply that follows the GET, checking it is one.
async fn answer_dry_run(h: &mut MockHandle, would_store: Value) {
    let (req, send) = h.next_request().await.expect("dry-run PATCH");
    assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, PATH));
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("dryRun=All") && query.contains("fieldManager=mlobs"),
        "{query}"
    );
    send.send_response(respond(StatusCode::OK, would_store));
}

#[tokio::test]
async fn an_unchanged_child_is_compared_by_dry_run_and_never_written() {
    let hash = desired_hash().await;
    let (c, mut h) = client();
    let api: Api<ConfigMap> = Api::namespaced(c, "team-a");
    let cache = Arc::new(AppliedCache::default());
    let (api2, cache2) = (api.clone(), cache.clone());
    let task = tokio::spawn(async move { children::apply(&api2, desired(), &cache2).await });
    let (req, send) = h.next_request().await.expect("GET");
    assert_eq!(req.method(), Method::GET);
    // The server adds what it defaults; the dry run shows the same, so it is no difference.
    let mut stored = live(&hash, "receivers: {}");
    stored["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    send.send_response(respond(StatusCode::OK, stored.clone()));
    let mut would = stored.clone();
    would["metadata"]["managedFields"] = json!([{"manager": "mlobs", "operation": "Apply"}]);
    answer_dry_run(&mut h, would).await;
    let (applied, _) = task.await.expect("join").expect("apply");
    assert_eq!(applied, Applied::Unchanged);

    // Verified at this resourceVersion: the next reconcile only reads.
    let task = tokio::spawn(async move { children::apply(&api, desired(), &cache).await });
    let (req, send) = h.next_request().await.expect("GET");
    assert_eq!(req.method(), Method::GET);
    send.send_response(respond(StatusCode::OK, stored));
    let (applied, _) = task.await.expect("join").expect("apply");
    assert_eq!(applied, Applied::Unchanged);
    assert!(h.next_request().await.is_none(), "no write, no dry run");
}

#[tokio::test]
async fn a_hand_edited_child_is_put_back_and_the_edit_is_named() {
    let hash = desired_hash().await;
    let (c, mut h) = client();
    let api: Api<ConfigMap> = Api::namespaced(c, "team-a");
    let task = tokio::spawn(async move { children::apply(&api, desired(), &AppliedCache::default()).await });
    let (_, send) = h.next_request().await.expect("GET");
    send.send_response(respond(StatusCode::OK, live(&hash, "edited")));
    answer_dry_run(&mut h, live(&hash, "receivers: {}")).await;
    let (req, send) = h.next_request().await.expect("PATCH puts it back");
    assert_eq!(req.method(), Method::PATCH);
    assert!(!req.uri().query().unwrap_or_default().contains("dryRun"));
    send.send_response(respond(StatusCode::OK, live(&hash, "receivers: {}")));
    let (applied, _) = task.await.expect("join").expect("apply");
    assert_eq!(
        applied,
        Applied::Corrected {
            field: "data.config.yaml".into(),
            actual: "\"edited\"".into(),
            desired: "\"receivers: {}\"".into()
        }
    );
}

#[tokio::test]
async fn a_child_from_an_older_spec_is_updated_not_reported_as_drift() {
    let (c, mut h) = client();
    let api: Api<ConfigMap> = Api::namespaced(c, "team-a");
    let task = tokio::spawn(async move { children::apply(&api, desired(), &AppliedCache::default()).await });
    let (_, send) = h.next_request().await.expect("GET");
    send.send_response(respond(StatusCode::OK, live("older-spec", "receivers: {old: 1}")));
    answer_dry_run(&mut h, live("new", "receivers: {}")).await;
    let (_, send) = h.next_request().await.expect("PATCH");
    send.send_response(respond(StatusCode::OK, live("new", "receivers: {}")));
    let (applied, _) = task.await.expect("join").expect("apply");
    assert_eq!(applied, Applied::Updated);
}
