//! `make bench` scale harness: the real controllers against the in-process API fake and moto, at
//! N pipelines over 20 GPU nodes. Prints a markdown table and writes target/scale-bench.json.
//!
//! `MLOBS_SCALE_N=100,1000` picks the sizes (default both). Goals (from the issue) are printed next
//! to each figure; a miss is reported, never hidden.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use mlobs::aws::calls::is_mutating;
use mlobs::controller::Metrics;
use mlobs::crd::MLObservabilityPipeline;
use mlobs::desired::Context;
use mlobs::desired::cost::{Fleet, Prices, estimate};
use serde_json::{Value, json};
use support::apifake::ApiFake;
use support::moto;
use support::operator::Operator;

const NODES: usize = 20;
const NAMESPACES: usize = 10;
const OIDC: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/BENCH";

/// Peak resident set of this process: the controllers, plus the in-process API fake's objects and
/// its last 10,000 watch events (moto runs in its own process).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn name(i: usize) -> (String, String) {
    (format!("team-{}", i % NAMESPACES), format!("job-{i:04}"))
}

fn condition_true(p: &Value, t: &str) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
}

async fn wait_all(fake: &ApiFake, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Duration> {
    let start = Instant::now();
    let ok = fake
        .wait_until(timeout, |f| {
            let all = f.list("mlobs.io/v1alpha1", "mlobservabilitypipelines");
            all.len() == n && all.iter().all(&pred)
        })
        .await;
    ok.then(|| start.elapsed())
}

fn aws_reads(c: &mlobs::aws::CallCounter) -> u64 {
    c.count(|k| !is_mutating(&k.operation))
}

#[derive(serde::Serialize)]
struct Row {
    pipelines: usize,
    aws_ready_seconds: f64,
    all_ready_seconds: f64,
    kube_writes_per_noop_reconcile: f64,
    aws_reads_full_resync: u64,
    describe_log_groups_full_resync: u64,
    aws_reads_goal: u64,
    baseline_per_resource_reads: u64,
    full_resync_seconds: f64,
    peak_rss_mib: f64,
}

async fn run(n: usize) -> Row {
    let fake = ApiFake::new();
    // The fake shares this process: keep its own footprint down so RSS is mostly the controller's.
    fake.drop_request_bodies();
    let op = Operator::start_on(fake.clone(), moto::clients().await, moto::unique("bench"), NODES).await;
    let (aws, metrics) = (op.aws.clone(), op.metrics.clone());

    for i in 0..NAMESPACES {
        fake.put_object(
            "v1",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i}")}}),
        );
    }
    let started = Instant::now();
    for i in 0..n {
        let (ns, nm) = name(i);
        let p: MLObservabilityPipeline = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": nm, "namespace": ns},
            "spec": {"identity": {"mode": "IRSA", "oidcProviderArn": OIDC}}
        }))
        .expect("pipeline");
        Api::<MLObservabilityPipeline>::namespaced(fake.client(), &ns)
            .create(&PostParams::default(), &p)
            .await
            .expect("create");
    }
    let timeout = Duration::from_secs(60 + n as u64);
    let aws_ready = ["KmsKeyReady", "LogGroupsReady", "IamRoleReady"];
    wait_all(&fake, n, timeout, |p| aws_ready.iter().all(|t| condition_true(p, t)))
        .await
        .expect("every pipeline's AWS side ready");
    let aws_ready_seconds = started.elapsed().as_secs_f64();

    // Play the kubelet: every collector DaemonSet scheduled and ready.
    let daemon_sets = || fake.list("apps/v1", "daemonsets");
    fake.wait_until(timeout, |_| daemon_sets().len() >= n).await;
    for mut ds in daemon_sets() {
        let generation = ds["metadata"]["generation"].clone();
        ds["status"] = json!({"desiredNumberScheduled": NODES, "numberReady": NODES, "updatedNumberScheduled": NODES,
            "currentNumberScheduled": NODES, "numberMisscheduled": 0, "observedGeneration": generation});
        fake.put_object("apps/v1", "daemonsets", ds);
    }
    wait_all(&fake, n, timeout, |p| condition_true(p, "Ready"))
        .await
        .expect("every pipeline Ready");
    let all_ready_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // No-op reconcile of every pipeline: a node label changes (all selectors still match it).
    let reconciles = |m: &Metrics| -> f64 {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("mlobs_reconciles_total{") && l.contains("controller=\"pipeline\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (writes0, rec0) = (fake.writes_excluding_events(), reconciles(&metrics));
    let mut node = fake.object("v1", "nodes", None, "gpu-0").expect("node");
    node["metadata"]["labels"]["bench"] = json!("noop");
    fake.put_object("v1", "nodes", node);
    let deadline = Instant::now() + timeout;
    while reconciles(&metrics) < rec0 + n as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let noop_reconciles = (reconciles(&metrics) - rec0).max(1.0);
    let kube_writes_per_noop_reconcile = (fake.writes_excluding_events() - writes0) as f64 / noop_reconciles;

    // Full resync: every pipeline's AWS side observed (a requested reconcile forces it now).
    let (reads0, dlg0) = (aws_reads(&aws.calls), aws.calls.of("DescribeLogGroups"));
    let resync_started = Instant::now();
    for i in 0..n {
        let (ns, nm) = name(i);
        let patch = json!({"metadata": {"annotations": {"mlobs.io/reconcile-requested-at": "resync-1"}}});
        Api::<MLObservabilityPipeline>::namespaced(fake.client(), &ns)
            .patch(&nm, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("request resync");
    }
    // Done when the AWS read count stops moving.
    let mut last = aws_reads(&aws.calls);
    let mut settled_at = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = aws_reads(&aws.calls);
        if now != last {
            last = now;
            settled_at = Instant::now();
        } else if settled_at.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let full_resync_seconds = (settled_at - resync_started).as_secs_f64();
    let aws_reads_full_resync = aws_reads(&aws.calls) - reads0;
    let describe_log_groups_full_resync = aws.calls.of("DescribeLogGroups") - dlg0;

    op.stop().await;
    Row {
        pipelines: n,
        aws_ready_seconds,
        all_ready_seconds,
        kube_writes_per_noop_reconcile,
        aws_reads_full_resync,
        describe_log_groups_full_resync,
        aws_reads_goal: n as u64 / 50 + 3,
        // One DescribeLogGroups per log group (two per pipeline), as a per-resource observer makes.
        baseline_per_resource_reads: 2 * n as u64,
        full_resync_seconds,
        peak_rss_mib: peak_rss_mib(),
    }
}

/// Data-plane figures from the desired state of the full sample under the default policy.
fn data_plane() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let docs = |p: &str| mlobs::input::parse_documents(p, &read(p)).unwrap_or_default();
    let pipeline = docs("config/samples/pipeline-full.yaml")
        .into_iter()
        .find_map(|d| match d {
            mlobs::input::Document::Pipeline(p) => Some(*p),
            _ => None,
        });
    let policy = docs("config/samples/policy-default.yaml")
        .into_iter()
        .find_map(|d| match d {
            mlobs::input::Document::Policy(p) => Some(*p),
            _ => None,
        });
    let Some(p) = pipeline else {
        return json!({"error": "sample not found"});
    };
    let Ok(d) = mlobs::desired::build(&p, policy.as_ref(), &Context::default()) else {
        return json!({"error": "sample does not build"});
    };
    let fleet = Fleet {
        nodes: 20,
        instance_type: "p4d.24xlarge".into(),
        gpus_per_node: None,
    };
    match estimate(&d.effective, &fleet, &Prices::default(), None) {
        Ok(e) => json!({
            "nodes": 20, "instanceType": "p4d.24xlarge",
            "seriesPerNode": e.series_per_node, "unfilteredSeriesPerNode": e.unfiltered.series_per_node,
            "metricsUsdPerMonth": e.total_usd,
            "enhancedUsdPerMonth": e.enhanced.as_ref().map(|x| x.total_usd),
            "enhancedToPipelineRatio": e.enhanced_to_pipeline_ratio,
        }),
        Err(err) => json!({"error": err.to_string()}),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then a 3-pipeline smoke
    // run checks the harness itself and writes nothing under the bench's name.
    let bench = std::env::args().any(|a| a == "--bench");
    let default_sizes = if bench { "100,1000" } else { "3" };
    let sizes: Vec<usize> = std::env::var("MLOBS_SCALE_N")
        .ok()
        .filter(|_| bench)
        .unwrap_or_else(|| default_sizes.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows: Vec<Row> = sizes.iter().map(|n| rt.block_on(run(*n))).collect();
    let dp = data_plane();

    println!("\n## mlobs scale bench ({NODES} GPU nodes, moto, in-process API fake)\n");
    println!(
        "| pipelines | AWS side ready (s) | all Ready (s) | kube writes per no-op reconcile (goal 0) | AWS reads per full resync (all services) | DescribeLogGroups per resync (goal N/50+3) | per-resource DescribeLogGroups baseline | ratio to baseline | full resync (s, goal < 10) | peak RSS MiB (goal < 40 at 1,000) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} | {} (goal {}) | {} | {:.2} | {:.1} | {:.1} |",
            r.pipelines,
            r.aws_ready_seconds,
            r.all_ready_seconds,
            r.kube_writes_per_noop_reconcile,
            r.aws_reads_full_resync,
            r.describe_log_groups_full_resync,
            r.aws_reads_goal,
            r.baseline_per_resource_reads,
            r.describe_log_groups_full_resync as f64 / r.baseline_per_resource_reads.max(1) as f64,
            r.full_resync_seconds,
            r.peak_rss_mib,
        );
    }
    println!("\nData plane (full sample, default policy, 20 × p4d.24xlarge): {dp}");
    let out = json!({"rows": rows, "dataPlane": dp});
    let file = if bench {
        "target/scale-bench.json"
    } else {
        "target/scale-bench-smoke.json"
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    match std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap_or_default()) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
