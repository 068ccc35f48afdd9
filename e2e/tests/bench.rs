//! The scale bench of `make bench` (issue #18) on the real control plane: e2e/run.sh in bench
//! mode (`MLOBS_E2E_BENCH=1`: ../shared/cluster with 20 kwok GPU nodes, moto, one release-built
//! `mlobs run` as its own process, reading drift events from a moto SQS queue) runs this module
//! alone; `make e2e` skips it.
//!
//! N pipelines (`MLOBS_BENCH_N`, default 1000) in 10 namespaces, each namespace's policy selecting
//! its own node pool (label `mlobs.io/bench-pool`, 2 of the 20 GPU nodes), are created at once; the bench
//! measures the time until all are Ready, the operator's peak RSS (VmHWM of its process), its
//! Kubernetes writes per minute in the steady state, its AWS read calls over one resync interval
//! of every pipeline (per operation), and how long a retention changed outside mlobs takes to be
//! put back once its CloudTrail event is in the queue. Each figure is printed next to its goal;
//! a miss is printed, never hidden, and does not fail the run (only a broken harness does). The
//! figures are written to target/cluster-bench.json.
//!
//! With `MLOBS_E2E_BENCH_SHARDS=M`, e2e/run.sh starts M replicas as `--shard I/M`; the figures
//! are then summed (writes, AWS calls) or maximised (peak RSS) over the replicas, and each
//! shard's own figures are printed and written too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use mlobs::aws::calls::is_mutating;
use mlobs::crd::MLObservabilityPipeline;
use serde_json::json;

use crate::support::*;

const NAMESPACES: usize = 10;
/// The node label of a team's node pool (see the bench).
const POOL_LABEL: &str = "mlobs.io/bench-pool";
/// Every pipeline's resync interval: the AWS reads are counted over one such window.
const RESYNC: Duration = Duration::from_secs(120);
const STEADY_WINDOW: Duration = Duration::from_secs(60);
/// Steady windows measured at most (see the bench).
const STEADY_ATTEMPTS: u32 = 5;
/// The longest wait for the collector DaemonSets to settle before a steady window.
const STEADY_SETTLE: Duration = Duration::from_secs(180);

/// Waits, up to `limit`, until every DaemonSet in `namespaces` is settled
/// ([`daemon_set_settled`]), restarting the pods a kwok node flap left stuck once a minute;
/// returns the ones still unsettled (`namespace/name`).
async fn settle_daemon_sets(c: &kube::Client, namespaces: &[String], limit: Duration) -> Result<Vec<String>> {
    let start = Instant::now();
    let mut last_heal: Option<Instant> = None;
    loop {
        let mut unsettled = vec![];
        for ns in namespaces {
            let sets = Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(c.clone(), ns)
                .list(&ListParams::default())
                .await?;
            unsettled.extend(
                (sets.items.iter())
                    .filter(|ds| !daemon_set_settled(ds))
                    .map(|ds| format!("{ns}/{}", ds.name_any())),
            );
        }
        if unsettled.is_empty() || start.elapsed() > limit {
            return Ok(unsettled);
        }
        if last_heal.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            for ns in namespaces {
                restart_pods_stuck_by_node_flap(c, ns, &ListParams::default()).await?;
            }
            last_heal = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// VmHWM of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}

/// Where a process's resident memory is now, in MiB, from /proc/PID/smaps: the main heap
/// (`[heap]`), anonymous mappings (other malloc arenas, large allocations, thread stacks) and
/// file-backed mappings (the binary and libraries). Tells a live-data problem from allocator
/// retention when the peak is missed.
fn rss_by_mapping(pid: u32) -> Option<BTreeMap<&'static str, f64>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut out = BTreeMap::new();
    let mut kind = "anonymous";
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = line.split_whitespace().nth(5).unwrap_or_default();
            kind = match path {
                "[heap]" => "heap",
                "" => "anonymous",
                p if p.starts_with('[') => "other",
                _ => "file",
            };
        } else if first == "Rss:" {
            let kb: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *out.entry(kind).or_insert(0.0) += kb / 1024.0;
        }
    }
    Some(out)
}

/// AWS calls by operation between two scrapes of the operator's /metrics; failed calls (timeouts
/// included, which may never have reached moto) count under `<operation> (error)`.
fn aws_calls(before: &str, after: &str) -> BTreeMap<String, u64> {
    let (b, a) = (
        metric_samples(before, "mlobs_aws_calls_total"),
        metric_samples(after, "mlobs_aws_calls_total"),
    );
    let mut out = BTreeMap::new();
    for (labels, v) in a {
        let d = v - b.get(&labels).copied().unwrap_or(0.0);
        let op = labels
            .split("operation=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("?")
            .to_string();
        let op = if labels.contains("outcome=\"error\"") {
            format!("{op} (error)")
        } else {
            op
        };
        if d > 0.0 {
            *out.entry(op).or_insert(0) += d as u64;
        }
    }
    out
}

fn kube_writes(text: &str) -> Result<f64> {
    require_metric(
        text,
        "mlobs_kube_writes_total",
        &[],
        &[("resource", "leases"), ("kind", "Lease")],
    )
}

/// Restarts each replica in turn, as a rollout, an eviction or a standby taking over does: the
/// process is stopped (SIGTERM) and started again with its command line while every pipeline of
/// its shard, with its children and AWS resources, is in place, so its first listings return all
/// of them at once. Returns, per replica, its peak RSS (VmHWM, MiB) once it has reconciled as
/// many times as `owned` says it has pipelines (or after [`RESTART_LIMIT`]), and the seconds to
/// that point.
async fn restart_peaks(ops: &[Op], owned: &[usize]) -> Result<Vec<(f64, f64)>> {
    let mut out = vec![];
    for (o, &owned) in ops.iter().zip(owned) {
        o.r.signal("TERM")?;
        let stopping = Instant::now();
        while o.r.alive() {
            anyhow::ensure!(
                stopping.elapsed() < Duration::from_secs(30),
                "replica {} did not stop within 30 s of SIGTERM",
                o.r.identity
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = o.r.restart()?;
        let start = Instant::now();
        while start.elapsed() < RESTART_LIMIT {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let reconciles = match r.metrics().await {
                Ok(m) => metric_sum(&m, "mlobs_reconciles_total", &[], &[]).unwrap_or(0.0),
                Err(_) => 0.0,
            };
            if reconciles >= owned as f64 {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let peak = peak_rss_mib(r.pid).context("the restarted operator's /proc status")?;
        println!(
            "bench: replica {} ({}) restarted with its {owned} pipelines in place: peak RSS {peak:.1} MiB after {secs:.0} s",
            r.identity, o.shard
        );
        out.push((peak, secs));
    }
    Ok(out)
}

/// How long a restarted replica gets to reconcile each of its pipelines once.
const RESTART_LIMIT: Duration = Duration::from_secs(300);

/// One bench replica: its process and the shard in its command line.
struct Op {
    r: Replica,
    shard: mlobs::controller::shard::Shard,
}

fn ops() -> Result<Vec<Op>> {
    replicas()?
        .into_iter()
        .map(|r| {
            let shard = match r.args.windows(2).find(|w| w[0] == "--shard") {
                Some(w) => w[1].parse().map_err(|e: String| anyhow::anyhow!(e))?,
                None => mlobs::controller::shard::Shard::default(),
            };
            Ok(Op { r, shard })
        })
        .collect()
}

/// Sleeps until `into` after the next start of a resync period (periods start at whole multiples
/// of [`RESYNC`] since the epoch: every pipeline's slot lies in a period's first tenth, and the
/// period's shared listings are taken there; `controller::resync`).
async fn until_in_period(into: Duration) {
    let every = RESYNC.as_millis();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let left = (every + into.as_millis() % every - now % every) % every;
    tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0))).await;
}

/// Sleeps until the middle of the next resync period: past every pipeline's slot.
async fn until_mid_resync() {
    until_in_period(RESYNC / 2).await;
}

/// Each replica's metrics at the start and end of one full resync: from the middle of a resync period (see
/// [`until_mid_resync`]) to the middle of the next, so that the window holds each pipeline's
/// slot once and exactly one boundary, where the period's shared listings are taken once. A
/// window from boundary to boundary caught a second listing, or part of it, in run AV: its end
/// (a scrape, then one interval later another) fell just after the next boundary (ListAliases
/// 22 and 14 for 11 pages a listing).
async fn one_resync(ops: &[Op]) -> Result<(Vec<String>, Vec<String>)> {
    until_mid_resync().await;
    let start = scrape(ops).await?;
    // Sleeping until the next middle, not for one interval: the scrape took a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    until_mid_resync().await;
    Ok((start, scrape(ops).await?))
}

/// Waits, up to `limit`, until every pipeline in `namespaces` whose `DataFlowing` is `False` has
/// had its key read in full since (`status.aws.kmsKeyCheckedAt`, where there is one, at or after the condition's
/// lastTransitionTime): the first AWS step after data stops reads the key in full and writes
/// that field. Run AV's steady window caught one such write after a flap, and run AW's one that
/// came 8 minutes after the flap, its pipeline's resync held back by the flap's wave. Returns the
/// wait and the pipelines still waiting for theirs.
async fn settle_data_stops(c: &kube::Client, namespaces: &[String], limit: Duration) -> Result<(Duration, usize)> {
    let start = Instant::now();
    loop {
        let mut waiting = 0;
        for ns in namespaces {
            for p in Api::<MLObservabilityPipeline>::namespaced(c.clone(), ns)
                .list(&ListParams::default())
                .await?
            {
                let stopped = condition(&p, "DataFlowing")
                    .filter(|x| x.status == "False")
                    .map(|x| x.last_transition_time.0);
                let checked = (p.status.as_ref())
                    .and_then(|s| s.aws.as_ref())
                    .and_then(|a| a.kms_key_checked_at.as_ref())
                    .map(|t| t.0);
                if let (Some(t), Some(c)) = (stopped, checked)
                    && c < t
                {
                    waiting += 1;
                }
            }
        }
        if waiting == 0 || start.elapsed() >= limit {
            return Ok((start.elapsed(), waiting));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// /metrics of every replica, in the order of `ops`.
async fn scrape(ops: &[Op]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(ops.len());
    for o in ops {
        out.push(o.r.metrics().await?);
    }
    Ok(out)
}

/// DataFlowing checks put off by the DescribeLogStreams budget so far, over the replicas.
fn stream_checks_put_off(metrics: &[String]) -> f64 {
    (metrics.iter())
        .map(|m| metric_sum(m, "mlobs_stream_reads_deferred_total", &[], &[]).unwrap_or(0.0))
        .sum()
}

/// Waits, up to `limit`, until no DataFlowing check has been put off by the DescribeLogStreams
/// budget for [`STREAM_CHECKS_QUIET`]: after a wave of collectors turning ready (a kwok node flap
/// readies hundreds at once), the checks beyond the budget are read at their reserved times,
/// minutes later at 5 a second, and each read writes its finding; a window opened before that
/// measures the wave, not the steady state. Returns whether the checks settled.
async fn settle_stream_checks(ops: &[Op], limit: Duration) -> Result<bool> {
    let start = Instant::now();
    let mut last = stream_checks_put_off(&scrape(ops).await?);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = stream_checks_put_off(&scrape(ops).await?);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= STREAM_CHECKS_QUIET {
            return Ok(true);
        }
        if start.elapsed() > limit {
            return Ok(false);
        }
    }
}

/// How long no check may have been put off before a steady window opens.
const STREAM_CHECKS_QUIET: Duration = Duration::from_secs(20);

/// `aws_calls` summed over the replicas.
fn aws_calls_all(before: &[String], after: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        for (op, n) in aws_calls(b, a) {
            *out.entry(op).or_insert(0) += n;
        }
    }
    out
}

fn reads_of(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(o, _)| !is_mutating(o.trim_end_matches(" (error)")))
        .map(|(_, v)| v)
        .sum()
}

fn kube_writes_all(texts: &[String]) -> Result<f64> {
    texts.iter().map(|t| kube_writes(t)).sum()
}

/// The operator's read requests to the API server (gets, lists, dry runs; not watches), summed
/// over the replicas.
fn kube_reads_all(texts: &[String]) -> f64 {
    (texts.iter())
        .filter_map(|t| metric_sum(t, "mlobs_kube_reads_total", &[], &[("verb", "watch")]))
        .sum()
}

/// The operator's read requests by `resource verb`, grown from `before` to `after` (all replicas).
fn kube_reads_by_request(before: &[String], after: &[String]) -> BTreeMap<String, f64> {
    grown_by_labels("mlobs_kube_reads_total", before, after, |labels| {
        !labels.contains("verb=\"watch\"")
    })
}

/// The operator's write requests by their labels (resource, verb), grown from `before` to
/// `after` (all replicas): what a steady window's writes were.
fn kube_writes_by_request(before: &[String], after: &[String]) -> BTreeMap<String, f64> {
    grown_by_labels("mlobs_kube_writes_total", before, after, |_| true)
}

/// The samples of counter `metric` (by their labels, those `keep` accepts) grown from `before`
/// to `after`, summed over the replicas.
fn grown_by_labels(
    metric: &str,
    before: &[String],
    after: &[String],
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        let b = metric_samples(b, metric);
        for (labels, v) in metric_samples(a, metric) {
            let grown = v - b.get(&labels).copied().unwrap_or(0.0);
            if grown > 0.0 && keep(&labels) {
                *out.entry(labels).or_insert(0.0) += grown;
            }
        }
    }
    out
}

/// Every pipeline's status in `namespaces`, by `namespace/name`, as JSON leaves (conditions keyed
/// by their type): what a steady window's status writes changed ([`status_changes`]).
async fn statuses(
    c: &kube::Client,
    namespaces: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, serde_json::Value>>> {
    let mut out = BTreeMap::new();
    for ns in namespaces {
        for p in Api::<MLObservabilityPipeline>::namespaced(c.clone(), ns)
            .list(&ListParams::default())
            .await?
        {
            let mut leaves = BTreeMap::new();
            flatten("", &serde_json::to_value(&p.status)?, &mut leaves);
            out.insert(format!("{ns}/{}", p.name_any()), leaves);
        }
    }
    Ok(out)
}

/// `v`'s leaves by path; an array of objects with a `type` is keyed by it (conditions).
fn flatten(path: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&format!("{path}.{k}"), v, out)),
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let key = v
                    .get("type")
                    .and_then(|t| t.as_str())
                    .map_or(i.to_string(), str::to_string);
                flatten(&format!("{path}[{key}]"), v, out);
            }
        }
        leaf => {
            out.insert(path.to_string(), leaf.clone());
        }
    }
}

/// Which status fields changed from `before` to `after`: pipelines by changed path, with one
/// example (pipeline, old value, new value) each.
fn status_changes(
    before: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    after: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> BTreeMap<String, (usize, String)> {
    let mut out: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let null = serde_json::Value::Null;
    for (name, a) in after {
        let Some(b) = before.get(name) else { continue };
        let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for path in paths {
            let (old, new) = (b.get(path).unwrap_or(&null), a.get(path).unwrap_or(&null));
            if old != new {
                let e = out
                    .entry(path.clone())
                    .or_insert_with(|| (0, format!("{name}: {old} -> {new}")));
                e.0 += 1;
            }
        }
    }
    out
}

/// CPU seconds (user + system) used so far by every process named `comm` (the test cluster's
/// processes run on this machine).
fn cpu_seconds(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for e in dir.flatten() {
        let p = e.path();
        if std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == comm) {
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split(' ').collect();
            ticks += (f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
                + (f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
        }
    }
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

struct Figure {
    name: &'static str,
    value: String,
    goal: String,
    met: Option<bool>,
}

fn figure(name: &'static str, value: String, goal: String, met: Option<bool>) -> Figure {
    Figure { name, value, goal, met }
}

/// The operator's own part is done: the AWS side is ready and the collector DaemonSet applied
/// (its rollout is then the DaemonSet controller's, kwok's and the scheduler's).
fn operator_done(p: &MLObservabilityPipeline) -> bool {
    let aws = ["KmsKeyReady", "LogGroupsReady", "IamRoleReady"]
        .iter()
        .all(|t| condition_status(p, t) == "True");
    aws && p.status.as_ref().is_some_and(|s| s.collector.is_some())
}

/// How many more pods the fullest GPU node takes (its `pods` capacity less the pods bound to it):
/// every pipeline runs one collector pod on every GPU node, so at most this many pipelines can be
/// Ready on this cluster.
async fn collector_room(c: &kube::Client) -> Result<i64> {
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(c.clone())
        .list(&ListParams::default().labels(GPU_NODE_LABEL))
        .await?;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::all(c.clone());
    let mut room = i64::MAX;
    for n in &nodes.items {
        let capacity = (n.status.as_ref())
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("pods"))
            .and_then(|q| q.0.parse::<i64>().ok())
            .unwrap_or(110);
        let bound = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", n.name_any())))
            .await?
            .items
            .len() as i64;
        room = room.min(capacity - bound);
    }
    Ok(room)
}

/// (Ready, operator done, total) of the bench's pipelines, from a watch cache (a LIST of 1,000
/// full pipelines every 2 s was 200 MB of responses per minute: API server load the operator
/// would then be measured against).
fn counts(all: &kube::runtime::reflector::Store<MLObservabilityPipeline>, prefix: &str) -> (usize, usize, usize) {
    let list = all.state();
    let ours: Vec<&MLObservabilityPipeline> = (list.iter())
        .map(|p| p.as_ref())
        .filter(|p| p.namespace().is_some_and(|n| n.starts_with(prefix)))
        .collect();
    let ready = ours.iter().filter(|p| is_ready(p)).count();
    let done = ours.iter().filter(|p| operator_done(p)).count();
    (ready, done, ours.len())
}

/// kube-controller-manager's client rate limit for each of its controllers (`--kube-api-qps`,
/// default 20 requests a second; ../shared/cluster starts it with the default).
const KCM_QPS: f64 = 20.0;

/// The API server's request counts by `verb resource[/subresource]` (its
/// `apiserver_request_total`, all codes and clients).
async fn apiserver_requests(c: &kube::Client) -> Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = c.request_text(req).await.context("GET /metrics of the API server")?;
    let mut out = BTreeMap::new();
    for (labels, v) in metric_samples(&text, "apiserver_request_total") {
        let label = |k: &str| {
            (labels.split(&format!("{k}=\"")).nth(1))
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let sub = label("subresource");
        let key = match sub.as_str() {
            "" => format!("{} {}", label("verb"), label("resource")),
            s => format!("{} {}/{s}", label("verb"), label("resource")),
        };
        *out.entry(key).or_insert(0.0) += v;
    }
    Ok(out)
}

/// Where the time to all Ready went, from the objects' own timestamps (seconds after `start`,
/// whole seconds as the API server records them): when the operator created its last collector
/// DaemonSet, when the DaemonSet controller (kube-controller-manager) created the collector pods
/// and at what rate, and when the last pod turned Ready (kwok). The DaemonSet controller's writes
/// are the API server's count of pod creates, DaemonSet status writes and ControllerRevision
/// creates (a DaemonSet's history) over the same span (`requests`; nothing else makes them here)
/// plus the events it posted: at [`KCM_QPS`] they
/// take at least `writes / KCM_QPS` seconds whatever the operator does.
async fn ready_timeline(
    c: &kube::Client,
    namespaces: &[String],
    start: k8s_openapi::jiff::Timestamp,
    requests: &BTreeMap<String, f64>,
) -> Result<serde_json::Value> {
    let since = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        (t.0.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
    };
    let collectors = ListParams::default().labels(&format!(
        "{}={}",
        mlobs::conventions::NAME_LABEL,
        mlobs::conventions::COLLECTOR_APP
    ));
    let (mut sets, mut pods_created, mut pods_ready) = (vec![], vec![], vec![]);
    // The events the DaemonSet controller posted (one per pod it created, among others): its
    // client's rate limit counts them with its other writes.
    let mut controller_events = 0.0;
    let by_daemon_set_controller = ListParams::default().fields("source=daemonset-controller");
    for ns in namespaces {
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(c.clone(), ns);
        for e in events.list(&by_daemon_set_controller).await?.items {
            controller_events += f64::from(e.count.unwrap_or(1).max(1));
        }
        let ds = Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(c.clone(), ns);
        for d in ds.list(&collectors).await?.items {
            sets.extend(d.metadata.creation_timestamp.as_ref().map(since));
        }
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), ns);
        for p in pods.list(&collectors).await?.items {
            pods_created.extend(p.metadata.creation_timestamp.as_ref().map(since));
            let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
            let ready = conds.iter().find(|c| c.type_ == "Ready" && c.status == "True");
            pods_ready.extend(ready.and_then(|c| c.last_transition_time.as_ref()).map(since));
        }
    }
    pods_created.sort_by(f64::total_cmp);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let first_pod = pods_created.first().copied().unwrap_or(f64::NAN);
    let last_pod = max(&pods_created);
    // The most pods created within any 10 s.
    let busiest = (pods_created.iter().enumerate())
        .map(|(i, t)| pods_created[i..].iter().take_while(|u| **u < t + 10.0).count())
        .max()
        .unwrap_or(0);
    let kcm_writes = ["POST pods", "PUT daemonsets/status", "POST controllerrevisions"]
        .iter()
        .filter_map(|k| requests.get(*k))
        .sum::<f64>()
        + controller_events;
    let out = json!({
        "collector_daemon_sets": sets.len(), "last_daemon_set_created_s": max(&sets),
        "collector_pods": pods_created.len(), "first_pod_created_s": first_pod, "last_pod_created_s": last_pod,
        "pods_created_per_second": pods_created.len() as f64 / (last_pod - first_pod).max(1.0),
        "pods_created_busiest_10s_per_second": busiest as f64 / 10.0,
        "last_pod_ready_s": max(&pods_ready),
        "daemon_set_controller_writes": kcm_writes, "daemon_set_controller_events": controller_events,
        "daemon_set_controller_floor_s": kcm_writes / KCM_QPS,
        "apiserver_writes_by_request": requests,
    });
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_on_the_real_control_plane() -> Result<()> {
    let c = client().await?;
    let n = env_or("MLOBS_BENCH_N", 1000) as usize;
    let timeout = Duration::from_secs(env_or("MLOBS_BENCH_READY_TIMEOUT_S", 1800));
    let queues = drift_queue_urls()?;
    // The bench's replicas (e2e/run.sh bench mode runs them without leader election): one, or
    // one per shard.
    let ops = ops()?;
    let ops = &ops;
    anyhow::ensure!(!ops.is_empty(), "no replica state file");
    wait_for("the operators' /metrics", Duration::from_secs(60), async || {
        scrape(ops).await
    })
    .await?;
    let gpu = gpu_nodes(&c).await?;
    let nodes = gpu.len();
    let pids: Vec<String> = ops.iter().map(|o| format!("{} (shard {})", o.r.pid, o.shard)).collect();
    println!("bench: {n} pipelines over {nodes} GPU nodes, operator pids {pids:?}");
    // Each team (namespace) gets its own node pool, as platform teams do: its policy selects the
    // pool's nodes, so a node runs the collectors of one pool's pipelines only. With 20 GPU nodes
    // that is 2 nodes and 100 pipelines a pool: 100 collector pods and an exporter pod a node,
    // within the kubelet's default 110 pods. On fewer nodes, pools share nodes.
    let pools = NAMESPACES.min(nodes).max(1);
    for (j, node) in gpu.iter().enumerate() {
        Api::<k8s_openapi::api::core::v1::Node>::all(c.clone())
            .patch(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": {POOL_LABEL: (j % pools).to_string()}}})),
            )
            .await
            .with_context(|| format!("labelling node {node} with its pool"))?;
    }
    let room = collector_room(&c).await?;
    // Pipelines of a pool on each of its nodes, and the exporter pod of each namespace there.
    let per_node = n.div_ceil(pools) + NAMESPACES.div_ceil(pools);
    let ready_bound = if room >= per_node as i64 {
        n as i64
    } else {
        (room * pools as i64).min(n as i64)
    };
    println!(
        "bench: {pools} node pools (a namespace's policy selects one); a node runs up to {per_node} collector and exporter pods and the fullest takes {room} more (its pods capacity): at most {ready_bound} of {n} pipelines can be Ready on this cluster"
    );

    let mut guards = vec![];
    for i in 0..NAMESPACES {
        let ns = TestNs::create(&c, "bench").await?;
        policies(&c)
            .patch(
                &ns.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"nodeSelector": {
                    "nvidia.com/gpu.present": "true", POOL_LABEL: (i % pools).to_string()}}})),
            )
            .await
            .with_context(|| format!("giving policy {} its node pool", ns.name))?;
        guards.push(ns);
    }
    let namespaces: Vec<String> = guards.iter().map(|g| g.name.clone()).collect();
    let spec = json!({"resyncInterval": format!("{}s", RESYNC.as_secs()), "dataFlow": {"gracePeriod": "6h"}});
    let m0 = scrape(ops).await?;
    let apiserver_cpu0 = cpu_seconds("kube-apiserver");
    let requests0 = apiserver_requests(&c).await?;
    let start_wall = k8s_openapi::jiff::Timestamp::now();
    let start = Instant::now();
    let c2 = c.clone();
    let created: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (c, ns, spec) = (c2.clone(), namespaces[i % NAMESPACES].clone(), spec.clone());
            async move {
                let p = pipeline(&ns, &format!("job-{i:05}"), spec)?;
                create_pipeline(&c, &p).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: Vec<String> = created
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| format!("{e:#}"))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} creates failed: {:?}",
        failed.len(),
        failed.first()
    );
    let applied = start.elapsed();
    println!("bench: {n} pipelines created in {:.1} s", applied.as_secs_f64());

    let (all, writer) = kube::runtime::reflector::store::<MLObservabilityPipeline>();
    let watch = kube::runtime::watcher(Api::all(c.clone()), kube::runtime::watcher::Config::default());
    let watch = kube::runtime::reflector(writer, kube::runtime::WatchStreamExt::default_backoff(watch));
    let watch = AbortOnDrop(tokio::spawn(watch.for_each(|_| async {})));
    all.wait_until_ready().await?;
    let prefix = "e2e-bench-";
    let mut last_print = Instant::now();
    let mut last_heal = Instant::now();
    let mut done_after = None;
    let mut last_ready;
    let ready_after = loop {
        let (ready, done, total) = counts(&all, prefix);
        last_ready = ready;
        if done == n && total == n && done_after.is_none() {
            done_after = Some(start.elapsed());
            println!(
                "bench: the operator's part done for all {n} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
        if ready == n && total == n {
            break Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            println!(
                "bench: {ready} of {n} Ready after {:.0} s: stopped waiting",
                timeout.as_secs_f64()
            );
            break None;
        }
        if last_heal.elapsed() > Duration::from_secs(60) {
            for ns in &namespaces {
                restart_pods_stuck_by_node_flap(&c, ns, &ListParams::default()).await?;
            }
            last_heal = Instant::now();
        }
        if last_print.elapsed() > Duration::from_secs(30) {
            println!(
                "bench: {ready} of {n} Ready, the operator's part done for {done}, after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let m_ready = scrape(ops).await?;
    let apiserver_cpu = cpu_seconds("kube-apiserver") - apiserver_cpu0;
    let writes_to_ready: BTreeMap<String, f64> = (apiserver_requests(&c).await?.into_iter())
        .filter(|(k, _)| ["POST ", "PUT ", "PATCH ", "DELETE "].iter().any(|v| k.starts_with(v)))
        .map(|(k, v)| {
            let d = v - requests0.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let timeline = ready_timeline(&c, &namespaces, start_wall, &writes_to_ready).await?;
    println!(
        "bench: where the time to Ready went (s after the apply began): the operator's last collector DaemonSet created at {}; the DaemonSet controller created {} collector pods from {} to {} ({:.1} a second, {:.1} in the busiest 10 s); the last pod Ready at {}; the DaemonSet controller's {} writes (pod creates, DaemonSet status writes, revisions, events) take at least {:.0} s at kube-controller-manager's {KCM_QPS} requests a second",
        timeline["last_daemon_set_created_s"],
        timeline["collector_pods"],
        timeline["first_pod_created_s"],
        timeline["last_pod_created_s"],
        timeline["pods_created_per_second"].as_f64().unwrap_or(0.0),
        timeline["pods_created_busiest_10s_per_second"].as_f64().unwrap_or(0.0),
        timeline["last_pod_ready_s"],
        timeline["daemon_set_controller_writes"],
        timeline["daemon_set_controller_floor_s"].as_f64().unwrap_or(0.0),
    );
    let wait = start.elapsed().as_secs_f64();
    let rss_of = |o: &Op| peak_rss_mib(o.r.pid).context("the operator's /proc status");
    let rss_ready = ops
        .iter()
        .map(rss_of)
        .collect::<Result<Vec<f64>>>()?
        .into_iter()
        .fold(0.0, f64::max);

    // CloudWatch publishes IncomingLogEvents for every group that receives events, so in an
    // account that runs collectors the operator has seen the metric of some group (moto, which
    // never publishes it, stands for an account where it never was: there quiet groups' streams
    // are read at every resync). One group received events once: the other groups' silence in the
    // metric listings then says they received nothing, and the no-data window below measures
    // that steady state (the listings of the steady windows have shown the group by then). A
    // replica lists only its own shard's groups, so each shard gets one such group (run AG, one
    // group for two shards: the other shard read 1,106 streams per resync).
    let aws = aws().await?;
    let job = |k: usize| (namespaces[k % NAMESPACES].clone(), format!("job-{k:05}"));
    let seeded_jobs: Vec<(String, String)> = (ops.iter())
        .filter_map(|o| (0..n).map(job).find(|(ns, name)| o.shard.owns(ns, name)))
        .collect();
    let group_of = |(ns, name): &(String, String)| format!("/aws/eks/{CLUSTER_NAME}/{ns}/{name}/logs");
    let seeded_groups: Vec<String> = seeded_jobs.iter().map(group_of).collect();
    put_incoming_log_events(&aws, &seeded_groups).await?;
    // Each group's pipeline records its newest event at its next resync read: a write the bench
    // caused, so it is waited for before a steady window opens.
    for (ns, name) in &seeded_jobs {
        let api = Api::<MLObservabilityPipeline>::namespaced(c.clone(), ns);
        let seeded = wait_for(&format!("{name} to record its log event"), RESYNC * 2, async || {
            let p = api.get(name).await?;
            let t = p.status.and_then(|s| s.telemetry).and_then(|t| t.last_log_event_time);
            t.context("no lastLogEventTime yet")
        })
        .await;
        println!("bench: the seeded group's pipeline {ns}/{name} recorded its event: {seeded:?}");
    }
    let first_group = seeded_groups.first().cloned().context("no seeded group")?;

    // Steady state: nothing changes; the operator must write nothing. A window in which (or just
    // before which) a kwok node went NotReady is not a steady one: the pipelines on it rightly
    // report it (see e2e serial::steady_state_makes_no_writes). Such a window is measured again,
    // up to STEADY_ATTEMPTS times, and reported as flapped if none was clean. So is a window that
    // opens while collector DaemonSets are still rolling out (after a flap, kwok readies pods a
    // few at a time): the pipelines' statuses follow them (run AF: 605 status writes in a window
    // that opened with 597 DaemonSets unsettled).
    let mut attempt = 0;
    let (m1, m2, flapped, unsettled) = loop {
        attempt += 1;
        // The collectors first: a window opened while pods restarted after a flap still ready
        // catches the pipelines' statuses following them.
        let unsettled = settle_daemon_sets(&c, &namespaces, STEADY_SETTLE).await?;
        if !unsettled.is_empty() {
            println!(
                "bench: steady window {attempt}: {} DaemonSets still rolling out after {} s: {:?}",
                unsettled.len(),
                STEADY_SETTLE.as_secs(),
                unsettled.iter().take(5).collect::<Vec<_>>()
            );
        }
        // Then the DataFlowing checks the flap's wave put off (each read writes its finding).
        if !settle_stream_checks(ops, STEADY_SETTLE).await? {
            println!(
                "bench: steady window {attempt}: DataFlowing checks still put off by the stream budget after {} s",
                STEADY_SETTLE.as_secs()
            );
        }
        // Then the full key reads that data stopping (a flap's) brings.
        let (waited, waiting) = settle_data_stops(&c, &namespaces, STEADY_SETTLE).await?;
        if waiting > 0 || waited > Duration::from_secs(1) {
            println!(
                "bench: steady window {attempt}: waited {:.0} s for the key reads after data stopped; {waiting} still due",
                waited.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let started = k8s_openapi::jiff::Timestamp::now();
        let s1 = statuses(&c, &namespaces).await?;
        let m1 = scrape(ops).await?;
        tokio::time::sleep(STEADY_WINDOW).await;
        let m2 = scrape(ops).await?;
        let changed = status_changes(&s1, &statuses(&c, &namespaces).await?);
        println!("bench: steady window {attempt}: status fields changed (pipelines, one example): {changed:#?}");
        let since = started
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60))
            .unwrap_or(started);
        let flaps = node_flaps_since(&c, since, None).await?;
        if (flaps.is_empty() && unsettled.is_empty()) || attempt == STEADY_ATTEMPTS {
            break (m1, m2, flaps, unsettled.len());
        }
        if flaps.is_empty() {
            println!(
                "bench: steady window {attempt}: opened with {} DaemonSets rolling out; measuring again",
                unsettled.len()
            );
        } else {
            println!("bench: steady window {attempt}: nodes {flaps:?} went NotReady; measuring again");
        }
    };
    let writes_per_min = (kube_writes_all(&m2)? - kube_writes_all(&m1)?) * 60.0 / STEADY_WINDOW.as_secs_f64();
    let steady_writes_by = kube_writes_by_request(&m1, &m2);
    println!("bench: the steady window's Kubernetes writes by request: {steady_writes_by:?}");
    // One resync: every pipeline's AWS side is looked at once.
    let (m3, m3_end) = one_resync(ops).await?;
    let resync_calls = aws_calls_all(&m3, &m3_end);
    let resync_reads = reads_of(&resync_calls);
    let resync_writes: u64 = resync_calls
        .iter()
        .filter(|(o, _)| is_mutating(o.trim_end_matches(" (error)")))
        .map(|(_, v)| v)
        .sum();
    let reads_goal = n as u64 / 50 + 3;
    // The drift reads alone: without DataFlowing's reads (a GetMetricData per 500 log groups,
    // and one DescribeLogStreams per group the metric does not show flowing).
    let stream_reads = resync_calls.get("DescribeLogStreams").copied().unwrap_or(0);
    let metric_reads = resync_calls.get("GetMetricData").copied().unwrap_or(0);
    let drift_reads = resync_reads - stream_reads - metric_reads;
    // While the queue is read, the log group listing (2N/50 pages) and the slower checks (6 reads
    // per pipeline) run once per --event-backstop-interval (default 168 h): their average share
    // of one resync.
    let n_reads = n as u64;
    let backstop_reads = (2 * n_reads).div_ceil(50) + 6 * n_reads;
    let backstop_per_resync = backstop_reads as f64 * RESYNC.as_secs_f64() / (168.0 * 3600.0);

    // The same while data flows: CloudWatch publishes IncomingLogEvents for every group receiving
    // events (the kwok collectors send nothing, so the bench publishes it), and the DataFlowing
    // read takes those groups from one GetMetricData per 500 instead of their streams.
    let groups = publish_incoming_log_events(&aws, &format!("/aws/eks/{CLUSTER_NAME}/")).await?;
    let (m4, m5) = one_resync(ops).await?;
    let flowing_calls = aws_calls_all(&m4, &m5);
    let flowing_reads = reads_of(&flowing_calls);
    let flowing_stream_reads = flowing_calls.get("DescribeLogStreams").copied().unwrap_or(0);

    // Drift by event: a retention changed outside mlobs, then its CloudTrail event in the queue.
    let group = first_group;
    let desired = log_group(&aws, &group)
        .await?
        .with_context(|| format!("log group {group}"))?
        .retention_in_days();
    // At a period's start, when every pipeline falls due: the worst case for an event that
    // would wait its turn.
    until_in_period(Duration::ZERO).await;
    aws.logs
        .put_retention_policy()
        .log_group_name(&group)
        .retention_in_days(1)
        .send()
        .await?;
    let event = cloudtrail_event(
        "logs",
        "PutRetentionPolicy",
        json!({"logGroupName": group, "retentionInDays": 1}),
    );
    let m_drift = scrape(ops).await?;
    deliver_event(&aws, &queues, &event).await?;
    let t = Instant::now();
    let drift = wait_for("the retention put back", RESYNC * 2, async || {
        let g = log_group(&aws, &group).await?.context("log group")?;
        anyhow::ensure!(
            g.retention_in_days() == desired,
            "retention {:?}",
            g.retention_in_days()
        );
        Ok(t.elapsed())
    })
    .await
    .ok();
    let m_end = scrape(ops).await?;
    // Which replica took the event (sharded runs: each shard reads its own queue, holding every event).
    for (i, o) in ops.iter().enumerate() {
        let by = grown_by_labels("mlobs_drift_events_total", &m_drift[i..=i], &m_end[i..=i], |_| true);
        let express = metric_sum(&m_end[i], "mlobs_express_reconciles_total", &[], &[]).unwrap_or(0.0)
            - metric_sum(&m_drift[i], "mlobs_express_reconciles_total", &[], &[]).unwrap_or(0.0);
        println!(
            "bench: drift events at shard {} while the change was put back: {by:?}; express reconciles {express}",
            o.shard
        );
    }
    let rss_each = ops.iter().map(rss_of).collect::<Result<Vec<f64>>>()?;
    let rss_now: Vec<Option<BTreeMap<&str, f64>>> = ops.iter().map(|o| rss_by_mapping(o.r.pid)).collect();
    println!("bench: resident memory now by mapping (MiB), per replica: {rss_now:.1?}");
    let rss = rss_each.iter().copied().fold(0.0, f64::max);
    let create_calls = aws_calls_all(&m0, &m_ready);
    let reconciles_create: f64 = (m0.iter().zip(&m_ready))
        .map(|(b, a)| {
            metric_sum(a, "mlobs_reconciles_total", &[], &[]).unwrap_or(0.0)
                - metric_sum(b, "mlobs_reconciles_total", &[], &[]).unwrap_or(0.0)
        })
        .sum();
    let kube_reads = kube_reads_all(&m_ready) - kube_reads_all(&m0);
    let reads_per_reconcile = kube_reads / reconciles_create.max(1.0);
    let kube_reads_by = kube_reads_by_request(&m0, &m_ready);
    // Each shard's own figures.
    let mut per_shard = vec![];
    for (i, o) in ops.iter().enumerate() {
        let owned = (0..n)
            .filter(|k| o.shard.owns(&namespaces[k % NAMESPACES], &format!("job-{k:05}")))
            .count();
        let reads = reads_of(&aws_calls(&m3[i], &m3_end[i]));
        let writes = (kube_writes(&m2[i])? - kube_writes(&m1[i])?) * 60.0 / STEADY_WINDOW.as_secs_f64();
        let reconciles = require_metric(&m_end[i], "mlobs_reconciles_total", &[], &[])?
            - metric_sum(&m0[i], "mlobs_reconciles_total", &[], &[]).unwrap_or(0.0);
        let policy = [("controller", "policy")];
        let policy_reconciles = metric_sum(&m_end[i], "mlobs_reconciles_total", &policy, &[]).unwrap_or(0.0)
            - metric_sum(&m0[i], "mlobs_reconciles_total", &policy, &[]).unwrap_or(0.0);
        // DataFlowing checks put off by the DescribeLogStreams budget (--stream-reads-per-second).
        let deferred = metric_sum(&m_end[i], "mlobs_stream_reads_deferred_total", &[], &[]).unwrap_or(0.0)
            - metric_sum(&m0[i], "mlobs_stream_reads_deferred_total", &[], &[]).unwrap_or(0.0);
        per_shard.push(json!({"shard": o.shard.to_string(), "pid": o.r.pid, "pipelines": owned,
            "peak_rss_mib": rss_each[i], "aws_reads_full_resync": reads,
            "aws_reads_goal": owned as u64 / 50 + 3, "steady_kube_writes_per_minute": writes,
            "reconciles": reconciles, "policy_reconciles": policy_reconciles,
            "stream_reads_deferred": deferred}));
    }

    let owned: Vec<usize> = per_shard
        .iter()
        .map(|s| s["pipelines"].as_u64().map_or(0, |v| v as usize))
        .collect();
    let restarts = restart_peaks(ops, &owned).await?;
    let restart_rss = restarts.iter().map(|r| r.0).fold(0.0, f64::max);
    let restart_secs = restarts.iter().map(|r| r.1).fold(0.0, f64::max);
    for (s, r) in per_shard.iter_mut().zip(&restarts) {
        s["restart_peak_rss_mib"] = json!(r.0);
        s["restart_seconds"] = json!(r.1);
    }

    let figures = [
        figure(
            "N pipelines created → AWS side ready and collector applied for all (moto)",
            done_after.map_or(format!("not within {} s", timeout.as_secs()), |d| {
                format!("{:.1} s", d.as_secs_f64())
            }),
            "(informative: the operator's own part of the next figure)".into(),
            None,
        ),
        figure(
            "kubectl apply of N pipelines → all Ready (moto)",
            ready_after.map_or(
                format!(
                    "not within {} s: {last_ready} Ready; the GPU nodes' pods capacity lets at most {ready_bound} be",
                    timeout.as_secs(),
                ),
                |d| format!("{:.1} s", d.as_secs_f64()),
            ),
            "< 60 s".into(),
            Some(ready_after.is_some_and(|d| d < Duration::from_secs(60))),
        ),
        figure(
            "steady state: Kubernetes writes per minute",
            match (flapped.is_empty(), unsettled) {
                (true, 0) => format!("{writes_per_min:.1}"),
                (true, u) => format!(
                    "{writes_per_min:.1} (not steady: the last of {STEADY_ATTEMPTS} windows opened with {u} collector DaemonSets rolling out)"
                ),
                (false, _) => format!(
                    "{writes_per_min:.1} (not steady: nodes {flapped:?} went NotReady in each of {STEADY_ATTEMPTS} windows)"
                ),
            },
            "0".into(),
            Some(writes_per_min == 0.0),
        ),
        figure(
            "peak RSS of the operator (VmHWM; the largest replica)",
            format!("{rss:.1} MiB ({rss_ready:.1} MiB when all were Ready)"),
            "< 40 MiB".into(),
            Some(rss < 40.0),
        ),
        figure(
            "peak RSS after a restart with every pipeline in place (VmHWM; the largest replica)",
            format!(
                "{restart_rss:.1} MiB (each replica restarted, peak read once it had reconciled as often as it has pipelines: {restart_secs:.0} s)"
            ),
            "< 40 MiB".into(),
            Some(restart_rss < 40.0),
        ),
        figure(
            "AWS read calls per full resync, no data flowing (the metric published for one group per shard)",
            format!("{resync_reads} ({resync_writes} writes, {stream_reads} DescribeLogStreams)"),
            format!("≤ N/50 + 3 = {reads_goal}"),
            Some(resync_reads <= reads_goal),
        ),
        figure(
            "AWS read calls per full resync while data flows (IncomingLogEvents of every group published)",
            format!("{flowing_reads} ({flowing_stream_reads} DescribeLogStreams, {groups} log groups)"),
            format!("≤ N/50 + 3 = {reads_goal}"),
            Some(flowing_reads <= reads_goal),
        ),
        figure(
            "  of which drift reads (all but DataFlowing's DescribeLogStreams and GetMetricData)",
            format!("{drift_reads} ({stream_reads} stream and {metric_reads} metric reads left out)"),
            format!("≤ N/50 + 3 = {reads_goal}"),
            Some(drift_reads <= reads_goal),
        ),
        figure(
            "  plus, on average, the reads drift events stand in for (log group listing, slower checks), once per --event-backstop-interval",
            format!(
                "{backstop_per_resync:.1} ((2N/50 + 6N) × {} s / 168 h)",
                RESYNC.as_secs()
            ),
            "(informative: the operator runs with the drift events queue)".into(),
            None,
        ),
        figure(
            "Kubernetes reads by the operator per reconcile, from create to the end of the wait",
            format!("{reads_per_reconcile:.1} ({kube_reads} reads, {reconciles_create} reconciles)"),
            "(informative: gets, lists and dry runs; watches not counted)".into(),
            None,
        ),
        figure(
            "kube-apiserver CPU from create to the end of the wait",
            format!(
                "{apiserver_cpu:.0} s in {wait:.0} s ({:.0}% of a core)",
                100.0 * apiserver_cpu / wait.max(1.0)
            ),
            "(informative: the test cluster shares the machine)".into(),
            None,
        ),
        figure(
            "drift found and corrected after an outside change (event path)",
            drift.map_or("not within two resyncs".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            "≤ 10 s".into(),
            Some(drift.is_some_and(|d| d <= Duration::from_secs(10))),
        ),
    ];
    println!("\n| figure ({n} pipelines, {nodes} GPU nodes) | measured | goal | |\n|---|---|---|---|");
    for f in &figures {
        let mark = match f.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!("| {} | {} | {} | {mark} |", f.name, f.value, f.goal);
    }
    if ops.len() > 1 {
        println!(
            "\n| shard | pipelines | peak RSS (MiB) | AWS reads per resync (goal) | writes/min | reconciles |\n|---|---|---|---|---|---|"
        );
        for s in &per_shard {
            println!(
                "| {} | {} | {:.1} | {} (≤ {}) | {:.1} | {} |",
                s["shard"].as_str().unwrap_or("?"),
                s["pipelines"],
                s["peak_rss_mib"].as_f64().unwrap_or(0.0),
                s["aws_reads_full_resync"],
                s["aws_reads_goal"],
                s["steady_kube_writes_per_minute"].as_f64().unwrap_or(0.0),
                s["reconciles"]
            );
        }
    }
    println!("\nAWS calls per operation over one resync interval: {resync_calls:?}");
    println!("AWS calls per operation over one resync interval while data flows: {flowing_calls:?}");
    println!("AWS calls per operation from create to all Ready: {create_calls:?}");
    println!("the operator's Kubernetes reads from create to all Ready: {kube_reads_by:?}");
    // Before the first reconcile the family has no sample yet: 0.
    let reconciles: f64 = per_shard.iter().filter_map(|s| s["reconciles"].as_f64()).sum();
    let policy_reconciles: f64 = per_shard.iter().filter_map(|s| s["policy_reconciles"].as_f64()).sum();
    println!("reconciles during the bench: {reconciles}, of which the {NAMESPACES} policies' {policy_reconciles}");
    let stream_reads_deferred: f64 = per_shard
        .iter()
        .filter_map(|s| s["stream_reads_deferred"].as_f64())
        .sum();
    let stream_reads_create = create_calls.get("DescribeLogStreams").copied().unwrap_or(0);
    println!(
        "DescribeLogStreams from create to all Ready: {stream_reads_create}; DataFlowing checks put off by the budget: {stream_reads_deferred}"
    );

    let out = json!({
        "ready_bound_by_pod_capacity": ready_bound, "node_pools": pools,
        "machine": format!("{} cores", std::thread::available_parallelism().map_or(0, |n| n.get())),
        "pipelines": n, "gpu_nodes": nodes, "namespaces": NAMESPACES,
        "resync_interval_s": RESYNC.as_secs(),
        "created_seconds": applied.as_secs_f64(),
        "all_ready_seconds": ready_after.map(|d| d.as_secs_f64()),
        "operator_done_seconds": done_after.map(|d| d.as_secs_f64()),
        "steady_kube_writes_per_minute": writes_per_min, "steady_window": {"node_flaps": flapped, "unsettled_daemon_sets": unsettled, "attempts": attempt},
        "peak_rss_mib": rss, "peak_rss_mib_at_ready": rss_ready, "rss_now_by_mapping_mib": rss_now,
        "aws_reads_full_resync": resync_reads, "aws_writes_full_resync": resync_writes,
        "aws_drift_reads_full_resync": drift_reads, "aws_backstop_reads_per_resync_average": backstop_per_resync, "aws_stream_reads_full_resync": stream_reads,
        "aws_reads_goal": reads_goal,
        "aws_reads_full_resync_data_flowing": flowing_reads, "aws_calls_full_resync_data_flowing": flowing_calls,
        "aws_calls_full_resync": resync_calls, "aws_calls_create_to_ready": create_calls,
        "drift_event_seconds": drift.map(|d| d.as_secs_f64()),
        "kube_reads_create_to_ready": kube_reads, "kube_reads_per_reconcile": reads_per_reconcile,
        "kube_reads_by_request": kube_reads_by,
        "steady_kube_writes_by_request": steady_writes_by,
        "apiserver_cpu_seconds_create_to_ready": apiserver_cpu, "wait_seconds": wait,
        "reconciles": reconciles,
        "policy_reconciles": policy_reconciles,
        "shards": per_shard,
        "figures": figures.iter().map(|f| json!({"figure": f.name, "measured": f.value, "goal": f.goal, "met": f.met})).collect::<Vec<_>>(),
    });
    let mut out = out;
    out["stream_reads_deferred"] = json!(stream_reads_deferred);
    out["ready_timeline"] = timeline;
    out["restart_peak_rss_mib"] = json!(restart_rss);
    out["restart_seconds"] = json!(restart_secs);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cluster-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", path.display());
    drop(watch);
    drop(guards);
    Ok(())
}
