//! What one page of a watch's first listing holds once parsed: the operator's own collector
//! DaemonSets, as the API server returns them (with the `managedFields` of the operator's
//! server-side apply and of the DaemonSet controller's status writes), parsed whole as before and
//! through `controller::lean` as the watches now read them. Counted by a global allocator that
//! tracks the bytes in use.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/specs.rs"]
mod specs;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use kube::core::ObjectList;
use mlobs::controller::lean::{LIST_PAGE, Lean};
use mlobs::desired::effective::Context;
use serde_json::{Map, Value, json};

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

/// The field set of `v` as server-side apply records it (`f:<field>` for object fields,
/// `k:{"name":…}` for list items with a name).
fn fields(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (format!("f:{k}"), fields(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .filter_map(|i| {
                    let name = i.get("name")?.as_str()?;
                    let mut f = fields(i);
                    f.as_object_mut()?.insert(".".into(), json!({}));
                    Some((format!("k:{{\"name\":\"{name}\"}}"), f))
                })
                .collect::<Map<String, Value>>(),
        ),
        _ => json!({}),
    }
}

/// Pipeline `i`'s collector DaemonSet as the API server lists it.
fn listed_collector(i: usize) -> Value {
    let mut p = specs::pipeline(json!({}));
    p.metadata.name = Some(format!("train-{i}"));
    let d = mlobs::desired::build(&p, Some(&specs::policy(json!({}))), &Context::default()).expect("builds");
    let mut ds = serde_json::to_value(&d.objects.daemon_set).expect("json");
    let applied = json!({"metadata": {"labels": ds["metadata"]["labels"], "annotations": ds["metadata"]["annotations"],
        "ownerReferences": ds["metadata"]["ownerReferences"]}, "spec": ds["spec"]});
    let status = json!({"currentNumberScheduled": 20, "desiredNumberScheduled": 20, "numberAvailable": 20,
        "numberMisscheduled": 0, "numberReady": 20, "observedGeneration": 1, "updatedNumberScheduled": 20});
    let meta = ds["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), json!(format!("8c1d3f5e-0000-4000-8000-{i:012}")));
    meta.insert("resourceVersion".into(), json!((100_000 + i).to_string()));
    meta.insert("generation".into(), json!(1));
    meta.insert("creationTimestamp".into(), json!("2026-12-06T10:00:00Z"));
    meta.insert(
        "managedFields".into(),
        json!([
            {"manager": "mlobs", "operation": "Apply", "apiVersion": "apps/v1", "time": "2026-12-06T10:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": fields(&applied)},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "time": "2026-12-06T10:00:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": fields(&status)},
             "subresource": "status"}
        ]),
    );
    ds["status"] = status;
    ds
}

/// Bytes in use after parsing `text` as `T`, and the parsed value.
fn held<T: serde::de::DeserializeOwned>(text: &str) -> (isize, T) {
    let before = counting_alloc::in_use();
    let parsed: T = serde_json::from_str(text).expect("parses");
    (counting_alloc::in_use() - before, parsed)
}

#[test]
fn a_page_of_collector_daemon_sets_read_lean_holds_a_fraction_of_the_whole_parse() {
    let items: Vec<Value> = (0..LIST_PAGE as usize).map(listed_collector).collect();
    let text = serde_json::to_string(&json!({"apiVersion": "apps/v1", "kind": "DaemonSetList",
        "metadata": {"resourceVersion": "200000"}, "items": items}))
    .expect("json");
    let _one = counting_alloc::measuring();
    let (whole_bytes, whole) = held::<ObjectList<DaemonSet>>(&text);
    let (lean_bytes, lean) = held::<ObjectList<Lean<DaemonSet>>>(&text);
    println!(
        "a page of {LIST_PAGE} collector DaemonSets ({} KB of JSON): {} KB parsed whole, {} KB lean",
        text.len() / 1000,
        whole_bytes / 1000,
        lean_bytes / 1000
    );
    // What the cache keeps is the same either way.
    assert_eq!(lean.items.len(), whole.items.len());
    for (l, w) in lean.items.iter().zip(&whole.items) {
        let mut w = w.clone();
        w.metadata.managed_fields = None;
        w.spec = w.spec.map(|s| DaemonSetSpec {
            selector: s.selector,
            ..Default::default()
        });
        assert_eq!(l.0, w);
    }
    assert!(
        lean_bytes * 5 < whole_bytes,
        "read lean, a page held {lean_bytes} bytes against {whole_bytes} whole"
    );
}
