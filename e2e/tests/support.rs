//! Helpers of the end-to-end scenarios: the cluster (admin kubeconfig in `KUBECONFIG`), per-test
//! namespaces, polling, pipeline conditions, moto (`MLOBS_E2E_MOTO_URL`) and the operator replicas
//! that e2e/run.sh started (state files in `MLOBS_E2E_STATE_DIR`).
//!
//! Every helper returns `anyhow::Result` with context naming the object; nothing from the API
//! server is unwrapped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use mlobs::aws::AwsClients;
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use serde_json::{Value, json};

/// The operator's namespace (chart release namespace, Lease namespace).
pub const OPERATOR_NAMESPACE: &str = "mlobs-system";
/// The operator's Lease.
pub const LEASE: &str = "mlobs-operator-leader";
/// `--cluster-name` of the replicas.
pub const CLUSTER_NAME: &str = "e2e";
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const OIDC_PROVIDER_ARN: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/E2E";
/// The label on every test namespace (e2e/run.sh waits for and cleans up namespaces carrying it).
pub const NS_LABEL: &str = "mlobs-e2e";
/// The label the operator puts on a pipeline's children: `<namespace>.<name>`.
pub const PIPELINE_LABEL: &str = "mlobs.io/pipeline";
pub const GPU_NODE_LABEL: &str = "nvidia.com/gpu.present=true";

/// Timeouts: generous, these run against a real control plane on a small CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
pub const GC_TIMEOUT: Duration = Duration::from_secs(120);
pub const POLL: Duration = Duration::from_millis(250);

/// A variable e2e/run.sh sets.
pub fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow!("{name} is not set: run the end-to-end tests through `make e2e` (e2e/run.sh), which starts the cluster, moto and the operator")
    })
}

/// Admin client from `KUBECONFIG`.
pub async fn client() -> Result<Client> {
    env("KUBECONFIG")?;
    env("MLOBS_E2E_STATE_DIR")?;
    Client::try_default().await.context("kube client from KUBECONFIG")
}

/// A client from another kubeconfig file (the operator's: its ServiceAccount token).
pub async fn client_from(path: &str) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {path}"))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kube config from {path}"))?;
    Client::try_from(config).with_context(|| format!("kube client from {path}"))
}

/// A short random hex string (std's per-process random hasher keys; no extra crate).
pub fn random_suffix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:06x}", h.finish() & 0xff_ffff)
}

/// A namespace of one test, `e2e-<test>-<random>`, and a GpuTelemetryPolicy of the same name
/// (not a default, no guardrails) that the test's pipelines name in `spec.policyRef`: a default
/// policy someone else put on the cluster does not govern them. Both are deleted (best effort, in
/// the background) when dropped, also after a failed assertion. `MLOBS_E2E_KEEP=1` keeps them.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub async fn create(client: &Client, test: &str) -> Result<TestNs> {
        let short: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("e2e-{}-{}", short.trim_matches('-'), random_suffix());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {NS_LABEL: "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let guard = TestNs { name };
        let policy: GpuTelemetryPolicy = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
            "metadata": {"name": guard.name, "labels": {NS_LABEL: "true"}}, "spec": {"default": false}
        }))?;
        Api::<GpuTelemetryPolicy>::all(client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .with_context(|| format!("creating GpuTelemetryPolicy {}", guard.name))?;
        println!("namespace and policy {}", guard.name);
        Ok(guard)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if std::env::var("MLOBS_E2E_KEEP").is_ok_and(|v| v == "1") {
            println!("keeping namespace {} (MLOBS_E2E_KEEP=1)", self.name);
            return;
        }
        let name = self.name.clone();
        // A fresh runtime on another thread: the test's runtime may be the current thread.
        let r = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let c = Client::try_default().await?;
                let ns = Api::<Namespace>::all(c.clone())
                    .delete(&name, &DeleteParams::background())
                    .await;
                ignore_not_found(ns.map(|_| ()))?;
                let policy = Api::<GpuTelemetryPolicy>::all(c)
                    .delete(&name, &DeleteParams::background())
                    .await;
                ignore_not_found(policy.map(|_| ()))?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = r {
            eprintln!("deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// `Ok` for a 404.
pub fn ignore_not_found(r: kube::Result<()>) -> kube::Result<()> {
    match r {
        Err(e) if is_not_found(&e) => Ok(()),
        r => r,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Polls `f` every 250 ms until it returns `Ok`, for at most `timeout`. An `Err` means "not yet",
/// and the last one is part of the timeout error (so write them to say what is missing).
pub async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                return Err(e.context(format!("timed out after {} s waiting for {what}", timeout.as_secs())));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines

/// A pipeline with the least a real one needs (IRSA identity, `deletionPolicy: Delete` so AWS is
/// cleaned, `policyRef` to the test's own policy: see [`TestNs`]), deep-merged with `spec`.
pub fn pipeline(ns: &str, name: &str, spec: Value) -> Result<MLObservabilityPipeline> {
    let mut base = json!({
        "identity": {"mode": "IRSA", "oidcProviderArn": OIDC_PROVIDER_ARN},
        "deletionPolicy": "Delete",
        "policyRef": ns,
    });
    merge(&mut base, spec);
    serde_json::from_value(json!({
        "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": name, "namespace": ns}, "spec": base
    }))
    .context("pipeline spec deserializes")
}

/// JSON merge patch semantics (RFC 7386) on values.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

pub fn pipelines(client: &Client, ns: &str) -> Api<MLObservabilityPipeline> {
    Api::namespaced(client.clone(), ns)
}

pub fn policies(client: &Client) -> Api<GpuTelemetryPolicy> {
    Api::all(client.clone())
}

pub async fn create_pipeline(client: &Client, p: &MLObservabilityPipeline) -> Result<MLObservabilityPipeline> {
    let ns = p.namespace().context("pipeline has a namespace")?;
    pipelines(client, &ns)
        .create(&PostParams::default(), p)
        .await
        .with_context(|| format!("creating pipeline {ns}/{}", p.name_any()))
}

pub fn condition<'a>(p: &'a MLObservabilityPipeline, type_: &str) -> Option<&'a Condition> {
    p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// `True`, `False`, `Unknown`, or `-` when absent.
pub fn condition_status<'a>(p: &'a MLObservabilityPipeline, type_: &str) -> &'a str {
    condition(p, type_).map(|c| c.status.as_str()).unwrap_or("-")
}

/// `Type=Status(Reason)` of every condition, for messages.
pub fn conditions_summary(p: &MLObservabilityPipeline) -> String {
    let Some(s) = p.status.as_ref() else {
        return "no status".into();
    };
    let c: Vec<String> = s
        .conditions
        .iter()
        .map(|c| format!("{}={}({}: {})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "observedGeneration {:?} of {:?}; {}",
        s.observed_generation,
        p.metadata.generation,
        c.join(", ")
    )
}

/// Ready=True and the status describes the current generation.
pub fn is_ready(p: &MLObservabilityPipeline) -> bool {
    let observed = p.status.as_ref().and_then(|s| s.observed_generation);
    condition_status(p, "Ready") == "True" && observed.is_some() && observed == p.metadata.generation
}

/// Waits until the pipeline is Ready at its current generation.
pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> Result<MLObservabilityPipeline> {
    let start = Instant::now();
    let what = format!("pipeline {ns}/{name} Ready=True");
    let p = wait_for_pipeline(client, ns, name, &what, READY_TIMEOUT, |p| {
        ensure!(is_ready(p), "{}", conditions_summary(p));
        Ok(p.clone())
    })
    .await?;
    println!("{ns}/{name} Ready after {:.1} s", start.elapsed().as_secs_f64());
    Ok(p)
}

/// [`wait_for`] on pipeline `ns/name` until `check` passes, healing kwok node flaps of its pods
/// meanwhile ([`heal_node_flap`]). `timeout` counts from the last time pods had to be restarted:
/// their replacements take their own time to come back, and CI showed a flap eat a whole 150 s
/// wait. At most three times `timeout` in all.
pub async fn wait_for_pipeline<T>(
    c: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&MLObservabilityPipeline) -> Result<T>,
) -> Result<T> {
    let api = pipelines(c, ns);
    let start = Instant::now();
    let mut since = start;
    loop {
        let attempt = async {
            let p = api.get(name).await?;
            if heal_node_flap(c, &p).await? {
                since = Instant::now();
            }
            check(&p)
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e) if since.elapsed() >= timeout || start.elapsed() >= timeout * 3 => {
                let waited = start.elapsed().as_secs();
                return Err(e.context(format!("timed out after {waited} s waiting for {what}")));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// While the pipeline is not Ready, restarts the pods a kwok node flap left NotReady (see
/// [`restart_pods_stuck_by_node_flap`]): its collector's in the pipeline's namespace and in any
/// other namespace its pods run in (a policy's `collectorNamespace`), and the Managed DCGM
/// exporters' in the operator's namespace (a stuck exporter pod holds `MetricsSourceReady`, and
/// with it `Ready`, False). CI showed a flap stall a rollout that a test waited on without this
/// for its whole timeout, once with the collector in a `collectorNamespace` this did not look in.
pub async fn heal_node_flap(client: &Client, p: &MLObservabilityPipeline) -> Result<bool> {
    if is_ready(p) {
        return Ok(false);
    }
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let mut restarted = restart_pipeline_pods_stuck_by_node_flap(client, ns).await?;
    let own = ListParams::default().labels(&child_selector(ns, &p.name_any()));
    let elsewhere: std::collections::BTreeSet<String> = Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone())
        .list_metadata(&own)
        .await
        .context("listing the pipeline's pods")?
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.namespace)
        .filter(|other| other != ns)
        .collect();
    for other in elsewhere {
        let stuck = restart_pods_stuck_by_node_flap(client, &other, &own).await?;
        if !stuck.is_empty() {
            println!("restarted pods stuck NotReady after a kwok node flap in {other}: {stuck:?}");
            restarted = true;
        }
    }
    Ok(restarted)
}

/// [`restart_pods_stuck_by_node_flap`] for the pods in namespace `ns` and the Managed DCGM
/// exporters' pods in the operator's namespace; prints what it restarted, and tells whether it
/// restarted any.
pub async fn restart_pipeline_pods_stuck_by_node_flap(client: &Client, ns: &str) -> Result<bool> {
    let mut restarted = restart_pods_stuck_by_node_flap(client, ns, &ListParams::default()).await?;
    let exporters = ListParams::default().labels("app.kubernetes.io/name=mlobs-dcgm-exporter");
    restarted.extend(restart_pods_stuck_by_node_flap(client, OPERATOR_NAMESPACE, &exporters).await?);
    if !restarted.is_empty() {
        println!("restarted pods stuck NotReady after a kwok node flap: {restarted:?}");
    }
    Ok(!restarted.is_empty())
}

/// A DaemonSet whose controller saw its current generation and whose pods are all updated and
/// ready: its status (and the pipeline status that follows it) will not change on its own.
pub fn daemon_set_settled(ds: &k8s_openapi::api::apps::v1::DaemonSet) -> bool {
    let s = ds.status.clone().unwrap_or_default();
    s.observed_generation == ds.metadata.generation
        && s.number_ready == s.desired_number_scheduled
        && s.updated_number_scheduled == Some(s.desired_number_scheduled)
}

/// kwok on this machine sometimes misses a node's Lease renewal: the node goes NotReady, the node
/// lifecycle controller sets its pods' Ready condition False, and when the node is back kwok never
/// sets it True again (it plays a pod's stages once). Such a pod keeps its DaemonSet, and the
/// pipeline, rolling out for good: the cluster's quirk, not the operator's. Deletes, in `ns`, the
/// pods that are Ready=False on a Ready node while all their containers are ready, so that their
/// DaemonSet recreates them; returns their names. `pods` selects which pods are looked at.
pub async fn restart_pods_stuck_by_node_flap(client: &Client, ns: &str, pods: &ListParams) -> Result<Vec<String>> {
    let ready_nodes: std::collections::BTreeSet<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .into_iter()
        .filter(|n| {
            let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| n.name_any())
        .collect();
    let api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
    let mut restarted = vec![];
    for pod in api.list(pods).await.context("listing pods")?.items {
        let on_ready_node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|n| ready_nodes.contains(n));
        let status = pod.status.clone().unwrap_or_default();
        let not_ready = (status.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "False");
        let containers = status.container_statuses.unwrap_or_default();
        let containers_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
        if on_ready_node && not_ready && containers_ready && pod.metadata.deletion_timestamp.is_none() {
            ignore_not_found(api.delete(&pod.name_any(), &DeleteParams::default()).await.map(|_| ()))?;
            restarted.push(pod.name_any());
        }
    }
    Ok(restarted)
}

/// The nodes (`node` only, when given) that went NotReady at or after `since` (the node lifecycle
/// controller's NodeNotReady events). kwok keeps its own lastTransitionTime on the Ready condition, so the condition alone
/// does not show a flap that is over.
pub async fn node_flaps_since(
    c: &Client,
    since: k8s_openapi::jiff::Timestamp,
    node: Option<&str>,
) -> Result<Vec<String>> {
    let events = Api::<k8s_openapi::api::core::v1::Event>::all(c.clone())
        .list(&ListParams::default().fields("reason=NodeNotReady"))
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| {
            let last = [
                e.last_timestamp.as_ref().map(|t| t.0),
                e.event_time.as_ref().map(|t| t.0),
                e.series
                    .as_ref()
                    .and_then(|s| s.last_observed_time.as_ref())
                    .map(|t| t.0),
                e.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ];
            last.into_iter().flatten().any(|t| t >= since)
        })
        .filter(|e| e.involved_object.kind.as_deref() == Some("Node"))
        .filter(|e| node.is_none_or(|n| e.involved_object.name.as_deref() == Some(n)))
        .filter_map(|e| e.involved_object.name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// Label selector of a pipeline's children.
pub fn child_selector(ns: &str, name: &str) -> String {
    format!("{PIPELINE_LABEL}={ns}.{name}")
}

/// Names of the GPU nodes (label nvidia.com/gpu.present=true) now.
pub async fn gpu_nodes(client: &Client) -> Result<Vec<String>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(GPU_NODE_LABEL))
        .await
        .context("listing GPU nodes")?;
    Ok(nodes.items.iter().map(|n| n.name_any()).collect())
}

/// Does this object exist? (404 is `false`, any other error is an error.)
pub async fn exists<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .get_opt(name)
        .await
        .with_context(|| format!("get {name}"))?
        .is_some())
}

// ---------------------------------------------------------------------------------------------
// moto

/// SDK clients against the run's moto (`MLOBS_E2E_MOTO_URL`), region us-east-1, test credentials.
pub async fn aws() -> Result<AwsClients> {
    let endpoint = env("MLOBS_E2E_MOTO_URL")?;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    Ok(AwsClients::new(&conf))
}

/// `arn:aws:logs:<r>:<a>:log-group:NAME[:*]` → NAME.
pub fn log_group_name(arn: &str) -> Result<String> {
    let (_, rest) = arn
        .split_once(":log-group:")
        .with_context(|| format!("{arn} is not a log group ARN"))?;
    Ok(rest.strip_suffix(":*").unwrap_or(rest).to_string())
}

/// `arn:aws:iam::<a>:role/[path/]NAME` → NAME.
pub fn role_name(arn: &str) -> Result<String> {
    let (_, rest) = arn
        .split_once(":role/")
        .with_context(|| format!("{arn} is not a role ARN"))?;
    Ok(rest.rsplit('/').next().unwrap_or(rest).to_string())
}

/// The log group of exactly this name, if it exists.
pub async fn log_group(aws: &AwsClients, name: &str) -> Result<Option<aws_sdk_cloudwatchlogs::types::LogGroup>> {
    let out = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .with_context(|| format!("DescribeLogGroups {name}"))?;
    Ok(out
        .log_groups
        .unwrap_or_default()
        .into_iter()
        .find(|g| g.log_group_name.as_deref() == Some(name)))
}

/// Publishes what CloudWatch Logs publishes for a group receiving events (`AWS/Logs`
/// `IncomingLogEvents`, this minute) for every log group under `prefix`; returns their number.
pub async fn publish_incoming_log_events(aws: &AwsClients, prefix: &str) -> Result<usize> {
    let mut groups = vec![];
    let mut token = None;
    loop {
        let out = (aws.logs.describe_log_groups())
            .log_group_name_prefix(prefix)
            .set_next_token(token)
            .send()
            .await
            .context("DescribeLogGroups")?;
        groups.extend(
            out.log_groups()
                .iter()
                .filter_map(|g| g.log_group_name().map(str::to_string)),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    put_incoming_log_events(aws, &groups).await?;
    Ok(groups.len())
}

/// Publishes `IncomingLogEvents` of this minute for each of `groups` (as CloudWatch Logs does for
/// a group receiving events).
pub async fn put_incoming_log_events(aws: &AwsClients, groups: &[String]) -> Result<()> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
    for chunk in groups.chunks(500) {
        let data = (chunk.iter())
            .map(|g| {
                MetricDatum::builder()
                    .metric_name("IncomingLogEvents")
                    .dimensions(Dimension::builder().name("LogGroupName").value(g).build())
                    .timestamp(now)
                    .value(60.0)
                    .build()
            })
            .collect();
        (aws.cloudwatch.put_metric_data())
            .namespace("AWS/Logs")
            .set_metric_data(Some(data))
            .send()
            .await
            .context("PutMetricData")?;
    }
    Ok(())
}

/// Whether an IAM role of this name exists.
pub async fn role_exists(aws: &AwsClients, name: &str) -> Result<bool> {
    match aws.iam.get_role().role_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Ok(false),
        Err(e) => Err(anyhow!("GetRole {name}: {e:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Operator replicas

/// One `mlobs run` process of e2e/run.sh, from its state file `replica-<i>.env`.
#[derive(Debug, Clone)]
pub struct Replica {
    pub file: PathBuf,
    pub pid: u32,
    pub identity: String,
    pub metrics_addr: String,
    pub log: PathBuf,
    /// The command line, program first.
    pub args: Vec<String>,
    /// The environment it was started with (on top of the harness's, minus AWS_PROFILE,
    /// AWS_ENDPOINT_URL and POD_NAMESPACE).
    pub env: Vec<(String, String)>,
}

impl Replica {
    fn read(file: &Path) -> Result<Replica> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut r = Replica {
            file: file.to_path_buf(),
            pid: 0,
            identity: String::new(),
            metrics_addr: String::new(),
            log: PathBuf::new(),
            args: vec![],
            env: vec![],
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match k {
                "pid" => r.pid = v.parse().with_context(|| format!("{}: pid {v}", file.display()))?,
                "identity" => r.identity = v.to_string(),
                "metrics_addr" => r.metrics_addr = v.to_string(),
                "log" => r.log = PathBuf::from(v),
                "arg" => r.args.push(v.to_string()),
                "env" => {
                    let (ek, ev) = v
                        .split_once('=')
                        .with_context(|| format!("{}: env {v}", file.display()))?;
                    r.env.push((ek.to_string(), ev.to_string()));
                }
                _ => {}
            }
        }
        ensure!(
            r.pid > 0 && !r.identity.is_empty() && !r.args.is_empty(),
            "{} is incomplete",
            file.display()
        );
        Ok(r)
    }

    fn write(&self) -> Result<()> {
        let mut s = format!(
            "pid={}\nidentity={}\nmetrics_addr={}\nlog={}\n",
            self.pid,
            self.identity,
            self.metrics_addr,
            self.log.display()
        );
        for a in &self.args {
            s.push_str(&format!("arg={a}\n"));
        }
        for (k, v) in &self.env {
            s.push_str(&format!("env={k}={v}\n"));
        }
        std::fs::write(&self.file, s).with_context(|| format!("writing {}", self.file.display()))
    }

    /// Running (not exited, not a zombie).
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .context("running kill")?;
        ensure!(st.success(), "kill -{sig} {} failed", self.pid);
        Ok(())
    }

    /// Starts this replica again with its recorded command line and environment (log appended),
    /// and records the new pid in its state file. The process outlives the test; e2e/run.sh
    /// stops it by the pid in the state file.
    pub fn restart(&self) -> Result<Replica> {
        ensure!(
            !self.alive(),
            "replica {} (pid {}) is still running",
            self.identity,
            self.pid
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = std::process::Command::new(&self.args[0]);
        cmd.args(&self.args[1..])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("POD_NAMESPACE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {:?}", self.args))?;
        let mut r = self.clone();
        r.pid = child.id();
        r.write()?;
        println!("restarted replica {} as pid {}", r.identity, r.pid);
        Ok(r)
    }

    /// GET /metrics of this replica.
    pub async fn metrics(&self) -> Result<String> {
        http_get(&self.metrics_addr, "/metrics").await
    }
}

/// The established TCP connections process `pid` holds to `port` on any address: its socket
/// file descriptors matched by inode against the connection tables of its network namespace
/// (`/proc/<pid>/net/tcp` and `tcp6`).
pub fn tcp_connections_to(pid: u32, port: u16) -> Result<usize> {
    let mut inodes = std::collections::BTreeSet::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing the fds of pid {pid}"))?;
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode"
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9)) else {
                continue;
            };
            let remote_port = remote.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && remote_port == Some(port) && inodes.contains(*inode) {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Whether a process runs (a zombie counts as exited).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every replica e2e/run.sh started (or a test restarted), by its state file.
pub fn replicas() -> Result<Vec<Replica>> {
    let dir = PathBuf::from(env("MLOBS_E2E_STATE_DIR")?);
    let mut out = vec![];
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("replica-") && name.ends_with(".env") {
            out.push(Replica::read(&path)?);
        }
    }
    out.sort_by(|a, b| a.identity.cmp(&b.identity));
    ensure!(!out.is_empty(), "no replica state files in {}", dir.display());
    Ok(out)
}

/// holderIdentity of the operator's Lease (`None`: no Lease or released).
pub async fn lease_holder(client: &Client) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get_opt(LEASE)
        .await
        .context("get Lease mlobs-system/mlobs-operator-leader")?;
    Ok(lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// The replica holding the Lease.
pub async fn leader(client: &Client) -> Result<Replica> {
    let holder = lease_holder(client).await?.context("nobody holds the operator Lease")?;
    replicas()?
        .into_iter()
        .find(|r| r.identity == holder)
        .with_context(|| format!("the Lease holder {holder} is not one of the e2e replicas"))
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the metrics server of a replica).
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let addr = addr.to_string();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let mut s = std::net::TcpStream::connect(&addr).with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut raw = vec![];
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading {addr}{path}"))?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").context("HTTP response without headers")?;
        ensure!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "GET {addr}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return dechunk(body);
        }
        Ok(body.to_string())
    })
    .await?
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size line")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        if n == 0 {
            return Ok(out);
        }
        ensure!(rest.len() >= n, "truncated chunk");
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
}

/// Sum of the samples of a metric (`name` as exposed, e.g. `mlobs_kube_writes_total`) whose
/// labels match every `(key, value)` of `with` and none of `without`. `None` when the exposition
/// does not declare the metric at all.
pub fn metric_sum(text: &str, name: &str, with: &[(&str, &str)], without: &[(&str, &str)]) -> Option<f64> {
    let family = name.strip_suffix("_total").unwrap_or(name);
    let mut declared = text
        .lines()
        .any(|l| l.starts_with(&format!("# TYPE {family} ")) || l.starts_with(&format!("# TYPE {name} ")));
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, labels) = match series.split_once('{') {
            Some((m, l)) => (m, parse_labels(l.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        if metric != name {
            continue;
        }
        declared = true;
        let m = |&(k, v): &(&str, &str)| labels.get(k).map(String::as_str) == Some(v);
        if with.iter().all(m) && !without.iter().any(m) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    declared.then_some(sum)
}

/// Every sample of a metric as (`{k="v",...}` label text, value).
pub fn metric_samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        if metric == name {
            out.insert(format!("{{{labels}"), value.parse().unwrap_or(0.0));
        }
    }
    out
}

/// What grew between two scrapes: `{labels}: +n` per sample of `name`.
pub fn metric_growth(before: &str, after: &str, name: &str) -> Vec<String> {
    let b = metric_samples(before, name);
    metric_samples(after, name)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{name}{k}: +{d}"))
        })
        .collect()
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(k.trim_start_matches(',').trim().to_string(), after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// Fails with a message naming the metric when the operator does not expose it.
pub fn require_metric(text: &str, name: &str, with: &[(&str, &str)], without: &[(&str, &str)]) -> Result<f64> {
    metric_sum(text, name, with, without).ok_or_else(|| {
        anyhow!("the operator's /metrics has no {name}: it must count every write it makes to the API server")
    })
}

/// Shorthand for errors in polling closures.
pub fn not_yet<T>(msg: impl std::fmt::Display) -> Result<T> {
    bail!("{msg}")
}

/// The drift events queues the replicas read (`MLOBS_E2E_DRIFT_QUEUE_URLS`, in shard order: one
/// per shard when sharded, as EventBridge fills one queue per shard).
pub fn drift_queue_urls() -> Result<Vec<String>> {
    let urls: Vec<String> = env("MLOBS_E2E_DRIFT_QUEUE_URLS")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ensure!(!urls.is_empty(), "MLOBS_E2E_DRIFT_QUEUE_URLS names no queue");
    Ok(urls)
}

/// The EventBridge envelope of the CloudTrail record of a successful call, as the drift events
/// rule delivers it.
pub fn cloudtrail_event(service: &str, name: &str, params: serde_json::Value) -> String {
    serde_json::json!({"version": "0", "id": format!("e2e-{}", random_suffix()),
        "detail-type": "AWS API Call via CloudTrail", "source": format!("aws.{service}"),
        "account": ACCOUNT_ID, "region": REGION, "resources": [],
        "detail": {"eventVersion": "1.09", "eventSource": format!("{service}.amazonaws.com"), "eventName": name,
                   "awsRegion": REGION, "requestParameters": params,
                   "eventType": "AwsApiCall", "readOnly": false, "managementEvent": true}})
    .to_string()
}

/// Delivers `body` to every queue, as the rule's targets (one per shard) do.
pub async fn deliver_event(aws: &AwsClients, queues: &[String], body: &str) -> Result<()> {
    for q in queues {
        (aws.sqs.send_message().queue_url(q).message_body(body))
            .send()
            .await
            .with_context(|| format!("SendMessage to {q}"))?;
    }
    Ok(())
}

/// Messages in `queue`, visible or being handled (0: every message was deleted).
pub async fn queued_messages(aws: &AwsClients, queue: &str) -> Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = (aws.sqs.get_queue_attributes().queue_url(queue))
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .with_context(|| format!("GetQueueAttributes {queue}"))?;
    let attrs = out.attributes().cloned().unwrap_or_default();
    let n = |a: A| attrs.get(&a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible))
}

/// Ends the spawned task when dropped, also on an early return.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_filters_labels_and_tells_absent_from_zero() {
        let text = "# TYPE mlobs_kube_writes counter\n\
                    mlobs_kube_writes_total{resource=\"daemonsets\",verb=\"patch\"} 3\n\
                    mlobs_kube_writes_total{resource=\"leases\",verb=\"update\"} 40\n\
                    # TYPE mlobs_reconciles counter\n";
        assert_eq!(metric_sum(text, "mlobs_kube_writes_total", &[], &[]), Some(43.0));
        assert_eq!(
            metric_sum(text, "mlobs_kube_writes_total", &[], &[("resource", "leases")]),
            Some(3.0)
        );
        assert_eq!(metric_sum(text, "mlobs_reconciles_total", &[], &[]), Some(0.0));
        assert_eq!(metric_sum(text, "mlobs_nothing_total", &[], &[]), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").ok().as_deref(),
            Some("abcde")
        );
    }
}
