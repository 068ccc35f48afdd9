#![allow(dead_code)]

//! The operator as tests run it: the real controllers against the in-process API fake and moto,
//! with helpers to create pipelines, play the kubelet and wait for conditions.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::FutureExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use mlobs::aws::{AwsClients, logs};
use mlobs::controller::{Metrics, Settings, run_controllers};
use mlobs::crd::MLObservabilityPipeline;
use mlobs::desired::Context;
use serde_json::{Value, json};

use super::apifake::ApiFake;
use super::moto;

pub const WAIT: Duration = Duration::from_secs(60);
pub const NS: &str = "team-a";
pub const OIDC: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/TEST";

pub struct Operator {
    pub fake: ApiFake,
    pub aws: AwsClients,
    pub metrics: Metrics,
    pub cluster: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub async fn start() -> Operator {
        Operator::start_with(moto::clients().await).await
    }

    pub async fn start_with(aws: AwsClients) -> Operator {
        Operator::start_on(ApiFake::new(), aws, moto::unique("flow"), 2).await
    }

    /// An operator that reads CloudTrail events from `queue_url` (`--drift-events-queue`).
    pub async fn start_with_drift_events(queue_url: String) -> Operator {
        Operator::start_with_drift_events_and_slots(queue_url, 32).await
    }

    /// [`Operator::start_with_drift_events`] with `slots` concurrent reconciles
    /// (`--max-concurrent-reconciles`).
    pub async fn start_with_drift_events_and_slots(queue_url: String, slots: u16) -> Operator {
        Operator::start_full(
            ApiFake::new(),
            moto::clients().await,
            moto::unique("flow"),
            2,
            Some(queue_url),
            slots,
        )
        .await
    }

    /// An operator on an existing API server and cluster name (a restart), with `nodes` GPU nodes.
    pub async fn start_on(fake: ApiFake, aws: AwsClients, cluster: String, nodes: usize) -> Operator {
        Operator::start_full(fake, aws, cluster, nodes, None, 32).await
    }

    async fn start_full(
        fake: ApiFake,
        aws: AwsClients,
        cluster: String,
        nodes: usize,
        queue: Option<String>,
        concurrency: u16,
    ) -> Operator {
        for ns in [NS, "mlobs-system", "gpu-operator"] {
            fake.put_object(
                "v1",
                "namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        for i in 0..nodes {
            fake.put_object(
                "v1",
                "nodes",
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("gpu-{i}"), "labels": {
                    "nvidia.com/gpu.present": "true", "node.kubernetes.io/instance-type": "p4d.24xlarge"}}}),
            );
            // Without a policy the collectors scrape gpu-operator's exporter: one runs per node.
            fake.put_object(
                "v1",
                "pods",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("nvidia-dcgm-exporter-{i}"),
                    "namespace": "gpu-operator", "labels": {"app": "nvidia-dcgm-exporter"}},
                    "spec": {"nodeName": format!("gpu-{i}"), "containers": []}, "status": {"phase": "Running"}}),
            );
        }
        let metrics = Metrics::new(Some(aws.calls.clone()));
        let settings = Settings {
            aws: aws.clone(),
            desired: Context {
                cluster_name: Some(cluster.clone()),
                region: Some("us-east-1".into()),
                ..Context::default()
            },
            metrics: metrics.clone(),
            reporter: Reporter {
                controller: "mlobs".into(),
                instance: None,
            },
            drift_events_queue: queue,
            shard: Default::default(),
            concurrency,
            kms_check_interval: mlobs::controller::batched::DEFAULT_KMS_CHECK_INTERVAL,
            event_backstop_interval: mlobs::controller::batched::DEFAULT_EVENT_BACKSTOP_INTERVAL,
            stream_reads_per_second: 0.0,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = rx.map(|_| ()).shared();
        let task = tokio::spawn(run_controllers(
            fake.client(),
            settings,
            Arc::new(AtomicBool::new(false)),
            shutdown,
        ));
        Operator {
            fake,
            aws,
            metrics,
            cluster,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the operator, handing back its API server for a restart.
    pub async fn stop(mut self) -> ApiFake {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        self.fake.clone()
    }

    /// KMS keys tagged for this cluster and not pending deletion.
    pub async fn our_keys(&self) -> usize {
        let mut n = 0;
        let keys = self.aws.kms.list_keys().limit(1000).send().await.expect("list keys");
        for k in keys.keys() {
            let Some(id) = k.key_id() else { continue };
            let tags = self.aws.kms.list_resource_tags().key_id(id).send().await.expect("tags");
            let ours = tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == "mlobs.io/cluster" && t.tag_value() == self.cluster);
            let meta = self.aws.kms.describe_key().key_id(id).send().await.expect("describe");
            let pending =
                meta.key_metadata().and_then(|m| m.key_state()).map(|s| s.as_str()) == Some("PendingDeletion");
            n += usize::from(ours && !pending);
        }
        n
    }

    pub fn pipelines(&self) -> Api<MLObservabilityPipeline> {
        Api::namespaced(self.fake.client(), NS)
    }

    pub async fn create(&self, name: &str, spec: Value) {
        let mut spec = spec;
        spec["identity"] = json!({"mode": "IRSA", "oidcProviderArn": OIDC});
        let p: MLObservabilityPipeline = serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": name, "namespace": NS}, "spec": spec
        }))
        .expect("pipeline");
        self.pipelines()
            .create(&PostParams::default(), &p)
            .await
            .expect("create pipeline");
    }

    pub fn pipeline(&self, name: &str) -> Option<MLObservabilityPipeline> {
        self.fake.get::<MLObservabilityPipeline>(Some(NS), name)
    }

    /// (status, reason) of a pipeline condition.
    pub fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let s = self.pipeline(name)?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason))
    }

    pub async fn wait(&self, what: &str, pred: impl FnMut(&ApiFake) -> bool) {
        assert!(self.fake.wait_until(WAIT, pred).await, "timed out waiting for {what}");
    }

    pub async fn wait_condition(&self, name: &str, type_: &str, status: &str) {
        let want = status.to_string();
        let last = std::cell::RefCell::new(None);
        let ok = self
            .fake
            .wait_until(WAIT, |_| {
                let c = self.condition(name, type_);
                let hit = c.as_ref().is_some_and(|(s, _)| *s == want);
                *last.borrow_mut() = c;
                hit
            })
            .await;
        assert!(
            ok,
            "{name}: {type_} never became {status}; last {:?}; status {:?}",
            last.borrow(),
            self.pipeline(name).and_then(|p| p.status)
        );
    }

    /// Plays the kubelet: every collector pod scheduled and ready.
    pub fn daemon_set_ready(&self, name: &str) {
        let ds_name = format!("mlobs-{name}");
        let mut ds = self
            .fake
            .object("apps/v1", "daemonsets", Some(NS), &ds_name)
            .expect("DaemonSet");
        let generation = ds["metadata"]["generation"].clone();
        ds["status"] = json!({"desiredNumberScheduled": 2, "numberReady": 2, "updatedNumberScheduled": 2,
            "currentNumberScheduled": 2, "numberMisscheduled": 0, "observedGeneration": generation});
        // Exporter pods first: the DaemonSet's status change is what triggers the reconcile.
        self.exporter_pods_running();
        self.fake.put_object("apps/v1", "daemonsets", ds);
    }

    /// Plays the kubelet for every Managed DCGM exporter: one running pod per GPU node.
    pub fn exporter_pods_running(&self) {
        for ds in self.fake.list("apps/v1", "daemonsets") {
            if ds["metadata"]["labels"]["app.kubernetes.io/name"] != "mlobs-dcgm-exporter" {
                continue;
            }
            let ns = ds["metadata"]["namespace"].clone();
            let name = ds["metadata"]["name"].as_str().unwrap_or_default().to_string();
            for i in 0..2 {
                self.fake.put_object(
                    "v1",
                    "pods",
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{name}-{i}"),
                        "namespace": ns, "labels": ds["spec"]["template"]["metadata"]["labels"]},
                        "spec": {"nodeName": format!("gpu-{i}"), "containers": []}, "status": {"phase": "Running"}}),
                );
            }
        }
    }

    pub async fn ready(&self, name: &str) {
        self.wait("the collector DaemonSet", |f| {
            f.object("apps/v1", "daemonsets", Some(NS), &format!("mlobs-{name}"))
                .is_some()
        })
        .await;
        self.daemon_set_ready(name);
        self.wait_condition(name, "Ready", "True").await;
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("mlobs_reconciles_total{") && l.contains("controller=\"pipeline\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub async fn log_groups(&self) -> Vec<logs::ObservedGroup> {
        logs::observe_many(&self.aws, &format!("/aws/eks/{}/", self.cluster))
            .await
            .expect("describe log groups")
            .into_values()
            .collect()
    }

    /// Puts one event, timestamped now, into every log group of pipeline `name` (a stream
    /// `gpu-0` each): data flows, as far as `DataFlowing` can tell, for its grace period.
    pub async fn log_once(&self, name: &str) {
        let groups: Vec<String> = (self.log_groups().await.into_iter())
            .map(|g| g.name)
            .filter(|n| n.contains(&format!("/{name}/")))
            .collect();
        assert!(!groups.is_empty(), "log groups of {name}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        for g in groups {
            self.aws
                .logs
                .create_log_stream()
                .log_group_name(&g)
                .log_stream_name("gpu-0")
                .send()
                .await
                .expect("create log stream");
            let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now)
                .message("one line")
                .build()
                .expect("event");
            (self.aws.logs.put_log_events())
                .log_group_name(&g)
                .log_stream_name("gpu-0")
                .log_events(event)
                .send()
                .await
                .expect("put log events");
        }
    }

    /// (status, reason, message) of a pipeline condition.
    pub fn condition_full(&self, name: &str, type_: &str) -> Option<(String, String, String)> {
        let s = self.pipeline(name)?.status?;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason, c.message))
    }

    /// Every (status, reason, message) of condition `type_` the operator wrote, in order.
    pub fn conditions_written(&self, name: &str, type_: &str) -> Vec<(String, String, String)> {
        let path = format!("/mlobservabilitypipelines/{name}/status");
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&path))
            .flat_map(|r| r.body["status"]["conditions"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["type"] == type_)
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("status"), s("reason"), s("message"))
            })
            .collect()
    }

    /// Waits until `type_` has `status` and `reason`; returns its message.
    pub async fn wait_reason(&self, name: &str, type_: &str, status: &str, reason: &str) -> String {
        let mut last = None;
        let ok = self
            .fake
            .wait_until(WAIT, |_| {
                let c = self.condition_full(name, type_);
                let hit = c.as_ref().is_some_and(|(s, r, _)| s == status && r == reason);
                last = c;
                hit
            })
            .await;
        assert!(ok, "{name}: {type_} never became {status}/{reason}; last {last:?}");
        last.map(|c| c.2).unwrap_or_default()
    }

    /// Forces a full reconcile, AWS included, through the annotation users have for it.
    pub async fn request_reconcile(&self, name: &str, n: u32) {
        let patch = json!({"metadata": {"annotations": {"mlobs.io/reconcile-requested-at": n.to_string()}}});
        self.pipelines()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// Makes a reconcile happen without a spec change (a node label changes; nodes are watched)
    /// and returns the writes it made, events excluded, as `METHOD path`.
    pub async fn no_op_reconcile_writes(&self) -> Vec<String> {
        (self.no_op_reconcile_requests().await.iter())
            .filter(|r| r.is_write() && !r.path.contains("/events"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Every request but watches the operator made while reconciling after a node label change
    /// that changes nothing the pipelines depend on.
    pub async fn no_op_reconcile_requests(&self) -> Vec<super::apifake::RecordedRequest> {
        self.no_op_reconciles_requests(1).await
    }

    /// Waits until no reconcile ran for `quiet` (the reconciles a status write of its own
    /// triggers are over).
    pub async fn quiet(&self, quiet: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let before = self.reconciles();
            tokio::time::sleep(quiet).await;
            if self.reconciles() == before {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "reconciles never stopped");
        }
    }

    /// [`Operator::no_op_reconcile_requests`] when `pipelines` pipelines reconcile on the node
    /// change: waits for that many reconciles.
    pub async fn no_op_reconciles_requests(&self, pipelines: u64) -> Vec<super::apifake::RecordedRequest> {
        let seen = self.fake.requests().len();
        let before = self.reconciles();
        let mut node = self.fake.object("v1", "nodes", None, "gpu-0").expect("node");
        node["metadata"]["labels"]["touched"] = json!(before.to_string());
        self.fake.put_object("v1", "nodes", node);
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.reconciles() < before + pipelines {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no reconcile after the node change"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        (self.fake.requests().into_iter())
            .skip(seen)
            .filter(|r| !r.query.contains("watch=true") && !r.query.contains("watch=1"))
            .collect()
    }
}
