//! Operator metrics in OpenMetrics text, and the small HTTP server for `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Labels are controller, reason, drift kind and AWS service/operation only: never an object name,
//! so the series count stays bounded however many pipelines a cluster has.

use crate::crd::reason::Reason;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::aws::calls::{CallCounter, CallKey};

/// `Content-Type` of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reconcile duration buckets in seconds: most reconciles are a few API calls (tens of ms), a first
/// reconcile that creates a KMS key and IAM role can take seconds.
const DURATION_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    resource: String,
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    kind: String,
    action: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Pipeline uid → (status, reason) of its DataFlowing condition.
type FlowStates = Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>;

#[derive(Debug)]
struct Inner {
    registry: Registry,
    data_flowing: FlowStates,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    drift: Family<DriftLabels, Counter>,
    kube_writes: Family<WriteLabels, Counter>,
    kube_reads: Family<WriteLabels, Counter>,
    status_conflicts: Family<ControllerLabels, Counter>,
    drift_events: Family<EventLabels, Counter>,
    drift_events_read: Gauge,
    stream_reads_deferred: Counter,
    express_reconciles: Counter,
    shard: Family<ShardLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
    shards: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    result: String,
}

/// All operator metrics; cheap to clone, every clone updates the same registry.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    /// Metrics with `mlobs_aws_calls_total` read from `aws_calls` at every scrape (absent when
    /// `None`, e.g. when AWS provisioning is disabled).
    pub fn new(aws_calls: Option<CallCounter>) -> Metrics {
        match aws_calls {
            Some(counter) => Self::build(Some(Box::new(move || counter.snapshot()))),
            None => Self::build(None),
        }
    }

    fn build(aws_calls: Option<CallSource>) -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let drift = Family::<DriftLabels, Counter>::default();
        let kube_writes = Family::<WriteLabels, Counter>::default();
        let kube_reads = Family::<WriteLabels, Counter>::default();
        let status_conflicts = Family::<ControllerLabels, Counter>::default();
        let drift_events = Family::<EventLabels, Counter>::default();
        let drift_events_read = Gauge::default();
        let stream_reads_deferred = Counter::default();
        registry.register(
            "mlobs_stream_reads_deferred",
            "DataFlowing checks put off because the DescribeLogStreams budget (--stream-reads-per-second) was spent; each got a reserved time to read at",
            stream_reads_deferred.clone(),
        );
        let express_reconciles = Counter::default();
        registry.register(
            "mlobs_express_reconciles",
            "Reconciles a drift event started at once in the express lane, ahead of the reconciles queued (each is reconciled once more in turn)",
            express_reconciles.clone(),
        );
        let shard = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "mlobs_shard_info",
            "1, labelled with the shard this replica reconciles (`--shard`: shard of shards)",
            shard.clone(),
        );
        registry.register(
            "mlobs_drift_events",
            "Messages read from the drift events queue, by result: matched (pipelines reconciled now), unmatched, irrelevant (a failed or unwatched call), malformed, error (a queue call failed)",
            drift_events.clone(),
        );
        registry.register(
            "mlobs_drift_events_last_read_timestamp_seconds",
            "When the drift events queue was last read without error (Unix seconds; 0: not yet). Over 120 s ago, drift events are not standing in for the log group listing and the slower checks (`--event-backstop-interval`), and those run at every resync again",
            drift_events_read.clone(),
        );
        registry.register(
            "mlobs_status_conflicts",
            "Status writes refused because the object changed after the reconcile read it (a stale cache); the object is reconciled again from the newer copy",
            status_conflicts.clone(),
        );
        registry.register(
            "mlobs_kube_writes",
            "Write requests sent to the Kubernetes API server, by resource (plural[/subresource]) and verb; dry runs are not writes",
            kube_writes.clone(),
        );
        registry.register(
            "mlobs_kube_reads",
            "Read requests sent to the Kubernetes API server, by resource (plural[/subresource]) and verb (get, list, watch, dry-run)",
            kube_reads.clone(),
        );
        registry.register(
            "mlobs_reconciles",
            "Reconciles by controller and result (ok or the error reason)",
            reconciles.clone(),
        );
        registry.register(
            "mlobs_reconcile_errors",
            "Failed reconciles by controller and error reason",
            errors.clone(),
        );
        registry.register_with_unit(
            "mlobs_reconcile_duration",
            "Reconcile duration by controller",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "mlobs_drift",
            "Differences between desired and actual state, by kind (aws, kubernetes) and action (found, corrected)",
            drift.clone(),
        );
        if let Some(source) = aws_calls {
            registry.register_collector(Box::new(AwsCalls { source }));
        }
        let data_flowing = FlowStates::default();
        registry.register_collector(Box::new(DataFlowingCount(data_flowing.clone())));
        Metrics(Arc::new(Inner {
            registry,
            data_flowing,
            reconciles,
            errors,
            durations,
            drift,
            kube_writes,
            kube_reads,
            status_conflicts,
            drift_events,
            drift_events_read,
            stream_reads_deferred,
            express_reconciles,
            shard,
        }))
    }

    /// Counts one read request to the API server.
    pub fn kube_read(&self, resource: &str, verb: &str) {
        self.0
            .kube_reads
            .get_or_create(&WriteLabels {
                resource: resource.to_owned(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Counts one write request to the API server.
    pub fn kube_write(&self, resource: &str, verb: &str) {
        self.0
            .kube_writes
            .get_or_create(&WriteLabels {
                resource: resource.to_owned(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Records one finished reconcile: `result` is `ok` or `error`; an error is also counted under
    /// its reason in `mlobs_reconcile_errors_total`.
    pub fn reconcile_done(&self, controller: &str, duration: Duration, result: Result<(), Reason>) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(reason) => {
                self.0
                    .errors
                    .get_or_create(&ErrorLabels {
                        controller: controller.to_owned(),
                        reason: reason.as_str().to_owned(),
                    })
                    .inc();
                "error"
            }
        };
        self.0
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_owned(),
                result: outcome.to_owned(),
            })
            .inc();
        self.0
            .durations
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Publishes which shard this replica reconciles.
    pub fn shard(&self, s: super::shard::Shard) {
        self.0
            .shard
            .get_or_create(&ShardLabels {
                shard: s.index.to_string(),
                shards: s.count.to_string(),
            })
            .set(1);
    }

    /// A `DataFlowing` check put off by the DescribeLogStreams budget.
    pub fn stream_read_deferred(&self) {
        self.0.stream_reads_deferred.inc();
    }

    /// A drift event's reconcile started in the express lane.
    pub fn express_reconcile(&self) {
        self.0.express_reconciles.inc();
    }

    /// The drift events queue was read without error at `at`.
    pub fn drift_events_read(&self, at: std::time::SystemTime) {
        let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.0.drift_events_read.set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Counts one drift events queue message (or failed queue call) by its result.
    pub fn drift_event(&self, result: &str) {
        self.0
            .drift_events
            .get_or_create(&EventLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one status write refused for a stale copy.
    pub fn status_conflict(&self, controller: &str) {
        self.0
            .status_conflicts
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .inc();
    }

    /// Counts `n` drifts of `kind` (`aws`, `kubernetes`) that were `action` (`found`, `corrected`).
    pub fn drift(&self, kind: &str, action: &str, n: u64) {
        self.0
            .drift
            .get_or_create(&DriftLabels {
                kind: kind.to_owned(),
                action: action.to_owned(),
            })
            .inc_by(n);
    }

    /// Records a pipeline's DataFlowing (status, reason); `None` when the pipeline is gone.
    pub fn data_flowing(&self, uid: &str, state: Option<(&str, &str)>) {
        let mut m = self.0.data_flowing.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some((status, reason)) => {
                if m.get(uid).is_none_or(|(s, r)| s != status || r != reason) {
                    m.insert(uid.to_string(), (status.to_string(), reason.to_string()));
                }
            }
            None => {
                m.remove(uid);
            }
        }
    }

    /// The whole registry in OpenMetrics text, `# EOF` included.
    pub fn encode(&self) -> String {
        self.try_encode().unwrap_or_else(|e| {
            tracing::error!(error = %e, "encoding metrics failed");
            String::new()
        })
    }

    fn try_encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)?;
        Ok(out)
    }
}

type CallSource = Box<dyn Fn() -> BTreeMap<CallKey, u64> + Send + Sync>;

/// Re-reads the AWS call counts on each scrape, so the numbers never lag behind the interceptor.
struct AwsCalls {
    source: CallSource,
}

impl fmt::Debug for AwsCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCalls").finish_non_exhaustive()
    }
}

impl Collector for AwsCalls {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_aws_calls(encoder, &(self.source)())
    }
}

fn encode_aws_calls(mut encoder: DescriptorEncoder, calls: &BTreeMap<CallKey, u64>) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "mlobs_aws_calls",
        "AWS API operations by service, operation and outcome (ok or error)",
        None,
        MetricType::Counter,
    )?;
    for (key, count) in calls {
        let labels = [
            ("service", key.service.as_str()),
            ("operation", key.operation.as_str()),
            ("outcome", key.outcome),
        ];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `mlobs_pipeline_data_flowing{status,reason}`: how many pipelines are in each DataFlowing
/// state, counted at scrape time. Not one series per pipeline with its last event's age: that
/// would grow with the pipelines (STYLE: no object names in labels), and the age per pipeline is
/// in its status and in CloudWatch's own per-group `IncomingLogEvents` metric, which alerts can use.
struct DataFlowingCount(FlowStates);

impl fmt::Debug for DataFlowingCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataFlowingCount").finish_non_exhaustive()
    }
}

impl Collector for DataFlowingCount {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        {
            let states = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for state in states.values() {
                *counts.entry(state.clone()).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "mlobs_pipeline_data_flowing",
            "Pipelines by the status and reason of their DataFlowing condition",
            None,
            MetricType::Gauge,
        )?;
        for ((status, reason), n) in &counts {
            let labels = [("status", status.as_str()), ("reason", reason.as_str())];
            ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// The `/metrics`, `/healthz` and `/readyz` routes.
pub fn router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(HttpState { metrics, ready })
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    match state.metrics.try_encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz_handler(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds the listener first, so a port conflict fails start-up instead of a background task.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves on `addr` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(bind(addr).await?, metrics, ready, shutdown).await
}

/// As [`serve`], on a listener bound by the caller (tests bind port 0).
pub async fn serve_on(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn key(service: &str, operation: &str, outcome: &'static str) -> CallKey {
        CallKey {
            service: service.into(),
            operation: operation.into(),
            outcome,
        }
    }

    #[test]
    fn reconcile_results_are_counted_by_controller_and_reason() {
        let m = Metrics::new(None);
        m.reconcile_done("pipeline", Duration::from_millis(20), Ok(()));
        m.reconcile_done("pipeline", Duration::from_millis(30), Ok(()));
        m.reconcile_done("pipeline", Duration::from_secs(2), Err(Reason::AwsRetryable));
        let text = m.encode();
        assert!(
            text.contains(r#"mlobs_reconciles_total{controller="pipeline",result="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"mlobs_reconciles_total{controller="pipeline",result="error"} 1"#));
        assert!(text.contains(r#"mlobs_reconcile_errors_total{controller="pipeline",reason="AwsRetryable"} 1"#));
        assert!(text.contains("# UNIT mlobs_reconcile_duration_seconds seconds"));
        assert!(text.contains(r#"mlobs_reconcile_duration_seconds_count{controller="pipeline"} 3"#));
        assert!(text.contains(r#"mlobs_reconcile_duration_seconds_bucket{le="0.025",controller="pipeline"} 1"#));
        assert!(text.contains(r#"mlobs_reconcile_duration_seconds_bucket{le="30.0",controller="pipeline"} 3"#));
        assert!(!text.contains("reconcile_errors_total{controller=\"pipeline\",reason=\"ok\""));
        assert!(!text.contains("mlobs_aws_calls"), "no AWS collector without a counter");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn pipelines_are_counted_by_data_flowing_state_not_named() {
        let m = Metrics::new(None);
        assert!(m.encode().contains("# TYPE mlobs_pipeline_data_flowing gauge"));
        m.data_flowing("u1", Some(("True", "DataFlowing")));
        m.data_flowing("u2", Some(("True", "DataFlowing")));
        m.data_flowing("u3", Some(("False", "NoRecentLogs")));
        let text = m.encode();
        assert!(
            text.contains(r#"mlobs_pipeline_data_flowing{status="True",reason="DataFlowing"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"mlobs_pipeline_data_flowing{status="False",reason="NoRecentLogs"} 1"#));
        assert!(!text.contains("u1"), "no object in a label");
        // A pipeline that recovers moves; a deleted one is no longer counted.
        m.data_flowing("u3", Some(("True", "DataFlowing")));
        m.data_flowing("u1", None);
        let text = m.encode();
        assert!(text.contains(r#"mlobs_pipeline_data_flowing{status="True",reason="DataFlowing"} 2"#));
        assert!(!text.contains("NoRecentLogs"), "{text}");
    }

    #[test]
    fn drift_is_counted_by_kind_and_action() {
        let m = Metrics::new(None);
        m.drift("aws", "found", 3);
        m.drift("aws", "corrected", 2);
        m.drift("aws", "found", 1);
        let text = m.encode();
        assert!(
            text.contains(r#"mlobs_drift_total{kind="aws",action="found"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"mlobs_drift_total{kind="aws",action="corrected"} 2"#));
    }

    #[test]
    fn aws_calls_are_encoded_with_service_operation_and_outcome() {
        let calls = BTreeMap::from([
            (key("KMS", "DescribeKey", "ok"), 7),
            (key("CloudWatch Logs", "CreateLogGroup", "error"), 1),
        ]);
        let m = Metrics::build(Some(Box::new(move || calls.clone())));
        let text = m.encode();
        assert!(text.contains("# TYPE mlobs_aws_calls counter"), "{text}");
        assert!(text.contains(r#"mlobs_aws_calls_total{service="KMS",operation="DescribeKey",outcome="ok"} 7"#));
        assert!(text.contains(
            r#"mlobs_aws_calls_total{service="CloudWatch Logs",operation="CreateLogGroup",outcome="error"} 1"#
        ));
    }

    #[test]
    fn aws_calls_are_read_at_scrape_time() {
        let calls = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let source = calls.clone();
        let m = Metrics::build(Some(Box::new(move || {
            source.lock().map(|c| c.clone()).unwrap_or_default()
        })));
        assert!(!m.encode().contains("mlobs_aws_calls_total"));
        calls.lock().unwrap().insert(key("IAM", "GetRole", "ok"), 2);
        assert!(
            m.encode()
                .contains(r#"mlobs_aws_calls_total{service="IAM",operation="GetRole",outcome="ok"} 2"#)
        );
    }

    #[test]
    fn an_empty_call_counter_still_declares_the_family() {
        let text = Metrics::new(Some(CallCounter::default())).encode();
        assert!(text.contains("# TYPE mlobs_aws_calls counter"), "{text}");
        assert!(!text.contains("mlobs_aws_calls_total"));
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {response:?}"));
        (status, response)
    }

    #[tokio::test]
    async fn http_endpoints_serve_metrics_health_and_readiness() {
        let metrics = Metrics::new(None);
        metrics.drift("kubernetes", "corrected", 1);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, metrics, ready.clone(), async {
            let _ = stopped.await;
        }));

        let (status, response) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let lower = response.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{response}"
        );
        assert!(response.contains(r#"mlobs_drift_total{kind="kubernetes",action="corrected"} 1"#));
        assert!(response.ends_with("# EOF\n"));

        let (status, response) = get(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(response.ends_with("\r\n\r\nok"), "{response}");

        assert_eq!(get(addr, "/readyz").await.0, 503);
        ready.store(true, Ordering::Release);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
