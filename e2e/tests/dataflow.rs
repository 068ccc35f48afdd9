//! The data path with the real collector: the configuration the operator rendered into the
//! collector ConfigMap, run by ../shared/otelcol/otelcol as a local process (see
//! [`crate::loopback::loopback_config`] for the only changes), with the pipeline's log groups
//! created by the operator in moto first. CRI pod logs of real Pods (kwok runs them on a GPU
//! node) and a fake DCGM exporter's 46 fields × 8 GPUs go in; CloudWatch (moto) is read back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlobs::crd::GpuTelemetryPolicy;
use serde_json::{Value, json};

use crate::loopback::*;
use crate::support::*;

const JOB: &str = "llm-e2e";
const CONTAINER: &str = "trainer";
/// Selected DCGM fields (of the 46 the fake exporter serves).
pub const SELECTED: [&str; 5] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_XID_ERRORS",
];
const NAMESPACE_CW: &str = "E2E/GPU";

fn dimension_sets() -> Vec<Vec<&'static str>> {
    vec![
        vec!["k8s.cluster.name", "k8s.node.name", "gpu"],
        vec!["k8s.cluster.name", "k8s.pod.name"],
    ]
}

/// A training log line with a bearer token, an e-mail address and a customer id (the pipeline
/// redacts the first two, the policy requires the third), tagged with a unique `seq=`.
fn line(pod: &str, phase: &str, i: usize) -> String {
    format!(
        "step={i} loss=0.{i:04} auth=Bearer eyJhbGciOi.{i}x-_~+/abc== user=alice{i}@example.com customer_id={} seq={pod}/{phase}/{i}",
        100_000 + i
    )
}

/// What CloudWatch must hold for [`line`]: every secret replaced.
fn redacted(pod: &str, phase: &str, i: usize) -> String {
    format!("step={i} loss=0.{i:04} auth=Bearer *** user=<email> customer_id=<redacted> seq={pod}/{phase}/{i}")
}

/// The body of a log event: the exporter ships `{"body": ..., "resource": ..., ...}` unless
/// `raw_log` is set.
fn body(message: &str) -> (String, Value) {
    match serde_json::from_str::<Value>(message) {
        Ok(v) if v.get("body").is_some() => (v["body"].as_str().unwrap_or_default().to_string(), v),
        _ => (message.to_string(), Value::Null),
    }
}

/// The lines each pod's stream must hold (redacted), shared with the heartbeat task.
#[derive(Clone, Default)]
struct Expected(Arc<Mutex<BTreeMap<String, Vec<String>>>>);

impl Expected {
    fn add(&self, pod: &str, lines: impl IntoIterator<Item = String>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(pod.to_string()).or_default().extend(lines);
    }

    fn snapshot(&self) -> Lines {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn total(&self) -> usize {
        self.snapshot().values().map(Vec::len).sum()
    }
}

struct Pods {
    /// (name, uid, log file)
    pods: Vec<(String, String, PodLog)>,
}

impl Pods {
    fn write(&self, phase: &str, range: std::ops::Range<usize>, expected: &Expected) -> Result<()> {
        for (pod, _, log) in &self.pods {
            let lines: Vec<String> = range.clone().map(|i| line(pod, phase, i)).collect();
            log.write(&lines)?;
            expected.add(pod, range.clone().map(|i| redacted(pod, phase, i)));
        }
        Ok(())
    }
}

/// A second container of the first pod logs a line a second, as a training job does, so that
/// the logs group stays fresh for DataFlowing; its lines are checked like the others.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// While set, no line is written (the sequence goes on when it is cleared).
    paused: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Heartbeat {
    fn start(log: PodLog, pod: String, expected: Expected) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (flag, hold) = (stop.clone(), paused.clone());
        let task = tokio::spawn(async move {
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                if !hold.load(Ordering::Relaxed) {
                    let l = format!("heartbeat seq={pod}/beat/{i}");
                    log.write(std::slice::from_ref(&l))?;
                    expected.add(&pod, [l]);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        });
        Heartbeat { stop, paused, task }
    }

    /// Holds the heartbeat (`true`) or lets it go on.
    fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::Relaxed);
    }

    async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// What a log group held, by stream: (body, the whole event as JSON).
type Delivered = BTreeMap<String, Vec<(String, Value)>>;
/// Lines by pod.
type Lines = BTreeMap<String, Vec<String>>;
/// A read of the logs group with the expected lines before and after it.
type Read = (Delivered, Lines, Lines);

/// Waits until every stream holds every line expected when the read started (distinct lines: a
/// line sent twice across an outage does not stand in for one still missing, which CI showed
/// ending the wait one heartbeat early); returns
/// what was read with the expectations from before and after the read (the heartbeat writes on).
async fn wait_delivered(
    aws: &mlobs::aws::AwsClients,
    group: &str,
    expected: &Expected,
    timeout: Duration,
    collector: &Collector,
) -> Result<Read> {
    wait_for(&format!("log lines in {group}"), timeout, async || {
        let before = expected.snapshot();
        let streams = events_by_stream(aws, group).await?;
        let got: Delivered = streams
            .into_iter()
            .map(|(s, events)| (s, events.iter().map(|m| body(m)).collect()))
            .collect();
        for (pod, want) in &before {
            let have: BTreeSet<&String> = got.get(pod).into_iter().flatten().map(|(b, _)| b).collect();
            let missing: Vec<&String> = want.iter().filter(|l| !have.contains(l)).collect();
            if !missing.is_empty() {
                return not_yet(format!(
                    "stream {pod}: {} of {} lines not there yet, first {:?}",
                    missing.len(),
                    want.len(),
                    &missing[..missing.len().min(3)]
                ));
            }
        }
        Ok((got, before, expected.snapshot()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\ncollector log:\n{}", collector.log_tail(30)))
}

/// Every stream is a pod's and holds each line, redacted: all lines written before the read, and
/// nothing that was not written by the time it ended; each once, except lines in `may_repeat`.
/// Returns the lines delivered more than once.
fn check_delivery((got, before, after): &Read, may_repeat: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    let streams: BTreeSet<&String> = got.keys().collect();
    let pods: BTreeSet<&String> = after.keys().collect();
    ensure!(
        streams == pods,
        "log streams {streams:?}, expected one per pod {pods:?}"
    );
    let mut repeated = BTreeSet::new();
    for (pod, want) in after {
        let have: Vec<&String> = got[pod].iter().map(|(b, _)| b).collect();
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for b in &have {
            *counts.entry(b).or_default() += 1;
        }
        let dups: Vec<_> = counts
            .iter()
            .filter(|(l, n)| **n > 1 && !may_repeat.contains(**l))
            .collect();
        ensure!(
            dups.is_empty(),
            "stream {pod}: lines delivered more than once: {dups:?}"
        );
        repeated.extend(counts.iter().filter(|(_, n)| **n > 1).map(|(l, _)| (*l).clone()));
        let have_set: BTreeSet<&String> = have.iter().copied().collect();
        let must: BTreeSet<&String> = before.get(pod).into_iter().flatten().collect();
        let may: BTreeSet<&String> = want.iter().collect();
        let missing: Vec<_> = must.difference(&have_set).take(5).collect();
        let extra: Vec<_> = have_set.difference(&may).take(5).collect();
        ensure!(
            missing.is_empty() && extra.is_empty(),
            "stream {pod}: missing {missing:?}, unexpected (unredacted?) {extra:?}"
        );
    }
    Ok(repeated)
}

fn check_exactly_once(read: &Read) -> Result<()> {
    check_delivery(read, &BTreeSet::new()).map(|_| ())
}

/// The size of an EMF event without its metrics (their value fields and declarations): what
/// every event costs whatever the number of selected fields.
fn emf_base_bytes(event: &str) -> Result<usize> {
    let mut v: Value = serde_json::from_str(event).context("EMF event is JSON")?;
    let names: Vec<String> = v["_aws"]["CloudWatchMetrics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["Metrics"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["Name"].as_str().map(String::from))
        .collect();
    let object = v.as_object_mut().context("EMF event object")?;
    for n in &names {
        object.remove(n);
    }
    for m in v["_aws"]["CloudWatchMetrics"].as_array_mut().into_iter().flatten() {
        m["Metrics"] = json!([]);
    }
    Ok(serde_json::to_string(&v)?.len())
}

/// Publishes `IncomingLogEvents` for `groups` every 15 s until dropped, as CloudWatch Logs does
/// each minute for groups receiving events (moto publishes nothing). A failed publication is
/// printed: the operator then reads the groups' streams, which the test checks anyway.
fn publish_while_flowing(aws: &mlobs::aws::AwsClients, groups: [String; 2]) -> AbortOnDrop {
    let aws = aws.clone();
    AbortOnDrop(tokio::spawn(async move {
        loop {
            if let Err(e) = put_incoming_log_events(&aws, &groups).await {
                println!("publishing IncomingLogEvents: {e:#}");
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    }))
}

async fn wait_condition(
    c: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Result<(Duration, String)> {
    let start = Instant::now();
    // Data flow is read only while the collectors serve: a kwok node flap leaves their pods
    // Ready=False (see `heal_node_flap`), which CI showed holding DataFlowing for 150 s.
    let what = format!("{type_}={status}");
    let reason = wait_for_pipeline(c, ns, name, &what, timeout, |p| match condition(p, type_) {
        Some(cond) if cond.status == status => Ok(cond.reason.clone()),
        _ => not_yet(conditions_summary(p)),
    })
    .await?;
    Ok((start.elapsed(), reason))
}

#[tokio::test]
async fn the_real_collector_delivers_redacted_pod_logs_per_pod_stream_and_only_selected_gpu_metrics() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "dataflow").await?;
    let ns = guard.name.as_str();
    let aws = aws().await?;

    // The policy requires a redaction the pipeline does not list.
    let required = json!({"logs": {"requiredRedactions": [
        {"name": "customer-ids", "pattern": "customer_id=[0-9]+", "replacement": "customer_id=<redacted>"}]}});
    Api::<GpuTelemetryPolicy>::all(c.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(json!({"spec": required})))
        .await
        .context("adding a required redaction to the test's policy")?;

    let name = "train";
    let p = pipeline(
        ns,
        name,
        json!({
            "logs": {
                "jobIdLabel": "training.kubeflow.org/job-name",
                "redaction": [
                    {"name": "bearer-tokens", "pattern": "Bearer [A-Za-z0-9._~+/-]+=*", "replacement": "Bearer ***"},
                    {"name": "emails", "pattern": "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}", "replacement": "<email>"},
                ],
            },
            "metrics": {
                "dcgm": {"scrapeInterval": "5s", "metrics": SELECTED},
                "cloudwatch": {"namespace": NAMESPACE_CW, "dimensions": dimension_sets()},
            },
            "collector": {"batch": {"timeout": "1s"}},
            "resyncInterval": "30s",
            // Longer than scrape (5 s) + batch (1 s); short so that a stop shows within a minute.
            "dataFlow": {"gracePeriod": "20s"},
        }),
    )?;
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, name).await?;
    let st = p.status.clone().context("status")?;
    let groups = st.aws.clone().context("status.aws")?.log_group_arns;
    let logs_group = log_group_name(groups.first().context("logs group")?)?;
    let metrics_group = log_group_name(groups.get(1).context("metrics group")?)?;
    ensure!(
        log_group(&aws, &logs_group).await?.is_some(),
        "the operator created {logs_group}"
    );

    let rendered = rendered_config(&c, ns, name).await?;

    // Real Pods on one GPU node: their uids name the log directories and k8sattributes finds them.
    let node = gpu_nodes(&c).await?.into_iter().next().context("a GPU node")?;
    let pods_api = Api::<Pod>::namespaced(c.clone(), ns);
    let mut pods = Vec::new();
    let tmp = std::env::temp_dir().join(format!("mlobs-dataflow-{}", random_suffix()));
    let pods_dir = tmp.join("var/log/pods");
    std::fs::create_dir_all(&pods_dir)?;
    for i in 0..2 {
        let pod_name = format!("{JOB}-worker-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod_name, "labels": {"training.kubeflow.org/job-name": JOB}},
            "spec": {"nodeName": node, "containers": [{"name": CONTAINER, "image": "trainer:1"}],
                "tolerations": [{"operator": "Exists"}]},
        }))?;
        let pod = pods_api
            .create(&PostParams::default(), &pod)
            .await
            .context("creating a worker pod")?;
        let uid = pod.metadata.uid.clone().context("pod uid")?;
        let log = PodLog::new(&pods_dir, ns, &pod_name, &uid, CONTAINER)?;
        pods.push((pod_name, uid, log));
    }
    let pods = Pods { pods };
    let dcgm = FakeDcgm::start(
        &node,
        pods.pods.iter().map(|(p, _, _)| (ns.to_string(), p.clone())).collect(),
    )
    .await?;

    // The collector, as its own ServiceAccount.
    let sa = format!("mlobs-{name}");
    let kubeconfig = tmp.join("collector-kubeconfig");
    service_account_kubeconfig(ns, &sa, &kubeconfig)?;
    let mut proxy = Proxy::start(&env("MLOBS_E2E_MOTO_URL")?.replace("http://", "")).await?;
    let lb = Loopback {
        pods_dir: pods_dir.clone(),
        storage_dir: tmp.join("storage"),
        aws_endpoint: proxy.url(),
        kubeconfig,
        dcgm_addr: dcgm.addr.clone(),
        health_port: free_port()?,
        telemetry_port: free_port()?,
    };
    let config = loopback_config(&rendered, &lb)?;
    let collector = Collector::start(&config, &tmp, &node, lb.health_port, 1).await?;
    // filelog reads files that appear after its first poll from their start.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. Lines arrive once each, redacted, one stream per pod.
    let expected = Expected::default();
    let first_line = Instant::now();
    pods.write("first", 0..50, &expected)?;
    let (pod0, uid0) = (pods.pods[0].0.clone(), pods.pods[0].1.clone());
    let beat = PodLog::new(&pods_dir, ns, &pod0, &uid0, "heartbeat")?;
    let heartbeat = Heartbeat::start(beat, pod0, expected.clone());
    let read = wait_delivered(&aws, &logs_group, &expected, Duration::from_secs(90), &collector).await?;
    println!(
        "first lines delivered {:.1} s after they were written",
        first_line.elapsed().as_secs_f64()
    );
    check_exactly_once(&read)?;
    // k8sattributes found each Pod through the API server with the collector's own RBAC.
    for (pod, events) in &read.0 {
        let resource = &events[0].1["resource"];
        ensure!(
            resource["k8s.pod.name"] == pod.as_str(),
            "resource of {pod}: {resource}"
        );
        ensure!(
            resource["ml.job.id"] == JOB,
            "k8sattributes added the job id of {pod}: {resource}"
        );
        ensure!(
            resource["k8s.cluster.name"] == CLUSTER_NAME,
            "cluster name on {pod}: {resource}"
        );
    }

    // 2. GPU metrics: only the selected fields, the declared dimension sets, the namespace.
    // EMF lists a set's dimensions in its own order: compare sets of sets.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let declared: BTreeSet<Vec<String>> = dimension_sets()
        .into_iter()
        .map(|s| sorted(s.into_iter().map(String::from).collect()))
        .collect();
    let workers: BTreeSet<String> = pods.pods.iter().map(|(p, _, _)| p.clone()).collect();
    let mut gpu_pods = BTreeSet::new();
    let emf = wait_for(
        "EMF events with every selected field",
        Duration::from_secs(90),
        async || {
            let events: Vec<String> = events_by_stream(&aws, &metrics_group)
                .await?
                .into_values()
                .flatten()
                .collect();
            let names: BTreeSet<String> = events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .flat_map(|v| {
                    v["_aws"]["CloudWatchMetrics"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|m| m["Metrics"].as_array().cloned().unwrap_or_default())
                        .filter_map(|m| m["Name"].as_str().map(String::from))
                        .collect::<Vec<_>>()
                })
                .collect();
            if names.len() < SELECTED.len() {
                return not_yet(format!(
                    "{} events, metric names {names:?} (scrapes: {})",
                    events.len(),
                    dcgm.scrapes()
                ));
            }
            Ok(events)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\ncollector log:\n{}", collector.log_tail(30)))?;
    let selected: BTreeSet<&str> = SELECTED.into_iter().collect();
    let mut delivered_names = BTreeSet::new();
    let mut sets_seen = BTreeSet::new();
    let mut bytes = 0usize;
    let (mut base_bytes, mut metric_entries) = (0usize, 0usize);
    for e in &emf {
        bytes += e.len();
        base_bytes += emf_base_bytes(e)?;
        let v: Value = serde_json::from_str(e).with_context(|| format!("EMF event is JSON: {e}"))?;
        for m in v["_aws"]["CloudWatchMetrics"].as_array().context("CloudWatchMetrics")? {
            ensure!(m["Namespace"] == NAMESPACE_CW, "namespace {}", m["Namespace"]);
            for set in m["Dimensions"].as_array().context("Dimensions")? {
                let set: Vec<String> = set
                    .as_array()
                    .context("a dimension set")?
                    .iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect();
                sets_seen.insert(sorted(set));
            }
            for metric in m["Metrics"].as_array().context("Metrics")? {
                metric_entries += 1;
                delivered_names.insert(metric["Name"].as_str().unwrap_or_default().to_string());
            }
        }
        if let Some(pod) = v["k8s.pod.name"].as_str() {
            gpu_pods.insert(pod.to_string());
        }
        // No unselected field anywhere in the event, declared or not (labels such as
        // DCGM_FI_DRIVER_VERSION are not fields).
        let unselected: Vec<&String> = v
            .as_object()
            .context("EMF event object")?
            .keys()
            .filter(|k| DCGM_FIELDS.iter().any(|(f, _)| f == k) && !selected.contains(k.as_str()))
            .collect();
        ensure!(
            unselected.is_empty(),
            "unselected fields reached CloudWatch: {unselected:?}"
        );
    }
    let delivered: BTreeSet<&str> = delivered_names.iter().map(String::as_str).collect();
    ensure!(
        delivered == selected,
        "EMF metrics {delivered:?}, selected {selected:?}"
    );
    ensure!(
        sets_seen == declared,
        "EMF dimension sets {sets_seen:?}, declared {declared:?}"
    );
    // k8s.pod.name on a GPU metric is the pod using the GPU, never the exporter.
    ensure!(
        gpu_pods == workers,
        "k8s.pod.name on GPU metrics {gpu_pods:?}, expected the workers {workers:?}"
    );
    let events = emf.len().max(1) as f64;
    println!(
        "EMF: {} events, {} metric names delivered of {} selected ({} served per GPU), {:.0} bytes per event: \
         {:.0} without its metrics + {:.1} per metric",
        emf.len(),
        delivered.len(),
        SELECTED.len(),
        DCGM_FIELDS.len(),
        bytes as f64 / events,
        base_bytes as f64 / events,
        (bytes - base_bytes) as f64 / metric_entries.max(1) as f64,
    );

    // DataFlowing: the operator reads the newest event time of both log groups. CloudWatch
    // publishes `IncomingLogEvents` each minute for every group receiving events; moto does not,
    // so the test does while the collector delivers, as for a real account. Without it the test
    // depended on timing: once another test of the same operator published the metric for its
    // groups, a resync trusted the listing's silence about these groups
    // (`BatchedReads::unchanged_since_read`) and never read their streams again (CI: DataFlowing
    // not True after 150 s while both groups held events).
    let publisher = publish_while_flowing(&aws, [logs_group.clone(), metrics_group.clone()]);
    let (_, reason) = wait_condition(&c, ns, name, "DataFlowing", "True", Duration::from_secs(150)).await?;
    println!(
        "DataFlowing=True ({reason}) {:.1} s after the first line was written",
        first_line.elapsed().as_secs_f64()
    );
    let p = pipelines(&c, ns).get(name).await?;
    let telemetry = p.status.and_then(|s| s.telemetry).context("status.telemetry")?;
    ensure!(
        telemetry.last_log_event_time.is_some() && telemetry.last_metric_event_time.is_some(),
        "event times in status: {telemetry:?}"
    );

    // 3. An AWS outage of 20 s while lines are written: the file_storage queue keeps them.
    // A request cut off mid-flight may have been stored before its response was lost; the
    // exporter then sends it again (at-least-once). Only lines written before the outage can be
    // in such a request.
    let in_flight: BTreeSet<String> = expected.snapshot().into_values().flatten().collect();
    proxy.down();
    let outage = Instant::now();
    for chunk in 0..4 {
        pods.write("outage", chunk * 10..chunk * 10 + 10, &expected)?;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("moto unreachable for {:.1} s", outage.elapsed().as_secs_f64());
    proxy.up().await?;
    let read = wait_delivered(&aws, &logs_group, &expected, Duration::from_secs(120), &collector).await?;
    let resent = check_delivery(&read, &in_flight)?;
    println!(
        "after the outage: nothing lost; {} line(s) of a request cut off by the outage sent twice",
        resent.len()
    );

    // 4. A collector restart: lines written while it is down arrive, old ones are not sent again
    //    (filelog's checkpoint lives in the same file_storage). The heartbeat holds from just
    //    before the SIGTERM until the collector is back: a line read in the instant of the
    //    shutdown can be lost by the collector itself, whose filelog checkpoint may move past
    //    entries still in its own pipeline (upstream opentelemetry-collector-contrib#31074); the
    //    lines under test are those written while it is down.
    heartbeat.pause(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_delivered(&aws, &logs_group, &expected, Duration::from_secs(60), &collector).await?;
    collector.stop().await?;
    pods.write("restart", 0..20, &expected)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let collector = Collector::start(&config, &tmp, &node, lb.health_port, 2).await?;
    heartbeat.pause(false);
    // No line sent again by the restart: the only repeats are the outage's, already counted.
    let read = wait_delivered(&aws, &logs_group, &expected, Duration::from_secs(90), &collector).await?;
    ensure!(check_delivery(&read, &resent)? == resent, "the restart re-sent lines");
    heartbeat.stop().await?;
    // Anything re-sent would arrive with or soon after the new lines: wait out a few batches.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read = wait_delivered(&aws, &logs_group, &expected, Duration::from_secs(30), &collector).await?;
    ensure!(check_delivery(&read, &resent)? == resent, "the restart re-sent lines");
    let delivered: usize = read.0.values().map(Vec::len).sum();
    ensure!(
        delivered == expected.total() + resent.len(),
        "{delivered} lines delivered, {} written, {} sent twice in the outage",
        expected.total(),
        resent.len()
    );
    println!(
        "log lines: {} written, {} distinct delivered ({} twice, cut off by the outage), {} streams (one per pod)",
        expected.total(),
        delivered - resent.len(),
        resent.len(),
        read.0.len()
    );

    // 5. The collector stops: DataFlowing turns False once the grace period has passed.
    drop(publisher);
    collector.stop().await?;
    let (after, reason) = wait_condition(&c, ns, name, "DataFlowing", "False", Duration::from_secs(150)).await?;
    ensure!(
        reason == "NoRecentLogs" || reason == "NoRecentMetrics",
        "DataFlowing=False reason {reason}"
    );
    // Informative: Ready does not follow it (other tests may add GPU nodes meanwhile, so only the
    // reason is checked, not Ready itself).
    let p = pipelines(&c, ns).get(name).await?;
    let ready = condition(&p, "Ready").context("Ready")?;
    ensure!(
        !ready.reason.starts_with("NoRecent") && !ready.message.contains("DataFlowing"),
        "Ready follows DataFlowing: {}",
        conditions_summary(&p)
    );
    println!(
        "DataFlowing=False ({reason}) {:.1} s after the collector stopped (grace 20 s, resync 30 s)",
        after.as_secs_f64()
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// A resync takes a group whose data flows from CloudWatch's own per-group metric, not from its
/// streams: moto holds no event in the pipeline's groups, only the `IncomingLogEvents` datapoints
/// CloudWatch Logs would publish for them.
#[tokio::test]
async fn a_resync_finds_data_flowing_in_cloudwatchs_per_group_metric_without_any_stream_read() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "flowmetric").await?;
    let ns = guard.name.as_str();
    let name = "metric-read";
    // 30 s resync periods: the metric listing of a period names the groups read in the one before.
    crate::pipeline::ready_pipeline_with_collector(&c, ns, name, json!({"resyncInterval": "30s"})).await?;
    let aws = aws().await?;
    let prefix = format!("/aws/eks/{CLUSTER_NAME}/{ns}/{name}/");
    let published = std::time::SystemTime::now();
    ensure!(
        publish_incoming_log_events(&aws, &prefix).await? == 2,
        "two log groups under {prefix}"
    );
    let (after, reason) = wait_condition(&c, ns, name, "DataFlowing", "True", Duration::from_secs(150)).await?;
    println!(
        "DataFlowing=True ({reason}) {:.1} s after the metric was published",
        after.as_secs_f64()
    );
    for suffix in ["logs", "metrics"] {
        let group = format!("{prefix}{suffix}");
        let streams = aws.logs.describe_log_streams().log_group_name(&group).send().await?;
        ensure!(
            streams.log_streams().is_empty(),
            "{group} has streams: the test must hold none"
        );
    }
    let p = pipelines(&c, ns).get(name).await?;
    let recorded = (p.status.as_ref().and_then(|s| s.telemetry.as_ref()))
        .and_then(|t| t.last_log_event_time.clone())
        .context("status.telemetry.lastLogEventTime")?;
    let at: k8s_openapi::jiff::Timestamp = recorded.parse()?;
    let minute = published.duration_since(std::time::UNIX_EPOCH)?.as_secs() / 60 * 60;
    // The datapoint's timestamp is taken a moment after `published`: the same minute or the next.
    let recorded_minute = u64::try_from(at.as_second())?;
    ensure!(
        recorded_minute == minute || recorded_minute == minute + 60,
        "lastLogEventTime {recorded}: the start of the minute the metric was published in"
    );
    Ok(())
}

#[tokio::test]
async fn the_status_write_that_turns_collector_ready_true_says_since_when_dataflowing_waits() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "flowready").await?;
    let ns = guard.name.as_str();
    let name = "ready-msg";
    // Two nodes of its own (a label only this test sets): a change of the collector then rolls
    // out pod by pod, so CollectorReady goes False (RollingOut) while a pod stays ready and
    // DataFlowing stays WaitingForData, and turns True again when the second pod is replaced.
    let gpu = gpu_nodes(&c).await?;
    ensure!(gpu.len() >= 2, "two GPU nodes needed, the cluster has {}", gpu.len());
    let label = format!("mlobs.io/{ns}");
    let nodes_api = Api::<k8s_openapi::api::core::v1::Node>::all(c.clone());
    let mine = &gpu[gpu.len() - 2..];
    for node in mine {
        nodes_api
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {&label: "yes"}}})),
            )
            .await
            .with_context(|| format!("labelling node {node}"))?;
    }
    let result = async {
        policies(&c)
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"nodeSelector": {"nvidia.com/gpu.present": "true", &label: "yes"}}})),
            )
            .await
            .context("giving the policy the two nodes")?;
        let spec = json!({"dataFlow": {"gracePeriod": "6h"}});
        crate::pipeline::ready_pipeline_with_collector_on(&c, ns, name, spec, 2).await?;
        let api = pipelines(&c, ns);
        let api = &api;
        let first = wait_for("DataFlowing WaitingForData", READY_TIMEOUT, async || {
            let p = api.get(name).await?;
            let flow = condition(&p, "DataFlowing").context("no DataFlowing")?;
            ensure!(flow.reason == "WaitingForData", "{}", conditions_summary(&p));
            let ready = condition(&p, "CollectorReady").context("no CollectorReady")?;
            Ok(ready.last_transition_time.clone())
        })
        .await?;
        // A collector change (its configuration, so its pod template) rolls the pods out.
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"logs": {"exclude": ["/var/log/pods/*/e2e-never/*.log"]}}})),
        )
        .await?;
        let p = wait_for_pipeline(
            &c,
            ns,
            name,
            "CollectorReady True again after the rollout",
            READY_TIMEOUT,
            |p| {
                let ready = condition(p, "CollectorReady").context("no CollectorReady")?;
                ensure!(
                    ready.status == "True" && ready.last_transition_time.0 > first.0,
                    "{}",
                    conditions_summary(p)
                );
                Ok(p.clone())
            },
        )
        .await?;
        // Polled every 250 ms: this copy is the write that turned CollectorReady True or one
        // soon after; before the fix, DataFlowing kept the message of the rollout (or of the
        // first grace period) until the next resync read, 10 minutes later.
        let since = condition(&p, "CollectorReady").map(|c| c.last_transition_time.0.to_string());
        let flow = condition(&p, "DataFlowing").context("no DataFlowing")?;
        let since = since.context("no CollectorReady")?;
        ensure!(
            flow.reason == "WaitingForData" && flow.message.contains(&format!("the collector is ready since {since}")),
            "CollectorReady turned True at {since}, but DataFlowing says: {} {}",
            flow.reason,
            flow.message
        );
        println!("DataFlowing: {}", flow.message);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    for node in mine {
        nodes_api
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {&label: null}}})),
            )
            .await
            .with_context(|| format!("unlabelling node {node}"))?;
    }
    result
}
