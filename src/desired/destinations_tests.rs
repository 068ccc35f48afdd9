//! What each destination adds to the collector configuration, the pod and the role.

use serde_json::{Value, json};

use super::aws_plan::destinations::{AMP_SID, XRAY_ACTIONS, XRAY_SID};
use super::aws_plan::{self, RolePlan};
use super::collector_config::destinations::{
    AMP_AUTH, AMP_EXPORTER, DATADOG_EXPORTER, OTLP_TRACES_EXPORTER, XRAY_AUTH, XRAY_EXPORTER,
};
use super::collector_config::{build, to_yaml};
use super::collector_daemonset::daemon_set;
use super::destinations::*;
use super::effective::{Effective, test_all_destinations, test_fixture};
use crate::crd::KeyRef;

pub(super) fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub(super) fn inline_statements(e: &Effective) -> Vec<Value> {
    match aws_plan::build(e).expect("plan").role {
        RolePlan::Create { inline_policy, .. } => inline_policy["Statement"].as_array().cloned().unwrap_or_default(),
        RolePlan::Existing { .. } => panic!("the fixture creates its role"),
    }
}

#[test]
fn xray_gets_a_traces_pipeline_from_otlp_through_memory_limiter_to_batch_then_sigv4_signed_gzip() {
    let c = build(&test_all_destinations());
    let traces = &c["service"]["pipelines"]["traces"];
    assert_eq!(strs(&traces["receivers"]), ["otlp"]);
    assert_eq!(
        strs(&traces["processors"]),
        ["memory_limiter", "k8sattributes", "resource", "batch"]
    );
    assert_eq!(strs(&traces["exporters"]), [XRAY_EXPORTER]);
    let x = &c["exporters"][XRAY_EXPORTER];
    assert_eq!(x["traces_endpoint"], "https://xray.us-east-1.amazonaws.com/v1/traces");
    assert_eq!(x["compression"], "gzip");
    assert_eq!(x["auth"]["authenticator"], XRAY_AUTH);
    assert_eq!(x["sending_queue"]["storage"], "file_storage");
    assert_eq!(
        c["extensions"][XRAY_AUTH],
        json!({"region": "us-east-1", "service": "xray"})
    );
    assert!(strs(&c["service"]["extensions"]).contains(&XRAY_AUTH.to_string()));
}

#[test]
fn the_metrics_pipeline_fans_the_filtered_fields_out_to_emf_amp_and_datadog() {
    let e = test_all_destinations();
    let c = build(&e);
    let metrics = &c["service"]["pipelines"]["metrics"];
    assert_eq!(strs(&metrics["exporters"]), ["awsemf", AMP_EXPORTER, DATADOG_EXPORTER]);
    // One pipeline: every exporter is behind filter/dcgm, so none gets an unselected field.
    let procs = strs(&metrics["processors"]);
    assert!(procs.contains(&"filter/dcgm".to_string()) && procs.last().map(String::as_str) == Some("batch"));
    let amp = &c["exporters"][AMP_EXPORTER];
    assert_eq!(
        amp["endpoint"],
        "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-abc/api/v1/remote_write"
    );
    assert_eq!(amp["auth"]["authenticator"], AMP_AUTH);
    assert_eq!(amp["add_metric_suffixes"], false);
    assert_eq!(
        amp["target_info"]["enabled"], false,
        "no target_info series nobody selected"
    );
    assert_eq!(
        c["extensions"][AMP_AUTH],
        json!({"region": "us-east-1", "service": "aps"})
    );
    let dd = &c["exporters"][DATADOG_EXPORTER];
    assert_eq!(dd["api"]["key"], "${env:DD_API_KEY}");
    assert_eq!(dd["api"]["site"], "datadoghq.eu");
    assert_eq!(dd["hostname"], "${env:KUBE_NODE_NAME}");
}

#[test]
fn the_datadog_key_comes_from_its_secret_and_never_reaches_the_config_map() {
    let e = test_all_destinations();
    let ds = daemon_set(&e, "h");
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let dd: Vec<_> = env.iter().filter(|v| v.name == DD_API_KEY_ENV).collect();
    assert_eq!(dd.len(), 1);
    assert_eq!(dd[0].value, None);
    let secret = dd[0]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("dd", "api-key"));
    assert!(!to_yaml(&e).contains("api-key") && to_yaml(&e).contains("${env:DD_API_KEY}"));
    let mut e = test_fixture();
    e.destinations.datadog = None;
    let pod = daemon_set(&e, "h").spec.and_then(|s| s.template.spec).expect("pod");
    assert!(pod.containers[0].env.iter().flatten().all(|v| v.name != DD_API_KEY_ENV));
}

#[test]
fn an_otlp_backend_is_https_with_its_mounted_ca_or_plaintext_when_insecure() {
    let mut e = test_fixture();
    e.collector.otlp_enabled = true;
    let ca = KeyRef {
        name: "tempo-ca".into(),
        key: "ca.crt".into(),
    };
    e.destinations.traces = Some(EffTraces::Otlp(EffOtlpBackend {
        endpoint: "tempo.obs:4318".into(),
        insecure: false,
        ca: Some(ca),
    }));
    let c = build(&e);
    let x = &c["exporters"][OTLP_TRACES_EXPORTER];
    assert_eq!(x["traces_endpoint"], "https://tempo.obs:4318/v1/traces");
    assert_eq!(x["tls"], json!({"ca_file": "/etc/mlobs/traces-ca/ca.crt"}));
    assert!(c["extensions"].get(XRAY_AUTH).is_none());
    let pod = daemon_set(&e, "h").spec.and_then(|s| s.template.spec).expect("pod");
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/mlobs/traces-ca" && m.read_only == Some(true))
    );
    let volumes = pod.volumes.unwrap_or_default();
    let cm = volumes
        .iter()
        .find_map(|v| v.config_map.as_ref().filter(|c| c.name == "tempo-ca"));
    assert!(cm.is_some(), "{volumes:?}");
    e.destinations.traces = Some(EffTraces::Otlp(EffOtlpBackend {
        endpoint: "[fd00::1]:4318".into(),
        insecure: true,
        ca: None,
    }));
    let x = build(&e)["exporters"][OTLP_TRACES_EXPORTER].clone();
    assert_eq!(x["traces_endpoint"], "http://[fd00::1]:4318/v1/traces");
    assert_eq!(x["tls"], json!({"insecure": true}));
    // No IAM for a non-AWS backend.
    assert_eq!(inline_statements(&e).len(), 1);
}

#[test]
fn the_role_gets_exactly_one_star_statement_for_xray_and_amp_on_its_workspace_only() {
    let mut e = test_all_destinations();
    e.identity.source_vpc = Some("vpc-0abc1234".into());
    let statements = inline_statements(&e);
    let sids: Vec<&str> = statements.iter().filter_map(|s| s["Sid"].as_str()).collect();
    assert_eq!(sids, ["WriteOwnLogGroups", XRAY_SID, AMP_SID]);
    let star: Vec<&Value> = statements.iter().filter(|s| s["Resource"] == "*").collect();
    assert_eq!(star.len(), 1, "only X-Ray takes Resource *");
    assert_eq!(star[0]["Sid"], XRAY_SID);
    assert_eq!(star[0]["Action"], json!(XRAY_ACTIONS));
    let amp = &statements[2];
    assert_eq!(amp["Action"], json!(["aps:RemoteWrite"]));
    assert_eq!(
        amp["Resource"],
        json!(["arn:aws:aps:us-east-1:123456789012:workspace/ws-abc"])
    );
    for s in &statements {
        let cond = &s["Condition"]["StringEquals"];
        assert_eq!(cond["aws:RequestedRegion"], "us-east-1", "{s}");
        assert_eq!(cond["aws:SourceVpc"], "vpc-0abc1234", "{s}");
    }
    // Without X-Ray there is no "*" at all.
    e.destinations.traces = None;
    assert!(inline_statements(&e).iter().all(|s| s["Resource"] != "*"));
}
