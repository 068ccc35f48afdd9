//! The rendered `awss3/archive` exporter, run in the real collector (../shared/otelcol) against
//! moto: OTLP log records sent to it on 127.0.0.1 land as gzip'd objects under the pipeline's
//! prefix and hourly partitions, in a bucket the operator created with Object Lock — which
//! refuses PUTs without a checksum, so this also proves the exporter's PUTs carry one.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlobs::aws::{Owner, s3};
use mlobs::crd::{DriftPolicy, MLObservabilityPipeline};
use mlobs::desired::collector_config::destinations::ARCHIVE_EXPORTER;
use mlobs::desired::effective::Context;
use mlobs::desired::{aws_plan, build};
use serde_json::{Value, json};
use support::{moto, otelcol};

/// Stops the collector however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One OTLP/HTTP JSON request; the status code.
fn post_logs(port: u16, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let req = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn logs_sent_to_the_collector_land_locked_under_the_partitioned_prefix() {
    let cluster = moto::unique("s3flow");
    let p: MLObservabilityPipeline = serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "training", "namespace": "research"},
        "spec": {"clusterName": cluster, "region": "us-east-1", "identity": {"mode": "PodIdentity"},
                 "encryption": {"kms": {"disabled": true}},
                 "archive": {"prefix": "audit/training/"}}}))
    .expect("pipeline");
    let d = build(&p, None, &Context::default()).expect("build");
    let plan = aws_plan::build(&d.effective).expect("plan").archive.expect("bucket");
    let c = moto::clients().await;
    let owner = Owner {
        cluster: cluster.clone(),
        pipeline: d.effective.pipeline_id(),
    };
    s3::ensure(&c, &plan, None, &owner, false, DriftPolicy::Correct)
        .await
        .expect("bucket");
    // moto applies the TLS-only Deny without its condition (it would deny every PUT).
    c.s3.delete_bucket_policy().bucket(&plan.name).send().await.expect("policy off");

    // The exporter exactly as rendered, pointed at moto; the checksum setting exactly as the
    // DaemonSet sets it.
    let rendered: Value = serde_saphyr::from_str(&mlobs::desired::collector_config::to_yaml(&d.effective)).expect("config");
    let mut exporter = rendered["exporters"][ARCHIVE_EXPORTER].clone();
    exporter["s3uploader"]["endpoint"] = json!(moto::endpoint());
    exporter["s3uploader"]["s3_force_path_style"] = json!(true);
    let pod = d.objects.daemon_set.spec.clone().and_then(|s| s.template.spec).expect("pod");
    let env: Vec<(String, String)> = (pod.containers[0].env.clone().unwrap_or_default().into_iter())
        .filter_map(|e| Some((e.name, e.value?)))
        .filter(|(n, _)| n.starts_with("AWS_"))
        .collect();
    assert_eq!(env, [("AWS_REQUEST_CHECKSUM_CALCULATION".to_string(), "when_supported".to_string())]);
    let dir = std::env::temp_dir().join(format!("mlobs-archive-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let config = json!({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": format!("127.0.0.1:{port}")}}}},
        "processors": {"batch": {"timeout": "1s"}},
        "exporters": {ARCHIVE_EXPORTER: exporter},
        "extensions": {"file_storage": {"directory": dir.join("queue").display().to_string(), "create_directory": true}},
        "service": {
            "extensions": ["file_storage"],
            "pipelines": {"logs": {"receivers": ["otlp"], "processors": ["batch"], "exporters": [ARCHIVE_EXPORTER]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    });
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&config).expect("yaml")).expect("write config");
    let mut cmd = Command::new(otelcol::binary());
    cmd.arg(format!("--config={}", path.display()))
        .env_clear()
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("KUBE_NODE_NAME", "gpu-node-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let _collector = Running(cmd.spawn().expect("start the collector"));

    let body = json!({"resourceLogs": [{"resource": {"attributes": [{"key": "k8s.pod.name", "value": {"stringValue": "trainer-0"}}]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "epoch 1 loss 0.42"}}]}]}]})
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while post_logs(port, &body) != Some(200) {
        assert!(Instant::now() < deadline, "the collector did not accept OTLP logs on {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut keys = vec![];
    while keys.is_empty() {
        assert!(Instant::now() < deadline, "no object in {} within 60 s", plan.name);
        std::thread::sleep(Duration::from_millis(500));
        let listed = c.s3.list_objects_v2().bucket(&plan.name).send().await.expect("list");
        keys = listed.contents().iter().filter_map(|o| o.key().map(String::from)).collect();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let shape = regex::Regex::new(
        r"^audit/training/year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/gpu-node-1_[A-Za-z0-9_-]+\.json\.gz$",
    )
    .expect("regex");
    assert!(keys.iter().all(|k| shape.is_match(k)), "{keys:?}");
    // Every object is locked by the bucket's default retention.
    let retention = c
        .s3
        .get_object_retention()
        .bucket(&plan.name)
        .key(&keys[0])
        .send()
        .await
        .expect("retention");
    let mode = retention.retention().and_then(|r| r.mode()).map(|m| m.as_str().to_string());
    assert_eq!(mode.as_deref(), Some("COMPLIANCE"));
}
