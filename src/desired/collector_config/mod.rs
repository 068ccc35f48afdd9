//! The OpenTelemetry collector configuration of one pipeline, built as values (never text
//! templates) and serialized with serde-saphyr. Pure: the same effective spec gives the same bytes.
//!
//! Every user string goes through [`lit`]: the collector expands `${...}` in all string values, so
//! a literal `$` must be written `$$`. Only our own `${env:...}` references stay unescaped.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::effective::Effective;
use crate::crd::format_duration_ms;

pub mod destinations;

/// health_check extension port; the DaemonSet probes it.
pub const HEALTH_PORT: u16 = 13133;
pub const OTLP_GRPC_PORT: u16 = 4317;
pub const OTLP_HTTP_PORT: u16 = 4318;
/// Env var with the node name (downward API `spec.nodeName`), set by the DaemonSet.
pub const NODE_NAME_ENV: &str = "KUBE_NODE_NAME";
/// Node label k8sattributes copies into `gpu.node.type`: the downward API cannot expose node labels.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Name of the collector container; the filelog receiver excludes its own logs by it.
pub const CONTAINER_NAME: &str = "otel-collector";
/// The file_storage extension: persistent queues and log offsets.
pub(crate) const STORAGE: &str = "file_storage";

/// Which pipelines run. Metrics need at least one selected metric; OTLP only joins a running
/// pipeline; traces need OTLP and a destination.
struct Shape {
    logs: bool,
    metrics: bool,
    traces: bool,
    otlp: bool,
}

impl Shape {
    fn of(e: &Effective) -> Self {
        let logs = e.logs.enabled;
        let metrics = e.metrics.dcgm_enabled && !e.metrics.metrics.is_empty();
        let traces = e.collector.otlp_enabled && e.destinations.traces.is_some();
        Shape {
            logs,
            metrics,
            traces,
            otlp: e.collector.otlp_enabled && (logs || metrics || traces),
        }
    }
}

/// Whether the configuration has an OTLP receiver (the DaemonSet opens its ports only then).
pub fn otlp_active(e: &Effective) -> bool {
    Shape::of(e).otlp
}

/// The collector configuration as a JSON value (keys sorted, lists in meaningful order).
pub fn build(e: &Effective) -> Value {
    let shape = Shape::of(e);
    let (mut receivers, mut processors, mut exporters, mut pipelines) =
        (Map::new(), Map::new(), Map::new(), Map::new());
    if shape.logs || shape.metrics || shape.traces {
        let memory_limiter = json!({"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 15});
        processors.insert("memory_limiter".into(), memory_limiter);
        processors.insert("k8sattributes".into(), k8sattributes(e));
        processors.insert("resource".into(), resource(e));
        let timeout = format_duration_ms(e.collector.batch_timeout_ms);
        processors.insert(
            "batch".into(),
            json!({"send_batch_size": e.collector.batch_size, "timeout": timeout}),
        );
    }
    if shape.otlp {
        let (grpc, http) = (format!("0.0.0.0:{OTLP_GRPC_PORT}"), format!("0.0.0.0:{OTLP_HTTP_PORT}"));
        let otlp = json!({"protocols": {"grpc": {"endpoint": grpc}, "http": {"endpoint": http}}});
        receivers.insert("otlp".into(), otlp);
    }
    if shape.logs {
        receivers.insert("filelog".into(), filelog(e));
        exporters.insert("awscloudwatchlogs".into(), cloudwatch_logs(e));
        processors.insert(LOG_STREAM_PROCESSOR.into(), log_stream());
        let mut chain = vec!["memory_limiter", "k8sattributes", "resource", LOG_STREAM_PROCESSOR];
        if !e.logs.redactions.is_empty() {
            processors.insert("transform/redact".into(), redact(e));
            chain.push("transform/redact");
        }
        chain.push("batch");
        let mut to = vec!["awscloudwatchlogs"];
        to.extend(destinations::logs_exporters(e, &mut exporters));
        pipelines.insert("logs".into(), pipeline("filelog", shape.otlp, &chain, &to));
    }
    if shape.metrics {
        receivers.insert("prometheus".into(), prometheus(e));
        let names: Vec<Value> = e.metrics.metrics.iter().map(|m| lit(m)).collect();
        let filter = json!({"metrics": {"include": {"match_type": "strict", "metric_names": names}}});
        processors.insert("filter/dcgm".into(), filter);
        exporters.insert("awsemf".into(), emf(e));
        processors.insert(GPU_POD_PROCESSOR.into(), gpu_pod());
        // OTLP metrics pass filter/dcgm too: only selected names reach EMF, so cost stays bounded.
        let chain = [
            "memory_limiter",
            "k8sattributes",
            "resource",
            "filter/dcgm",
            GPU_POD_PROCESSOR,
            "batch",
        ];
        let mut to = vec!["awsemf"];
        to.extend(destinations::metrics_exporters(e, &mut exporters));
        pipelines.insert("metrics".into(), pipeline("prometheus", shape.otlp, &chain, &to));
    }
    if shape.traces
        && let Some(traces) = destinations::traces_pipeline(e, &mut exporters)
    {
        pipelines.insert("traces".into(), traces);
    }
    let mut extensions = Map::new();
    extensions.insert(
        STORAGE.into(),
        json!({"directory": lit(&e.collector.queue_host_path), "create_directory": true}),
    );
    extensions.insert(
        "health_check".into(),
        json!({"endpoint": format!("0.0.0.0:{HEALTH_PORT}")}),
    );
    for (name, x) in destinations::extensions(e, shape.metrics, shape.traces) {
        extensions.insert(name.into(), x);
    }
    let extension_names: Vec<String> = extensions.keys().cloned().collect();
    json!({
        "receivers": receivers,
        "processors": processors,
        "exporters": exporters,
        "extensions": extensions,
        "service": {
            "extensions": extension_names,
            "pipelines": pipelines,
            "telemetry": crate::desired::self_monitoring::telemetry(),
        },
    })
}

/// The configuration as YAML, the content of the collector's ConfigMap.
pub fn to_yaml(e: &Effective) -> String {
    let value = super::canonical_json(build(e));
    // Serializing a plain value does not fail; JSON is valid YAML should it ever happen.
    serde_saphyr::to_string(&value).unwrap_or_else(|_| value.to_string())
}

/// First 16 hex chars of the SHA-256 of the configuration: the pod template annotation that rolls pods.
pub fn config_hash(yaml: &str) -> String {
    Sha256::digest(yaml.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Doubles every `$`: the collector would otherwise expand `$...` in a user's string.
pub fn escape_dollar(s: &str) -> String {
    s.replace('$', "$$")
}

pub(crate) fn lit(s: &str) -> Value {
    Value::String(escape_dollar(s))
}

pub(crate) fn node_env() -> String {
    format!("${{env:{NODE_NAME_ENV}}}")
}

fn pipeline(receiver: &str, otlp: bool, processors: &[&str], exporters: &[&str]) -> Value {
    let mut receivers = vec![receiver];
    if otlp {
        receivers.push("otlp");
    }
    json!({"receivers": receivers, "processors": processors, "exporters": exporters})
}

fn filelog(e: &Effective) -> Value {
    let include: Vec<Value> = e.logs.include.iter().map(|s| lit(s)).collect();
    let mut exclude: Vec<Value> = e.logs.exclude.iter().map(|s| lit(s)).collect();
    // Our own logs would feed the collector's export errors back into the pipeline.
    let own = format!(
        "/var/log/pods/{}_{}-*_*/{CONTAINER_NAME}/*.log",
        e.collector_namespace,
        e.child_name()
    );
    exclude.push(lit(&own));
    json!({
        "include": include,
        "exclude": exclude,
        "start_at": "end",
        "include_file_path": true,
        "operators": [{"type": "container"}],
        "storage": STORAGE,
    })
}

/// Prometheus label name of a Kubernetes label key, as service discovery writes it.
fn sanitize_label(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// Escapes RE2 metacharacters as Go's `regexp.QuoteMeta` does (Prometheus and awsemf are Go).
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The selected metric names as one regex alternation (Prometheus anchors relabel regexes).
fn metric_regex(metrics: &[String]) -> String {
    metrics.iter().map(|m| quote_meta(m)).collect::<Vec<_>>().join("|")
}

fn prometheus(e: &Effective) -> Value {
    let x = &e.exporter;
    let mut relabel =
        vec![json!({"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"})];
    for (key, value) in &x.pod_selector {
        let source = format!("__meta_kubernetes_pod_label_{}", sanitize_label(key));
        relabel.push(json!({"source_labels": [source], "regex": lit(&quote_meta(value)), "action": "keep"}));
    }
    // Scrape the pod IP on the exporter port whatever ports the pod declares; IPv6 needs brackets.
    for (ip, address) in [
        ("([^:]+)", format!("$$1:{}", x.port)),
        ("(.+:.+)", format!("[$$1]:{}", x.port)),
    ] {
        relabel.push(json!({
            "source_labels": ["__meta_kubernetes_pod_ip"],
            "regex": ip,
            "target_label": "__address__",
            "replacement": address,
            "action": "replace",
        }));
    }
    let interval = e.metrics.scrape_interval_ms;
    json!({"config": {"scrape_configs": [{
        "job_name": "dcgm",
        "scrape_interval": format_duration_ms(interval),
        // Prometheus rejects a timeout longer than the interval (its default is 10s).
        "scrape_timeout": format_duration_ms(interval.min(10_000)),
        "kubernetes_sd_configs": [{
            "role": "pod",
            "namespaces": {"names": [lit(&x.namespace)]},
            "selectors": [{"role": "pod", "field": format!("spec.nodeName={}", node_env())}],
        }],
        "relabel_configs": relabel,
        "metric_relabel_configs": [{
            "source_labels": ["__name__"],
            "regex": lit(&metric_regex(&e.metrics.metrics)),
            "action": "keep",
        }],
    }]}})
}

fn k8sattributes(e: &Effective) -> Value {
    let mut labels = Vec::new();
    if let Some(key) = &e.logs.job_id_label {
        labels.push(json!({"tag_name": "ml.job.id", "key": lit(key), "from": "pod"}));
    }
    labels.push(json!({"tag_name": "gpu.node.type", "key": INSTANCE_TYPE_LABEL, "from": "node"}));
    json!({
        "auth_type": "serviceAccount",
        "passthrough": false,
        "filter": {"node_from_env_var": NODE_NAME_ENV},
        // filelog's container operator and prometheus pod discovery both set k8s.pod.uid; OTLP
        // senders are found by their connection address.
        "pod_association": [
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]},
            {"sources": [{"from": "connection"}]},
        ],
        "extract": {
            "metadata": ["k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "k8s.node.name"],
            "labels": labels,
        },
    })
}

fn resource(e: &Effective) -> Value {
    let upsert = |k: &str, v: &str| json!({"key": lit(k), "value": lit(v), "action": "upsert"});
    let mut attributes: Vec<Value> = e
        .collector
        .resource_attributes
        .iter()
        .map(|(k, v)| upsert(k, v))
        .collect();
    // Last, so a user attribute cannot rename the cluster.
    attributes.push(upsert("k8s.cluster.name", &e.cluster_name));
    // An agent only sees its own node; `insert` keeps what k8sattributes found.
    attributes.push(json!({"key": "k8s.node.name", "value": node_env(), "action": "insert"}));
    json!({"attributes": attributes})
}

/// Quotes a string as an OTTL string literal.
fn ottl_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn redact(e: &Effective) -> Value {
    let statements: Vec<Value> = (e.logs.redactions.iter())
        .map(|r| {
            let (pattern, replacement) = (ottl_quote(&r.pattern), ottl_quote(&r.replacement));
            lit(&format!("replace_pattern(body, {pattern}, {replacement})"))
        })
        .collect();
    // propagate: a failing statement drops the data rather than shipping it unredacted.
    json!({"error_mode": "propagate", "log_statements": [{"context": "log", "statements": statements}]})
}

/// The resource attribute awscloudwatchlogs reads for `{PodName}` (after `PodName`).
pub const POD_STREAM_ATTRIBUTE: &str = "pod";
/// The logs-only resource processor that names each log record's stream.
const LOG_STREAM_PROCESSOR: &str = "resource/log_stream";

/// One log stream per pod: the exporter's `{PodName}` reads the resource attribute `pod`, copied
/// from `k8s.pod.name` (filelog's container parser sets it from the file path; k8sattributes for
/// OTLP senders). A record without a pod (an OTLP sender outside any pod) goes to the node's
/// stream instead of one named `undefined`. Logs only: on metrics, `pod` would collide with
/// dcgm-exporter's label of the pod using the GPU.
fn log_stream() -> Value {
    json!({"attributes": [
        {"key": POD_STREAM_ATTRIBUTE, "from_attribute": "k8s.pod.name", "action": "upsert"},
        {"key": POD_STREAM_ATTRIBUTE, "value": node_env(), "action": "insert"},
    ]})
}

/// The metrics-only processor that names the pod using each GPU.
const GPU_POD_PROCESSOR: &str = "transform/gpu_pod";
/// dcgm-exporter's pod-mapping labels and the attribute each becomes.
const GPU_POD_LABELS: [(&str, &str); 3] = [
    ("pod", "k8s.pod.name"),
    ("namespace", "k8s.namespace.name"),
    ("container", "k8s.container.name"),
];

/// A scrape has one resource: k8sattributes describes the exporter's own pod there. What a GPU
/// metric is about is the pod using the GPU, which dcgm-exporter puts in each series' labels
/// (`-k`): drop the exporter's pod identity from the resource and name the GPU's pod on each
/// data point instead, so `k8s.pod.name` dimensions are the workload's (found by the real
/// collector in the e2e data-flow test: they were the exporter's, and `ml.job.id` was never set).
fn gpu_pod() -> Value {
    let resource: Vec<Value> = [
        "k8s.pod.name",
        "k8s.pod.uid",
        "k8s.namespace.name",
        "k8s.container.name",
        "ml.job.id",
    ]
    .iter()
    .map(|k| json!(format!("delete_key(attributes, {})", ottl_quote(k))))
    .collect();
    let mut datapoint = Vec::new();
    for (label, attribute) in GPU_POD_LABELS {
        let (l, a) = (ottl_quote(label), ottl_quote(attribute));
        datapoint.push(json!(format!(
            "set(attributes[{a}], attributes[{l}]) where attributes[{l}] != nil and attributes[{l}] != \"\""
        )));
    }
    for (label, _) in GPU_POD_LABELS {
        datapoint.push(json!(format!("delete_key(attributes, {})", ottl_quote(label))));
    }
    json!({"error_mode": "ignore", "metric_statements": [
        {"context": "resource", "statements": resource},
        {"context": "datapoint", "statements": datapoint},
    ]})
}

fn cloudwatch_logs(e: &Effective) -> Value {
    json!({
        "region": lit(&e.region),
        "log_group_name": lit(&e.logs.group.name),
        // Needs contrib v0.125.0 (collector_version::PER_POD_LOG_STREAMS); YAML quotes it.
        "log_stream_name": "{PodName}",
        "sending_queue": {"enabled": true, "storage": STORAGE},
        "retry_on_failure": {"enabled": true, "max_elapsed_time": format_duration_ms(e.collector.retry_max_elapsed_ms)},
    })
}

fn emf(e: &Effective) -> Value {
    let dimensions: Vec<Vec<Value>> = (e.metrics.dimensions.iter())
        .map(|set| set.iter().map(|d| lit(d)).collect())
        .collect();
    let selectors: Vec<Value> = e
        .metrics
        .metrics
        .iter()
        .map(|m| lit(&format!("^{}$", quote_meta(m))))
        .collect();
    // No sending_queue/retry_on_failure here: awsemf has neither and the collector rejects unknown keys.
    json!({
        "region": lit(&e.region),
        "namespace": lit(&e.metrics.namespace),
        "log_group_name": lit(&e.metrics.group.name),
        "log_stream_name": node_env(),
        "dimension_rollup_option": "NoDimensionRollup",
        "resource_to_telemetry_conversion": {"enabled": true},
        "metric_declarations": [{"dimensions": dimensions, "metric_name_selectors": selectors}],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::crd::Redaction;
    use crate::desired::effective::test_fixture;

    fn parsed(e: &Effective) -> Value {
        serde_saphyr::from_str(&to_yaml(e)).expect("the rendered YAML parses")
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    fn variants() -> Vec<(&'static str, Effective)> {
        let tweak = |f: fn(&mut Effective)| {
            let mut e = test_fixture();
            f(&mut e);
            e
        };
        vec![
            ("base", test_fixture()),
            ("no_logs", tweak(|e| e.logs.enabled = false)),
            ("no_dcgm", tweak(|e| e.metrics.dcgm_enabled = false)),
            ("no_metric_selected", tweak(|e| e.metrics.metrics.clear())),
            ("otlp", tweak(|e| e.collector.otlp_enabled = true)),
            (
                "otlp_logs_only",
                tweak(|e| (e.collector.otlp_enabled, e.metrics.dcgm_enabled) = (true, false)),
            ),
            ("no_redaction", tweak(|e| e.logs.redactions.clear())),
            ("every_destination", crate::desired::effective::test_all_destinations()),
            ("archive", crate::desired::effective::test_archive()),
            (
                "destinations_without_otlp_or_metrics",
                tweak(|e| {
                    *e = crate::desired::effective::test_all_destinations();
                    (e.collector.otlp_enabled, e.metrics.dcgm_enabled) = (false, false);
                }),
            ),
            (
                "nothing",
                tweak(|e| (e.logs.enabled, e.metrics.dcgm_enabled, e.collector.otlp_enabled) = (false, false, true)),
            ),
        ]
    }

    /// Every string in the tree with the key it sits under (map keys themselves under "").
    fn strings(v: &Value, key: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((key.into(), s.clone())),
            Value::Array(a) => a.iter().for_each(|x| strings(x, key, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.push((String::new(), k.clone()));
                strings(x, k, out)
            }),
            _ => {}
        }
    }

    /// A `$` that is neither `$$` nor the start of `${env:`.
    fn has_unescaped_dollar(s: &str) -> bool {
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                rest = r;
            } else if after.starts_with("{env:") {
                rest = after;
            } else {
                return true;
            }
        }
        false
    }

    #[test]
    fn every_pipeline_starts_with_memory_limiter_and_ends_with_batch() {
        for (name, e) in variants() {
            let c = parsed(&e);
            for (pipeline, p) in c["service"]["pipelines"].as_object().into_iter().flatten() {
                let procs = strs(&p["processors"]);
                assert_eq!(
                    procs.first().map(String::as_str),
                    Some("memory_limiter"),
                    "{name} {pipeline}"
                );
                assert_eq!(procs.last().map(String::as_str), Some("batch"), "{name} {pipeline}");
            }
        }
        let c = parsed(&test_fixture());
        let logs = [
            "memory_limiter",
            "k8sattributes",
            "resource",
            "resource/log_stream",
            "transform/redact",
            "batch",
        ];
        assert_eq!(strs(&c["service"]["pipelines"]["logs"]["processors"]), logs);
        let metrics = [
            "memory_limiter",
            "k8sattributes",
            "resource",
            "filter/dcgm",
            "transform/gpu_pod",
            "batch",
        ];
        assert_eq!(strs(&c["service"]["pipelines"]["metrics"]["processors"]), metrics);
    }

    #[test]
    fn every_component_is_defined_and_used_in_every_variant() {
        for (name, e) in variants() {
            let c = parsed(&e);
            let pipelines = c["service"]["pipelines"].as_object().cloned().unwrap_or_default();
            for section in ["receivers", "processors", "exporters"] {
                let used: BTreeSet<String> = pipelines.values().flat_map(|p| strs(&p[section])).collect();
                assert_eq!(keys(&c[section]), used, "{name}: {section} defined vs used");
            }
            for (pipeline, p) in &pipelines {
                assert!(
                    !strs(&p["receivers"]).is_empty() && !strs(&p["exporters"]).is_empty(),
                    "{name} {pipeline}"
                );
            }
            let extensions: BTreeSet<String> = strs(&c["service"]["extensions"]).into_iter().collect();
            assert_eq!(keys(&c["extensions"]), extensions, "{name}: extensions");
            let mut all = Vec::new();
            strings(&c, "", &mut all);
            let refs: Vec<&String> = all.iter().filter(|(k, _)| k == "storage").map(|(_, s)| s).collect();
            assert!(refs.iter().all(|r| extensions.contains(*r)), "{name}: storage {refs:?}");
            let traces = e.collector.otlp_enabled && e.destinations.traces.is_some();
            assert_eq!(c["service"]["pipelines"].get("traces").is_some(), traces, "{name}");
        }
    }

    #[test]
    fn disabled_signals_leave_no_components_behind() {
        let mut e = test_fixture();
        e.logs.enabled = false;
        let c = parsed(&e);
        assert_eq!(keys(&c["receivers"]), BTreeSet::from(["prometheus".to_string()]));
        assert_eq!(keys(&c["exporters"]), BTreeSet::from(["awsemf".to_string()]));
        assert!(c["processors"].get("transform/redact").is_none());
        let mut e = test_fixture();
        e.metrics.dcgm_enabled = false;
        let c = parsed(&e);
        assert_eq!(keys(&c["receivers"]), BTreeSet::from(["filelog".to_string()]));
        assert_eq!(keys(&c["exporters"]), BTreeSet::from(["awscloudwatchlogs".to_string()]));
        assert!(c["processors"].get("filter/dcgm").is_none());
    }

    #[test]
    fn otlp_joins_both_pipelines_and_passes_the_metric_filter() {
        let mut e = test_fixture();
        e.collector.otlp_enabled = true;
        let c = parsed(&e);
        assert_eq!(c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"], "0.0.0.0:4317");
        assert_eq!(c["receivers"]["otlp"]["protocols"]["http"]["endpoint"], "0.0.0.0:4318");
        assert_eq!(
            strs(&c["service"]["pipelines"]["logs"]["receivers"]),
            ["filelog", "otlp"]
        );
        assert_eq!(
            strs(&c["service"]["pipelines"]["metrics"]["receivers"]),
            ["prometheus", "otlp"]
        );
        assert!(strs(&c["service"]["pipelines"]["metrics"]["processors"]).contains(&"filter/dcgm".to_string()));
    }

    #[test]
    fn no_user_string_leaves_an_unescaped_dollar() {
        let mut e = test_fixture();
        e.collector.otlp_enabled = true;
        e.logs.include.push("/var/log/pods/a$b_*/*/*.log".into());
        e.logs.exclude.push("/var/log/pods/$HOME_*/*/*.log".into());
        e.logs.job_id_label = Some("job$id".into());
        e.collector
            .resource_attributes
            .insert("cost$center".into(), "${env:AWS_SECRET_ACCESS_KEY}".into());
        e.exporter.pod_selector.insert("app".into(), "dcgm$".into());
        e.logs.redactions.push(Redaction {
            name: None,
            pattern: r"token=\$\{[A-Z]+\}".into(),
            replacement: "token=$1-$$".into(),
        });
        let mut all = Vec::new();
        strings(&parsed(&e), "", &mut all);
        let bad: Vec<&String> = all.iter().map(|(_, s)| s).filter(|s| has_unescaped_dollar(s)).collect();
        assert!(bad.is_empty(), "unescaped $ in {bad:?}");
        // A user's `${env:...}` must reach the collector as text, never as an expansion.
        assert!(all.iter().any(|(_, s)| s == "$${env:AWS_SECRET_ACCESS_KEY}"));
        assert!(has_unescaped_dollar("a$b") && has_unescaped_dollar("$") && !has_unescaped_dollar("$$1:${env:X}"));
    }

    #[test]
    fn redaction_is_an_escaped_ottl_statement() {
        let mut e = test_fixture();
        e.logs.redactions = vec![Redaction {
            name: Some("prices".into()),
            pattern: r#"price="\$([0-9]+)""#.into(),
            replacement: "price=$1<redacted>".into(),
        }];
        let c = parsed(&e);
        let t = &c["processors"]["transform/redact"];
        assert_eq!(t["error_mode"], "propagate");
        assert_eq!(t["log_statements"][0]["context"], "log");
        assert_eq!(
            strs(&t["log_statements"][0]["statements"]),
            [r#"replace_pattern(body, "price=\"\\$$([0-9]+)\"", "price=$$1<redacted>")"#]
        );
    }

    #[test]
    fn one_metric_list_drives_scrape_filter_and_emf() {
        let mut e = test_fixture();
        e.metrics.metrics = vec!["DCGM_FI_DEV_FB_USED".into(), "DCGM_FI_DEV_GPU_UTIL".into()];
        for e in [test_fixture(), e] {
            let c = parsed(&e);
            let scrape = &c["receivers"]["prometheus"]["config"]["scrape_configs"][0];
            let keep = &scrape["metric_relabel_configs"][0];
            assert_eq!(
                (keep["action"].as_str(), strs(&keep["source_labels"])),
                (Some("keep"), vec!["__name__".into()])
            );
            let regex: Vec<String> = keep["regex"]
                .as_str()
                .unwrap_or_default()
                .split('|')
                .map(String::from)
                .collect();
            assert_eq!(regex, e.metrics.metrics);
            let filter = &c["processors"]["filter/dcgm"]["metrics"]["include"];
            assert_eq!(filter["match_type"], "strict");
            assert_eq!(strs(&filter["metric_names"]), e.metrics.metrics);
            let declaration = &c["exporters"]["awsemf"]["metric_declarations"][0];
            let selectors: Vec<String> = (strs(&declaration["metric_name_selectors"]).iter())
                .map(|s| s.trim_start_matches('^').trim_end_matches("$$").to_string())
                .collect();
            assert_eq!(selectors, e.metrics.metrics);
            assert_eq!(declaration["dimensions"], json!(e.metrics.dimensions));
        }
    }

    #[test]
    fn scrape_targets_only_the_node_local_exporter_on_its_port() {
        let mut e = test_fixture();
        e.metrics.scrape_interval_ms = 5_000;
        let c = parsed(&e);
        let scrape = &c["receivers"]["prometheus"]["config"]["scrape_configs"][0];
        assert_eq!(
            (scrape["job_name"].as_str(), scrape["scrape_interval"].as_str()),
            (Some("dcgm"), Some("5s"))
        );
        assert_eq!(scrape["scrape_timeout"], "5s");
        let sd = &scrape["kubernetes_sd_configs"][0];
        assert_eq!(strs(&sd["namespaces"]["names"]), ["mlobs-system"]);
        assert_eq!(sd["selectors"][0]["field"], "spec.nodeName=${env:KUBE_NODE_NAME}");
        let relabel = scrape["relabel_configs"].as_array().cloned().unwrap_or_default();
        let keep = relabel
            .iter()
            .find(|r| strs(&r["source_labels"]) == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]);
        assert_eq!(
            keep.map(|r| (r["regex"].clone(), r["action"].clone())),
            Some((json!("mlobs-dcgm-exporter"), json!("keep")))
        );
        let address: Vec<&Value> = relabel
            .iter()
            .filter(|r| r["target_label"] == "__address__")
            .map(|r| &r["replacement"])
            .collect();
        assert_eq!(address, [&json!("$$1:9400"), &json!("[$$1]:9400")]);
    }

    #[test]
    fn attributes_name_cluster_node_type_and_job() {
        let mut e = test_fixture();
        e.collector
            .resource_attributes
            .insert("k8s.cluster.name".into(), "spoofed".into());
        let c = parsed(&e);
        let k = &c["processors"]["k8sattributes"];
        assert_eq!(k["filter"]["node_from_env_var"], NODE_NAME_ENV);
        let labels = k["extract"]["labels"].as_array().cloned().unwrap_or_default();
        assert!(
            labels.contains(&json!({"tag_name": "ml.job.id", "key": "training.kubeflow.org/job-name", "from": "pod"}))
        );
        assert!(labels.contains(&json!({"tag_name": "gpu.node.type", "key": INSTANCE_TYPE_LABEL, "from": "node"})));
        let attrs = c["processors"]["resource"]["attributes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let last_cluster = attrs.iter().rev().find(|a| a["key"] == "k8s.cluster.name");
        assert_eq!(last_cluster.map(|a| a["value"].clone()), Some(json!("prod-gpu")));
        let logs = &c["exporters"]["awscloudwatchlogs"];
        assert_eq!(logs["retry_on_failure"]["max_elapsed_time"], "5m");
        assert_eq!(
            logs["sending_queue"],
            json!({"enabled": true, "storage": "file_storage"})
        );
        assert_eq!(c["receivers"]["filelog"]["storage"], "file_storage");
    }

    #[test]
    fn each_pod_gets_its_own_log_stream_from_its_pod_name() {
        let e = test_fixture();
        let yaml = to_yaml(&e);
        // Unquoted, `{PodName}` would be a YAML map and the collector would refuse the config.
        assert!(
            yaml.lines()
                .any(|l| l.trim() == "log_stream_name: '{PodName}'" || l.trim() == "log_stream_name: \"{PodName}\""),
            "{yaml}"
        );
        let c = parsed(&e);
        assert_eq!(c["exporters"]["awscloudwatchlogs"]["log_stream_name"], "{PodName}");
        let attrs = &c["processors"]["resource/log_stream"]["attributes"];
        assert_eq!(
            attrs[0],
            json!({"key": "pod", "from_attribute": "k8s.pod.name", "action": "upsert"})
        );
        assert_eq!(
            attrs[1],
            json!({"key": "pod", "value": "${env:KUBE_NODE_NAME}", "action": "insert"})
        );
        // Only logs: on metrics `pod` is dcgm-exporter's label of the pod using the GPU.
        assert!(!strs(&c["service"]["pipelines"]["metrics"]["processors"]).contains(&"resource/log_stream".into()));
        assert_eq!(c["exporters"]["awsemf"]["log_stream_name"], "${env:KUBE_NODE_NAME}");
    }

    #[test]
    fn gpu_metrics_name_the_pod_using_the_gpu_not_the_exporter() {
        let c = parsed(&test_fixture());
        let t = &c["processors"]["transform/gpu_pod"];
        assert_eq!(t["error_mode"], "ignore");
        let groups = t["metric_statements"].as_array().cloned().unwrap_or_default();
        assert_eq!(groups[0]["context"], "resource");
        let resource = strs(&groups[0]["statements"]);
        for k in ["k8s.pod.name", "k8s.namespace.name", "k8s.container.name", "ml.job.id"] {
            assert!(
                resource.contains(&format!("delete_key(attributes, \"{k}\")")),
                "{k}: {resource:?}"
            );
        }
        assert_eq!(groups[1]["context"], "datapoint");
        let points = strs(&groups[1]["statements"]);
        assert_eq!(
            points[0],
            r#"set(attributes["k8s.pod.name"], attributes["pod"]) where attributes["pod"] != nil and attributes["pod"] != """#
        );
        assert!(points.contains(&r#"delete_key(attributes, "pod")"#.to_string()));
        // Logs keep k8sattributes' pod: the transform is in the metrics pipeline only.
        assert!(!strs(&c["service"]["pipelines"]["logs"]["processors"]).contains(&"transform/gpu_pod".into()));
    }

    #[test]
    fn rendering_is_deterministic_and_round_trips() {
        let mut e = test_fixture();
        e.collector.resource_attributes.insert("flag".into(), "true".into());
        e.collector.resource_attributes.insert("count".into(), "0123".into());
        e.collector.resource_attributes.insert("note".into(), "a: b # c".into());
        let yaml = to_yaml(&e);
        assert_eq!(yaml, to_yaml(&e.clone()));
        assert_eq!(parsed(&e), build(&e), "YAML must read back as the built value");
        assert_eq!(config_hash(&yaml), config_hash(&to_yaml(&e)));
        assert_eq!(config_hash(&yaml).len(), 16);
        assert_ne!(config_hash(&yaml), config_hash(&to_yaml(&test_fixture())));
    }
}
