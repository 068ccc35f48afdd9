//! The rendered `awss3/archive` exporter, run in the real collector (../shared/otelcol): OTLP log
//! records sent to it on 127.0.0.1 become gzip'd PUTs under the pipeline's prefix and hourly
//! partitions, named after the node.
//!
//! Two S3 ends on 127.0.0.1: a recorder that keeps each request's line and headers (exactly what
//! S3 would get), and moto holding the bucket mlobs ensures, reached through a stand-in that
//! applies S3's documented checksum rule for Object Lock.
//!
//! What it pins about Object Lock: the exporter (contrib 0.124.1, aws-sdk-go-v2 s3 v1.79) sends a
//! CRC32 checksum (`x-amz-checksum-crc32`) but neither `Content-MD5` nor
//! `x-amz-sdk-checksum-algorithm`. S3 answers a PUT into a bucket with a default retention that
//! lacks all of them with "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object
//! requests with Object Lock parameters", so the CRC32 header satisfies it; moto 5.1 accepts only
//! the first two (`MissingUploadObjectWithObjectLockHeaders`), hence the stand-in. Should a
//! collector upgrade send either header, the recorder's last assertion fails and the stand-in's
//! rewrite becomes a no-op.

#[path = "support/s3_stand_in.rs"]
mod s3_stand_in;
mod support;

use s3_stand_in::s3_stand_in;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlobs::aws::s3;
use mlobs::crd::DriftPolicy;
use mlobs::crd::MLObservabilityPipeline;
use mlobs::desired::collector_config::destinations::ARCHIVE_EXPORTER;
use mlobs::desired::effective::Context;
use mlobs::desired::{aws_plan, build};
use serde_json::{Value, json};
use support::moto;
use support::otelcol::{self, Running, free_port};

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

/// A pipeline with an archive under `audit/training/`; `extra` is merged into its spec.
fn pipeline(extra: Value) -> MLObservabilityPipeline {
    let mut spec = json!({"clusterName": "prod-gpu", "region": "us-east-1", "identity": {"mode": "PodIdentity"},
                          "archive": {"prefix": "audit/training/"}});
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(x.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": "training", "namespace": "research"}, "spec": spec}))
    .expect("pipeline")
}

/// The real collector running the rendered `awss3/archive` exporter, pointed at `s3_port`, with
/// the AWS_ settings exactly as the DaemonSet sets them; its OTLP/HTTP port; stops on drop.
struct ArchiveCollector {
    _process: Running,
    port: u16,
    dir: std::path::PathBuf,
}

impl ArchiveCollector {
    fn start(d: &mlobs::desired::Desired, s3_port: u16, run: &str) -> ArchiveCollector {
        let rendered: Value =
            serde_saphyr::from_str(&mlobs::desired::collector_config::to_yaml(&d.effective)).expect("config");
        let mut exporter = rendered["exporters"][ARCHIVE_EXPORTER].clone();
        exporter["s3uploader"]["endpoint"] = json!(format!("http://127.0.0.1:{s3_port}"));
        exporter["s3uploader"]["s3_force_path_style"] = json!(true);
        let pod = d
            .objects
            .daemon_set
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod");
        let env: Vec<(String, String)> = (pod.containers[0].env.clone().unwrap_or_default().into_iter())
            .filter_map(|e| Some((e.name, e.value?)))
            .filter(|(n, _)| n.starts_with("AWS_"))
            .collect();
        let pinned = (
            "AWS_REQUEST_CHECKSUM_CALCULATION".to_string(),
            "when_supported".to_string(),
        );
        assert!(env.contains(&pinned), "{env:?}");
        let dir = std::env::temp_dir().join(format!("mlobs-archive-{run}-{}", std::process::id()));
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
            .stderr(std::fs::File::create(dir.join("collector.log")).map_or_else(|_| Stdio::null(), Stdio::from));
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let process = Running(cmd.spawn().expect("start the collector"));
        ArchiveCollector {
            _process: process,
            port,
            dir,
        }
    }

    /// Posts one log record of pod `trainer-0`, retrying until the receiver is up.
    fn send_log(&self, text: &str) {
        let body = json!({"resourceLogs": [{"resource": {"attributes": [{"key": "k8s.pod.name", "value": {"stringValue": "trainer-0"}}]},
            "scopeLogs": [{"logRecords": [{"body": {"stringValue": text}}]}]}]})
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = post_logs(self.port, &body);
            if answer == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not accept OTLP logs on {} (last answer: {answer:?}); its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }
}

impl Drop for ArchiveCollector {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The object key the exporter writes: `<prefix>year=YYYY/month=MM/day=DD/hour=HH/<node>_<id>.json.gz`.
fn partitioned_key(prefix: &str) -> String {
    format!(r"{prefix}year=\d{{4}}/month=\d{{2}}/day=\d{{2}}/hour=\d{{2}}/gpu-node-1_[A-Za-z0-9_-]+\.json\.gz")
}

#[test]
fn logs_become_gzipped_puts_under_the_partitioned_prefix_with_a_crc32_checksum() {
    let d = build(&pipeline(json!({})), None, &Context::default()).expect("build");
    let bucket = aws_plan::build(&d.effective)
        .expect("plan")
        .archive
        .expect("bucket")
        .name;
    let (s3_port, seen) = s3_stand_in(None);
    let collector = ArchiveCollector::start(&d, s3_port, "recorded");
    collector.send_log("epoch 1 loss 0.42");
    let deadline = Instant::now() + Duration::from_secs(60);
    let put = loop {
        let first = seen.lock().ok().and_then(|s| s.first().cloned());
        if let Some(r) = first {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no PUT within 60 s; the collector said:\n{}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (line, headers) = put;
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Path style: /<bucket>/<key>?x-id=PutObject, `=` percent-encoded in the key.
    let key = partitioned_key("audit/training/").replace('=', "%3D");
    let shape = regex::Regex::new(&format!(r"^PUT /{bucket}/{key}\?x-id=PutObject HTTP/1\.1$")).expect("regex");
    assert!(shape.is_match(&line), "{line}");
    assert_eq!(header("content-encoding"), Some("gzip"));
    assert!(
        header("x-amz-checksum-crc32").is_some_and(|v| !v.is_empty()),
        "{headers:?}"
    );
    // The caveat of the module doc, as observed: no header the S3 API reference names for Object
    // Lock. When this fails, a collector upgrade sends one: update README "S3 archive".
    assert_eq!(
        (header("content-md5"), header("x-amz-sdk-checksum-algorithm")),
        (None, None),
        "{headers:?}"
    );
}

/// The whole archive path against moto: the bucket mlobs ensures (Object Lock COMPLIANCE 7 years,
/// versioning, public access blocked, lifecycle, tags) receives the collector's objects under the
/// partitioned prefix; each object version is locked in COMPLIANCE mode until 7 years from now
/// and cannot be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_objects_land_in_the_locked_bucket_under_the_partitioned_prefix_and_cannot_be_deleted() {
    let cluster = moto::unique("flow");
    let p = pipeline(json!({"clusterName": cluster, "encryption": {"kms": {"disabled": true}}}));
    let d = build(&p, None, &Context::default()).expect("build");
    let plan = aws_plan::build(&d.effective).expect("plan").archive.expect("bucket");
    let c = moto::clients().await;
    let me = mlobs::aws::Owner {
        cluster: d.effective.cluster_name.clone(),
        pipeline: d.effective.pipeline_id(),
    };
    s3::ensure(&c, &plan, None, &me, false, DriftPolicy::Correct)
        .await
        .expect("ensure the archive bucket");
    // moto applies the TLS-only policy's Deny without its aws:SecureTransport condition, and
    // this path is plain HTTP on loopback.
    c.s3.delete_bucket_policy()
        .bucket(&plan.name)
        .send()
        .await
        .expect("delete policy");

    let upstream = moto::endpoint().trim_start_matches("http://").to_string();
    let (s3_port, _seen) = s3_stand_in(Some(upstream));
    let collector = ArchiveCollector::start(&d, s3_port, "locked");
    tokio::task::block_in_place(|| collector.send_log("checkpoint 12 written"));

    let deadline = Instant::now() + Duration::from_secs(60);
    let object = loop {
        let listed =
            c.s3.list_object_versions()
                .bucket(&plan.name)
                .send()
                .await
                .expect("list");
        if let Some(v) = listed.versions().first() {
            break (
                v.key().unwrap_or_default().to_string(),
                v.version_id().unwrap_or_default().to_string(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "no object in {} within 60 s; the collector said:\n{}",
            plan.name,
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (key, version) = object;
    let shape = regex::Regex::new(&format!("^{}$", partitioned_key("audit/training/"))).expect("regex");
    assert!(shape.is_match(&key), "{key}");

    // HeadObject: moto answers GetObjectRetention with the object itself.
    let head =
        c.s3.head_object()
            .bucket(&plan.name)
            .key(&key)
            .version_id(&version)
            .send()
            .await
            .expect("head the object");
    assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("COMPLIANCE"));
    let until = head.object_lock_retain_until_date().map(|t| t.secs()).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let years = (until - now) as f64 / (365.25 * 86_400.0);
    assert!((6.9..7.1).contains(&years), "retained for {years:.2} years");

    let delete =
        c.s3.delete_object()
            .bucket(&plan.name)
            .key(&key)
            .version_id(&version)
            .send()
            .await;
    assert!(delete.is_err(), "a COMPLIANCE-locked object version was deleted");
    let still =
        c.s3.list_object_versions()
            .bucket(&plan.name)
            .send()
            .await
            .expect("list");
    assert!(
        still
            .versions()
            .iter()
            .any(|v| v.version_id() == Some(version.as_str()))
    );
}
